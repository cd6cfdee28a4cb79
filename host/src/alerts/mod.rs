//! Alerting: notification channels (`channels`: a notifier plugin and its
//! settings per channel), notifications as Alertmanager groups
//! (`notification`: fingerprints, the synthetic test notification, the
//! recorded payload) and deliveries (`deliveries`: one attempt through a
//! channel's notifier and what it is recorded as); rules (`rules`: what a
//! rule may say; `promql`: its expression; `template`: its labels and
//! annotations), what a rule remembers and decides (`state`), the series it
//! can select (`catalog`) and the evaluator and sender tasks (`engine`).
//! The HTTP routes live in `api::alerting` and `api::alert_rules`.

pub mod catalog;
pub mod channels;
pub mod deliveries;
pub mod engine;
pub mod event_rules;
pub mod notification;
pub mod preview;
pub mod promql;
pub mod rule_file;
pub mod rules;
pub mod silences;
pub mod state;
pub mod template;

/// Milliseconds since the Unix epoch as RFC 3339 (milliseconds, `Z`).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
