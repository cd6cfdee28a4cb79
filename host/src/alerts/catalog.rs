//! The series the alert evaluator can select, with the labels PromQL sees:
//! `__name__` as Vigil's own export names the sample (counters end in
//! `_total` unless `--counter-names reported`), `component`, and the
//! reported labels. Built from the latest-value index, refreshed
//! incrementally (labels are parsed once per series), and read into
//! [`promql::Data`] from the store's samples. Histograms and summaries are
//! not selectable yet (their stored samples are observations, not the
//! `_bucket`/`_sum`/`_count` series a scrape shows).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::promql::{self, Data, LabelMatcher, MatchOp, SeriesData};
use crate::metrics::index::{export_names, SeriesIndex};
use crate::metrics::model::MetricKind;
use crate::store::{SampleQuery, Store, StoreError};

/// Most samples one evaluation may read.
pub const MAX_SAMPLES: u32 = 5_000_000;

/// Every selectable series by id, and the ids of each `__name__`.
#[derive(Default)]
pub struct SeriesCatalog {
    by_id: HashMap<i64, Arc<promql::Labels>>,
    by_name: HashMap<String, Vec<i64>>,
}

impl SeriesCatalog {
    /// Brings the catalog up to date with `index`.
    pub fn refresh(&mut self, index: &SeriesIndex) {
        let mode = index.counter_names();
        let mut by_id = HashMap::with_capacity(self.by_id.len());
        let mut by_name: HashMap<String, Vec<i64>> = HashMap::new();
        index.for_each_series(|id, key, kind| {
            if !matches!(kind, MetricKind::Counter | MetricKind::Gauge) {
                return;
            }
            let labels = match self.by_id.get(&id) {
                Some(l) => l.clone(),
                None => {
                    let mut l: BTreeMap<String, String> =
                        serde_json::from_str(&key.labels).unwrap_or_default();
                    l.insert("component".into(), key.component.to_string());
                    l.insert(
                        "__name__".into(),
                        export_names(&key.name, kind, mode).sample,
                    );
                    Arc::new(l)
                }
            };
            by_name
                .entry(labels["__name__"].clone())
                .or_default()
                .push(id);
            by_id.insert(id, labels);
        });
        self.by_id = by_id;
        self.by_name = by_name;
    }

    /// The series every matcher matches, by id.
    pub fn select(&self, matchers: &[LabelMatcher]) -> Vec<(i64, Arc<promql::Labels>)> {
        let name = matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal);
        let matches = |labels: &promql::Labels| {
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).map(String::as_str)))
        };
        let mut out: Vec<(i64, Arc<promql::Labels>)> = match name {
            Some(n) => self
                .by_name
                .get(&n.value)
                .into_iter()
                .flatten()
                .filter_map(|id| self.by_id.get(id).map(|l| (*id, l.clone())))
                .filter(|(_, l)| matches(l))
                .collect(),
            None => self
                .by_id
                .iter()
                .filter(|(_, l)| matches(l))
                .map(|(id, l)| (*id, l.clone()))
                .collect(),
        };
        out.sort_by_key(|(id, _)| *id);
        out
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Reads what `query` needs to be evaluated at every instant in
/// `[from_ms, to_ms]`.
pub async fn fetch(
    store: &dyn Store,
    catalog: &SeriesCatalog,
    query: &promql::Query,
    from_ms: i64,
    to_ms: i64,
) -> Result<Data, FetchError> {
    let mut series = Vec::with_capacity(query.selectors().len());
    for sel in query.selectors() {
        let chosen = catalog.select(&sel.matchers);
        if chosen.is_empty() {
            series.push(Vec::new());
            continue;
        }
        let ids: Vec<i64> = chosen.iter().map(|(id, _)| *id).collect();
        let samples = store
            .query_samples(&SampleQuery {
                series_ids: Some(ids),
                // The window (t - offset - range, t - offset] for every t.
                start_ms: Some(from_ms - sel.offset_ms - sel.range_ms + 1),
                end_ms: Some(to_ms - sel.offset_ms + 1),
                after_seq: 0,
                limit: MAX_SAMPLES,
                newest_first: false,
            })
            .await?;
        if samples.len() >= MAX_SAMPLES as usize {
            return Err(FetchError::TooMany);
        }
        let mut per: HashMap<i64, Vec<(i64, i64, f64)>> = HashMap::new();
        for s in samples {
            per.entry(s.series_id)
                .or_default()
                .push((s.ts_ms, s.seq, s.value));
        }
        let mut out = Vec::with_capacity(chosen.len());
        for (id, labels) in chosen {
            let Some(mut rows) = per.remove(&id) else {
                continue;
            };
            // Time order; of two samples at one instant the later report wins.
            rows.sort_by_key(|(ts, seq, _)| (*ts, *seq));
            let mut samples: Vec<(i64, f64)> = Vec::with_capacity(rows.len());
            for (ts, _, v) in rows {
                match samples.last_mut() {
                    Some(last) if last.0 == ts => last.1 = v,
                    _ => samples.push((ts, v)),
                }
            }
            out.push(SeriesData { labels, samples });
        }
        series.push(out);
    }
    Ok(Data { series })
}

/// Why the data of an evaluation could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the expression reads more than {MAX_SAMPLES} samples; narrow its selectors or ranges"
    )]
    TooMany,
}
