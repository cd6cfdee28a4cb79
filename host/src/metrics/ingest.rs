//! The ingest writer: one task that turns validated reports and event batches
//! into group commits (one writer, because SQLite has one anyway: two would
//! wait on each other's locks). Concurrent requests queue here; the writer
//! plans series ids and aggregates against the latest-value index, commits one
//! transaction for the whole group (samples, then events), then updates the
//! index and answers each request. A request's `200` is sent only after its
//! commit. Also rebuilds the index from the store at start.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

use super::aggregate::{
    Aggregate, HistogramState, SummaryState, DEFAULT_BUCKETS, DEFAULT_QUANTILES, SUMMARY_WINDOW_MS,
};
use super::index::{
    claimed_names, render_labels, IdMap, IndexView, NewEntry, SeriesIndex, SeriesKey, SeriesUpdate,
    SeriesValue,
};
use super::model::{series_fingerprint, ItemError, MetricKind, PreparedMetric, PreparedReport};
use crate::components::ComponentDirectory;
use crate::events::NewEvent;
use crate::store::{
    ComponentTouch, LatestValue, NewSeries, SampleRow, SeriesRef, Store, StoreError, WriteBatch,
};
use crate::telemetry::SelfMetrics;

/// Most samples and events folded into one group commit.
const MAX_GROUP_ITEMS: usize = 50_000;

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

struct EventsJob {
    events: Vec<NewEvent>,
    received_ms: i64,
    done: oneshot::Sender<Result<Vec<Option<i64>>, IngestError>>,
}

/// One request's worth of work for the writer.
enum Job {
    Report(WriteJob),
    Events(EventsJob),
}

impl Job {
    fn items(&self) -> usize {
        match self {
            Job::Report(r) => r.report.metrics.len(),
            Job::Events(e) => e.events.len(),
        }
    }
}

/// Handle used by request handlers to submit reports and events.
#[derive(Clone)]
pub struct IngestHandle {
    tx: mpsc::Sender<Job>,
}

impl IngestHandle {
    /// Submits a report and waits until it is committed (or refused).
    pub async fn submit(&self, report: PreparedReport) -> Result<usize, IngestError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Report(WriteJob { report, done }))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        wait.await.map_err(|_| IngestError::ShuttingDown)?
    }

    /// Appends validated events and waits until they are committed. Returns
    /// each event's sequence number, `None` for one whose `event_id` was
    /// stored already.
    pub async fn append_events(
        &self,
        events: Vec<NewEvent>,
        received_ms: i64,
    ) -> Result<Vec<Option<i64>>, IngestError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Events(EventsJob {
                events,
                received_ms,
                done,
            }))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        wait.await.map_err(|_| IngestError::ShuttingDown)?
    }
}

