//! Parsing and validation of an events body: one event object, an array of
//! events, `{"events": [...]}`, or NDJSON (RHAPSODY's checkpoint file, whose
//! `section: "metric"` and `section: "span"` lines are skipped and counted).
//! Every bad event is listed; a body with one is refused as a whole.

use serde_json::{Map, Value};

use super::json::{self, NonFinite};
use super::NewEvent;
use crate::metrics::model::ItemError;

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

/// RHAPSODY's `BaseEvent` fields: what `define_event()` forbids custom
/// fields to shadow, and what Vigil checks the type of.
pub const BASE_FIELDS: &[&str] = &[
    "event_id",
    "event_type",
    "event_time",
    "emit_time",
    "session_id",
    "backend",
    "task_id",
    "node_id",
    "attributes",
];

/// Longest accepted identifier or type name, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Most top-level fields, and most `attributes` entries, of one event.
pub const MAX_FIELDS: usize = 256;
/// Largest accepted event, as JSON text.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// Why an events body was refused as a whole.
#[derive(Debug)]
pub enum EventsError {
    MalformedJson(String),
    Invalid(Vec<ItemError>),
    TooManyItems { count: usize, limit: usize },
}

/// What a body held.
#[derive(Debug, Default)]
pub struct ParsedEvents {
    pub events: Vec<NewEvent>,
    /// NDJSON lines of other sections (`metric`, `span`, …), by section.
    pub skipped: std::collections::BTreeMap<String, usize>,
}

/// Whether `name` is an accepted event type: a core type, or a custom type
/// as RHAPSODY's `define_event()` accepts it (containing a dot), at most
/// [`MAX_ID_LEN`] bytes, without control characters.
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
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if !name.contains('.') {
        return Err(format!(
            "`{name}` is not a core event type ({}); custom event types are namespaced with a dot, as define_event() requires, e.g. `myapp.{name}`",
            CORE_EVENT_TYPES.join(", ")
        ));
    }
    Ok(())
}

