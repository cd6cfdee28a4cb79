//! The bodies of `POST /api/v2/executions`, `PATCH /api/v2/executions/{id}`
//! and `POST /api/v2/executions/{id}/run-record`, validated. Every problem is
//! reported (field and reason), and a body with any problem changes nothing.

use serde_json::{Map, Value};

use super::profile::{check_key, check_text, MAX_KEYS};
use super::ExecutionState;
use crate::metrics::model::{parse_timestamp, ItemError};

/// Longest execution id, backend name, project module or source id.
pub const MAX_ID_BYTES: usize = 256;
/// Largest free-attributes object, serialized.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Largest run-record entry, serialized.
pub const MAX_ENTRY_BYTES: usize = 16 * 1024;
/// Most run-record entries posted at once.
pub const MAX_ENTRIES_PER_POST: usize = 100;

fn top(field: &str, reason: impl Into<String>) -> ItemError {
    ItemError {
        index: None,
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// An id-like string: 1 to 256 bytes, no control characters, no `/`.
pub fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > MAX_ID_BYTES {
        return Err(format!("1 to {MAX_ID_BYTES} bytes"));
    }
    if s.chars().any(|c| c.is_control() || c == '/') {
        return Err("must not contain control characters or `/`".into());
    }
    Ok(())
}

/// A backend name: 1 to 64 lower-case letters, digits, `_`, `-`, `.`.
pub fn check_backend(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
    {
        return Err(
            "a backend name is 1 to 64 lower-case letters, digits, `_`, `-` or `.` (e.g. dim, slurm)"
                .into(),
        );
    }
    Ok(())
}

fn take_string(
    fields: &mut Map<String, Value>,
    key: &str,
    check: fn(&str) -> Result<(), String>,
    errors: &mut Vec<ItemError>,
) -> Option<String> {
    match fields.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match check(&s) {
            Ok(()) => Some(s),
            Err(e) => {
                errors.push(top(key, e));
                None
            }
        },
        Some(_) => {
            errors.push(top(key, "expected a string"));
            None
        }
    }
}

/// An object-valued field; `None` when absent. `allow_null` keeps `null`
/// members (an update's "remove this key").
fn take_object(
    fields: &mut Map<String, Value>,
    key: &str,
    errors: &mut Vec<ItemError>,
) -> Option<Map<String, Value>> {
    match fields.remove(key) {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            if m.len() > MAX_KEYS {
                errors.push(top(key, format!("more than {MAX_KEYS} keys")));
                return None;
            }
            for k in m.keys() {
                if let Err(e) = check_key(k) {
                    errors.push(top(&format!("{key}.{}", k.escape_debug()), e));
                }
            }
            Some(m)
        }
        Some(_) => {
            errors.push(top(key, "expected a JSON object"));
            None
        }
    }
}

fn check_scheduler_ids(m: &Map<String, Value>, nulls: bool, errors: &mut Vec<ItemError>) {
    for (k, v) in m {
        let r = match v {
            Value::String(s) => check_text(s),
            Value::Null if nulls => Ok(()),
            _ => Err("scheduler ids are strings".into()),
        };
        if let Err(e) = r {
            errors.push(top(&format!("scheduler_ids.{k}"), e));
        }
    }
}

fn check_attributes(m: &Map<String, Value>, errors: &mut Vec<ItemError>) {
    if Value::Object(m.clone()).to_string().len() > MAX_ATTRIBUTES_BYTES {
        errors.push(top(
            "attributes",
            format!("larger than {MAX_ATTRIBUTES_BYTES} bytes"),
        ));
    }
    for (k, v) in m {
        if let Value::String(s) = v {
            if s.chars().any(char::is_control) {
                errors.push(top(
                    &format!("attributes.{k}"),
                    "must not contain control characters",
                ));
            }
        }
    }
}

fn unknown(fields: Map<String, Value>, known: &str, errors: &mut Vec<ItemError>) {
    for k in fields.keys() {
        errors.push(top(
            &k.escape_debug().to_string(),
            format!("unknown field; use {known}"),
        ));
    }
}

fn body_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BodyError::Invalid(vec![top("", "expected a JSON object")])),
        Err(e) => Err(BodyError::Malformed(e.to_string())),
    }
}

/// Why a body was refused.
#[derive(Debug)]
pub enum BodyError {
    Malformed(String),
    Invalid(Vec<ItemError>),
    TooLarge(String),
}

/// A validated `POST /api/v2/executions` body.
#[derive(Clone, Debug, PartialEq)]
pub struct NewExecution {
    pub id: Option<String>,
    pub backend: String,
    pub project_module: Option<String>,
    pub source_id: Option<String>,
    pub state: ExecutionState,
    pub scheduler_ids: Map<String, Value>,
    pub profile: Map<String, Value>,
    pub attributes: Map<String, Value>,
}

fn take_state(
    fields: &mut Map<String, Value>,
    errors: &mut Vec<ItemError>,
) -> Option<ExecutionState> {
    match fields.remove("state") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match ExecutionState::parse(&s) {
            Some(st) => Some(st),
            None => {
                errors.push(top(
                    "state",
                    format!(
                        "`{}` is not a state; use pending, submitted, running, completed, failed or cancelled",
                        s.escape_debug()
                    ),
                ));
                None
            }
        },
        Some(_) => {
            errors.push(top("state", "expected a string"));
            None
        }
    }
}

