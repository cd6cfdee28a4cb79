//! `/api/v2/notification-channels` (create, list, read, update — including
//! `enabled` — delete, and `POST …/{id}/test`) and `/api/v2/alert-deliveries`
//! (every attempt, filtered and paged). The rules of what a channel may hold
//! live in `alerts::channels`; what an attempt records in `alerts::deliveries`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::alerts::channels::{self, ChannelError};
use crate::alerts::deliveries::{self, Outcome};
use crate::alerts::notification::test_notification;
use crate::metrics::model::parse_time_str;
use crate::store::DeliveryQuery;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<ChannelError> for AppError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::Malformed(m) => AppError::MalformedJson(m),
            ChannelError::Invalid(items) => AppError::InvalidBody(items),
        }
    }
}

fn check_path_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(AppError::NotFound(format!(
            "no notification channel `{}`",
            id.escape_debug()
        )));
    }
    Ok(())
}

async fn channel_or_404(state: &AppState, id: &str) -> Result<crate::store::ChannelRow, AppError> {
    check_path_id(id)?;
    state
        .store
        .get_channel(id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no notification channel `{id}`")))
}

/// The URL notifications link back to.
fn external_url(state: &AppState) -> String {
    format!("http://{}", state.config.listen)
}

#[utoipa::path(get, path = "/api/v2/notification-channels", tag = "alerting",
    responses((status = 200, description = "Every channel by name: `id`, `name`, `plugin`, `config` \
        (without secrets), `secrets_set` (names of the write-only settings that are set), \
        `send_resolved`, `enabled`, `created_at`, `updated_at`", body = Object)),
    security(("bearer" = [])))]
pub async fn list_channels(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let rows = state.store.list_channels().await?;
    Ok(Json(
        json!({"channels": rows.iter().map(channels::to_json).collect::<Vec<_>>()}),
    ))
}

#[utoipa::path(post, path = "/api/v2/notification-channels", tag = "alerting",
    request_body(content = Object, description = "`name` (required; A-Z a-z 0-9 - _ .), `plugin` \
        (required: a loaded notifier plugin), `config` (object checked against the plugin's JSON \
        Schema; properties the schema marks writeOnly are secrets, never returned), `send_resolved` \
        (default true), `enabled` (default true)."),
    responses(
        (status = 201, description = "Created", body = Object),
        (status = 400, description = "Invalid body, unknown plugin or config refused by its schema; nothing stored", body = ErrorBody),
        (status = 409, description = "A channel with that name exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_channel(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let input = channels::parse_input(&body, true)?;
    let row = channels::apply(
        &state.plugins,
        None,
        input,
        uuid::Uuid::new_v4().to_string(),
        now_ms(),
    )?;
    if !state.store.insert_channel(&row).await? {
        return Err(AppError::Conflict(
            "already_exists",
            format!("a notification channel named `{}` exists", row.name),
        ));
    }
    tracing::info!(channel = %row.name, plugin = %row.plugin, "notification channel created");
    Ok((StatusCode::CREATED, Json(channels::to_json(&row))))
}

#[utoipa::path(get, path = "/api/v2/notification-channels/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel (without secrets)", body = Object),
        (status = 404, description = "No such channel", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn read_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(channels::to_json(&channel_or_404(&state, &id).await?)))
}

#[utoipa::path(patch, path = "/api/v2/notification-channels/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Channel id")),
    request_body(content = Object, description = "Any of `name`, `plugin`, `config` (merged into the \
        stored settings; a null member removes a key; secrets left out are kept), `send_resolved`, \
        `enabled` (false disables the channel: nothing is sent through it)."),
    responses(
        (status = 200, description = "The updated channel", body = Object),
        (status = 400, description = "Invalid body; nothing changed", body = ErrorBody),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 409, description = "Another channel has that name", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let current = channel_or_404(&state, &id).await?;
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let input = channels::parse_input(&body, false)?;
    let row = channels::apply(&state.plugins, Some(&current), input, id.clone(), now_ms())?;
    if row.name != current.name {
        if let Some(other) = state.store.channel_by_name(&row.name).await? {
            if other.id != id {
                return Err(AppError::Conflict(
                    "already_exists",
                    format!("a notification channel named `{}` exists", row.name),
                ));
            }
        }
    }
    if !state.store.update_channel(&row).await? {
        return Err(AppError::NotFound(format!(
            "no notification channel `{id}`"
        )));
    }
    Ok(Json(channels::to_json(&row)))
}

