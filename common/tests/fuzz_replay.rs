//! The `event_decoder` fuzz target's corpus and regressions, replayed
//! through its checks (`fuzz/checks/`) without libFuzzer.

#[path = "../../fuzz/checks/event_decoder.rs"]
mod event_decoder;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;

#[test]
fn event_decoder_corpus_and_regressions_replay() {
    let inputs = replay::replay("event_decoder", event_decoder::check);
    assert!(inputs > 0, "the corpus is checked in");
}

/// The seeds are real events, so the fuzzer starts from inputs that get
/// past the JSON and version checks: version 1 (`script_proposed.json`
/// and most others, from before script sources) and version 2.
#[test]
fn event_decoder_seeds_decode_as_named() {
    use fleet_common::event::{Delivered, Event, QuarantineReason};
    let seed = |name: &str| {
        let path = format!(
            "{}/../fuzz/corpus/event_decoder/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(path).expect("seed")
    };
    for name in [
        "attempt_evaluated.json",
        "lease_acquired.json",
        "lease_reclaimed.json",
        "lesson_proposed.json",
        "prompt_assembled.json",
        "script_proposed.json",
        "script_proposed_skill.json",
        "script_proposed_brain_v2.json",
    ] {
        if let Err(e) = Event::decode(&seed(name)) {
            panic!("{name}: {e}");
        }
    }
    let entry = seed("task_completed_rejected.bin");
    let (event, rejected) = entry.split_at(entry.iter().position(|&b| b == 0).unwrap());
    let delivered = Delivered::decode(Some(event), Some(&rejected[1..])).unwrap();
    assert!(delivered.rejected.is_some());
    assert_eq!(
        Event::decode(&seed("future_version.json")),
        Err(QuarantineReason::UnknownVersion(3))
    );
}
