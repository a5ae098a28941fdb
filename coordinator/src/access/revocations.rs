//! The revoked agents, in memory: the git route checks it on every request
//! and must not wait on Postgres. Loaded at startup, updated by issue and
//! revoke. (With several coordinators, each loads at start; a revocation
//! reaches the others when they restart — Redis and registration are cut
//! at once everywhere.)

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

#[derive(Clone, Default)]
pub struct Revocations(Arc<RwLock<HashSet<String>>>);

impl Revocations {
    pub fn from_agents(agents: impl IntoIterator<Item = String>) -> Self {
        Self(Arc::new(RwLock::new(agents.into_iter().collect())))
    }

    pub fn is_revoked(&self, agent: &str) -> bool {
        self.0.read().expect("revocations lock").contains(agent)
    }

    pub fn revoke(&self, agent: &str) {
        self.0
            .write()
            .expect("revocations lock")
            .insert(agent.to_owned());
    }

    pub fn restore(&self, agent: &str) {
        self.0.write().expect("revocations lock").remove(agent);
    }

    /// For the git route: `true` when `agent` may still use the repo.
    pub fn allows(&self) -> fleet_knowledge::AgentCheck {
        let me = self.clone();
        Arc::new(move |agent: &str| !me.is_revoked(agent))
    }
}
