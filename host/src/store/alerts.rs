//! Storage of alerting state ([`AlertStore`]): notification channels and the
//! delivery record. One SQL text serves both backends (`$N` placeholders,
//! which SQLite accepts too), implemented for each pool by [`alert_store!`].

use async_trait::async_trait;

use super::StoreError;

/// A notification channel as stored. `config` and `secrets` are JSON objects.
#[derive(Clone, PartialEq, sqlx::FromRow)]
pub struct ChannelRow {
    pub id: String,
    pub name: String,
    pub plugin: String,
    pub config: String,
    /// Write-only settings; never returned by the API, never logged.
    pub secrets: String,
    pub send_resolved: bool,
    pub enabled: bool,
    #[sqlx(rename = "created_at")]
    pub created_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_ms: i64,
}

impl std::fmt::Debug for ChannelRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("plugin", &self.plugin)
            .field("config", &self.config)
            .field("secrets", &"***")
            .finish()
    }
}

/// One delivery: a notification to a channel, and its attempts.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeliveryRow {
    /// Creation order (the paging key); assigned by the store.
    pub n: i64,
    pub id: String,
    pub channel_id: String,
    pub rule_id: Option<String>,
    pub group_key: String,
    /// `notification` or `test`.
    pub kind: String,
    /// `pending`, `sent`, `retrying`, `failed` or `silenced`.
    pub status: String,
    pub attempts: i64,
    pub response_status: Option<i64>,
    pub last_error: Option<String>,
    /// JSON object `{id, detail}` of the receiver's receipt.
    pub receipt: Option<String>,
    /// JSON array of the alerts' fingerprints and statuses.
    pub alerts: String,
    /// The notification as JSON (Alertmanager webhook shape), secrets redacted.
    pub payload: String,
    #[sqlx(rename = "created_at")]
    pub created_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_ms: i64,
    #[sqlx(rename = "next_attempt_at")]
    pub next_attempt_ms: Option<i64>,
}

/// Delivery listing filters; rows newest first, before `before_n` (0: none).
#[derive(Clone, Debug, Default)]
pub struct DeliveryQuery {
    pub channel_id: Option<String>,
    pub rule_id: Option<String>,
    pub status: Option<String>,
    /// Creation time range, `[start, end)`.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub before_n: i64,
    pub limit: u32,
}

/// Channels and deliveries.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Inserts a channel; `false` when its name is taken (nothing written).
    async fn insert_channel(&self, row: &ChannelRow) -> Result<bool, StoreError>;
    async fn get_channel(&self, id: &str) -> Result<Option<ChannelRow>, StoreError>;
    async fn list_channels(&self) -> Result<Vec<ChannelRow>, StoreError>;
    /// Replaces a channel; `Ok(false)` when it does not exist. A name taken by
    /// another channel is a database error the caller checks for first.
    async fn update_channel(&self, row: &ChannelRow) -> Result<bool, StoreError>;
    async fn delete_channel(&self, id: &str) -> Result<bool, StoreError>;
    async fn channel_by_name(&self, name: &str) -> Result<Option<ChannelRow>, StoreError>;

    /// Inserts a delivery; returns its `n`.
    async fn insert_delivery(&self, row: &DeliveryRow) -> Result<i64, StoreError>;
    /// Records an attempt's outcome (status, attempts, response, error,
    /// receipt, next attempt) of delivery `id`.
    async fn update_delivery(&self, row: &DeliveryRow) -> Result<(), StoreError>;
    async fn get_delivery(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError>;
    async fn list_deliveries(&self, q: &DeliveryQuery) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Notifications still to attempt (`pending`, `retrying`) due by
    /// `now_ms`, oldest first (channel tests are attempted by their request).
    async fn due_deliveries(&self, now_ms: i64, limit: u32)
        -> Result<Vec<DeliveryRow>, StoreError>;
}

pub(crate) const CHANNEL_COLUMNS: &str =
    "id, name, plugin, config, secrets, send_resolved, enabled, created_at, updated_at";
pub(crate) const DELIVERY_COLUMNS: &str =
    "n, id, channel_id, rule_id, group_key, kind, status, attempts,
    response_status, last_error, receipt, alerts, payload, created_at, updated_at, next_attempt_at";

