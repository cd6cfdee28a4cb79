//! Alert rules as the API takes them: a name, a PromQL expression over the
//! stored samples, Prometheus's `for` and `keep_firing_for`, labels and
//! annotations, the evaluation interval, the channels it notifies and
//! Alertmanager's grouping knobs. Parsing and checking a body into a
//! [`RuleSpec`] lives here; evaluating it lives in `alerts::engine`, storing
//! it in `store::alert_rules`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::event_rules::{self, EventRule};
use super::promql;
use crate::metrics::model::{is_valid_label_name, ItemError};

/// Longest rule name.
const MAX_NAME: usize = 128;
/// Longest expression.
const MAX_EXPR: usize = 16 * 1024;
/// Most labels or annotations a rule may set.
const MAX_PAIRS: usize = 64;
/// Longest label or annotation value (templates included).
const MAX_VALUE: usize = 8 * 1024;
/// Most channels per rule.
const MAX_CHANNELS: usize = 32;

/// What an evaluation that returns nothing does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// As Prometheus: no series, no alerts (held alerts resolve, after
    /// `keep_firing_for`).
    #[default]
    Ok,
    /// Alerts stay as they are until data returns.
    KeepState,
    /// One alert `{alertname, alertstate_reason="no_data"}` fires.
    Alerting,
}

/// What a failed evaluation does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// As Prometheus: alerts stay as they are; the rule shows the error.
    #[default]
    KeepState,
    /// One alert `{alertname, alertstate_reason="error"}` fires.
    Alerting,
    /// Held alerts resolve.
    Ok,
}

/// A checked rule. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleSpec {
    pub name: String,
    /// PromQL; empty for an event-count rule.
    pub expr: String,
    /// The `alertname` label when it differs from the (unique) rule name,
    /// as for rules imported from a Prometheus rule file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    /// An event-count rule instead of `expr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventRule>,
    pub for_ms: i64,
    pub keep_firing_for_ms: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub interval_ms: i64,
    /// Channel ids.
    pub channels: Vec<String>,
    /// Label names; `["..."]` groups by every label (one group per alert).
    pub group_by: Vec<String>,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub no_data: NoData,
    pub on_error: OnError,
    pub enabled: bool,
}

impl RuleSpec {
    /// The `alertname` label of its alerts.
    pub fn alertname(&self) -> &str {
        self.alertname.as_deref().unwrap_or(&self.name)
    }

    /// The parsed expression (checked when the rule was accepted).
    pub fn query(&self) -> Result<promql::Query, promql::QueryError> {
        promql::parse(&self.expr)
    }
}

/// Defaults, as Prometheus and Alertmanager ship them where they have one.
pub const DEFAULT_INTERVAL_MS: i64 = 15_000;
pub const DEFAULT_GROUP_WAIT_MS: i64 = 30_000;
pub const DEFAULT_GROUP_INTERVAL_MS: i64 = 300_000;
pub const DEFAULT_REPEAT_INTERVAL_MS: i64 = 4 * 3_600_000;

fn invalid(field: &str, reason: impl Into<String>) -> ItemError {
    ItemError::top(field, reason)
}

/// Why a rule body was refused.
#[derive(Debug)]
pub enum RuleError {
    Malformed(String),
    Invalid(Vec<ItemError>),
}

/// Parses a Prometheus duration (`30s`, `5m`, `1h30m`, `0s`, `250ms`).
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(0);
    }
    let d = humantime::parse_duration(t).map_err(|_| {
        format!(
            "`{}` is not a duration like 30s, 5m or 1h30m",
            t.escape_debug()
        )
    })?;
    i64::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms <= 10 * 365 * 86_400_000)
        .ok_or_else(|| format!("`{}` is longer than ten years", t.escape_debug()))
}

/// Writes `ms` as Prometheus writes a duration (`1h30m`, `15s`, `0s`).
pub fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

