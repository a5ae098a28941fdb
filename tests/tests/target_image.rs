//! The target image built by `make target-image` (DESIGN T4, T5): the offline
//! package repository is the target's only source and installs every rule
//! package with no network, and OpenSCAP evaluates the SCAP Security Guide
//! content on it, a rule going fail → pass once it is remediated.
//!
//! The image must exist: a missing image fails these tests, it never skips
//! them (`make test` builds it first).

use std::process::Output;
use std::time::Instant;

use tokio::process::Command;

const TARGET_IMAGE: &str = "fleet-target:bullseye";
const SANDBOX_IMAGE: &str = "fleet-sandbox:bullseye";
const DATASTREAM: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const PROFILE: &str = "xccdf_org.ssgproject.content_profile_standard";
const RULE_PREFIX: &str = "xccdf_org.ssgproject.content_rule_";

/// Packages rules install; each must install offline from the target's repo.
const RULE_PACKAGES: &[&str] = &[
    "auditd",
    "rsyslog",
    "aide",
    "cron",
    "sudo",
    "libpam-pwquality",
    "chrony",
    "openssh-server",
    "logrotate",
];

/// Panics (never skips) when Docker is unusable or `image` was not built.
async fn require_image(image: &str) {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run docker ({e}): install Docker, then run `make target-image`")
        });
    assert!(
        out.status.success(),
        "image {image} is missing: run `make target-image` (docker says: {})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `script` with bash in a fresh `--network none` container of `image`.
async fn run_offline(image: &str, script: &str) -> Output {
    require_image(image).await;
    Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            image,
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
        ])
        .output()
        .await
        .expect("docker run")
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "container script failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Shell that evaluates one rule of the standard profile and prints
/// `<label> <verdict> <oscap exit code>`, the verdict read from the ARF.
fn eval_rule(label: &str, rule: &str) -> String {
    format!(
        "rc=0; oscap xccdf eval --skip-valid --profile {PROFILE} --rule {RULE_PREFIX}{rule} \
         --results-arf /tmp/arf.xml {DATASTREAM} >/tmp/oscap.log 2>&1 || rc=$?; \
         v=$(tr -d '\\n' </tmp/arf.xml | grep -o '<rule-result idref=\"{RULE_PREFIX}{rule}\"[^>]*>[[:space:]]*<result>[a-z]*</result>' \
         | sed 's/.*<result>\\(.*\\)<\\/result>/\\1/'); echo \"{label} ${{v:-none}} $rc\"\n"
    )
}

/// The verdict and oscap exit code printed by `eval_rule` under `label`.
fn verdict<'a>(stdout: &'a str, label: &str) -> (&'a str, &'a str) {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(label).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {label} line in:\n{stdout}"));
    let mut it = line.split(' ');
    (it.next().unwrap_or(""), it.next().unwrap_or(""))
}

#[tokio::test]
async fn offline_repo_is_the_only_source_and_installs_every_rule_package() {
    let started = Instant::now();
    let packages = RULE_PACKAGES.join(" ");
    let out = run_offline(
        TARGET_IMAGE,
        &format!(
            "grep -v '^#' /etc/apt/sources.list | grep -v '^$'; echo \"sources.list.d: $(ls -A /etc/apt/sources.list.d | wc -l)\"\n\
             for p in {packages}; do ! dpkg -s \"$p\" >/dev/null 2>&1 || echo \"preinstalled: $p\"; done\n\
             apt-get update -qq\n\
             apt-get install -y -qq {packages} >/tmp/apt.log 2>&1 || {{ tail -n 30 /tmp/apt.log; exit 1; }}\n\
             for p in {packages}; do dpkg -s \"$p\" | grep -q '^Status: install ok installed' && echo \"installed: $p\"; done\n"
        ),
    )
    .await;
    let stdout = stdout_of(&out);
    let sources: Vec<&str> = stdout
        .lines()
        .take_while(|l| l.starts_with("deb"))
        .collect();
    assert_eq!(
        sources,
        ["deb [trusted=yes] file:/srv/fleet-repo ./"],
        "the local repo must be the only apt source:\n{stdout}"
    );
    assert!(
        stdout.contains("sources.list.d: 0\n"),
        "sources.list.d must be empty:\n{stdout}"
    );
    assert!(
        !stdout.contains("preinstalled:"),
        "rule packages must start uninstalled:\n{stdout}"
    );
    for p in RULE_PACKAGES {
        assert!(
            stdout.contains(&format!("installed: {p}\n")),
            "{p} was not installed offline:\n{stdout}"
        );
    }
    // A figure for the log, not a goal: timings belong in `make bench`.
    eprintln!(
        "offline install of the rule packages took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn oscap_turns_rules_from_fail_to_pass_once_remediated() {
    let script = [
        "oscap --version\n".to_string(),
        eval_rule("audit-before", "package_audit_installed"),
        eval_rule("aslr-before", "sysctl_kernel_randomize_va_space"),
        "apt-get install -y -qq auditd >/tmp/apt.log 2>&1 || { tail -n 30 /tmp/apt.log; exit 1; }\n".to_string(),
        "echo 'kernel.randomize_va_space = 2' >/etc/sysctl.d/99-fleet-test.conf\n".to_string(),
        eval_rule("audit-after", "package_audit_installed"),
        eval_rule("aslr-after", "sysctl_kernel_randomize_va_space"),
    ]
    .concat();
    let stdout = stdout_of(&run_offline(TARGET_IMAGE, &script).await);

    assert!(
        stdout.contains("OpenSCAP command line tool (oscap) 1.4"),
        "oscap --version:\n{stdout}"
    );
    for probe in [
        "dpkginfo",
        "textfilecontent54",
        "file",
        "sysctl",
        "partition",
    ] {
        let name = format!("probe_{probe}");
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().nth(2) == Some(name.as_str())),
            "oscap lacks {name}:\n{stdout}"
        );
    }
    // oscap exits 2 when a rule fails, 0 when all pass.
    assert_eq!(verdict(&stdout, "audit-before"), ("fail", "2"), "{stdout}");
    assert_eq!(verdict(&stdout, "audit-after"), ("pass", "0"), "{stdout}");
    // A textfilecontent54 + sysctl rule: applicable, and fixed by a config file.
    assert_eq!(verdict(&stdout, "aslr-before"), ("fail", "2"), "{stdout}");
    assert_eq!(verdict(&stdout, "aslr-after"), ("pass", "0"), "{stdout}");
}

#[tokio::test]
async fn sandbox_image_holds_the_ssh_client() {
    let stdout = stdout_of(&run_offline(SANDBOX_IMAGE, "ssh -V 2>&1; command -v bash sleep").await);
    assert!(stdout.contains("OpenSSH"), "ssh -V:\n{stdout}");
}
