//! Fuzz target; its properties are in `checks/script_extractor.rs`, which the owning
//! crate's `fuzz_replay` test also runs on the corpus and regressions.
#![no_main]

#[path = "../checks/script_extractor.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
