//! Lifecycle and custom events (RHAPSODY / AsyncFlow style): the accepted
//! payload, its validation, and the shape events have in the log.
//!
//! An event is a flat JSON object like the JSONL lines RHAPSODY writes:
//! `event_type` (a core lifecycle type such as `TaskCompleted`, or a
//! namespaced custom type such as `asyncflow.TaskResolved`), optional
//! `event_id` (the idempotency key; generated when absent), `event_time`
//! (unix seconds as a number, or RFC 3339; the receive time when absent),
//! `session_id`, `workflow_id` (also read from `asyncflow.workflow_id`),
//! `task_id` and `backend`. Every other field is kept as an attribute.
//! A body is one event, an array of events, or `{"events": [...]}`.

use serde_json::{Map, Value};

use crate::metrics::model::{format_ms, parse_timestamp, ItemError};

/// Event types RHAPSODY and AsyncFlow emit without a namespace.
pub const CORE_EVENT_TYPES: &[&str] = &[
    "SessionStarted",
    "SessionEnded",
    "TaskCreated",
    "TaskSubmitted",
    "TaskQueued",
    "TaskStarted",
    "TaskCompleted",
    "TaskFailed",
    "TaskCanceled",
    "ResourceUpdate",
];

/// Longest accepted identifier or type name, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Most attributes one event may carry.
pub const MAX_ATTRIBUTES: usize = 256;

/// A validated event, ready to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub event_id: String,
    pub event_type: String,
    pub event_time_ms: i64,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub task_id: Option<String>,
    pub backend: Option<String>,
    /// JSON object of the remaining fields.
    pub attributes: String,
}

/// An event as stored, with its place in the log.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct StoredEvent {
    pub seq: i64,
    pub event_id: String,
    pub event_type: String,
    #[sqlx(rename = "event_time")]
    pub event_time_ms: i64,
    pub session_id: Option<String>,
    pub workflow_id: Option<String>,
    pub task_id: Option<String>,
    pub backend: Option<String>,
    pub attributes: String,
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

    /// The event as one flat JSON object, as it was sent (base fields first,
    /// then the attributes), plus its `seq`.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("seq".into(), self.seq.into());
        out.insert("event_id".into(), self.event_id.clone().into());
        out.insert("event_type".into(), self.event_type.clone().into());
        out.insert("event_time".into(), format_ms(self.event_time_ms).into());
        for (key, value) in [
            ("session_id", &self.session_id),
            ("workflow_id", &self.workflow_id),
            ("task_id", &self.task_id),
            ("backend", &self.backend),
        ] {
            if let Some(v) = value {
                out.insert(key.into(), v.clone().into());
            }
        }
        if let Ok(Value::Object(attrs)) = serde_json::from_str::<Value>(&self.attributes) {
            for (k, v) in attrs {
                out.entry(k).or_insert(v);
            }
        }
        Value::Object(out)
    }
}

/// Why an events body was refused as a whole.
#[derive(Debug)]
pub enum EventsError {
    MalformedJson(String),
    Invalid(Vec<ItemError>),
    TooManyItems { count: usize, limit: usize },
}