/// What a channel reference resolves to: its id, or why it does not.
pub type ChannelLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn string_map(
    field: &str,
    v: &Value,
    errors: &mut Vec<ItemError>,
    label_names: bool,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Value::Object(m) = v else {
        errors.push(invalid(field, "must be an object of strings"));
        return out;
    };
    if m.len() > MAX_PAIRS {
        errors.push(invalid(field, format!("more than {MAX_PAIRS} entries")));
        return out;
    }
    for (k, v) in m {
        let f = format!("{field}.{k}");
        match v {
            Value::String(s) if s.len() > MAX_VALUE => {
                errors.push(invalid(&f, format!("longer than {MAX_VALUE} bytes")))
            }
            Value::String(s) if s.contains('\0') => {
                errors.push(invalid(&f, "contains a NUL character"))
            }
            Value::String(s) => {
                if label_names && !is_valid_label_name(k) {
                    errors.push(invalid(&f, "not a valid label name"));
                } else if label_names && (k == "alertname" || k.starts_with("__")) {
                    errors.push(invalid(&f, "set by the rule itself"));
                } else if let Err(e) = super::template::check(s) {
                    errors.push(invalid(&f, e));
                } else {
                    out.insert(k.clone(), s.clone());
                }
            }
            _ => errors.push(invalid(&f, "must be a string")),
        }
    }
    out
}

/// Parses and checks a create (`current` None) or replace/update body.
/// Fields left out of an update keep their value in `current`.
pub fn parse(
    body: &[u8],
    current: Option<&RuleSpec>,
    channel: ChannelLookup<'_>,
) -> Result<RuleSpec, RuleError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RuleError::Malformed(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(RuleError::Invalid(vec![invalid(
            "body",
            "must be a JSON object",
        )]));
    };
    parse_object(map, current, channel)
}

