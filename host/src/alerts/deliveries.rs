//! One delivery attempt through a channel's notifier, and how its outcome is
//! recorded: `sent` with the receiver's receipt; a retryable failure
//! (timeout, 408, 429, 5xx, a plugin fault) or a permanent one (other 4xx,
//! refused settings), each with the receiver's status code when there was a
//! response, as the host saw it.

use std::time::Duration;

use serde_json::{json, Value};

use super::channels::ChannelNotifiers;
use super::notification::{alerts_json, payload_json};
use crate::plugins::bindings::types;
use crate::plugins::PluginRegistry;
use crate::store::{ChannelRow, DeliveryRow};

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Delivered; the receiver's receipt.
    Sent { id: Option<String>, detail: String },
    /// Worth trying again (after `retry_after_ms` when the receiver said).
    Retryable {
        message: String,
        retry_after_ms: Option<u64>,
        /// No answer in time (the receiver's or the plugin's deadline).
        timed_out: bool,
    },
    /// Trying again will not help.
    Permanent(String),
}

/// An attempt's outcome and the receiver's status code.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    pub response_status: Option<u16>,
}

fn looks_like_timeout(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("timed out") || m.contains("timeout") || m.contains("time limit")
}

/// Sends `n` through the channel's notifier once.
pub async fn attempt(
    notifiers: &ChannelNotifiers,
    registry: &PluginRegistry,
    channel: &ChannelRow,
    n: &types::Notification,
) -> Attempt {
    let plugin = match notifiers.get(registry, channel).await {
        Ok(p) => p,
        Err(e) => {
            return Attempt {
                outcome: Outcome::Permanent(format!("channel `{}`: {e}", channel.name)),
                response_status: None,
            }
        }
    };
    // The plugin's own deadline (call_timeout_ms) bounds the call; this
    // guards against a host-side stall on top of it.
    let limit = Duration::from_millis(plugin.manifest.capabilities.call_timeout_ms)
        + Duration::from_secs(1);
    match tokio::time::timeout(limit, plugin.notify(n)).await {
        Err(_) => Attempt {
            outcome: Outcome::Retryable {
                message: format!("no answer within {} ms", limit.as_millis()),
                retry_after_ms: None,
                timed_out: true,
            },
            response_status: None,
        },
        Ok(Err(call)) => {
            let message = call.to_string();
            Attempt {
                outcome: Outcome::Retryable {
                    timed_out: looks_like_timeout(&message),
                    message,
                    retry_after_ms: None,
                },
                response_status: None,
            }
        }
        Ok(Ok(notified)) => {
            let status = notified.response_status;
            let outcome = match notified.result {
                Ok(r) => Outcome::Sent {
                    id: r.id,
                    detail: r.detail,
                },
                Err(types::DeliveryError::Retryable(r)) => Outcome::Retryable {
                    timed_out: status.is_none() && looks_like_timeout(&r.message),
                    message: r.message,
                    retry_after_ms: r.retry_after_ms,
                },
                Err(types::DeliveryError::Permanent(m)) => Outcome::Permanent(m),
            };
            Attempt {
                outcome,
                response_status: status,
            }
        }
    }
}

/// A new delivery row for `n` to `channel`, not yet attempted.
pub fn new_row(
    channel: &ChannelRow,
    rule_id: Option<String>,
    kind: &str,
    n: &types::Notification,
    now_ms: i64,
) -> DeliveryRow {
    DeliveryRow {
        n: 0,
        id: uuid::Uuid::new_v4().to_string(),
        channel_id: channel.id.clone(),
        rule_id,
        group_key: n.group_key.clone(),
        kind: kind.to_string(),
        status: "pending".to_string(),
        attempts: 0,
        response_status: None,
        last_error: None,
        receipt: None,
        alerts: alerts_json(n).to_string(),
        payload: payload_json(n).to_string(),
        created_ms: now_ms,
        updated_ms: now_ms,
        next_attempt_ms: Some(now_ms),
    }
}

/// Records `attempt` on `row`: `sent`, `failed` (permanent, or when `retry`
/// is false) or `retrying` at `next_attempt_ms`.
pub fn record(row: &mut DeliveryRow, attempt: &Attempt, retry_at: Option<i64>, now_ms: i64) {
    row.attempts += 1;
    row.updated_ms = now_ms;
    row.response_status = attempt.response_status.map(i64::from);
    match &attempt.outcome {
        Outcome::Sent { id, detail } => {
            row.status = "sent".into();
            row.last_error = None;
            row.receipt = Some(json!({"id": id, "detail": detail}).to_string());
            row.next_attempt_ms = None;
        }
        Outcome::Retryable { message, .. } => {
            row.last_error = Some(message.clone());
            match retry_at {
                Some(at) => {
                    row.status = "retrying".into();
                    row.next_attempt_ms = Some(at);
                }
                None => {
                    row.status = "failed".into();
                    row.next_attempt_ms = None;
                }
            }
        }
        Outcome::Permanent(message) => {
            row.status = "failed".into();
            row.last_error = Some(message.clone());
            row.next_attempt_ms = None;
        }
    }
}

/// A delivery as the API shows it.
pub fn to_json(row: &DeliveryRow) -> Value {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    json!({
        "id": row.id,
        "channel_id": row.channel_id,
        "rule_id": row.rule_id,
        "group_key": row.group_key,
        "kind": row.kind,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "last_error": row.last_error,
        "receipt": row.receipt.as_deref().map(parse),
        "alerts": parse(&row.alerts),
        "payload": parse(&row.payload),
        "created_at": super::rfc3339(row.created_ms),
        "updated_at": super::rfc3339(row.updated_ms),
        "next_attempt_at": row.next_attempt_ms.map(super::rfc3339),
    })
}
