//! Derived histogram and summary series for publishers that ask for them
//! (`[delivery] derived_series = true` in the manifest).
//!
//! A histogram or summary sample in the log is one observation; what Vigil's
//! `/metrics` shows for its series is the aggregate (`_bucket{le}`, `_sum`,
//! `_count`, quantiles). A publisher that writes to a Prometheus-style store
//! needs the aggregate, computed by the same code, so that
//! `histogram_quantile` over what it wrote agrees with a scrape. This module
//! keeps, per delivery loop, each such series' aggregate as of the
//! publisher's cursor and turns a batch's observations into the samples of
//! the derived series, each carrying its observation's seq (so rejections and
//! dead letters still name log items).
//!
//! The aggregate as of the cursor is rebuilt from the store the first time a
//! series shows up: its checkpoint minus the observations after the cursor,
//! read from one snapshot (a commit writes both together); for summaries the
//! quantile window from the observations up to the cursor.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::metrics::aggregate::{Aggregate, SUMMARY_WINDOW_MS};
use crate::metrics::index::write_value;
use crate::metrics::model::MetricKind;
use crate::store::{AggregateAt, LogSample, Store, StoreError};

/// Per-series aggregates as of a publisher's cursor.
#[derive(Default)]
pub struct DerivedSeries {
    at_cursor: FxHashMap<i64, Aggregate>,
    /// Series without a readable checkpoint: their observations go to the
    /// publisher unchanged.
    unknown: FxHashSet<i64>,
}

/// A batch's samples with observations replaced by derived series, and the
/// aggregates after it (kept once the batch is delivered).
pub struct Derived {
    pub samples: Vec<LogSample>,
    after: Vec<(i64, Aggregate)>,
}

fn is_observation(s: &LogSample) -> bool {
    matches!(s.kind, MetricKind::Histogram | MetricKind::Summary)
}

/// The checkpoint of `at` taken back to before its `after` observations.
fn rebuild(at: AggregateAt) -> Option<Aggregate> {
    let mut agg: Aggregate = serde_json::from_str(at.state.as_deref()?).ok()?;
    match &mut agg {
        Aggregate::Histogram(h) => at.after.iter().for_each(|s| h.unobserve(s.value)),
        Aggregate::Summary(s) => {
            at.after.iter().for_each(|o| s.unobserve(o.value));
            s.window.clear();
            for o in &at.window {
                s.push_window(o.ts_ms, o.value);
            }
        }
    }
    Some(agg)
}

/// `labels` (a canonical JSON object) with `name` set to `value`, as
/// canonical JSON again.
fn with_label(labels: &BTreeMap<String, String>, name: &str, value: f64) -> String {
    let mut labels = labels.clone();
    let mut text = String::new();
    write_value(&mut text, value);
    labels.insert(name.to_string(), text);
    serde_json::to_string(&labels).unwrap_or_else(|_| "{}".into())
}

impl DerivedSeries {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the aggregates as of `cursor` of the histogram and summary
    /// series in `samples` this loop does not know yet.
    pub async fn load(
        &mut self,
        store: &dyn Store,
        samples: &[LogSample],
        cursor: i64,
    ) -> Result<(), StoreError> {
        let mut missing: Vec<i64> = samples
            .iter()
            .filter(|s| is_observation(s))
            .map(|s| s.series_id)
            .filter(|id| !self.at_cursor.contains_key(id) && !self.unknown.contains(id))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_unstable();
        missing.dedup();
        let window_from = samples
            .iter()
            .filter(|s| s.kind == MetricKind::Summary)
            .map(|s| s.ts_ms)
            .min()
            .unwrap_or(i64::MAX)
            .saturating_sub(SUMMARY_WINDOW_MS);
        let found = store.aggregates_at(&missing, cursor, window_from).await?;
        for at in found {
            let id = at.series_id;
            match rebuild(at) {
                Some(agg) => {
                    self.at_cursor.insert(id, agg);
                }
                None => {
                    tracing::warn!(
                        series = id,
                        "no readable aggregate checkpoint; its observations are published as observations"
                    );
                    self.unknown.insert(id);
                }
            }
        }
        for id in missing {
            if !self.at_cursor.contains_key(&id) {
                self.unknown.insert(id);
            }
        }
        Ok(())
    }

