//! The agent's Prometheus metrics (DESIGN O): bounded label sets only —
//! never run or rule ids.

mod server;

use std::sync::{Arc, OnceLock};

use fleet_common::lesson::ReflectionFailure;
use fleet_common::Outcome;

use crate::remediation::ReplayResult;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

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
    /// Events appended again after Redis came back without them (a new
    /// epoch generation): see `events::replay`.
    pub events_replayed: IntCounter,
    /// Knowledge-repo operations that failed (fetch, worktree, commit, push).
    pub knowledge_errors: IntCounter,
    /// Worker scripts the screen refused to run.
    pub scripts_refused: IntCounter,
    /// Worker scripts the target's sandbox stopped or cut (OOM kill, pid
    /// limit, timeout, output cap).
    pub scripts_contained: IntCounter,
    /// Candidate lessons the Reflector drew.
    pub lessons_proposed: IntCounter,
    /// Text kept out of a prompt by the injection screen (rule text or a
    /// lesson or ban from `main`).
    pub text_withheld: IntCounter,
    /// Reflections that yielded no lesson, by `reason`.
    reflections_failed: IntCounterVec,
    /// Skills from `main` replayed as attempt 1 (DESIGN H1), by `result`.
    skill_replays: IntCounterVec,
    /// Wall time of one attempt: prompt, script, evaluation, health.
    pub attempt_duration: Histogram,
    /// Wall time of one rule, by accepted outcome kind.
    rule_duration: HistogramVec,
    /// Host tasks (compose, harden) by job and outcome kind.
    host_tasks: IntCounterVec,
    /// Registered by the first [`AgentMetrics::llm`] call.
    llm: Arc<OnceLock<LlmMetrics>>,
}

/// The LLM endpoint as this agent sees it. Only agents with an LLM brain
/// register these, so an `ssg` agent never looks like one whose endpoint
/// is down.
#[derive(Clone)]
pub struct LlmMetrics {
    /// 1 while the endpoint answers; 0 while the agent holds.
    pub available: IntGauge,
    /// Holds entered: leases handed back because the endpoint was down.
    pub holds: IntCounter,
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
        let events_replayed = IntCounter::new(
            "fleet_agent_events_replayed_total",
            "Delivered events appended again after Redis restarted without them",
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
        let scripts_contained = IntCounter::new(
            "fleet_agent_scripts_contained_total",
            "Worker scripts the target's sandbox stopped or cut (OOM kill, pid limit, timeout, output cap)",
        )
        .expect("valid metric");
        let attempt_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fleet_agent_attempt_duration_seconds",
                "Wall time of one attempt (prompt, script, evaluation, health checks)",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
        )
        .expect("valid metric");
        let rule_duration = HistogramVec::new(
            HistogramOpts::new(
                "fleet_agent_rule_duration_seconds",
                "Wall time of one rule from lease to accepted outcome, by outcome",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(attempt_duration.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(rule_duration.clone()))
            .expect("unique metric");
        let text_withheld = IntCounter::new(
            "fleet_agent_text_withheld_total",
            "Rule text, lessons or bans kept out of prompts by the injection screen",
        )
        .expect("valid metric");
        registry
            .register(Box::new(text_withheld.clone()))
            .expect("unique metric");
        let lessons_proposed = IntCounter::new(
            "fleet_agent_lessons_proposed_total",
            "Candidate lessons drawn by the Reflector from failed attempts",
        )
        .expect("valid metric");
        let reflections_failed = IntCounterVec::new(
            Opts::new(
                "fleet_agent_reflections_failed_total",
                "Failed attempts whose reflection gave no lesson, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for r in [
            ReflectionFailure::ReflectorUnparseable,
            ReflectionFailure::ReflectorUnavailable,
            ReflectionFailure::ReflectorHostile,
        ] {
            reflections_failed.with_label_values(&[r.as_str()]);
        }
        registry
            .register(Box::new(reflections_failed.clone()))
            .expect("unique metric");
        let skill_replays = IntCounterVec::new(
            Opts::new(
                "fleet_agent_skill_replays_total",
                "Skills from main replayed before asking the brain, by result (fixed, failed, refused)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ReplayResult::ALL {
            skill_replays.with_label_values(&[r.as_str()]);
        }
        registry
            .register(Box::new(skill_replays.clone()))
            .expect("unique metric");
        for c in [
            &attempts,
            &scripts_refused,
            &scripts_contained,
            &lessons_proposed,
            &events_sent,
            &event_send_retries,
            &events_replayed,
            &knowledge_errors,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        let host_tasks = IntCounterVec::new(
            Opts::new(
                "fleet_agent_host_tasks_total",
                "Host tasks (bundle composition checks, host hardening) by job and outcome",
            ),
            &["job", "outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(host_tasks.clone()))
            .expect("unique metric");
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
            scripts_contained,
            lessons_proposed,
            text_withheld,
            reflections_failed,
            skill_replays,
            attempt_duration,
            rule_duration,
            outcomes,
            lease_active,
            events_sent,
            event_send_retries,
            events_replayed,
            knowledge_errors,
            host_tasks,
            llm: Arc::default(),
        }
    }

    /// The LLM endpoint's metrics, registered on first use.
    pub fn llm(&self) -> &LlmMetrics {
        self.llm.get_or_init(|| {
            let available = IntGauge::new(
                "fleet_agent_llm_available",
                "1 while the LLM endpoint answers; 0 while the agent holds its work until it does",
            )
            .expect("valid metric");
            let holds = IntCounter::new(
                "fleet_agent_llm_holds_total",
                "Times the agent stopped leasing because the LLM endpoint was down",
            )
            .expect("valid metric");
            for m in [
                Box::new(available.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(holds.clone()),
            ] {
                self.registry.register(m).expect("unique metric");
            }
            LlmMetrics { available, holds }
        })
    }

    /// One host task ended with `outcome` (an `Outcome::kind`).
    pub fn host_task(&self, job: &'static str, outcome: &'static str) {
        self.host_tasks.with_label_values(&[job, outcome]).inc();
    }

    pub fn reflection_failed(&self, reason: ReflectionFailure) {
        self.reflections_failed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// Failed reflections so far with `reason`.
    pub fn reflections_failed(&self, reason: ReflectionFailure) -> u64 {
        self.reflections_failed
            .with_label_values(&[reason.as_str()])
            .get()
    }

    pub fn skill_replayed(&self, result: ReplayResult) {
        self.skill_replays
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Replays so far that ended with `result`.
    pub fn skill_replays(&self, result: ReplayResult) -> u64 {
        self.skill_replays
            .with_label_values(&[result.as_str()])
            .get()
    }

    pub fn lease_ended(&self, result: LeaseResult) {
        self.leases.with_label_values(&[result.as_str()]).inc();
    }

    /// One rule's accepted outcome took `seconds`.
    pub fn rule_took(&self, outcome: &Outcome, seconds: f64) {
        self.rule_duration
            .with_label_values(&[outcome.kind()])
            .observe(seconds);
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
