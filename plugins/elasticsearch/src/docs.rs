//! NDJSON for `_bulk`: one `create` action and one document per item, written
//! straight from the batch's columns.
//!
//! Every action carries `_id` = `m-<seq>` (a sample) or `e-<seq>` (an event):
//! the item's place in Vigil's log, so a re-sent batch finds its documents
//! already there (`409`) instead of doubling them.

use std::io::Write;

use serde_json::Value;
use vigil_plugin::publisher::{Batch, Event, Sample};

use crate::settings::Mode;

/// One encoded item: its seq and its `_id`.
pub(crate) struct Encoded {
    pub seq: u64,
    pub id: String,
}

pub(crate) fn sample_id(seq: u64) -> String {
    format!("m-{seq}")
}

pub(crate) fn event_id(seq: u64) -> String {
    format!("e-{seq}")
}

/// `(year, month, day)` of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY.MM.DD` (UTC) of a millisecond timestamp.
pub(crate) fn index_date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}.{m:02}.{d:02}")
}

/// RFC 3339 with milliseconds, UTC: `2023-11-14T22:13:20.000Z`.
pub(crate) fn rfc3339(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    let in_day = ms.rem_euclid(86_400_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

fn metrics_index(mode: &Mode, ms: i64) -> String {
    match mode {
        Mode::Indices { prefix } => format!("{prefix}-metrics-{}", index_date(ms)),
        Mode::DataStream { namespace } => format!("metrics-vigil-{namespace}"),
    }
}

fn events_index(mode: &Mode, ms: i64) -> String {
    match mode {
        Mode::Indices { prefix } => format!("{prefix}-events-{}", index_date(ms)),
        Mode::DataStream { namespace } => format!("logs-vigil-{namespace}"),
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn action(out: &mut Vec<u8>, index: &str, id: &str) {
    out.extend_from_slice(b"{\"create\":{\"_index\":");
    string(out, index);
    out.extend_from_slice(b",\"_id\":");
    string(out, id);
    out.extend_from_slice(b"}}\n");
}

/// Appends the two lines of one sample:
/// `{"@timestamp","name","type","value","labels","component","seq"}`.
pub(crate) fn sample(out: &mut Vec<u8>, mode: &Mode, s: &Sample<'_>) -> Encoded {
    let id = sample_id(s.seq());
    action(out, &metrics_index(mode, s.timestamp_ms()), &id);
    out.extend_from_slice(b"{\"@timestamp\":\"");
    out.extend_from_slice(rfc3339(s.timestamp_ms()).as_bytes());
    out.extend_from_slice(b"\",\"name\":");
    string(out, s.name());
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(s.kind().as_str().as_bytes());
    out.extend_from_slice(b"\",\"value\":");
    let v = s.value();
    if v.is_finite() {
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b",\"labels\":{");
    for (i, (k, val)) in s.labels().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, val);
    }
    out.extend_from_slice(b"},\"component\":");
    string(out, s.component());
    let _ = writeln!(out, ",\"seq\":{}}}", s.seq());
    Encoded { seq: s.seq(), id }
}

/// The first string among `keys` in the attributes.
fn pick<'a>(
    attributes: Option<&'a serde_json::Map<String, Value>>,
    keys: &[&str],
) -> Option<&'a str> {
    let a = attributes?;
    keys.iter().find_map(|k| a.get(*k).and_then(Value::as_str))
}

/// Appends the two lines of one event:
/// `{"@timestamp","type","id","session","workflow","task","backend","source","attributes","seq"}`;
/// `id`, `session`, `workflow`, `task` and `backend` come from the attributes
/// (`event_id`, `session_id`, `workflow_id`/`asyncflow.workflow_id`, `task_id`,
/// `backend`) and are `null` when absent. Attributes that are not a JSON
/// object are kept as `{"value": <text>}`.
pub(crate) fn event(out: &mut Vec<u8>, mode: &Mode, e: &Event) -> Encoded {
    let id = event_id(e.seq);
    action(out, &events_index(mode, e.timestamp), &id);
    let parsed: Option<Value> = serde_json::from_str(&e.attributes).ok();
    let object = parsed.as_ref().and_then(Value::as_object);
    let field = |keys: &[&str]| pick(object, keys).map(Value::from).unwrap_or(Value::Null);
    let attributes = match (&parsed, object) {
        (Some(v), Some(_)) => v.clone(),
        _ => serde_json::json!({ "value": e.attributes }),
    };
    let doc = serde_json::json!({
        "@timestamp": rfc3339(e.timestamp),
        "type": e.event_type,
        "id": field(&["event_id", "id"]),
        "session": field(&["session_id", "session"]),
        "workflow": field(&["workflow_id", "asyncflow.workflow_id", "workflow"]),
        "task": field(&["task_id", "task"]),
        "backend": field(&["backend"]),
        "source": e.source,
        "attributes": attributes,
        "seq": e.seq,
    });
    let _ = serde_json::to_writer(&mut *out, &doc);
    out.push(b'\n');
    Encoded { seq: e.seq, id }
}

/// Encodes the batch, in seq order, into requests of at most `max_bytes`
/// (an item larger than that alone goes in a request of its own). Returns
/// each request's body and its items.
pub(crate) fn encode(batch: &Batch, mode: &Mode, max_bytes: usize) -> Vec<(Vec<u8>, Vec<Encoded>)> {
    let mut chunks = Vec::new();
    let mut body = Vec::with_capacity(max_bytes.min(batch.len() * 256 + 64));
    let mut items = Vec::new();
    let mut samples = batch.samples().peekable();
    let mut events = batch.events().peekable();
    let mut scratch = Vec::with_capacity(512);
    loop {
        let next_sample = samples.peek().map(|s| s.seq());
        let next_event = events.peek().map(|e| e.seq);
        let item = match (next_sample, next_event) {
            (None, None) => break,
            (Some(s), Some(e)) if e < s => events.next().map(|e| event(&mut scratch, mode, e)),
            (Some(_), _) => samples.next().map(|s| sample(&mut scratch, mode, &s)),
            (None, Some(_)) => events.next().map(|e| event(&mut scratch, mode, e)),
        };
        let Some(item) = item else { break };
        if !body.is_empty() && body.len() + scratch.len() > max_bytes {
            chunks.push((std::mem::take(&mut body), std::mem::take(&mut items)));
        }
        body.extend_from_slice(&scratch);
        scratch.clear();
        items.push(item);
    }
    if !items.is_empty() {
        chunks.push((body, items));
    }
    chunks
}
