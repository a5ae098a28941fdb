//! Sorting stream entries into events to apply and entries to quarantine
//! (DESIGN E3). Besides the protocol's own checks (size, version, shape),
//! events that Postgres would refuse are caught here: one of those would
//! otherwise fail its whole batch on every redelivery and stop ingestion.

use fleet_common::event::{Delivered, EventBody, QuarantineReason, FIELD_EVENT, FIELD_REJECTED};
use fleet_common::lesson::{
    CandidateKind, CandidateLesson, MAX_BAN_PATTERN_CHARS, MAX_LESSON_CHARS,
};
use fleet_common::{Event, Outcome};

use super::stream::StreamEntry;

/// Unix ms of 9999-12-31T23:59:59.999Z; later (or negative) times are garbage.
const MAX_TS_MS: i64 = 253_402_300_799_999;
/// Quarantine details are for people; keep them short.
const MAX_DETAIL_CHARS: usize = 1000;

/// One stream entry, sorted.
pub(crate) enum Decoded {
    Event(Box<Delivered>),
    Bad {
        reason: &'static str,
        detail: String,
        raw: Vec<u8>,
    },
    /// Deleted while pending: nothing left to apply or keep.
    Gone,
}

pub(crate) fn decode(entry: &StreamEntry) -> Decoded {
    if entry.fields.is_none() {
        return Decoded::Gone;
    }
    let field = entry.field(FIELD_EVENT);
    let raw = || field.map(<[u8]>::to_vec).unwrap_or_else(|| entry.raw());
    // JSON can only carry a NUL as the escape `\u0000`: without those six
    // bytes the (costly) walk through every string is not needed.
    let may_hold_nul = field.is_some_and(|f| f.windows(6).any(|w| w == b"\\u0000"));
    match Delivered::decode(field, entry.field(FIELD_REJECTED)) {
        Ok(d) => match check_storable(&d.event, may_hold_nul) {
            Ok(()) => Decoded::Event(Box::new(d)),
            Err(detail) => Decoded::Bad {
                reason: QuarantineReason::Malformed(String::new()).label(),
                detail,
                raw: raw(),
            },
        },
        Err(reason) => Decoded::Bad {
            reason: reason.label(),
            detail: reason.to_string(),
            raw: raw(),
        },
    }
}

/// Values that parse as an event but that Postgres would refuse (and so
/// fail the whole batch on every redelivery) are quarantined instead.
fn check_storable(e: &Event, may_hold_nul: bool) -> Result<(), String> {
    let fits_i32 = |v: u64| v <= i32::MAX as u64;
    let fits_i64 = |v: u64| v <= i64::MAX as u64;
    if !fits_i64(e.epoch.0)
        || !fits_i64(e.seq)
        || !fits_i32(e.incarnation.into())
        || !fits_i32(e.attempt.into())
    {
        return Err("epoch, seq, incarnation or attempt out of range".into());
    }
    if !(0..=MAX_TS_MS).contains(&e.ts_ms) {
        return Err(format!(
            "ts_ms {} is not a unix time in milliseconds",
            e.ts_ms
        ));
    }
    match &e.body {
        EventBody::TaskCompleted {
            outcome,
            attempts,
            duration_ms,
        } => {
            let fixed = match outcome {
                Outcome::Fixed { attempt } => *attempt,
                _ => 0,
            };
            if !fits_i32(fixed.into()) || !fits_i32((*attempts).into()) || !fits_i64(*duration_ms) {
                return Err("task_completed counters out of range".into());
            }
        }
        EventBody::LessonProposed { lesson } => check_candidate(lesson)?,
        EventBody::PromptAssembled { lessons, .. }
            if lessons
                .iter()
                .any(|l| !fits_i32(l.rank.into()) || !l.score.is_finite()) =>
        {
            return Err("lesson rank or score out of range".into());
        }
        _ => {}
    }
    // Postgres text and jsonb cannot hold NUL.
    if !may_hold_nul {
        return Ok(());
    }
    let value = serde_json::to_value(e).map_err(|err| err.to_string())?;
    if contains_nul(&value) {
        return Err("event contains a NUL character, which postgres cannot store".into());
    }
    Ok(())
}

/// A candidate becomes a row and, later, a file name on `main`: its id and
/// family must be path components, its text bounded, a ban's pattern a regex.
fn check_candidate(l: &CandidateLesson) -> Result<(), String> {
    fleet_knowledge::validate_component("lesson id", &l.id).map_err(|e| e.to_string())?;
    fleet_knowledge::validate_component("family", &l.family).map_err(|e| e.to_string())?;
    if l.text.trim().is_empty() || l.text.chars().count() > MAX_LESSON_CHARS {
        return Err(format!(
            "lesson text must hold 1 to {MAX_LESSON_CHARS} characters"
        ));
    }
    match (l.kind, &l.pattern) {
        (CandidateKind::Ban, Some(p)) if p.chars().count() <= MAX_BAN_PATTERN_CHARS => Ok(()),
        (CandidateKind::Ban, _) => Err(format!(
            "a ban needs a pattern of at most {MAX_BAN_PATTERN_CHARS} characters"
        )),
        (CandidateKind::Lesson, None) => Ok(()),
        (CandidateKind::Lesson, Some(_)) => Err("only a ban has a pattern".into()),
    }
}

