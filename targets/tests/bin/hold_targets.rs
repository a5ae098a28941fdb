//! The stand-in for an agent that crashes while holding targets: creates
//! two targets for the agent id in argv[1] (one baseline tagged, one
//! committed), prints READY and waits to be SIGKILLed. Used by the orphan
//! cleanup test (`targets/tests/orphans.rs`); a crate bin only so that
//! cargo builds it for that test.

use std::time::Duration;

use fleet_targets::{connect_docker, DockerTarget, DockerTargetConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let agent_id = args.next().expect("usage: hold_targets AGENT_ID IMAGE");
    let image = args.next().expect("usage: hold_targets AGENT_ID IMAGE");
    let docker = connect_docker().expect("docker client");
    for slot in [0, 1] {
        let mut config = DockerTargetConfig::new(agent_id.clone(), slot);
        config.image = image.clone();
        let target = DockerTarget::create(&docker, config).await.unwrap();
        if slot == 1 {
            // Touched before the baseline, so it is committed, not tagged.
            target.write_file("/etc/fleet-mark", b"x").await.unwrap();
        }
        target.baseline().await.unwrap();
    }
    println!("READY");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
