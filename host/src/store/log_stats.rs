//! Read-only figures about the log for the operational gauges
//! ([`LogStats`]): how many items stand after a publisher's cursor and how
//! old the first of them is. Implemented for both backends in their files
//! `sqlite/executions.rs` and `postgres/executions.rs`.

use async_trait::async_trait;

use super::StoreError;

/// Figures about the log behind a cursor.
#[async_trait]
pub trait LogStats: Send + Sync {
    /// Samples and events with a sequence number above `seq`, counting at
    /// most `cap` of each (so a huge backlog costs a bounded scan).
    async fn items_after(&self, seq: i64, cap: i64) -> Result<i64, StoreError>;
    /// When the first item after `seq` entered the log, unix milliseconds
    /// (an event's receive time; a sample's timestamp); `None` when none.
    async fn first_after_ms(&self, seq: i64) -> Result<Option<i64>, StoreError>;
}
