//! Outcomes of a delivery: [`DeliveryError`] (exported as `PublishError` and
//! `NotifyError`), [`PublishReport`] and [`Receipt`].
//!
//! These are the SDK's own types; they convert to the WIT records at the export
//! boundary (`publisher.rs`, `notifier.rs`). Mapping HTTP failures to them lives
//! in `http/error.rs`.

use std::fmt;

use crate::bindings::publisher::vigil::plugin::types as wit;

pub use wit::Rejection;

/// Why a delivery failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Try the same delivery again later (timeouts, 408, 429, 5xx).
    Retryable {
        /// What went wrong.
        message: String,
        /// How long the receiver asked to wait (`Retry-After`), if it did.
        retry_after_ms: Option<u64>,
    },
    /// Trying again will not help (bad configuration or credentials, other 4xx).
    Permanent {
        /// What went wrong.
        message: String,
    },
}

impl DeliveryError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> DeliveryError {
        DeliveryError::Retryable {
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> DeliveryError {
        DeliveryError::Permanent {
            message: message.into(),
        }
    }

    /// Asks the host to wait `ms` milliseconds before retrying. No effect on a
    /// permanent error.
    pub fn retry_after(self, ms: u64) -> DeliveryError {
        match self {
            DeliveryError::Retryable { message, .. } => DeliveryError::Retryable {
                message,
                retry_after_ms: Some(ms),
            },
            permanent => permanent,
        }
    }

    /// True for [`DeliveryError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, DeliveryError::Retryable { .. })
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            DeliveryError::Retryable { message, .. } | DeliveryError::Permanent { message } => {
                message
            }
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Retryable {
                message,
                retry_after_ms: Some(ms),
            } => write!(f, "{message} (retryable after {ms} ms)"),
            DeliveryError::Retryable { message, .. } => write!(f, "{message} (retryable)"),
            DeliveryError::Permanent { message } => write!(f, "{message} (permanent)"),
        }
    }
}

impl std::error::Error for DeliveryError {}

impl From<DeliveryError> for wit::DeliveryError {
    fn from(e: DeliveryError) -> wit::DeliveryError {
        match e {
            DeliveryError::Retryable {
                message,
                retry_after_ms,
            } => wit::DeliveryError::Retryable(wit::Retry {
                message,
                retry_after_ms,
            }),
            DeliveryError::Permanent { message } => wit::DeliveryError::Permanent(message),
        }
    }
}

/// Outcome of a publish call that reached the receiver: every item not
/// rejected here counts as delivered. An item is rejected at most once (the
/// host refuses an answer that names one twice): several samples of one seq
/// (the derived series of one observation) refused together give one
/// rejection, with the first reason.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    rejected: Vec<Rejection>,
    seen: std::collections::HashSet<u64>,
}

impl PublishReport {
    /// Everything was delivered.
    pub fn all_accepted() -> PublishReport {
        PublishReport::default()
    }

    /// Marks item `seq` as refused for good (it goes to the dead letters).
    pub fn reject(&mut self, seq: u64, reason: impl Into<String>) -> &mut PublishReport {
        if !self.seen.insert(seq) {
            return self;
        }
        self.rejected.push(Rejection {
            seq,
            reason: reason.into(),
        });
        self
    }

    /// A report of exactly these rejections, repeats included: nothing is
    /// merged (the host checks the answer and refuses a seq named twice).
    /// For tests of the host's checks; plugins use [`PublishReport::reject`].
    pub fn from_rejections(rejected: Vec<Rejection>) -> PublishReport {
        let seen = rejected.iter().map(|r| r.seq).collect();
        PublishReport { rejected, seen }
    }

    /// Like [`PublishReport::reject`], by value.
    pub fn with_rejected(mut self, seq: u64, reason: impl Into<String>) -> PublishReport {
        self.reject(seq, reason);
        self
    }

    /// The refused items.
    pub fn rejected(&self) -> &[Rejection] {
        &self.rejected
    }

    /// Reserves room for `additional` more rejections; `false` when memory is
    /// exhausted (lets a plugin stop short instead of trapping).
    pub fn try_reserve(&mut self, additional: usize) -> bool {
        self.rejected.try_reserve(additional).is_ok()
    }
}

impl From<PublishReport> for wit::PublishReport {
    fn from(r: PublishReport) -> wit::PublishReport {
        wit::PublishReport {
            rejected: r.rejected,
        }
    }
}

/// What the receiving service said about a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    /// The receiver's id for it (e.g. a PagerDuty dedup key), if any.
    pub id: Option<String>,
    /// A short human-readable outcome.
    pub detail: String,
}

impl Receipt {
    /// A receipt with `detail` and no id.
    pub fn new(detail: impl Into<String>) -> Receipt {
        Receipt {
            id: None,
            detail: detail.into(),
        }
    }

    /// Sets the receiver's id.
    pub fn with_id(mut self, id: impl Into<String>) -> Receipt {
        self.id = Some(id.into());
        self
    }
}

impl From<Receipt> for wit::Receipt {
    fn from(r: Receipt) -> wit::Receipt {
        wit::Receipt {
            id: r.id,
            detail: r.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_only_applies_to_retryable_errors() {
        let e = DeliveryError::retryable("503").retry_after(2000);
        assert_eq!(
            e,
            DeliveryError::Retryable {
                message: "503".into(),
                retry_after_ms: Some(2000)
            }
        );
        assert!(e.to_string().contains("2000 ms"));
        let p = DeliveryError::permanent("401").retry_after(5);
        assert!(!p.is_retryable());
        assert_eq!(p.message(), "401");
    }

    #[test]
    fn report_collects_rejections() {
        let mut r = PublishReport::all_accepted();
        r.reject(3, "bad").reject(4, "worse");
        let r = r.with_rejected(5, "worst");
        let seqs: Vec<u64> = r.rejected().iter().map(|x| x.seq).collect();
        assert_eq!(seqs, vec![3, 4, 5]);
        let wit: wit::PublishReport = r.into();
        assert_eq!(wit.rejected.len(), 3);
    }

    #[test]
    fn a_seq_is_rejected_once_with_its_first_reason() {
        let mut r = PublishReport::all_accepted();
        r.reject(7, "out of order")
            .reject(8, "x")
            .reject(7, "again");
        let got: Vec<(u64, &str)> = r
            .rejected()
            .iter()
            .map(|x| (x.seq, x.reason.as_str()))
            .collect();
        assert_eq!(got, vec![(7, "out of order"), (8, "x")]);
    }
}
