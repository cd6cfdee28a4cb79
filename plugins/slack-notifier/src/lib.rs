//! First-party notifier: posts each notification to a Slack incoming
//! webhook as `text` (the fallback Slack shows in notifications) plus
//! Block Kit `blocks`; a firing group and a resolved one look different
//! (`:rotating_light: [FIRING:n]` against `:white_check_mark: [RESOLVED]`).
//!
//! Slack's answers, as its incoming-webhook documentation lists them:
//! `200 ok` → sent; `400 invalid_payload`, `403 invalid_token` /
//! `action_prohibited`, `404 channel_not_found` / `no_service`,
//! `410 channel_is_archived` → permanent, with Slack's reason; `429` →
//! retryable after `Retry-After`; `5xx` and timeouts → retryable.

use std::time::Duration;

use serde_json::{json, Value};
use vigil_plugin::http;
use vigil_plugin::notifier::{
    get, status_str, AlertStatus, Config, Notification, Notifier, NotifyError, Receipt,
};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
/// Alerts shown as blocks; the rest are counted in a last line (Slack
/// allows 50 blocks per message).
const MAX_ALERT_BLOCKS: usize = 20;
/// Slack's limit on a section's text.
const MAX_SECTION: usize = 3_000;
/// Slack truncates `text` beyond 40,000 characters; stay well inside.
const MAX_TEXT: usize = 4_000;

struct SlackNotifier {
    url: String,
    channel: Option<String>,
    username: Option<String>,
    timeout: Duration,
}

/// Cuts `s` to at most `max` characters, marking the cut.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Escapes what Slack's mrkdwn treats as control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn title(n: &Notification) -> String {
    let name = get(&n.common_labels, "alertname")
        .or_else(|| n.alerts.first().and_then(|a| get(&a.labels, "alertname")))
        .unwrap_or("alert");
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    match n.status {
        AlertStatus::Firing => format!(":rotating_light: [FIRING:{firing}] {name}"),
        AlertStatus::Resolved => format!(":white_check_mark: [RESOLVED] {name}"),
    }
}

/// The message for `n`.
pub fn message(n: &Notification, channel: Option<&str>, username: Option<&str>) -> Value {
    let head = title(n);
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": clip(&head, 150), "emoji": true}
    })];
    let mut lines = vec![head];
    for a in n.alerts.iter().take(MAX_ALERT_BLOCKS) {
        let summary = get(&a.annotations, "summary")
            .or_else(|| get(&a.annotations, "description"))
            .unwrap_or("");
        let labels: Vec<String> = a
            .labels
            .iter()
            .filter(|(k, _)| k != "alertname")
            .map(|(k, v)| format!("`{k}={}`", escape(v)))
            .collect();
        let mark = match a.status {
            AlertStatus::Firing => ":red_circle:",
            AlertStatus::Resolved => ":large_green_circle:",
        };
        let text = format!(
            "{mark} *{}* {}\n{}",
            status_str(a.status),
            escape(summary),
            labels.join(" ")
        );
        lines.push(format!("- {} {}", status_str(a.status), summary));
        let mut section = json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": clip(&text, MAX_SECTION)}
        });
        if !a.generator_url.is_empty() {
            section["accessory"] = json!({
                "type": "button",
                "text": {"type": "plain_text", "text": "Source"},
                "url": a.generator_url,
            });
        }
        blocks.push(section);
    }
    let hidden = n.alerts.len().saturating_sub(MAX_ALERT_BLOCKS) + n.truncated_alerts as usize;
    if hidden > 0 {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!("and {hidden} more")}]
        }));
        lines.push(format!("and {hidden} more"));
    }
    let mut body = json!({
        "text": clip(&lines.join("\n"), MAX_TEXT),
        "blocks": blocks,
    });
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    if let Some(u) = username {
        body["username"] = json!(u);
    }
    body
}

/// What Slack's answer means.
fn outcome(status: u16, body: &str, retry_after_ms: Option<u64>) -> Result<Receipt, NotifyError> {
    let reason = body.trim();
    let reason = if reason.is_empty() {
        "no reason given"
    } else {
        reason
    };
    let reason = clip(reason, 200);
    match status {
        200..=299 => Ok(Receipt::new(format!("HTTP {status} {reason}"))),
        429 => {
            let e =
                NotifyError::retryable(format!("Slack rate-limited the webhook (429 {reason})"));
            Err(match retry_after_ms {
                Some(ms) => e.retry_after(ms),
                None => e,
            })
        }
        408 | 500..=599 => Err(NotifyError::retryable(format!(
            "Slack answered {status} {reason}"
        ))),
        400 if reason == "invalid_payload" => Err(NotifyError::permanent(
            "Slack refused the message as invalid_payload (400)".to_string(),
        )),
        403 => Err(NotifyError::permanent(format!(
            "Slack refused the webhook URL's token: {reason} (403); create a new incoming webhook"
        ))),
        404 => Err(NotifyError::permanent(format!(
            "Slack cannot find the webhook's channel or app: {reason} (404)"
        ))),
        410 => Err(NotifyError::permanent(format!(
            "the webhook's channel is archived: {reason} (410)"
        ))),
        _ => Err(NotifyError::permanent(format!(
            "Slack answered {status} {reason}"
        ))),
    }
}

impl Notifier for SlackNotifier {
    fn configure(config: &Config) -> Result<Self, String> {
        let url = config.require("webhook_url")?;
        if !url.starts_with("https://") && !url.starts_with("http://") {
            return Err(format!(
                "config key `webhook_url` must be the https:// URL of a Slack incoming webhook, not {:?}",
                url.chars().take(40).collect::<String>()
            ));
        }
        let timeout_ms = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        if timeout_ms == 0 {
            return Err("config key `timeout_ms` must be at least 1".to_string());
        }
        let opt = |k: &str| config.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        Ok(SlackNotifier {
            url,
            channel: opt("channel"),
            username: opt("username"),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn notify(&mut self, n: &Notification) -> Result<Receipt, NotifyError> {
        let body = message(n, self.channel.as_deref(), self.username.as_deref());
        let response = http::post(&self.url)
            .timeout(self.timeout)
            .max_response_bytes(16 * 1024)
            .json(&body)
            .send()?;
        let text = String::from_utf8_lossy(response.bytes()).into_owned();
        outcome(response.status(), &text, response.retry_after_ms())
    }

    fn config_schema() -> String {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "slack-notifier",
            "type": "object",
            "required": ["webhook_url"],
            "properties": {
                "webhook_url": {
                    "type": "string",
                    "pattern": "^https?://",
                    "writeOnly": true,
                    "description": "The incoming webhook's URL (it holds the token: kept secret)."
                },
                "channel": {"type": "string", "description": "Overrides the webhook's channel (legacy webhooks only)."},
                "username": {"type": "string", "description": "Overrides the poster's name (legacy webhooks only)."},
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

vigil_plugin::export_notifier!(SlackNotifier);