fn contains_nul(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(a) => a.iter().any(contains_nul),
        serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

pub(crate) fn sanitize(detail: &str) -> String {
    detail
        .chars()
        .take(MAX_DETAIL_CHARS)
        .map(|c| if c == '\0' { '\u{fffd}' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_common::event::{ScriptSource, EVENT_VERSION};
    use fleet_common::{AgentId, Epoch, EventId, RunId, TaskId};

    fn entry_of(json: &[u8]) -> StreamEntry {
        StreamEntry {
            id: "1-0".into(),
            fields: Some(vec![(FIELD_EVENT.as_bytes().to_vec(), json.to_vec())]),
        }
    }

    fn event(body: EventBody) -> Event {
        Event {
            v: EVENT_VERSION,
            id: EventId::new_v7(),
            run: RunId(1),
            task: TaskId(2),
            rule: "r".into(),
            agent: AgentId("a".into()),
            incarnation: 1,
            epoch: Epoch(1 << 20 | 1),
            attempt: 1,
            seq: 1,
            ts_ms: 1_700_000_000_000,
            body,
        }
    }

    #[test]
    fn values_postgres_would_refuse_are_caught_before_the_batch() {
        assert!(check_storable(&event(EventBody::AttemptStarted), true).is_ok());
        let mut e = event(EventBody::AttemptStarted);
        e.epoch = Epoch(u64::MAX);
        assert!(check_storable(&e, true).is_err());
        let mut e = event(EventBody::AttemptStarted);
        e.ts_ms = -1;
        assert!(check_storable(&e, true).is_err());
        let e = event(EventBody::ScriptProposed {
            script: "echo \0".into(),
            source: ScriptSource::Brain,
        });
        assert!(check_storable(&e, true).unwrap_err().contains("NUL"));
        let e = event(EventBody::ScriptProposed {
            script: "literal \\u0000 is fine".into(),
            source: ScriptSource::Brain,
        });
        assert!(check_storable(&e, true).is_ok());
    }

    #[test]
    fn a_nul_in_a_stream_entry_is_quarantined_and_an_escaped_backslash_is_not() {
        let entry = |script: &str| StreamEntry {
            id: "1-0".into(),
            fields: Some(vec![(
                FIELD_EVENT.as_bytes().to_vec(),
                event(EventBody::ScriptProposed {
                    script: script.into(),
                    source: ScriptSource::Brain,
                })
                .to_json()
                .into_bytes(),
            )]),
        };
        assert!(matches!(decode(&entry("echo \0")), Decoded::Bad { .. }));
        assert!(matches!(decode(&entry("echo \\u0000")), Decoded::Event(_)));
        assert!(matches!(decode(&entry("echo fine")), Decoded::Event(_)));
    }

    /// DESIGN E1, E3: version 1 (before script sources) is still applied,
    /// its scripts as the brain's; a version this build does not know is
    /// quarantined as such.
    #[test]
    fn version_1_entries_are_applied_and_unknown_versions_quarantined() {
        let mut v: serde_json::Value = serde_json::to_value(event(EventBody::ScriptProposed {
            script: "apt-get install -y -q cron".into(),
            source: ScriptSource::Brain,
        }))
        .unwrap();
        v["v"] = 1.into();
        v["body"].as_object_mut().unwrap().remove("source");
        match decode(&entry_of(v.to_string().as_bytes())) {
            Decoded::Event(d) => assert!(matches!(
                &d.event.body,
                EventBody::ScriptProposed {
                    source: ScriptSource::Brain,
                    ..
                }
            )),
            _ => panic!("a version 1 event was not applied"),
        }
        v["v"] = 3.into();
        match decode(&entry_of(v.to_string().as_bytes())) {
            Decoded::Bad { reason, .. } => assert_eq!(reason, "unknown_version"),
            _ => panic!("a version 3 event was applied"),
        }
    }

    #[test]
    fn candidate_lessons_that_could_not_become_files_are_quarantined() {
        use fleet_common::lesson::LessonScope;
        let good = CandidateLesson {
            id: "rule-r1-e1-a1".into(),
            kind: CandidateKind::Lesson,
            family: "audit_rules".into(),
            scope: LessonScope::Family,
            text: "Write rules under /etc/audit/rules.d.".into(),
            pattern: None,
        };
        let check = |l: &CandidateLesson| {
            check_storable(
                &event(EventBody::LessonProposed { lesson: l.clone() }),
                true,
            )
        };
        assert!(check(&good).is_ok());
        let bad = [
            CandidateLesson {
                id: "../../etc/passwd".into(),
                ..good.clone()
            },
            CandidateLesson {
                family: "a/b".into(),
                ..good.clone()
            },
            CandidateLesson {
                text: " ".into(),
                ..good.clone()
            },
            CandidateLesson {
                text: "x".repeat(MAX_LESSON_CHARS + 1),
                ..good.clone()
            },
            CandidateLesson {
                pattern: Some("rm".into()),
                ..good.clone()
            },
            CandidateLesson {
                kind: CandidateKind::Ban,
                ..good.clone()
            },
            CandidateLesson {
                kind: CandidateKind::Ban,
                pattern: Some("x".repeat(MAX_BAN_PATTERN_CHARS + 1)),
                ..good.clone()
            },
        ];
        for (i, l) in bad.iter().enumerate() {
            assert!(check(l).is_err(), "case {i} passed: {l:?}");
        }
    }
}