/// Inserts a delivery and returns its `n`; bound by [`bind_delivery!`].
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO alert_deliveries (id, channel_id, rule_id,
       group_key, kind, status, attempts, response_status, last_error, receipt, alerts, payload,
       created_at, updated_at, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     RETURNING n";

/// Binds a delivery row to [`INSERT_DELIVERY`].
macro_rules! bind_delivery {
    ($query:expr, $row:expr) => {
        $query
            .bind(&$row.id)
            .bind(&$row.channel_id)
            .bind(&$row.rule_id)
            .bind(&$row.group_key)
            .bind(&$row.kind)
            .bind(&$row.status)
            .bind($row.attempts)
            .bind($row.response_status)
            .bind(&$row.last_error)
            .bind(&$row.receipt)
            .bind(&$row.alerts)
            .bind(&$row.payload)
            .bind($row.created_ms)
            .bind($row.updated_ms)
            .bind($row.next_attempt_ms)
    };
}

pub(crate) use bind_delivery;

/// Implements [`AlertStore`] for a store type with a `pool` field.
macro_rules! alert_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::alerts::AlertStore for $store {
            async fn insert_channel(
                &self,
                row: &$crate::store::alerts::ChannelRow,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query(
                    "INSERT INTO notification_channels (id, name, plugin, config, secrets,
                       send_resolved, enabled, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(&row.id)
                .bind(&row.name)
                .bind(&row.plugin)
                .bind(&row.config)
                .bind(&row.secrets)
                .bind(row.send_resolved)
                .bind(row.enabled)
                .bind(row.created_ms)
                .bind(row.updated_ms)
                .execute(&self.pool)
                .await
                .context("inserting a notification channel")?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_channel(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::alerts::ChannelRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM notification_channels WHERE id = $1",
                    $crate::store::alerts::CHANNEL_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .context("reading a notification channel")
            }

            async fn channel_by_name(
                &self,
                name: &str,
            ) -> Result<Option<$crate::store::alerts::ChannelRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM notification_channels WHERE name = $1",
                    $crate::store::alerts::CHANNEL_COLUMNS
                ))
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .context("reading a notification channel by name")
            }

            async fn list_channels(
                &self,
            ) -> Result<Vec<$crate::store::alerts::ChannelRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM notification_channels ORDER BY name",
                    $crate::store::alerts::CHANNEL_COLUMNS
                ))
                .fetch_all(&self.pool)
                .await
                .context("listing notification channels")
            }

            async fn update_channel(
                &self,
                row: &$crate::store::alerts::ChannelRow,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query(
                    "UPDATE notification_channels SET name = $2, plugin = $3, config = $4,
                       secrets = $5, send_resolved = $6, enabled = $7, updated_at = $8
                     WHERE id = $1",
                )
                .bind(&row.id)
                .bind(&row.name)
                .bind(&row.plugin)
                .bind(&row.config)
                .bind(&row.secrets)
                .bind(row.send_resolved)
                .bind(row.enabled)
                .bind(row.updated_ms)
                .execute(&self.pool)
                .await
                .context("updating a notification channel")?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_channel(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query("DELETE FROM notification_channels WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .context("deleting a notification channel")?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_delivery(
                &self,
                row: &$crate::store::alerts::DeliveryRow,
            ) -> Result<i64, $crate::store::StoreError> {
                use $crate::store::Context;
                let n: i64 = $crate::store::alerts::bind_delivery!(
                    sqlx::query_scalar($crate::store::alerts::INSERT_DELIVERY),
                    row
                )
                .fetch_one(&self.pool)
                .await
                .context("recording a delivery")?;
                Ok(n)
            }

            async fn update_delivery(
                &self,
                row: &$crate::store::alerts::DeliveryRow,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query(
                    "UPDATE alert_deliveries SET status = $2, attempts = $3, response_status = $4,
                       last_error = $5, receipt = $6, updated_at = $7, next_attempt_at = $8
                     WHERE id = $1",
                )
                .bind(&row.id)
                .bind(&row.status)
                .bind(row.attempts)
                .bind(row.response_status)
                .bind(&row.last_error)
                .bind(&row.receipt)
                .bind(row.updated_ms)
                .bind(row.next_attempt_ms)
                .execute(&self.pool)
                .await
                .context("recording a delivery attempt")?;
                Ok(())
            }

            async fn get_delivery(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::alerts::DeliveryRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM alert_deliveries WHERE id = $1",
                    $crate::store::alerts::DELIVERY_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .context("reading a delivery")
            }

            async fn list_deliveries(
                &self,
                q: &$crate::store::alerts::DeliveryQuery,
            ) -> Result<Vec<$crate::store::alerts::DeliveryRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM alert_deliveries
                     WHERE ($1 IS NULL OR channel_id = $1)
                       AND ($2 IS NULL OR rule_id = $2)
                       AND ($3 IS NULL OR status = $3)
                       AND ($4 IS NULL OR created_at >= $4)
                       AND ($5 IS NULL OR created_at < $5)
                       AND ($6 = 0 OR n < $6)
                     ORDER BY n DESC LIMIT $7",
                    $crate::store::alerts::DELIVERY_COLUMNS
                ))
                .bind(&q.channel_id)
                .bind(&q.rule_id)
                .bind(&q.status)
                .bind(q.start_ms)
                .bind(q.end_ms)
                .bind(q.before_n)
                .bind(i64::from(q.limit))
                .fetch_all(&self.pool)
                .await
                .context("listing deliveries")
            }

            async fn due_deliveries(
                &self,
                now_ms: i64,
                limit: u32,
            ) -> Result<Vec<$crate::store::alerts::DeliveryRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM alert_deliveries
                     WHERE status IN ('pending', 'retrying') AND kind = 'notification'
                       AND (next_attempt_at IS NULL OR next_attempt_at <= $1)
                     ORDER BY n LIMIT $2",
                    $crate::store::alerts::DELIVERY_COLUMNS
                ))
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .context("reading due deliveries")
            }
        }
    };
}

pub(crate) use alert_store;
