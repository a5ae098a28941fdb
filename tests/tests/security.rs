//! `make security`'s text and access attacks, each contained, with no
//! benign sample refused (the sandbox attacks have their own test).

use fleet_tests::security::{access_attacks, summary_line, text_attacks};

#[test]
fn every_text_attack_is_contained_and_no_look_alike_is_refused() {
    let (outcomes, false_positives) = text_attacks();
    let escaped: Vec<_> = outcomes.iter().filter(|o| !o.contained).collect();
    assert!(escaped.is_empty(), "not contained: {escaped:#?}");
    assert!(false_positives.is_empty(), "refused: {false_positives:#?}");
    assert!(outcomes.len() >= 49 + 18, "{} text attacks", outcomes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_access_attack_is_refused() {
    let outcomes = access_attacks().await;
    let escaped: Vec<_> = outcomes.iter().filter(|o| !o.contained).collect();
    assert!(escaped.is_empty(), "not contained: {escaped:#?}");
    assert!(outcomes.len() >= 25, "{} access attacks", outcomes.len());
    let line = summary_line(&outcomes, 0, 0);
    assert!(
        line.starts_with(&format!(
            "security: hostile_inputs={n} contained={n} false_positives=0 crashes=0",
            n = outcomes.len()
        )),
        "{line}"
    );
}
