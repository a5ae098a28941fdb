use super::*;

const ON_MAIN: &str = "Set PermitRootLogin no in /etc/ssh/sshd_config. Restart the ssh service so the change takes effect.\n";

#[test]
fn what_the_candidate_adds_is_appended_in_its_order() {
    let m = merge_text(
        ON_MAIN,
        "Set PermitRootLogin no in /etc/ssh/sshd_config. A drop-in under /etc/ssh/sshd_config.d wins over it. \
         Restart the ssh service so the change takes effect. Remove the drop-in too.",
    );
    assert_eq!(
        m.added,
        [
            "A drop-in under /etc/ssh/sshd_config.d wins over it.",
            "Remove the drop-in too."
        ]
    );
    assert_eq!(
        m.text,
        "Set PermitRootLogin no in /etc/ssh/sshd_config. Restart the ssh service so the change takes effect.\n\
         A drop-in under /etc/ssh/sshd_config.d wins over it. Remove the drop-in too."
    );
    assert_eq!(m.left_out, 0);
}

#[test]
fn a_candidate_that_adds_nothing_leaves_the_text_alone() {
    for same in [
        ON_MAIN,
        "set permitrootlogin NO in /etc/ssh/sshd_config -- restart the SSH service, so the change takes effect!",
        // Mostly said already: one word changed in a long sentence.
        "Set PermitRootLogin no in /etc/ssh/sshd_config. Restart the ssh service so the change is applied.",
    ] {
        let m = merge_text(ON_MAIN, same);
        assert_eq!(m.text, ON_MAIN.trim_end(), "{same}");
        assert!(m.added.is_empty(), "{same}: {:?}", m.added);
    }
}

#[test]
fn lines_stay_lines_and_repeats_are_added_once() {
    let m = merge_text(
        "Use sed -i on /etc/ssh/sshd_config.",
        "Use sed -i on /etc/ssh/sshd_config.\nsshd -t checks the syntax first.\nsshd -t checks the syntax first.",
    );
    assert_eq!(
        m.text,
        "Use sed -i on /etc/ssh/sshd_config.\nsshd -t checks the syntax first."
    );
}

#[test]
fn the_merged_text_stays_within_the_size_limit() {
    let long = "Word ".repeat(110); // 550 characters
    let m = merge_text(
        &long,
        "This sentence is new and fits. This one is new as well but there is no room left for it at all.",
    );
    assert!(m.text.chars().count() <= MAX_TEXT_CHARS, "{}", m.text.len());
    assert_eq!(m.added, ["This sentence is new and fits."]);
    assert_eq!(m.left_out, 1);
}

#[test]
fn merging_is_deterministic() {
    let c = "Restart sshd. Check with sshd -T.";
    assert_eq!(merge_text(ON_MAIN, c), merge_text(ON_MAIN, c));
}
