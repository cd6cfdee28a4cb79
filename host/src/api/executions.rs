//! `/api/v2/executions`: create, list, read (with the debug fields of the
//! providers serving the execution's backend), update (state transitions
//! and merge patches; an illegal transition is `409` naming the current
//! state) and the run record a worker reports.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::executions::input::{self, check_backend, check_id, BodyError};
use crate::executions::service::{self, to_json};
use crate::executions::{ExecutionError, ExecutionState};
use crate::metrics::model::parse_time_str;
use crate::store::{ExecutionQuery, ExecutionRow};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::Malformed(m) => AppError::MalformedJson(m),
            BodyError::Invalid(items) => AppError::InvalidBody(items),
            BodyError::TooLarge(m) => AppError::PayloadTooLarge(m),
        }
    }
}

impl From<ExecutionError> for AppError {
    fn from(e: ExecutionError) -> Self {
        match e {
            ExecutionError::Invalid(items) => AppError::InvalidBody(items),
            ExecutionError::TooLarge(m) => AppError::PayloadTooLarge(m),
            ExecutionError::NotFound(_) => AppError::NotFound(e.to_string()),
            ExecutionError::Exists(_) => AppError::Conflict("already_exists", e.to_string()),
            ExecutionError::Transition { .. } => {
                AppError::Conflict("invalid_transition", e.to_string())
            }
            ExecutionError::Contended(_) => AppError::Conflict("contended", e.to_string()),
            ExecutionError::Store(e) => AppError::Internal(e.to_string()),
        }
    }
}

fn path_id(id: &str) -> Result<(), AppError> {
    check_id(id).map_err(|e| AppError::InvalidRequest(format!("execution id: {e}")))
}

/// An execution with the providers' fields.
async fn with_debug_fields(state: &AppState, row: &ExecutionRow) -> Value {
    let outcome = state.debug_fields.collect(&state.plugins, row).await;
    let mut v = to_json(row);
    v["debug_fields"] = serde_json::to_value(&outcome.fields).unwrap_or_default();
    v["debug_errors"] = serde_json::to_value(&outcome.errors).unwrap_or_default();
    v
}

#[utoipa::path(post, path = "/api/v2/executions", tag = "executions",
    request_body(content = Object, description = "`backend` (required: dim, slurm or another name), optional \
        `id` (default: a UUID), `project_module`, `source_id`, `state` (default pending), `scheduler_ids` \
        (object of strings: session_id, job_id, …), `profile` (dim: manager_url, host, port, https; slurm: \
        login_node, remote_user, session_dir, job_id), `attributes` (object)."),
    responses(
        (status = 201, description = "Created; its first state is logged as vigil.ExecutionStateChanged", body = Object),
        (status = 400, description = "Invalid body; nothing stored", body = ErrorBody),
        (status = 409, description = "An execution with that id exists", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let new = input::parse_new(&body)?;
    let row = service::create(state.store.as_ref(), &state.head, new, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(to_json(&row))))
}

