//! K2/K3 over the network transport: an agent with valid credentials
//! fetches, works in a lease worktree and pushes its branch; a wrong
//! password gets 401; pushing `main` or another agent's branch is refused
//! by the hook and leaves the bare repo's refs unchanged.

mod common;

use std::io::{Read, Write};

use common::{creds, git, git_ok, Server};
use fleet_knowledge::layout::{lesson_path, skill_path};
use fleet_knowledge::{
    push_refspec, AgentCheckout, AgentCredentials, KnowledgeError, LessonFile, LessonKind,
    Provenance,
};

fn lesson(agent: &str) -> LessonFile {
    LessonFile {
        id: "l1".into(),
        kind: LessonKind::Lesson,
        pattern: None,
        family: "accounts".into(),
        scope: "all account rules".into(),
        provenance: Provenance {
            run: "run-1".into(),
            attempt: 1,
            agent: agent.into(),
            source_commit: None,
            merged: Vec::new(),
        },
        body: "Check /etc/login.defs first.\n".into(),
    }
}

#[test]
fn an_agent_with_valid_credentials_fetches_commits_and_pushes_its_branch() {
    let server = Server::start();
    let cache = server.dir.path().join("cache-a1");
    let checkout = AgentCheckout::open_or_clone(&cache, &server.url, creds("a1")).unwrap();
    let main = checkout.fetch_main().unwrap();
    assert_eq!(
        main,
        git2::Repository::open_bare(&server.bare)
            .unwrap()
            .refname_to_id("refs/heads/main")
            .unwrap()
    );

    assert_eq!(
        checkout.ranking().unwrap(),
        fleet_knowledge::Ranking::default()
    );
    assert_eq!(
        checkout
            .fetched_file("packs/demo/pack.toml")
            .unwrap()
            .unwrap(),
        b"name = \"demo\"\n"
    );
    assert_eq!(checkout.fetched_file("lessons/none.md").unwrap(), None);
    let lease = checkout.start_lease("run-1", "rule_x", 7).unwrap();
    assert_eq!(lease.branch(), "agent/a1/run-1/rule_x-e7");
    // The worktree starts from main (it holds the skill packs) and has no upstream.
    assert!(lease.path().join("packs/demo/pack.toml").exists());
    let (_, upstream, _) = git(lease.path(), &["rev-parse", "--abbrev-ref", "@{upstream}"]);
    assert_eq!(
        upstream.trim(),
        "",
        "the lease branch must not track anything"
    );

    for bad in [
        "",
        "/etc/x",
        "../x",
        "a/../../x",
        ".git/config",
        "a/.git/x",
        "a/.GIT/x",
    ] {
        assert!(
            matches!(
                lease.write(bad, b"x"),
                Err(KnowledgeError::BadRelativePath(_))
            ),
            "{bad:?}"
        );
    }
    let l = lesson("a1");
    lease
        .write(&l.path().unwrap(), l.render().as_bytes())
        .unwrap();
    lease
        .write(&skill_path("rule_x").unwrap(), b"#!/bin/sh\ntrue\n")
        .unwrap();
    let commit = lease.commit("attempt 1").unwrap();
    lease.push().unwrap();
    lease.remove().unwrap();

    let bare = git2::Repository::open_bare(&server.bare).unwrap();
    assert_eq!(
        bare.refname_to_id("refs/heads/agent/a1/run-1/rule_x-e7")
            .unwrap(),
        commit
    );
    let text = git_ok(
        &server.bare,
        &[
            "show",
            &format!("{commit}:{}", lesson_path("accounts", "l1").unwrap()),
        ],
    );
    assert_eq!(LessonFile::parse(&text).unwrap(), l);
    assert_eq!(
        bare.refname_to_id("refs/heads/main").unwrap(),
        main,
        "agents never move main"
    );
    assert_eq!(common::leftover_worktrees(&cache), (vec![], vec![]));
}

