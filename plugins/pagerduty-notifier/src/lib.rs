//! First-party notifier: sends each alert of a notification to PagerDuty's
//! Events API v2 (`POST /v2/enqueue`): `event_action` `trigger` while it
//! fires and `resolve` when it resolves, with a `dedup_key` that is stable
//! per alert (the channel's routing key and the alert's fingerprint), so a
//! resolve closes the incident its trigger opened and a re-sent trigger
//! adds nothing. `payload.summary` is cut to PagerDuty's 1,024 characters;
//! `severity` comes from a label (`critical`, `error`, `warning`, `info`).
//!
//! PagerDuty's answers, as documented: `202` → sent (its `dedup_key` in the
//! receipt); `400` (invalid event, with its `errors`) → permanent; `429`
//! (too many events) and `5xx` → retryable.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_plugin::http;
use vigil_plugin::notifier::{
    get, rfc3339, AlertStatus, Config, Notification, Notifier, NotifyError, Receipt,
};

const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// PagerDuty's limit on `payload.summary`.
const MAX_SUMMARY: usize = 1_024;
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

struct PagerDutyNotifier {
    url: String,
    routing_key: String,
    severity_label: String,
    default_severity: String,
    source: Option<String>,
    timeout: Duration,
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// FNV-1a 64 of the routing key and the fingerprint: the same alert on the
/// same service always has the same `dedup_key`.
fn dedup_key(routing_key: &str, fingerprint: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in routing_key.bytes().chain([0xff]).chain(fingerprint.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("vigil-{fingerprint}-{h:016x}")
}

impl PagerDutyNotifier {
    /// The Events API v2 event for alert `i` of `n`.
    fn event(&self, n: &Notification, i: usize) -> Value {
        let a = &n.alerts[i];
        let name = get(&a.labels, "alertname").unwrap_or("alert");
        let summary = get(&a.annotations, "summary")
            .map(|s| format!("{name}: {s}"))
            .unwrap_or_else(|| {
                let labels: Vec<String> = a
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "alertname")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{name} {}", labels.join(" "))
            });
        let severity = get(&a.labels, &self.severity_label)
            .map(str::to_ascii_lowercase)
            .filter(|s| SEVERITIES.contains(&s.as_str()))
            .unwrap_or_else(|| self.default_severity.clone());
        let source = self
            .source
            .clone()
            .or_else(|| get(&a.labels, "component").map(str::to_string))
            .unwrap_or_else(|| "vigil".to_string());
        let details: serde_json::Map<String, Value> = a
            .labels
            .iter()
            .chain(a.annotations.iter())
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let action = match a.status {
            AlertStatus::Firing => "trigger",
            AlertStatus::Resolved => "resolve",
        };
        let mut event = json!({
            "routing_key": self.routing_key,
            "event_action": action,
            "dedup_key": dedup_key(&self.routing_key, &a.fingerprint),
            "client": "Vigil",
            "client_url": n.external_url,
        });
        if action == "trigger" {
            event["payload"] = json!({
                "summary": clip(&summary, MAX_SUMMARY),
                "source": source,
                "severity": severity,
                "timestamp": rfc3339(a.starts_at),
                "component": get(&a.labels, "component").unwrap_or(""),
                "group": n.receiver,
                "class": name,
                "custom_details": details,
            });
            if !a.generator_url.is_empty() {
                event["links"] = json!([{"href": a.generator_url, "text": "Alert rule"}]);
            }
        }
        event
    }
}

fn answer_reason(body: &[u8]) -> String {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let message = v["message"].as_str().unwrap_or("").to_string();
            let errors: Vec<&str> = v["errors"]
                .as_array()
                .map(|e| e.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if errors.is_empty() {
                message
            } else {
                format!("{message}: {}", errors.join("; "))
            }
        }
        Err(_) => clip(String::from_utf8_lossy(body).trim(), 200),
    }
}

