//! PostgreSQL backend: for production and for several replicas sharing one database.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Row, Transaction};

use super::{AggregateAt, RetentionRule, RetentionRuleRecord};
use super::{
    Committed, Component, ComponentRecord, Context, CursorRecord, DeadLetter, EventQuery,
    LatestValue, Lease, LogItems, LogSampleRecord, PublisherCursor, SampleQuery, SampleRecord,
    SeriesRecord, SeriesRef, Store, StoreError, StoredSample, StoredSeries, WriteBatch,
    COMPONENT_COLUMNS,
};
use crate::events::StoredEvent;

mod executions;

super::alerts::alert_store!(PostgresStore);
super::alert_rules::rule_store!(PostgresStore);

/// Advisory lock (bigint key, transaction scope) held while a transaction
/// takes sequence numbers for the log: samples and events then commit in
/// sequence order, even with several replicas, so a reader that has seen
/// `seq` can never later find a smaller one appear.
const LOG_APPEND_LOCK: i64 = 0x5649_4749_4c00_0001;
/// Class of the session-scoped advisory locks that are leases (two-int keys,
/// so they never collide with `LOG_APPEND_LOCK`); the second key is
/// `hashtext(name)`.
const LEASE_CLASS: i32 = 0x5647_4c31;

async fn lock_log(tx: &mut Transaction<'_, Postgres>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOG_APPEND_LOCK)
        .execute(&mut **tx)
        .await
        .context("taking the log append lock")?;
    Ok(())
}

/// A lease held as a session advisory lock on a connection of its own: if
/// this replica dies or loses the database, PostgreSQL ends the session and
/// the lock goes with it.
struct PgLease {
    conn: PgConnection,
    name: String,
}

#[async_trait]
impl Lease for PgLease {
    async fn held(&mut self) -> bool {
        let check = sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'
               AND pid = pg_backend_pid() AND granted AND objsubid = 2
               AND classid = $1::int4::oid AND objid = hashtext($2)::oid)",
        )
        .bind(LEASE_CLASS)
        .bind(&self.name)
        .fetch_one(&mut self.conn);
        matches!(
            tokio::time::timeout(Duration::from_secs(3), check).await,
            Ok(Ok(true))
        )
    }

    async fn release(mut self: Box<Self>) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
            .bind(LEASE_CLASS)
            .bind(&self.name)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}

pub struct PostgresStore {
    pool: PgPool,
    /// Connections of failed lease attempts, kept for the next attempt so a
    /// standby replica does not connect anew every second.
    spare_lease_conns: parking_lot::Mutex<Vec<PgConnection>>,
}

/// Spare lease connections kept at most.
const SPARE_LEASE_CONNS: usize = 4;

impl PostgresStore {
    /// Connects and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(3))
            .test_before_acquire(true)
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PostgresStore {
            pool,
            spare_lease_conns: parking_lot::Mutex::new(Vec::new()),
        })
    }
}

fn resolve(series: SeriesRef, ids: &[i64]) -> i64 {
    match series {
        SeriesRef::Known(id) => id,
        SeriesRef::New(i) => ids[i],
    }
}

async fn fetch_events<'e, E>(exec: E, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let rows: Vec<StoredEvent> = sqlx::query_as(
        "SELECT seq, event_id, event_type, event_ts, session_id, workflow_id, task_id,
               backend, execution_id, source_id, project_module, body, received_at
             FROM events
             WHERE seq > $1
               AND (cardinality($2::text[]) = 0 OR event_type = ANY($2))
               AND ($3::text IS NULL OR session_id = $3)
               AND ($4::text IS NULL OR workflow_id = $4)
               AND ($5::text IS NULL OR task_id = $5)
               AND ($6::float8 IS NULL OR event_ts >= $6)
               AND ($7::float8 IS NULL OR event_ts < $7)
               AND ($9::text IS NULL OR execution_id = $9)
               AND ($10::text IS NULL OR source_id = $10)
               AND ($11::text IS NULL OR project_module = $11)
             ORDER BY seq LIMIT $8",
    )
    .bind(q.after_seq)
    .bind(&q.event_types)
    .bind(&q.session_id)
    .bind(&q.workflow_id)
    .bind(&q.task_id)
    .bind(q.start)
    .bind(q.end)
    .bind(i64::from(q.limit))
    .bind(&q.execution_id)
    .bind(&q.source_id)
    .bind(&q.project_module)
    .fetch_all(exec)
    .await
    .context("listing events")?;
    Ok(rows)
}

