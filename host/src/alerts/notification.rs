//! Notifications as Alertmanager builds them: a group of alerts with group
//! labels, common labels and annotations; alert fingerprints computed as
//! Prometheus computes a label set's fingerprint (FNV-1a over the sorted
//! pairs), so the same labels have the same fingerprint in both; the
//! synthetic notification of a channel test; the JSON a delivery records.

use serde_json::{json, Map, Value};

use crate::plugins::bindings::types;

/// A label set's fingerprint as Prometheus and Alertmanager compute it
/// (`model.LabelSet.Fingerprint`): FNV-1a 64 over name, 0xff, value, 0xff of
/// each pair in name order; 16 hex digits.
pub fn fingerprint(labels: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort();
    let hash = fingerprint_hash(sorted.into_iter().map(|(k, v)| (k.as_str(), v.as_str())));
    format!("{hash:016x}")
}

/// The number [`fingerprint`] writes in hexadecimal, of pairs already
/// sorted by name (a `BTreeMap`'s order).
pub fn fingerprint_hash<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in pairs {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    h
}

/// The pairs every alert has with the same value.
fn common(sets: &[&[(String, String)]]) -> Vec<(String, String)> {
    let Some((first, rest)) = sets.split_first() else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = first
        .iter()
        .filter(|pair| rest.iter().all(|s| s.contains(pair)))
        .cloned()
        .collect();
    out.sort();
    out
}

/// A notification of `alerts` (labels and annotations sorted) for channel
/// `receiver`: firing while any alert fires, with the common labels and
/// annotations of its alerts.
pub fn group(
    receiver: &str,
    group_key: String,
    group_labels: Vec<(String, String)>,
    mut alerts: Vec<types::Alert>,
    external_url: String,
) -> types::Notification {
    for a in &mut alerts {
        a.labels.sort();
        a.annotations.sort();
    }
    let labels: Vec<&[(String, String)]> = alerts.iter().map(|a| a.labels.as_slice()).collect();
    let annotations: Vec<&[(String, String)]> =
        alerts.iter().map(|a| a.annotations.as_slice()).collect();
    let firing = alerts
        .iter()
        .any(|a| matches!(a.status, types::AlertStatus::Firing));
    types::Notification {
        group_key,
        status: if firing {
            types::AlertStatus::Firing
        } else {
            types::AlertStatus::Resolved
        },
        receiver: receiver.to_string(),
        group_labels,
        common_labels: common(&labels),
        common_annotations: common(&annotations),
        external_url,
        truncated_alerts: 0,
        alerts,
    }
}

/// The synthetic notification `POST /notification-channels/{id}/test` sends:
/// one firing alert `VigilTestNotification` naming the channel.
pub fn test_notification(channel: &str, external_url: &str, now_ms: i64) -> types::Notification {
    let labels = vec![
        ("alertname".to_string(), "VigilTestNotification".to_string()),
        ("channel".to_string(), channel.to_string()),
        ("severity".to_string(), "none".to_string()),
    ];
    let alert = types::Alert {
        fingerprint: fingerprint(&labels),
        status: types::AlertStatus::Firing,
        labels: labels.clone(),
        annotations: vec![
            (
                "description".to_string(),
                format!("A test notification sent through channel `{channel}`; nothing is wrong."),
            ),
            ("summary".to_string(), "Vigil test notification".to_string()),
        ],
        starts_at: now_ms,
        ends_at: None,
        value: None,
        generator_url: format!("{external_url}/api/v2/notification-channels"),
    };
    group(
        channel,
        format!("{{}}/{{channel=\"{channel}\"}}:{{alertname=\"VigilTestNotification\"}}"),
        vec![("alertname".to_string(), "VigilTestNotification".to_string())],
        vec![alert],
        external_url.to_string(),
    )
}

