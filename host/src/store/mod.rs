//! Storage: one small [`Store`] trait and two sqlx implementations, SQLite (the
//! embedded default) and PostgreSQL. Owns the schema (migrations under
//! `migrations/`), the append-only samples log, series, components and
//! retention deletes. Does not know HTTP, validation or exposition.

pub(crate) mod alert_rules;
pub(crate) mod alerts;
mod executions;
mod log_stats;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use utoipa::ToSchema;

pub use alert_rules::{EvaluationCommit, RuleRow, RuleStore};
pub use alerts::{AlertStore, ChannelRow, DeliveryQuery, DeliveryRow};
pub use executions::{ExecutionQuery, ExecutionRow, ExecutionStore, ExecutionUpdate, StateCount};
pub use log_stats::LogStats;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use crate::events::{NewEvent, StoredEvent};
use crate::metrics::model::MetricKind;

/// Storage failures. Every message names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Setup(String),
}

/// Adds context to sqlx errors.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Database { context, source })
    }
}

/// A series as stored.
#[derive(Clone, Debug)]
pub struct StoredSeries {
    pub id: i64,
    pub component: String,
    /// Type of the component, from the registry (empty if unknown).
    pub component_type: String,
    pub metric_name: String,
    pub kind: MetricKind,
    /// Canonical JSON object of the labels (sorted keys).
    pub labels: String,
    pub help: String,
    pub unit: String,
    /// Aggregate checkpoint (JSON) for histograms and summaries.
    pub state: Option<String>,
    /// Latest value and its timestamp as of the ingest checkpoint.
    pub last: Option<(f64, i64)>,
}

/// A series the writer creates (or revives) in this commit.
#[derive(Clone, Debug)]
pub struct NewSeries {
    pub component: String,
    pub metric_name: String,
    pub kind: MetricKind,
    pub labels: String,
    pub help: String,
    pub unit: String,
}

/// Which series a sample belongs to: a known id or an entry of `new_series`.
#[derive(Clone, Copy, Debug)]
pub enum SeriesRef {
    Known(i64),
    New(usize),
}

/// One sample to append to the log.
#[derive(Clone, Copy, Debug)]
pub struct SampleRow {
    pub series: SeriesRef,
    pub ts_ms: i64,
    pub value: f64,
}

/// A component seen in a report: registered if new, last seen refreshed.
#[derive(Clone, Debug)]
pub struct ComponentTouch {
    pub name: String,
    pub component_type: String,
    pub now_ms: i64,
}

/// Everything one group commit writes, atomically.
#[derive(Debug, Default)]
pub struct WriteBatch {
    pub new_series: Vec<NewSeries>,
    pub samples: Vec<SampleRow>,
    /// Aggregate checkpoints for histogram/summary series touched by this batch.
    pub states: Vec<(SeriesRef, String)>,
    pub components: Vec<ComponentTouch>,
    /// Events appended after the samples (an event whose `event_id` is
    /// stored already is left as it was).
    pub events: Vec<NewEvent>,
    /// When the events were received (ms), for retention.
    pub events_received_ms: i64,
}

/// Latest value of a series, for the ingest checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct LatestValue {
    pub series_id: i64,
    pub value: f64,
    pub ts_ms: i64,
}

/// What a commit created.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    /// Ids of `new_series`, in order.
    pub new_ids: Vec<i64>,
    /// Sequence number of the last sample written (0 when none).
    pub last_seq: i64,
    /// Each event's sequence number, in batch order; `None` for an event
    /// whose `event_id` was stored already (or came earlier in the batch).
    pub event_seqs: Vec<Option<i64>>,
}

/// A sample as returned by queries.
#[derive(Clone, Debug)]
pub struct StoredSample {
    pub seq: i64,
    pub series_id: i64,
    pub ts_ms: i64,
    pub value: f64,
}

