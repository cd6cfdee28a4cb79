use super::*;

fn spec(for_ms: i64, keep_ms: i64) -> RuleSpec {
    RuleSpec {
        name: "QueueHigh".into(),
        expr: "queue > 10".into(),
        alertname: None,
        events: None,
        for_ms,
        keep_firing_for_ms: keep_ms,
        labels: BTreeMap::from([("severity".to_string(), "page".to_string())]),
        annotations: BTreeMap::from([(
            "summary".to_string(),
            "{{ $labels.component }} at {{ $value }}".to_string(),
        )]),
        interval_ms: 1_000,
        channels: vec!["c1".into()],
        group_by: vec![],
        group_wait_ms: 0,
        group_interval_ms: 5_000,
        repeat_interval_ms: 60_000,
        no_data: NoData::Ok,
        on_error: OnError::KeepState,
        enabled: true,
    }
}

fn series(component: &str, v: f64) -> (BTreeMap<String, String>, f64) {
    (
        BTreeMap::from([("component".to_string(), component.to_string())]),
        v,
    )
}

fn states(s: &RuleState) -> Vec<(String, AlertState)> {
    s.alerts
        .values()
        .map(|a| (a.labels["component"].clone(), a.state))
        .collect()
}

fn none(_: &BTreeMap<String, String>) -> bool {
    false
}

const CHANNELS: &[(&str, &str, bool)] = &[("c1", "ops", true)];

fn channels() -> Vec<(String, String, bool)> {
    CHANNELS
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), *c))
        .collect()
}

#[test]
fn for_holds_a_short_spike_back_and_fires_a_lasting_one() {
    let spec = spec(3_000, 0);
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 0);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Pending)]);
    // The spike ends before `for`: the pending alert is forgotten.
    s.observe(&spec, Ok(vec![]), 1_000);
    assert!(s.alerts.is_empty());
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 2_000);
    s.observe(&spec, Ok(vec![series("w1", 21.0)]), 4_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Pending)]);
    // 5,000 - 2,000 >= 3,000: firing, with the rule's labels and annotations.
    s.observe(&spec, Ok(vec![series("w1", 22.0)]), 5_000);
    let a = s.alerts.values().next().unwrap();
    assert_eq!(a.state, AlertState::Firing);
    assert_eq!((a.active_at_ms, a.fired_at_ms), (2_000, Some(5_000)));
    assert_eq!(a.labels["alertname"], "QueueHigh");
    assert_eq!(a.labels["severity"], "page");
    assert_eq!(a.annotations["summary"], "w1 at 22");
    s.observe(&spec, Ok(vec![]), 6_000);
    let a = s.alerts.values().next().unwrap();
    assert_eq!(
        (a.state, a.resolved_at_ms),
        (AlertState::Inactive, Some(6_000))
    );
    // Kept 15 minutes after the resolve, then dropped.
    s.observe(&spec, Ok(vec![]), 6_000 + RESOLVED_RETENTION_MS);
    assert_eq!(s.alerts.len(), 1);
    s.observe(&spec, Ok(vec![]), 6_001 + RESOLVED_RETENTION_MS);
    assert!(s.alerts.is_empty());
}

#[test]
fn keep_firing_for_holds_a_firing_alert_through_a_gap() {
    let spec = spec(0, 3_000);
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 0);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Firing)]);
    s.observe(&spec, Ok(vec![]), 1_000);
    s.observe(&spec, Ok(vec![]), 3_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Firing)]);
    // Back before keep_firing_for ran out: the gap is forgotten.
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 3_500);
    s.observe(&spec, Ok(vec![]), 4_000);
    s.observe(&spec, Ok(vec![]), 6_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Firing)]);
    // 7,000 - 4,000 = keep_firing_for: resolved.
    s.observe(&spec, Ok(vec![]), 7_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Inactive)]);
}

#[test]
fn errors_and_empty_results_do_what_the_rule_says() {
    let mut spec = spec(0, 0);
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 0);
    s.observe(&spec, Err("database down".into()), 1_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Firing)]);
    assert_eq!(s.last_error.as_deref(), Some("database down"));
    spec.no_data = NoData::KeepState;
    s.observe(&spec, Ok(vec![]), 2_000);
    assert_eq!(states(&s), vec![("w1".into(), AlertState::Firing)]);
    assert_eq!(s.last_error, None);
    spec.no_data = NoData::Alerting;
    s.observe(&spec, Ok(vec![]), 3_000);
    let reasons: Vec<_> = s
        .alerts
        .values()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| a.labels.get("alertstate_reason").cloned())
        .collect();
    assert_eq!(reasons, vec![Some("no_data".to_string())]);
}

