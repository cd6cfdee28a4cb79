//! Storage of alert rules and of each rule's evaluator state
//! ([`RuleStore`]). One SQL text serves both backends (`$N` placeholders,
//! which SQLite accepts too), implemented for each pool by [`rule_store!`].
//! What a rule may say is checked in `alerts::rules`, not here.

use async_trait::async_trait;

use super::StoreError;

/// A rule as stored: `spec` is its JSON (the API's shape).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    pub name: String,
    pub spec: String,
    #[sqlx(rename = "created_at")]
    pub created_ms: i64,
    #[sqlx(rename = "updated_at")]
    pub updated_ms: i64,
}

/// Rules and their evaluator state.
#[async_trait]
pub trait RuleStore: Send + Sync {
    /// Inserts a rule; `false` when its name is taken (nothing written).
    async fn insert_rule(&self, row: &RuleRow) -> Result<bool, StoreError>;
    async fn get_rule(&self, id: &str) -> Result<Option<RuleRow>, StoreError>;
    async fn rule_by_name(&self, name: &str) -> Result<Option<RuleRow>, StoreError>;
    /// Every rule, by name.
    async fn list_rules(&self) -> Result<Vec<RuleRow>, StoreError>;
    /// Replaces a rule; `false` when it does not exist.
    async fn update_rule(&self, row: &RuleRow) -> Result<bool, StoreError>;
    /// Deletes a rule and its state; `false` when it did not exist.
    async fn delete_rule(&self, id: &str) -> Result<bool, StoreError>;
    /// The evaluator state of a rule (JSON), if any was saved.
    async fn rule_state(&self, rule_id: &str) -> Result<Option<String>, StoreError>;
    /// Stores a silence (`body` is its JSON), replacing one with that id.
    async fn save_silence(
        &self,
        id: &str,
        body: &str,
        ends_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Every silence's JSON, newest first.
    async fn list_silences(&self) -> Result<Vec<String>, StoreError>;
    /// Deletes the silences that ended before `before_ms`; how many.
    async fn delete_silences_ended_before(&self, before_ms: i64) -> Result<u64, StoreError>;
    /// Every saved state as `(rule_id, state)`.
    async fn list_rule_states(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Saves the evaluator state of each rule of a pass and queues the
    /// notifications it decided on, all in one transaction: a crash leaves
    /// all or none, so a notification is neither lost nor queued twice.
    /// A rule deleted meanwhile is skipped.
    async fn commit_evaluations(
        &self,
        evaluations: &[EvaluationCommit],
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// One rule's part of [`RuleStore::commit_evaluations`].
#[derive(Clone, Debug)]
pub struct EvaluationCommit {
    pub rule_id: String,
    /// The state as JSON.
    pub state: String,
    pub deliveries: Vec<super::DeliveryRow>,
}

pub(crate) const RULE_COLUMNS: &str = "id, name, spec, created_at, updated_at";

/// Implements [`RuleStore`] for a store type with a `pool` field.
macro_rules! rule_store {
    ($store:ty) => {
        impl $store {
            /// The rule whose `column` (`id` or `name`) is `value`.
            async fn rule_where(
                &self,
                column: &'static str,
                value: &str,
            ) -> Result<Option<$crate::store::alert_rules::RuleRow>, $crate::store::StoreError>
            {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM alert_rules WHERE {column} = $1",
                    $crate::store::alert_rules::RULE_COLUMNS
                ))
                .bind(value)
                .fetch_optional(&self.pool)
                .await
                .context("reading an alert rule")
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::alert_rules::RuleStore for $store {
            async fn insert_rule(
                &self,
                row: &$crate::store::alert_rules::RuleRow,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query(
                    "INSERT INTO alert_rules (id, name, spec, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(&row.id)
                .bind(&row.name)
                .bind(&row.spec)
                .bind(row.created_ms)
                .bind(row.updated_ms)
                .execute(&self.pool)
                .await
                .context("inserting an alert rule")?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_rule(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::alert_rules::RuleRow>, $crate::store::StoreError>
            {
                self.rule_where("id", id).await
            }

            async fn rule_by_name(
                &self,
                name: &str,
            ) -> Result<Option<$crate::store::alert_rules::RuleRow>, $crate::store::StoreError>
            {
                self.rule_where("name", name).await
            }

            async fn list_rules(
                &self,
            ) -> Result<Vec<$crate::store::alert_rules::RuleRow>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as(&format!(
                    "SELECT {} FROM alert_rules ORDER BY name",
                    $crate::store::alert_rules::RULE_COLUMNS
                ))
                .fetch_all(&self.pool)
                .await
                .context("listing alert rules")
            }

            async fn update_rule(
                &self,
                row: &$crate::store::alert_rules::RuleRow,
            ) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query(
                    "UPDATE alert_rules SET name = $2, spec = $3, updated_at = $4 WHERE id = $1",
                )
                .bind(&row.id)
                .bind(&row.name)
                .bind(&row.spec)
                .bind(row.updated_ms)
                .execute(&self.pool)
                .await
                .context("updating an alert rule")?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_rule(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                use $crate::store::Context;
                let mut tx = self.pool.begin().await.context("deleting an alert rule")?;
                sqlx::query("DELETE FROM alert_rule_state WHERE rule_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("deleting an alert rule's state")?;
                let done = sqlx::query("DELETE FROM alert_rules WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .context("deleting an alert rule")?;
                tx.commit().await.context("deleting an alert rule")?;
                Ok(done.rows_affected() == 1)
            }

            async fn rule_state(
                &self,
                rule_id: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_scalar("SELECT state FROM alert_rule_state WHERE rule_id = $1")
                    .bind(rule_id)
                    .fetch_optional(&self.pool)
                    .await
                    .context("reading an alert rule's state")
            }

            async fn save_silence(
                &self,
                id: &str,
                body: &str,
                ends_ms: i64,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query(
                    "INSERT INTO alert_silences (id, body, ends_at, created_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (id) DO UPDATE SET body = $2, ends_at = $3",
                )
                .bind(id)
                .bind(body)
                .bind(ends_ms)
                .bind(now_ms)
                .execute(&self.pool)
                .await
                .context("saving a silence")?;
                Ok(())
            }

            async fn list_silences(&self) -> Result<Vec<String>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_scalar("SELECT body FROM alert_silences ORDER BY created_at DESC, id")
                    .fetch_all(&self.pool)
                    .await
                    .context("listing silences")
            }

            async fn delete_silences_ended_before(
                &self,
                before_ms: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::Context;
                let done = sqlx::query("DELETE FROM alert_silences WHERE ends_at < $1")
                    .bind(before_ms)
                    .execute(&self.pool)
                    .await
                    .context("deleting expired silences")?;
                Ok(done.rows_affected())
            }

            async fn list_rule_states(
                &self,
            ) -> Result<Vec<(String, String)>, $crate::store::StoreError> {
                use $crate::store::Context;
                sqlx::query_as("SELECT rule_id, state FROM alert_rule_state ORDER BY rule_id")
                    .fetch_all(&self.pool)
                    .await
                    .context("listing alert rule states")
            }

            async fn commit_evaluations(
                &self,
                evaluations: &[$crate::store::alert_rules::EvaluationCommit],
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::Context;
                if evaluations.is_empty() {
                    return Ok(());
                }
                let mut tx = self
                    .pool
                    .begin()
                    .await
                    .context("saving an alert evaluation")?;
                for e in evaluations {
                    // Only for a rule that still exists: a rule deleted during
                    // its evaluation leaves nothing behind.
                    let done = sqlx::query(
                        "INSERT INTO alert_rule_state (rule_id, state, updated_at)
                         SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM alert_rules WHERE id = $1)
                         ON CONFLICT (rule_id) DO UPDATE SET state = $2, updated_at = $3",
                    )
                    .bind(&e.rule_id)
                    .bind(&e.state)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await
                    .context("saving an alert rule's state")?;
                    if done.rows_affected() == 1 {
                        for row in &e.deliveries {
                            let _: i64 = $crate::store::alerts::bind_delivery!(
                                sqlx::query_scalar($crate::store::alerts::INSERT_DELIVERY),
                                row
                            )
                            .fetch_one(&mut *tx)
                            .await
                            .context("queueing a notification")?;
                        }
                    }
                }
                tx.commit().await.context("saving an alert evaluation")?;
                Ok(())
            }
        }
    };
}

pub(crate) use rule_store;
