//! Reading Elasticsearch's answers: the per-item results of `_bulk` and the
//! errors of a whole request.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use vigil_plugin::http::Response;
use vigil_plugin::publisher::{PublishError, PublishReport};

use crate::docs::Encoded;
use crate::settings::Auth;

#[derive(Deserialize)]
struct BulkResponse {
    items: Vec<BTreeMap<String, ItemResult>>,
}

#[derive(Deserialize)]
struct ItemResult {
    #[serde(rename = "_id")]
    id: Option<String>,
    status: u16,
    #[serde(default)]
    error: Value,
}

/// What the items of one batch came to.
#[derive(Default)]
pub(crate) struct Outcome {
    pub rejected: Vec<(u64, String)>,
    /// Items answered 429 or 5xx.
    pub retry: usize,
    /// The first such answer.
    pub retry_reason: Option<String>,
}

impl Outcome {
    /// Retryable when any item was; else the report with the rejections.
    pub(crate) fn into_report(self) -> Result<PublishReport, PublishError> {
        if self.retry > 0 {
            return Err(PublishError::retryable(format!(
                "Elasticsearch refused {} items for now ({}); the batch is sent again, \
                 the documents already created come back 409",
                self.retry,
                self.retry_reason.unwrap_or_default()
            )));
        }
        let mut report = PublishReport::all_accepted();
        for (seq, reason) in self.rejected {
            report.reject(seq, reason);
        }
        Ok(report)
    }
}

/// `type: reason` of an Elasticsearch error object (or its text).
fn describe(error: &Value) -> String {
    match error {
        Value::Object(e) => {
            let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
            let cause = e
                .get("caused_by")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str);
            match cause {
                Some(c) => format!("{kind}: {reason} (caused by: {c})"),
                None => format!("{kind}: {reason}"),
            }
        }
        Value::String(s) => s.clone(),
        Value::Null => "no reason given".to_string(),
        other => other.to_string(),
    }
}

/// Reads every item of a `200` `_bulk` answer for the `sent` actions.
pub(crate) fn read_items(
    response: &Response,
    sent: &[Encoded],
    outcome: &mut Outcome,
) -> Result<(), PublishError> {
    let parsed: BulkResponse = response.json().map_err(|e| {
        PublishError::retryable(format!("Elasticsearch's _bulk answer is not readable: {e}"))
    })?;
    if parsed.items.len() != sent.len() {
        return Err(PublishError::retryable(format!(
            "Elasticsearch answered {} items for {} actions",
            parsed.items.len(),
            sent.len()
        )));
    }
    for (item, encoded) in parsed.items.iter().zip(sent) {
        let Some(result) = item.get("create").or_else(|| item.values().next()) else {
            return Err(PublishError::retryable(
                "an empty item in Elasticsearch's _bulk answer",
            ));
        };
        if result.id.as_deref().is_some_and(|id| id != encoded.id) {
            return Err(PublishError::retryable(format!(
                "Elasticsearch's _bulk answer is out of order: item for {} where {} was sent",
                result.id.as_deref().unwrap_or(""),
                encoded.id
            )));
        }
        match result.status {
            200..=299 | 409 => {}
            429 | 500..=599 => {
                outcome.retry += 1;
                outcome.retry_reason.get_or_insert_with(|| {
                    format!("{} {}", result.status, describe(&result.error))
                });
            }
            status => outcome.rejected.push((
                encoded.seq,
                format!(
                    "Elasticsearch refused {} ({status}): {}",
                    encoded.id,
                    describe(&result.error)
                ),
            )),
        }
    }
    Ok(())
}

/// The error for a whole request that did not succeed.
pub(crate) fn request_error(
    host: &str,
    path: &str,
    auth: &Auth,
    response: &Response,
) -> PublishError {
    let status = response.status();
    let detail = response
        .json::<Value>()
        .ok()
        .map(|v| describe(&v["error"]))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&response.bytes()[..response.bytes().len().min(300)])
                .into_owned()
        });
    let message = format!("{host}{path} answered HTTP {status}: {detail}");
    match status {
        401 => PublishError::permanent(format!(
            "Elasticsearch did not accept {} ({message})",
            auth.describe()
        )),
        403 => PublishError::permanent(format!(
            "the credential in {} lacks a privilege ({message})",
            auth.describe()
        )),
        413 => PublishError::permanent(format!(
            "request larger than Elasticsearch's http.max_content_length; lower config.max_bulk_bytes ({message})"
        )),
        408 | 429 | 500..=599 => {
            let e = PublishError::retryable(message);
            match response.retry_after_ms() {
                Some(ms) => e.retry_after(ms),
                None => e,
            }
        }
        _ => PublishError::permanent(message),
    }
}