/// Parses a create body.
pub fn parse_new(body: &[u8]) -> Result<NewExecution, BodyError> {
    let mut fields = body_object(body)?;
    let mut errors = Vec::new();
    let id = take_string(&mut fields, "id", check_id, &mut errors);
    let backend = take_string(&mut fields, "backend", check_backend, &mut errors);
    if backend.is_none() && !errors.iter().any(|e| e.field == "backend") {
        errors.push(top("backend", "required (e.g. dim, slurm)"));
    }
    let project_module = take_string(&mut fields, "project_module", check_id, &mut errors);
    let source_id = take_string(&mut fields, "source_id", check_id, &mut errors);
    let state = take_state(&mut fields, &mut errors).unwrap_or(ExecutionState::Pending);
    let scheduler_ids = take_object(&mut fields, "scheduler_ids", &mut errors).unwrap_or_default();
    check_scheduler_ids(&scheduler_ids, false, &mut errors);
    let profile = take_object(&mut fields, "profile", &mut errors).unwrap_or_default();
    let attributes = take_object(&mut fields, "attributes", &mut errors).unwrap_or_default();
    check_attributes(&attributes, &mut errors);
    if let Some(b) = &backend {
        super::profile::check_profile(b, &profile, &mut errors);
    }
    unknown(
        fields,
        "id, backend, project_module, source_id, state, scheduler_ids, profile, attributes",
        &mut errors,
    );
    match (backend, errors.is_empty()) {
        (Some(backend), true) => Ok(NewExecution {
            id,
            backend,
            project_module,
            source_id,
            state,
            scheduler_ids,
            profile,
            attributes,
        }),
        _ => Err(BodyError::Invalid(errors)),
    }
}

/// A validated `PATCH /api/v2/executions/{id}` body: a new state and/or
/// merge patches (a `null` member removes that key).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExecutionPatch {
    pub state: Option<ExecutionState>,
    pub scheduler_ids: Option<Map<String, Value>>,
    pub profile: Option<Map<String, Value>>,
    pub attributes: Option<Map<String, Value>>,
}

/// Parses an update body. Id, backend, project module and source are fixed
/// at creation.
pub fn parse_patch(body: &[u8]) -> Result<ExecutionPatch, BodyError> {
    let mut fields = body_object(body)?;
    let mut errors = Vec::new();
    for fixed in ["id", "backend", "project_module", "source_id"] {
        if fields.remove(fixed).is_some() {
            errors.push(top(fixed, "fixed when the execution was created"));
        }
    }
    let state = take_state(&mut fields, &mut errors);
    let scheduler_ids = take_object(&mut fields, "scheduler_ids", &mut errors);
    if let Some(m) = &scheduler_ids {
        check_scheduler_ids(m, true, &mut errors);
    }
    let profile = take_object(&mut fields, "profile", &mut errors);
    let attributes = take_object(&mut fields, "attributes", &mut errors);
    if let Some(m) = &attributes {
        check_attributes(m, &mut errors);
    }
    unknown(
        fields,
        "state, scheduler_ids, profile, attributes",
        &mut errors,
    );
    if errors.is_empty() {
        Ok(ExecutionPatch {
            state,
            scheduler_ids,
            profile,
            attributes,
        })
    } else {
        Err(BodyError::Invalid(errors))
    }
}

