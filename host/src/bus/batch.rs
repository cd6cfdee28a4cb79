//! Builds the columnar `batch` a publisher receives from stored samples:
//! strings interned once into one blob, everything else in numeric lists.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::events::StoredEvent;
use crate::metrics::model::MetricKind;
use crate::plugins::bindings::types::{Batch, Event, SampleColumns};
use crate::store::LogSample;

struct Interner {
    blob: String,
    offsets: Vec<u32>,
    ids: FxHashMap<String, u32>,
}

impl Interner {
    fn new() -> Self {
        Interner {
            blob: String::new(),
            offsets: vec![0],
            ids: FxHashMap::default(),
        }
    }

    fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = (self.offsets.len() - 1) as u32;
        self.blob.push_str(s);
        self.offsets.push(self.blob.len() as u32);
        self.ids.insert(s.to_string(), id);
        id
    }
}

fn kind_code(kind: MetricKind) -> u8 {
    match kind {
        MetricKind::Counter => 0,
        MetricKind::Gauge => 1,
        MetricKind::Histogram => 2,
        MetricKind::Summary => 3,
    }
}

/// Turns stored samples into a publisher batch.
pub fn build_batch(samples: &[LogSample]) -> Batch {
    build_log_batch(samples, &[])
}

/// An event as a publisher receives it: base fields and attributes in one
/// JSON object, `source` the most specific of task, workflow and session.
pub fn wit_event(e: &StoredEvent) -> Event {
    Event {
        seq: e.seq as u64,
        timestamp: e.event_time_ms(),
        event_type: e.event_type.clone(),
        source: e.source().to_string(),
        attributes: e.strict_body().into_owned(),
    }
}

/// Turns stored samples and events into a publisher batch.
pub fn build_log_batch(samples: &[LogSample], events: &[StoredEvent]) -> Batch {
    let n = samples.len();
    let mut strings = Interner::new();
    let mut columns = SampleColumns {
        strings: String::new(),
        string_offsets: Vec::new(),
        seqs: Vec::with_capacity(n),
        components: Vec::with_capacity(n),
        names: Vec::with_capacity(n),
        kinds: Vec::with_capacity(n),
        values: Vec::with_capacity(n),
        timestamps: Vec::with_capacity(n),
        label_starts: Vec::with_capacity(n + 1),
        label_ids: Vec::new(),
    };
    // Samples of one series share their label JSON: parse it once.
    let mut parsed: FxHashMap<&str, Vec<(u32, u32)>> = FxHashMap::default();
    columns.label_starts.push(0);
    for s in samples {
        columns.seqs.push(s.seq as u64);
        columns.components.push(strings.id(&s.component));
        columns.names.push(strings.id(&s.metric_name));
        columns.kinds.push(kind_code(s.kind));
        columns.values.push(s.value);
        columns.timestamps.push(s.ts_ms);
        let pairs = parsed.entry(s.labels.as_str()).or_insert_with(|| {
            let labels: BTreeMap<String, String> =
                serde_json::from_str(&s.labels).unwrap_or_default();
            labels
                .iter()
                .map(|(k, v)| (strings.id(k), strings.id(v)))
                .collect()
        });
        for (k, v) in pairs.iter() {
            columns.label_ids.push(*k);
            columns.label_ids.push(*v);
        }
        columns
            .label_starts
            .push((columns.label_ids.len() / 2) as u32);
    }
    columns.strings = strings.blob;
    columns.string_offsets = strings.offsets;
    Batch {
        samples: columns,
        events: events.iter().map(wit_event).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: i64, name: &str, labels: &str) -> LogSample {
        LogSample {
            seq,
            series_id: 1,
            ts_ms: seq * 10,
            value: seq as f64,
            component: "w1".into(),
            metric_name: name.into(),
            kind: MetricKind::Gauge,
            labels: labels.into(),
        }
    }

    fn text(b: &SampleColumns, id: u32) -> &str {
        let (a, z) = (
            b.string_offsets[id as usize],
            b.string_offsets[id as usize + 1],
        );
        &b.strings[a as usize..z as usize]
    }

    #[test]
    fn strings_are_interned_and_labels_indexed_per_sample() {
        let batch = build_batch(&[
            sample(1, "cpu", r#"{"host":"a"}"#),
            sample(2, "cpu", r#"{"host":"b","zone":"x"}"#),
            sample(3, "mem", "{}"),
        ]);
        let c = &batch.samples;
        assert_eq!(c.seqs, vec![1, 2, 3]);
        assert_eq!(c.names[0], c.names[1]);
        assert_eq!(text(c, c.names[2]), "mem");
        assert_eq!(c.label_starts, vec![0, 1, 3, 3]);
        let second: Vec<(&str, &str)> = (1..3)
            .map(|k| (text(c, c.label_ids[2 * k]), text(c, c.label_ids[2 * k + 1])))
            .collect();
        assert_eq!(second, vec![("host", "b"), ("zone", "x")]);
        // "w1", "cpu", "host", "a", "b", "zone", "x", "mem": each once.
        assert_eq!(c.string_offsets.len(), 9);
    }

    #[test]
    fn events_carry_the_event_as_sent_as_strict_json() {
        let event = StoredEvent {
            seq: 7,
            event_id: "e-1".into(),
            event_type: "TaskCompleted".into(),
            event_ts: 1_700_000_000.5,
            session_id: Some("s1".into()),
            workflow_id: None,
            task_id: Some("task.0001".into()),
            backend: None,
            execution_id: None,
            source_id: None,
            project_module: None,
            body: r#"{"event_id":"e-1","event_type":"TaskCompleted","event_time":1700000000.5,"session_id":"s1","task_id":"task.0001","duration_seconds":1.5,"loss":NaN}"#.into(),
            received_ms: 0,
        };
        let batch = build_log_batch(&[sample(6, "cpu", "{}")], &[event]);
        assert_eq!(batch.samples.seqs, vec![6]);
        let e = &batch.events[0];
        assert_eq!((e.seq, e.timestamp), (7, 1_700_000_000_500));
        assert_eq!(e.source, "task.0001");
        let attrs: serde_json::Value = serde_json::from_str(&e.attributes).unwrap();
        assert_eq!(
            attrs,
            serde_json::json!({"event_id":"e-1","event_type":"TaskCompleted","event_time":1700000000.5,"session_id":"s1","task_id":"task.0001","duration_seconds":1.5,"loss":"NaN"}),
            "the event as sent, as strict JSON"
        );
    }
}
