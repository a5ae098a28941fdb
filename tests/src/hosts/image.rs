//! The agent's "host" image: the debootstrap base the sandbox image is made
//! of (`make target-image`, nothing pulled) plus the agent binary. The host
//! that built the binary has a newer glibc than Debian 11, so the binary
//! travels with the shared libraries it was linked against and is started
//! through their own loader.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::docker::{docker, must};

/// The debootstrap base (Debian 11 + openssh-client) from `make target-image`.
pub const BASE_IMAGE: &str = "fleet-sandbox:bullseye";
/// Where the agent lives inside the image.
pub const AGENT_ROOT: &str = "/opt/fleet";

/// `binary`'s shared libraries (and loader) as `ldd` resolves them here.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("ldd is installed (libc-bin)");
    assert!(out.status.success(), "ldd {}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x…)"
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn file_hash(paths: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    for p in paths {
        h.update(p.to_string_lossy().as_bytes());
        h.update(std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())));
    }
    hex::encode(&h.finalize()[..8])
}

/// Builds (or finds) the image holding `binary`; answers its tag. Built by
/// `docker create` + `docker cp` + `docker commit`, so no builder and no
/// registry are involved.
pub fn agent_image(binary: &Path) -> String {
    let libs = shared_libraries(binary);
    let mut inputs = vec![binary.to_path_buf()];
    inputs.extend(libs.iter().cloned());
    let tag = format!("fleet-agent-host:{}", file_hash(&inputs));
    if docker(&["image", "inspect", &tag]).is_ok() {
        return tag;
    }
    docker(&["image", "inspect", BASE_IMAGE]).unwrap_or_else(|_| {
        panic!("{BASE_IMAGE} is missing: run `make target-image` (make test does)")
    });

    let stage = tempfile::tempdir().expect("tempdir");
    let root = stage.path().join("fleet");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("lib")).unwrap();
    std::fs::copy(binary, root.join("bin/fleet-agent")).expect("copy the agent binary");
    for lib in &libs {
        let name = lib.file_name().expect("library file name");
        // Copy the file itself, not a symlink to a path the image lacks.
        std::fs::copy(lib, root.join("lib").join(name))
            .unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    let loader = libs
        .iter()
        .filter_map(|l| l.file_name()?.to_str())
        .find(|n| n.starts_with("ld-linux"))
        .expect("ldd names the dynamic loader")
        .to_owned();
    std::fs::write(
        root.join("bin/start"),
        format!(
            "#!/bin/sh\n# The agent on the libraries it was built against.\nexec {AGENT_ROOT}/lib/{loader} --library-path {AGENT_ROOT}/lib {AGENT_ROOT}/bin/fleet-agent \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/start"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();

    let builder = must(&["create", BASE_IMAGE, "/bin/true"]);
    let copied = docker(&[
        "cp",
        &root.to_string_lossy(),
        &format!("{builder}:{AGENT_ROOT}"),
    ]);
    let committed = copied.and_then(|_| {
        docker(&[
            "commit",
            "--change",
            &format!("ENTRYPOINT [\"{AGENT_ROOT}/bin/start\"]"),
            "--change",
            "CMD []",
            "--change",
            "LABEL fleet.role=agent-host",
            &builder,
            &tag,
        ])
    });
    let _ = docker(&["rm", "-f", &builder]);
    committed.unwrap_or_else(|e| panic!("building {tag}: {e}"));
    // Images of earlier binaries: best effort (one in use stays).
    let older =
        docker(&["images", "-q", "--filter", "label=fleet.role=agent-host"]).unwrap_or_default();
    let current = docker(&["images", "-q", &tag]).unwrap_or_default();
    for id in older.lines().filter(|id| *id != current) {
        let _ = docker(&["rmi", id]);
    }
    tag
}
