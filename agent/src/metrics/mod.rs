//! The agent's Prometheus metrics (DESIGN O): bounded label sets only —
//! never run or rule ids.

mod server;

use fleet_common::Outcome;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub use server::serve_metrics;

/// How a lease ended, as the `result` label of `fleet_agent_leases_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseResult {
    Accepted,
    Rejected,
    Lost,
    Released,
}

impl LeaseResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Lost => "lost",
            Self::Released => "released",
        }
    }
}

/// Cheap to clone: every handle shares the registry's metrics.
#[derive(Clone)]
pub struct AgentMetrics {
    registry: Registry,
    pub leases: IntCounterVec,
    pub attempts: IntCounter,
    pub outcomes: IntCounterVec,
    pub lease_active: IntGauge,
    pub events_sent: IntCounter,
    pub event_send_retries: IntCounter,
    /// Knowledge-repo operations that failed (fetch, worktree, commit, push).
    pub knowledge_errors: IntCounter,
    /// Worker scripts the screen refused to run.
    pub scripts_refused: IntCounter,
}

impl AgentMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let leases = IntCounterVec::new(
            Opts::new("fleet_agent_leases_total", "Leases by how they ended"),
            &["result"],
        )
        .expect("valid metric");
        let attempts =
            IntCounter::new("fleet_agent_attempts_total", "Remediation attempts started")
                .expect("valid metric");
        let outcomes = IntCounterVec::new(
            Opts::new("fleet_agent_outcomes_total", "Accepted task outcomes"),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let lease_active = IntGauge::new("fleet_agent_lease_active", "Leases being worked on now")
            .expect("valid metric");
        let events_sent = IntCounter::new(
            "fleet_agent_events_sent_total",
            "Events acknowledged by Redis",
        )
        .expect("valid metric");
        let event_send_retries = IntCounter::new(
            "fleet_agent_event_send_retries_total",
            "Event appends retried after a Redis error",
        )
        .expect("valid metric");
        let knowledge_errors = IntCounter::new(
            "fleet_agent_knowledge_errors_total",
            "Knowledge-repo operations that failed (fetch, worktree, commit, push, remove)",
        )
        .expect("valid metric");
        let scripts_refused = IntCounter::new(
            "fleet_agent_scripts_refused_total",
            "Worker scripts refused by the screen (never run)",
        )
        .expect("valid metric");
        for c in [
            &attempts,
            &scripts_refused,
            &events_sent,
            &event_send_retries,
            &knowledge_errors,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(leases.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(outcomes.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(lease_active.clone()))
            .expect("unique metric");
        // Pre-create the lease series so dashboards see zeros, not gaps.
        for r in [
            LeaseResult::Accepted,
            LeaseResult::Rejected,
            LeaseResult::Lost,
            LeaseResult::Released,
        ] {
            leases.with_label_values(&[r.as_str()]);
        }
        Self {
            registry,
            leases,
            attempts,
            scripts_refused,
            outcomes,
            lease_active,
            events_sent,
            event_send_retries,
            knowledge_errors,
        }
    }

    pub fn lease_ended(&self, result: LeaseResult) {
        self.leases.with_label_values(&[result.as_str()]).inc();
    }

    pub fn outcome(&self, outcome: &Outcome) {
        let reason = outcome.reason().map_or("none", |r| r.as_str());
        self.outcomes
            .with_label_values(&[outcome.kind(), reason])
            .inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .expect("text encoding cannot fail")
    }
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}
