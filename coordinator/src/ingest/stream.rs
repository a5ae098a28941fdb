//! Raw stream commands of the ingester: read through the consumer group,
//! acknowledge, and trim what every consumer has acknowledged (DESIGN L7).
//!
//! Replies are parsed by hand from `redis::Value` because entries can be
//! anything an agent (or an attacker with stream access) wrote: binary field
//! names and values must reach quarantine, not fail the read.

use redis::aio::ConnectionManager;
use redis::{RedisError, Value};

use fleet_common::keys::INGEST_GROUP;

/// One stream entry. `fields` is `None` when the entry was deleted while
/// pending (Redis then returns its id with no fields).
#[derive(Debug, Clone)]
pub(crate) struct StreamEntry {
    pub id: String,
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

impl StreamEntry {
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    /// Redis time (unix ms) of the append: the first part of the entry id.
    pub fn appended_ms(&self) -> Option<i64> {
        self.id.split_once('-')?.0.parse().ok()
    }

    /// Every field, for quarantine when there is no event field to keep.
    pub fn raw(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in self.fields.iter().flatten() {
            out.extend_from_slice(k);
            out.push(b'=');
            out.extend_from_slice(v);
            out.push(b'\n');
        }
        out
    }
}

/// `XREADGROUP GROUP ingest <consumer> COUNT <count> STREAMS <stream> <id>`
/// without BLOCK: the connection is shared and multiplexed, and a blocked
/// read would stall every other command queued behind it.
pub(crate) async fn read_group(
    conn: &mut ConnectionManager,
    stream: &str,
    consumer: &str,
    start: &str,
    count: usize,
) -> Result<Vec<StreamEntry>, RedisError> {
    let reply: Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(INGEST_GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg(stream)
        .arg(start)
        .query_async(conn)
        .await?;
    Ok(parse_read_reply(reply))
}

/// Creates the group at the start of the stream (so nothing already there is
/// skipped); an existing group is fine.
pub(crate) async fn ensure_group(
    conn: &mut ConnectionManager,
    stream: &str,
) -> Result<(), RedisError> {
    let created: Result<Value, RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(INGEST_GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Takes over entries another consumer left pending for `min_idle_ms` (a
/// coordinator that died under another consumer name); they then show up in
/// this consumer's own pending list.
pub(crate) async fn claim_abandoned(
    conn: &mut ConnectionManager,
    stream: &str,
    consumer: &str,
    min_idle_ms: u64,
) -> Result<(), RedisError> {
    let _: Value = redis::cmd("XAUTOCLAIM")
        .arg(stream)
        .arg(INGEST_GROUP)
        .arg(consumer)
        .arg(min_idle_ms)
        .arg("0-0")
        .arg("COUNT")
        .arg(512)
        .arg("JUSTID")
        .query_async(conn)
        .await?;
    Ok(())
}

/// Acknowledges `ids` (one batch, in stream order) and, in the same round
/// trip, asks for the group's pending summary and last delivered id; then
/// trims entries below the smallest id still pending, or below the last
/// delivered one when nothing is (not below the last of `ids`: with several
/// workers, the batch that acks last may not hold the highest ids).
/// Unacknowledged entries are never trimmed; entries not yet delivered have
/// larger ids than anything delivered. A failed trim is only logged: the
/// next batch trims again.
pub(crate) async fn ack_and_trim(
    conn: &mut ConnectionManager,
    stream: &str,
    ids: &[&str],
) -> Result<(), RedisError> {
    let Some(last_acked) = ids.last() else {
        return Ok(());
    };
    let (_, summary, groups): (u64, Value, Value) = redis::pipe()
        .cmd("XACK")
        .arg(stream)
        .arg(INGEST_GROUP)
        .arg(ids)
        .cmd("XPENDING")
        .arg(stream)
        .arg(INGEST_GROUP)
        .cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await?;
    let min_id = match &summary {
        Value::Array(items) if items.len() >= 2 && as_int(&items[0]).unwrap_or(0) > 0 => {
            as_string(&items[1])
        }
        _ => last_delivered(&groups),
    }
    .unwrap_or_else(|| (*last_acked).to_owned());
    let trimmed: Result<u64, RedisError> = redis::cmd("XTRIM")
        .arg(stream)
        .arg("MINID")
        .arg(min_id)
        .query_async(conn)
        .await;
    if let Err(error) = trimmed {
        tracing::warn!(%error, "stream trim failed; retried after the next batch");
    }
    Ok(())
}

/// `[[stream, [[id, [k, v, …]], …]]]` (RESP2) or `{stream: [...]}` (RESP3).
fn parse_read_reply(reply: Value) -> Vec<StreamEntry> {
    let streams: Vec<Value> = match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs.into_iter().map(|(_, v)| v).collect(),
        _ => Vec::new(),
    };
    streams
        .into_iter()
        .flat_map(|entries| match entries {
            Value::Array(entries) => entries,
            _ => Vec::new(),
        })
        .filter_map(parse_entry)
        .collect()
}

fn parse_entry(entry: Value) -> Option<StreamEntry> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let body = parts.pop()?;
    let id = as_string(&parts[0])?;
    let fields = match body {
        Value::Array(flat) => Some(
            flat.chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| (as_bytes(&kv[0]), as_bytes(&kv[1])))
                .collect(),
        ),
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .map(|(k, v)| (as_bytes(k), as_bytes(v)))
                .collect(),
        ),
        _ => None,
    };
    Some(StreamEntry { id, fields })
}

fn as_bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::BulkString(b) => b.clone(),
        Value::SimpleString(s) => s.clone().into_bytes(),
        Value::Int(i) => i.to_string().into_bytes(),
        Value::VerbatimString { text, .. } => text.clone().into_bytes(),
        _ => Vec::new(),
    }
}

/// The ingest group's `last-delivered-id` from `XINFO GROUPS` (a list of
/// field/value lists in RESP2, of maps in RESP3).
fn last_delivered(groups: &Value) -> Option<String> {
    let Value::Array(groups) = groups else {
        return None;
    };
    groups.iter().find_map(|group| {
        let pairs: Vec<(&Value, &Value)> = match group {
            Value::Array(flat) => flat
                .chunks(2)
                .filter_map(|kv| kv.first().zip(kv.get(1)))
                .collect(),
            Value::Map(map) => map.iter().map(|(k, v)| (k, v)).collect(),
            _ => return None,
        };
        let field = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| as_string(k).as_deref() == Some(name))
                .and_then(|(_, v)| as_string(v))
        };
        (field("name").as_deref() == Some(INGEST_GROUP))
            .then(|| field("last-delivered-id"))
            .flatten()
    })
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => as_string(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn parses_binary_fields_and_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"fleet:events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1-0"),
                    Value::Array(vec![bulk(b"e"), bulk(b"{}")]),
                ]),
                Value::Array(vec![
                    bulk(b"2-0"),
                    Value::Array(vec![bulk(&[0xff, 0]), bulk(&[1, 2])]),
                ]),
                Value::Array(vec![bulk(b"3-0"), Value::Nil]),
            ]),
        ])]);
        let entries = parse_read_reply(reply);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].field("e"), Some(&b"{}"[..]));
        assert_eq!(entries[1].field("e"), None);
        assert_eq!(entries[1].raw(), vec![0xff, 0, b'=', 1, 2, b'\n']);
        assert!(entries[2].fields.is_none());
        assert!(parse_read_reply(Value::Nil).is_empty());
    }
}
