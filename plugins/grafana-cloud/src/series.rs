//! Samples → remote-write series, named as Vigil's own export names them.

use std::collections::BTreeMap;

use vigil_plugin::publisher::{Batch, MetricKind};

use crate::proto::Series;

/// How counters are named, as the host's `--counter-names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CounterNames {
    /// `_total` appended when the reported name lacks it (the default).
    Total,
    /// As reported.
    Reported,
}

/// The exported sample name of a counter or gauge.
pub(crate) fn sample_name(name: &str, kind: MetricKind, mode: CounterNames) -> String {
    match (kind, mode) {
        (MetricKind::Counter, CounterNames::Total)
            if !name.ends_with("_total") || name == "_total" =>
        {
            format!("{name}_total")
        }
        _ => name.to_string(),
    }
}

/// A series' labels, sorted by name.
pub(crate) type LabelSet = Vec<(String, String)>;

/// One sample placed in its series, in the order requests carry them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Unit {
    pub series: usize,
    pub seq: u64,
    pub ts: i64,
    pub value: f64,
}

/// The batch's samples as series (labels sorted) and units ordered by
/// series, then time, then seq; plus the samples this plugin cannot send
/// (`(seq, reason)`).
pub(crate) struct Grouped {
    pub labels: Vec<LabelSet>,
    pub units: Vec<Unit>,
    pub unsupported: Vec<(u64, String)>,
}

pub(crate) fn group(batch: &Batch, mode: CounterNames) -> Grouped {
    let mut by_labels: BTreeMap<LabelSet, Vec<(i64, u64, f64)>> = BTreeMap::new();
    let mut unsupported = Vec::new();
    for s in batch.samples() {
        if matches!(s.kind(), MetricKind::Histogram | MetricKind::Summary) {
            unsupported.push((
                s.seq(),
                format!(
                    "{} observations are not sent as such by remote-write: set `[delivery] derived_series = true` in the plugin's manifest to send the `_bucket`/`_sum`/`_count` (or quantile) series Vigil's export shows",
                    s.kind().as_str()
                ),
            ));
            continue;
        }
        let mut labels: LabelSet = Vec::with_capacity(s.labels().len() + 2);
        labels.push(("__name__".into(), sample_name(s.name(), s.kind(), mode)));
        labels.push(("component".into(), s.component().to_string()));
        for (k, v) in s.labels() {
            if v.is_empty() {
                continue;
            }
            let k = if k == "component" {
                "exported_component"
            } else {
                k
            };
            labels.push((k.to_string(), v.to_string()));
        }
        labels.sort();
        labels.dedup_by(|a, b| a.0 == b.0);
        by_labels
            .entry(labels)
            .or_default()
            .push((s.timestamp_ms(), s.seq(), s.value()));
    }
    let mut labels = Vec::with_capacity(by_labels.len());
    let mut units = Vec::new();
    for (i, (l, mut samples)) in by_labels.into_iter().enumerate() {
        samples.sort_by_key(|(ts, seq, _)| (*ts, *seq));
        units.extend(samples.into_iter().map(|(ts, seq, value)| Unit {
            series: i,
            seq,
            ts,
            value,
        }));
        labels.push(l);
    }
    Grouped {
        labels,
        units,
        unsupported,
    }
}

/// The series of a run of units (consecutive units of one series merge).
pub(crate) fn series_of(labels: &[LabelSet], units: &[Unit]) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let mut last = usize::MAX;
    for u in units {
        if u.series != last {
            out.push(Series {
                labels: labels[u.series].clone(),
                samples: Vec::new(),
            });
            last = u.series;
        }
        if let Some(s) = out.last_mut() {
            s.samples.push((u.ts, u.value));
        }
    }
    out
}
