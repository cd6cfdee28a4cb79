//! Silences as Alertmanager's API v2 writes them: matchers (`name`,
//! `value`, `isRegex`, `isEqual`: `=`, `!=`, `=~`, `!~`, regexes anchored,
//! a missing label matching as ""), `startsAt`, `endsAt`, `createdBy`,
//! `comment`; `pending` before its start, `active`, `expired` after its end
//! (expiring early sets the end to now). An alert is silenced while an
//! active silence's matchers all match its labels. Storage is in
//! `store::alert_rules`; the effect on notifications in `alerts::state`.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::metrics::model::{is_valid_label_name, ItemError};

/// Most matchers per silence.
const MAX_MATCHERS: usize = 32;
/// Longest matcher value, comment or creator.
const MAX_TEXT: usize = 4096;

/// One matcher, as stored and answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// A checked silence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at_ms: i64,
    pub ends_at_ms: i64,
    pub created_by: String,
    pub comment: String,
    pub updated_ms: i64,
}

/// A silence with its regexes compiled, for matching.
pub struct ActiveSilence {
    pub id: String,
    matchers: Vec<(SilenceMatcher, Option<Regex>)>,
}

impl ActiveSilence {
    pub fn new(s: &Silence) -> Option<ActiveSilence> {
        let mut matchers = Vec::new();
        for m in &s.matchers {
            let re = if m.is_regex {
                Some(Regex::new(&format!("^(?:{})$", m.value)).ok()?)
            } else {
                None
            };
            matchers.push((m.clone(), re));
        }
        Some(ActiveSilence {
            id: s.id.clone(),
            matchers,
        })
    }

    /// Whether every matcher matches `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matchers.iter().all(|(m, re)| {
            let v = labels.get(&m.name).map_or("", String::as_str);
            let hit = match re {
                Some(re) => re.is_match(v),
                None => v == m.value,
            };
            hit == m.is_equal
        })
    }
}