#[test]
fn a_wrong_password_is_refused_with_401() {
    let server = Server::start();
    // Raw HTTP: no credentials, then bad credentials.
    for auth in [None, Some("a1:not-the-password"), Some("a1")] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        let auth_line = auth
            .map(|a| {
                use base64::Engine;
                format!(
                    "Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(a)
                )
            })
            .unwrap_or_default();
        write!(
            s,
            "GET /git/knowledge.git/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\n{auth_line}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 401"), "{auth:?}: {resp}");
        assert!(
            resp.to_ascii_lowercase()
                .contains("www-authenticate: basic"),
            "{resp}"
        );
    }
    // libgit2 with a wrong token: fetch fails, nothing is cached.
    let bad = AgentCredentials {
        agent_id: "a1".into(),
        token: "0".repeat(64),
    };
    let cache = server.dir.path().join("cache-bad");
    let checkout = AgentCheckout::open_or_clone(&cache, &server.url, bad).unwrap();
    assert!(checkout.fetch_main().is_err());
    // Another agent's password is not ours.
    let stolen = AgentCredentials {
        agent_id: "a1".into(),
        token: creds("a2").token,
    };
    let checkout =
        AgentCheckout::open_or_clone(&server.dir.path().join("cache-stolen"), &server.url, stolen)
            .unwrap();
    assert!(checkout.fetch_main().is_err());
    // The git CLI without credentials is refused too.
    let (ok, _, err) = git(server.dir.path(), &["ls-remote", &server.url]);
    assert!(
        !ok && (err.contains("401")
            || err.contains("Authentication failed")
            || err.contains("could not read Username")),
        "{err}"
    );
}

#[test]
fn pushing_main_or_another_agents_branch_is_refused_and_changes_nothing() {
    let server = Server::start();
    let cache = server.dir.path().join("cache-a1");
    let checkout = AgentCheckout::open_or_clone(&cache, &server.url, creds("a1")).unwrap();
    checkout.fetch_main().unwrap();
    let lease = checkout.start_lease("run-1", "rule_y", 1).unwrap();
    lease
        .write("lessons/x/evil.md", b"overwrite main\n")
        .unwrap();
    lease.commit("evil").unwrap();
    let before = server.refs();

    // Through our own push code (libgit2).
    let c = creds("a1");
    let repo = git2::Repository::open(lease.path()).unwrap();
    for target in [
        "refs/heads/main",
        "refs/heads/agent/a2/run-1/x",
        "refs/heads/agent/a1x/y",
        "refs/tags/v1",
        "refs/heads/agent/a1",
    ] {
        let err = push_refspec(&repo, &server.url, &c, &format!("+HEAD:{target}")).unwrap_err();
        assert!(
            matches!(err, KnowledgeError::PushRefused { .. }),
            "{target}: {err}"
        );
        assert_eq!(server.refs(), before, "{target} changed the refs");
    }
    // Through the real git CLI, credentials in the URL.
    let url = server
        .url
        .replace("http://", &format!("http://a1:{}@", c.token));
    for target in ["main", "agent/a2/run-1/x"] {
        let (ok, _, err) = git(
            lease.path(),
            &["push", &url, &format!("HEAD:refs/heads/{target}")],
        );
        assert!(!ok, "push to {target} was accepted");
        assert!(err.contains("pre-receive hook declined"), "{err}");
        assert_eq!(server.refs(), before);
    }
    // A non-fast-forward of the agent's own branch is refused too.
    lease.push().unwrap();
    let pushed = server.refs();
    let (ok, _, err) = git(
        lease.path(),
        &[
            "push",
            "--force",
            &url,
            &format!("HEAD~1:refs/heads/{}", lease.branch()),
        ],
    );
    assert!(!ok, "a non-fast-forward push was accepted: {err}");
    assert_eq!(server.refs(), pushed);
    // And deleting it.
    let (ok, _, _) = git(
        lease.path(),
        &["push", &url, &format!(":refs/heads/{}", lease.branch())],
    );
    assert!(!ok);
    assert_eq!(server.refs(), pushed);
    lease.remove().unwrap();
}

