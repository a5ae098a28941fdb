//! Prometheus metrics of the coordinator (DESIGN "Observability").
//!
//! Labels are bounded: event kinds, quarantine reasons, outcomes, escalation
//! reasons and protocol counter names. Never run or rule ids.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The results `fleet_harden_hosts` counts hosts by.
pub const HARDEN_RESULTS: [&str; 5] = [
    "pending",
    "fixed",
    "already_passing",
    "escalated",
    "not_started",
];

/// Cheap to clone: every clone shares the same registry and collectors.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub events_ingested: IntCounterVec,
    pub events_quarantined: IntCounterVec,
    pub ingest_lag: Histogram,
    pub ingest_batches: IntCounter,
    pub ingest_conflicts: IntCounter,
    pub queue_depth: IntGaugeVec,
    pub leases_active: IntGauge,
    pub lease_reclaims: IntCounter,
    pub dead_lettered: IntCounter,
    pub stale_completions: IntCounter,
    pub duplicate_outcomes: IntCounter,
    pub agents_alive: IntGauge,
    pub outcomes: IntCounterVec,
    pub reconciliations: IntCounter,
    pub runs_submitted: IntCounter,
    /// Raw protocol counters of the lease scripts as Redis holds them; they
    /// restart from zero when Redis loses its data, hence a gauge.
    pub lease_protocol: IntGaugeVec,
    /// Dream-stage passes, by result (`done`, `failed`).
    pub dreams: IntCounterVec,
    pub dream_duration: Histogram,
    /// Ledger entries by action (`promote`, `revert`) and verdict.
    pub promotions: IntCounterVec,
    /// Candidates a pass DEFERred for its budget (`promotions`, `wall_time`).
    pub dream_budget_deferrals: IntCounterVec,
    /// Per-agent credentials by action (`issued`, `revoked`) and refused
    /// registrations by reason.
    pub agent_credentials: IntCounterVec,
    /// The last dreamt run's figures per (skill, profile): fix rate,
    /// first-try rate, and against the previous comparable run wins,
    /// regressions and their ratio (absent on a first run).
    pub run_fix_rate: GaugeVec,
    pub run_first_try_rate: GaugeVec,
    pub run_regression_ratio: GaugeVec,
    pub run_wins: GaugeVec,
    pub run_regressions: GaugeVec,
    /// The last dreamt run's rules left out of the comparison as not
    /// comparable, per (skill, profile, reason); and 1 when that run
    /// withheld its reverts (DESIGN D6).
    pub run_not_comparable: IntGaugeVec,
    pub run_reverts_withheld: GaugeVec,
    /// Hosts of the latest harden run by result (`pending`, `fixed`,
    /// `already_passing`, `escalated`, `not_started`).
    pub harden_hosts: IntGaugeVec,
    /// The latest composition check's figures (`skills`, `pass_before`,
    /// `pass_after`, `interference`, `health_failed`).
    pub bundle_check: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let ingest_lag = Histogram::with_opts(
            HistogramOpts::new(
                "fleet_ingest_lag_seconds",
                "Age of a stream entry (from its append, by Redis time) at its commit in Postgres",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(ingest_lag.clone()))
            .expect("unique metric");
        let dream_duration = Histogram::with_opts(
            HistogramOpts::new(
                "fleet_dream_duration_seconds",
                "Wall time of one dream-stage pass over a completed run",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(dream_duration.clone()))
            .expect("unique metric");

        let float_gauge_vec = |name: &str, help: &str| {
            let g =
                GaugeVec::new(Opts::new(name, help), &["skill", "profile"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };

        let m = Self {
            run_fix_rate: float_gauge_vec(
                "fleet_run_fix_rate",
                "Fix rate (fixed / (fixed + escalated)) of the last dreamt run",
            ),
            run_first_try_rate: float_gauge_vec(
                "fleet_run_first_try_rate",
                "Share of fixed rules fixed on attempt 1 in the last dreamt run",
            ),
            run_regression_ratio: float_gauge_vec(
                "fleet_run_regression_ratio",
                "Wins / regressions of the last dreamt run against the previous comparable run (+Inf: none regressed)",
            ),
            run_wins: float_gauge_vec(
                "fleet_run_wins",
                "Rules fixed in the last dreamt run and not in the previous comparable run",
            ),
            run_regressions: float_gauge_vec(
                "fleet_run_regressions",
                "Rules fixed in the previous comparable run and not in the last dreamt run",
            ),
            events_ingested: counter_vec(
                "fleet_events_ingested_total",
                "Events applied to Postgres, by kind (redeliveries excluded)",
                &["kind"],
            ),
            events_quarantined: counter_vec(
                "fleet_events_quarantined_total",
                "Stream entries quarantined instead of applied, by reason",
                &["reason"],
            ),
            ingest_lag,
            ingest_batches: counter("fleet_ingest_batches_total", "Ingest batches committed"),
            ingest_conflicts: counter(
                "fleet_ingest_conflicts_total",
                "Ingest batches rolled back by a lock conflict with another consumer and retried",
            ),
            queue_depth: gauge_vec(
                "fleet_queue_depth",
                "Tasks in the Redis queue by state",
                &["state"],
            ),
            leases_active: gauge("fleet_leases_active", "Leases currently held"),
            lease_reclaims: counter(
                "fleet_lease_reclaims_total",
                "Expired leases reclaimed (requeued or dead-lettered)",
            ),
            dead_lettered: counter(
                "fleet_dead_lettered_total",
                "Tasks dead-lettered after spending their lease-loss budget",
            ),
            stale_completions: counter(
                "fleet_stale_completions_total",
                "Completions the lease script refused; recorded, never counted",
            ),
            duplicate_outcomes: counter(
                "fleet_duplicate_outcomes_total",
                "Accepted outcomes for an already finished task (must stay 0)",
            ),
            agents_alive: gauge("fleet_agents_alive", "Agents seen within three lease TTLs"),
            outcomes: counter_vec(
                "fleet_outcomes_total",
                "Accepted task outcomes; reason is the escalation reason, or for needs_target the target class no live agent had (recorded at submission), else empty",
                &["outcome", "reason"],
            ),
            reconciliations: counter(
                "fleet_reconciliations_total",
                "Rebuilds of the Redis queue from Postgres",
            ),
            runs_submitted: counter("fleet_runs_submitted_total", "Runs accepted by the API"),
            lease_protocol: gauge_vec(
                "fleet_lease_protocol_events",
                "Lease script counters held in Redis (stale_rejected, reclaimed, dead_lettered, released)",
                &["counter"],
            ),
            dreams: counter_vec(
                "fleet_dreams_total",
                "Dream-stage passes over completed runs, by result",
                &["result"],
            ),
            dream_duration,
            promotions: counter_vec(
                "fleet_promotions_total",
                "Promotion ledger entries, by action and verdict",
                &["action", "verdict"],
            ),
            dream_budget_deferrals: counter_vec(
                "fleet_dream_budget_deferrals_total",
                "Candidates a dream pass deferred because its budget was spent, by budget (promotions, wall_time)",
                &["budget"],
            ),
            agent_credentials: counter_vec(
                "fleet_agent_credentials_total",
                "Per-agent credential changes, by action (issued, revoked)",
                &["action"],
            ),
            run_not_comparable: gauge_vec(
                "fleet_run_not_comparable",
                "Rules of the last dreamt run left out of wins and regressions: an infrastructure outcome (outage, dead target, lost lease), by reason",
                &["skill", "profile", "reason"],
            ),
            run_reverts_withheld: float_gauge_vec(
                "fleet_run_reverts_withheld",
                "1 when the last dreamt run reverted nothing because too many of its rules were not comparable",
            ),
            harden_hosts: gauge_vec(
                "fleet_harden_hosts",
                "Hosts of the latest harden run, by result",
                &["result"],
            ),
            bundle_check: gauge_vec(
                "fleet_bundle_check",
                "The latest composition check of main's bundle on a fresh target, by figure",
                &["figure"],
            ),
            registry,
        };
        m.preset_series();
        m
    }

    /// Every series of a bounded label set exists from the start, at zero,
    /// so dashboards and alerts see 0 rather than no data.
    fn preset_series(&self) {
        for reason in ["oversized", "unknown_version", "malformed", "unknown_task"] {
            self.events_quarantined.with_label_values(&[reason]);
        }
        for action in ["issued", "revoked"] {
            self.agent_credentials.with_label_values(&[action]);
        }
        for result in ["done", "failed"] {
            self.dreams.with_label_values(&[result]);
        }
        for result in HARDEN_RESULTS {
            self.harden_hosts.with_label_values(&[result]);
        }
        for action in ["promote", "revert"] {
            for verdict in ["APPLY", "REJECT", "ESCALATE", "DEFER"] {
                self.promotions.with_label_values(&[action, verdict]);
            }
        }
    }

    pub fn agent_credentials(&self, action: &str) {
        self.agent_credentials.with_label_values(&[action]).inc();
    }

    /// Text exposition format, for `GET /metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding into a Vec cannot fail");
        String::from_utf8(buf).expect("text exposition is utf-8")
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Quarantined entries over all reasons.
    pub fn quarantined_total(&self) -> u64 {
        sum(&self.events_quarantined)
    }

    pub fn quarantined(&self, reason: &str) -> u64 {
        self.events_quarantined.with_label_values(&[reason]).get()
    }

    /// Applied events over all kinds.
    pub fn ingested_total(&self) -> u64 {
        sum(&self.events_ingested)
    }

    pub fn ingested(&self, kind: &str) -> u64 {
        self.events_ingested.with_label_values(&[kind]).get()
    }

    pub fn duplicate_outcomes(&self) -> u64 {
        self.duplicate_outcomes.get()
    }

    pub fn stale_completions(&self) -> u64 {
        self.stale_completions.get()
    }

    pub fn reconciliations(&self) -> u64 {
        self.reconciliations.get()
    }

    pub fn outcomes_total(&self) -> u64 {
        sum(&self.outcomes)
    }
}

fn sum(vec: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_exposes_every_family_with_bounded_labels() {
        let m = Metrics::new();
        m.events_ingested
            .with_label_values(&["attempt_started"])
            .inc();
        m.events_quarantined
            .with_label_values(&["malformed"])
            .inc_by(2);
        m.events_quarantined
            .with_label_values(&["unknown_task"])
            .inc();
        m.outcomes.with_label_values(&["fixed", ""]).inc();
        m.queue_depth.with_label_values(&["ready"]).set(3);
        m.ingest_lag.observe(0.02);
        let text = m.render();
        for name in [
            "fleet_events_ingested_total{kind=\"attempt_started\"} 1",
            "fleet_events_quarantined_total{reason=\"malformed\"} 2",
            "fleet_outcomes_total{outcome=\"fixed\",reason=\"\"} 1",
            "fleet_queue_depth{state=\"ready\"} 3",
            "fleet_ingest_lag_seconds_count 1",
            "fleet_duplicate_outcomes_total 0",
            "fleet_runs_submitted_total 0",
            "fleet_reconciliations_total 0",
            "fleet_agents_alive 0",
        ] {
            assert!(text.contains(name), "missing {name:?} in\n{text}");
        }
        assert_eq!(m.quarantined_total(), 3);
        assert_eq!(m.ingested_total(), 1);
        assert_eq!(m.duplicate_outcomes(), 0);
    }

    #[test]
    fn clones_share_collectors() {
        let m = Metrics::new();
        m.clone().duplicate_outcomes.inc();
        assert_eq!(m.duplicate_outcomes(), 1);
    }
}
