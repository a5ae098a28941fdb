//! Every attack of `fleet_tests::security_sandbox` is contained on a real
//! Docker target (DESIGN T1), within a minute.

use std::time::{Duration, Instant};

use fleet_tests::security_sandbox::run_sandbox_attacks;

#[tokio::test]
async fn every_sandbox_attack_is_contained() {
    let started = Instant::now();
    let outcomes = run_sandbox_attacks().await;
    let elapsed = started.elapsed();
    for o in &outcomes {
        eprintln!(
            "{:<26} {:<12} {}",
            o.name,
            if o.contained {
                "contained"
            } else {
                "NOT CONTAINED"
            },
            o.reason
        );
    }
    eprintln!("{} attacks in {elapsed:?}", outcomes.len());
    let names: Vec<_> = outcomes.iter().map(|o| o.name).collect();
    for want in [
        "fork_bomb",
        "memory_hog",
        "endless_output",
        "rm_rf_root_screened",
        "destruction_in_container",
        "network",
        "docker_socket",
        "setuid_escalation",
        "capabilities",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let escaped: Vec<_> = outcomes.iter().filter(|o| !o.contained).collect();
    assert!(escaped.is_empty(), "not contained: {escaped:#?}");
    let memory = outcomes.iter().find(|o| o.name == "memory_hog").unwrap();
    assert!(
        memory
            .reason
            .contains("killed: out of memory (limit 512 MiB"),
        "{}",
        memory.reason
    );
    // Not a timing assertion on any one attack: the whole summary must
    // stay usable as a `make security` step.
    assert!(elapsed < Duration::from_secs(90), "took {elapsed:?}");
}