fn object(pairs: &[(String, String)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

fn status(s: types::AlertStatus) -> &'static str {
    match s {
        types::AlertStatus::Firing => "firing",
        types::AlertStatus::Resolved => "resolved",
    }
}

/// What a delivery records of its notification (Alertmanager's field names).
/// Notifications carry no channel settings, so there is nothing to redact.
pub fn payload_json(n: &types::Notification) -> Value {
    json!({
        "receiver": n.receiver,
        "status": status(n.status),
        "alerts": n.alerts.iter().map(|a| json!({
            "status": status(a.status),
            "labels": object(&a.labels),
            "annotations": object(&a.annotations),
            "startsAt": crate::alerts::rfc3339(a.starts_at),
            "endsAt": a.ends_at.map(crate::alerts::rfc3339),
            "value": a.value,
            "generatorURL": a.generator_url,
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
        "groupLabels": object(&n.group_labels),
        "commonLabels": object(&n.common_labels),
        "commonAnnotations": object(&n.common_annotations),
        "externalURL": n.external_url,
        "groupKey": n.group_key,
        "truncatedAlerts": n.truncated_alerts,
    })
}

fn pairs_of(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn status_of(v: &Value) -> types::AlertStatus {
    if v.as_str() == Some("resolved") {
        types::AlertStatus::Resolved
    } else {
        types::AlertStatus::Firing
    }
}

fn ms_of(v: &Value) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The notification a delivery recorded ([`payload_json`] read back), for
/// a retry; `None` when the record is not one this server wrote.
pub fn from_payload(v: &Value) -> Option<types::Notification> {
    let alerts = v
        .get("alerts")?
        .as_array()?
        .iter()
        .map(|a| {
            Some(types::Alert {
                fingerprint: a.get("fingerprint")?.as_str()?.to_string(),
                status: status_of(a.get("status")?),
                labels: pairs_of(a.get("labels")?),
                annotations: pairs_of(a.get("annotations")?),
                starts_at: ms_of(a.get("startsAt")?)?,
                ends_at: a.get("endsAt").and_then(ms_of),
                value: a.get("value").and_then(Value::as_f64),
                generator_url: a.get("generatorURL")?.as_str()?.to_string(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(types::Notification {
        group_key: v.get("groupKey")?.as_str()?.to_string(),
        status: status_of(v.get("status")?),
        receiver: v.get("receiver")?.as_str()?.to_string(),
        group_labels: pairs_of(v.get("groupLabels")?),
        common_labels: pairs_of(v.get("commonLabels")?),
        common_annotations: pairs_of(v.get("commonAnnotations")?),
        external_url: v.get("externalURL")?.as_str()?.to_string(),
        truncated_alerts: v.get("truncatedAlerts")?.as_u64()? as u32,
        alerts,
    })
}

/// The fingerprints and statuses of a notification's alerts.
pub fn alerts_json(n: &types::Notification) -> Value {
    Value::Array(
        n.alerts
            .iter()
            .map(|a| json!({"fingerprint": a.fingerprint, "status": status(a.status)}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fingerprints_match_prometheus() {
        // model.LabelSet{}.Fingerprint() and
        // model.LabelSet{"foo": "bar"}.Fingerprint() in prometheus/common.
        assert_eq!(fingerprint(&[]), "cbf29ce484222325");
        assert_eq!(
            fingerprint(&pairs(&[("b", "2"), ("a", "1")])),
            fingerprint(&pairs(&[("a", "1"), ("b", "2")]))
        );
        assert_ne!(
            fingerprint(&pairs(&[("a", "1b")])),
            fingerprint(&pairs(&[("a1", "b")]))
        );
    }

    #[test]
    fn a_recorded_payload_reads_back_as_the_notification() {
        let mut n = test_notification("ops", "http://vigil:8080", 1_700_000_000_123);
        n.alerts[0].value = Some(2.5);
        let back = from_payload(&payload_json(&n)).unwrap();
        assert_eq!(payload_json(&back), payload_json(&n));
        assert!(from_payload(&json!({"alerts": "no"})).is_none());
    }

    #[test]
    fn a_group_fires_while_any_alert_fires_and_keeps_what_is_common() {
        let alert = |fp: &str, job: &str, s| types::Alert {
            fingerprint: fp.into(),
            status: s,
            labels: pairs(&[("alertname", "Q"), ("job", job)]),
            annotations: pairs(&[("summary", "high")]),
            starts_at: 0,
            ends_at: None,
            value: None,
            generator_url: String::new(),
        };
        let n = group(
            "ops",
            "k".into(),
            vec![],
            vec![
                alert("1", "a", types::AlertStatus::Resolved),
                alert("2", "b", types::AlertStatus::Firing),
            ],
            String::new(),
        );
        assert!(matches!(n.status, types::AlertStatus::Firing));
        assert_eq!(n.common_labels, pairs(&[("alertname", "Q")]));
        assert_eq!(n.common_annotations, pairs(&[("summary", "high")]));
    }
}
