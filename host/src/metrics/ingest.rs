//! The ingest writer: one task that turns validated reports into group commits.
//! Concurrent requests queue here; the writer plans series ids and aggregates
//! against the latest-value index, commits one transaction for the whole group,
//! then updates the index and answers each request. A request's `200` is sent
//! only after its commit. Also rebuilds the index from the store at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::aggregate::{
    Aggregate, HistogramState, SummaryState, DEFAULT_BUCKETS, DEFAULT_QUANTILES, SUMMARY_WINDOW_MS,
};
use super::index::{SeriesIndex, SeriesKey, SeriesUpdate, SeriesValue};
use super::model::{ItemError, MetricKind, PreparedReport};
use crate::store::{
    ComponentTouch, NewSeries, SampleRow, SeriesRef, Store, StoreError, WriteBatch,
};
use crate::telemetry::SelfMetrics;

/// Most samples folded into one group commit.
const MAX_GROUP_SAMPLES: usize = 50_000;

/// Why a report was not committed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("report conflicts with stored series")]
    Conflict(Vec<ItemError>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

struct WriteJob {
    report: PreparedReport,
    done: oneshot::Sender<Result<usize, IngestError>>,
}

/// Handle used by request handlers to submit reports.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<WriteJob>,
}

impl IngestHandle {
    /// Submits a report and waits until it is committed (or refused).
    pub async fn submit(&self, report: PreparedReport) -> Result<usize, IngestError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(WriteJob { report, done })
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        wait.await.map_err(|_| IngestError::ShuttingDown)?
    }
}

/// Starts the writer task; it ends when every handle is dropped and the queue is drained.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    index: Arc<SeriesIndex>,
    metrics: Arc<SelfMetrics>,
) -> (IngestHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<WriteJob>(256);
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut samples = first.report.metrics.len();
            let mut jobs = vec![first];
            while samples < MAX_GROUP_SAMPLES {
                match rx.try_recv() {
                    Ok(job) => {
                        samples += job.report.metrics.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            commit_group(store.as_ref(), &index, &metrics, jobs).await;
        }
        tracing::debug!("ingest writer drained and stopped");
    });
    (IngestHandle { tx }, task)
}

/// Per-series plan of one group.
struct Touched {
    series: SeriesRef,
    key: SeriesKey,
    kind: MetricKind,
    labels: BTreeMap<String, String>,
    help: String,
    unit: String,
    value: SeriesValue,
}

