//! SQLite backend: the embedded default, WAL mode, one file at `<data-dir>/vigil.db`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::{AggregateAt, RetentionRule, RetentionRuleRecord};
use super::{
    Committed, Component, ComponentRecord, Context, CursorRecord, DeadLetter, EventQuery,
    LatestValue, Lease, LogItems, LogSample, NewSeries, PublisherCursor, SampleQuery, SampleRecord,
    SampleRow, SeriesRecord, SeriesRef, Store, StoreError, StoredSample, StoredSeries, WriteBatch,
    COMPONENT_COLUMNS,
};
use crate::events::StoredEvent;

mod executions;

super::alerts::alert_store!(SqliteStore);
super::alert_rules::rule_store!(SqliteStore);

/// SQLite serves one process: every lease is granted and stays held.
struct LocalLease;

#[async_trait]
impl Lease for LocalLease {
    async fn held(&mut self) -> bool {
        true
    }

    async fn release(self: Box<Self>) {}
}

/// Bits of a seq below its block number (`migrations/sqlite/…_event_blocks.sql`):
/// scopes and times are indexed per block of 4,096 seqs.
const BLOCK_BITS: u32 = 12;

/// The scopes indexed per block: (kind in `event_keys`, the event's value).
fn keyed_scopes(e: &crate::events::NewEvent) -> [(i64, Option<&str>); 5] {
    [
        (1, e.session_id.as_deref()),
        (2, e.workflow_id.as_deref()),
        (3, e.execution_id.as_deref()),
        (4, e.source_id.as_deref()),
        (5, e.project_module.as_deref()),
    ]
}

/// The SQL of an event listing: only the filters `q` gives appear, so
/// SQLite's planner can use the index of the type or task asked for (with
/// `(?n IS NULL OR column = ?n)` for every filter it planned one scan of
/// the whole log by seq for every query, whatever was asked). A session,
/// workflow or provenance scope reads the blocks of the log that hold it
/// (`event_keys`) and a time range only the blocks whose times overlap it
/// (`event_blocks`); every filter is still tested on each event.
fn events_query_sql(q: &EventQuery) -> String {
    const COLUMNS: &str = "SELECT e.seq AS seq, e.event_id AS event_id, e.event_type AS event_type,
           e.event_ts AS event_ts, e.session_id AS session_id, e.workflow_id AS workflow_id,
           e.task_id AS task_id, e.backend AS backend, e.execution_id AS execution_id,
           e.source_id AS source_id, e.project_module AS project_module, e.body AS body,
           e.received_at AS received_at";
    let keyed = [
        (q.session_id.is_some(), 1, 3),
        (q.workflow_id.is_some(), 2, 4),
        (q.execution_id.is_some(), 3, 9),
        (q.source_id.is_some(), 4, 10),
        (q.project_module.is_some(), 5, 11),
    ];
    // The task index is narrower than any block list.
    let by_block = keyed
        .iter()
        .find(|(given, _, _)| *given)
        .filter(|_| q.task_id.is_none());
    let mut sql = String::from(COLUMNS);
    match by_block {
        // CROSS JOIN: SQLite keeps the blocks as the outer loop, in block
        // order, so the events come in seq order without a sort.
        Some((_, kind, n)) => sql.push_str(&format!(
            " FROM event_keys k CROSS JOIN events e
              WHERE k.kind = {kind} AND k.value = ?{n} AND k.block >= (?1 >> {BLOCK_BITS})
                AND e.seq >= (k.block << {BLOCK_BITS}) AND e.seq < ((k.block + 1) << {BLOCK_BITS})
                AND e.seq > ?1"
        )),
        None => sql.push_str(" FROM events e WHERE e.seq > ?1"),
    }
    match q.event_types.len() {
        0 => {}
        // One type (an event rule's): the type index gives seq order.
        1 => sql.push_str(" AND e.event_type = json_extract(?2, '$[0]')"),
        _ => sql.push_str(" AND e.event_type IN (SELECT value FROM json_each(?2))"),
    }
    // Events at or after `start` are in blocks whose latest time is; events
    // before `end` in blocks whose earliest time is (none: no such events).
    if q.start.is_some() {
        sql.push_str(&format!(
            " AND e.seq >= (COALESCE((SELECT MIN(block) FROM event_blocks WHERE max_ts >= ?6),
                                     1 << 40) << {BLOCK_BITS})"
        ));
    }
    if q.end.is_some() {
        sql.push_str(&format!(
            " AND e.seq < (COALESCE((SELECT block FROM event_blocks WHERE min_ts < ?7
                                     ORDER BY block DESC LIMIT 1) + 1, 0) << {BLOCK_BITS})"
        ));
    }
    let scopes = [
        (q.session_id.is_some(), "e.session_id = ?3"),
        (q.workflow_id.is_some(), "e.workflow_id = ?4"),
        (q.task_id.is_some(), "e.task_id = ?5"),
        (q.start.is_some(), "e.event_ts >= ?6"),
        (q.end.is_some(), "e.event_ts < ?7"),
        (q.execution_id.is_some(), "e.execution_id = ?9"),
        (q.source_id.is_some(), "e.source_id = ?10"),
        (q.project_module.is_some(), "e.project_module = ?11"),
    ];
    for (given, condition) in scopes {
        if given {
            sql.push_str(" AND ");
            sql.push_str(condition);
        }
    }
    match by_block {
        Some(_) => sql.push_str(" ORDER BY k.block, e.seq LIMIT ?8"),
        None => sql.push_str(" ORDER BY e.seq LIMIT ?8"),
    }
    sql
}

/// Binds the parameters of [`events_query_sql`] (numbered ones a query does
/// not name are ignored by SQLite, so each filter keeps its number).
fn bind_event_query<'q, O>(
    query: sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    q: &'q EventQuery,
) -> sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
    let types = serde_json::to_string(&q.event_types).unwrap_or_else(|_| "[]".into());
    query
        .bind(q.after_seq)
        .bind(types)
        .bind(&q.session_id)
        .bind(&q.workflow_id)
        .bind(&q.task_id)
        .bind(q.start)
        .bind(q.end)
        .bind(i64::from(q.limit))
        .bind(&q.execution_id)
        .bind(&q.source_id)
        .bind(&q.project_module)
}

