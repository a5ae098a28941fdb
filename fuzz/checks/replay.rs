//! Replays a fuzz target's checked-in inputs (`fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`) through its checks, for the owning crate's
//! `fuzz_replay` test: the regressions run in `make test` without libFuzzer.

use std::path::{Path, PathBuf};

/// Runs `check` on every input of `target`; panics naming the inputs that
/// failed. Returns how many inputs ran.
pub fn replay(target: &str, check: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .map(|kind| fuzz.join(kind).join(target))
        .filter(|dir| dir.is_dir())
        .flat_map(|dir| std::fs::read_dir(dir).expect("readable input dir"))
        .map(|entry| entry.expect("readable dir entry").path())
        .filter(|path| path.is_file())
        .collect();
    inputs.sort();
    let failed: Vec<String> = inputs
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).expect("readable input");
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
    inputs.len()
}