async fn commit_group(
    store: &dyn Store,
    index: &SeriesIndex,
    metrics: &SelfMetrics,
    jobs: Vec<WriteJob>,
) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut batch = WriteBatch::default();
    let mut touched: Vec<Touched> = Vec::new();
    let mut accepted: Vec<(oneshot::Sender<Result<usize, IngestError>>, usize)> = Vec::new();

    index.with_view(|view| {
        let mut planned: HashMap<SeriesKey, usize> = HashMap::new();
        let mut group_kinds: HashMap<String, MetricKind> = HashMap::new();
        let mut components: HashMap<String, String> = HashMap::new();
        for job in jobs {
            let report = &job.report;
            let component: Arc<str> = Arc::from(report.component_name.as_str());
            // Check the whole report first: a conflict refuses it without side effects.
            let keys: Vec<SeriesKey> = report
                .metrics
                .iter()
                .map(|m| SeriesKey {
                    component: component.clone(),
                    name: Arc::from(m.name.as_str()),
                    labels: serde_json::to_string(&m.labels).unwrap_or_default(),
                })
                .collect();
            let mut conflicts = Vec::new();
            let mut kinds_here: HashMap<&str, MetricKind> = HashMap::new();
            let mut bounds_here: HashMap<&SeriesKey, Vec<f64>> = HashMap::new();
            for (i, (m, key)) in report.metrics.iter().zip(&keys).enumerate() {
                let known = view
                    .kind_of(&m.name)
                    .or_else(|| group_kinds.get(&m.name).copied())
                    .or_else(|| kinds_here.get(m.name.as_str()).copied());
                match known {
                    Some(kind) if kind != m.kind => conflicts.push(ItemError {
                        index: Some(i),
                        field: "metric_type".into(),
                        reason: format!(
                            "metric `{}` is already a {}, not a {}",
                            m.name,
                            kind.as_str(),
                            m.kind.as_str()
                        ),
                    }),
                    _ => {
                        kinds_here.insert(&m.name, m.kind);
                    }
                }
                let Some(given) = &m.bounds else { continue };
                let existing = match planned.get(key) {
                    Some(&slot) => aggregate_bounds(&touched[slot].value),
                    None => view
                        .id_of(key)
                        .and_then(|id| view.aggregate(&m.name, id))
                        .map(|a| match a {
                            Aggregate::Histogram(h) => h.bounds,
                            Aggregate::Summary(s) => s.quantiles,
                        }),
                }
                .or_else(|| bounds_here.get(key).cloned());
                match existing {
                    Some(existing) if existing != *given => conflicts.push(ItemError {
                        index: Some(i),
                        field: if m.kind == MetricKind::Histogram {
                            "labels.le".into()
                        } else {
                            "labels.quantile".into()
                        },
                        reason: "differs from the bounds this series was created with".into(),
                    }),
                    _ => {
                        bounds_here.insert(key, given.clone());
                    }
                }
            }
            if !conflicts.is_empty() {
                let _ = job.done.send(Err(IngestError::Conflict(conflicts)));
                continue;
            }
            for (name, kind) in kinds_here {
                group_kinds.insert(name.to_string(), kind);
            }
            for (m, key) in report.metrics.iter().zip(keys) {
                let slot = match planned.get(&key) {
                    Some(&slot) => slot,
                    None => {
                        let (series, seed) = match view.id_of(&key) {
                            Some(id) => (SeriesRef::Known(id), view.aggregate(&m.name, id)),
                            None => {
                                batch.new_series.push(NewSeries {
                                    component: report.component_name.clone(),
                                    metric_name: m.name.clone(),
                                    kind: m.kind,
                                    labels: key.labels.clone(),
                                    help: m.help.clone(),
                                    unit: m.unit.clone(),
                                });
                                (SeriesRef::New(batch.new_series.len() - 1), None)
                            }
                        };
                        let value = match m.kind {
                            MetricKind::Counter | MetricKind::Gauge => SeriesValue::Scalar(m.value),
                            MetricKind::Histogram => {
                                SeriesValue::Aggregate(seed.unwrap_or_else(|| {
                                    Aggregate::Histogram(HistogramState::new(
                                        m.bounds
                                            .clone()
                                            .unwrap_or_else(|| DEFAULT_BUCKETS.to_vec()),
                                    ))
                                }))
                            }
                            MetricKind::Summary => {
                                SeriesValue::Aggregate(seed.unwrap_or_else(|| {
                                    Aggregate::Summary(SummaryState::new(
                                        m.bounds
                                            .clone()
                                            .unwrap_or_else(|| DEFAULT_QUANTILES.to_vec()),
                                    ))
                                }))
                            }
                        };
                        touched.push(Touched {
                            series,
                            key: key.clone(),
                            kind: m.kind,
                            labels: m.labels.clone(),
                            help: m.help.clone(),
                            unit: m.unit.clone(),
                            value,
                        });
                        planned.insert(key, touched.len() - 1);
                        touched.len() - 1
                    }
                };
                let t = &mut touched[slot];
                if !m.help.is_empty() {
                    t.help.clone_from(&m.help);
                }
                match &mut t.value {
                    SeriesValue::Scalar(v) => *v = m.value,
                    SeriesValue::Aggregate(Aggregate::Histogram(h)) => h.observe(m.value),
                    SeriesValue::Aggregate(Aggregate::Summary(s)) => s.observe(m.ts_ms, m.value),
                }
                batch.samples.push(SampleRow {
                    series: t.series,
                    ts_ms: m.ts_ms,
                    value: m.value,
                });
            }
            components
                .entry(report.component_name.clone())
                .or_insert_with(|| report.component_type.clone());
            accepted.push((job.done, report.metrics.len()));
        }
        batch.components = components
            .into_iter()
            .map(|(name, component_type)| ComponentTouch {
                name,
                component_type,
                now_ms,
            })
            .collect();
    });

    if accepted.is_empty() {
        return;
    }
    for t in &touched {
        if let SeriesValue::Aggregate(a) = &t.value {
            if let Ok(json) = serde_json::to_string(a) {
                batch.states.push((t.series, json));
            }
        }
    }
    let started = Instant::now();
    let result = store.commit(&batch).await;
    metrics.observe_store_write(started.elapsed());
    match result {
        Ok(ids) => {
            let updates = touched
                .into_iter()
                .map(|t| SeriesUpdate {
                    id: match t.series {
                        SeriesRef::Known(id) => id,
                        SeriesRef::New(i) => ids[i],
                    },
                    key: t.key,
                    kind: t.kind,
                    labels: t.labels,
                    help: t.help,
                    unit: t.unit,
                    value: t.value,
                    updated_ms: now_ms,
                })
                .collect();
            index.apply(updates);
            metrics.add_samples_ingested(batch.samples.len() as u64);
            for (done, n) in accepted {
                let _ = done.send(Ok(n));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "group commit failed");
            let message = e.to_string();
            for (done, _) in accepted {
                let _ = done.send(Err(IngestError::Store(StoreError::Setup(message.clone()))));
            }
        }
    }
}

