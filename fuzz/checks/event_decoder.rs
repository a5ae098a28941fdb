//! The ingester's decoders on any bytes: `Event::decode` (one event's JSON)
//! and `Delivered::decode` (a stream entry's `e` and `rejected` fields, the
//! input split at its first NUL byte). Neither may panic; every error is a
//! `QuarantineReason` with a bounded label, and what decodes is valid and
//! survives re-encoding.

use fleet_common::event::{
    Delivered, Event, EventBody, QuarantineReason, MAX_EVENT_BYTES, READABLE_VERSIONS,
};

pub fn check(data: &[u8]) {
    let decoded = Event::decode(data);
    match &decoded {
        Ok(event) => valid_event(event),
        Err(reason) => quarantined(reason, data.len()),
    }

    let (field, rejected) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    };
    match Delivered::decode(Some(field), rejected) {
        Ok(delivered) => {
            assert_eq!(
                Event::decode(field).as_ref(),
                Ok(&delivered.event),
                "a delivered event decodes on its own"
            );
            if delivered.rejected.is_some() {
                assert!(
                    matches!(delivered.event.body, EventBody::TaskCompleted { .. }),
                    "only task_completed can be rejected"
                );
            }
        }
        Err(reason) => quarantined(&reason, field.len()),
    }
    if rejected.is_none() {
        assert_eq!(
            Delivered::decode(Some(data), None).map(|d| d.event),
            decoded,
            "without a rejection the entry decodes like its event"
        );
    }
    assert!(
        Delivered::decode(None, rejected).is_err(),
        "an entry without an event field is quarantined"
    );
}

fn valid_event(event: &Event) {
    assert!(READABLE_VERSIONS.contains(&event.v));
    assert!(!event.id.0.is_empty() && event.id.0.len() <= 64);
    assert!(!event.rule.is_empty() && event.rule.len() <= 256);
    assert!(event.run.0 > 0 && event.task.0 > 0);
    let json = event.to_json();
    if json.len() <= MAX_EVENT_BYTES {
        // Floats may move by an ulp through JSON; the identity may not.
        let again = Event::decode(json.as_bytes()).expect("a decoded event re-encodes validly");
        assert_eq!(
            (&again.id, again.run, again.task, &again.rule, &again.agent),
            (&event.id, event.run, event.task, &event.rule, &event.agent)
        );
        assert_eq!((again.seq, again.epoch), (event.seq, event.epoch));
        assert_eq!(again.body.kind(), event.body.kind());
    }
}

fn quarantined(reason: &QuarantineReason, len: usize) {
    assert!(matches!(
        reason.label(),
        "oversized" | "unknown_version" | "malformed"
    ));
    assert_eq!(
        matches!(reason, QuarantineReason::Oversized { .. }),
        len > MAX_EVENT_BYTES,
        "oversized exactly when over the limit"
    );
    if let QuarantineReason::UnknownVersion(v) = reason {
        assert!(!READABLE_VERSIONS.iter().any(|&r| u64::from(r) == *v));
    }
    assert!(!reason.to_string().is_empty());
}
