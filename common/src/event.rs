//! The one versioned, typed event enum (DESIGN E1) and its decoder, which
//! sorts what arrives on the stream into events or quarantine (DESIGN E3).
//!
//! Wire form: one JSON object per stream entry under field `e`:
//! `{"v":2,"id":..,"run":..,"task":..,"rule":..,"agent":..,"incarnation":..,
//!   "epoch":..,"attempt":..,"seq":..,"ts_ms":..,"body":{"type":..,..}}`.
//! A completion the lease script refused carries a second field `rejected`
//! with the reason; it is recorded but never counted (DESIGN L3). So does an
//! agent's replay of a completion Redis lost (`unconfirmed`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{AgentId, Epoch, EventId, RunId, TaskId};
use crate::lesson::{CandidateLesson, ReflectionFailure};
use crate::task::Outcome;

/// The version this build writes. A reader takes it and every version in
/// [`READABLE_VERSIONS`], and quarantines any other (DESIGN E1, E3).
///
/// - 1: the first wire form.
/// - 2: `script_proposed` says where its script came from (`source`, DESIGN
///   H1). A version-1 `script_proposed` reads as written by the brain.
pub const EVENT_VERSION: u16 = 2;

/// Versions this build decodes: the current one and the older ones whose
/// events still mean the same thing read with today's defaults.
pub const READABLE_VERSIONS: [u16; 2] = [1, EVENT_VERSION];

/// Larger entries are quarantined unread (DESIGN E3). Scripts are capped well
/// below this by the agent.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Stream entry field holding the event JSON.
pub const FIELD_EVENT: &str = "e";
/// Stream entry field set by the complete script when it refused the
/// completion, or by an agent replaying a completion Redis lost; its value
/// is the [`RejectReason`].
pub const FIELD_REJECTED: &str = "rejected";

/// Agent name used on events the coordinator side produces (reaper).
pub const COORDINATOR_AGENT: &str = "coordinator";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub v: u16,
    pub id: EventId,
    pub run: RunId,
    pub task: TaskId,
    pub rule: String,
    pub agent: AgentId,
    /// Which start of the agent process this is; `seq` restarts at 1 with
    /// each incarnation, so (agent, incarnation, seq) is unique and gap-free.
    pub incarnation: u32,
    pub epoch: Epoch,
    /// 1-based attempt number; 0 for events outside an attempt.
    pub attempt: u32,
    pub seq: u64,
    /// Unix milliseconds when the event was made.
    pub ts_ms: i64,
    pub body: EventBody,
}

/// One lesson as it appeared in a prompt (DESIGN E4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LessonRef {
    pub id: String,
    /// 1-based position in the prompt's ranked list.
    pub rank: u32,
    pub score: f64,
}

/// The Evaluator's verdict on one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalStatus {
    Pass,
    Fail,
    NotApplicable,
    Error,
    NotChecked,
    Informational,
}

/// Why an agent stopped working on a lease without completing it (DESIGN L4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonReason {
    /// Redis refused a renewal: the lease is gone.
    RenewRefused,
    /// No renewal succeeded before TTL minus the safety margin.
    LocalDeadline,
}

/// Where an attempt's script came from (DESIGN H1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScriptSource {
    /// Proposed by the brain for this attempt's prompt.
    #[default]
    Brain,
    /// `skills/<rule>.sh` replayed from the `main` the lease fetched.
    Skill {
        /// Git blob id of the file on that `main`.
        blob: String,
        /// The `main` commit it was read from.
        commit: String,
    },
}