#[test]
fn a_group_waits_then_notifies_changes_repeats_and_resolves_once() {
    let mut spec = spec(0, 0);
    spec.group_wait_ms = 2_000;
    let ch = channels();
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 0);
    assert!(s.flush(&spec, &ch, "http://v", "r1", 0, &none).is_empty());
    s.observe(
        &spec,
        Ok(vec![series("w1", 20.0), series("w2", 30.0)]),
        1_000,
    );
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 1_000, &none)
        .is_empty());
    // group_wait is over: one notification with both alerts.
    let due = s.flush(&spec, &ch, "http://v", "r1", 2_000, &none);
    assert_eq!(due.len(), 1);
    let n = &due[0].notification;
    assert_eq!(n.alerts.len(), 2);
    assert_eq!(n.receiver, "ops");
    assert!(matches!(n.status, types::AlertStatus::Firing));
    assert!(n
        .common_labels
        .contains(&("alertname".into(), "QueueHigh".into())));
    // Nothing changed: nothing before repeat_interval, even at group_interval.
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 7_000, &none)
        .is_empty());
    // w2 resolves: sent at the next group_interval, once.
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 8_000);
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 8_000, &none)
        .is_empty());
    let due = s.flush(&spec, &ch, "http://v", "r1", 12_000, &none);
    assert_eq!(due.len(), 1);
    let statuses: Vec<_> = due[0]
        .notification
        .alerts
        .iter()
        .map(|a| {
            (
                a.labels
                    .iter()
                    .find(|l| l.0 == "component")
                    .unwrap()
                    .1
                    .clone(),
                a.status,
            )
        })
        .collect();
    assert!(statuses.contains(&("w2".to_string(), types::AlertStatus::Resolved)));
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 17_000, &none)
        .is_empty());
    // repeat_interval after the last notification: sent again.
    let due = s.flush(&spec, &ch, "http://v", "r1", 72_000, &none);
    assert_eq!(due.len(), 1);
    // Everything resolves: one resolved notification, then the group is gone.
    s.observe(&spec, Ok(vec![]), 73_000);
    let due = s.flush(&spec, &ch, "http://v", "r1", 77_000, &none);
    assert_eq!(due.len(), 1);
    assert!(matches!(
        due[0].notification.status,
        types::AlertStatus::Resolved
    ));
    assert!(s.groups.is_empty());
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 200_000, &none)
        .is_empty());
}

#[test]
fn group_by_splits_notifications_and_resolves_are_not_sent_where_unwanted() {
    let mut spec = spec(0, 0);
    spec.group_by = vec!["component".into()];
    let ch = vec![("c1".to_string(), "ops".to_string(), false)];
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0), series("w2", 30.0)]), 0);
    let due = s.flush(&spec, &ch, "http://v", "r1", 0, &none);
    assert_eq!(due.len(), 2);
    assert!(due
        .iter()
        .all(|d| d.notification.alerts.len() == 1 && d.notification.group_labels.len() == 1));
    s.observe(&spec, Ok(vec![]), 1_000);
    // send_resolved = false: the groups close without a message.
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 5_000, &none)
        .is_empty());
    assert!(s.groups.is_empty());
}

#[test]
fn an_alert_that_fires_and_resolves_within_group_wait_is_never_sent() {
    let mut spec = spec(0, 0);
    spec.group_wait_ms = 10_000;
    let ch = channels();
    let mut s = RuleState::default();
    s.observe(&spec, Ok(vec![series("w1", 20.0)]), 0);
    assert!(s.flush(&spec, &ch, "http://v", "r1", 0, &none).is_empty());
    s.observe(&spec, Ok(vec![]), 1_000);
    assert!(s
        .flush(&spec, &ch, "http://v", "r1", 10_000, &none)
        .is_empty());
    assert!(s.groups.is_empty());
}

#[test]
fn a_silenced_alert_is_recorded_once_and_notified_when_the_silence_ends() {
    let spec = spec(0, 0);
    let ch = channels();
    let mut s = RuleState::default();
    let w1 = |l: &BTreeMap<String, String>| l.get("component").is_some_and(|c| c == "w1");
    s.observe(&spec, Ok(vec![series("w1", 20.0), series("w2", 30.0)]), 0);
    let due = s.flush(&spec, &ch, "http://v", "r1", 0, &w1);
    let (silenced, sent): (Vec<_>, Vec<_>) = due.iter().partition(|d| d.silenced);
    assert_eq!(silenced.len(), 1);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].notification.alerts.len(),
        1,
        "the silenced alert was sent"
    );
    // Still silenced: not recorded again.
    assert!(s.flush(&spec, &ch, "http://v", "r1", 5_000, &w1).is_empty());
    // The silence ends: w1 is new to the group and goes out at its next flush.
    let due = s.flush(&spec, &ch, "http://v", "r1", 10_000, &none);
    assert_eq!(due.len(), 1);
    assert!(!due[0].silenced);
    assert_eq!(due[0].notification.alerts.len(), 2);
}

#[test]
fn the_fingerprint_of_sample_labels_and_alertname_is_that_of_the_whole_set() {
    use super::super::notification::fingerprint;
    for pairs in [
        vec![],
        vec![("instance", "i1"), ("job", "j")],
        vec![("a", "1"), ("zz", "2")],
        // the sample's own `alertname` is overwritten
        vec![("alertname", "Other"), ("job", "j")],
    ] {
        let labels: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut whole = labels.clone();
        whole.insert("alertname".into(), "HighLoad".into());
        let whole: Vec<(String, String)> = whole.into_iter().collect();
        let shortcut = fingerprint_hash(with_alertname(&labels, "HighLoad"));
        assert_eq!(
            FingerprintText::of(shortcut).as_str(),
            fingerprint(&whole),
            "{pairs:?}"
        );
    }
}