#[utoipa::path(get, path = "/api/v2/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "Execution id")),
    responses(
        (status = 200, description = "The execution with `debug_fields` (object) and `debug_errors` \
            (array of {plugin, reason}) from the debug-field providers serving its backend", body = Object),
        (status = 404, description = "No such execution", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, AppError> {
    path_id(&id)?;
    let row = state
        .store
        .get_execution(&id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no execution `{id}`")))?;
    Ok(Json(with_debug_fields(&state, &row).await))
}

#[utoipa::path(patch, path = "/api/v2/executions/{id}", tag = "executions",
    params(("id" = String, Path, description = "Execution id")),
    request_body(content = Object, description = "Any of `state` (a transition), `scheduler_ids`, \
        `profile`, `attributes` (merge patches: a null member removes that key)."),
    responses(
        (status = 200, description = "The updated execution", body = Object),
        (status = 400, description = "Invalid body; nothing changed", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 409, description = "Transition not allowed from the current state (named in the message)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    path_id(&id)?;
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let patch = input::parse_patch(&body)?;
    let row = service::update(state.store.as_ref(), &state.head, &id, &patch, now_ms()).await?;
    Ok(Json(to_json(&row)))
}

#[utoipa::path(post, path = "/api/v2/executions/{id}/run-record", tag = "executions",
    params(("id" = String, Path, description = "Execution id")),
    request_body(content = Object, description = "One entry, an array, or {\"entries\": [...]}; each \
        `phase` (submit, poll, cancel, …), optional `attempt`, `at`, `status`, `answer` (the scheduler's \
        answer, any JSON), `error`, `detail`. An entry is at most 16 KiB; the record keeps its first entry \
        and the newest within 256 KiB and 200 entries, counting the others in `dropped`."),
    responses(
        (status = 200, description = "The execution with its run record", body = Object),
        (status = 400, description = "Invalid entries; nothing stored", body = ErrorBody),
        (status = 404, description = "No such execution", body = ErrorBody),
        (status = 413, description = "An entry or the request is too large; nothing stored", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn run_record(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    path_id(&id)?;
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let now = now_ms();
    let entries = input::parse_run_record(&body, now)?;
    let row =
        service::append_run_record(state.store.as_ref(), &state.head, &id, &entries, now).await?;
    Ok(Json(to_json(&row)))
}

/// A page of executions.
#[derive(Serialize, ToSchema)]
pub struct ExecutionPage {
    #[schema(value_type = Vec<Object>)]
    pub executions: Vec<Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

const MAX_LIMIT: u32 = 1000;

fn parse_list_query(raw: Option<&str>) -> Result<(ExecutionQuery, bool), AppError> {
    let mut q = ExecutionQuery {
        limit: 100,
        ..ExecutionQuery::default()
    };
    let mut debug = false;
    let bad = |m: String| AppError::InvalidQuery(m);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "state" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    ExecutionState::parse(s).ok_or_else(|| {
                        bad(format!(
                            "`state`: `{}` is not a state; use pending, submitted, running, completed, failed, cancelled",
                            s.escape_debug()
                        ))
                    })?;
                    q.states.push(s.to_string());
                }
            }
            "backend" => {
                check_backend(&value).map_err(|e| bad(format!("`backend`: {e}")))?;
                q.backend = Some(value.into_owned());
            }
            "project_module" | "project" => {
                check_id(&value).map_err(|e| bad(format!("`{key}`: {e}")))?;
                q.project_module = Some(value.into_owned());
            }
            "source_id" | "source" => {
                check_id(&value).map_err(|e| bad(format!("`{key}`: {e}")))?;
                q.source_id = Some(value.into_owned());
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
                    .ok_or_else(|| bad(format!("`limit` must be a whole number from 1 to {MAX_LIMIT}")))?
            }
            "cursor" => {
                q.after_n = value
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| bad("`cursor` is not a cursor this server issued".into()))?
            }
            "debug_fields" => {
                debug = match value.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad("`debug_fields` is true or false".into())),
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}`; use state, backend, project_module, source_id, start, end, limit, cursor, debug_fields",
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
    Ok((q, debug))
}

#[utoipa::path(get, path = "/api/v2/executions", tag = "executions",
    params(
        ("state" = Option<String>, Query, description = "One or more states, comma-separated"),
        ("backend" = Option<String>, Query, description = "Backend name"),
        ("project_module" = Option<String>, Query, description = "Project module"),
        ("source_id" = Option<String>, Query, description = "Source id"),
        ("start" = Option<String>, Query, description = "Created from (RFC 3339 or unix seconds)"),
        ("end" = Option<String>, Query, description = "Created before (RFC 3339 or unix seconds)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 1000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("debug_fields" = Option<bool>, Query, description = "Ask the debug-field providers for every execution of the page (default false)")),
    responses(
        (status = 200, description = "Executions in creation order", body = ExecutionPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<ExecutionPage>, AppError> {
    let (q, debug) = parse_list_query(raw.as_deref())?;
    let rows = state.store.list_executions(&q).await?;
    let next_cursor = (rows.len() == q.limit as usize)
        .then(|| rows.last().map(|r| r.n.to_string()))
        .flatten();
    let executions = if debug {
        let futures = rows.iter().map(|r| with_debug_fields(&state, r));
        futures::future::join_all(futures).await
    } else {
        rows.iter().map(to_json).collect()
    };
    Ok(Json(ExecutionPage {
        executions,
        next_cursor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_parse_filters_and_refuse_bad_values() {
        let (q, debug) = parse_list_query(Some(
            "state=running,failed&backend=dim&project=p.m&source_id=s1&limit=5&cursor=9&debug_fields=true",
        ))
        .unwrap();
        assert_eq!(q.states, vec!["running", "failed"]);
        assert_eq!(q.backend.as_deref(), Some("dim"));
        assert_eq!(q.project_module.as_deref(), Some("p.m"));
        assert_eq!((q.limit, q.after_n, debug), (5, 9, true));
        for bad in [
            "state=done",
            "backend=DIM",
            "limit=0",
            "limit=5000",
            "cursor=x",
            "debug_fields=maybe",
            "start=2&end=1",
            "colour=red",
        ] {
            assert!(parse_list_query(Some(bad)).is_err(), "{bad} was accepted");
        }
    }
}
