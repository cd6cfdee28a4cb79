//! `/api/v2/silences`: create, list, read and expire silences (Alertmanager's
//! API v2 shapes). What a silence may say and how it matches live in
//! `alerts::silences`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::alerts::silences::{self, Silence};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

async fn all(state: &AppState) -> Result<Vec<Silence>, AppError> {
    Ok(state
        .store
        .list_silences()
        .await?
        .iter()
        .filter_map(|b| serde_json::from_str(b).ok())
        .collect())
}

async fn silence_or_404(state: &AppState, id: &str) -> Result<Silence, AppError> {
    all(state)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| AppError::NotFound(format!("no silence `{}`", id.escape_debug())))
}

async fn save(state: &AppState, s: &Silence) -> Result<(), AppError> {
    let body = serde_json::to_string(s).map_err(|e| AppError::Internal(e.to_string()))?;
    state
        .store
        .save_silence(&s.id, &body, s.ends_at_ms, now_ms())
        .await?;
    state.alerts.rules_changed();
    Ok(())
}

#[utoipa::path(get, path = "/api/v2/silences", tag = "alerting",
    responses((status = 200, description = "`{silences: [...]}` newest first, each as Alertmanager's API v2 \
        answers it: `id`, `matchers` (`name`, `value`, `isRegex`, `isEqual`), `startsAt`, `endsAt`, \
        `createdBy`, `comment`, `updatedAt`, `status.state` (pending, active, expired)", body = Object)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    let now = now_ms();
    let out: Vec<Value> = all(&state).await?.iter().map(|s| s.to_json(now)).collect();
    Ok(Json(json!({"silences": out})))
}

#[utoipa::path(post, path = "/api/v2/silences", tag = "alerting",
    request_body(content = Object, description = "`matchers` (1 to 32 of `{name, value, isRegex, isEqual}`; \
        at least one must not match the empty string), `startsAt` (default now), `endsAt` (required, in \
        the future), `createdBy`, `comment` (both required)."),
    responses(
        (status = 201, description = "Created: the silence with `silenceID`", body = Object),
        (status = 400, description = "Invalid body; each problem named by field", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let now = now_ms();
    let s = silences::parse(&body, uuid::Uuid::new_v4().to_string(), now)?;
    save(&state, &s).await?;
    tracing::info!(silence = %s.id, by = %s.created_by, "silence created");
    let mut v = s.to_json(now);
    v["silenceID"] = json!(s.id);
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/api/v2/silences/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Silence id")),
    responses(
        (status = 200, description = "The silence", body = Object),
        (status = 404, description = "No such silence", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    Ok(Json(silence_or_404(&state, &id).await?.to_json(now_ms())))
}

#[utoipa::path(delete, path = "/api/v2/silences/{id}", tag = "alerting",
    params(("id" = String, Path, description = "Silence id")),
    responses(
        (status = 204, description = "Expired now (a pending one never starts)"),
        (status = 404, description = "No such silence", body = ErrorBody),
        (status = 409, description = "Already expired", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn expire(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let mut s = silence_or_404(&state, &id).await?;
    let now = now_ms();
    if s.state(now) == "expired" {
        return Err(AppError::Conflict(
            "already_expired",
            format!("silence `{id}` has already expired"),
        ));
    }
    s.starts_at_ms = s.starts_at_ms.min(now);
    s.ends_at_ms = now;
    s.updated_ms = now;
    save(&state, &s).await?;
    Ok(StatusCode::NO_CONTENT)
}