/// As [`parse`], from a JSON object.
pub fn parse_object(
    map: Map<String, Value>,
    current: Option<&RuleSpec>,
    channel: ChannelLookup<'_>,
) -> Result<RuleSpec, RuleError> {
    let mut errors = Vec::new();
    let mut spec = current.cloned().unwrap_or(RuleSpec {
        name: String::new(),
        expr: String::new(),
        alertname: None,
        events: None,
        for_ms: 0,
        keep_firing_for_ms: 0,
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        interval_ms: DEFAULT_INTERVAL_MS,
        channels: Vec::new(),
        group_by: Vec::new(),
        group_wait_ms: DEFAULT_GROUP_WAIT_MS,
        group_interval_ms: DEFAULT_GROUP_INTERVAL_MS,
        repeat_interval_ms: DEFAULT_REPEAT_INTERVAL_MS,
        no_data: NoData::Ok,
        on_error: OnError::KeepState,
        enabled: true,
    });
    let mut seen_name = current.is_some();
    let mut seen_expr = current.is_some();
    for (key, v) in &map {
        let duration = |errors: &mut Vec<ItemError>| -> Option<i64> {
            match v {
                Value::String(s) => parse_duration(s)
                    .map_err(|e| errors.push(invalid(key, e)))
                    .ok(),
                _ => {
                    errors.push(invalid(key, "must be a duration string like 5m"));
                    None
                }
            }
        };
        match key.as_str() {
            "name" => match v {
                Value::String(s)
                    if !s.is_empty()
                        && s.len() <= MAX_NAME
                        && s.chars().all(|c| {
                            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
                        }) =>
                {
                    spec.name = s.clone();
                    seen_name = true;
                }
                _ => errors.push(invalid(
                    key,
                    format!("1 to {MAX_NAME} characters of A-Z, a-z, 0-9, -, _, . and :"),
                )),
            },
            "alertname" => match v {
                Value::String(s) if !s.is_empty() && s.len() <= MAX_NAME && !s.contains('\0') => {
                    spec.alertname = Some(s.clone())
                }
                Value::Null => spec.alertname = None,
                _ => errors.push(invalid(key, format!("1 to {MAX_NAME} bytes, no NUL"))),
            },
            "expr" => match v {
                Value::String(s) if s.len() > MAX_EXPR => {
                    errors.push(invalid(key, format!("longer than {MAX_EXPR} bytes")))
                }
                Value::String(s) => {
                    seen_expr = true;
                    match promql::parse(s).and_then(|q| promql::check_alerting(&q).map(|_| q)) {
                        Ok(_) => {
                            spec.expr = s.clone();
                            spec.events = None;
                        }
                        Err(e) => errors.push(invalid(key, e.message)),
                    }
                }
                _ => errors.push(invalid(key, "must be a PromQL expression (string)")),
            },
            "events" => {
                seen_expr = true;
                if let Some(rule) = event_rules::parse(v, &mut errors) {
                    spec.events = Some(rule);
                    spec.expr.clear();
                }
            }
            "for" => {
                if let Some(ms) = duration(&mut errors) {
                    spec.for_ms = ms;
                }
            }
            "keep_firing_for" => {
                if let Some(ms) = duration(&mut errors) {
                    spec.keep_firing_for_ms = ms;
                }
            }
            "interval" => {
                if let Some(ms) = duration(&mut errors) {
                    if ms < 1_000 {
                        errors.push(invalid(key, "at least 1s"));
                    } else {
                        spec.interval_ms = ms;
                    }
                }
            }
            "group_wait" => {
                if let Some(ms) = duration(&mut errors) {
                    spec.group_wait_ms = ms;
                }
            }
            "group_interval" | "repeat_interval" => {
                if let Some(ms) = duration(&mut errors) {
                    if ms < 1_000 {
                        errors.push(invalid(key, "at least 1s"));
                    } else if key == "group_interval" {
                        spec.group_interval_ms = ms;
                    } else {
                        spec.repeat_interval_ms = ms;
                    }
                }
            }
            "labels" => spec.labels = string_map(key, v, &mut errors, true),
            "annotations" => spec.annotations = string_map(key, v, &mut errors, false),
            "channels" => match v {
                Value::Array(items) if items.len() <= MAX_CHANNELS => {
                    let mut ids = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        let f = format!("channels[{i}]");
                        match item.as_str() {
                            Some(r) => match channel(r) {
                                Some(id) if !ids.contains(&id) => ids.push(id),
                                Some(_) => {}
                                None => errors.push(invalid(
                                    &f,
                                    format!(
                                        "no notification channel named or with id `{}`",
                                        r.escape_debug()
                                    ),
                                )),
                            },
                            None => errors.push(invalid(&f, "must be a channel name or id")),
                        }
                    }
                    spec.channels = ids;
                }
                _ => errors.push(invalid(
                    key,
                    format!("must be a list of at most {MAX_CHANNELS} channel names or ids"),
                )),
            },
            "group_by" => match v {
                Value::Array(items) if items.len() <= MAX_PAIRS => {
                    let mut names = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        match item.as_str() {
                            Some(n) if n == "..." || is_valid_label_name(n) => {
                                if !names.iter().any(|x: &String| x == n) {
                                    names.push(n.to_string())
                                }
                            }
                            _ => errors.push(invalid(
                                &format!("group_by[{i}]"),
                                "must be a label name or \"...\"",
                            )),
                        }
                    }
                    if names.iter().any(|n| n == "...") && names.len() > 1 {
                        errors.push(invalid(key, "\"...\" groups by every label; give it alone"));
                    }
                    spec.group_by = names;
                }
                _ => errors.push(invalid(key, "must be a list of label names")),
            },
            "no_data" => match v.as_str() {
                Some("ok") => spec.no_data = NoData::Ok,
                Some("keep_state") => spec.no_data = NoData::KeepState,
                Some("alerting") => spec.no_data = NoData::Alerting,
                _ => errors.push(invalid(key, "one of ok, keep_state, alerting")),
            },
            "on_error" => match v.as_str() {
                Some("ok") => spec.on_error = OnError::Ok,
                Some("keep_state") => spec.on_error = OnError::KeepState,
                Some("alerting") => spec.on_error = OnError::Alerting,
                _ => errors.push(invalid(key, "one of keep_state, alerting, ok")),
            },
            "enabled" => match v {
                Value::Bool(b) => spec.enabled = *b,
                _ => errors.push(invalid(key, "must be true or false")),
            },
            "id" | "created_at" | "updated_at" | "health" | "last_error" | "last_evaluation" => {
                errors.push(invalid(key, "is set by the server"))
            }
            other => errors.push(invalid(
                other,
                "unknown field; use name, alertname, expr, events, for, keep_firing_for, labels, annotations, \
                 interval, channels, group_by, group_wait, group_interval, repeat_interval, \
                 no_data, on_error, enabled",
            )),
        }
    }
    if map.contains_key("expr") && map.contains_key("events") {
        errors.push(invalid(
            "events",
            "give either expr (PromQL) or events, not both",
        ));
    }
    for (field, seen) in [("name", seen_name), ("expr", seen_expr)] {
        if !seen && !errors.iter().any(|e| e.field == field) {
            errors.push(invalid(
                field,
                if field == "expr" {
                    "required (or `events` for an event-count rule)"
                } else {
                    "required"
                },
            ));
        }
    }
    if errors.is_empty() {
        Ok(spec)
    } else {
        Err(RuleError::Invalid(errors))
    }
}

