//! The `scap_results` fuzz target's corpus and regressions, replayed
//! through its checks (`fuzz/checks/`) without libFuzzer.

#[path = "../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../fuzz/checks/scap_results.rs"]
mod scap_results;

#[test]
fn scap_results_corpus_and_regressions_replay() {
    let inputs = replay::replay("scap_results", scap_results::check);
    assert!(inputs > 0, "the corpus is checked in");
}
