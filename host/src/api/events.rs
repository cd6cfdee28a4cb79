//! `POST /api/v2/events` (batch ingest of lifecycle and custom events) and
//! `GET /api/v2/events` (filtered listing in log order, cursor paging).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::events::{check_event_type, parse_events, EventsError};
use crate::metrics::model::parse_time_str;
use crate::store::EventQuery;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What an events ingest stored.
#[derive(Serialize, ToSchema)]
pub struct EventsAccepted {
    /// Events stored by this request.
    pub accepted: usize,
    /// Events whose `event_id` was already stored (a client retry); left as they were.
    pub duplicates: usize,
    /// Sequence numbers of the stored events, in the order sent (null for a duplicate).
    pub seqs: Vec<Option<i64>>,
}

impl From<EventsError> for AppError {
    fn from(e: EventsError) -> Self {
        match e {
            EventsError::MalformedJson(m) => AppError::MalformedJson(m),
            EventsError::Invalid(items) => AppError::InvalidReport(items),
            EventsError::TooManyItems { count, limit } => AppError::PayloadTooLarge(format!(
                "{count} events in one request; the limit is {limit}"
            )),
        }
    }
}

#[utoipa::path(post, path = "/api/v2/events", tag = "events",
    request_body(content = Object, description = "One event, an array of events, or {\"events\": [...]}. \
        Each event: `event_type` (core lifecycle type or namespaced custom type), optional `event_id` \
        (idempotency key), `event_time` (unix seconds or RFC 3339), `session_id`, `workflow_id` \
        (or `asyncflow.workflow_id`), `task_id`, `backend`; other fields are kept as attributes."),
    responses(
        (status = 200, description = "Every event committed (or already stored)", body = EventsAccepted),
        (status = 400, description = "Malformed JSON or invalid events; nothing stored", body = ErrorBody),
        (status = 413, description = "Body or event count over the limit", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ingest(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventsAccepted>, AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let now = now_ms();
    let events = parse_events(&body, state.config.max_items_per_request, now)?;
    let seqs = state.store.append_events(&events, now).await?;
    state.head.bump_stored(&seqs);
    let accepted = seqs.iter().filter(|s| s.is_some()).count();
    state.metrics.add_events_ingested(accepted as u64);
    Ok(Json(EventsAccepted {
        accepted,
        duplicates: seqs.len() - accepted,
        seqs,
    }))
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Each event as one flat object: `seq`, `event_id`, `event_type`,
    /// `event_time` (RFC 3339), the ids it was sent with, and its attributes.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

const MAX_LIMIT: u32 = 10_000;

pub(crate) fn parse_query(raw: Option<&str>) -> Result<EventQuery, AppError> {
    let mut q = EventQuery {
        limit: 100,
        ..EventQuery::default()
    };
    let bad = |m: String| AppError::InvalidQuery(m);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "event_type" => {
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    check_event_type(t).map_err(|e| bad(format!("`event_type`: {e}")))?;
                    q.event_types.push(t.to_string());
                }
            }
            "session_id" => q.session_id = Some(value.into_owned()),
            "workflow_id" => q.workflow_id = Some(value.into_owned()),
            "task_id" => q.task_id = Some(value.into_owned()),
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
                q.after_seq = value
                    .parse::<i64>()
                    .ok()
                    .filter(|s| *s >= 0)
                    .ok_or_else(|| bad("`cursor` is not a cursor this server issued".into()))?
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}`; use event_type, session_id, workflow_id, task_id, start, end, limit, cursor"
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

#[utoipa::path(get, path = "/api/v2/events", tag = "events",
    params(
        ("event_type" = Option<String>, Query, description = "One or more types, comma-separated"),
        ("session_id" = Option<String>, Query, description = "Events of this session"),
        ("workflow_id" = Option<String>, Query, description = "Events of this workflow scope"),
        ("task_id" = Option<String>, Query, description = "Events of this task"),
        ("start" = Option<String>, Query, description = "Event time from (RFC 3339 or unix seconds)"),
        ("end" = Option<String>, Query, description = "Event time before (RFC 3339 or unix seconds)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses(
        (status = 200, description = "Events in log order", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<(StatusCode, Json<EventPage>), AppError> {
    let q = parse_query(raw.as_deref())?;
    let rows = state.store.list_events(&q).await?;
    let next_cursor = (rows.len() == q.limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok((
        StatusCode::OK,
        Json(EventPage {
            events: rows.iter().map(|e| e.to_json()).collect(),
            next_cursor,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_filters_and_refuse_bad_values() {
        let q = parse_query(Some(
            "event_type=TaskCompleted,asyncflow.TaskResolved&session_id=s1&start=1700000000&limit=5&cursor=9",
        ))
        .unwrap();
        assert_eq!(
            q.event_types,
            vec!["TaskCompleted", "asyncflow.TaskResolved"]
        );
        assert_eq!(q.session_id.as_deref(), Some("s1"));
        assert_eq!(
            (q.start_ms, q.limit, q.after_seq),
            (Some(1_700_000_000_000), 5, 9)
        );
        for bad in [
            "event_type=Checkpoint",
            "limit=0",
            "limit=x",
            "cursor=-1",
            "start=soon",
            "start=20&end=10",
            "colour=red",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad} was accepted");
        }
    }
}