#[utoipa::path(delete, path = "/api/v2/notification-channels/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted; its deliveries stay in the record"),
        (status = 404, description = "No such channel", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    check_path_id(&id)?;
    if !state.store.delete_channel(&id).await? {
        return Err(AppError::NotFound(format!(
            "no notification channel `{id}`"
        )));
    }
    state.notifiers.forget(&id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/api/v2/notification-channels/{id}/test", tag = "alerting",
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "Delivered: `{status: \"sent\", receipt, response_status, delivery}`", body = Object),
        (status = 404, description = "No such channel", body = ErrorBody),
        (status = 400, description = "The receiver refused it with this 4xx (its status is the receiver's; `error.message` is its reason) — any 4xx the receiver answers is passed on", body = ErrorBody),
        (status = 502, description = "The receiver failed (5xx, connection refused) or the channel's plugin could not send", body = ErrorBody),
        (status = 504, description = "The receiver did not answer in time", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn test_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let channel = channel_or_404(&state, &id).await?;
    let now = now_ms();
    let n = test_notification(&channel.name, &external_url(&state), now);
    let mut row = deliveries::new_row(&channel, None, "test", &n, now);
    state.store.insert_delivery(&row).await?;
    let attempt = deliveries::attempt(&state.notifiers, &state.plugins, &channel, &n).await;
    deliveries::record(&mut row, &attempt, None, now_ms());
    state.metrics.count_notification(&channel.name, &row.status);
    state.store.update_delivery(&row).await?;
    let delivery = deliveries::to_json(&row);
    let (status, code, message) = match &attempt.outcome {
        Outcome::Sent { id, detail } => {
            return Ok((
                StatusCode::OK,
                Json(json!({
                    "status": "sent",
                    "receipt": {"id": id, "detail": detail},
                    "response_status": attempt.response_status,
                    "delivery": delivery,
                })),
            )
                .into_response())
        }
        Outcome::Retryable {
            message,
            timed_out: true,
            ..
        } => (StatusCode::GATEWAY_TIMEOUT, "receiver_timeout", message),
        Outcome::Retryable { message, .. } | Outcome::Permanent(message) => {
            match attempt.response_status {
                Some(s @ 400..=499) => (
                    StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_REQUEST),
                    "receiver_rejected",
                    message,
                ),
                _ => (StatusCode::BAD_GATEWAY, "receiver_failed", message),
            }
        }
    };
    let mut message = message.clone();
    super::error::clip_text(&mut message, 2048);
    Ok((
        status,
        Json(json!({
            "error": {"code": code, "message": message},
            "response_status": attempt.response_status,
            "delivery": delivery,
        })),
    )
        .into_response())
}

/// A page of deliveries.
#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    #[schema(value_type = Vec<Object>)]
    pub deliveries: Vec<Value>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

const MAX_LIMIT: u32 = 1000;
const STATUSES: [&str; 5] = ["pending", "sent", "retrying", "failed", "silenced"];

fn parse_delivery_query(raw: Option<&str>) -> Result<DeliveryQuery, AppError> {
    let mut q = DeliveryQuery {
        limit: 100,
        ..DeliveryQuery::default()
    };
    let bad = |m: String| AppError::InvalidQuery(m);
    let id_like = |key: &str, v: &str| {
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            Err(bad(format!("`{key}` is not an id")))
        } else {
            Ok(v.to_string())
        }
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "channel" | "channel_id" => q.channel_id = Some(id_like(&key, &value)?),
            "rule" | "rule_id" => q.rule_id = Some(id_like(&key, &value)?),
            "status" => {
                if !STATUSES.contains(&value.as_ref()) {
                    return Err(bad(format!(
                        "`status`: `{}` is not a delivery status; use {}",
                        value.escape_debug(),
                        STATUSES.join(", ")
                    )));
                }
                q.status = Some(value.into_owned());
            }
            "start" | "since" => {
                q.start_ms = Some(parse_time_str(&value).map_err(|e| bad(format!("`{key}`: {e}")))?)
            }
            "end" | "until" => {
                q.end_ms = Some(parse_time_str(&value).map_err(|e| bad(format!("`{key}`: {e}")))?)
            }
            "limit" => {
                q.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        bad(format!(
                            "`limit` must be a whole number from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            "cursor" => {
                q.before_n = value
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| bad("`cursor` is not a cursor this server issued".into()))?
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}`; use channel, rule, status, start, end, limit, cursor",
                    other.escape_debug()
                )))
            }
        }
    }
    if let (Some(s), Some(e)) = (q.start_ms, q.end_ms) {
        if s >= e {
            return Err(bad("`start` must be before `end`".into()));
        }
    }
    Ok(q)
}

#[utoipa::path(get, path = "/api/v2/alert-deliveries", tag = "alerting",
    params(
        ("channel" = Option<String>, Query, description = "Channel id"),
        ("rule" = Option<String>, Query, description = "Rule id"),
        ("status" = Option<String>, Query, description = "pending, sent, retrying, failed or silenced"),
        ("start" = Option<String>, Query, description = "Created from (RFC 3339 or unix seconds)"),
        ("end" = Option<String>, Query, description = "Created before (RFC 3339 or unix seconds)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "Deliveries, newest first: `id`, `channel_id`, `rule_id`, `group_key`, \
            `kind` (notification or test), `status`, `attempts`, `response_status`, `last_error`, `receipt`, \
            `alerts`, `payload` (the notification; it carries no channel secrets), times", body = DeliveryPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<DeliveryPage>, AppError> {
    let q = parse_delivery_query(raw.as_deref())?;
    let rows = state.store.list_deliveries(&q).await?;
    let next_cursor = (rows.len() == q.limit as usize)
        .then(|| rows.last().map(|r| r.n.to_string()))
        .flatten();
    Ok(Json(DeliveryPage {
        deliveries: rows.iter().map(deliveries::to_json).collect(),
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_queries_parse_filters_and_refuse_bad_values() {
        let q = parse_delivery_query(Some("channel=c1&status=failed&limit=5&cursor=9")).unwrap();
        assert_eq!(q.channel_id.as_deref(), Some("c1"));
        assert_eq!(q.status.as_deref(), Some("failed"));
        assert_eq!((q.limit, q.before_n), (5, 9));
        for bad in [
            "status=lost",
            "limit=0",
            "limit=5000",
            "cursor=x",
            "cursor=0",
            "start=2&end=1",
            "colour=red",
            "channel=",
        ] {
            assert!(
                parse_delivery_query(Some(bad)).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