/// Whether `name` is an accepted event type: a core type, or `namespace.Name`
/// with dot-separated segments of letters, digits, `_` and `-`.
pub fn check_event_type(name: &str) -> Result<(), String> {
    if CORE_EVENT_TYPES.contains(&name) {
        return Ok(());
    }
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_ID_LEN {
        return Err(format!("longer than {MAX_ID_LEN} bytes"));
    }
    if !name.contains('.') {
        return Err(format!(
            "`{name}` is not a core event type ({}); custom event types must be namespaced, e.g. `myapp.{name}`",
            CORE_EVENT_TYPES.join(", ")
        ));
    }
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !name.split('.').all(segment_ok) {
        return Err(format!(
            "`{name}`: each dot-separated part must be non-empty letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

fn check_id(value: &Value) -> Result<String, String> {
    let s = match value {
        Value::String(s) => s.clone(),
        // Task ids are sometimes numbers; keep them as their decimal text.
        Value::Number(n) => n.to_string(),
        _ => return Err("expected a string".into()),
    };
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_ID_LEN {
        return Err(format!("longer than {MAX_ID_LEN} bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s)
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn parse_one(
    index: usize,
    value: Value,
    now_ms: i64,
    errors: &mut Vec<ItemError>,
) -> Option<NewEvent> {
    let err = |field: &str, reason: String| ItemError {
        index: Some(index),
        field: field.to_string(),
        reason,
    };
    let Value::Object(mut fields) = value else {
        errors.push(err("", "expected a JSON object".into()));
        return None;
    };
    let before = errors.len();
    let event_type = match fields.remove("event_type") {
        Some(Value::String(t)) => match check_event_type(&t) {
            Ok(()) => Some(t),
            Err(e) => {
                errors.push(err("event_type", e));
                None
            }
        },
        Some(_) => {
            errors.push(err("event_type", "expected a string".into()));
            None
        }
        None => {
            errors.push(err("event_type", "required".into()));
            None
        }
    };
    let mut optional_id = |key: &str, fields: &mut Map<String, Value>| -> Option<String> {
        match fields.remove(key) {
            None | Some(Value::Null) => None,
            Some(v) => match check_id(&v) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(err(key, e));
                    None
                }
            },
        }
    };
    let event_id = optional_id("event_id", &mut fields);
    let session_id = optional_id("session_id", &mut fields);
    let mut workflow_id = optional_id("workflow_id", &mut fields);
    let scoped = optional_id("asyncflow.workflow_id", &mut fields);
    let task_id = optional_id("task_id", &mut fields);
    let backend = optional_id("backend", &mut fields);
    match (&workflow_id, scoped) {
        (Some(w), Some(s)) if *w != s => errors.push(err(
            "asyncflow.workflow_id",
            format!("`{s}` differs from workflow_id `{w}`; send one of them"),
        )),
        (None, Some(s)) => workflow_id = Some(s),
        _ => {}
    }
    let event_time_ms = match fields.remove("event_time") {
        None | Some(Value::Null) => Some(now_ms),
        Some(v) => match parse_timestamp(&v) {
            Ok(ms) => Some(ms),
            Err(e) => {
                errors.push(err("event_time", e));
                None
            }
        },
    };
    if fields.remove("seq").is_some() {
        errors.push(err("seq", "assigned by the server; do not send it".into()));
    }
    if fields.len() > MAX_ATTRIBUTES {
        errors.push(err(
            "",
            format!("{} attributes; at most {MAX_ATTRIBUTES}", fields.len()),
        ));
    }
    for key in fields.keys() {
        if key.is_empty() || key.len() > MAX_ID_LEN || key.chars().any(char::is_control) {
            errors.push(err(
                key,
                "attribute names must be 1 to 256 printable bytes".into(),
            ));
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(NewEvent {
        event_id: event_id.unwrap_or_else(new_event_id),
        event_type: event_type?,
        event_time_ms: event_time_ms?,
        session_id,
        workflow_id,
        task_id,
        backend,
        attributes: Value::Object(fields).to_string(),
    })
}

/// Parses and validates an events body. Every bad item is listed; nothing is
/// partial. Duplicate `event_id`s inside one body are an error.
pub fn parse_events(
    body: &[u8],
    max_items: usize,
    now_ms: i64,
) -> Result<Vec<NewEvent>, EventsError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| EventsError::MalformedJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("events") && !o.contains_key("event_type") => {
            match o.remove("events") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(EventsError::Invalid(vec![ItemError {
                        index: None,
                        field: "events".into(),
                        reason: "expected an array of events".into(),
                    }]))
                }
            }
        }
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(EventsError::Invalid(vec![ItemError {
                index: None,
                field: "".into(),
                reason: "expected an event object, an array of events or {\"events\": [...]}"
                    .into(),
            }]))
        }
    };
    if items.len() > max_items {
        return Err(EventsError::TooManyItems {
            count: items.len(),
            limit: max_items,
        });
    }
    if items.is_empty() {
        return Err(EventsError::Invalid(vec![ItemError {
            index: None,
            field: "events".into(),
            reason: "no events in the body".into(),
        }]));
    }
    let mut errors = Vec::new();
    let mut events = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashMap::new();
    for (i, item) in items.into_iter().enumerate() {
        if let Some(e) = parse_one(i, item, now_ms, &mut errors) {
            if let Some(first) = seen.insert(e.event_id.clone(), i) {
                errors.push(ItemError {
                    index: Some(i),
                    field: "event_id".into(),
                    reason: format!("`{}` repeats the event at index {first}", e.event_id),
                });
            }
            events.push(e);
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(EventsError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(body: &str) -> Result<Vec<NewEvent>, EventsError> {
        parse_events(body.as_bytes(), 100, NOW)
    }

    fn invalid(body: &str) -> Vec<ItemError> {
        match parse(body) {
            Err(EventsError::Invalid(items)) => items,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_rhapsody_lifecycle_event_keeps_base_fields_and_attributes() {
        let events = parse(
            r#"{"event_type":"TaskCompleted","event_id":"e1","event_time":1700000001.25,
                "session_id":"s1","task_id":"task.0003","backend":"concurrent",
                "asyncflow.workflow_id":"etl-run-42","duration_seconds":0.5}"#,
        )
        .unwrap();
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(e.event_id, "e1");
        assert_eq!(e.event_time_ms, 1_700_000_001_250);
        assert_eq!(e.workflow_id.as_deref(), Some("etl-run-42"));
        assert_eq!(e.task_id.as_deref(), Some("task.0003"));
        assert_eq!(e.attributes, r#"{"duration_seconds":0.5}"#);
    }

    #[test]
    fn arrays_and_wrapped_lists_are_accepted_and_ids_generated() {
        let a = parse(r#"[{"event_type":"TaskCreated"},{"event_type":"asyncflow.TaskResolved"}]"#)
            .unwrap();
        let b =
            parse(r#"{"events":[{"event_type":"myframework.ModelCheckpoint","step":3}]}"#).unwrap();
        assert_eq!(a.len(), 2);
        assert_ne!(a[0].event_id, a[1].event_id);
        assert_eq!(a[0].event_time_ms, NOW);
        assert_eq!(b[0].attributes, r#"{"step":3}"#);
    }

    #[test]
    fn every_bad_item_is_reported_with_its_index_and_field() {
        let errors = invalid(
            r#"[{"event_type":"Checkpoint"},{"event_type":7},{},
                {"event_type":"TaskStarted","event_time":"yesterday"},
                {"event_type":"TaskStarted","task_id":{"x":1}},
                {"event_type":"a..b"},{"event_type":"TaskStarted","seq":4},"x",
                {"event_type":"TaskStarted","workflow_id":"a","asyncflow.workflow_id":"b"}]"#,
        );
        let got: Vec<(Option<usize>, &str)> =
            errors.iter().map(|e| (e.index, e.field.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (Some(0), "event_type"),
                (Some(1), "event_type"),
                (Some(2), "event_type"),
                (Some(3), "event_time"),
                (Some(4), "task_id"),
                (Some(5), "event_type"),
                (Some(6), "seq"),
                (Some(7), ""),
                (Some(8), "asyncflow.workflow_id"),
            ]
        );
        assert!(
            errors[0].reason.contains("namespaced"),
            "{}",
            errors[0].reason
        );
    }

    #[test]
    fn duplicate_ids_in_one_body_and_body_shapes_are_refused() {
        let errors = invalid(
            r#"[{"event_type":"TaskCreated","event_id":"x"},{"event_type":"TaskStarted","event_id":"x"}]"#,
        );
        assert_eq!(errors[0].index, Some(1));
        assert!(matches!(parse("[]"), Err(EventsError::Invalid(_))));
        assert!(matches!(parse("42"), Err(EventsError::Invalid(_))));
        assert!(matches!(
            parse("{\"events\": 1}"),
            Err(EventsError::Invalid(_))
        ));
        assert!(matches!(
            parse("{not json"),
            Err(EventsError::MalformedJson(_))
        ));
        let many = format!(
            "[{}]",
            vec![r#"{"event_type":"TaskCreated"}"#; 101].join(",")
        );
        assert!(matches!(
            parse(&many),
            Err(EventsError::TooManyItems {
                count: 101,
                limit: 100
            })
        ));
    }

    #[test]
    fn stored_events_render_flat_with_source_most_specific_first() {
        let e = StoredEvent {
            seq: 9,
            event_id: "e".into(),
            event_type: "TaskFailed".into(),
            event_time_ms: NOW,
            session_id: Some("s".into()),
            workflow_id: Some("w".into()),
            task_id: None,
            backend: None,
            attributes: r#"{"error_type":"OOM"}"#.into(),
            received_ms: NOW,
        };
        assert_eq!(e.source(), "w");
        let json = e.to_json();
        assert_eq!(json["seq"], 9);
        assert_eq!(json["error_type"], "OOM");
        assert_eq!(json["event_time"], "2023-11-14T22:13:20.000Z");
        assert!(json.get("task_id").is_none());
    }
}