/// Sample query after series matching has been resolved to ids.
#[derive(Clone, Debug, Default)]
pub struct SampleQuery {
    /// `None`: every series.
    pub series_ids: Option<Vec<i64>>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub after_seq: i64,
    pub limit: u32,
    /// Newest sample time first (NoETL's order) instead of sequence order.
    pub newest_first: bool,
}

/// What a retention rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleScope {
    /// Every series of a metric name.
    Metric,
    /// Every series of a component.
    Component,
}

impl RuleScope {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleScope::Metric => "metric",
            RuleScope::Component => "component",
        }
    }
}

/// Samples of a metric name or a component kept `ttl_ms` instead of `--retention`.
#[derive(Clone, Debug)]
pub struct RetentionRule {
    pub scope: RuleScope,
    pub name: String,
    pub ttl_ms: i64,
}

#[derive(sqlx::FromRow)]
pub(crate) struct RetentionRuleRecord {
    scope: String,
    name: String,
    ttl_ms: i64,
}

impl From<RetentionRuleRecord> for RetentionRule {
    fn from(r: RetentionRuleRecord) -> Self {
        RetentionRule {
            scope: if r.scope == "component" {
                RuleScope::Component
            } else {
                RuleScope::Metric
            },
            name: r.name,
            ttl_ms: r.ttl_ms,
        }
    }
}

/// A registered component.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Component {
    pub name: String,
    #[serde(rename = "type")]
    pub component_type: String,
    pub capabilities: Vec<String>,
    pub capacity: Option<i64>,
    #[serde(skip)]
    pub registered_at_ms: i64,
    #[serde(skip)]
    pub last_heartbeat_ms: i64,
    /// Stable numeric id (NoETL's `runtime_id`); 0 before the first store.
    #[serde(skip)]
    pub runtime_id: i64,
    /// NoETL's status: `ready`, `offline`, … (a heartbeat sets `ready`).
    #[serde(skip)]
    pub status: String,
    /// The address it registered with (`base_url`, `uri` or `endpoint`).
    #[serde(skip)]
    pub uri: Option<String>,
    /// NoETL's runtime description (JSON object: `type`, `pid`, `hostname`, meta).
    #[serde(skip)]
    pub runtime: Option<String>,
    /// Labels as registered (any JSON value).
    #[serde(skip)]
    pub labels: Option<String>,
    #[serde(skip)]
    pub updated_at_ms: i64,
}

impl Component {
    /// A component as a registration describes it, before it is stored.
    pub fn new(name: String, component_type: String, now_ms: i64) -> Self {
        Component {
            name,
            component_type,
            capabilities: Vec::new(),
            capacity: None,
            registered_at_ms: now_ms,
            last_heartbeat_ms: now_ms,
            runtime_id: 0,
            status: "ready".to_string(),
            uri: None,
            runtime: None,
            labels: None,
            updated_at_ms: now_ms,
        }
    }
}

/// What [`Store::aggregates_at`] returns for one series.
#[derive(Clone, Debug, Default)]
pub struct AggregateAt {
    pub series_id: i64,
    /// Aggregate checkpoint (JSON), as of the snapshot.
    pub state: Option<String>,
    /// Observations after the seq asked about, in sequence order.
    pub after: Vec<StoredSample>,
    /// Summaries only: observations up to that seq inside the window, in
    /// sequence order.
    pub window: Vec<StoredSample>,
}

/// A stored sample with its series, as publishers receive it.
#[derive(Clone, Debug)]
pub struct LogSample {
    pub seq: i64,
    pub series_id: i64,
    pub ts_ms: i64,
    pub value: f64,
    pub component: String,
    pub metric_name: String,
    pub kind: MetricKind,
    /// Canonical JSON object of the labels.
    pub labels: String,
}

/// Event listing filters, in sequence order after `after_seq`.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Any of these types (empty: all).
    pub event_types: Vec<String>,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub task_id: Option<String>,
    /// Event time range `[start, end)`, unix seconds.
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub after_seq: i64,
    pub limit: u32,
    // Provenance scopes (issue 13): events whose attribute of that name is
    // this string (`execution_id`, `source_id`, `project_module`).
    pub execution_id: Option<String>,
    pub source_id: Option<String>,
    pub project_module: Option<String>,
}