async fn fetch_events<'e, E>(exec: E, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    let sql = events_query_sql(q);
    let rows: Vec<StoredEvent> = bind_event_query(sqlx::query_as(&sql), q)
        .fetch_all(exec)
        .await
        .context("listing events")?;
    Ok(rows)
}

/// Event rows per multi-row INSERT, largest first (13 values each).
const EVENT_CHUNKS: [usize; 4] = [128, 16, 4, 1];

fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (seq, event_id, event_type, event_ts, session_id, workflow_id,
           task_id, backend, execution_id, source_id, project_module, body, received_at) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?,?,?,?,?)");
    }
    sql.push_str(" ON CONFLICT (event_id) DO NOTHING");
    sql
}

/// Appends events after everything in the log: their numbers come from the
/// samples' AUTOINCREMENT counter, moved past them here, inside the write
/// transaction (so numbers are handed out in commit order).
pub(super) async fn insert_events(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[crate::events::NewEvent],
    received_ms: i64,
) -> Result<Vec<Option<i64>>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let top: Option<i64> = sqlx::query_scalar(
        "UPDATE sqlite_sequence SET seq = MAX(seq,
             COALESCE((SELECT MAX(seq) FROM samples), 0),
             COALESCE((SELECT MAX(seq) FROM events), 0)) + ?
         WHERE name = 'samples' RETURNING seq",
    )
    .bind(events.len() as i64)
    .fetch_optional(&mut **tx)
    .await
    .context("numbering events")?;
    let Some(top) = top else {
        return Err(StoreError::Setup(
            "the log counter (sqlite_sequence row `samples`) is missing".into(),
        ));
    };
    let first = top - events.len() as i64 + 1;
    // Event i gets seq first + i, or None when its id was stored already.
    // Without RETURNING: sqlx hands each returned row across threads one at
    // a time, which cost more than the insert. A chunk that inserted fewer
    // rows than it holds is looked up by its seqs (only duplicates do that).
    let mut seqs = Vec::with_capacity(events.len());
    let mut done = 0;
    for size in EVENT_CHUNKS {
        let sql = insert_events_sql(size);
        while events.len() - done >= size {
            let mut q = sqlx::query(&sql);
            for (i, e) in events[done..done + size].iter().enumerate() {
                q = q
                    .bind(first + (done + i) as i64)
                    .bind(&e.event_id)
                    .bind(&e.event_type)
                    .bind(e.event_ts)
                    .bind(&e.session_id)
                    .bind(&e.workflow_id)
                    .bind(&e.task_id)
                    .bind(&e.backend)
                    .bind(&e.execution_id)
                    .bind(&e.source_id)
                    .bind(&e.project_module)
                    .bind(&e.body)
                    .bind(received_ms);
            }
            let (lo, hi) = (first + done as i64, first + (done + size) as i64 - 1);
            let stored = q
                .execute(&mut **tx)
                .await
                .context("appending events")?
                .rows_affected();
            if stored == size as u64 {
                seqs.extend((lo..=hi).map(Some));
            } else {
                let kept: std::collections::HashSet<i64> =
                    sqlx::query_scalar("SELECT seq FROM events WHERE seq BETWEEN ? AND ?")
                        .bind(lo)
                        .bind(hi)
                        .fetch_all(&mut **tx)
                        .await
                        .context("finding the events stored")?
                        .into_iter()
                        .collect();
                seqs.extend((lo..=hi).map(|seq| kept.contains(&seq).then_some(seq)));
            }
            done += size;
        }
    }
    index_blocks(tx, events, &seqs).await?;
    Ok(seqs)
}

/// Key rows per multi-row INSERT into `event_keys`, largest first.
const KEY_CHUNKS: [usize; 3] = [64, 8, 1];

/// Records the blocks of the events just stored: each block's time range
/// and the scope values its events hold (see `events_query_sql`).
async fn index_blocks(
    tx: &mut Transaction<'_, Sqlite>,
    events: &[crate::events::NewEvent],
    seqs: &[Option<i64>],
) -> Result<(), StoreError> {
    let mut times: std::collections::BTreeMap<i64, (f64, f64)> = Default::default();
    let mut keys: std::collections::HashSet<(i64, &str, i64)> = Default::default();
    for (e, seq) in events.iter().zip(seqs) {
        let Some(seq) = seq else { continue };
        let block = seq >> BLOCK_BITS;
        let range = times.entry(block).or_insert((e.event_ts, e.event_ts));
        range.0 = range.0.min(e.event_ts);
        range.1 = range.1.max(e.event_ts);
        for (kind, value) in keyed_scopes(e) {
            if let Some(value) = value {
                keys.insert((kind, value, block));
            }
        }
    }
    for (block, (min, max)) in times {
        sqlx::query(
            "INSERT INTO event_blocks (block, min_ts, max_ts) VALUES (?, ?, ?)
             ON CONFLICT (block) DO UPDATE SET min_ts = MIN(min_ts, excluded.min_ts),
                                               max_ts = MAX(max_ts, excluded.max_ts)",
        )
        .bind(block)
        .bind(min)
        .bind(max)
        .execute(&mut **tx)
        .await
        .context("recording an event block's times")?;
    }
    let keys: Vec<(i64, &str, i64)> = keys.into_iter().collect();
    let mut done = 0;
    for size in KEY_CHUNKS {
        let sql = format!(
            "INSERT INTO event_keys (kind, value, block) VALUES {} ON CONFLICT DO NOTHING",
            vec!["(?, ?, ?)"; size].join(",")
        );
        while keys.len() - done >= size {
            let mut q = sqlx::query(&sql);
            for (kind, value, block) in &keys[done..done + size] {
                q = q.bind(*kind).bind(*value).bind(*block);
            }
            q.execute(&mut **tx)
                .await
                .context("recording an event block's scopes")?;
            done += size;
        }
    }
    Ok(())
}