fn aggregate_bounds(value: &SeriesValue) -> Option<Vec<f64>> {
    match value {
        SeriesValue::Aggregate(Aggregate::Histogram(h)) => Some(h.bounds.clone()),
        SeriesValue::Aggregate(Aggregate::Summary(s)) => Some(s.quantiles.clone()),
        SeriesValue::Scalar(_) => None,
    }
}

/// Rebuilds the latest-value index from the store. The TTL clock of every
/// rebuilt series starts at `now_ms`.
pub async fn rebuild_index(
    store: &dyn Store,
    index: &SeriesIndex,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let series = store.load_series().await?;
    let latest: HashMap<i64, f64> = store
        .load_latest()
        .await?
        .into_iter()
        .map(|l| (l.series_id, l.value))
        .collect();
    let summary_ids: Vec<i64> = series
        .iter()
        .filter(|s| s.kind == MetricKind::Summary)
        .map(|s| s.id)
        .collect();
    let mut windows: HashMap<i64, Vec<(i64, f64)>> = HashMap::new();
    if !summary_ids.is_empty() {
        for s in store
            .load_since(&summary_ids, now_ms - SUMMARY_WINDOW_MS)
            .await?
        {
            windows
                .entry(s.series_id)
                .or_default()
                .push((s.ts_ms, s.value));
        }
    }
    let mut updates = Vec::new();
    for s in series {
        let Some(&last) = latest.get(&s.id) else {
            continue; // every sample expired by retention
        };
        let value = match s.kind {
            MetricKind::Counter | MetricKind::Gauge => SeriesValue::Scalar(last),
            MetricKind::Histogram | MetricKind::Summary => {
                let Some(mut agg) = s
                    .state
                    .as_deref()
                    .and_then(|j| serde_json::from_str::<Aggregate>(j).ok())
                else {
                    tracing::warn!(
                        series = s.id,
                        "aggregate checkpoint missing or unreadable; series skipped"
                    );
                    continue;
                };
                if let Aggregate::Summary(summary) = &mut agg {
                    for (ts, v) in windows.remove(&s.id).unwrap_or_default() {
                        summary.push_window(ts, v);
                    }
                }
                SeriesValue::Aggregate(agg)
            }
        };
        let labels: BTreeMap<String, String> = serde_json::from_str(&s.labels).unwrap_or_default();
        updates.push(SeriesUpdate {
            id: s.id,
            key: SeriesKey {
                component: Arc::from(s.component.as_str()),
                name: Arc::from(s.metric_name.as_str()),
                labels: s.labels,
            },
            kind: s.kind,
            labels,
            help: s.help,
            unit: s.unit,
            value,
            updated_ms: now_ms,
        });
    }
    let n = updates.len();
    index.apply(updates);
    Ok(n)
}
