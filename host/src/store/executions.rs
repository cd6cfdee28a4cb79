//! Storage of execution records ([`ExecutionStore`]) for both backends
//! (`sqlite/executions.rs`, `postgres/executions.rs`). A row is written with
//! a version number; updates are compare-and-swap on it, so the state
//! machine (in `crate::executions`) decides every transition on the row it
//! read and a concurrent change makes the update report [`ExecutionUpdate::Stale`].
//! A state change and its `vigil.ExecutionStateChanged` event are written in
//! one transaction, the event taking its place in the log like any other.

use async_trait::async_trait;

use super::StoreError;
use crate::events::NewEvent;

/// An execution as stored. JSON columns hold objects (arrays for none).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct ExecutionRow {
    /// Creation order (the paging key); assigned by the store.
    pub n: i64,
    pub id: String,
    pub backend: String,
    pub project_module: Option<String>,
    pub source_id: Option<String>,
    pub state: String,
    /// JSON object of scheduler ids (`session_id`, `job_id`, …).
    pub scheduler_ids: String,
    /// JSON object: the backend profile.
    pub profile: String,
    /// JSON object: free attributes.
    pub attributes: String,
    /// JSON object: state name → unix milliseconds it was entered.
    pub state_times: String,
    /// JSON object `{"entries": [...], "dropped": N, "bytes": N}`.
    pub run_record: String,
    #[sqlx(rename = "created_at")]
    pub created_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_ms: i64,
    /// Bumped by every update.
    pub version: i64,
}

/// Listing filters; rows in creation order after `after_n`.
#[derive(Clone, Debug, Default)]
pub struct ExecutionQuery {
    /// Any of these states (empty: all).
    pub states: Vec<String>,
    pub backend: Option<String>,
    pub project_module: Option<String>,
    pub source_id: Option<String>,
    /// Creation time range, `[start, end)`.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub after_n: i64,
    pub limit: u32,
}

/// What a compare-and-swap update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionUpdate {
    /// Written; the seq of its event, if one was given.
    Updated {
        event_seq: Option<i64>,
    },
    /// The row's version is no longer the one read: read again and redo.
    Stale,
    NotFound,
}

/// Executions per backend and state.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct StateCount {
    pub backend: String,
    pub state: String,
    pub count: i64,
}

/// Execution records.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Inserts a new execution with its creation event, atomically. Returns
    /// the event's seq, or `None` when an execution with that id exists
    /// (nothing is written).
    async fn insert_execution(
        &self,
        row: &ExecutionRow,
        event: &NewEvent,
    ) -> Result<Option<i64>, StoreError>;
    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError>;
    async fn list_executions(&self, q: &ExecutionQuery) -> Result<Vec<ExecutionRow>, StoreError>;
    /// Replaces the row if its stored version is still `expected_version`
    /// (the new row's version must be `expected_version + 1`), appending
    /// `event` to the log in the same transaction.
    async fn update_execution(
        &self,
        row: &ExecutionRow,
        expected_version: i64,
        event: Option<&NewEvent>,
    ) -> Result<ExecutionUpdate, StoreError>;
    /// How many executions there are per backend and state.
    async fn execution_counts(&self) -> Result<Vec<StateCount>, StoreError>;
}
