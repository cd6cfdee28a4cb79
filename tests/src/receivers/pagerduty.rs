//! PagerDuty's Events API v2 (`POST /v2/enqueue`), strictly: a JSON object
//! with a 32-character `routing_key`, `event_action` trigger, acknowledge or
//! resolve, a `dedup_key` of at most 255 characters (required unless
//! triggering), and for a trigger a `payload` with `summary` (1 to 1,024
//! characters), `source` and `severity` (critical, error, warning, info),
//! an RFC 3339 `timestamp` when given. Answers as PagerDuty does: `202
//! {status: "success", message: "Event processed", dedup_key}`, `400
//! {status: "invalid event", message: "Event object is invalid", errors}`,
//! or `429` when the test says so.

use serde_json::{json, Value};

use super::webhook::{ReceivedRequest, Reply};

/// Checks an event; the list of errors PagerDuty would answer.
pub fn check_event(req: &ReceivedRequest) -> Result<Value, Vec<String>> {
    let mut errors = Vec::new();
    if req.method != "POST" || req.path != "/v2/enqueue" {
        errors.push(format!(
            "{} {} is not POST /v2/enqueue",
            req.method, req.path
        ));
    }
    let v: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return Err(vec![format!("body is not JSON: {e}")]),
    };
    let key = v["routing_key"].as_str().unwrap_or("");
    if key.len() != 32 {
        errors.push("'routing_key' must be 32 characters".into());
    }
    let action = v["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        errors.push(
            "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)".into(),
        );
    }
    match v.get("dedup_key").map(|d| d.as_str()) {
        Some(Some(d)) if d.len() <= 255 && !d.is_empty() => {}
        Some(_) => errors.push("'dedup_key' must be a string of at most 255 characters".into()),
        None if action != "trigger" => errors.push("'dedup_key' is missing".into()),
        None => {}
    }
    if action == "trigger" {
        let p = &v["payload"];
        match p["summary"].as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
            _ => errors.push("'payload.summary' is missing or longer than 1024 characters".into()),
        }
        if p["source"].as_str().is_none_or(str::is_empty) {
            errors.push("'payload.source' is missing or blank".into());
        }
        if !["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap_or(""))
        {
            errors.push(
                "'payload.severity' is invalid (must be one of: critical, error, warning, info)"
                    .into(),
            );
        }
        if let Some(t) = p.get("timestamp") {
            if t.as_str()
                .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err())
            {
                errors.push("'payload.timestamp' is not ISO 8601".into());
            }
        }
        if let Some(d) = p.get("custom_details") {
            if !d.is_object() {
                errors.push("'payload.custom_details' must be an object".into());
            }
        }
    }
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(errors)
    }
}

/// PagerDuty's answer to `req`; `rate_limited` answers `429` to a valid event.
pub fn reply(req: &ReceivedRequest, rate_limited: bool) -> Reply {
    match check_event(req) {
        Err(errors) => Reply::status(400).json(&json!({
            "status": "invalid event", "message": "Event object is invalid", "errors": errors,
        })),
        Ok(_) if rate_limited => Reply::status(429).json(&json!({
            "status": "throttle event", "message": "Requests for this service are arriving too quickly. Please retry later.",
        })),
        Ok(v) => Reply::status(202).json(&json!({
            "status": "success", "message": "Event processed",
            "dedup_key": v["dedup_key"].as_str().unwrap_or("generated-key"),
        })),
    }
}
