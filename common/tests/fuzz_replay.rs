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
