use super::*;

fn writes(text: &str) -> Vec<String> {
    script(text).writes
}

#[test]
fn redirections_tee_and_in_place_editors_write() {
    assert_eq!(writes("echo a > /x/a 2>/dev/null"), ["/x/a", "/dev/null"]);
    assert_eq!(writes("echo a >>/x/a"), ["/x/a"]);
    assert_eq!(writes("echo a &>> /x/a"), ["/x/a"]);
    assert_eq!(writes("echo a 2>&1 | tee -a /x/a /x/b"), ["/x/a", "/x/b"]);
    assert_eq!(writes("sed -i 's/a/b/' /x/a"), ["/x/a"]);
    assert_eq!(
        writes("sed -ri.bak -e 's/a/b/' /x/a /x/b"),
        ["/x/a", "/x/b"]
    );
    assert_eq!(writes("sed --in-place=.orig 's/a/b/' /x/a"), ["/x/a"]);
    assert_eq!(writes("perl -pi -e 's/a/b/' /x/a"), ["/x/a"]);
    assert_eq!(writes("gawk -i inplace '{print}' /x/a"), ["/x/a"]);
    assert!(writes("sed 's/a/b/' /x/a > /x/b").eq(&["/x/b"]));
}

#[test]
fn file_commands_write_their_targets_only() {
    assert_eq!(writes("cp /x/src /x/dst"), ["/x/dst"]);
    assert_eq!(writes("cp -t /x/dir /x/a /x/b"), ["/x/dir"]);
    assert_eq!(writes("install -m 0600 /x/src /x/dst"), ["/x/dst"]);
    assert_eq!(writes("ln -sf /x/target /x/link"), ["/x/link"]);
    assert_eq!(writes("mv /x/a /x/b"), ["/x/a", "/x/b"]);
    assert_eq!(writes("chmod 0640 /x/a"), ["/x/a"]);
    assert_eq!(writes("chown -R root:root /x/a"), ["/x/a"]);
    assert_eq!(writes("truncate -s 0 /x/a"), ["/x/a"]);
    assert_eq!(writes("dd if=/dev/zero of=/x/a bs=1 count=1"), ["/x/a"]);
    assert_eq!(writes("find /x -name '*.conf' -delete"), ["/x"]);
    assert!(writes("find /x -name '*.conf' -exec grep -l y {} +").is_empty());
}

#[test]
fn reads_write_nothing() {
    for read in [
        "grep x /x/a",
        "cat /x/a | sort",
        "awk -F: '{print $1}' /x/a",
        "sed -n 's/a/b/p' /x/a",
        "[ -f /x/a ] && stat /x/a",
        "while read -r l; do echo \"$l\"; done < /x/a",
        "diff /x/a /x/b",
        "# echo x > /x/a",
    ] {
        assert!(writes(read).is_empty(), "{read}");
    }
}

#[test]
fn commands_are_found_behind_keywords_prefixes_and_operators() {
    let names =
        |text: &str| -> Vec<String> { script(text).commands.into_iter().map(|c| c.name).collect() };
    assert_eq!(
        names("if ! grep -q x /x/a; then sudo /usr/sbin/visudo -f /x/b; fi"),
        ["grep", "visudo"]
    );
    assert_eq!(names("A=1 B=2 env C=3 setenforce 1"), ["setenforce"]);
    assert_eq!(names("x=$(usermod -L games)"), ["usermod"]);
    assert_eq!(
        names("grep x /x | xargs -r -n1 passwd -l"),
        ["grep", "passwd"]
    );
}

#[test]
fn variables_loops_continuations_and_here_documents() {
    assert_eq!(
        writes("f=/x/a\nsed -i 's/a/b/' \"$f\" ${f}.d/c"),
        ["/x/a", "/x/a.d/c"]
    );
    assert_eq!(
        writes("for f in /x/a /x/b; do chmod 0644 \"$f\"; done"),
        ["/x/a", "/x/b"]
    );
    assert_eq!(writes("echo a \\\n  >> /x/a"), ["/x/a"]);
    assert_eq!(
        writes("cat <<-'EOF' > /x/a\n\techo b > /x/b\n\tEOF\necho c > /x/c"),
        ["/x/a", "/x/c"]
    );
    assert_eq!(writes("echo $unknown > /x/$unknown"), ["/x/$unknown"]);
}

#[test]
fn quotes_are_removed_and_kept_together() {
    let e = line("echo 'a b' \"c \\\"d\\\"\" e\\ f > '/x/with space'");
    assert_eq!(e.writes, ["/x/with space"]);
    assert_eq!(e.commands[0].args, ["a b", "c \"d\"", "e f"]);
}
