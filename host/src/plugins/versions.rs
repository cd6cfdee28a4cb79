//! Conversions between the current `vigil:plugin` types and those of earlier
//! versions, so plugins built against any of them keep working (one bindings
//! module per version, see `bindings`).
//!
//! 0.1.0 → 0.2.0: `notify` took one `alert-notification`; it now takes a
//! `notification` (a group). A 0.1.0 notifier receives the group's alerts one
//! by one, each with its rule (`alertname`), `severity`, `summary` and
//! `description` taken from the labels and annotations.

use super::bindings::{types, v0_1_0};

/// A config entry for a 0.1.0 plugin.
pub fn config_entry_v0_1(e: &types::ConfigEntry) -> v0_1_0::types::ConfigEntry {
    v0_1_0::types::ConfigEntry {
        key: e.key.clone(),
        value: e.value.clone(),
    }
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// The alerts of a group as 0.1.0 notifications, one per alert.
pub fn alerts_v0_1(n: &types::Notification) -> Vec<v0_1_0::types::AlertNotification> {
    n.alerts
        .iter()
        .map(|a| v0_1_0::types::AlertNotification {
            id: a.fingerprint.clone(),
            rule: find(&a.labels, "alertname").to_string(),
            status: match a.status {
                types::AlertStatus::Firing => v0_1_0::types::AlertStatus::Firing,
                types::AlertStatus::Resolved => v0_1_0::types::AlertStatus::Resolved,
            },
            severity: find(&a.labels, "severity").to_string(),
            summary: find(&a.annotations, "summary").to_string(),
            description: find(&a.annotations, "description").to_string(),
            labels: a.labels.clone(),
            annotations: a.annotations.clone(),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            value: a.value,
            url: (!a.generator_url.is_empty()).then(|| a.generator_url.clone()),
        })
        .collect()
}

/// A 0.1.0 receipt as a current one.
pub fn receipt_from_v0_1(r: v0_1_0::types::Receipt) -> types::Receipt {
    types::Receipt {
        id: r.id,
        detail: r.detail,
    }
}

/// The receipts of a group's alerts as one: ids and details joined with `, `.
pub fn join_receipts(receipts: Vec<types::Receipt>) -> types::Receipt {
    let ids: Vec<String> = receipts.iter().filter_map(|r| r.id.clone()).collect();
    types::Receipt {
        id: (!ids.is_empty()).then(|| ids.join(", ")),
        detail: receipts
            .into_iter()
            .map(|r| r.detail)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A 0.1.0 delivery error as a current one.
pub fn delivery_error_from_v0_1(e: v0_1_0::types::DeliveryError) -> types::DeliveryError {
    match e {
        v0_1_0::types::DeliveryError::Retryable(r) => {
            types::DeliveryError::Retryable(types::Retry {
                message: r.message,
                retry_after_ms: r.retry_after_ms,
            })
        }
        v0_1_0::types::DeliveryError::Permanent(m) => types::DeliveryError::Permanent(m),
    }
}

/// A 0.1.0 self-description as a current one.
pub fn plugin_info_from_v0_1(i: v0_1_0::types::PluginInfo) -> types::PluginInfo {
    types::PluginInfo {
        name: i.name,
        version: i.version,
        kind: match i.kind {
            v0_1_0::types::PluginKind::Publisher => types::PluginKind::Publisher,
            v0_1_0::types::PluginKind::Notifier => types::PluginKind::Notifier,
            v0_1_0::types::PluginKind::DebugFields => types::PluginKind::DebugFields,
        },
        description: i.description,
        config_schema: i.config_schema,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(fp: &str, status: types::AlertStatus) -> types::Alert {
        types::Alert {
            fingerprint: fp.into(),
            status,
            labels: vec![
                ("alertname".into(), "QueueHigh".into()),
                ("severity".into(), "page".into()),
            ],
            annotations: vec![("summary".into(), "queue is high".into())],
            starts_at: 1_000,
            ends_at: None,
            value: Some(12.0),
            generator_url: "http://vigil/rules/1".into(),
        }
    }

    #[test]
    fn a_group_becomes_one_old_notification_per_alert() {
        let n = types::Notification {
            group_key: "k".into(),
            status: types::AlertStatus::Firing,
            receiver: "ops".into(),
            group_labels: vec![],
            common_labels: vec![],
            common_annotations: vec![],
            external_url: String::new(),
            alerts: vec![
                alert("a1", types::AlertStatus::Firing),
                alert("a2", types::AlertStatus::Resolved),
            ],
            truncated_alerts: 0,
        };
        let old = alerts_v0_1(&n);
        assert_eq!(old.len(), 2);
        assert_eq!(old[0].id, "a1");
        assert_eq!(old[0].rule, "QueueHigh");
        assert_eq!(old[0].severity, "page");
        assert_eq!(old[0].summary, "queue is high");
        assert_eq!(old[0].description, "");
        assert_eq!(old[0].url.as_deref(), Some("http://vigil/rules/1"));
        assert!(matches!(
            old[1].status,
            v0_1_0::types::AlertStatus::Resolved
        ));
        let joined = join_receipts(vec![
            types::Receipt {
                id: Some("a1".into()),
                detail: "x".into(),
            },
            types::Receipt {
                id: None,
                detail: "y".into(),
            },
        ]);
        assert_eq!(joined.id.as_deref(), Some("a1"));
        assert_eq!(joined.detail, "x, y");
    }
}
