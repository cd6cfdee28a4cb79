//! Slack's incoming webhook, strictly: `POST` with `Content-Type:
//! application/json`, a JSON object with a non-empty `text` (the
//! notification fallback) and, when given, `blocks` as Block Kit allows
//! them (at most 50; `header` plain text ≤ 150 characters; `section` mrkdwn
//! or plain text ≤ 3,000; `context` elements; a button accessory with text
//! and url). A bad message is answered as Slack answers it, `400
//! invalid_payload`; the other real failures are chosen by the test.

use serde_json::Value;

use super::webhook::{ReceivedRequest, Reply};

/// What the stand-in answers to a well-formed message.
#[derive(Clone, Copy, Debug)]
pub enum SlackAnswer {
    Ok,
    /// `403 invalid_token`: the webhook was revoked.
    InvalidToken,
    /// `404 channel_not_found`.
    ChannelNotFound,
    /// `410 channel_is_archived`.
    ChannelIsArchived,
    /// `429` with `Retry-After` seconds.
    RateLimited(u64),
}

fn text_object(v: &Value, kind: Option<&str>, max: usize) -> Result<(), String> {
    let t = v["type"].as_str().ok_or("text object without type")?;
    if !matches!(t, "plain_text" | "mrkdwn") || kind.is_some_and(|k| k != t) {
        return Err(format!("text object of type {t}"));
    }
    let text = v["text"].as_str().ok_or("text object without text")?;
    if text.is_empty() || text.chars().count() > max {
        return Err(format!(
            "text of {} characters (1 to {max})",
            text.chars().count()
        ));
    }
    Ok(())
}

/// Checks a message as Slack does; the reason when it would refuse it.
pub fn check_message(req: &ReceivedRequest) -> Result<Value, String> {
    if req.method != "POST" {
        return Err(format!("method {}", req.method));
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        return Err("content-type is not application/json".into());
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|e| e.to_string())?;
    let text = v["text"].as_str().ok_or("no text")?;
    if text.trim().is_empty() || text.chars().count() > 40_000 {
        return Err("text empty or longer than 40,000 characters".into());
    }
    if let Some(obj) = v.as_object() {
        for k in obj.keys() {
            if ![
                "text",
                "blocks",
                "channel",
                "username",
                "icon_emoji",
                "icon_url",
                "mrkdwn",
            ]
            .contains(&k.as_str())
            {
                return Err(format!("unknown field {k}"));
            }
        }
    }
    if let Some(blocks) = v.get("blocks") {
        let blocks = blocks.as_array().ok_or("blocks is not an array")?;
        if blocks.len() > 50 {
            return Err(format!("{} blocks", blocks.len()));
        }
        for b in blocks {
            match b["type"].as_str() {
                Some("header") => text_object(&b["text"], Some("plain_text"), 150)?,
                Some("section") => {
                    text_object(&b["text"], None, 3_000)?;
                    if let Some(acc) = b.get("accessory") {
                        if acc["type"] != "button" || acc["url"].as_str().is_none() {
                            return Err("accessory is not a button with a url".into());
                        }
                        text_object(&acc["text"], Some("plain_text"), 75)?;
                    }
                }
                Some("context") => {
                    let els = b["elements"].as_array().ok_or("context without elements")?;
                    if els.is_empty() || els.len() > 10 {
                        return Err("context with 0 or more than 10 elements".into());
                    }
                    for e in els {
                        text_object(e, None, 3_000)?;
                    }
                }
                Some("divider") => {}
                other => return Err(format!("block type {other:?}")),
            }
        }
    }
    Ok(v)
}

fn text_reply(status: u16, body: &str) -> Reply {
    let mut r = Reply::status(status).header("content-type", "text/html");
    r.body = body.to_string();
    r
}

/// Slack's answer to `req`.
pub fn reply(req: &ReceivedRequest, answer: SlackAnswer) -> Reply {
    if check_message(req).is_err() {
        return text_reply(400, "invalid_payload");
    }
    match answer {
        SlackAnswer::Ok => text_reply(200, "ok"),
        SlackAnswer::InvalidToken => text_reply(403, "invalid_token"),
        SlackAnswer::ChannelNotFound => text_reply(404, "channel_not_found"),
        SlackAnswer::ChannelIsArchived => text_reply(410, "channel_is_archived"),
        SlackAnswer::RateLimited(s) => {
            text_reply(429, "rate_limited").header("retry-after", &s.to_string())
        }
    }
}
