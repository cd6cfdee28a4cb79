//! Prometheus rule files (`groups:` YAML) read into Vigil rules, so a team
//! moves its alerting rules without rewriting them: each `alert:` rule
//! becomes a rule named `<group>:<alert>` (its `alertname` stays `<alert>`),
//! with its `expr`, `for`, `keep_firing_for`, `labels` and `annotations`
//! and the group's `interval`. Recording rules are skipped and listed.
//! Every rule is checked as the API checks one; the whole file is refused
//! when any is bad, each problem named by its place in the file.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::rules::{self, RuleError, RuleSpec};
use crate::metrics::model::ItemError;

/// Most rules one file may hold.
const MAX_RULES: usize = 2_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    query_offset: Option<String>,
    #[serde(default)]
    labels: Option<serde_norway::Value>,
    rules: Vec<serde_norway::Value>,
}

/// What a file came to: the rules to create and the ones skipped.
pub struct Imported {
    pub rules: Vec<RuleSpec>,
    /// `(group, record name, why)`.
    pub skipped: Vec<(String, String, String)>,
}

fn item(field: String, reason: impl Into<String>) -> ItemError {
    ItemError::top(&field, reason)
}

fn to_json(v: serde_norway::Value) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn valid_name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Reads a rule file; `channels` resolves the channels every rule gets.
pub fn parse(text: &str, channel_ids: &[String]) -> Result<Imported, RuleError> {
    let file: File = serde_norway::from_str(text)
        .map_err(|e| RuleError::Malformed(format!("not a Prometheus rule file: {e}")))?;
    let mut errors = Vec::new();
    let mut out = Imported {
        rules: Vec::new(),
        skipped: Vec::new(),
    };
    let total: usize = file.groups.iter().map(|g| g.rules.len()).sum();
    if total > MAX_RULES {
        return Err(RuleError::Invalid(vec![item(
            "groups".into(),
            format!("{total} rules; at most {MAX_RULES} per file"),
        )]));
    }
    for (gi, group) in file.groups.into_iter().enumerate() {
        if group.labels.is_some() || group.limit.is_some() || group.query_offset.is_some() {
            errors.push(item(
                format!("groups[{gi}]"),
                "group `labels`, `limit` and `query_offset` are not supported; move labels into each rule",
            ));
        }
        for (ri, rule) in group.rules.into_iter().enumerate() {
            let at = format!("groups[{gi}].rules[{ri}]");
            let mut map: Map<String, Value> = match to_json(rule) {
                Ok(Value::Object(m)) => m,
                Ok(_) | Err(_) => {
                    errors.push(item(at, "must be a mapping"));
                    continue;
                }
            };
            if let Some(record) = map.get("record") {
                out.skipped.push((
                    group.name.clone(),
                    record.as_str().unwrap_or_default().to_string(),
                    "recording rules are not imported".into(),
                ));
                continue;
            }
            let Some(Value::String(alert)) = map.remove("alert") else {
                errors.push(item(format!("{at}.alert"), "required (or `record`)"));
                continue;
            };
            let mut name = format!(
                "{}:{}",
                valid_name_part(&group.name),
                valid_name_part(&alert)
            );
            let same = out
                .rules
                .iter()
                .filter(|r| r.name.starts_with(&name))
                .count();
            if same > 0 {
                name = format!("{name}:{}", same + 1);
            }
            map.insert("name".into(), Value::String(name));
            map.insert("alertname".into(), Value::String(alert));
            if let Some(i) = &group.interval {
                map.insert("interval".into(), Value::String(i.clone()));
            }
            // YAML numbers in labels or annotations are strings to Prometheus.
            for key in ["labels", "annotations"] {
                if let Some(Value::Object(m)) = map.get_mut(key) {
                    for v in m.values_mut() {
                        if let Value::Number(n) = v {
                            *v = Value::String(n.to_string());
                        } else if let Value::Bool(b) = v {
                            *v = Value::String(b.to_string());
                        }
                    }
                }
            }
            match rules::parse_object(map, None, &|_| None) {
                Ok(mut spec) => {
                    spec.channels = channel_ids.to_vec();
                    out.rules.push(spec);
                }
                Err(RuleError::Invalid(items)) => errors.extend(
                    items
                        .into_iter()
                        .map(|i| item(format!("{at}.{}", i.field), i.reason)),
                ),
                Err(RuleError::Malformed(m)) => errors.push(item(at, m)),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(RuleError::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
groups:
  - name: workers
    interval: 30s
    rules:
      - record: job:queue_depth:sum
        expr: sum by (job) (queue_depth)
      - alert: QueueHigh
        expr: queue_depth > 100
        for: 5m
        labels:
          severity: warning
          tier: 2
        annotations:
          summary: "{{ $labels.component }} queue at {{ $value }}"
      - alert: QueueHigh
        expr: queue_depth > 500
        keep_firing_for: 1m
        labels:
          severity: critical
"#;

    #[test]
    fn a_prometheus_rule_file_becomes_rules_with_their_alertnames() {
        let got = parse(FILE, &["c1".to_string()]).unwrap();
        assert_eq!(got.rules.len(), 2);
        let a = &got.rules[0];
        assert_eq!(
            (a.name.as_str(), a.alertname()),
            ("workers:QueueHigh", "QueueHigh")
        );
        assert_eq!((a.for_ms, a.interval_ms), (300_000, 30_000));
        assert_eq!(a.labels["tier"], "2");
        assert_eq!(a.channels, vec!["c1".to_string()]);
        let b = &got.rules[1];
        assert_eq!(b.name, "workers:QueueHigh:2");
        assert_eq!(b.keep_firing_for_ms, 60_000);
        assert_eq!(got.skipped.len(), 1);
    }

    #[test]
    fn a_bad_rule_refuses_the_file_naming_its_place() {
        let bad = FILE.replace("queue_depth > 500", "sum(");
        match parse(&bad, &[]) {
            Err(RuleError::Invalid(items)) => {
                assert_eq!(items.len(), 1);
                assert_eq!(items[0].field, "groups[0].rules[2].expr");
            }
            _ => panic!("accepted"),
        }
        assert!(matches!(
            parse("groups: 3", &[]),
            Err(RuleError::Malformed(_))
        ));
        assert!(matches!(
            parse("not: [a rule file", &[]),
            Err(RuleError::Malformed(_))
        ));
    }
}
