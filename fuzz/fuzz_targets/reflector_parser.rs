//! Fuzz target; its properties are in `checks/reflector_parser.rs`, which the owning
//! crate's `fuzz_replay` test also runs on the corpus and regressions.
#![no_main]

#[path = "../checks/reflector_parser.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