impl Silence {
    /// `pending`, `active` or `expired` at `now_ms`.
    pub fn state(&self, now_ms: i64) -> &'static str {
        if now_ms < self.starts_at_ms {
            "pending"
        } else if now_ms < self.ends_at_ms {
            "active"
        } else {
            "expired"
        }
    }

    /// As Alertmanager's API v2 answers it.
    pub fn to_json(&self, now_ms: i64) -> Value {
        json!({
            "id": self.id,
            "matchers": self.matchers,
            "startsAt": super::rfc3339(self.starts_at_ms),
            "endsAt": super::rfc3339(self.ends_at_ms),
            "createdBy": self.created_by,
            "comment": self.comment,
            "updatedAt": super::rfc3339(self.updated_ms),
            "status": {"state": self.state(now_ms)},
        })
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ItemError {
    ItemError::top(field, reason)
}

fn time_of(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn text(map: &serde_json::Map<String, Value>, key: &str, errors: &mut Vec<ItemError>) -> String {
    match map.get(key) {
        Some(Value::String(s)) if s.trim().is_empty() => {
            errors.push(invalid(key, "must not be empty"));
            String::new()
        }
        Some(Value::String(s)) if s.len() > MAX_TEXT || s.contains('\0') => {
            errors.push(invalid(key, format!("at most {MAX_TEXT} bytes, no NUL")));
            String::new()
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            errors.push(invalid(key, "must be a string"));
            String::new()
        }
        None => {
            errors.push(invalid(key, "required"));
            String::new()
        }
    }
}

/// Parses a create body (Alertmanager's `postableSilence`, without `id`).
/// `startsAt` defaults to now; `endsAt` is required and after the start.
pub fn parse(body: &[u8], id: String, now_ms: i64) -> Result<Silence, super::rules::RuleError> {
    use super::rules::RuleError;
    let value: Value =
        serde_json::from_slice(body).map_err(|e| RuleError::Malformed(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(RuleError::Invalid(vec![invalid(
            "body",
            "must be a JSON object",
        )]));
    };
    let mut errors = Vec::new();
    for key in map.keys() {
        if !["matchers", "startsAt", "endsAt", "createdBy", "comment"].contains(&key.as_str()) {
            errors.push(invalid(
                key,
                "unknown field; use matchers, startsAt, endsAt, createdBy, comment",
            ));
        }
    }
    let mut matchers = Vec::new();
    match map.get("matchers") {
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_MATCHERS => {
            for (i, item) in items.iter().enumerate() {
                let f = format!("matchers[{i}]");
                match serde_json::from_value::<SilenceMatcher>(item.clone()) {
                    Ok(m) if !is_valid_label_name(&m.name) => {
                        errors.push(invalid(&format!("{f}.name"), "not a valid label name"))
                    }
                    Ok(m) if m.value.len() > MAX_TEXT || m.value.contains('\0') => {
                        errors.push(invalid(
                            &format!("{f}.value"),
                            format!("at most {MAX_TEXT} bytes, no NUL"),
                        ))
                    }
                    Ok(m) if m.is_regex && Regex::new(&format!("^(?:{})$", m.value)).is_err() => {
                        errors.push(invalid(
                            &format!("{f}.value"),
                            "not a valid regular expression",
                        ))
                    }
                    Ok(m) => matchers.push(m),
                    Err(e) => errors.push(invalid(
                        &f,
                        format!("{{name, value, isRegex, isEqual}}: {e}"),
                    )),
                }
            }
            // Alertmanager refuses a silence that would match every alert.
            if errors.is_empty() {
                let silence = ActiveSilence::new(&Silence {
                    id: String::new(),
                    matchers: matchers.clone(),
                    starts_at_ms: 0,
                    ends_at_ms: 0,
                    created_by: String::new(),
                    comment: String::new(),
                    updated_ms: 0,
                });
                if silence.is_some_and(|s| s.matches(&BTreeMap::new())) {
                    errors.push(invalid(
                        "matchers",
                        "at least one matcher must not match the empty string",
                    ));
                }
            }
        }
        _ => errors.push(invalid(
            "matchers",
            format!("required: 1 to {MAX_MATCHERS} matchers"),
        )),
    }
    let starts = match map.get("startsAt") {
        None => Some(now_ms),
        Some(v) => time_of(v).or_else(|| {
            errors.push(invalid("startsAt", "must be an RFC 3339 time"));
            None
        }),
    };
    let ends = match map.get("endsAt") {
        None => {
            errors.push(invalid("endsAt", "required"));
            None
        }
        Some(v) => time_of(v).or_else(|| {
            errors.push(invalid("endsAt", "must be an RFC 3339 time"));
            None
        }),
    };
    if let (Some(s), Some(e)) = (starts, ends) {
        if e <= s {
            errors.push(invalid("endsAt", "must be after startsAt"));
        } else if e <= now_ms {
            errors.push(invalid("endsAt", "must be in the future"));
        }
    }
    let created_by = text(&map, "createdBy", &mut errors);
    let comment = text(&map, "comment", &mut errors);
    if !errors.is_empty() {
        return Err(RuleError::Invalid(errors));
    }
    Ok(Silence {
        id,
        matchers,
        starts_at_ms: starts.unwrap_or(now_ms),
        ends_at_ms: ends.unwrap_or(now_ms),
        created_by,
        comment,
        updated_ms: now_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(p: &[(&str, &str)]) -> BTreeMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn silence(matchers: Value) -> Result<Silence, Vec<String>> {
        let body = json!({"matchers": matchers, "endsAt": "2999-01-01T00:00:00Z",
                          "createdBy": "ops", "comment": "deploy"});
        parse(body.to_string().as_bytes(), "s1".into(), 1_000).map_err(|e| match e {
            super::super::rules::RuleError::Invalid(items) => {
                items.into_iter().map(|i| i.field).collect()
            }
            super::super::rules::RuleError::Malformed(m) => vec![m],
        })
    }

    #[test]
    fn the_four_matcher_kinds_match_as_alertmanager_matches() {
        let s = silence(json!([
            {"name": "alertname", "value": "QueueHigh", "isRegex": false},
            {"name": "component", "value": "w[12]", "isRegex": true},
            {"name": "severity", "value": "info", "isRegex": false, "isEqual": false},
            {"name": "pool", "value": "b.*", "isRegex": true, "isEqual": false},
        ]))
        .unwrap();
        let a = ActiveSilence::new(&s).unwrap();
        assert!(a.matches(&labels(&[("alertname", "QueueHigh"), ("component", "w1")])));
        assert!(!a.matches(&labels(&[("alertname", "QueueHigh"), ("component", "w10")])));
        assert!(!a.matches(&labels(&[
            ("alertname", "QueueHigh"),
            ("component", "w2"),
            ("severity", "info")
        ])));
        assert!(!a.matches(&labels(&[
            ("alertname", "QueueHigh"),
            ("component", "w2"),
            ("pool", "blue")
        ])));
        assert_eq!(s.state(500), "pending");
        assert_eq!(s.state(2_000), "active");
    }

    #[test]
    fn bad_silences_are_refused_field_by_field() {
        assert_eq!(silence(json!([])).unwrap_err(), vec!["matchers"]);
        assert_eq!(
            silence(json!([{"name": "a", "value": "(", "isRegex": true}])).unwrap_err(),
            vec!["matchers[0].value"]
        );
        assert_eq!(
            silence(json!([{"name": "9", "value": "x", "isRegex": false}])).unwrap_err(),
            vec!["matchers[0].name"]
        );
        // Matches everything: refused.
        assert_eq!(
            silence(json!([{"name": "a", "value": ".*", "isRegex": true}])).unwrap_err(),
            vec!["matchers"]
        );
        let past = json!({"matchers": [{"name": "a", "value": "b", "isRegex": false}],
                          "endsAt": "2001-01-01T00:00:00Z", "createdBy": "x", "comment": "y"});
        assert!(parse(past.to_string().as_bytes(), "s".into(), 1_700_000_000_000).is_err());
    }
}