    /// The derived samples of a batch (call [`DerivedSeries::load`] first).
    /// Several observations of one series at one timestamp give one set of
    /// derived samples, after the last of them (a store keeps one value per
    /// series and timestamp; the earlier ones are included in it).
    pub fn derive(&self, samples: &[LogSample]) -> Derived {
        // For each sample, whether a later observation of its series in this
        // batch has the same timestamp.
        let mut superseded = vec![false; samples.len()];
        let mut next_ts: FxHashMap<i64, i64> = FxHashMap::default();
        for (i, s) in samples.iter().enumerate().rev() {
            if is_observation(s) {
                superseded[i] = next_ts.insert(s.series_id, s.ts_ms) == Some(s.ts_ms);
            }
        }
        let mut work: FxHashMap<i64, Aggregate> = FxHashMap::default();
        let mut labels: FxHashMap<i64, BTreeMap<String, String>> = FxHashMap::default();
        let mut out = Vec::with_capacity(samples.len());
        for (i, s) in samples.iter().enumerate() {
            let Some(start) = is_observation(s)
                .then(|| self.at_cursor.get(&s.series_id))
                .flatten()
            else {
                out.push(s.clone());
                continue;
            };
            let agg = work.entry(s.series_id).or_insert_with(|| start.clone());
            match agg {
                Aggregate::Histogram(h) => h.observe(s.value),
                Aggregate::Summary(q) => q.observe(s.ts_ms, s.value),
            }
            if superseded[i] {
                continue;
            }
            let base = labels
                .entry(s.series_id)
                .or_insert_with(|| serde_json::from_str(&s.labels).unwrap_or_default());
            let derived = |suffix: &str, labels: String, value: f64| LogSample {
                seq: s.seq,
                series_id: s.series_id,
                ts_ms: s.ts_ms,
                value,
                component: s.component.clone(),
                metric_name: format!("{}{suffix}", s.metric_name),
                kind: MetricKind::Gauge,
                labels,
            };
            let (sum, count) = match agg {
                Aggregate::Histogram(h) => {
                    for (bound, n) in h.cumulative() {
                        out.push(derived("_bucket", with_label(base, "le", bound), n as f64));
                    }
                    (h.sum, h.count)
                }
                Aggregate::Summary(q) => {
                    for (quantile, v) in q.quantile_values(s.ts_ms) {
                        out.push(derived("", with_label(base, "quantile", quantile), v));
                    }
                    (q.sum, q.count)
                }
            };
            out.push(derived("_sum", s.labels.clone(), sum));
            out.push(derived("_count", s.labels.clone(), count as f64));
        }
        Derived {
            samples: out,
            after: work.into_iter().collect(),
        }
    }

