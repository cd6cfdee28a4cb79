//! Publisher delivery status and dead letters.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::bus::PublisherStatus;
use crate::metrics::model::format_ms;
use crate::plugins::registry::valid_plugin_name;

/// Every publisher with a cursor.
#[derive(Serialize, ToSchema)]
pub struct PublisherList {
    pub publishers: Vec<PublisherStatus>,
}

/// One refused item.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterView {
    pub id: i64,
    pub seq: i64,
    /// The sample as it was offered.
    #[schema(value_type = Object)]
    pub item: serde_json::Value,
    pub reason: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of dead letters.
#[derive(Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetterView>,
    /// Pass as `after` for the next page; null on the last page.
    pub next_after: Option<i64>,
}

#[utoipa::path(get, path = "/api/v2/publishers", tag = "plugins",
    responses((status = 200, description = "Cursor, lag, last success and last error of every publisher", body = PublisherList)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<PublisherList>, AppError> {
    Ok(Json(PublisherList {
        publishers: state.delivery.status().await?,
    }))
}

#[utoipa::path(get, path = "/api/v2/publishers/{name}/dead-letters", tag = "plugins",
    params(
        ("name" = String, Path, description = "Publisher name"),
        ("after" = Option<i64>, Query, description = "next_after of the previous page"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)")),
    responses(
        (status = 200, description = "Items the receiver refused for good, oldest first", body = DeadLetterPage),
        (status = 400, description = "Invalid parameter", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeadLetterPage>, AppError> {
    if !valid_plugin_name(&name) {
        return Err(AppError::InvalidQuery(format!(
            "`{name}` is not a publisher name"
        )));
    }
    let mut after = 0i64;
    let mut limit = 100u32;
    for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "after" => {
                after = v
                    .parse()
                    .map_err(|_| AppError::InvalidQuery("`after` must be an integer".into()))?
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| AppError::InvalidQuery("`limit` must be 1 to 1000".into()))?
            }
            other => {
                return Err(AppError::InvalidQuery(format!(
                    "unknown parameter `{other}`; use after, limit"
                )))
            }
        }
    }
    let rows = state.store.dead_letters(&name, after, limit).await?;
    let next_after = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(DeadLetterPage {
        dead_letters: rows
            .into_iter()
            .map(|d| DeadLetterView {
                id: d.id,
                seq: d.seq,
                item: serde_json::from_str(&d.item).unwrap_or(serde_json::Value::Null),
                reason: d.reason,
                created_at: format_ms(d.created_ms),
            })
            .collect(),
        next_after,
    }))
}
