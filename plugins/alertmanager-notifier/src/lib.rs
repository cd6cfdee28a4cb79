//! First-party notifier: forwards the alerts of each notification to an
//! existing Alertmanager as Prometheus does (`POST /api/v2/alerts`, a list
//! of `{labels, annotations, startsAt, endsAt, generatorURL}`), so a team
//! keeps its routing tree, inhibitions and receivers. A firing alert is
//! sent with `endsAt` = now + `firing_ttl_ms` (as Prometheus sends now + 4 ×
//! its resend delay), so Alertmanager resolves it by itself if Vigil stops
//! re-sending; Vigil re-sends firing groups every `repeat_interval` of the
//! rule (keep it below the ttl). A resolved alert is sent with its end.
//!
//! Answers: 2xx → sent; 400 (Alertmanager's message) → permanent; 408,
//! 429, 5xx, timeouts → retryable.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use vigil_plugin::http;
use vigil_plugin::notifier::{
    pairs_object, rfc3339, AlertStatus, Config, Notification, Notifier, NotifyError, Receipt,
};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Four and a half hours: the default `repeat_interval` (4h) plus margin.
const DEFAULT_FIRING_TTL_MS: u64 = 16_200_000;

struct AlertmanagerNotifier {
    alerts_url: String,
    bearer_token: Option<String>,
    basic_auth: Option<(String, String)>,
    firing_ttl_ms: i64,
    timeout: Duration,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The `postableAlerts` body for `n` at `now_ms`.
pub fn postable(n: &Notification, now_ms: i64, firing_ttl_ms: i64) -> Value {
    Value::Array(
        n.alerts
            .iter()
            .map(|a| {
                let ends = match (a.status, a.ends_at) {
                    (AlertStatus::Resolved, Some(t)) => t,
                    (AlertStatus::Resolved, None) => now_ms,
                    (AlertStatus::Firing, _) => now_ms + firing_ttl_ms,
                };
                json!({
                    "labels": pairs_object(&a.labels),
                    "annotations": pairs_object(&a.annotations),
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": rfc3339(ends),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
}

impl Notifier for AlertmanagerNotifier {
    fn configure(config: &Config) -> Result<Self, String> {
        let url = config.require("url")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config key `url` = {url:?} must be the http:// or https:// base URL of an Alertmanager"
            ));
        }
        let timeout_ms = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        let ttl = config.parse_or("firing_ttl_ms", DEFAULT_FIRING_TTL_MS)?;
        if timeout_ms == 0 || ttl < 60_000 {
            return Err(
                "`timeout_ms` must be at least 1 and `firing_ttl_ms` at least 60000".into(),
            );
        }
        let opt = |k: &str| config.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let basic_auth = match (opt("basic_auth_username"), opt("basic_auth_password")) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(
                    "give both `basic_auth_username` and `basic_auth_password`, or neither".into(),
                )
            }
        };
        Ok(AlertmanagerNotifier {
            alerts_url: format!("{}/api/v2/alerts", url.trim_end_matches('/')),
            bearer_token: opt("bearer_token"),
            basic_auth,
            firing_ttl_ms: ttl as i64,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn notify(&mut self, n: &Notification) -> Result<Receipt, NotifyError> {
        let mut request = http::post(&self.alerts_url)
            .timeout(self.timeout)
            .json(&postable(n, now_ms(), self.firing_ttl_ms));
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        if let Some((u, p)) = &self.basic_auth {
            request = request.basic_auth(u, p);
        }
        let response = request.send()?.error_for_status()?;
        Ok(Receipt::new(format!(
            "HTTP {}: {} alert(s) posted",
            response.status(),
            n.alerts.len()
        )))
    }

    fn config_schema() -> String {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "alertmanager-notifier",
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "pattern": "^https?://",
                        "description": "Base URL of the Alertmanager (…/api/v2/alerts is appended)."},
                "bearer_token": {"type": "string", "writeOnly": true},
                "basic_auth_username": {"type": "string"},
                "basic_auth_password": {"type": "string", "writeOnly": true},
                "firing_ttl_ms": {"type": ["integer", "string"], "minimum": 60000, "pattern": "^[0-9]+$",
                                  "default": DEFAULT_FIRING_TTL_MS,
                                  "description": "endsAt of a firing alert = now + this; keep the rule's repeat_interval below it."},
                "timeout_ms": {"type": ["integer", "string"], "minimum": 1, "pattern": "^[1-9][0-9]*$",
                               "default": DEFAULT_TIMEOUT_MS}
            },
            "additionalProperties": false
        })
        .to_string()
    }
}

vigil_plugin::export_notifier!(AlertmanagerNotifier);