impl ScriptSource {
    /// Stable name stored in `attempts.script_source`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Brain => "brain",
            Self::Skill { .. } => "skill",
        }
    }

    pub fn is_skill(&self) -> bool {
        matches!(self, Self::Skill { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum EventBody {
    LeaseAcquired {
        deadline_ms: i64,
    },
    AttemptStarted,
    /// Every lesson id in the prompt with its rank and score (DESIGN E4).
    PromptAssembled {
        lessons: Vec<LessonRef>,
        prompt_chars: u32,
    },
    ScriptProposed {
        script: String,
        /// Where the script came from; absent in version 1, which only had
        /// the brain.
        #[serde(default)]
        source: ScriptSource,
    },
    AttemptEvaluated {
        status: EvalStatus,
        health_ok: bool,
        duration_ms: u64,
        /// Names of the skill pack's health checks that failed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        health_failed: Vec<String>,
        /// What the target's sandbox did to the script, when it did
        /// anything: `killed: out of memory (limit 512 MiB; …)`, `pid limit
        /// reached`, `timed out …` (DESIGN T1). Absent otherwise.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        contained: Option<String>,
        /// Unix ms when the script's write to the target began: taken right
        /// after the lease fence passed, just before the exec (DESIGN L4,
        /// T2). A checker holds it against the time the lease was lost.
        /// Absent when nothing ran (the screen refused the script).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script_started_ms: Option<i64>,
    },
    /// The Reflector's lesson (or ban) from a failed attempt: a candidate
    /// until the dream stage accepts it (DESIGN D3).
    LessonProposed {
        lesson: CandidateLesson,
    },
    /// The Reflector gave no lesson for a failed attempt.
    ReflectionFailed {
        reason: ReflectionFailure,
    },
    /// The agent stopped work on the lease, reverted and discarded (L4).
    LeaseAbandoned {
        reason: AbandonReason,
    },
    /// Graceful hand-back on shutdown, or while the brain's endpoint is
    /// down (the agent's LLM hold): no outcome, no lease loss.
    LeaseReleased,
    /// A lease expired by Redis time and was taken back (DESIGN L5), by the
    /// reaper or by a lease call; appended by the script that reclaimed it,
    /// with `agent` = `coordinator` and the lost grant's epoch. `losses` is
    /// the task's lease-loss count including this one.
    LeaseReclaimed {
        holder: AgentId,
        losses: u32,
    },
    /// A host task (DESIGN H3, H4) applied one bundle section: progress
    /// while a host is worked on.
    SectionApplied {
        section: crate::host::SectionResult,
    },
    /// A host task's findings, emitted once just before its completion; the
    /// accepted epoch's report is the host's result.
    HostReported {
        report: Box<crate::host::HostReport>,
    },
    /// Appended atomically with acceptance by the complete script, or by the
    /// reaper when it dead-letters (then `agent` is `coordinator`).
    TaskCompleted {
        outcome: Outcome,
        attempts: u32,
        duration_ms: u64,
    },
}

impl EventBody {
    /// Stable name stored in `run_events.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::LeaseAcquired { .. } => "lease_acquired",
            Self::AttemptStarted => "attempt_started",
            Self::PromptAssembled { .. } => "prompt_assembled",
            Self::ScriptProposed { .. } => "script_proposed",
            Self::AttemptEvaluated { .. } => "attempt_evaluated",
            Self::LessonProposed { .. } => "lesson_proposed",
            Self::ReflectionFailed { .. } => "reflection_failed",
            Self::LeaseAbandoned { .. } => "lease_abandoned",
            Self::LeaseReleased => "lease_released",
            Self::LeaseReclaimed { .. } => "lease_reclaimed",
            Self::SectionApplied { .. } => "section_applied",
            Self::HostReported { .. } => "host_reported",
            Self::TaskCompleted { .. } => "task_completed",
        }
    }
}

/// Why the complete script refused a completion (DESIGN L3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Redis has no such task (e.g. it came back empty and is being rebuilt).
    UnknownTask,
    /// The task is not leased: reclaimed, finished or dead-lettered.
    NotLeased,
    /// A newer grant exists.
    StaleEpoch,
    /// Leased to someone else with this epoch (should never happen).
    WrongAgent,
    /// The lease expired by Redis time before the completion arrived.
    Expired,
    /// Not from the complete script: the agent's replay of a completion
    /// that Redis accepted but lost (it came back empty) before it was
    /// ingested. The task was rebuilt as pending and is run again, so this
    /// copy only fills the agent's seq hole and is never counted; if the
    /// accepted copy was ingested after all, this one dedupes to it (same
    /// event id).
    Unconfirmed,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownTask => "unknown_task",
            Self::NotLeased => "not_leased",
            Self::StaleEpoch => "stale_epoch",
            Self::WrongAgent => "wrong_agent",
            Self::Expired => "expired",
            Self::Unconfirmed => "unconfirmed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::UnknownTask,
            Self::NotLeased,
            Self::StaleEpoch,
            Self::WrongAgent,
            Self::Expired,
            Self::Unconfirmed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Why an entry went to quarantine instead of being applied.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum QuarantineReason {
    #[error("event of {size} bytes exceeds the {max} byte limit")]
    Oversized { size: usize, max: usize },
    #[error("event version {0} is not supported")]
    UnknownVersion(u64),
    #[error("malformed event: {0}")]
    Malformed(String),
}

impl QuarantineReason {
    /// Bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::UnknownVersion(_) => "unknown_version",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// A decoded stream entry: the event, and whether the lease script refused it.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub event: Event,
    pub rejected: Option<RejectReason>,
}

impl Event {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("event serialization cannot fail")
    }

    /// Decodes one event JSON, checking size and version before the typed
    /// parse so that a future version is reported as such, not as garbage.
    pub fn decode(raw: &[u8]) -> Result<Event, QuarantineReason> {
        if raw.len() > MAX_EVENT_BYTES {
            return Err(QuarantineReason::Oversized {
                size: raw.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        #[derive(Deserialize)]
        struct VersionProbe {
            v: Option<u64>,
        }
        let probe: VersionProbe =
            serde_json::from_slice(raw).map_err(|e| QuarantineReason::Malformed(e.to_string()))?;
        match probe.v {
            Some(v) if READABLE_VERSIONS.iter().any(|&r| u64::from(r) == v) => {}
            Some(v) => return Err(QuarantineReason::UnknownVersion(v)),
            None => return Err(QuarantineReason::Malformed("missing field `v`".into())),
        }
        let event: Event =
            serde_json::from_slice(raw).map_err(|e| QuarantineReason::Malformed(e.to_string()))?;
        event.validate()?;
        Ok(event)
    }

    fn validate(&self) -> Result<(), QuarantineReason> {
        let bad = |m: &str| Err(QuarantineReason::Malformed(m.to_owned()));
        if self.id.0.is_empty() || self.id.0.len() > 64 {
            return bad("event id must be 1-64 characters");
        }
        if self.rule.is_empty() || self.rule.len() > 256 {
            return bad("rule must be 1-256 characters");
        }
        if AgentId::parse(self.agent.as_str()).is_err() {
            return bad("agent id has characters outside [A-Za-z0-9._-]");
        }
        if self.run.0 <= 0 || self.task.0 <= 0 {
            return bad("run and task ids must be positive");
        }
        if let EventBody::ScriptProposed { source, .. } = &self.body {
            if self.v < 2 && source.is_skill() {
                return bad("version 1 has no script source");
            }
            if let ScriptSource::Skill { blob, commit } = source {
                // SHA-1 or SHA-256 repositories.
                let oid = |s: &str| {
                    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
                };
                if !oid(blob) || !oid(commit) {
                    return bad("a skill's blob and commit must be git object ids");
                }
            }
        }
        Ok(())
    }
}

impl Delivered {
    /// Decodes the fields of one stream entry.
    pub fn decode(event: Option<&[u8]>, rejected: Option<&[u8]>) -> Result<Self, QuarantineReason> {
        let raw = event.ok_or_else(|| {
            QuarantineReason::Malformed(format!("stream entry has no `{FIELD_EVENT}` field"))
        })?;
        let event = Event::decode(raw)?;
        let rejected = match rejected {
            None => None,
            Some(r) => {
                let s = std::str::from_utf8(r).unwrap_or("");
                Some(RejectReason::parse(s).ok_or_else(|| {
                    QuarantineReason::Malformed(format!("unknown rejection reason {s:?}"))
                })?)
            }
        };
        if rejected.is_some() && !matches!(event.body, EventBody::TaskCompleted { .. }) {
            return Err(QuarantineReason::Malformed(
                "only task_completed events can be rejected".into(),
            ));
        }
        Ok(Self { event, rejected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::EscalationReason;

    fn sample(body: EventBody) -> Event {
        Event {
            v: EVENT_VERSION,
            id: EventId::new_v7(),
            run: RunId(1),
            task: TaskId(2),
            rule: "audit_rules_immutable".into(),
            agent: AgentId("agent-1".into()),
            incarnation: 1,
            epoch: Epoch(1 << 20 | 1),
            attempt: 1,
            seq: 7,
            ts_ms: 1_700_000_000_000,
            body,
        }
    }

    #[test]
    fn every_body_round_trips() {
        let bodies = vec![
            EventBody::LeaseAcquired { deadline_ms: 5 },
            EventBody::AttemptStarted,
            EventBody::PromptAssembled {
                lessons: vec![LessonRef {
                    id: "l-1".into(),
                    rank: 1,
                    score: 0.75,
                }],
                prompt_chars: 1200,
            },
            EventBody::ScriptProposed {
                script: "echo hi".into(),
                source: ScriptSource::Brain,
            },
            EventBody::ScriptProposed {
                script: "apt-get install -y -q cron".into(),
                source: ScriptSource::Skill {
                    blob: "a".repeat(40),
                    commit: "b".repeat(40),
                },
            },
            EventBody::AttemptEvaluated {
                status: EvalStatus::Fail,
                health_ok: false,
                duration_ms: 3,
                health_failed: vec!["sshd_config".into()],
                contained: Some("killed: out of memory (limit 512 MiB; 1 process killed)".into()),
                script_started_ms: Some(1_700_000_000_123),
            },
            EventBody::LessonProposed {
                lesson: CandidateLesson {
                    id: "r-r1-e1-a1-ban".into(),
                    kind: crate::lesson::CandidateKind::Ban,
                    family: "audit_rules".into(),
                    scope: crate::lesson::LessonScope::Family,
                    text: "Never flush the rules.".into(),
                    pattern: Some("auditctl -D".into()),
                },
            },
            EventBody::ReflectionFailed {
                reason: ReflectionFailure::ReflectorUnparseable,
            },
            EventBody::LeaseAbandoned {
                reason: AbandonReason::RenewRefused,
            },
            EventBody::LeaseReleased,
            EventBody::LeaseReclaimed {
                holder: AgentId("agent-2".into()),
                losses: 2,
            },
            EventBody::TaskCompleted {
                outcome: Outcome::Escalated {
                    reason: EscalationReason::Health,
                },
                attempts: 3,
                duration_ms: 10,
            },
        ];
        for body in bodies {
            let e = sample(body);
            let back = Event::decode(e.to_json().as_bytes()).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut v: serde_json::Value =
            serde_json::from_str(&sample(EventBody::AttemptStarted).to_json()).unwrap();
        v["v"] = 3.into();
        let err = Event::decode(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, QuarantineReason::UnknownVersion(3));
        v["v"] = 0.into();
        let err = Event::decode(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(err, QuarantineReason::UnknownVersion(0));
    }

    /// Written by a version-1 agent, before scripts had a source: still
    /// decoded, as the brain's (DESIGN E1, H1).
    #[test]
    fn a_version_1_script_proposal_reads_as_the_brains() {
        let raw = r#"{"v":1,"id":"0193a8f2-7c1e-7b3a-9f00-5d2c1e0a4b11","run":3,"task":17,"rule":"package_audit_installed","agent":"agent-1","incarnation":2,"epoch":1048577,"attempt":1,"seq":5,"ts_ms":1700000000000,"body":{"type":"script_proposed","script":"apt-get install -y auditd\n"}}"#;
        let e = Event::decode(raw.as_bytes()).unwrap();
        assert_eq!(e.v, 1);
        assert_eq!(
            e.body,
            EventBody::ScriptProposed {
                script: "apt-get install -y auditd\n".into(),
                source: ScriptSource::Brain,
            }
        );
        let other = r#"{"v":1,"id":"x","run":1,"task":1,"rule":"r","agent":"a","incarnation":1,"epoch":1,"attempt":0,"seq":1,"ts_ms":0,"body":{"type":"lease_released"}}"#;
        assert_eq!(
            Event::decode(other.as_bytes()).unwrap().body,
            EventBody::LeaseReleased
        );
    }

    #[test]
    fn a_skill_source_needs_version_2_and_object_ids() {
        let skill = |blob: &str| {
            sample(EventBody::ScriptProposed {
                script: "true".into(),
                source: ScriptSource::Skill {
                    blob: blob.into(),
                    commit: "c".repeat(40),
                },
            })
        };
        let good = skill(&"a".repeat(40));
        let json = good.to_json();
        assert!(json.contains(r#""source":{"kind":"skill","#), "{json}");
        assert_eq!(Event::decode(json.as_bytes()).unwrap(), good);
        let mut v1 = good.clone();
        v1.v = 1;
        assert_eq!(
            Event::decode(v1.to_json().as_bytes()).unwrap_err().label(),
            "malformed"
        );
        for bad in ["", "xyz", "../../etc/passwd"] {
            let e = skill(bad);
            assert_eq!(
                Event::decode(e.to_json().as_bytes()).unwrap_err().label(),
                "malformed",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn garbage_oversized_and_unknown_fields_are_quarantined() {
        assert_eq!(Event::decode(b"not json").unwrap_err().label(), "malformed");
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert_eq!(Event::decode(&big).unwrap_err().label(), "oversized");
        let mut v: serde_json::Value =
            serde_json::from_str(&sample(EventBody::AttemptStarted).to_json()).unwrap();
        v["surprise"] = 1.into();
        assert_eq!(
            Event::decode(v.to_string().as_bytes()).unwrap_err().label(),
            "malformed"
        );
        let mut v: serde_json::Value =
            serde_json::from_str(&sample(EventBody::AttemptStarted).to_json()).unwrap();
        v["body"]["type"] = "self_destruct".into();
        assert_eq!(
            Event::decode(v.to_string().as_bytes()).unwrap_err().label(),
            "malformed"
        );
        let mut v: serde_json::Value =
            serde_json::from_str(&sample(EventBody::AttemptStarted).to_json()).unwrap();
        v["agent"] = "../../etc".into();
        assert_eq!(
            Event::decode(v.to_string().as_bytes()).unwrap_err().label(),
            "malformed"
        );
    }

    #[test]
    fn only_completions_can_carry_a_rejection() {
        let done = sample(EventBody::TaskCompleted {
            outcome: Outcome::Fixed { attempt: 1 },
            attempts: 1,
            duration_ms: 1,
        });
        let d = Delivered::decode(Some(done.to_json().as_bytes()), Some(b"stale_epoch")).unwrap();
        assert_eq!(d.rejected, Some(RejectReason::StaleEpoch));
        let other = sample(EventBody::AttemptStarted);
        assert!(Delivered::decode(Some(other.to_json().as_bytes()), Some(b"stale_epoch")).is_err());
        assert!(Delivered::decode(Some(done.to_json().as_bytes()), Some(b"because")).is_err());
        assert!(Delivered::decode(None, None).is_err());
        let d = Delivered::decode(Some(done.to_json().as_bytes()), Some(b"unconfirmed")).unwrap();
        assert_eq!(d.rejected, Some(RejectReason::Unconfirmed));
    }

    #[test]
    fn every_reject_reason_parses_back() {
        for r in [
            RejectReason::UnknownTask,
            RejectReason::NotLeased,
            RejectReason::StaleEpoch,
            RejectReason::WrongAgent,
            RejectReason::Expired,
            RejectReason::Unconfirmed,
        ] {
            assert_eq!(RejectReason::parse(r.as_str()), Some(r));
        }
    }

    #[test]
    fn an_evaluation_without_script_start_reads_as_before() {
        let e = sample(EventBody::AttemptEvaluated {
            status: EvalStatus::Fail,
            health_ok: true,
            duration_ms: 3,
            health_failed: Vec::new(),
            contained: None,
            script_started_ms: None,
        });
        let json = e.to_json();
        assert!(!json.contains("script_started_ms"));
        assert_eq!(Event::decode(json.as_bytes()).unwrap(), e);
    }
}