/// How a sample's value is selected: SQLite's REAL has no NaN, so a NaN
/// gauge is stored as the text `NaN` and read back as NULL
/// (`super::stored_value` turns it into NaN again).
macro_rules! sample_value {
    ($col:literal) => {
        concat!("NULLIF(", $col, ", 'NaN')")
    };
}

/// Sample rows per multi-row INSERT, largest first; every size is a cached statement.
const CHUNKS: [usize; 4] = [256, 32, 4, 1];

pub struct SqliteStore {
    pool: SqlitePool,
    /// The one connection group commits use. SQLite drops a connection's
    /// page cache when another connection has written since its last
    /// transaction, so commits spread over the pool's connections would each
    /// start cold (re-reading the index pages they are about to change);
    /// its own commits leave this connection's cache warm.
    writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and applies migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .context("parsing the SQLite URL")?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            // 64 MiB page cache per connection (the default is 2 MiB).
            .pragma("cache_size", "-65536")
            // Statement journals (a multi-row INSERT that may stop half-way
            // keeps one) in memory, not in a temporary file per statement.
            .pragma("temp_store", "memory")
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .context("opening the SQLite database")?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        // The writer checkpoints when the WAL holds 4,000 pages (16 MiB;
        // SQLite's default is 1,000): the index pages every commit touches
        // are copied back once per checkpoint, so fewer, larger checkpoints
        // copy less in all, and the WAL stays bounded.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.pragma("wal_autocheckpoint", "4000"))
            .await
            .context("opening the SQLite writer connection")?;
        Ok(SqliteStore { pool, writer })
    }

    fn insert_sql(rows: usize) -> String {
        let mut sql = String::from("INSERT INTO samples (series_id, ts, value) VALUES ");
        for i in 0..rows {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str("(?,?,?)");
        }
        sql
    }
}

fn resolve(series: SeriesRef, ids: &[i64]) -> i64 {
    match series {
        SeriesRef::Known(id) => id,
        SeriesRef::New(i) => ids[i],
    }
}

/// Appends samples; returns the sequence number of the last one (0 if none).
async fn insert_samples(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[SampleRow],
    ids: &[i64],
) -> Result<i64, StoreError> {
    let mut last_seq = 0;
    let mut rest = rows;
    for size in CHUNKS {
        let sql = SqliteStore::insert_sql(size);
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            let mut q = sqlx::query(&sql);
            for row in chunk {
                q = q.bind(resolve(row.series, ids)).bind(row.ts_ms);
                // SQLite has no NaN in REAL (it would store NULL): a NaN
                // gauge is kept as the text `NaN` (see `sample_value!`).
                q = if row.value.is_nan() {
                    q.bind("NaN")
                } else {
                    q.bind(row.value)
                };
            }
            let done = q.execute(&mut **tx).await.context("appending samples")?;
            last_seq = done.last_insert_rowid();
            rest = tail;
        }
    }
    Ok(last_seq)
}