/// A rule as the API shows it.
pub fn to_json(id: &str, spec: &RuleSpec, created_ms: i64, updated_ms: i64) -> Value {
    serde_json::json!({
        "id": id,
        "name": spec.name,
        "alertname": spec.alertname.as_deref().unwrap_or(&spec.name),
        "expr": spec.expr,
        "events": spec.events.as_ref().map(|e| serde_json::json!({
            "type": e.event_type,
            "where": e.filters,
            "window": format_duration(e.window_ms),
            "by": e.by,
            "op": e.op,
            "threshold": e.threshold,
        })),
        "for": format_duration(spec.for_ms),
        "keep_firing_for": format_duration(spec.keep_firing_for_ms),
        "labels": spec.labels,
        "annotations": spec.annotations,
        "interval": format_duration(spec.interval_ms),
        "channels": spec.channels,
        "group_by": spec.group_by,
        "group_wait": format_duration(spec.group_wait_ms),
        "group_interval": format_duration(spec.group_interval_ms),
        "repeat_interval": format_duration(spec.repeat_interval_ms),
        "no_data": spec.no_data,
        "on_error": spec.on_error,
        "enabled": spec.enabled,
        "created_at": super::rfc3339(created_ms),
        "updated_at": super::rfc3339(updated_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(r: &str) -> Option<String> {
        (r == "ops" || r == "id-1").then(|| "id-1".to_string())
    }

    fn parse_str(body: &str) -> Result<RuleSpec, RuleError> {
        parse(body.as_bytes(), None, &lookup)
    }

    fn fields(e: RuleError) -> Vec<String> {
        match e {
            RuleError::Invalid(items) => items.into_iter().map(|i| i.field).collect(),
            RuleError::Malformed(m) => vec![format!("malformed: {m}")],
        }
    }

    #[test]
    fn durations_read_and_write_as_prometheus_writes_them() {
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-5m").is_err());
        assert_eq!(format_duration(5_400_000), "1h30m");
        assert_eq!(format_duration(15_000), "15s");
        assert_eq!(format_duration(0), "0s");
    }

    #[test]
    fn a_rule_takes_defaults_and_resolves_its_channels_to_ids() {
        let spec = parse_str(
            r#"{"name": "QueueHigh", "expr": "queue_depth > 100", "for": "1m",
                "channels": ["ops", "id-1"], "labels": {"severity": "page"},
                "annotations": {"summary": "{{ $labels.component }} at {{ $value }}"}}"#,
        )
        .unwrap();
        assert_eq!(spec.for_ms, 60_000);
        assert_eq!(spec.channels, vec!["id-1".to_string()]);
        assert_eq!(spec.interval_ms, DEFAULT_INTERVAL_MS);
        assert_eq!(spec.group_wait_ms, DEFAULT_GROUP_WAIT_MS);
        assert_eq!(spec.no_data, NoData::Ok);
        let json = to_json("x", &spec, 0, 0);
        assert_eq!(json["for"], "1m");
        assert_eq!(json["repeat_interval"], "4h");
    }

    #[test]
    fn every_bad_field_is_named_and_nothing_is_accepted() {
        let e = parse_str(
            r#"{"name": "bad name", "expr": "rate(x[5m]", "for": "soon",
                "channels": ["nowhere"], "labels": {"alertname": "x", "9x": "y"},
                "group_by": ["...", "job"], "interval": "10ms", "no_data": "maybe",
                "colour": "red", "annotations": {"s": "{{ $labels.x "}}"#,
        )
        .unwrap_err();
        let mut f = fields(e);
        f.sort();
        assert_eq!(
            f,
            vec![
                "annotations.s",
                "channels[0]",
                "colour",
                "expr",
                "for",
                "group_by",
                "interval",
                "labels.9x",
                "labels.alertname",
                "name",
                "no_data"
            ]
        );
        assert_eq!(
            fields(parse_str(r#"{"for": "5m"}"#).unwrap_err()),
            vec!["name", "expr"]
        );
        assert!(matches!(parse_str("{"), Err(RuleError::Malformed(_))));
        assert_eq!(fields(parse_str("[1]").unwrap_err()), vec!["body"]);
    }

    #[test]
    fn a_scalar_expression_is_not_an_alerting_rule() {
        let e = parse_str(r#"{"name": "a", "expr": "1 + 1"}"#).unwrap_err();
        assert_eq!(fields(e), vec!["expr"]);
    }

    #[test]
    fn an_update_keeps_what_it_leaves_out() {
        let spec = parse_str(r#"{"name": "a", "expr": "up == 0", "for": "2m"}"#).unwrap();
        let updated = parse(br#"{"for": "5m"}"#, Some(&spec), &lookup).unwrap();
        assert_eq!(updated.for_ms, 300_000);
        assert_eq!(updated.expr, "up == 0");
    }
}
