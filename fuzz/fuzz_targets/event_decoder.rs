//! Fuzz target; its properties are in `checks/event_decoder.rs`, which the owning
//! crate's `fuzz_replay` test also runs on the corpus and regressions.
#![no_main]

#[path = "../checks/event_decoder.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