fn check_id(value: &Value) -> Result<String, String> {
    let s = match value {
        Value::String(s) => s.clone(),
        // Task ids are sometimes numbers; index them by their decimal text.
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

/// A time as unix seconds: a finite number, RFC 3339 (an ISO time without
/// offset is UTC; a space instead of `T` is accepted), or unix seconds as text.
pub fn parse_event_time(value: &Value) -> Result<f64, String> {
    let secs = match value {
        Value::Number(n) => n.as_f64().ok_or("not a number")?,
        Value::String(s) => {
            if json::marker_value(s).is_some() {
                return Err(format!("must be finite, got {}", &s[1..]));
            }
            parse_time_text(s)?
        }
        _ => return Err("expected unix seconds or an RFC 3339 string".into()),
    };
    if !secs.is_finite() || !(0.0..=7_258_118_400.0).contains(&secs) {
        return Err("outside the years 1970 to 2200".into());
    }
    Ok(secs)
}

/// A time given as text (a query parameter): RFC 3339, ISO without offset,
/// or unix seconds, as unix seconds.
pub fn parse_time_value(s: &str) -> Result<f64, String> {
    parse_event_time(&Value::String(s.to_string()))
}

fn parse_time_text(s: &str) -> Result<f64, String> {
    use chrono::{DateTime, NaiveDateTime};
    let seconds = |t: chrono::DateTime<chrono::Utc>| {
        t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(seconds(t.with_timezone(&chrono::Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(seconds(t.and_utc()));
        }
    }
    if let Ok(t) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(seconds(t.with_timezone(&chrono::Utc)));
    }
    s.trim()
        .parse::<f64>()
        .map_err(|_| format!("`{s}` is neither RFC 3339 nor unix seconds"))
}

fn new_event_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Validates one event object and extracts what Vigil indexes.
fn parse_one(
    index: usize,
    value: Value,
    now_s: f64,
    errors: &mut Vec<ItemError>,
) -> Option<NewEvent> {
    let err = |field: &str, reason: String| ItemError {
        index: Some(index),
        field: field.to_string(),
        reason,
    };
    let Value::Object(fields) = &value else {
        errors.push(err("", "expected a JSON object".into()));
        return None;
    };
    let before = errors.len();
    if json::has_stray_nul(&value) {
        errors.push(err("", "must not contain NUL characters".into()));
        return None;
    }
    let event_type = match fields.get("event_type") {
        Some(Value::String(t)) => match check_event_type(t) {
            Ok(()) => Some(t.clone()),
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
    let mut optional_id = |key: &str, map: &Map<String, Value>, path: &str| -> Option<String> {
        match map.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => match check_id(v) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(err(path, e));
                    None
                }
            },
        }
    };
    let event_id = optional_id("event_id", fields, "event_id");
    let session_id = optional_id("session_id", fields, "session_id");
    let task_id = optional_id("task_id", fields, "task_id");
    let backend = optional_id("backend", fields, "backend");
    let _node_id = optional_id("node_id", fields, "node_id");
    let top_workflow = optional_id("workflow_id", fields, "workflow_id");
    let top_scoped = optional_id("asyncflow.workflow_id", fields, "asyncflow.workflow_id");
    let (attributes, attributes_error) = match fields.get("attributes") {
        None | Some(Value::Null) => (None, None),
        Some(Value::Object(a)) => (Some(a), None),
        Some(_) => (None, Some(err("attributes", "expected an object".into()))),
    };
    let scoped = attributes.and_then(|a| {
        optional_id(
            "asyncflow.workflow_id",
            a,
            "attributes.asyncflow.workflow_id",
        )
    });
    errors.extend(attributes_error);
    // Provenance scopes: string fields only (other types are not scopes).
    let scope = |key: &str| -> Option<String> {
        let pick = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        pick(fields.get(key))
            .or_else(|| pick(attributes.and_then(|a| a.get(key))))
            .filter(|s| s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control))
    };
    let (execution_id, source_id, project_module) = (
        scope("execution_id"),
        scope("source_id"),
        scope("project_module"),
    );
    // AsyncFlow's workflow_scope() puts the id in `attributes`; a top-level
    // `workflow_id` or `asyncflow.workflow_id` is read too. They must agree.
    let mut workflow_id: Option<String> = None;
    for (field, id) in [
        ("attributes.asyncflow.workflow_id", scoped),
        ("workflow_id", top_workflow),
        ("asyncflow.workflow_id", top_scoped),
    ] {
        match (&workflow_id, id) {
            (Some(w), Some(other)) if *w != other => errors.push(err(
                field,
                format!(
                    "`{other}` differs from the workflow id `{w}` given elsewhere in the event"
                ),
            )),
            (None, Some(id)) => workflow_id = Some(id),
            _ => {}
        }
    }
    let event_ts = match fields.get("event_time") {
        None | Some(Value::Null) => Some(now_s),
        Some(v) => match parse_event_time(v) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(err("event_time", e));
                None
            }
        },
    };
    if let Some(v) = fields.get("emit_time").filter(|v| !v.is_null()) {
        if let Err(e) = parse_event_time(v) {
            errors.push(err("emit_time", e));
        }
    }
    if fields.len() > MAX_FIELDS {
        errors.push(err(
            "",
            format!("{} fields; at most {MAX_FIELDS}", fields.len()),
        ));
    }
    if attributes.is_some_and(|a| a.len() > MAX_FIELDS) {
        errors.push(err(
            "attributes",
            format!("more than {MAX_FIELDS} attributes"),
        ));
    }
    let mut body = String::with_capacity(256);
    json::write_value(&mut body, &value, NonFinite::Python);
    if body.len() > MAX_EVENT_BYTES {
        errors.push(err(
            "",
            format!("{} bytes as JSON; at most {MAX_EVENT_BYTES}", body.len()),
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(NewEvent {
        event_id: event_id.unwrap_or_else(new_event_id),
        event_type: event_type?,
        event_ts: event_ts?,
        session_id,
        workflow_id,
        task_id,
        backend,
        execution_id,
        source_id,
        project_module,
        body,
    })
}

fn invalid(field: &str, reason: &str) -> EventsError {
    EventsError::Invalid(vec![ItemError {
        index: None,
        field: field.into(),
        reason: reason.into(),
    }])
}

/// The items of a JSON body: one event, an array, or `{"events": [...]}`.
fn json_items(body: &[u8]) -> Result<Vec<Value>, EventsError> {
    let marked = json::mark_non_finite(body);
    let value: Value =
        serde_json::from_slice(&marked).map_err(|e| EventsError::MalformedJson(e.to_string()))?;
    match value {
        Value::Array(items) => Ok(items),
        Value::Object(mut o) if o.contains_key("events") && !o.contains_key("event_type") => {
            match o.remove("events") {
                Some(Value::Array(items)) => Ok(items),
                _ => Err(invalid("events", "expected an array of events")),
            }
        }
        single @ Value::Object(_) => Ok(vec![single]),
        _ => Err(invalid(
            "",
            "expected an event object, an array of events or {\"events\": [...]}",
        )),
    }
}

/// The event lines of an NDJSON body, and the other sections skipped. A line
/// without `section` is an event, as is `section: "event"`.
fn ndjson_items(
    body: &[u8],
    skipped: &mut std::collections::BTreeMap<String, usize>,
) -> Result<Vec<Value>, EventsError> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (n, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let marked = json::mark_non_finite(line);
        match serde_json::from_slice::<Value>(&marked) {
            Ok(v) => match v.get("section").and_then(Value::as_str) {
                None | Some("event") => items.push(v),
                Some(other) => *skipped.entry(other.to_string()).or_insert(0) += 1,
            },
            Err(e) => errors.push(ItemError {
                index: Some(items.len()),
                field: format!("line {}", n + 1),
                reason: format!("not a JSON object: {e}"),
            }),
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(EventsError::Invalid(errors))
    }
}

/// Parses and validates an events body (`ndjson`: one event per line).
/// Every bad item is listed; nothing is partial. Duplicate `event_id`s
/// inside one body are an error.
pub fn parse_events(
    body: &[u8],
    ndjson: bool,
    max_items: usize,
    now_ms: i64,
) -> Result<ParsedEvents, EventsError> {
    let mut parsed = ParsedEvents::default();
    let items = if ndjson {
        ndjson_items(body, &mut parsed.skipped)?
    } else {
        json_items(body)?
    };
    if items.len() > max_items {
        return Err(EventsError::TooManyItems {
            count: items.len(),
            limit: max_items,
        });
    }
    if items.is_empty() && parsed.skipped.is_empty() {
        return Err(invalid("events", "no events in the body"));
    }
    let now_s = now_ms as f64 / 1000.0;
    let mut errors = Vec::new();
    parsed.events.reserve(items.len());
    let mut seen = std::collections::HashMap::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(e) = parse_one(i, item, now_s, &mut errors) {
            if let Some(first) = seen.insert(e.event_id.clone(), i) {
                errors.push(ItemError {
                    index: Some(i),
                    field: "event_id".into(),
                    reason: format!("`{}` repeats the event at index {first}", e.event_id),
                });
            }
            parsed.events.push(e);
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(EventsError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(body: &str) -> Result<Vec<NewEvent>, EventsError> {
        parse_events(body.as_bytes(), false, 100, NOW).map(|p| p.events)
    }

    fn invalid(body: &str) -> Vec<ItemError> {
        match parse(body) {
            Err(EventsError::Invalid(items)) => items,
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_rhapsody_event_is_kept_exactly_and_its_workflow_read_from_attributes() {
        let sent = r#"{"event_id":"3f2a","event_type":"TaskCompleted","event_time":1700000001.1234567,"emit_time":1700000001.2345679,"session_id":"s1","backend":"concurrent","task_id":null,"node_id":null,"attributes":{"executable":"sleep","asyncflow.workflow_id":"block.000002"},"duration_seconds":0.1,"seq":7}"#;
        let events = parse(sent).unwrap();
        let e = &events[0];
        assert_eq!(e.event_id, "3f2a");
        assert_eq!(e.event_ts.to_bits(), 1700000001.1234567f64.to_bits());
        assert_eq!(e.workflow_id.as_deref(), Some("block.000002"));
        assert_eq!(e.task_id, None);
        assert_eq!(e.body, sent, "the body is the event as sent");
    }

    #[test]
    fn python_non_finite_floats_are_accepted_and_kept() {
        let sent = r#"{"event_type":"asyncflow.LossReported","event_id":"x","loss":Infinity,"grad":NaN,"low":-Infinity}"#;
        let e = &parse(sent).unwrap()[0];
        assert_eq!(e.body, sent);
        let errors = invalid(r#"{"event_type":"TaskStarted","event_time":NaN}"#);
        assert_eq!(errors[0].field, "event_time");
    }

    #[test]
    fn custom_types_need_a_dot_and_any_non_base_field_name_is_kept() {
        for ok in ["ns:colon.Event", "a.b c", "x.y", "asyncflow.TaskResolved"] {
            assert!(check_event_type(ok).is_ok(), "{ok}");
        }
        for bad in ["Checkpoint", "", "a.\u{7}b"] {
            assert!(check_event_type(bad).is_err(), "{bad:?}");
        }
        let e = &parse(r#"{"event_type":"a.b","seq":1,"":2,"a b":3}"#).unwrap()[0];
        assert!(e.body.contains(r#""seq":1"#));
    }

    #[test]
    fn every_bad_item_is_reported_with_its_index_and_field() {
        let errors = invalid(
            r#"[{"event_type":"Checkpoint"},{"event_type":7},{},
                {"event_type":"TaskStarted","event_time":"yesterday"},
                {"event_type":"TaskStarted","task_id":{"x":1}},
                {"event_type":"TaskStarted","attributes":[1]},"x",
                {"event_type":"TaskStarted","workflow_id":"a","attributes":{"asyncflow.workflow_id":"b"}},
                {"event_type":"TaskStarted","session_id":"a\u0000b"}]"#,
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
                (Some(5), "attributes"),
                (Some(6), ""),
                (Some(7), "workflow_id"),
                (Some(8), ""),
            ]
        );
    }

    #[test]
    fn ndjson_checkpoint_lines_of_other_sections_are_skipped_and_counted() {
        let file = "{\"event_id\":\"a\",\"event_type\":\"TaskCreated\",\"event_time\":1700000000.5,\"section\":\"event\",\"trace_id\":\"0x1\",\"span_id\":\"0x2\",\"name\":\"TaskCreated\"}\n\
                    {\"checkpoint_time\":1700000001.0,\"tasks_total\":Infinity,\"section\":\"metric\"}\n\
                    \n\
                    {\"name\":\"task\",\"section\":\"span\"}\n";
        let parsed = parse_events(file.as_bytes(), true, 100, NOW).unwrap();
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.skipped.get("metric"), Some(&1));
        assert_eq!(parsed.skipped.get("span"), Some(&1));
        assert!(parsed.events[0].body.contains("\"trace_id\":\"0x1\""));
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
    fn times_may_be_floats_rfc3339_or_python_str_datetime() {
        let a = parse_event_time(&serde_json::json!(1700000000.000123)).unwrap();
        let b = parse_event_time(&serde_json::json!("2023-11-14T22:13:20.000123Z")).unwrap();
        let c = parse_event_time(&serde_json::json!("2023-11-14 22:13:20.000123")).unwrap();
        assert!((a - b).abs() < 1e-6 && (b - c).abs() < 1e-9, "{a} {b} {c}");
    }
}
