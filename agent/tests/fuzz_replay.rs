//! The `reflector_parser` and `script_extractor` fuzz targets' corpora and
//! regressions, replayed through their checks (`fuzz/checks/`) without
//! libFuzzer.

#[path = "../../fuzz/checks/reflector_parser.rs"]
mod reflector_parser;
#[path = "../../fuzz/checks/replay.rs"]
mod replay;
#[path = "../../fuzz/checks/script_extractor.rs"]
mod script_extractor;

#[test]
fn reflector_parser_corpus_and_regressions_replay() {
    let inputs = replay::replay("reflector_parser", reflector_parser::check);
    assert!(inputs > 0, "the corpus is checked in");
}

#[test]
fn script_extractor_corpus_and_regressions_replay() {
    let inputs = replay::replay("script_extractor", script_extractor::check);
    assert!(inputs > 0, "the corpus is checked in");
}