/// Applies a merge patch: `null` removes a key, anything else sets it.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// Parses run-record entries: one object, an array, or `{"entries": [...]}`.
/// Each entry: `phase` (required: `submit`, `poll`, `cancel` or another
/// word of lower-case letters and `_`), `attempt` (whole number), `at`
/// (time; default now), `status` (the scheduler's state word), `answer`
/// (the scheduler's answer, any JSON), `error` (text), `detail` (any JSON).
/// Returns each entry as stored (with `at` in RFC 3339).
pub fn parse_run_record(body: &[u8], now_ms: i64) -> Result<Vec<Value>, BodyError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(mut o) if o.contains_key("entries") && !o.contains_key("phase") => {
            match o.remove("entries") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(BodyError::Invalid(vec![top(
                        "entries",
                        "expected an array of entries",
                    )]))
                }
            }
        }
        single @ Value::Object(_) => vec![single],
        _ => {
            return Err(BodyError::Invalid(vec![top(
                "",
                "expected an entry object, an array of entries or {\"entries\": [...]}",
            )]))
        }
    };
    if items.is_empty() {
        return Err(BodyError::Invalid(vec![top(
            "entries",
            "no entries in the body",
        )]));
    }
    if items.len() > MAX_ENTRIES_PER_POST {
        return Err(BodyError::TooLarge(format!(
            "{} run-record entries in one request; at most {MAX_ENTRIES_PER_POST}",
            items.len()
        )));
    }
    let mut errors = Vec::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let err = |field: &str, reason: String| ItemError {
            index: Some(i),
            field: field.to_string(),
            reason,
        };
        let size = item.to_string().len();
        if size > MAX_ENTRY_BYTES {
            return Err(BodyError::TooLarge(format!(
                "run-record entry {i} is {size} bytes; an entry holds at most {MAX_ENTRY_BYTES}"
            )));
        }
        let Value::Object(mut fields) = item else {
            errors.push(err("", "expected a JSON object".into()));
            continue;
        };
        let mut entry = Map::new();
        match fields.remove("phase") {
            Some(Value::String(p))
                if !p.is_empty()
                    && p.len() <= 32
                    && p.chars().all(|c| c.is_ascii_lowercase() || c == '_') =>
            {
                entry.insert("phase".into(), Value::String(p));
            }
            Some(_) => errors.push(err(
                "phase",
                "1 to 32 lower-case letters or `_` (submit, poll, cancel, …)".into(),
            )),
            None => errors.push(err("phase", "required (submit, poll, cancel, …)".into())),
        }
        match fields.remove("attempt") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) if n.as_u64().is_some_and(|a| a <= u64::from(u32::MAX)) => {
                entry.insert("attempt".into(), Value::Number(n));
            }
            Some(_) => errors.push(err("attempt", "a whole number from 0".into())),
        }
        let at = match fields.remove("at") {
            None | Some(Value::Null) => Ok(now_ms),
            Some(v) => parse_timestamp(&v),
        };
        match at {
            Ok(ms) => {
                entry.insert("at".into(), crate::metrics::model::format_ms(ms).into());
            }
            Err(e) => errors.push(err("at", e)),
        }
        for key in ["status", "error"] {
            match fields.remove(key) {
                None | Some(Value::Null) => {}
                Some(Value::String(s))
                    if !s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') =>
                {
                    entry.insert(key.into(), Value::String(s));
                }
                Some(Value::String(_)) => {
                    errors.push(err(key, "must not contain control characters".into()))
                }
                Some(_) => errors.push(err(key, "expected a string".into())),
            }
        }
        for key in ["answer", "detail"] {
            if let Some(v) = fields.remove(key) {
                entry.insert(key.into(), v);
            }
        }
        for k in fields.keys() {
            errors.push(err(
                &k.escape_debug().to_string(),
                "unknown field; use phase, attempt, at, status, answer, error, detail".into(),
            ));
        }
        out.push(Value::Object(entry));
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(BodyError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(r: Result<impl std::fmt::Debug, BodyError>) -> Vec<String> {
        match r {
            Err(BodyError::Invalid(items)) => items.into_iter().map(|e| e.field).collect(),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_create_body_needs_a_backend_and_refuses_unknown_or_bad_fields() {
        let e = parse_new(
            br#"{"id":"run/1","state":"done","scheduler_ids":{"job_id":7},"colour":"red","attributes":{"a b":1}}"#,
        );
        assert_eq!(
            invalid(e),
            vec![
                "id",
                "backend",
                "state",
                "scheduler_ids.job_id",
                "attributes.a b",
                "colour"
            ]
        );
        let ok = parse_new(br#"{"backend":"slurm","profile":{"login_node":"ln1"}}"#).unwrap();
        assert_eq!(ok.state, ExecutionState::Pending);
        assert!(matches!(parse_new(b"{nope"), Err(BodyError::Malformed(_))));
        assert_eq!(
            invalid(parse_new(br#"{"backend":"Dim!"}"#)),
            vec!["backend"]
        );
    }

    #[test]
    fn a_patch_may_not_change_what_was_fixed_at_creation() {
        assert_eq!(
            invalid(parse_patch(
                br#"{"backend":"dim","id":"x","state":"running"}"#
            )),
            vec!["id", "backend"]
        );
        let p = parse_patch(br#"{"state":"running","attributes":{"gone":null}}"#).unwrap();
        assert_eq!(p.state, Some(ExecutionState::Running));
        let mut target = Map::new();
        target.insert("gone".into(), Value::from(1));
        target.insert("kept".into(), Value::from(2));
        merge(&mut target, p.attributes.as_ref().unwrap());
        assert_eq!(Value::Object(target), serde_json::json!({"kept": 2}));
    }

    #[test]
    fn run_record_entries_are_checked_and_bounded() {
        let entries = parse_run_record(
            br#"[{"phase":"submit","attempt":1,"answer":{"job":"42"}},{"phase":"poll","status":"RUNNING","at":1700000000}]"#,
            1_000,
        )
        .unwrap();
        assert_eq!(entries[0]["at"], "1970-01-01T00:00:01.000Z");
        assert_eq!(entries[1]["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            invalid(parse_run_record(
                br#"[{"attempt":-1},{"phase":"Poll!","bogus":1}]"#,
                0
            )),
            vec!["phase", "attempt", "phase", "bogus"]
        );
        let huge = format!(
            r#"{{"phase":"poll","answer":"{}"}}"#,
            "x".repeat(MAX_ENTRY_BYTES)
        );
        assert!(matches!(
            parse_run_record(huge.as_bytes(), 0),
            Err(BodyError::TooLarge(_))
        ));
    }
}