/// Starts the writer task; it ends when every handle is dropped and the queue is
/// drained, after writing a final ingest checkpoint.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    index: Arc<SeriesIndex>,
    metrics: Arc<SelfMetrics>,
    components: Arc<ComponentDirectory>,
    head: Arc<crate::bus::LogHead>,
) -> (IngestHandle, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Job>(256);
    let task = tokio::spawn(async move {
        let mut checkpoint = Checkpoint::new();
        loop {
            let next = if checkpoint.in_progress() {
                match rx.try_recv() {
                    Ok(job) => Some(job),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                }
            } else if checkpoint.has_dirty() {
                match tokio::time::timeout(checkpoint.time_left(), rx.recv()).await {
                    Ok(Some(job)) => Some(job),
                    Ok(None) => break,
                    Err(_) => None,
                }
            } else {
                match rx.recv().await {
                    Some(job) => Some(job),
                    None => break,
                }
            };
            if let Some(first) = next {
                let mut items = first.items();
                let mut jobs = vec![first];
                while items < MAX_GROUP_ITEMS {
                    match rx.try_recv() {
                        Ok(job) => {
                            items += job.items();
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                match commit_group(store.as_ref(), &index, &metrics, &components, jobs).await {
                    Ok(Some(done)) => {
                        head.bump(done.log_seq);
                        checkpoint.record(done);
                    }
                    Ok(None) => {}
                    Err(one_by_one) => {
                        for job in one_by_one {
                            if let Ok(Some(done)) = commit_group(
                                store.as_ref(),
                                &index,
                                &metrics,
                                &components,
                                vec![job],
                            )
                            .await
                            {
                                head.bump(done.log_seq);
                                checkpoint.record(done);
                            }
                        }
                    }
                }
            }
            if let Err(e) = checkpoint.step(store.as_ref()).await {
                tracing::warn!(error = %e, "ingest checkpoint failed; retrying later");
            }
        }
        if let Err(e) = checkpoint.finish(store.as_ref()).await {
            tracing::warn!(error = %e, "final ingest checkpoint failed; the next start replays more");
        }
        tracing::debug!("ingest writer drained and stopped");
    });
    (IngestHandle { tx }, task)
}

/// How often latest values are checkpointed, and how many rows one step writes.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(10);
const CHECKPOINT_CHUNK: usize = 1_000;

/// What a successful group commit changed, for the checkpoint.
struct CommitDone {
    /// Highest seq of the samples committed (for the ingest checkpoint).
    last_seq: i64,
    /// Highest seq committed to the log, samples and events.
    log_seq: i64,
    scalars: Vec<LatestValue>,
}

/// Write-behind checkpoint of the latest counter and gauge values, so a start
/// reads `series` plus the samples after `checkpoint_seq` instead of searching
/// the whole log. Written in small chunks between group commits.
struct Checkpoint {
    dirty: FxHashMap<i64, (f64, i64)>,
    last_seq: i64,
    pending: Vec<LatestValue>,
    pending_seq: i64,
    started: Instant,
}

impl Checkpoint {
    fn new() -> Self {
        Checkpoint {
            dirty: FxHashMap::default(),
            last_seq: 0,
            pending: Vec::new(),
            pending_seq: 0,
            started: Instant::now(),
        }
    }

    fn in_progress(&self) -> bool {
        !self.pending.is_empty()
    }

    fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    fn time_left(&self) -> Duration {
        CHECKPOINT_EVERY.saturating_sub(self.started.elapsed())
    }

    fn record(&mut self, done: CommitDone) {
        self.last_seq = self.last_seq.max(done.last_seq);
        for v in done.scalars {
            self.dirty.insert(v.series_id, (v.value, v.ts_ms));
        }
    }

    fn snapshot(&mut self) {
        self.pending = self
            .dirty
            .drain()
            .map(|(series_id, (value, ts_ms))| LatestValue {
                series_id,
                value,
                ts_ms,
            })
            .collect();
        self.pending_seq = self.last_seq;
        self.started = Instant::now();
    }

    /// Writes one chunk of a running checkpoint, or starts one when due.
    async fn step(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            if self.dirty.is_empty() || self.time_left() > Duration::ZERO {
                return Ok(());
            }
            self.snapshot();
        }
        let cut = self.pending.len().saturating_sub(CHECKPOINT_CHUNK);
        store.save_latest(&self.pending[cut..]).await?;
        self.pending.truncate(cut);
        if self.pending.is_empty() {
            store.set_checkpoint_seq(self.pending_seq).await?;
        }
        Ok(())
    }

    /// Writes everything outstanding (at shutdown).
    async fn finish(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        while self.in_progress() {
            self.step(store).await?;
        }
        if self.has_dirty() {
            self.snapshot();
            while self.in_progress() {
                self.step(store).await?;
            }
        }
        Ok(())
    }
}

/// Per-series plan of one group.
struct Planned {
    series: SeriesRef,
    /// Timestamp of the last sample planned for this series.
    last_ts: i64,
    /// `(job, metric)` that created this plan entry (the series' identity).
    source: (usize, usize),
    value: SeriesValue,
}

fn conflict(index: usize, field: &str, reason: String) -> ItemError {
    ItemError {
        index: Some(index),
        field: field.into(),
        reason,
    }
}

/// Names and label sets claimed by the reports already accepted into the
/// group being planned (they are not in the index until it commits).
#[derive(Default)]
struct GroupClaims {
    kinds: FxHashMap<String, MetricKind>,
    /// exported name → family
    names: FxHashMap<String, String>,
    /// (family, exported label set) → series fingerprint
    label_sets: FxHashMap<(String, String), u64>,
}

/// What an accepted report adds to the group's claims, and the index id of
/// each of its metrics' series (looked up once, used again when planning).
#[derive(Default)]
struct NewClaims {
    names: Vec<(String, String)>,
    label_sets: Vec<((String, String), u64)>,
    known_ids: Vec<Option<i64>>,
}

impl GroupClaims {
    /// Takes the claims; returns the known ids.
    fn add(&mut self, new: NewClaims) -> Vec<Option<i64>> {
        self.names.extend(new.names);
        self.label_sets.extend(new.label_sets);
        new.known_ids
    }
}

/// Refuses a report whose types or bounds contradict what the index or the
/// earlier reports of this group hold, or whose new families or series would
/// export a name or a label set that another family or series exports
/// already (the export stays valid by construction: Prometheus drops a whole
/// target with a duplicate label name and silently keeps one of two samples
/// with the same name and labels).
fn check_conflicts(
    view: &IndexView<'_>,
    report: &PreparedReport,
    group: &GroupClaims,
    plan: &IdMap<u64, usize>,
    planned: &[Planned],
) -> Result<NewClaims, Vec<ItemError>> {
    let mut errors = Vec::new();
    let mut kinds_here: FxHashMap<&str, MetricKind> = FxHashMap::default();
    let mut bounds_here: IdMap<u64, &[f64]> = IdMap::default();
    let mut new = NewClaims::default();
    let mut names_here: FxHashMap<String, String> = FxHashMap::default();
    let mut sets_here: FxHashMap<(String, String), u64> = FxHashMap::default();
    for (i, m) in report.metrics.iter().enumerate() {
        let known = match kinds_here.get(m.name.as_str()) {
            Some(kind) => Some(*kind),
            None => view
                .kind_of(&m.name)
                .or_else(|| group.kinds.get(&m.name).copied()),
        };
        match known {
            Some(kind) if kind != m.kind => errors.push(conflict(
                i,
                "metric_type",
                format!(
                    "metric `{}` is already a {}, not a {}",
                    m.name,
                    kind.as_str(),
                    m.kind.as_str()
                ),
            )),
            Some(_) => {}
            None => {
                // A new family: none of its exported names may be taken.
                let claims = claimed_names(&m.name, m.kind, view.counter_names());
                let taken = view.claim_conflict(&m.name, m.kind).or_else(|| {
                    claims.iter().find_map(|c| {
                        group
                            .names
                            .get(c)
                            .or_else(|| names_here.get(c))
                            .filter(|owner| **owner != m.name)
                            .map(|owner| (owner.clone(), c.clone()))
                    })
                });
                match taken {
                    Some((owner, name)) => errors.push(conflict(
                        i,
                        "metric_name",
                        format!(
                            "a {} named `{}` would be exported as `{name}`, which the family `{owner}` already exports; choose another name",
                            m.kind.as_str(),
                            m.name
                        ),
                    )),
                    None => {
                        kinds_here.insert(&m.name, m.kind);
                        for c in claims {
                            names_here.insert(c.clone(), m.name.clone());
                            new.names.push((c, m.name.clone()));
                        }
                    }
                }
            }
        }
        let known = view.id_of(
            m.fingerprint,
            &report.component_name,
            &m.name,
            &m.labels_key,
        );
        new.known_ids.push(known);
        let is_new_series = !plan.contains_key(&m.fingerprint) && known.is_none();
        if is_new_series {
            let rendered = render_labels(&report.component_name, &m.labels);
            let key = (m.name.clone(), rendered);
            let clash = view.label_set_owner(&key.0, &key.1).is_some()
                || group
                    .label_sets
                    .get(&key)
                    .or_else(|| sets_here.get(&key))
                    .is_some_and(|fp| *fp != m.fingerprint);
            if clash {
                errors.push(conflict(
                    i,
                    "labels",
                    format!(
                        "another series of `{}` already exports the label set {{{}}} (a reported `component` label that differs from component_name is exported as `exported_component`); use other label names or values",
                        m.name, key.1
                    ),
                ));
            } else if !sets_here.contains_key(&key) {
                sets_here.insert(key.clone(), m.fingerprint);
                new.label_sets.push((key, m.fingerprint));
            }
        }
        let Some(given) = &m.bounds else { continue };
        let existing = match plan.get(&m.fingerprint) {
            Some(&slot) => aggregate_bounds(&planned[slot].value),
            None => known.and_then(|id| view.aggregate(id)).map(|a| match a {
                Aggregate::Histogram(h) => h.bounds,
                Aggregate::Summary(s) => s.quantiles,
            }),
        }
        .or_else(|| bounds_here.get(&m.fingerprint).map(|b| b.to_vec()));
        match existing {
            Some(existing) if existing != *given => errors.push(conflict(
                i,
                if m.kind == MetricKind::Histogram {
                    "labels.le"
                } else {
                    "labels.quantile"
                },
                "differs from the bounds this series was created with".into(),
            )),
            _ => {
                bounds_here.insert(m.fingerprint, given);
            }
        }
    }
    if errors.is_empty() {
        Ok(new)
    } else {
        Err(errors)
    }
}

fn fresh_value(m: &PreparedMetric) -> SeriesValue {
    match m.kind {
        MetricKind::Counter | MetricKind::Gauge => SeriesValue::Scalar(m.value),
        MetricKind::Histogram => SeriesValue::Aggregate(Aggregate::Histogram(HistogramState::new(
            m.bounds.clone().unwrap_or_else(|| DEFAULT_BUCKETS.to_vec()),
        ))),
        MetricKind::Summary => SeriesValue::Aggregate(Aggregate::Summary(SummaryState::new(
            m.bounds
                .clone()
                .unwrap_or_else(|| DEFAULT_QUANTILES.to_vec()),
        ))),
    }
}

/// Plans and commits one group of reports, answering each. When the store
/// refuses a group of several reports, nothing is answered and they come
/// back, to be committed one at a time.
async fn commit_group(
    store: &dyn Store,
    index: &SeriesIndex,
    metrics: &SelfMetrics,
    components: &ComponentDirectory,
    jobs: Vec<Job>,
) -> Result<Option<CommitDone>, Vec<Job>> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut batch = WriteBatch::default();
    let mut planned: Vec<Planned> = Vec::new();
    let mut help_changes: Vec<(Arc<str>, String)> = Vec::new();
    let mut reports = Vec::new();
    let mut senders = Vec::new();
    // (answer channel, events in the batch from .. to)
    let mut event_jobs = Vec::new();
    let mut event_received = Vec::new();
    for job in jobs {
        match job {
            Job::Report(r) => {
                reports.push(r.report);
                senders.push(r.done);
            }
            Job::Events(e) => {
                let from = batch.events.len();
                batch.events.extend(e.events);
                // Received when the first of a group arrived: one stamp per commit.
                batch.events_received_ms = batch.events_received_ms.max(e.received_ms);
                event_received.push(e.received_ms);
                event_jobs.push((e.done, from, batch.events.len()));
            }
        }
    }
    let mut outcome: Vec<Option<Vec<ItemError>>> = vec![None; reports.len()];

    index.with_view(|view| {
        let mut plan: IdMap<u64, usize> = IdMap::default();
        let mut group = GroupClaims::default();
        let mut components: FxHashMap<&str, &str> = FxHashMap::default();
        for (j, report) in reports.iter().enumerate() {
            let known_ids = match check_conflicts(view, report, &group, &plan, &planned) {
                Ok(new) => group.add(new),
                Err(errors) => {
                    outcome[j] = Some(errors);
                    continue;
                }
            };
            for (i, m) in report.metrics.iter().enumerate() {
                if !group.kinds.contains_key(&m.name) {
                    group.kinds.insert(m.name.clone(), m.kind);
                    if !m.help.is_empty() && view.help_of(&m.name).is_some_and(|h| h != m.help) {
                        help_changes.push((Arc::from(m.name.as_str()), m.help.clone()));
                    }
                }
                let slot = match plan.get(&m.fingerprint) {
                    Some(&slot) if same_series(&reports, planned[slot].source, report, m) => slot,
                    _ => {
                        let known = known_ids.get(i).copied().flatten();
                        let (series, value) = match known {
                            Some(id) => (
                                SeriesRef::Known(id),
                                view.aggregate(id)
                                    .map(SeriesValue::Aggregate)
                                    .unwrap_or_else(|| fresh_value(m)),
                            ),
                            None => {
                                batch.new_series.push(NewSeries {
                                    component: report.component_name.clone(),
                                    metric_name: m.name.clone(),
                                    kind: m.kind,
                                    labels: m.labels_key.clone(),
                                    help: m.help.clone(),
                                    unit: m.unit.clone(),
                                });
                                (SeriesRef::New(batch.new_series.len() - 1), fresh_value(m))
                            }
                        };
                        planned.push(Planned {
                            series,
                            last_ts: m.ts_ms,
                            source: (j, i),
                            value,
                        });
                        plan.insert(m.fingerprint, planned.len() - 1);
                        planned.len() - 1
                    }
                };
                let p = &mut planned[slot];
                p.last_ts = m.ts_ms;
                match &mut p.value {
                    SeriesValue::Scalar(v) => *v = m.value,
                    SeriesValue::Aggregate(Aggregate::Histogram(h)) => h.observe(m.value),
                    SeriesValue::Aggregate(Aggregate::Summary(s)) => s.observe(m.ts_ms, m.value),
                }
                batch.samples.push(SampleRow {
                    series: p.series,
                    ts_ms: m.ts_ms,
                    value: m.value,
                });
            }
            components
                .entry(&report.component_name)
                .or_insert(&report.component_type);
        }
        batch.components = components
            .into_iter()
            .map(|(name, component_type)| ComponentTouch {
                name: name.to_string(),
                component_type: component_type.to_string(),
                now_ms,
            })
            .collect();
    });

    // (index of the report, its answer channel, its sample count)
    let mut accepted = Vec::new();
    for (j, ((done, errors), report)) in senders.into_iter().zip(outcome).zip(&reports).enumerate()
    {
        match errors {
            Some(errors) => {
                let _ = done.send(Err(IngestError::Conflict(errors)));
            }
            None => accepted.push((j, done, report.metrics.len())),
        }
    }
    if accepted.is_empty() && event_jobs.is_empty() {
        return Ok(None);
    }
    for p in &planned {
        if let SeriesValue::Aggregate(a) = &p.value {
            if let Ok(json) = serde_json::to_string(a) {
                batch.states.push((p.series, json));
            }
        }
    }
    let started = Instant::now();
    let result = store.commit(&batch).await;
    metrics.observe_store_write(started.elapsed());
    match result {
        Ok(committed) => {
            let ids = committed.new_ids;
            index
                .recent
                .record(&batch.samples, &ids, committed.last_seq);
            let mut scalars = Vec::new();
            let updates = planned
                .into_iter()
                .inspect(|p| {
                    if let SeriesValue::Scalar(value) = p.value {
                        let series_id = match p.series {
                            SeriesRef::Known(id) => id,
                            SeriesRef::New(n) => ids[n],
                        };
                        scalars.push(LatestValue {
                            series_id,
                            value,
                            ts_ms: p.last_ts,
                        });
                    }
                })
                .map(|p| match p.series {
                    SeriesRef::Known(id) => SeriesUpdate::Value { id, value: p.value },
                    SeriesRef::New(n) => {
                        let report = &reports[p.source.0];
                        let m = &report.metrics[p.source.1];
                        SeriesUpdate::New(Box::new(NewEntry {
                            id: ids[n],
                            key: SeriesKey {
                                component: Arc::from(report.component_name.as_str()),
                                name: Arc::from(m.name.as_str()),
                                labels: m.labels_key.clone(),
                            },
                            fingerprint: m.fingerprint,
                            kind: m.kind,
                            labels: m.labels.clone(),
                            help: m.help.clone(),
                            unit: m.unit.clone(),
                            value: p.value,
                        }))
                    }
                })
                .chain(
                    help_changes
                        .into_iter()
                        .map(|(name, help)| SeriesUpdate::Help { name, help }),
                );
            // Stamped after the commit: an evaluation that starts at or
            // after this instant reads these samples, so one that starts
            // earlier is the one the alert evaluator must repeat for them.
            let applied_ms = chrono::Utc::now().timestamp_millis().max(now_ms);
            index.apply(updates, applied_ms);
            // Every committed report counts as a sign of life of its
            // component, whichever path submitted it (API or self-report).
            for c in &batch.components {
                components.seen(&c.name, c.now_ms);
                components.reported(&c.name, &c.component_type);
            }
            metrics.add_samples_ingested(batch.samples.len() as u64);
            for (_, done, n) in accepted {
                let _ = done.send(Ok(n));
            }
            let appended = committed.event_seqs.iter().filter(|s| s.is_some()).count();
            let log_seq = committed
                .event_seqs
                .iter()
                .flatten()
                .copied()
                .fold(committed.last_seq, i64::max);
            metrics.add_events_ingested(appended as u64);
            for (done, from, to) in event_jobs {
                let seqs = committed
                    .event_seqs
                    .get(from..to)
                    .unwrap_or_default()
                    .to_vec();
                let _ = done.send(Ok(seqs));
            }
            Ok(Some(CommitDone {
                last_seq: committed.last_seq,
                log_seq,
                scalars,
            }))
        }
        Err(e) if accepted.len() + event_jobs.len() > 1 => {
            // One request may be what the database refused: commit each on
            // its own, so a request that would succeed alone never fails
            // because of another client's.
            tracing::warn!(error = %e, requests = accepted.len() + event_jobs.len(), "group commit failed; committing its requests one by one");
            let mut reports: Vec<Option<PreparedReport>> = reports.into_iter().map(Some).collect();
            let mut retry: Vec<Job> = accepted
                .into_iter()
                .filter_map(|(j, done, _)| {
                    reports[j]
                        .take()
                        .map(|report| Job::Report(WriteJob { report, done }))
                })
                .collect();
            let mut events = batch.events;
            // Split the batch's events back into their requests, last first.
            for ((done, from, _), received_ms) in event_jobs.into_iter().zip(event_received).rev() {
                let mine = events.split_off(from);
                retry.push(Job::Events(EventsJob {
                    events: mine,
                    received_ms,
                    done,
                }));
            }
            Err(retry)
        }
        Err(e) => {
            tracing::error!(error = %e, "commit of a request failed");
            let message = e.to_string();
            for (_, done, _) in accepted {
                let _ = done.send(Err(IngestError::Store(StoreError::Setup(message.clone()))));
            }
            for (done, _, _) in event_jobs {
                let _ = done.send(Err(IngestError::Store(StoreError::Setup(message.clone()))));
            }
            Ok(None)
        }
    }
}

/// Whether metric `m` of `report` is the series planned from `source`.
fn same_series(
    reports: &[PreparedReport],
    source: (usize, usize),
    report: &PreparedReport,
    m: &PreparedMetric,
) -> bool {
    let first = &reports[source.0];
    let fm = &first.metrics[source.1];
    first.component_name == report.component_name
        && fm.name == m.name
        && fm.labels_key == m.labels_key
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
    let checkpoint_seq = store.checkpoint_seq().await?;
    let series = store.load_series().await?;
    let mut latest: HashMap<i64, f64> = series
        .iter()
        .filter_map(|s| s.last.map(|(value, _)| (s.id, value)))
        .collect();
    let after = store.latest_after(checkpoint_seq).await?;
    let replayed = after.len();
    for v in after {
        latest.insert(v.series_id, v.value);
    }
    tracing::debug!(checkpoint_seq, replayed, "latest values rebuilt");
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
        let value = match s.kind {
            MetricKind::Counter | MetricKind::Gauge => match latest.get(&s.id) {
                Some(&last) => SeriesValue::Scalar(last),
                None => continue, // no value was ever committed
            },
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
        updates.push(SeriesUpdate::New(Box::new(NewEntry {
            id: s.id,
            fingerprint: series_fingerprint(&s.component, &s.metric_name, &s.labels),
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
        })));
    }
    let n = updates.len();
    index.apply(updates, now_ms);
    Ok(n)
}