impl Notifier for PagerDutyNotifier {
    fn configure(config: &Config) -> Result<Self, String> {
        let routing_key = config.require("routing_key")?;
        if routing_key.len() != 32 || !routing_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(
                "config key `routing_key` must be the 32-character integration key of an Events API v2 service"
                    .to_string(),
            );
        }
        let url = config.get("url").unwrap_or(DEFAULT_URL).to_string();
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err("config key `url` must be an http:// or https:// URL".to_string());
        }
        let default_severity = config
            .get("default_severity")
            .unwrap_or("error")
            .to_string();
        if !SEVERITIES.contains(&default_severity.as_str()) {
            return Err(format!(
                "config key `default_severity` must be one of {}",
                SEVERITIES.join(", ")
            ));
        }
        let timeout_ms = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        if timeout_ms == 0 {
            return Err("config key `timeout_ms` must be at least 1".to_string());
        }
        Ok(PagerDutyNotifier {
            url,
            routing_key,
            severity_label: config
                .get("severity_label")
                .unwrap_or("severity")
                .to_string(),
            default_severity,
            source: config
                .get("source")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn notify(&mut self, n: &Notification) -> Result<Receipt, NotifyError> {
        let mut keys = Vec::new();
        for i in 0..n.alerts.len() {
            let event = self.event(n, i);
            let response = http::post(&self.url)
                .timeout(self.timeout)
                .max_response_bytes(64 * 1024)
                .json(&event)
                .send()?;
            let status = response.status();
            match status {
                200..=299 => {
                    let key = response
                        .json::<Value>()
                        .ok()
                        .and_then(|v| v["dedup_key"].as_str().map(str::to_string))
                        .unwrap_or_else(|| event["dedup_key"].as_str().unwrap_or("").to_string());
                    keys.push(key);
                }
                429 => {
                    let e = NotifyError::retryable(format!(
                        "PagerDuty is rate-limiting events (429 {})",
                        answer_reason(response.bytes())
                    ));
                    return Err(match response.retry_after_ms() {
                        Some(ms) => e.retry_after(ms),
                        None => e,
                    });
                }
                408 | 500..=599 => {
                    return Err(NotifyError::retryable(format!(
                        "PagerDuty answered {status} {}",
                        answer_reason(response.bytes())
                    )))
                }
                400 => {
                    return Err(NotifyError::permanent(format!(
                        "PagerDuty refused the event (400): {}",
                        answer_reason(response.bytes())
                    )))
                }
                _ => {
                    return Err(NotifyError::permanent(format!(
                        "PagerDuty answered {status} {}",
                        answer_reason(response.bytes())
                    )))
                }
            }
        }
        let detail = format!("{} event(s) accepted", keys.len());
        Ok(match keys.first() {
            Some(k) => Receipt::new(detail).with_id(k.clone()),
            None => Receipt::new(detail),
        })
    }

    fn config_schema() -> String {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "pagerduty-notifier",
            "type": "object",
            "required": ["routing_key"],
            "properties": {
                "routing_key": {
                    "type": "string",
                    "writeOnly": true,
                    "pattern": "^[A-Za-z0-9]{32}$",
                    "description": "The Events API v2 integration key of the service."
                },
                "url": {"type": "string", "pattern": "^https?://", "default": DEFAULT_URL,
                        "description": "The Events API endpoint (for PagerDuty's EU service or a proxy)."},
                "severity_label": {"type": "string", "default": "severity",
                                   "description": "The alert label that gives PagerDuty's severity."},
                "default_severity": {"type": "string", "enum": SEVERITIES, "default": "error"},
                "source": {"type": "string", "description": "payload.source; default: the alert's component label."},
                "timeout_ms": {
                    "type": ["integer", "string"],
                    "minimum": 1,
                    "pattern": "^[1-9][0-9]*$",
                    "default": DEFAULT_TIMEOUT_MS
                }
            },
            "additionalProperties": false
        })
        .to_string()
    }
}

vigil_plugin::export_notifier!(PagerDutyNotifier);
