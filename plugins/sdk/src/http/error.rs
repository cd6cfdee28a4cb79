//! [`HttpError`] and how each kind of failure maps to a [`DeliveryError`]:
//! refused by the host or malformed → permanent; timeouts, connection failures,
//! 408, 429 and 5xx → retryable (honouring `Retry-After`); other 4xx → permanent.

use std::fmt;

use crate::delivery::DeliveryError;

/// Why an HTTP request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The host refused to send the request (`wasi:http` error code
    /// `HTTP-request-denied`): the destination is not in the plugin manifest's
    /// `allowed_hosts`.
    Denied {
        /// The URL asked for.
        url: String,
        /// The host's error code, as reported.
        code: String,
    },
    /// The request could not be built: bad URL, header refused, body not
    /// serialisable.
    InvalidRequest(String),
    /// Connecting, or waiting for the response, took too long.
    Timeout {
        /// The URL asked for.
        url: String,
        /// The host's error code.
        code: String,
    },
    /// DNS, connection, TLS or protocol failure, or the body broke off.
    Connection {
        /// The URL asked for.
        url: String,
        /// The host's error code or stream error.
        code: String,
    },
    /// The receiver answered with an error status ([`super::Response::error_for_status`]).
    Status {
        /// The status code.
        status: u16,
        /// `Retry-After` (delay in seconds), in milliseconds.
        retry_after_ms: Option<u64>,
        /// The start of the response body.
        body: String,
    },
    /// The response body was larger than the request's limit.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The response body is not what was expected (not UTF-8, not the JSON asked for).
    Decode(String),
    /// `wasi:http` is not available: the code runs outside a component.
    Unsupported,
}

impl HttpError {
    /// The status code, for [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the host refused the request.
    pub fn is_denied(&self) -> bool {
        matches!(self, HttpError::Denied { .. })
    }

    /// The delivery error this failure amounts to.
    pub fn to_delivery_error(&self) -> DeliveryError {
        let message = self.to_string();
        match self {
            HttpError::Timeout { .. } | HttpError::Connection { .. } => {
                DeliveryError::retryable(message)
            }
            HttpError::Status {
                status,
                retry_after_ms,
                ..
            } => {
                let retryable = matches!(status, 408 | 429 | 500..=599);
                match (retryable, retry_after_ms) {
                    (true, Some(ms)) => DeliveryError::retryable(message).retry_after(*ms),
                    (true, None) => DeliveryError::retryable(message),
                    (false, _) => DeliveryError::permanent(message),
                }
            }
            HttpError::Denied { .. }
            | HttpError::InvalidRequest(_)
            | HttpError::TooLarge { .. }
            | HttpError::Decode(_)
            | HttpError::Unsupported => DeliveryError::permanent(message),
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied { url, code } => write!(
                f,
                "request to {url} denied by the host ({code}): its host is not in the plugin's allowed_hosts"
            ),
            HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpError::Timeout { url, code } => write!(f, "request to {url} timed out ({code})"),
            HttpError::Connection { url, code } => write!(f, "request to {url} failed ({code})"),
            HttpError::Status { status, body, .. } if body.is_empty() => {
                write!(f, "receiver answered HTTP {status}")
            }
            HttpError::Status { status, body, .. } => {
                write!(f, "receiver answered HTTP {status}: {body}")
            }
            HttpError::TooLarge { limit } => {
                write!(f, "response body larger than the limit of {limit} bytes")
            }
            HttpError::Decode(why) => write!(f, "unexpected response body: {why}"),
            HttpError::Unsupported => {
                write!(f, "wasi:http is only available inside a WebAssembly component")
            }
        }
    }
}

impl std::error::Error for HttpError {}

impl From<HttpError> for DeliveryError {
    fn from(e: HttpError) -> DeliveryError {
        e.to_delivery_error()
    }
}

/// Parses `Retry-After` in its delay-seconds form; `None` for an HTTP date or junk.
pub(crate) fn parse_retry_after(value: &str) -> Option<u64> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after_ms: Option<u64>) -> DeliveryError {
        HttpError::Status {
            status: code,
            retry_after_ms,
            body: String::new(),
        }
        .into()
    }

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        assert!(!status(400, None).is_retryable());
        assert!(!status(401, None).is_retryable());
        assert!(!status(404, Some(1000)).is_retryable());
        assert!(status(408, None).is_retryable());
        assert!(status(500, None).is_retryable());
        assert_eq!(
            status(429, Some(3000)),
            DeliveryError::Retryable {
                message: "receiver answered HTTP 429".into(),
                retry_after_ms: Some(3000)
            }
        );
        assert!(matches!(
            status(503, Some(1000)),
            DeliveryError::Retryable {
                retry_after_ms: Some(1000),
                ..
            }
        ));
    }

    #[test]
    fn transport_failures_map_by_kind() {
        let denied = HttpError::Denied {
            url: "http://203.0.113.7:9/".into(),
            code: "HttpRequestDenied".into(),
        };
        let e = DeliveryError::from(denied);
        assert!(!e.is_retryable());
        assert!(e.message().contains("HttpRequestDenied"), "{e}");
        let t = HttpError::Timeout {
            url: "u".into(),
            code: "ConnectionTimeout".into(),
        };
        assert!(DeliveryError::from(t).is_retryable());
        assert!(!DeliveryError::from(HttpError::Decode("x".into())).is_retryable());
    }

    #[test]
    fn retry_after_seconds_become_milliseconds() {
        assert_eq!(parse_retry_after(" 120 "), Some(120_000));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
