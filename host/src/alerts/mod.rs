//! Alerting: notification channels (`channels`: a notifier plugin and its
//! settings per channel), notifications as Alertmanager groups
//! (`notification`: fingerprints, the synthetic test notification, the
//! recorded payload) and deliveries (`deliveries`: one attempt through a
//! channel's notifier and what it is recorded as). The HTTP routes live in
//! `api::alerting`.

pub mod channels;
pub mod deliveries;
pub mod notification;

/// Milliseconds since the Unix epoch as RFC 3339 (milliseconds, `Z`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