    /// The batch `derived` came from was delivered: its aggregates are now
    /// those as of the cursor.
    pub fn advance(&mut self, derived: Derived) {
        self.at_cursor.extend(derived.after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::aggregate::{HistogramState, SummaryState};
    use crate::store::StoredSample;

    fn obs(seq: i64, series_id: i64, kind: MetricKind, ts_ms: i64, value: f64) -> LogSample {
        LogSample {
            seq,
            series_id,
            ts_ms,
            value,
            component: "w1".into(),
            metric_name: "lat".into(),
            kind,
            labels: r#"{"path":"/a"}"#.into(),
        }
    }

    fn with(agg: Aggregate, id: i64) -> DerivedSeries {
        let mut d = DerivedSeries::new();
        d.at_cursor.insert(id, agg);
        d
    }

    fn rows(d: &Derived) -> Vec<(i64, String, String, f64)> {
        d.samples
            .iter()
            .map(|s| (s.seq, s.metric_name.clone(), s.labels.clone(), s.value))
            .collect()
    }

    #[test]
    fn a_histogram_observation_becomes_the_exported_series_with_its_seq() {
        let d = with(Aggregate::Histogram(HistogramState::new(vec![0.5, 1.0])), 7);
        let gauge = LogSample {
            kind: MetricKind::Gauge,
            metric_name: "depth".into(),
            ..obs(3, 8, MetricKind::Gauge, 1_000, 4.0)
        };
        let out = d.derive(&[obs(2, 7, MetricKind::Histogram, 1_000, 0.7), gauge]);
        let lbl = |le: &str| format!(r#"{{"le":"{le}","path":"/a"}}"#);
        assert_eq!(
            rows(&out),
            vec![
                (2, "lat_bucket".into(), lbl("0.5"), 0.0),
                (2, "lat_bucket".into(), lbl("1"), 1.0),
                (2, "lat_bucket".into(), lbl("+Inf"), 1.0),
                (2, "lat_sum".into(), r#"{"path":"/a"}"#.into(), 0.7),
                (2, "lat_count".into(), r#"{"path":"/a"}"#.into(), 1.0),
                (3, "depth".into(), r#"{"path":"/a"}"#.into(), 4.0),
            ]
        );
        assert!(out.samples[..5].iter().all(|s| s.kind == MetricKind::Gauge));
    }

    #[test]
    fn state_carries_over_only_once_a_batch_is_delivered() {
        let mut d = with(Aggregate::Histogram(HistogramState::new(vec![1.0])), 7);
        let batch = [obs(1, 7, MetricKind::Histogram, 1_000, 0.5)];
        let first = d.derive(&batch);
        // A retry of the same batch derives the same values again.
        let again = d.derive(&batch);
        assert_eq!(rows(&first), rows(&again));
        d.advance(first);
        let next = d.derive(&[obs(2, 7, MetricKind::Histogram, 2_000, 3.0)]);
        let count = next.samples.iter().find(|s| s.metric_name == "lat_count");
        assert_eq!(count.map(|s| s.value), Some(2.0));
    }

    #[test]
    fn observations_at_one_timestamp_give_one_set_after_the_last() {
        let d = with(Aggregate::Summary(SummaryState::new(vec![0.5])), 7);
        let out = d.derive(&[
            obs(1, 7, MetricKind::Summary, 1_000, 1.0),
            obs(2, 7, MetricKind::Summary, 1_000, 3.0),
            obs(3, 7, MetricKind::Summary, 1_000, 2.0),
            obs(4, 7, MetricKind::Summary, 2_000, 5.0),
        ]);
        let got = rows(&out);
        assert_eq!(got.len(), 6, "{got:?}");
        assert!(got[..3].iter().all(|r| r.0 == 3), "{got:?}");
        assert_eq!(got[0].1, "lat");
        assert_eq!(got[0].2, r#"{"path":"/a","quantile":"0.5"}"#);
        assert_eq!(got[0].3, 2.0);
        assert_eq!((got[1].3, got[2].3), (6.0, 3.0), "sum and count");
        assert_eq!((got[4].3, got[5].3), (11.0, 4.0));
    }

    #[test]
    fn unknown_series_pass_through_unchanged() {
        let d = DerivedSeries::new();
        let out = d.derive(&[obs(1, 9, MetricKind::Histogram, 1_000, 0.5)]);
        assert_eq!(out.samples.len(), 1);
        assert_eq!(out.samples[0].kind, MetricKind::Histogram);
    }

    #[test]
    fn a_checkpoint_is_taken_back_to_the_cursor() {
        let mut h = HistogramState::new(vec![1.0]);
        for v in [0.5, 2.0, 0.25] {
            h.observe(v);
        }
        let sample = |seq, value| StoredSample {
            seq,
            series_id: 7,
            ts_ms: 0,
            value,
        };
        let at = AggregateAt {
            series_id: 7,
            state: Some(serde_json::to_string(&Aggregate::Histogram(h)).unwrap()),
            after: vec![sample(5, 2.0), sample(6, 0.25)],
            window: Vec::new(),
        };
        let Some(Aggregate::Histogram(h)) = rebuild(at) else {
            panic!("a histogram")
        };
        assert_eq!((h.counts.clone(), h.count, h.sum), (vec![1, 0], 1, 0.5));
        let unreadable = AggregateAt {
            series_id: 7,
            state: Some("{".into()),
            ..AggregateAt::default()
        };
        assert!(rebuild(unreadable).is_none());
    }
}