/// Appends events (the caller holds the log append lock), in batch order.
pub(super) async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[crate::events::NewEvent],
    received_ms: i64,
) -> Result<Vec<Option<i64>>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut ts = Vec::with_capacity(events.len());
    let mut sessions = Vec::with_capacity(events.len());
    let mut workflows = Vec::with_capacity(events.len());
    let mut tasks = Vec::with_capacity(events.len());
    let mut backends = Vec::with_capacity(events.len());
    let mut executions = Vec::with_capacity(events.len());
    let mut sources = Vec::with_capacity(events.len());
    let mut projects = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for e in events {
        ids.push(e.event_id.as_str());
        types.push(e.event_type.as_str());
        ts.push(e.event_ts);
        sessions.push(e.session_id.as_deref());
        workflows.push(e.workflow_id.as_deref());
        tasks.push(e.task_id.as_deref());
        backends.push(e.backend.as_deref());
        executions.push(e.execution_id.as_deref());
        sources.push(e.source_id.as_deref());
        projects.push(e.project_module.as_deref());
        bodies.push(e.body.as_str());
    }
    let rows = sqlx::query(
        "INSERT INTO events (event_id, event_type, event_ts, session_id, workflow_id, task_id,
           backend, execution_id, source_id, project_module, body, received_at)
         SELECT u.id, u.ty, u.ts, u.s, u.w, u.t, u.b, u.x, u.src, u.p, u.body, $12
         FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
              WITH ORDINALITY AS u(id, ty, ts, s, w, t, b, x, src, p, body, n)
         ORDER BY u.n
         ON CONFLICT (event_id) DO NOTHING RETURNING seq, event_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&ts)
    .bind(&sessions)
    .bind(&workflows)
    .bind(&tasks)
    .bind(&backends)
    .bind(&executions)
    .bind(&sources)
    .bind(&projects)
    .bind(&bodies)
    .bind(received_ms)
    .fetch_all(&mut **tx)
    .await
    .context("appending events")?;
    let inserted = rows
        .iter()
        .map(|r| (r.get::<String, _>(1), r.get::<i64, _>(0)))
        .collect();
    Ok(super::assign_event_seqs(events, inserted))
}

