//! Lifecycle and custom events (RHAPSODY / AsyncFlow style): the accepted
//! payload and its validation (`parse`), JSON as Python writes it (`json`),
//! and the shape events have in the log.
//!
//! An event is a JSON object like the events RHAPSODY emits: the base fields
//! `event_id` (the idempotency key; generated when absent), `event_type` (a
//! core lifecycle type such as `TaskCompleted`, or a custom type containing a
//! dot such as `asyncflow.TaskResolved`), `event_time` and `emit_time` (unix
//! seconds as floats, or RFC 3339), `session_id`, `backend`, `task_id`,
//! `node_id` and `attributes` (an object; AsyncFlow's `workflow_scope()` puts
//! `asyncflow.workflow_id` there), plus any fields of its own. Vigil keeps the
//! event exactly as sent — every field with its type and value, floats
//! bit-exact, `null`s and non-finite numbers included — and indexes the few
//! fields it filters by.

pub mod json;
mod parse;

pub use parse::{
    check_event_type, parse_event_time, parse_events, parse_time_value, EventsError, ParsedEvents,
    BASE_FIELDS, CORE_EVENT_TYPES, MAX_EVENT_BYTES, MAX_ID_LEN,
};

use json::NonFinite;

/// A validated event, ready to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: String,
    /// When it happened, unix seconds (the sent float, or the RFC 3339 time
    /// converted); what time filters and ordering use.
    pub event_ts: f64,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub task_id: Option<String>,
    pub backend: Option<String>,
    /// Provenance scopes: the event's string fields `execution_id`,
    /// `source_id`, `project_module` (top level, else in `attributes`).
    pub execution_id: Option<String>,
    pub source_id: Option<String>,
    pub project_module: Option<String>,
    /// The event as sent: a JSON object, non-finite numbers as Python writes them.
    pub body: String,
}

/// An event as stored, with its place in the log.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    pub event_ts: f64,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub task_id: Option<String>,
    pub backend: Option<String>,
    pub execution_id: Option<String>,
    pub source_id: Option<String>,
    pub project_module: Option<String>,
    /// The event as sent (see [`NewEvent::body`]).
    pub body: String,
    #[sqlx(rename = "received_at")]
    pub received_ms: i64,
}

impl StoredEvent {
    /// Where it happened, most specific first: task, workflow, session.
    pub fn source(&self) -> &str {
        self.task_id
            .as_deref()
            .or(self.workflow_id.as_deref())
            .or(self.session_id.as_deref())
            .unwrap_or("")
    }

    /// Event time in milliseconds since the Unix epoch.
    pub fn event_time_ms(&self) -> i64 {
        (self.event_ts * 1000.0).floor() as i64
    }

    /// The event as sent, as strict JSON (non-finite numbers as strings).
    pub fn strict_body(&self) -> std::borrow::Cow<'_, str> {
        json::strict_text(&self.body)
    }

    /// Appends the listing form of the event to `out`:
    /// `{"seq":…,"event_id":…,"received_at":…,"event":{…as sent…}}`.
    pub fn render(&self, out: &mut String, style: NonFinite) {
        out.push_str("{\"seq\":");
        out.push_str(&self.seq.to_string());
        out.push_str(",\"event_id\":");
        json::write_string(out, &self.event_id);
        out.push_str(",\"received_at\":");
        json::write_string(out, &crate::metrics::model::format_ms(self.received_ms));
        out.push_str(",\"event\":");
        match style {
            NonFinite::Python => out.push_str(&self.body),
            NonFinite::Strict => out.push_str(&self.strict_body()),
        }
        out.push('}');
    }

    /// The listing form as a JSON value (strict: non-finite numbers as strings).
    pub fn to_json(&self) -> serde_json::Value {
        let mut text = String::with_capacity(self.body.len() + 96);
        self.render(&mut text, NonFinite::Strict);
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_events_render_as_sent_inside_their_log_envelope() {
        let e = StoredEvent {
            seq: 9,
            event_id: "e".into(),
            event_type: "TaskFailed".into(),
            event_ts: 1_700_000_000.25,
            session_id: Some("s".into()),
            workflow_id: Some("w".into()),
            task_id: None,
            backend: None,
            execution_id: None,
            source_id: None,
            project_module: None,
            body: r#"{"event_id":"e","event_type":"TaskFailed","event_time":1700000000.25,"task_id":null,"loss":Infinity,"seq":3}"#.into(),
            received_ms: 1_700_000_000_000,
        };
        assert_eq!(e.source(), "w");
        assert_eq!(e.event_time_ms(), 1_700_000_000_250);
        let mut out = String::new();
        e.render(&mut out, NonFinite::Python);
        assert!(
            out.starts_with(
                r#"{"seq":9,"event_id":"e","received_at":"2023-11-14T22:13:20.000Z","event":{"#
            ),
            "{out}"
        );
        assert!(out.contains(r#""loss":Infinity"#), "{out}");
        let json = e.to_json();
        assert_eq!(json["seq"], 9);
        assert_eq!(json["event"]["seq"], 3, "the event's own `seq` is kept");
        assert_eq!(json["event"]["loss"], "Infinity");
        assert!(json["event"]["task_id"].is_null());
        assert_eq!(json["event"]["event_time"].as_f64(), Some(1_700_000_000.25));
    }
}