/// Incompressible bytes, so packs really are this big on the wire.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn multi_megabyte_packs_stream_both_ways() {
    let server = Server::start();
    // Coordinator side: a 4 MB file lands on main.
    let big_main = noise(4 << 20, 1);
    let bare = git2::Repository::open_bare(&server.bare).unwrap();
    fleet_knowledge::update_main(
        &bare,
        |repo, tip| {
            let base = tip.map(|c| c.tree()).transpose()?;
            fleet_knowledge::tree_with_file(repo, base.as_ref(), "blobs/big.bin", &big_main, false)
        },
        "big",
    )
    .unwrap();
    // Agent side: fetch it, push 4 MB back.
    let checkout =
        AgentCheckout::open_or_clone(&server.dir.path().join("cache"), &server.url, creds("a1"))
            .unwrap();
    checkout.fetch_main().unwrap();
    let lease = checkout.start_lease("run-big", "rule_b", 1).unwrap();
    assert_eq!(
        std::fs::read(lease.path().join("blobs/big.bin")).unwrap(),
        big_main
    );
    let big_agent = noise(4 << 20, 2);
    lease.write("attempts/big.bin", &big_agent).unwrap();
    let oid = lease.commit("big attempt").unwrap();
    lease.push().unwrap();
    lease.remove().unwrap();
    let blob = bare
        .find_commit(oid)
        .unwrap()
        .tree()
        .unwrap()
        .get_path(std::path::Path::new("attempts/big.bin"))
        .unwrap()
        .id();
    assert_eq!(bare.find_blob(blob).unwrap().content(), &big_agent[..]);

    // The real git CLI (protocol v2, gzip-encoded requests) works with valid credentials.
    let url = server
        .url
        .replace("http://", &format!("http://a1:{}@", creds("a1").token));
    let clone = server.dir.path().join("cli-clone");
    git_ok(
        server.dir.path(),
        &[
            "-c",
            "protocol.version=2",
            "clone",
            "-q",
            &url,
            clone.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(clone.join("blobs/big.bin")).unwrap(),
        big_main
    );
    std::fs::write(clone.join("cli.bin"), noise(2 << 20, 3)).unwrap();
    git_ok(&clone, &["add", "cli.bin"]);
    git_ok(
        &clone,
        &[
            "-c",
            "user.name=a1",
            "-c",
            "user.email=a1@x",
            "commit",
            "-qm",
            "cli",
        ],
    );
    git_ok(
        &clone,
        &["push", "-q", &url, "HEAD:refs/heads/agent/a1/cli/x-e1"],
    );
    assert!(bare.find_reference("refs/heads/agent/a1/cli/x-e1").is_ok());
}

fn raw_get(port: u16, path: &str, userpass: &str) -> String {
    use base64::Engine;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(userpass);
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    String::from_utf8_lossy(&resp).into_owned()
}

#[test]
fn cgi_status_and_headers_pass_through_and_aliased_paths_are_refused() {
    let server = Server::start();
    let userpass = format!("a1:{}", creds("a1").token);
    let ok = raw_get(
        server.port,
        "/git/knowledge.git/info/refs?service=git-upload-pack",
        &userpass,
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(
        ok.contains("content-type: application/x-git-upload-pack-advertisement"),
        "{ok}"
    );
    assert!(ok.contains("# service=git-upload-pack"), "{ok}");
    // A CGI `Status:` other than 200 comes through.
    let missing = raw_get(
        server.port,
        "/git/knowledge.git/objects/00/0000000000000000000000000000000000000",
        &userpass,
    );
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    for path in [
        "/git/knowledge.git/../knowledge.git/info/refs?service=git-upload-pack",
        "/git/other.git/info/refs?service=git-upload-pack",
        "/git/knowledge.git//info/refs?service=git-upload-pack",
    ] {
        let resp = raw_get(server.port, path, &userpass);
        assert!(resp.starts_with("HTTP/1.1 404"), "{path}: {resp}");
    }
}
