//! PostgreSQL: execution records and the log figures behind the gauges.
//! Execution events are appended under the log append lock, like every other
//! append, so sequence order stays commit order across replicas.

use async_trait::async_trait;
use sqlx::{Postgres, Transaction};

use super::{lock_log, PostgresStore};
use crate::events::NewEvent;
use crate::store::{
    Context, ExecutionQuery, ExecutionRow, ExecutionStore, ExecutionUpdate, LogStats, StateCount,
    StoreError,
};

const COLUMNS: &str = "n, id, backend, project_module, source_id, state, scheduler_ids, profile,
    attributes, state_times, run_record, created_at, updated_at, version";

/// Appends one event inside the caller's transaction (which holds the log
/// lock). `None`: its `event_id` was stored already.
async fn append_event(
    tx: &mut Transaction<'_, Postgres>,
    e: &NewEvent,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let seqs = super::insert_events(tx, std::slice::from_ref(e), now_ms).await?;
    Ok(seqs.into_iter().next().flatten())
}

#[async_trait]
impl ExecutionStore for PostgresStore {
    async fn insert_execution(
        &self,
        row: &ExecutionRow,
        event: &NewEvent,
    ) -> Result<Option<i64>, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning an execution write")?;
        // The log lock first, in the order every appender takes it.
        lock_log(&mut tx).await?;
        let inserted = sqlx::query(
            "INSERT INTO executions (id, backend, project_module, source_id, state,
               scheduler_ids, profile, attributes, state_times, run_record, created_at,
               updated_at, version)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&row.id)
        .bind(&row.backend)
        .bind(&row.project_module)
        .bind(&row.source_id)
        .bind(&row.state)
        .bind(&row.scheduler_ids)
        .bind(&row.profile)
        .bind(&row.attributes)
        .bind(&row.state_times)
        .bind(&row.run_record)
        .bind(row.created_ms)
        .bind(row.updated_ms)
        .bind(row.version)
        .execute(&mut *tx)
        .await
        .context("inserting an execution")?;
        if inserted.rows_affected() == 0 {
            return Ok(None);
        }
        let seq = append_event(&mut tx, event, row.created_ms).await?;
        tx.commit().await.context("committing an execution")?;
        Ok(Some(seq.unwrap_or(0)))
    }

    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM executions WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .context("reading an execution")
    }

    async fn list_executions(&self, q: &ExecutionQuery) -> Result<Vec<ExecutionRow>, StoreError> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM executions
             WHERE n > $1
               AND (cardinality($2::text[]) = 0 OR state = ANY($2))
               AND ($3::text IS NULL OR backend = $3)
               AND ($4::text IS NULL OR project_module = $4)
               AND ($5::text IS NULL OR source_id = $5)
               AND ($6::int8 IS NULL OR created_at >= $6)
               AND ($7::int8 IS NULL OR created_at < $7)
             ORDER BY n LIMIT $8"
        ))
        .bind(q.after_n)
        .bind(&q.states)
        .bind(&q.backend)
        .bind(&q.project_module)
        .bind(&q.source_id)
        .bind(q.start_ms)
        .bind(q.end_ms)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await
        .context("listing executions")
    }

    async fn update_execution(
        &self,
        row: &ExecutionRow,
        expected_version: i64,
        event: Option<&NewEvent>,
    ) -> Result<ExecutionUpdate, StoreError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .context("beginning an execution update")?;
        if event.is_some() {
            // Taken before the row lock, in the order every appender takes it.
            lock_log(&mut tx).await?;
        }
        let done = sqlx::query(
            "UPDATE executions SET state = $1, scheduler_ids = $2, profile = $3, attributes = $4,
               state_times = $5, run_record = $6, updated_at = $7, version = $8
             WHERE id = $9 AND version = $10",
        )
        .bind(&row.state)
        .bind(&row.scheduler_ids)
        .bind(&row.profile)
        .bind(&row.attributes)
        .bind(&row.state_times)
        .bind(&row.run_record)
        .bind(row.updated_ms)
        .bind(expected_version + 1)
        .bind(&row.id)
        .bind(expected_version)
        .execute(&mut *tx)
        .await
        .context("updating an execution")?;
        if done.rows_affected() == 0 {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT version FROM executions WHERE id = $1")
                    .bind(&row.id)
                    .fetch_optional(&mut *tx)
                    .await
                    .context("reading an execution version")?;
            return Ok(match exists {
                Some(_) => ExecutionUpdate::Stale,
                None => ExecutionUpdate::NotFound,
            });
        }
        let event_seq = match event {
            Some(e) => append_event(&mut tx, e, row.updated_ms).await?,
            None => None,
        };
        tx.commit()
            .await
            .context("committing an execution update")?;
        Ok(ExecutionUpdate::Updated { event_seq })
    }

    async fn execution_counts(&self) -> Result<Vec<StateCount>, StoreError> {
        sqlx::query_as(
            "SELECT backend, state, COUNT(*) AS count FROM executions
             GROUP BY backend, state ORDER BY backend, state",
        )
        .fetch_all(&self.pool)
        .await
        .context("counting executions")
    }
}

#[async_trait]
impl LogStats for PostgresStore {
    async fn items_after(&self, seq: i64, cap: i64) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM samples WHERE seq > $1 LIMIT $2) s)
                  + (SELECT COUNT(*) FROM (SELECT 1 FROM events WHERE seq > $1 LIMIT $2) e)",
        )
        .bind(seq)
        .bind(cap)
        .fetch_one(&self.pool)
        .await
        .context("counting log items behind a cursor")?;
        Ok(n.unwrap_or(0))
    }

    async fn first_after_ms(&self, seq: i64) -> Result<Option<i64>, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT seq, at FROM (
                 (SELECT seq, ts AS at FROM samples WHERE seq > $1 ORDER BY seq LIMIT 1)
                 UNION ALL
                 (SELECT seq, received_at AS at FROM events WHERE seq > $1 ORDER BY seq LIMIT 1)) f
             ORDER BY seq LIMIT 1",
        )
        .bind(seq)
        .fetch_optional(&self.pool)
        .await
        .context("reading the first log item behind a cursor")?;
        Ok(row.map(|(_, at)| at))
    }
}
