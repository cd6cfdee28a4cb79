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
use crate::metrics::recent::{Held, RecentSamples};
use crate::store::{SampleQuery, Store, StoreError};

/// An evaluation at most this far in the past counts as live (see `fetch`).
const LIVE_MS: i64 = 60_000;
/// Most samples one evaluation may read.
pub const MAX_SAMPLES: u32 = 5_000_000;

/// Every selectable series by id, and the ids of each label pair.
#[derive(Default)]
pub struct SeriesCatalog {
    by_id: HashMap<i64, Arc<promql::Labels>>,
    /// Ids (ascending) of every `name="value"` pair, `__name__` included.
    postings: HashMap<(String, String), Vec<i64>>,
    /// The index's membership this catalog was built from.
    membership: Option<u64>,
}

impl SeriesCatalog {
    /// Brings the catalog up to date with `index` (nothing to do while no
    /// series entered or left it).
    pub fn refresh(&mut self, index: &SeriesIndex) {
        let membership = index.membership();
        if self.membership == Some(membership) {
            return;
        }
        let mode = index.counter_names();
        let mut by_id = HashMap::with_capacity(self.by_id.len());
        let mut postings: HashMap<(String, String), Vec<i64>> =
            HashMap::with_capacity(self.postings.len());
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
            for (k, v) in labels.iter() {
                postings.entry((k.clone(), v.clone())).or_default().push(id);
            }
            by_id.insert(id, labels);
        });
        for ids in postings.values_mut() {
            ids.sort_unstable();
        }
        self.by_id = by_id;
        self.postings = postings;
        self.membership = Some(membership);
    }

    /// The series every matcher matches, by id (ascending).
    pub fn select(&self, matchers: &[LabelMatcher]) -> Vec<(i64, Arc<promql::Labels>)> {
        let matches = |labels: &promql::Labels| {
            matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).map(String::as_str)))
        };
        // The shortest list of an equality matcher with a non-empty value
        // (`x=""` also matches series without `x`, so it narrows nothing).
        let narrowest = matchers
            .iter()
            .filter(|m| m.op == MatchOp::Equal && !m.value.is_empty())
            .map(|m| {
                self.postings
                    .get(&(m.name.clone(), m.value.clone()))
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|ids| ids.len());
        match narrowest {
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.by_id.get(id).map(|l| (*id, l.clone())))
                .filter(|(_, l)| matches(l))
                .collect(),
            None => {
                let mut out: Vec<(i64, Arc<promql::Labels>)> = self
                    .by_id
                    .iter()
                    .filter(|(_, l)| matches(l))
                    .map(|(id, l)| (*id, l.clone()))
                    .collect();
                out.sort_by_key(|(id, _)| *id);
                out
            }
        }
    }

    /// Whether no series entered or left `index` since the last refresh.
    pub fn is_current(&self, index: &SeriesIndex) -> bool {
        self.membership == Some(index.membership())
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Reads what `query` needs to be evaluated at every instant in
/// `[from_ms, to_ms]`: from the samples `recent` holds where it holds them
/// (a live evaluation passes the index's; a preview, reading far back,
/// passes `None`), otherwise from the store.
pub async fn fetch(
    store: &dyn Store,
    catalog: &SeriesCatalog,
    recent: Option<&RecentSamples>,
    query: &promql::Query,
    from_ms: i64,
    to_ms: i64,
) -> Result<Data, FetchError> {
    let now = chrono::Utc::now().timestamp_millis();
    let mut series = Vec::with_capacity(query.selectors().len());
    for sel in query.selectors() {
        let chosen = catalog.select(&sel.matchers);
        if chosen.is_empty() {
            series.push(Vec::new());
            continue;
        }
        // The window (t - offset - range, t - offset] for every t.
        let start = from_ms - sel.offset_ms - sel.range_ms + 1;
        let end = to_ms - sel.offset_ms + 1;
        let ids: Vec<i64> = chosen.iter().map(|(id, _)| *id).collect();
        let mut per: HashMap<i64, Vec<Held>> = HashMap::with_capacity(ids.len());
        let mut missing = ids;
        // Only evaluations near the present read (and so hold) recent samples.
        let live = to_ms >= now - LIVE_MS;
        if let Some(recent) = recent.filter(|r| r.enabled() && live) {
            let (found, rest) = recent.read(&missing, start, end, now);
            per.extend(found);
            missing = rest;
            if recent.watch(&missing, start, now) {
                // Everything from the window's start on: the held series
                // stays complete up to the commits appended from now on.
                let mut stored = read_samples(store, &missing, start, None).await?;
                for id in &missing {
                    let rows = stored.remove(id).unwrap_or_default();
                    recent.fill(*id, &rows);
                    let inside: Vec<Held> = rows.into_iter().filter(|h| h.0 < end).collect();
                    if !inside.is_empty() {
                        per.insert(*id, inside);
                    }
                }
                missing.clear();
            }
        }
        if !missing.is_empty() {
            per.extend(read_samples(store, &missing, start, Some(end)).await?);
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

/// Fills `recent` with every series `queries` read at `now_ms` that it does
/// not hold yet, with one store read for all (SQLite has no index by series
/// and time, so a read per rule would scan the window once per rule).
pub async fn prefill(
    store: &dyn Store,
    catalog: &SeriesCatalog,
    recent: &RecentSamples,
    queries: &[Arc<promql::Query>],
    now_ms: i64,
) -> Result<usize, FetchError> {
    if !recent.enabled() {
        return Ok(0);
    }
    let mut wanted: Vec<i64> = Vec::new();
    let mut from = i64::MAX;
    for q in queries {
        for sel in q.selectors() {
            let start = now_ms - sel.offset_ms - sel.range_ms + 1;
            let ids: Vec<i64> = catalog
                .select(&sel.matchers)
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            let unheld = recent.unheld(&ids, start);
            if !unheld.is_empty() {
                from = from.min(start);
                wanted.extend(unheld);
            }
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    if !recent.watch(&wanted, from, now_ms) {
        return Ok(0);
    }
    let mut stored = read_samples(store, &wanted, from, None).await?;
    for id in &wanted {
        recent.fill(*id, &stored.remove(id).unwrap_or_default());
    }
    Ok(wanted.len())
}

/// The stored samples of `ids` with timestamps in `[start, end)`, by series.
async fn read_samples(
    store: &dyn Store,
    ids: &[i64],
    start: i64,
    end: Option<i64>,
) -> Result<HashMap<i64, Vec<Held>>, FetchError> {
    let samples = store
        .query_samples(&SampleQuery {
            series_ids: Some(ids.to_vec()),
            start_ms: Some(start),
            end_ms: end,
            after_seq: 0,
            limit: MAX_SAMPLES,
            newest_first: false,
        })
        .await?;
    if samples.len() >= MAX_SAMPLES as usize {
        return Err(FetchError::TooMany);
    }
    let mut per: HashMap<i64, Vec<Held>> = HashMap::new();
    for s in samples {
        per.entry(s.series_id)
            .or_default()
            .push((s.ts_ms, s.seq, s.value));
    }
    Ok(per)
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
