//! `POST /api/v2/events` (batch ingest of lifecycle and custom events, JSON
//! or NDJSON) and `GET /api/v2/events` (filtered listing in log order, cursor
//! paging, each event exactly as sent inside its log envelope).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{AppError, ErrorBody};
use super::AppState;
use crate::events::json::NonFinite;
use crate::events::{check_event_type, parse_events, EventsError};
use crate::store::EventQuery;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What an events ingest stored.
#[derive(Serialize, ToSchema)]
pub struct EventsAccepted {
    /// Events stored by this request.
    pub accepted: usize,
    /// Events whose `event_id` was already stored (a client retry, or a
    /// replay of what was forwarded live); left as they were.
    pub duplicates: usize,
    /// Sequence numbers of the stored events, in the order sent (null for a duplicate).
    pub seqs: Vec<Option<i64>>,
    /// NDJSON lines of other sections (RHAPSODY's `metric` and `span`
    /// checkpoint lines), not stored, by section.
    #[schema(value_type = Object)]
    pub skipped: std::collections::BTreeMap<String, usize>,
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

/// Whether the body is NDJSON (one event per line), by its content type.
fn is_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/x-ndjson" || v == "application/jsonl" || v == "application/jsonlines"
        })
}

#[utoipa::path(post, path = "/api/v2/events", tag = "events",
    request_body(content = Object, description = "One event, an array of events, or {\"events\": [...]}; \
        with `Content-Type: application/x-ndjson`, one event per line (RHAPSODY's checkpoint file: \
        `metric` and `span` lines are skipped and counted). Each event: `event_type` (core lifecycle \
        type, or a custom type containing a dot), optional `event_id` (idempotency key), `event_time` \
        and `emit_time` (unix seconds or RFC 3339), `session_id`, `backend`, `task_id`, `node_id`, \
        `attributes` (an object; `asyncflow.workflow_id` there is the workflow); any other fields. \
        Kept exactly as sent; `NaN` and `Infinity` as Python writes them are accepted."),
    responses(
        (status = 200, description = "Every event committed (or already stored)", body = EventsAccepted),
        (status = 400, description = "Malformed JSON or invalid events; nothing stored", body = ErrorBody),
        (status = 413, description = "Body or event count over the limit", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn ingest(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventsAccepted>, AppError> {
    let body = super::metrics::body_or_413(body, state.config.max_body_bytes)?;
    let now = now_ms();
    let parsed = parse_events(
        &body,
        is_ndjson(&headers),
        state.config.max_items_per_request,
        now,
    )?;
    let seqs = if parsed.events.is_empty() {
        Vec::new()
    } else {
        state.ingest.append_events(parsed.events, now).await?
    };
    let accepted = seqs.iter().filter(|s| s.is_some()).count();
    Ok(Json(EventsAccepted {
        accepted,
        duplicates: seqs.len() - accepted,
        seqs,
        skipped: parsed.skipped,
    }))
}

/// A page of events.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    /// Each event in its log envelope: `seq`, `event_id`, `received_at`
    /// (RFC 3339) and `event`, the event exactly as it was sent (non-finite
    /// numbers as Python writes them, or as strings with `json=strict`).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

const MAX_LIMIT: u32 = 10_000;

pub(crate) fn parse_query(raw: Option<&str>) -> Result<(EventQuery, NonFinite), AppError> {
    let mut q = EventQuery {
        limit: 100,
        ..EventQuery::default()
    };
    let mut style = NonFinite::Python;
    let bad = |m: String| AppError::InvalidQuery(m);
    let time = |key: &str, value: &str| {
        crate::events::parse_time_value(value).map_err(|e| bad(format!("`{key}`: {e}")))
    };
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
            "start" | "since" => q.start = Some(time(&key, &value)?),
            "end" | "until" => q.end = Some(time(&key, &value)?),
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
            "json" => style = NonFinite::from_param(&value).map_err(bad)?,
            other => {
                return Err(bad(format!(
                    "unknown parameter `{other}`; use event_type, session_id, workflow_id, task_id, start, end, limit, cursor, json"
                )))
            }
        }
    }
    if let (Some(s), Some(e)) = (q.start, q.end) {
        if s >= e {
            return Err(bad("`start` must be before `end`".into()));
        }
    }
    Ok((q, style))
}

#[utoipa::path(get, path = "/api/v2/events", tag = "events",
    params(
        ("event_type" = Option<String>, Query, description = "One or more types, comma-separated"),
        ("session_id" = Option<String>, Query, description = "Events of this session"),
        ("workflow_id" = Option<String>, Query, description = "Events of this workflow scope (AsyncFlow's `asyncflow.workflow_id`)"),
        ("task_id" = Option<String>, Query, description = "Events of this task"),
        ("start" = Option<String>, Query, description = "Event time from (RFC 3339 or unix seconds, sub-second precision)"),
        ("end" = Option<String>, Query, description = "Event time before (RFC 3339 or unix seconds)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 10000 (default 100)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("json" = Option<String>, Query, description = "`python` (default: NaN and Infinity as Python's json writes them) or `strict` (as strings)")),
    responses(
        (status = 200, description = "Events in log order", body = EventPage),
        (status = 400, description = "Invalid query", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<axum::response::Response, AppError> {
    let (q, style) = parse_query(raw.as_deref())?;
    let rows = state.store.list_events(&q).await?;
    Ok(page_response(&rows, q.limit, style))
}

/// A page of events as `GET /api/v2/events` answers it. Written by hand:
/// the events are kept as sent, which a JSON value cannot hold when they
/// carry Python's NaN or Infinity.
pub(crate) fn page_response(
    rows: &[crate::events::StoredEvent],
    limit: u32,
    style: NonFinite,
) -> axum::response::Response {
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.seq.to_string()))
        .flatten();
    let mut out = String::with_capacity(64 + rows.iter().map(|r| r.body.len() + 96).sum::<usize>());
    out.push_str("{\"events\":[");
    for (i, e) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        e.render(&mut out, style);
    }
    out.push_str("],\"next_cursor\":");
    match next_cursor {
        Some(c) => crate::events::json::write_string(&mut out, &c),
        None => out.push_str("null"),
    }
    out.push('}');
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_filters_and_refuse_bad_values() {
        let (q, style) = parse_query(Some(
            "event_type=TaskCompleted,asyncflow.TaskResolved&session_id=s1&start=1700000000.000125&limit=5&cursor=9&json=strict",
        ))
        .unwrap();
        assert_eq!(
            q.event_types,
            vec!["TaskCompleted", "asyncflow.TaskResolved"]
        );
        assert_eq!(q.session_id.as_deref(), Some("s1"));
        assert_eq!(
            (q.start, q.limit, q.after_seq),
            (Some(1_700_000_000.000125), 5, 9)
        );
        assert_eq!(style, NonFinite::Strict);
        for bad in [
            "event_type=Checkpoint",
            "limit=0",
            "limit=x",
            "cursor=-1",
            "start=soon",
            "start=20&end=10",
            "colour=red",
            "json=yaml",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad} was accepted");
        }
    }
}
