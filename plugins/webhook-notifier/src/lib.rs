//! First-party notifier: POSTs each notification to a webhook as
//! Alertmanager's webhook payload, version 4, exactly — so every receiver
//! written for Alertmanager's `webhook_config` works unchanged.
//!
//! Config: `url` (required), `bearer_token` (optional, write-only),
//! `max_alerts` (optional, 0 = all; the rest are counted in
//! `truncatedAlerts`, as Alertmanager does), `timeout_ms` (default 10000).
//! Responses: 2xx → sent; 408, 429, 5xx, timeouts → retryable (honouring
//! `Retry-After`); other 4xx → permanent.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_plugin::http;
use vigil_plugin::notifier::{
    pairs_object, rfc3339, status_str, AlertStatus, Config, Notification, Notifier, NotifyError,
    Receipt, ZERO_TIME,
};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

struct WebhookNotifier {
    url: String,
    bearer_token: Option<String>,
    max_alerts: usize,
    timeout: Duration,
}

/// Alertmanager's webhook payload (version 4) for `n`, keeping at most
/// `max_alerts` alerts (0: all).
pub fn payload(n: &Notification, max_alerts: usize) -> Value {
    let keep = if max_alerts == 0 {
        n.alerts.len()
    } else {
        max_alerts.min(n.alerts.len())
    };
    let truncated = n.truncated_alerts as usize + (n.alerts.len() - keep);
    let alerts: Vec<Value> = n.alerts[..keep]
        .iter()
        .map(|a| {
            json!({
                "status": status_str(a.status),
                "labels": pairs_object(&a.labels),
                "annotations": pairs_object(&a.annotations),
                "startsAt": rfc3339(a.starts_at),
                // Alertmanager hides the end of an alert that still fires.
                "endsAt": match (a.status, a.ends_at) {
                    (AlertStatus::Resolved, Some(t)) => rfc3339(t),
                    _ => ZERO_TIME.to_string(),
                },
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "receiver": n.receiver,
        "status": status_str(n.status),
        "alerts": alerts,
        "groupLabels": pairs_object(&n.group_labels),
        "commonLabels": pairs_object(&n.common_labels),
        "commonAnnotations": pairs_object(&n.common_annotations),
        "externalURL": n.external_url,
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": truncated,
    })
}

impl Notifier for WebhookNotifier {
    fn configure(config: &Config) -> Result<Self, String> {
        let url = config.require("url")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "config key `url` = {url:?} must be an http:// or https:// URL"
            ));
        }
        let timeout_ms = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        if timeout_ms == 0 {
            return Err("config key `timeout_ms` must be at least 1".to_string());
        }
        Ok(WebhookNotifier {
            url,
            bearer_token: config
                .get("bearer_token")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            max_alerts: config.parse_or("max_alerts", 0usize)?,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn notify(&mut self, n: &Notification) -> Result<Receipt, NotifyError> {
        let mut request = http::post(&self.url)
            .timeout(self.timeout)
            .json(&payload(n, self.max_alerts));
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send()?.error_for_status()?;
        Ok(Receipt::new(format!("HTTP {}", response.status())))
    }

    fn config_schema() -> String {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "webhook-notifier",
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^https?://",
                    "description": "Where each notification is POSTed (Alertmanager webhook payload, version 4)."
                },
                "bearer_token": {
                    "type": "string",
                    "writeOnly": true,
                    "description": "Sent as `Authorization: Bearer <token>`."
                },
                "max_alerts": {
                    "type": ["integer", "string"],
                    "minimum": 0,
                    "pattern": "^[0-9]+$",
                    "default": 0,
                    "description": "Most alerts per notification (0: all); the rest are counted in truncatedAlerts."
                },
                "timeout_ms": {
                    "type": ["integer", "string"],
                    "minimum": 1,
                    "pattern": "^[1-9][0-9]*$",
                    "default": DEFAULT_TIMEOUT_MS,
                    "description": "Connect, first-byte and between-bytes timeout in milliseconds."
                }
            },
            "additionalProperties": false
        })
        .to_string()
    }
}

vigil_plugin::export_notifier!(WebhookNotifier);
