//! What the integration tests share: the installed SSG content and the
//! host's `oscap`. Missing either is a broken test machine, not a reason to
//! skip: the tests panic and say how to fix it.

#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::Command;

pub const CONTENT_DIR: &str = "/usr/share/xml/scap/ssg/content";
pub const STANDARD: &str = "xccdf_org.ssgproject.content_profile_standard";
pub const STIG: &str = "xccdf_org.ssgproject.content_profile_stig";

/// A datastream of the SSG packages, e.g. `ssg-debian11-ds.xml`.
pub fn datastream(name: &str) -> PathBuf {
    let path = Path::new(CONTENT_DIR).join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make deps` (installs ssg-base, ssg-debian, ssg-nondebian)",
        path.display()
    );
    path
}

/// `oscap` with `args` and the environment `env`; panics unless it ran and
/// exited 0 (all pass) or 2 (some rule failed), its two verdict codes.
pub fn oscap(args: &[&str], env: &[(&str, &Path)]) {
    let output = Command::new("oscap")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run oscap ({e}): run `make deps` (installs openscap-scanner)")
        });
    assert!(
        matches!(output.status.code(), Some(0 | 2)),
        "oscap {args:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `f` and prints how long it took under `label`.
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let start = std::time::Instant::now();
    let value = f();
    eprintln!("{label}: {:.2?}", start.elapsed());
    value
}
