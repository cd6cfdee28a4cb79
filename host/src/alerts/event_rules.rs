//! Event-count rules: how many events of one type, matching field filters,
//! arrived in a window, per group of field values — "more than 3
//! `TaskFailed` in 5 minutes per `workflow_id`". A field is looked up as a
//! stored scope (`session_id`, `workflow_id`, `task_id`, `backend`,
//! `execution_id`, `source_id`, `project_module`), else as a top-level field
//! of the event as sent, else in its `attributes` (`asyncflow.workflow_id`).
//! Each group that passes the comparison is one alert, labelled `event_type`
//! and its group fields (names made valid label names).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::StoredEvent;
use crate::metrics::model::{valid_name_for, ItemError};
use crate::store::{EventQuery, Store};

/// Most events one evaluation may count.
pub const MAX_EVENTS: u32 = 200_000;
/// Most filters or group fields.
const MAX_FIELDS: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl CmpOp {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CmpOp::Gt => a > b,
            CmpOp::Ge => a >= b,
            CmpOp::Lt => a < b,
            CmpOp::Le => a <= b,
            CmpOp::Eq => a == b,
            CmpOp::Ne => a != b,
        }
    }
}

/// A checked event-count rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventRule {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(rename = "where", default)]
    pub filters: BTreeMap<String, String>,
    pub window_ms: i64,
    #[serde(default)]
    pub by: Vec<String>,
    pub op: CmpOp,
    pub threshold: f64,
}

fn invalid(field: &str, reason: impl Into<String>) -> ItemError {
    ItemError::top(field, reason)
}

fn field_name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control)
}

/// Parses the `events` member of a rule body.
pub fn parse(v: &Value, errors: &mut Vec<ItemError>) -> Option<EventRule> {
    let Value::Object(m) = v else {
        errors.push(invalid(
            "events",
            "must be an object: type, where, window, by, op, threshold",
        ));
        return None;
    };
    let before = errors.len();
    for k in m.keys() {
        if !["type", "where", "window", "by", "op", "threshold"].contains(&k.as_str()) {
            errors.push(invalid(
                &format!("events.{k}"),
                "unknown field; use type, where, window, by, op, threshold",
            ));
        }
    }
    let event_type = match m.get("type") {
        Some(Value::String(s)) if field_name_ok(s) => s.clone(),
        _ => {
            errors.push(invalid("events.type", "required: the event type to count"));
            String::new()
        }
    };
    let mut filters = BTreeMap::new();
    match m.get("where") {
        None => {}
        Some(Value::Object(w)) if w.len() <= MAX_FIELDS => {
            for (k, v) in w {
                match v.as_str() {
                    Some(s) if field_name_ok(k) && !s.contains('\0') => {
                        filters.insert(k.clone(), s.to_string());
                    }
                    _ => errors.push(invalid(&format!("events.where.{k}"), "must be a string")),
                }
            }
        }
        Some(_) => errors.push(invalid(
            "events.where",
            format!("an object of at most {MAX_FIELDS} field: value strings"),
        )),
    }
    let window_ms = match m.get("window").and_then(Value::as_str) {
        Some(w) => match super::rules::parse_duration(w) {
            Ok(ms) if ms >= 1_000 => ms,
            Ok(_) => {
                errors.push(invalid("events.window", "at least 1s"));
                0
            }
            Err(e) => {
                errors.push(invalid("events.window", e));
                0
            }
        },
        None => {
            errors.push(invalid("events.window", "required: a duration like 5m"));
            0
        }
    };
    let mut by = Vec::new();
    match m.get("by") {
        None => {}
        Some(Value::Array(items)) if items.len() <= MAX_FIELDS => {
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if field_name_ok(s) => by.push(s.to_string()),
                    _ => errors.push(invalid(&format!("events.by[{i}]"), "must be a field name")),
                }
            }
        }
        Some(_) => errors.push(invalid("events.by", "a list of field names")),
    }
    let op = match m.get("op") {
        None => CmpOp::Gt,
        Some(v) => match serde_json::from_value::<CmpOp>(v.clone()) {
            Ok(op) => op,
            Err(_) => {
                errors.push(invalid("events.op", "one of >, >=, <, <=, ==, !="));
                CmpOp::Gt
            }
        },
    };
    let threshold = match m.get("threshold") {
        None => 0.0,
        Some(v) => match v.as_f64() {
            Some(t) if t.is_finite() => t,
            _ => {
                errors.push(invalid("events.threshold", "must be a number"));
                0.0
            }
        },
    };
    (errors.len() == before).then_some(EventRule {
        event_type,
        filters,
        window_ms,
        by,
        op,
        threshold,
    })
}

/// The value of `field` in `e`, as a string (numbers and booleans written
/// as JSON writes them).
fn field<'a>(e: &'a StoredEvent, body: &'a Value, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let column = match name {
        "event_type" | "type" => Some(e.event_type.as_str()),
        "session_id" => e.session_id.as_deref(),
        "workflow_id" => e.workflow_id.as_deref(),
        "task_id" => e.task_id.as_deref(),
        "backend" => e.backend.as_deref(),
        "execution_id" => e.execution_id.as_deref(),
        "source_id" => e.source_id.as_deref(),
        "project_module" => e.project_module.as_deref(),
        _ => None,
    };
    if let Some(c) = column {
        return Some(c.into());
    }
    let v = body
        .get(name)
        .or_else(|| body.get("attributes").and_then(|a| a.get(name)))?;
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Null => None,
        other => Some(other.to_string().into()),
    }
}

