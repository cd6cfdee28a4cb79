//! First-party publisher: POSTs each batch as JSON to a webhook.
//!
//! Config: `url` (required), `bearer_token` (optional), `timeout_ms` (optional,
//! default 10000). Body: see [`body`]. Header `Idempotency-Key: <first seq>-<last
//! seq>` stays the same when the host retries a delivery.
//!
//! Responses: 2xx → everything accepted; 400 with a JSON body
//! `{"rejected":[{"seq":N,"reason":"..."}]}` → those items rejected, the rest
//! accepted; 408, 429, 5xx → retryable (honouring `Retry-After`); other 4xx and
//! a 400 without that body → permanent.

mod body;

use std::time::Duration;

use serde::Deserialize;
use vigil_plugin::http::{self, Response};
use vigil_plugin::publisher::{Batch, Config, PublishError, PublishReport, Publisher};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;

struct WebhookPublisher {
    url: String,
    bearer_token: Option<String>,
    timeout: Duration,
}

/// The receiver's answer to a partly acceptable batch (HTTP 400).
#[derive(Deserialize)]
struct Rejections {
    rejected: Vec<RejectedItem>,
}

#[derive(Deserialize)]
struct RejectedItem {
    seq: u64,
    #[serde(default)]
    reason: String,
}

impl Publisher for WebhookPublisher {
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
        Ok(WebhookPublisher {
            url,
            bearer_token: config
                .get("bearer_token")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {
        let Some((first, last)) = batch.seq_range() else {
            return Ok(PublishReport::all_accepted());
        };
        let mut request = http::post(&self.url)
            .timeout(self.timeout)
            .header("idempotency-key", format!("{first}-{last}"))
            .json(&body::BatchBody(batch));
        if let Some(token) = &self.bearer_token {
            request = request.bearer_auth(token);
        }
        let response = request.send()?;
        vigil_plugin::debug!(
            "batch posted",
            status = response.status(),
            samples = batch.sample_count(),
            events = batch.event_count(),
        );
        outcome(batch, response)
    }

    fn config_schema() -> String {
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "webhook-publisher",
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^https?://",
                    "description": "Where each batch is POSTed as JSON."
                },
                "bearer_token": {
                    "type": "string",
                    "writeOnly": true,
                    "description": "Sent as `Authorization: Bearer <token>`; use a ${ENV} reference."
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

/// Maps the receiver's response to the report or error the host expects.
fn outcome(batch: &Batch, response: Response) -> Result<PublishReport, PublishError> {
    if response.status() == 400 {
        if let Ok(Rejections { rejected }) = response.json::<Rejections>() {
            let mut report = PublishReport::all_accepted();
            for item in rejected.into_iter().filter(|r| contains_seq(batch, r.seq)) {
                let reason = if item.reason.is_empty() {
                    "rejected by the receiver".to_string()
                } else {
                    item.reason
                };
                report.reject(item.seq, reason);
            }
            return Ok(report);
        }
    }
    match response.error_for_status() {
        Ok(r) if r.is_success() => Ok(PublishReport::all_accepted()),
        Ok(r) => Err(PublishError::permanent(format!(
            "unexpected HTTP {} from the webhook (redirects are not followed)",
            r.status()
        ))),
        Err(e) => Err(e.into()),
    }
}

fn contains_seq(batch: &Batch, seq: u64) -> bool {
    batch.samples().any(|s| s.seq() == seq) || batch.events().any(|e| e.seq == seq)
}

vigil_plugin::export_publisher!(WebhookPublisher);

#[cfg(test)]
mod tests;