/// Creates (or revives) every new series of a commit in one statement.
async fn insert_series(
    tx: &mut Transaction<'_, Sqlite>,
    new: &[NewSeries],
) -> Result<Vec<i64>, StoreError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<[&str; 6]> = new
        .iter()
        .map(|s| {
            [
                s.component.as_str(),
                s.metric_name.as_str(),
                s.kind.as_str(),
                s.labels.as_str(),
                s.help.as_str(),
                s.unit.as_str(),
            ]
        })
        .collect();
    let json = serde_json::to_string(&rows)
        .map_err(|e| StoreError::Setup(format!("encoding new series: {e}")))?;
    // `WHERE true` keeps SQLite from reading ON CONFLICT as a join clause.
    let returned: Vec<(i64, String, String, String)> = sqlx::query_as(
        "INSERT INTO series (component, metric_name, metric_type, labels, help_text, unit)
         SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
                j.value ->> 5
         FROM json_each(?) AS j WHERE true
         ON CONFLICT (component, metric_name, labels) DO UPDATE SET
           deleted = 0, metric_type = excluded.metric_type,
           help_text = excluded.help_text, unit = excluded.unit, state = NULL
         RETURNING id, component, metric_name, labels",
    )
    .bind(json)
    .fetch_all(&mut **tx)
    .await
    .context("creating series")?;
    super::new_series_ids(new, returned)
}

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("pinging SQLite")?;
        Ok(())
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<Committed, StoreError> {
        let mut tx = self.writer.begin().await.context("beginning a write")?;
        let ids = insert_series(&mut tx, &batch.new_series).await?;
        let last_seq = insert_samples(&mut tx, &batch.samples, &ids).await?;
        for (series, state) in &batch.states {
            sqlx::query("UPDATE series SET state = ? WHERE id = ?")
                .bind(state)
                .bind(resolve(*series, &ids))
                .execute(&mut *tx)
                .await
                .context("checkpointing an aggregate")?;
        }
        for c in &batch.components {
            sqlx::query(
                "INSERT INTO components (name, component_type, registered_at, last_heartbeat, updated_at, runtime_id)
                 VALUES (?1, ?2, ?3, ?3, ?3, (SELECT COALESCE(MAX(runtime_id), 0) + 1 FROM components))
                 ON CONFLICT (name) DO UPDATE SET last_heartbeat = excluded.last_heartbeat",
            )
            .bind(&c.name)
            .bind(&c.component_type)
            .bind(c.now_ms)
            .execute(&mut *tx)
            .await
            .context("recording a component")?;
        }
        let event_seqs = insert_events(&mut tx, &batch.events, batch.events_received_ms).await?;
        tx.commit().await.context("committing a write")?;
        Ok(Committed {
            new_ids: ids,
            last_seq,
            event_seqs,
        })
    }

    async fn load_series(&self) -> Result<Vec<StoredSeries>, StoreError> {
        let rows: Vec<SeriesRecord> = sqlx::query_as(
            "SELECT s.id, s.component, s.metric_name, s.metric_type, s.labels, s.help_text, s.unit,
                    s.state, s.last_bits, s.last_ts, COALESCE(c.component_type, '') AS component_type
             FROM series s LEFT JOIN components c ON c.name = s.component
             WHERE s.deleted = 0 ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await
        .context("loading series")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn save_latest(&self, values: &[LatestValue]) -> Result<(), StoreError> {
        if values.is_empty() {
            return Ok(());
        }
        // One statement per chunk: [[id, f64 bits, ts], …] as JSON integers (exact).
        let rows: Vec<[i64; 3]> = values
            .iter()
            .map(|v| [v.series_id, v.value.to_bits() as i64, v.ts_ms])
            .collect();
        let json = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "UPDATE series SET last_bits = j.value ->> 1, last_ts = j.value ->> 2
             FROM json_each(?) AS j WHERE series.id = j.value ->> 0",
        )
        .bind(json)
        // On the writer's connection: the checkpoint runs between group
        // commits, and a write from another connection would reset the
        // writer's page cache.
        .execute(&self.writer)
        .await
        .context("saving latest values")?;
        Ok(())
    }

    async fn set_checkpoint_seq(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ingest_checkpoint SET checkpoint_seq = MAX(checkpoint_seq, ?) WHERE id = 1",
        )
        .bind(seq)
        .execute(&self.writer)
        .await
        .context("advancing the ingest checkpoint")?;
        Ok(())
    }

    async fn checkpoint_seq(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT checkpoint_seq FROM ingest_checkpoint WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .context("reading the ingest checkpoint")
    }

    async fn latest_after(&self, seq: i64) -> Result<Vec<LatestValue>, StoreError> {
        // SQLite takes the bare columns from the row holding MAX(seq).
        let rows = sqlx::query(concat!(
            "SELECT series_id, ",
            sample_value!("value"),
            " AS value, ts, MAX(seq) AS seq FROM samples WHERE seq > ? GROUP BY series_id"
        ))
        .bind(seq)
        .fetch_all(&self.pool)
        .await
        .context("replaying samples after the checkpoint")?;
        Ok(rows
            .iter()
            .map(|r| LatestValue {
                series_id: r.get("series_id"),
                value: super::stored_value(r.get("value")),
                ts_ms: r.get("ts"),
            })
            .collect())
    }

    async fn load_since(
        &self,
        series_ids: &[i64],
        since_ms: i64,
    ) -> Result<Vec<StoredSample>, StoreError> {
        let rows: Vec<SampleRecord> = sqlx::query_as(concat!(
            "SELECT seq, series_id, ts, ",
            sample_value!("value"),
            " AS value FROM samples
             WHERE series_id IN (SELECT value FROM json_each(?)) AND ts >= ? ORDER BY seq"
        ))
        .bind(ids_json(series_ids))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await
        .context("loading recent samples")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn aggregates_at(
        &self,
        series_ids: &[i64],
        after_seq: i64,
        window_from_ms: i64,
    ) -> Result<Vec<AggregateAt>, StoreError> {
        if series_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids = ids_json(series_ids);
        // One read transaction: the checkpoints and the samples from the
        // same WAL snapshot (a commit writes both together).
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning an aggregate read")?;
        let states: Vec<(i64, Option<String>)> = sqlx::query_as(
            "SELECT id, state FROM series WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("reading aggregate checkpoints")?;
        let after: Vec<SampleRecord> = sqlx::query_as(concat!(
            "SELECT seq, series_id, ts, ",
            sample_value!("value"),
            " AS value FROM samples
             WHERE seq > ? AND series_id IN (SELECT value FROM json_each(?)) ORDER BY seq"
        ))
        .bind(after_seq)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("reading observations after a cursor")?;
        let window: Vec<SampleRecord> = sqlx::query_as(concat!(
            "SELECT s.seq, s.series_id, s.ts, ",
            sample_value!("s.value"),
            " AS value FROM samples s JOIN series r ON r.id = s.series_id
             WHERE s.ts >= ? AND s.seq <= ? AND r.metric_type = 'summary'
               AND s.series_id IN (SELECT value FROM json_each(?)) ORDER BY s.seq"
        ))
        .bind(window_from_ms)
        .bind(after_seq)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .context("reading summary windows")?;
        tx.commit().await.context("ending an aggregate read")?;
        Ok(super::assemble_aggregates(
            states,
            after.into_iter().map(Into::into).collect(),
            window.into_iter().map(Into::into).collect(),
        ))
    }

    async fn find_series(
        &self,
        component: Option<&str>,
        metric_name: Option<&str>,
        ids: Option<&[i64]>,
    ) -> Result<Vec<StoredSeries>, StoreError> {
        let rows: Vec<SeriesRecord> = sqlx::query_as(
            "SELECT s.id, s.component, s.metric_name, s.metric_type, s.labels, s.help_text, s.unit,
                    s.state, s.last_bits, s.last_ts, COALESCE(c.component_type, '') AS component_type
             FROM series s LEFT JOIN components c ON c.name = s.component
             WHERE (?1 IS NULL OR s.component = ?1) AND (?2 IS NULL OR s.metric_name = ?2)
               AND (?3 IS NULL OR s.id IN (SELECT value FROM json_each(?3)))
             ORDER BY s.id",
        )
        .bind(component)
        .bind(metric_name)
        .bind(ids.map(ids_json))
        .fetch_all(&self.pool)
        .await
        .context("finding series")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn query_samples(&self, q: &SampleQuery) -> Result<Vec<StoredSample>, StoreError> {
        let mut sql = String::from(concat!(
            "SELECT seq, series_id, ts, ",
            sample_value!("value"),
            " AS value FROM samples WHERE seq > ?"
        ));
        if q.series_ids.is_some() {
            sql.push_str(" AND series_id IN (SELECT value FROM json_each(?))");
        }
        if q.start_ms.is_some() {
            sql.push_str(" AND ts >= ?");
        }
        if q.end_ms.is_some() {
            sql.push_str(" AND ts < ?");
        }
        sql.push_str(if q.newest_first {
            " ORDER BY ts DESC, seq DESC LIMIT ?"
        } else {
            " ORDER BY seq LIMIT ?"
        });
        let mut query = sqlx::query_as::<_, SampleRecord>(&sql).bind(q.after_seq);
        if let Some(ids) = &q.series_ids {
            query = query.bind(ids_json(ids));
        }
        if let Some(start) = q.start_ms {
            query = query.bind(start);
        }
        if let Some(end) = q.end_ms {
            query = query.bind(end);
        }
        let rows: Vec<SampleRecord> = query
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await
            .context("querying samples")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn delete_series_of(&self, component: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE series SET deleted = 1, state = NULL WHERE component = ? AND deleted = 0",
        )
        .bind(component)
        .execute(&self.pool)
        .await
        .context("deleting series")?;
        Ok(done.rows_affected())
    }

    async fn delete_samples_before(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples WHERE ts < ? LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("deleting expired samples")?;
        Ok(done.rows_affected())
    }

    async fn delete_series_samples_before(
        &self,
        before_ms: i64,
        only: Option<&[i64]>,
        except: &[i64],
        limit: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples WHERE ts < ?1
               AND (?2 IS NULL OR series_id IN (SELECT value FROM json_each(?2)))
               AND series_id NOT IN (SELECT value FROM json_each(?3)) LIMIT ?4)",
        )
        .bind(before_ms)
        .bind(only.map(ids_json))
        .bind(ids_json(except))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("deleting expired samples")?;
        Ok(done.rows_affected())
    }

    async fn set_retention_rule(&self, rule: &RetentionRule) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO retention_rules (scope, name, ttl_ms) VALUES (?, ?, ?)
             ON CONFLICT (scope, name) DO UPDATE SET ttl_ms = excluded.ttl_ms",
        )
        .bind(rule.scope.as_str())
        .bind(&rule.name)
        .bind(rule.ttl_ms)
        .execute(&self.pool)
        .await
        .context("setting a retention rule")?;
        Ok(())
    }

    async fn retention_rules(&self) -> Result<Vec<RetentionRule>, StoreError> {
        let rows: Vec<RetentionRuleRecord> =
            sqlx::query_as("SELECT scope, name, ttl_ms FROM retention_rules")
                .fetch_all(&self.pool)
                .await
                .context("reading retention rules")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn register_component(&self, c: &Component) -> Result<Component, StoreError> {
        let sql = format!(
            "INSERT INTO components (name, component_type, capabilities, capacity, registered_at,
               last_heartbeat, status, uri, runtime, labels, updated_at, runtime_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?6,
               (SELECT COALESCE(MAX(runtime_id), 0) + 1 FROM components))
             ON CONFLICT (name) DO UPDATE SET component_type = excluded.component_type,
               capabilities = excluded.capabilities, capacity = excluded.capacity,
               last_heartbeat = excluded.last_heartbeat, status = excluded.status,
               uri = COALESCE(excluded.uri, components.uri),
               runtime = COALESCE(excluded.runtime, components.runtime),
               labels = COALESCE(excluded.labels, components.labels),
               updated_at = excluded.updated_at
             RETURNING {COMPONENT_COLUMNS}"
        );
        let row: ComponentRecord = sqlx::query_as(&sql)
            .bind(&c.name)
            .bind(&c.component_type)
            .bind(serde_json::to_string(&c.capabilities).unwrap_or_else(|_| "[]".into()))
            .bind(c.capacity)
            .bind(c.registered_at_ms)
            .bind(c.last_heartbeat_ms)
            .bind(&c.status)
            .bind(&c.uri)
            .bind(&c.runtime)
            .bind(&c.labels)
            .fetch_one(&self.pool)
            .await
            .context("registering a component")?;
        Ok(row.into())
    }

    async fn heartbeat(&self, name: &str, now_ms: i64) -> Result<Option<Component>, StoreError> {
        let sql = format!(
            "UPDATE components SET last_heartbeat = ?1, updated_at = ?1, status = 'ready'
             WHERE name = ?2 RETURNING {COMPONENT_COLUMNS}"
        );
        let row: Option<ComponentRecord> = sqlx::query_as(&sql)
            .bind(now_ms)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .context("recording a heartbeat")?;
        Ok(row.map(Into::into))
    }

    async fn list_components(&self) -> Result<Vec<Component>, StoreError> {
        let sql = format!("SELECT {COMPONENT_COLUMNS} FROM components ORDER BY name");
        let rows: Vec<ComponentRecord> = sqlx::query_as(&sql)
            .fetch_all(&self.pool)
            .await
            .context("listing components")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn find_component(&self, name: &str) -> Result<Option<Component>, StoreError> {
        let sql = format!("SELECT {COMPONENT_COLUMNS} FROM components WHERE name = ?");
        let row: Option<ComponentRecord> = sqlx::query_as(&sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .context("reading a component")?;
        Ok(row.map(Into::into))
    }

    async fn set_component_status(
        &self,
        name: &str,
        component_type: Option<&str>,
        status: &str,
        now_ms: i64,
    ) -> Result<Option<Component>, StoreError> {
        let sql = format!(
            "UPDATE components SET status = ?1, updated_at = ?2
             WHERE name = ?3 AND (?4 IS NULL OR component_type = ?4)
             RETURNING {COMPONENT_COLUMNS}"
        );
        let row: Option<ComponentRecord> = sqlx::query_as(&sql)
            .bind(status)
            .bind(now_ms)
            .bind(name)
            .bind(component_type)
            .fetch_optional(&self.pool)
            .await
            .context("setting a component's status")?;
        Ok(row.map(Into::into))
    }

    async fn list_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        fetch_events(&self.pool, q).await
    }

    async fn delete_events_before(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await.context("deleting expired events")?;
        let done = sqlx::query(
            "DELETE FROM events WHERE seq IN (
               SELECT seq FROM (SELECT seq, received_at FROM events ORDER BY seq LIMIT ?2)
               WHERE received_at < ?1)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .context("deleting expired events")?;
        // The blocks before the first event left hold none now.
        let first_block =
            format!("COALESCE((SELECT MIN(seq) FROM events) >> {BLOCK_BITS}, 1 << 50)");
        for table in ["event_blocks", "event_keys"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE block < {first_block}"))
                .execute(&mut *tx)
                .await
                .context("deleting the blocks of expired events")?;
        }
        tx.commit().await.context("deleting expired events")?;
        Ok(done.rows_affected())
    }

    async fn max_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM samples), 0),
                        COALESCE((SELECT MAX(seq) FROM events), 0))",
        )
        .fetch_one(&self.pool)
        .await
        .context("reading the log head")?;
        Ok(seq.unwrap_or(0))
    }

    async fn log_after(&self, seq: i64, limit: u32) -> Result<LogItems, StoreError> {
        // One statement, so both tables are read from the same snapshot (and
        // in one round trip to the database thread). Sample rows carry
        // (ts, value, component, metric_name, metric_type, labels); event rows
        // (-, event_ts, event_id, event_type, session_id, body) and their
        // other fields.
        let rows = sqlx::query(concat!(
            "SELECT * FROM (
               SELECT s.seq, 0 AS is_event, s.ts, ",
            sample_value!("s.value"),
            ", r.component, r.metric_name,
                      r.metric_type, r.labels, NULL AS workflow_id, NULL AS task_id,
                      NULL AS backend, NULL AS received_at, NULL AS execution_id,
                      NULL AS source_id, NULL AS project_module, s.series_id
               FROM samples s JOIN series r ON r.id = s.series_id
               WHERE s.seq > ?1 ORDER BY s.seq LIMIT ?2)
             UNION ALL
             SELECT * FROM (
               SELECT seq, 1, 0, event_ts, event_id, event_type, session_id, body,
                      workflow_id, task_id, backend, received_at, execution_id, source_id,
                      project_module, 0
               FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2)"
        ))
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("reading the log")?;
        // Columns by position (the order of the SELECT above): looking each
        // up by name cost a hash per column per row.
        let mut samples = Vec::new();
        let mut events = Vec::new();
        for r in &rows {
            if r.get::<i64, _>(1) == 0 {
                samples.push(LogSample {
                    seq: r.get(0),
                    series_id: r.get(15),
                    ts_ms: r.get(2),
                    value: super::stored_value(r.get(3)),
                    component: r.get(4),
                    metric_name: r.get(5),
                    kind: super::parse_kind(r.get::<&str, _>(6)),
                    labels: r.get(7),
                });
            } else {
                events.push(StoredEvent {
                    seq: r.get(0),
                    event_ts: r.get(3),
                    event_id: r.get(4),
                    event_type: r.get(5),
                    session_id: r.get(6),
                    body: r.get(7),
                    workflow_id: r.get(8),
                    task_id: r.get(9),
                    backend: r.get(10),
                    received_ms: r.get(11),
                    execution_id: r.get(12),
                    source_id: r.get(13),
                    project_module: r.get(14),
                });
            }
        }
        samples.sort_unstable_by_key(|s| s.seq);
        events.sort_unstable_by_key(|e| e.seq);
        Ok(LogItems::merge(samples, events, limit as usize))
    }

    async fn try_lease(&self, _name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(Some(Box::new(LocalLease)))
    }

    async fn open_cursor(
        &self,
        publisher: &str,
        start_seq: i64,
        now_ms: i64,
    ) -> Result<PublisherCursor, StoreError> {
        sqlx::query(
            "INSERT INTO publisher_cursors (publisher, cursor_seq, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (publisher) DO NOTHING",
        )
        .bind(publisher)
        .bind(start_seq)
        .bind(now_ms)
        .execute(&self.pool)
        .await
        .context("opening a publisher cursor")?;
        let row: CursorRecord = sqlx::query_as(
            "SELECT publisher, cursor_seq, delivered, dead_lettered, last_success_at, last_error, last_error_at
             FROM publisher_cursors WHERE publisher = ?",
        )
        .bind(publisher)
        .fetch_one(&self.pool)
        .await
        .context("reading a publisher cursor")?;
        Ok(row.into())
    }

    async fn advance_cursor(
        &self,
        publisher: &str,
        to_seq: i64,
        delivered: i64,
        dead: &[DeadLetter],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning a cursor update")?;
        for d in dead {
            sqlx::query(
                "INSERT INTO dead_letters (publisher, seq, item, reason, created_at) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(publisher)
            .bind(d.seq)
            .bind(&d.item)
            .bind(&d.reason)
            .bind(now_ms)
            .execute(&mut *tx)
            .await
            .context("recording a dead letter")?;
        }
        sqlx::query(
            "UPDATE publisher_cursors SET cursor_seq = MAX(cursor_seq, ?), delivered = delivered + ?,
               dead_lettered = dead_lettered + ?, last_success_at = ?, last_error = NULL, updated_at = ?
             WHERE publisher = ?",
        )
        .bind(to_seq)
        .bind(delivered)
        .bind(dead.len() as i64)
        .bind(now_ms)
        .bind(now_ms)
        .bind(publisher)
        .execute(&mut *tx)
        .await
        .context("advancing a publisher cursor")?;
        tx.commit().await.context("committing a cursor update")?;
        Ok(())
    }

    async fn record_delivery_error(
        &self,
        publisher: &str,
        error: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE publisher_cursors SET last_error = ?, last_error_at = ?, updated_at = ? WHERE publisher = ?",
        )
        .bind(error)
        .bind(now_ms)
        .bind(now_ms)
        .bind(publisher)
        .execute(&self.pool)
        .await
        .context("recording a delivery error")?;
        Ok(())
    }

    async fn list_cursors(&self) -> Result<Vec<PublisherCursor>, StoreError> {
        let rows: Vec<CursorRecord> = sqlx::query_as(
            "SELECT publisher, cursor_seq, delivered, dead_lettered, last_success_at, last_error, last_error_at
             FROM publisher_cursors ORDER BY publisher",
        )
        .fetch_all(&self.pool)
        .await
        .context("listing publisher cursors")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn dead_letters(
        &self,
        publisher: &str,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, publisher, seq, item, reason, created_at FROM dead_letters
             WHERE publisher = ? AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(publisher)
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("listing dead letters")?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get("id"),
                publisher: r.get("publisher"),
                seq: r.get("seq"),
                item: r.get("item"),
                reason: r.get("reason"),
                created_ms: r.get("created_at"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a new database file of its own, removed with the returned guard.
    struct TempDb(std::path::PathBuf);
    impl Drop for TempDb {
        fn drop(&mut self) {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
            }
        }
    }
    async fn temp_store(name: &str) -> (SqliteStore, TempDb) {
        let path = std::env::temp_dir().join(format!(
            "vigil-sqlite-{}-{name}-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        (store, TempDb(path))
    }

    /// SQLite's plan for an event listing: the index (or scan) it reads.
    async fn plan(store: &SqliteStore, q: &EventQuery) -> String {
        let sql = format!("EXPLAIN QUERY PLAN {}", events_query_sql(q));
        let rows: Vec<(i64, i64, i64, String)> = bind_event_query(sqlx::query_as(&sql), q)
            .fetch_all(&store.pool)
            .await
            .unwrap();
        rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
    }

    #[tokio::test]
    async fn event_listings_read_the_index_of_the_filter_they_give() {
        let (store, _db) = temp_store("plan").await;
        let scoped = |set: fn(&mut EventQuery)| {
            let mut q = EventQuery::default();
            set(&mut q);
            q
        };
        type Setter = fn(&mut EventQuery);
        // The blocks holding the scope's value, then their events by seq.
        const KEYS: &str = "SEARCH k USING PRIMARY KEY (kind=? AND value=? AND block>?); \
                            SEARCH e USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)";
        let cases: [(Setter, &str); 9] = [
            (|q| q.task_id = Some("task.1".into()), "events_task"),
            (|q| q.event_types = vec!["TaskFailed".into()], "events_type"),
            (|q| q.session_id = Some("s".into()), KEYS),
            (|q| q.workflow_id = Some("w".into()), KEYS),
            (|q| q.execution_id = Some("e".into()), KEYS),
            (|q| q.source_id = Some("s".into()), KEYS),
            (|q| q.project_module = Some("p".into()), KEYS),
            // A time range reads the events of the blocks it overlaps.
            (|q| q.start = Some(1.0), "rowid>?"),
            (|q| q.end = Some(1.0), "rowid<?"),
        ];
        for (set, index) in cases {
            let q = scoped(set);
            let plan = plan(&store, &q).await;
            assert!(plan.contains(index), "{q:?}: planned {plan}");
            // Blocks in order and events by seq within them: no sort.
            assert!(!plan.contains("TEMP B-TREE"), "{q:?}: planned {plan}");
        }
        // An unfiltered listing walks the log by seq.
        let plan = plan(&store, &EventQuery::default()).await;
        assert!(plan.contains("PRIMARY KEY"), "planned {plan}");
    }

    /// Parses `body` as an events request and commits it (received at 1 ms).
    async fn store_events(store: &SqliteStore, body: &[u8]) {
        let events = crate::events::parse_events(body, false, 100, 0)
            .unwrap()
            .events;
        store
            .commit(&WriteBatch {
                events,
                events_received_ms: 1,
                ..WriteBatch::default()
            })
            .await
            .unwrap();
    }

    /// The ids of the events `q` lists (at most 10), run together.
    async fn listed_ids(store: &SqliteStore, q: EventQuery) -> String {
        let listed: Vec<String> = store
            .list_events(&EventQuery { limit: 10, ..q })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_id)
            .collect();
        listed.join("")
    }

    /// Events of one request per block (the log counter moved a block on
    /// between them), with times out of order between blocks.
    async fn events_in_blocks(store: &SqliteStore, events: &[(&str, f64, &str, &str)]) {
        for (id, time, session, workflow) in events {
            sqlx::query("UPDATE sqlite_sequence SET seq = seq + 5000 WHERE name = 'samples'")
                .execute(&store.pool)
                .await
                .unwrap();
            let body = format!(
                r#"[{{"event_id":"{id}","event_type":"TaskStarted","event_time":{time},
                     "session_id":"{session}","workflow_id":"{workflow}",
                     "attributes":{{"source_id":"src-{session}"}}}}]"#
            );
            store_events(store, body.as_bytes()).await;
        }
    }

    #[tokio::test]
    async fn block_indexed_scopes_and_times_find_every_event_and_only_those() {
        let (store, _db) = temp_store("blocks").await;
        events_in_blocks(
            &store,
            &[
                ("a", 100.0, "s1", "w1"),
                ("b", 300.0, "s2", "w1"),
                // a late event: its block's times lie before the last block's
                ("c", 50.0, "s1", "w2"),
                ("d", 200.0, "s2", "w2"),
                ("e", 400.0, "s1", "w1"),
            ],
        )
        .await;
        let ids = |q: EventQuery| listed_ids(&store, q);
        let some = |s: &str| Some(s.to_string());
        let q = EventQuery::default;
        assert_eq!(
            ids(EventQuery {
                session_id: some("s1"),
                ..q()
            })
            .await,
            "ace"
        );
        assert_eq!(
            ids(EventQuery {
                workflow_id: some("w2"),
                ..q()
            })
            .await,
            "cd"
        );
        assert_eq!(
            ids(EventQuery {
                source_id: some("src-s2"),
                ..q()
            })
            .await,
            "bd"
        );
        assert_eq!(
            ids(EventQuery {
                session_id: some("none"),
                ..q()
            })
            .await,
            ""
        );
        let both = EventQuery {
            session_id: some("s2"),
            workflow_id: some("w2"),
            ..q()
        };
        assert_eq!(ids(both).await, "d");
        assert_eq!(
            ids(EventQuery {
                start: Some(150.0),
                ..q()
            })
            .await,
            "bde"
        );
        assert_eq!(
            ids(EventQuery {
                end: Some(150.0),
                ..q()
            })
            .await,
            "ac"
        );
        assert_eq!(
            ids(EventQuery {
                end: Some(10.0),
                ..q()
            })
            .await,
            ""
        );
        assert_eq!(
            ids(EventQuery {
                start: Some(1000.0),
                ..q()
            })
            .await,
            ""
        );
        let window = EventQuery {
            start: Some(60.0),
            end: Some(250.0),
            ..q()
        };
        assert_eq!(ids(window).await, "ad");
        let window = EventQuery {
            session_id: some("s1"),
            start: Some(40.0),
            end: Some(60.0),
            ..q()
        };
        assert_eq!(ids(window).await, "c");
        // A cursor inside the listing: the rest, in the same order.
        let first = store
            .list_events(&EventQuery { limit: 10, ..q() })
            .await
            .unwrap();
        let after = EventQuery {
            session_id: some("s1"),
            after_seq: first[0].seq,
            ..q()
        };
        assert_eq!(ids(after).await, "ce");
        let after = EventQuery {
            start: Some(150.0),
            after_seq: first[1].seq,
            ..q()
        };
        assert_eq!(ids(after).await, "de");

        // Retention drops the blocks it emptied, and only those.
        let blocks = |store: &SqliteStore| {
            let pool = store.pool.clone();
            async move {
                let n: (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT COUNT(*) FROM event_blocks), (SELECT COUNT(*) FROM event_keys)",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                n
            }
        };
        assert_eq!(blocks(&store).await, (5, 15));
        assert_eq!(store.delete_events_before(2, 2).await.unwrap(), 2);
        assert_eq!(blocks(&store).await, (3, 9));
        assert_eq!(
            ids(EventQuery {
                session_id: some("s1"),
                ..q()
            })
            .await,
            "ce"
        );
        assert_eq!(
            ids(EventQuery {
                end: Some(150.0),
                ..q()
            })
            .await,
            "c"
        );
        assert_eq!(store.delete_events_before(2, 10).await.unwrap(), 3);
        assert_eq!(blocks(&store).await, (0, 0));
    }

    #[tokio::test]
    async fn events_stored_before_the_block_indexes_are_found_after_the_upgrade() {
        let path = std::env::temp_dir().join(format!(
            "vigil-sqlite-{}-upgrade-{}.db",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        let _db = TempDb(path.clone());
        let url = format!("sqlite://{}", path.display());
        // The schema as it was before the block indexes, with events in it.
        {
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::from_str(&url)
                    .unwrap()
                    .create_if_missing(true),
            )
            .await
            .unwrap();
            let mut before = sqlx::migrate!("../migrations/sqlite");
            before.migrations = before
                .migrations
                .iter()
                .filter(|m| m.version < 20261206000001)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            before.run(&pool).await.unwrap();
            for (seq, id, ts, session) in [
                (3, "a", 10.0, "s1"),
                (5000, "b", 20.0, "s2"),
                (9000, "c", 5.0, "s1"),
            ] {
                sqlx::query(
                    "INSERT INTO events (seq, event_id, event_type, event_ts, session_id, body, received_at)
                     VALUES (?, ?, 'TaskStarted', ?, ?, '{}', 1)",
                )
                .bind(seq)
                .bind(id)
                .bind(ts)
                .bind(session)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteStore::open(&url).await.unwrap();
        let ids = |q: EventQuery| listed_ids(&store, q);
        let q = EventQuery::default;
        assert_eq!(
            ids(EventQuery {
                session_id: Some("s1".into()),
                ..q()
            })
            .await,
            "ac"
        );
        assert_eq!(
            ids(EventQuery {
                start: Some(8.0),
                ..q()
            })
            .await,
            "ab"
        );
        assert_eq!(
            ids(EventQuery {
                end: Some(8.0),
                ..q()
            })
            .await,
            "c"
        );
    }

    #[tokio::test]
    async fn event_filters_keep_their_meaning_when_only_some_are_given() {
        let (store, _db) = temp_store("filters").await;
        store_events(&store, br#"[{"event_id":"a","event_type":"TaskStarted","event_time":100.0,"task_id":"t1","session_id":"s1"},
                 {"event_id":"b","event_type":"TaskFailed","event_time":200.0,"task_id":"t1","session_id":"s2"},
                 {"event_id":"c","event_type":"TaskFailed","event_time":300.0,"task_id":"t2","session_id":"s2"}]"#).await;
        let ids = |q: EventQuery| {
            let store = &store;
            async move {
                store
                    .list_events(&EventQuery { limit: 10, ..q })
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| e.event_id)
                    .collect::<Vec<_>>()
            }
        };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(ids(EventQuery::default()).await, ["a", "b", "c"]);
        let failed = vec!["TaskFailed".to_string()];
        assert_eq!(
            ids(EventQuery {
                event_types: failed.clone(),
                ..EventQuery::default()
            })
            .await,
            ["b", "c"]
        );
        assert_eq!(
            ids(EventQuery {
                event_types: failed,
                task_id: some("t1"),
                ..EventQuery::default()
            })
            .await,
            ["b"]
        );
        assert_eq!(
            ids(EventQuery {
                session_id: some("s2"),
                end: Some(300.0),
                ..EventQuery::default()
            })
            .await,
            ["b"]
        );
        assert_eq!(
            ids(EventQuery {
                start: Some(150.0),
                after_seq: 0,
                ..EventQuery::default()
            })
            .await,
            ["b", "c"]
        );
    }
}