/// A stretch of the log: samples and events after a sequence number, each
/// list in sequence order, together at most the limit asked for and with no
/// item skipped (every item up to the last one returned is in one list).
#[derive(Clone, Debug, Default)]
pub struct LogItems {
    pub samples: Vec<LogSample>,
    pub events: Vec<StoredEvent>,
}

/// The ids of `new` in its order, from the rows a multi-row series upsert
/// returned as `(id, component, metric_name, labels)` in whatever order the
/// database produced them.
pub(crate) fn new_series_ids(
    new: &[NewSeries],
    rows: Vec<(i64, String, String, String)>,
) -> Result<Vec<i64>, StoreError> {
    let mut by_key: std::collections::HashMap<(String, String, String), i64> = rows
        .into_iter()
        .map(|(id, component, name, labels)| ((component, name, labels), id))
        .collect();
    new.iter()
        .map(|s| {
            by_key
                .remove(&(s.component.clone(), s.metric_name.clone(), s.labels.clone()))
                .ok_or_else(|| {
                    StoreError::Setup(format!(
                        "the database returned no id for new series {}{} of {}",
                        s.metric_name, s.labels, s.component
                    ))
                })
        })
        .collect()
}

/// Which of `events` get the returned sequence numbers: the first occurrence
/// of each `event_id` that the store inserted.
pub(crate) fn assign_event_seqs(
    events: &[NewEvent],
    mut inserted: std::collections::HashMap<String, i64>,
) -> Vec<Option<i64>> {
    events
        .iter()
        .map(|e| inserted.remove(&e.event_id))
        .collect()
}

impl LogItems {
    /// Merges up to `limit` samples and up to `limit` events read after the
    /// same sequence number into the first `limit` items of the log.
    pub fn merge(mut samples: Vec<LogSample>, mut events: Vec<StoredEvent>, limit: usize) -> Self {
        if samples.len() + events.len() > limit {
            let mut seqs: Vec<i64> = samples
                .iter()
                .map(|s| s.seq)
                .chain(events.iter().map(|e| e.seq))
                .collect();
            seqs.sort_unstable();
            let last = seqs[limit.max(1) - 1];
            samples.retain(|s| s.seq <= last);
            events.retain(|e| e.seq <= last);
        }
        LogItems { samples, events }
    }

    pub fn len(&self) -> usize {
        self.samples.len() + self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty() && self.events.is_empty()
    }

    /// Highest sequence number among the items.
    pub fn last_seq(&self) -> Option<i64> {
        let s = self.samples.last().map(|s| s.seq);
        let e = self.events.last().map(|e| e.seq);
        s.max(e)
    }

    /// Keeps only items with a sequence number up to `seq`.
    pub fn truncate_to(&mut self, seq: i64) {
        self.samples.retain(|s| s.seq <= seq);
        self.events.retain(|e| e.seq <= seq);
    }
}

/// Exclusive, per-name ownership of a job (a publisher's delivery) among the
/// replicas sharing a database. Dropping it gives it up.
#[async_trait]
pub trait Lease: Send {
    /// Whether this replica still holds it (PostgreSQL: the session holding
    /// the advisory lock is still connected).
    async fn held(&mut self) -> bool;
    /// Gives it up at once, so another replica can take over.
    async fn release(self: Box<Self>);
}

/// A publisher's durable position in the log and its delivery record.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PublisherCursor {
    pub publisher: String,
    /// Every sample up to this sequence number was delivered or dead-lettered.
    pub cursor_seq: i64,
    pub delivered: i64,
    pub dead_lettered: i64,
    #[serde(skip)]
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    #[serde(skip)]
    pub last_error_ms: Option<i64>,
}