/// Creates (or revives) every new series of a commit in one statement.
async fn insert_series(
    tx: &mut Transaction<'_, Postgres>,
    new: &[super::NewSeries],
) -> Result<Vec<i64>, StoreError> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let column = |f: fn(&super::NewSeries) -> &str| -> Vec<&str> { new.iter().map(f).collect() };
    let returned: Vec<(i64, String, String, String)> = sqlx::query_as(
        "INSERT INTO series (component, metric_name, metric_type, labels, help_text, unit)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
         ON CONFLICT (component, metric_name, labels) DO UPDATE SET
           deleted = FALSE, metric_type = EXCLUDED.metric_type,
           help_text = EXCLUDED.help_text, unit = EXCLUDED.unit, state = NULL
         RETURNING id, component, metric_name, labels",
    )
    .bind(column(|s| &s.component))
    .bind(column(|s| &s.metric_name))
    .bind(column(|s| s.kind.as_str()))
    .bind(column(|s| &s.labels))
    .bind(column(|s| &s.help))
    .bind(column(|s| &s.unit))
    .fetch_all(&mut **tx)
    .await
    .context("creating series")?;
    super::new_series_ids(new, returned)
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("pinging PostgreSQL")?;
        Ok(())
    }

    async fn commit(&self, batch: &WriteBatch) -> Result<Committed, StoreError> {
        let mut tx = self.pool.begin().await.context("beginning a write")?;
        let ids = insert_series(&mut tx, &batch.new_series).await?;
        let n = batch.samples.len();
        let (mut series, mut ts, mut values) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for row in &batch.samples {
            series.push(resolve(row.series, &ids));
            ts.push(row.ts_ms);
            values.push(row.value);
        }
        let mut last_seq = 0;
        if n > 0 || !batch.events.is_empty() {
            lock_log(&mut tx).await?;
        }
        if n > 0 {
            last_seq = sqlx::query_scalar::<_, Option<i64>>(
                "WITH appended AS (
                   INSERT INTO samples (series_id, ts, value)
                   SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::float8[])
                   RETURNING seq)
                 SELECT MAX(seq) FROM appended",
            )
            .bind(&series)
            .bind(&ts)
            .bind(&values)
            .fetch_one(&mut *tx)
            .await
            .context("appending samples")?
            .unwrap_or(0);
        }
        for (s, state) in &batch.states {
            sqlx::query("UPDATE series SET state = $1 WHERE id = $2")
                .bind(state)
                .bind(resolve(*s, &ids))
                .execute(&mut *tx)
                .await
                .context("checkpointing an aggregate")?;
        }
        for c in &batch.components {
            sqlx::query(
                "INSERT INTO components (name, component_type, registered_at, last_heartbeat, updated_at)
                 VALUES ($1, $2, $3, $3, $3)
                 ON CONFLICT (name) DO UPDATE SET last_heartbeat = EXCLUDED.last_heartbeat",
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
             WHERE NOT s.deleted ORDER BY s.id",
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
        let ids: Vec<i64> = values.iter().map(|v| v.series_id).collect();
        let bits: Vec<i64> = values.iter().map(|v| v.value.to_bits() as i64).collect();
        let ts: Vec<i64> = values.iter().map(|v| v.ts_ms).collect();
        sqlx::query(
            "UPDATE series SET last_bits = u.bits, last_ts = u.ts
             FROM UNNEST($1::int8[], $2::int8[], $3::int8[]) AS u(id, bits, ts)
             WHERE series.id = u.id",
        )
        .bind(&ids)
        .bind(&bits)
        .bind(&ts)
        .execute(&self.pool)
        .await
        .context("saving latest values")?;
        Ok(())
    }

    async fn set_checkpoint_seq(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE ingest_checkpoint SET checkpoint_seq = GREATEST(checkpoint_seq, $1) WHERE id = 1",
        )
        .bind(seq)
        .execute(&self.pool)
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
        let rows = sqlx::query(
            "SELECT DISTINCT ON (series_id) series_id, value, ts FROM samples
             WHERE seq > $1 ORDER BY series_id, seq DESC",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await
        .context("replaying samples after the checkpoint")?;
        Ok(rows
            .iter()
            .map(|r| LatestValue {
                series_id: r.get("series_id"),
                value: r.get("value"),
                ts_ms: r.get("ts"),
            })
            .collect())
    }

    async fn load_since(
        &self,
        series_ids: &[i64],
        since_ms: i64,
    ) -> Result<Vec<StoredSample>, StoreError> {
        let rows: Vec<SampleRecord> = sqlx::query_as(
            "SELECT seq, series_id, ts, value FROM samples
             WHERE series_id = ANY($1) AND ts >= $2 ORDER BY seq",
        )
        .bind(series_ids)
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
        // One snapshot: a commit writes the checkpoints and the samples
        // together, so each checkpoint is exactly its samples' fold.
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning an aggregate read")?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .context("beginning an aggregate read")?;
        let states: Vec<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, state FROM series WHERE id = ANY($1)")
                .bind(series_ids)
                .fetch_all(&mut *tx)
                .await
                .context("reading aggregate checkpoints")?;
        let after: Vec<SampleRecord> = sqlx::query_as(
            "SELECT seq, series_id, ts, value FROM samples
             WHERE series_id = ANY($1) AND seq > $2 ORDER BY seq",
        )
        .bind(series_ids)
        .bind(after_seq)
        .fetch_all(&mut *tx)
        .await
        .context("reading observations after a cursor")?;
        let window: Vec<SampleRecord> = sqlx::query_as(
            "SELECT s.seq, s.series_id, s.ts, s.value FROM samples s JOIN series r ON r.id = s.series_id
             WHERE s.series_id = ANY($1) AND s.seq <= $2 AND s.ts >= $3
               AND r.metric_type = 'summary' ORDER BY s.seq",
        )
        .bind(series_ids)
        .bind(after_seq)
        .bind(window_from_ms)
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
             WHERE ($1::text IS NULL OR s.component = $1) AND ($2::text IS NULL OR s.metric_name = $2)
               AND ($3::int8[] IS NULL OR s.id = ANY($3))
             ORDER BY s.id",
        )
        .bind(component)
        .bind(metric_name)
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .context("finding series")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn query_samples(&self, q: &SampleQuery) -> Result<Vec<StoredSample>, StoreError> {
        let order = if q.newest_first {
            "ts DESC, seq DESC"
        } else {
            "seq"
        };
        let sql = format!(
            "SELECT seq, series_id, ts, value FROM samples
             WHERE seq > $1
               AND ($2::int8[] IS NULL OR series_id = ANY($2))
               AND ($3::int8 IS NULL OR ts >= $3)
               AND ($4::int8 IS NULL OR ts < $4)
             ORDER BY {order} LIMIT $5"
        );
        let rows: Vec<SampleRecord> = sqlx::query_as(&sql)
            .bind(q.after_seq)
            .bind(q.series_ids.as_deref())
            .bind(q.start_ms)
            .bind(q.end_ms)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await
            .context("querying samples")?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn delete_series_of(&self, component: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE series SET deleted = TRUE, state = NULL WHERE component = $1 AND NOT deleted",
        )
        .bind(component)
        .execute(&self.pool)
        .await
        .context("deleting series")?;
        Ok(done.rows_affected())
    }

    async fn delete_samples_before(&self, before_ms: i64, limit: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples WHERE ts < $1 LIMIT $2)",
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
            "DELETE FROM samples WHERE seq IN (SELECT seq FROM samples WHERE ts < $1
               AND ($2::int8[] IS NULL OR series_id = ANY($2))
               AND NOT (series_id = ANY($3)) LIMIT $4)",
        )
        .bind(before_ms)
        .bind(only)
        .bind(except)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("deleting expired samples")?;
        Ok(done.rows_affected())
    }

    async fn set_retention_rule(&self, rule: &RetentionRule) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO retention_rules (scope, name, ttl_ms) VALUES ($1, $2, $3)
             ON CONFLICT (scope, name) DO UPDATE SET ttl_ms = EXCLUDED.ttl_ms",
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
               last_heartbeat, status, uri, runtime, labels, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $6)
             ON CONFLICT (name) DO UPDATE SET component_type = EXCLUDED.component_type,
               capabilities = EXCLUDED.capabilities, capacity = EXCLUDED.capacity,
               last_heartbeat = EXCLUDED.last_heartbeat, status = EXCLUDED.status,
               uri = COALESCE(EXCLUDED.uri, components.uri),
               runtime = COALESCE(EXCLUDED.runtime, components.runtime),
               labels = COALESCE(EXCLUDED.labels, components.labels),
               updated_at = EXCLUDED.updated_at
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
            "UPDATE components SET last_heartbeat = $1, updated_at = $1, status = 'ready'
             WHERE name = $2 RETURNING {COMPONENT_COLUMNS}"
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
        let sql = format!("SELECT {COMPONENT_COLUMNS} FROM components WHERE name = $1");
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
            "UPDATE components SET status = $1, updated_at = $2
             WHERE name = $3 AND ($4::text IS NULL OR component_type = $4)
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
        let done = sqlx::query(
            "DELETE FROM events WHERE seq IN (
               SELECT seq FROM (SELECT seq, received_at FROM events ORDER BY seq LIMIT $2) oldest
               WHERE received_at < $1)",
        )
        .bind(before_ms)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .context("deleting expired events")?;
        Ok(done.rows_affected())
    }

    async fn max_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar(
            "SELECT GREATEST((SELECT MAX(seq) FROM samples), (SELECT MAX(seq) FROM events))",
        )
        .fetch_one(&self.pool)
        .await
        .context("reading the log head")?;
        Ok(seq.unwrap_or(0))
    }

    async fn log_after(&self, seq: i64, limit: u32) -> Result<LogItems, StoreError> {
        // One snapshot for both tables, or an item committed between the two
        // reads could be skipped.
        let mut tx = self.pool.begin().await.context("beginning a log read")?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .context("beginning a log read")?;
        let rows: Vec<LogSampleRecord> = sqlx::query_as(
            "SELECT s.seq, s.series_id, s.ts, s.value, r.component, r.metric_name, r.metric_type,
                    r.labels
             FROM samples s JOIN series r ON r.id = s.series_id
             WHERE s.seq > $1 ORDER BY s.seq LIMIT $2",
        )
        .bind(seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .context("reading the log")?;
        let samples = rows.into_iter().map(Into::into).collect();
        let events = fetch_events(
            &mut *tx,
            &EventQuery {
                after_seq: seq,
                limit,
                ..EventQuery::default()
            },
        )
        .await?;
        tx.commit().await.context("ending a log read")?;
        Ok(LogItems::merge(samples, events, limit as usize))
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let spare = self.spare_lease_conns.lock().pop();
        let mut conn = match spare {
            Some(conn) => conn,
            None => {
                let options = self.pool.connect_options();
                PgConnection::connect_with(&options)
                    .await
                    .context("connecting for a lease")?
            }
        };
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(LEASE_CLASS)
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .context("taking a lease")?;
        if got {
            Ok(Some(Box::new(PgLease {
                conn,
                name: name.to_string(),
            })))
        } else {
            let mut spare = self.spare_lease_conns.lock();
            if spare.len() < SPARE_LEASE_CONNS {
                spare.push(conn);
            }
            Ok(None)
        }
    }

    async fn open_cursor(
        &self,
        publisher: &str,
        start_seq: i64,
        now_ms: i64,
    ) -> Result<PublisherCursor, StoreError> {
        sqlx::query(
            "INSERT INTO publisher_cursors (publisher, cursor_seq, updated_at) VALUES ($1, $2, $3)
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
             FROM publisher_cursors WHERE publisher = $1",
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
                "INSERT INTO dead_letters (publisher, seq, item, reason, created_at) VALUES ($1, $2, $3, $4, $5)",
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
            "UPDATE publisher_cursors SET cursor_seq = GREATEST(cursor_seq, $1), delivered = delivered + $2,
               dead_lettered = dead_lettered + $3, last_success_at = $4, last_error = NULL, updated_at = $5
             WHERE publisher = $6",
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
            "UPDATE publisher_cursors SET last_error = $1, last_error_at = $2, updated_at = $3 WHERE publisher = $4",
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
             WHERE publisher = $1 AND id > $2 ORDER BY id LIMIT $3",
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