/// The groups of `events` (already of the rule's type, inside its window)
/// that pass the rule's comparison, with their counts.
pub fn count(rule: &EventRule, events: &[StoredEvent]) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut groups: BTreeMap<Vec<String>, f64> = BTreeMap::new();
    for e in events {
        let body: Value = serde_json::from_str(&e.body).unwrap_or(Value::Null);
        let passes = rule
            .filters
            .iter()
            .all(|(k, want)| field(e, &body, k).is_some_and(|v| v == want.as_str()));
        if !passes {
            continue;
        }
        let key: Vec<String> = rule
            .by
            .iter()
            .map(|f| {
                field(e, &body, f)
                    .map(|v| v.into_owned())
                    .unwrap_or_default()
            })
            .collect();
        *groups.entry(key).or_default() += 1.0;
    }
    groups
        .into_iter()
        .filter(|(_, n)| rule.op.holds(*n, rule.threshold))
        .map(|(key, n)| {
            let mut labels = BTreeMap::from([("event_type".to_string(), rule.event_type.clone())]);
            for (f, v) in rule.by.iter().zip(key) {
                if !v.is_empty() {
                    labels.insert(valid_name_for(f, false), v);
                }
            }
            (labels, n)
        })
        .collect()
}

/// Evaluates `rule` at `t_ms` over the stored events.
pub async fn evaluate(
    store: &dyn Store,
    rule: &EventRule,
    t_ms: i64,
) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> {
    let events = store
        .list_events(&EventQuery {
            event_types: vec![rule.event_type.clone()],
            // Event time in (t - window, t], as unix seconds.
            start: Some((t_ms - rule.window_ms) as f64 / 1_000.0 + 0.000_5),
            end: Some(t_ms as f64 / 1_000.0 + 0.000_5),
            limit: MAX_EVENTS,
            ..EventQuery::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if events.len() >= MAX_EVENTS as usize {
        return Err(format!(
            "more than {MAX_EVENTS} `{}` events in the window; narrow the rule",
            rule.event_type
        ));
    }
    Ok(count(rule, &events))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(workflow: &str, backend: &str, attrs: Value) -> StoredEvent {
        StoredEvent {
            seq: 1,
            event_id: "e".into(),
            event_type: "TaskFailed".into(),
            event_ts: 0.0,
            session_id: None,
            workflow_id: Some(workflow.into()),
            task_id: None,
            backend: Some(backend.into()),
            execution_id: None,
            source_id: None,
            project_module: None,
            body: serde_json::json!({"event_type": "TaskFailed", "attributes": attrs}).to_string(),
            received_ms: 0,
        }
    }

    fn rule(body: Value) -> EventRule {
        let mut errors = Vec::new();
        let r = parse(&body, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        r.unwrap()
    }

    #[test]
    fn more_than_three_failures_per_workflow_fire_per_workflow() {
        let r = rule(serde_json::json!({"type": "TaskFailed", "window": "5m",
            "by": ["workflow_id"], "op": ">", "threshold": 3, "where": {"backend": "dragon"}}));
        let mut events = Vec::new();
        for _ in 0..4 {
            events.push(event("wf-a", "dragon", serde_json::json!({})));
        }
        for _ in 0..3 {
            events.push(event("wf-b", "dragon", serde_json::json!({})));
        }
        // Filtered out by backend.
        for _ in 0..5 {
            events.push(event("wf-c", "local", serde_json::json!({})));
        }
        let got = count(&r, &events);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0["workflow_id"], "wf-a");
        assert_eq!(got[0].0["event_type"], "TaskFailed");
        assert_eq!(got[0].1, 4.0);
    }

    #[test]
    fn attribute_fields_group_under_valid_label_names() {
        let r = rule(serde_json::json!({"type": "TaskFailed", "window": "1m",
            "by": ["asyncflow.workflow_id"], "threshold": 0}));
        let events = vec![event(
            "x",
            "b",
            serde_json::json!({"asyncflow.workflow_id": "flow-1"}),
        )];
        let got = count(&r, &events);
        assert_eq!(got[0].0["asyncflow_workflow_id"], "flow-1");
    }

    #[test]
    fn bad_event_rules_name_each_field() {
        let mut errors = Vec::new();
        let r = parse(
            &serde_json::json!({"window": "soon", "op": "~", "threshold": "x", "by": "wf", "colour": 1}),
            &mut errors,
        );
        assert!(r.is_none());
        let mut fields: Vec<String> = errors.into_iter().map(|e| e.field).collect();
        fields.sort();
        assert_eq!(
            fields,
            vec![
                "events.by",
                "events.colour",
                "events.op",
                "events.threshold",
                "events.type",
                "events.window"
            ]
        );
    }
}