/// An item a receiver refused for good.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub id: i64,
    pub publisher: String,
    pub seq: i64,
    /// The item as JSON.
    pub item: String,
    pub reason: String,
    pub created_ms: i64,
}

/// The storage operations Vigil needs; implemented for SQLite and PostgreSQL.
#[async_trait]
pub trait Store:
    ExecutionStore + AlertStore + RuleStore + LogStats + Send + Sync + 'static
{
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Writes a batch in one transaction.
    async fn commit(&self, batch: &WriteBatch) -> Result<Committed, StoreError>;
    /// Every series not deleted, with its checkpointed latest value.
    async fn load_series(&self) -> Result<Vec<StoredSeries>, StoreError>;
    /// Records latest values (one chunk of an ingest checkpoint).
    async fn save_latest(&self, values: &[LatestValue]) -> Result<(), StoreError>;
    /// Marks every sample up to `seq` as reflected in the saved latest values.
    async fn set_checkpoint_seq(&self, seq: i64) -> Result<(), StoreError>;
    /// The sequence number the saved latest values reflect.
    async fn checkpoint_seq(&self) -> Result<i64, StoreError>;
    /// The latest sample of each series among those with a sequence number
    /// above `seq` (what a start replays after the checkpoint).
    async fn latest_after(&self, seq: i64) -> Result<Vec<LatestValue>, StoreError>;
    /// Samples of the given series at or after `since_ms`, in sequence order.
    async fn load_since(
        &self,
        series_ids: &[i64],
        since_ms: i64,
    ) -> Result<Vec<StoredSample>, StoreError>;
    /// The aggregate checkpoints of histogram/summary series as one snapshot
    /// shows them, with the observations a publisher at `after_seq` has not
    /// seen yet (`seq > after_seq`) and, for summaries, those up to it at or
    /// after `window_from_ms` (a summary's quantile window): what it takes to
    /// rebuild each aggregate as of `after_seq`. Series that do not exist
    /// are left out.
    async fn aggregates_at(
        &self,
        series_ids: &[i64],
        after_seq: i64,
        window_from_ms: i64,
    ) -> Result<Vec<AggregateAt>, StoreError>;
    /// Series, deleted ones included, filtered by component, name and/or ids.
    async fn find_series(
        &self,
        component: Option<&str>,
        metric_name: Option<&str>,
        ids: Option<&[i64]>,
    ) -> Result<Vec<StoredSeries>, StoreError>;
    /// Samples matching a query, in sequence order (or newest first).
    async fn query_samples(&self, query: &SampleQuery) -> Result<Vec<StoredSample>, StoreError>;
    /// Marks a component's series deleted; returns how many.
    async fn delete_series_of(&self, component: &str) -> Result<u64, StoreError>;
    /// Deletes up to `limit` samples older than `before_ms`; returns how many.
    async fn delete_samples_before(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError>;
    /// Deletes up to `limit` samples older than `before_ms` of the series in
    /// `only` (every series when `None`) but none of those in `except`.
    async fn delete_series_samples_before(
        &self,
        before_ms: i64,
        only: Option<&[i64]>,
        except: &[i64],
        limit: u32,
    ) -> Result<u64, StoreError>;
    /// Keeps a metric name's or a component's samples `ttl_ms` instead of `--retention`.
    async fn set_retention_rule(&self, rule: &RetentionRule) -> Result<(), StoreError>;
    /// Every retention rule.
    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, StoreError>;
    /// Registers or updates a component (type, capabilities, capacity, heartbeat).
    /// Returns the stored component (its first registration time is kept).
    async fn register_component(&self, component: &Component) -> Result<Component, StoreError>;
    /// Records a heartbeat (status `ready`); `None` when the component is unknown.
    async fn heartbeat(&self, name: &str, now_ms: i64) -> Result<Option<Component>, StoreError>;
    /// Every registered component, by name.
    async fn list_components(&self) -> Result<Vec<Component>, StoreError>;
    /// One component by name.
    async fn find_component(&self, name: &str) -> Result<Option<Component>, StoreError>;
    /// Sets a component's NoETL status (`offline` on deregistration); when
    /// `component_type` is given, only a component of that type is changed.
    /// `None` when no such component is registered.
    async fn set_component_status(
        &self,
        name: &str,
        component_type: Option<&str>,
        status: &str,
        now_ms: i64,
    ) -> Result<Option<Component>, StoreError>;

    /// Appends validated events to the log in one transaction. Returns each
    /// event's sequence number, or `None` when an event with that `event_id`
    /// was already stored (it is left as it was). (The API appends through
    /// the ingest writer's group commits; this is for everything else.)
    async fn append_events(
        &self,
        events: &[NewEvent],
        now_ms: i64,
    ) -> Result<Vec<Option<i64>>, StoreError> {
        let batch = WriteBatch {
            events: events.to_vec(),
            events_received_ms: now_ms,
            ..WriteBatch::default()
        };
        Ok(self.commit(&batch).await?.event_seqs)
    }
    /// Events matching a query, in sequence order.
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    /// Deletes up to `limit` of the oldest events in log order that were
    /// received before `before_ms` (it stops at the first one received
    /// later: sequence order is receive order); returns how many.
    async fn delete_events_before(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError>;

    /// Highest sequence number in the log, samples and events (0 when empty).
    async fn max_seq(&self) -> Result<i64, StoreError>;
    /// The first `limit` log items after `seq`.
    async fn log_after(&self, seq: i64, limit: u32) -> Result<LogItems, StoreError>;
    /// Takes the lease named `name` if no other replica holds it.
    async fn try_lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError>;
    /// A publisher's cursor, created at `start_seq` if it has none.
    async fn open_cursor(
        &self,
        publisher: &str,
        start_seq: i64,
        now_ms: i64,
    ) -> Result<PublisherCursor, StoreError>;
    /// Moves a cursor forward to `to_seq` and records dead letters, atomically.
    async fn advance_cursor(
        &self,
        publisher: &str,
        to_seq: i64,
        delivered: i64,
        dead: &[DeadLetter],
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Records why the last delivery attempt failed.
    async fn record_delivery_error(
        &self,
        publisher: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Every publisher cursor.
    async fn list_cursors(&self) -> Result<Vec<PublisherCursor>, StoreError>;
    /// A publisher's dead letters after `after_id`, oldest first.
    async fn dead_letters(
        &self,
        publisher: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError>;
}

/// Opens the store named by a database URL and applies migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url).await?))
    } else {
        Err(StoreError::Setup(format!(
            "unsupported database URL `{}`: use sqlite://PATH or postgres://…",
            redact_url(url)
        )))
    }
}

/// A database URL with any password replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Row shapes shared by both backends (sqlx derives the decoding for each).
#[derive(sqlx::FromRow)]
pub(crate) struct SeriesRecord {
    id: i64,
    component: String,
    metric_name: String,
    metric_type: String,
    labels: String,
    help_text: String,
    unit: String,
    state: Option<String>,
    last_bits: Option<i64>,
    last_ts: Option<i64>,
    component_type: String,
}

impl From<SeriesRecord> for StoredSeries {
    fn from(r: SeriesRecord) -> Self {
        StoredSeries {
            id: r.id,
            component: r.component,
            component_type: r.component_type,
            metric_name: r.metric_name,
            kind: parse_kind(&r.metric_type),
            labels: r.labels,
            help: r.help_text,
            unit: r.unit,
            state: r.state,
            last: match (r.last_bits, r.last_ts) {
                (Some(bits), Some(ts)) => Some((f64::from_bits(bits as u64), ts)),
                _ => None,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SampleRecord {
    seq: i64,
    series_id: i64,
    ts: i64,
    /// NULL only on SQLite, for a NaN (which SQLite's REAL cannot hold).
    value: Option<f64>,
}

/// Puts what both backends read for [`Store::aggregates_at`] together:
/// `(series id, checkpoint)` rows and the two sample lists, each in
/// sequence order.
pub(crate) fn assemble_aggregates(
    states: Vec<(i64, Option<String>)>,
    after: Vec<StoredSample>,
    window: Vec<StoredSample>,
) -> Vec<AggregateAt> {
    let mut out: Vec<AggregateAt> = states
        .into_iter()
        .map(|(series_id, state)| AggregateAt {
            series_id,
            state,
            ..AggregateAt::default()
        })
        .collect();
    out.sort_by_key(|a| a.series_id);
    let slot = |out: &[AggregateAt], id: i64| out.binary_search_by_key(&id, |a| a.series_id).ok();
    for s in after {
        if let Some(i) = slot(&out, s.series_id) {
            out[i].after.push(s);
        }
    }
    for s in window {
        if let Some(i) = slot(&out, s.series_id) {
            out[i].window.push(s);
        }
    }
    out
}

/// A stored sample value as read back: SQLite reads a NaN as NULL (see
/// `sample_value!` in `sqlite.rs`); PostgreSQL never returns one.
pub(crate) fn stored_value(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

impl From<SampleRecord> for StoredSample {
    fn from(r: SampleRecord) -> Self {
        StoredSample {
            seq: r.seq,
            series_id: r.series_id,
            ts_ms: r.ts,
            value: stored_value(r.value),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ComponentRecord {
    name: String,
    component_type: String,
    capabilities: String,
    capacity: Option<i64>,
    registered_at: i64,
    last_heartbeat: i64,
    runtime_id: Option<i64>,
    status: String,
    uri: Option<String>,
    runtime: Option<String>,
    labels: Option<String>,
    updated_at: i64,
}

/// The columns every component read selects, in [`ComponentRecord`]'s order.
pub(crate) const COMPONENT_COLUMNS: &str = "name, component_type, capabilities, capacity, registered_at, last_heartbeat, runtime_id, status, uri, runtime, labels, updated_at";

impl From<ComponentRecord> for Component {
    fn from(r: ComponentRecord) -> Self {
        Component {
            name: r.name,
            component_type: r.component_type,
            capabilities: parse_capabilities(&r.capabilities),
            capacity: r.capacity,
            registered_at_ms: r.registered_at,
            last_heartbeat_ms: r.last_heartbeat,
            runtime_id: r.runtime_id.unwrap_or(0),
            status: r.status,
            uri: r.uri,
            runtime: r.runtime,
            labels: r.labels,
            updated_at_ms: r.updated_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CursorRecord {
    publisher: String,
    cursor_seq: i64,
    delivered: i64,
    dead_lettered: i64,
    last_success_at: Option<i64>,
    last_error: Option<String>,
    last_error_at: Option<i64>,
}

impl From<CursorRecord> for PublisherCursor {
    fn from(r: CursorRecord) -> Self {
        PublisherCursor {
            publisher: r.publisher,
            cursor_seq: r.cursor_seq,
            delivered: r.delivered,
            dead_lettered: r.dead_lettered,
            last_success_ms: r.last_success_at,
            last_error: r.last_error,
            last_error_ms: r.last_error_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct LogSampleRecord {
    seq: i64,
    series_id: i64,
    ts: i64,
    value: f64,
    component: String,
    metric_name: String,
    metric_type: String,
    labels: String,
}

impl From<LogSampleRecord> for LogSample {
    fn from(r: LogSampleRecord) -> Self {
        LogSample {
            seq: r.seq,
            series_id: r.series_id,
            ts_ms: r.ts,
            value: r.value,
            component: r.component,
            metric_name: r.metric_name,
            kind: parse_kind(&r.metric_type),
            labels: r.labels,
        }
    }
}

pub(crate) fn parse_kind(s: &str) -> MetricKind {
    MetricKind::parse(s).unwrap_or(MetricKind::Gauge)
}

pub(crate) fn parse_capabilities(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_appear_in_redacted_urls() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
