//! The provenance streams: `GET /api/v2/executions/{id}/events`,
//! `/api/v2/sources/{id}/events`, `/api/v2/projects/{module}/events` (events
//! whose `execution_id`, `source_id` or `project_module` attribute is that
//! string) and `/api/v2/events/stream` (every event), all with the filters
//! of `GET /api/v2/events`.
//!
//! By default the answer is a JSON page like `GET /api/v2/events`. With
//! `Accept: text/event-stream` it is Server-Sent Events: the stored history
//! after the cursor (`cursor`, or the `Last-Event-ID` header, which wins;
//! `cursor=latest` starts at the head of the log), then live events as they
//! are committed, on any replica. Each message is
//!
//! ```text
//! id: <seq>
//! data: <the event as GET /api/v2/events renders it>
//! ```
//!
//! so a reconnect with `Last-Event-ID` resumes with nothing missed or
//! repeated. Idle streams get a `: keep-alive` comment every
//! `--stream-keep-alive`. A stream that ends on the server's side ends with
//! one last message without an `id`:
//!
//! ```text
//! event: error
//! data: {"error":{"code":"slow_subscriber","message":"…","last_event_id":41}}
//! ```
//!
//! `code` is `slow_subscriber` (the client has not kept up with the live log
//! for longer than `--stream-slow-after`; a short burst larger than the
//! `--stream-buffer` events kept in memory is caught up from the stored log
//! instead), `shutting_down` or `internal`; the client reconnects with
//! `Last-Event-ID`.

use std::convert::Infallible;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::{AppError, ErrorBody};
use super::events::{page_response, parse_query, EventPage};
use super::AppState;
use crate::bus::{FollowItem, Follower};
use crate::events::json::NonFinite;
use crate::store::EventQuery;

/// Which provenance scope a stream is for.
enum Scope {
    All,
    Execution(String),
    Source(String),
    Project(String),
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Replaces `cursor=latest` by the head of the log, then parses the filters
/// as `GET /api/v2/events` does.
async fn query_for(
    state: &AppState,
    raw: Option<&str>,
) -> Result<(EventQuery, NonFinite), AppError> {
    let raw = raw.unwrap_or("");
    let latest =
        form_urlencoded::parse(raw.as_bytes()).any(|(k, v)| k == "cursor" && v == "latest");
    if !latest {
        return parse_query(Some(raw));
    }
    let head = state.store.max_seq().await?;
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if k == "cursor" && v == "latest" {
            out.append_pair("cursor", &head.to_string());
        } else {
            out.append_pair(&k, &v);
        }
    }
    parse_query(Some(&out.finish()))
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, AppError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(str::trim)
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s >= 0)
            .map(Some)
            .ok_or_else(|| {
                AppError::InvalidRequest(
                    "`Last-Event-ID` is not an id this server sent (a sequence number)".into(),
                )
            }),
    }
}

fn check_scope_id(what: &str, id: &str) -> Result<(), AppError> {
    crate::executions::input::check_id(id)
        .map_err(|e| AppError::InvalidRequest(format!("{what}: {e}")))
}

async fn serve(
    state: AppState,
    scope: Scope,
    raw: Option<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (mut q, style) = query_for(&state, raw.as_deref()).await?;
    match scope {
        Scope::All => {}
        Scope::Execution(id) => {
            check_scope_id("execution id", &id)?;
            q.execution_id = Some(id);
        }
        Scope::Source(id) => {
            check_scope_id("source id", &id)?;
            q.source_id = Some(id);
        }
        Scope::Project(m) => {
            check_scope_id("project module", &m)?;
            q.project_module = Some(m);
        }
    }
    if !wants_sse(&headers) {
        let rows = state.store.list_events(&q).await?;
        return Ok(page_response(&rows, q.limit, style));
    }
    if let Some(id) = last_event_id(&headers)? {
        q.after_seq = id;
    }
    let follower = Follower::new(state.store.clone(), state.live.clone(), q);
    let stream = futures::stream::unfold(Some((follower, None::<i64>)), |slot| async move {
        let (mut f, last) = slot?;
        let closing = |code: &str, message: String| {
            Event::default().event("error").data(
                json!({"error": {"code": code, "message": message, "last_event_id": last}})
                    .to_string(),
            )
        };
        match f.next().await {
            Ok(Some(FollowItem::Event(seq, json))) => Some((
                Ok::<_, Infallible>(Event::default().id(seq.to_string()).data(&*json)),
                Some((f, Some(seq))),
            )),
            Ok(Some(FollowItem::Cut { code, message })) => Some((Ok(closing(code, message)), None)),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "event stream could not read the log");
                Some((
                    Ok(closing(
                        "internal",
                        "the server could not read the log; reconnect with Last-Event-ID".into(),
                    )),
                    None,
                ))
            }
        }
    });
    let mut response = Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(state.config.stream_keep_alive)
                .text("keep-alive"),
        )
        .into_response();
    // Tell buffering proxies (nginx) to pass messages on at once.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v2/executions/{id}/events", tag = "streams",
    params(("id" = String, Path, description = "Execution id (events whose `execution_id` attribute is this)"),
        ("event_type" = Option<String>, Query, description = "As GET /api/v2/events; also session_id, workflow_id, task_id, start, end, limit, cursor (`latest`: the head of the log)"),
        ("Last-Event-ID" = Option<String>, Header, description = "With text/event-stream: resume after this seq")),
    responses(
        (status = 200, description = "JSON page (EventPage) by default; `Accept: text/event-stream` follows live", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn execution_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Scope::Execution(id), raw, headers).await
}

#[utoipa::path(get, path = "/api/v2/sources/{id}/events", tag = "streams",
    params(("id" = String, Path, description = "Source id (events whose `source_id` attribute is this)")),
    responses(
        (status = 200, description = "JSON page by default; `Accept: text/event-stream` follows live", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn source_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Scope::Source(id), raw, headers).await
}

#[utoipa::path(get, path = "/api/v2/projects/{module}/events", tag = "streams",
    params(("module" = String, Path, description = "Project module (events whose `project_module` attribute is this)")),
    responses(
        (status = 200, description = "JSON page by default; `Accept: text/event-stream` follows live", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn project_events(
    State(state): State<AppState>,
    Path(module): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Scope::Project(module), raw, headers).await
}

#[utoipa::path(get, path = "/api/v2/events/stream", tag = "streams",
    params(("event_type" = Option<String>, Query, description = "The filters of GET /api/v2/events")),
    responses(
        (status = 200, description = "JSON page by default; `Accept: text/event-stream` follows live", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn all_events(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(state, Scope::All, raw, headers).await
}
