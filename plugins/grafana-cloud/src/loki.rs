//! Events → Loki push API (`POST /loki/api/v1/push`, JSON): one stream per
//! low-cardinality label set (`service`, `component`, `event_type`,
//! `backend`), entries in time order, each line the event as JSON.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use vigil_plugin::publisher::{Batch, Event};

/// A stream's labels, sorted by name.
pub(crate) type StreamLabels = Vec<(String, String)>;

/// One entry placed in its stream.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub stream: usize,
    pub seq: u64,
    pub ts_ms: i64,
    pub line: String,
}

/// The batch's events as streams and entries ordered by stream, time, seq.
pub(crate) struct Streams {
    pub labels: Vec<StreamLabels>,
    pub entries: Vec<Entry>,
}

fn attr<'a>(attributes: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| attributes.get(*k).and_then(Value::as_str))
        .filter(|v| !v.is_empty())
}

fn line(e: &Event, attributes: Value) -> String {
    json!({
        "seq": e.seq,
        "timestamp_ms": e.timestamp,
        "event_type": e.event_type,
        "source": e.source,
        "attributes": attributes,
    })
    .to_string()
}

pub(crate) fn group(batch: &Batch, service: &str) -> Streams {
    let mut by_labels: BTreeMap<StreamLabels, Vec<(i64, u64, String)>> = BTreeMap::new();
    for e in batch.events() {
        let attributes: Value = serde_json::from_str(&e.attributes)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({ "value": e.attributes }));
        let mut labels = vec![
            ("service".to_string(), service.to_string()),
            ("event_type".to_string(), e.event_type.clone()),
        ];
        if let Some(c) = attr(&attributes, &["component", "component_name"]) {
            labels.push(("component".into(), c.to_string()));
        }
        if let Some(b) = attr(&attributes, &["backend"]) {
            labels.push(("backend".into(), b.to_string()));
        }
        labels.sort();
        let text = line(e, attributes);
        by_labels
            .entry(labels)
            .or_default()
            .push((e.timestamp, e.seq, text));
    }
    let mut labels = Vec::with_capacity(by_labels.len());
    let mut entries = Vec::new();
    for (i, (l, mut items)) in by_labels.into_iter().enumerate() {
        items.sort_by_key(|(ts, seq, _)| (*ts, *seq));
        entries.extend(items.into_iter().map(|(ts_ms, seq, line)| Entry {
            stream: i,
            seq,
            ts_ms,
            line,
        }));
        labels.push(l);
    }
    Streams { labels, entries }
}

/// The push body of a run of entries.
pub(crate) fn push_body(labels: &[StreamLabels], entries: &[Entry]) -> Vec<u8> {
    let mut streams: Vec<Value> = Vec::new();
    let mut last = usize::MAX;
    for e in entries {
        if e.stream != last {
            let stream: serde_json::Map<String, Value> = labels[e.stream]
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                .collect();
            streams.push(json!({"stream": stream, "values": []}));
            last = e.stream;
        }
        if let Some(values) = streams
            .last_mut()
            .and_then(|s| s.get_mut("values"))
            .and_then(Value::as_array_mut)
        {
            let ns = i128::from(e.ts_ms) * 1_000_000;
            values.push(json!([ns.to_string(), e.line]));
        }
    }
    json!({ "streams": streams }).to_string().into_bytes()
}
