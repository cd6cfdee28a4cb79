//! What a rule remembers between evaluations, and the two pure steps that
//! change it: [`RuleState::observe`] takes one evaluation's result and moves
//! each alert through inactive → pending → firing → resolved exactly as
//! Prometheus's alerting rule does (`for`, `keep_firing_for`, resolved
//! alerts kept 15 minutes); [`RuleState::flush`] decides, per channel and
//! group, which notifications are due as Alertmanager's aggregation groups
//! and dedup stage decide (`group_wait`, `group_interval`,
//! `repeat_interval`, a resolve sent once). No I/O here: the engine
//! (`alerts::engine`) fetches data, stores the state and queues deliveries.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::notification::{fingerprint_hash, group};
use super::rules::{NoData, OnError, RuleSpec};
use super::template;
use crate::plugins::bindings::types;

/// How long a resolved alert is kept (Prometheus's `resolvedRetention`).
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    /// Resolved (kept for `RESOLVED_RETENTION_MS` so the resolve is sent).
    Inactive,
}

/// One alert of a rule: a label set the expression returned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    pub fingerprint: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub active_at_ms: i64,
    pub fired_at_ms: Option<i64>,
    pub resolved_at_ms: Option<i64>,
    pub keep_firing_since_ms: Option<i64>,
    pub value: f64,
}

/// What was last notified to a group (Alertmanager's notification log entry).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notified {
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub at_ms: i64,
}

/// One aggregation group: a channel and the values of the rule's `group_by`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupState {
    pub channel_id: String,
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub next_flush_ms: i64,
    pub notified: Option<Notified>,
}

/// A rule's evaluator memory, stored as JSON after each evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    /// By fingerprint.
    pub alerts: BTreeMap<String, ActiveAlert>,
    /// By `channel_id` + `\n` + group key.
    pub groups: BTreeMap<String, GroupState>,
    pub last_eval_ms: Option<i64>,
    pub last_duration_ms: f64,
    pub last_error: Option<String>,
    /// `updated_at` of the rule this state was evaluated for.
    pub rule_updated_ms: i64,
    /// `channel_id` + `\n` + fingerprint of the firing alerts recorded as
    /// silenced (once per silenced stretch).
    #[serde(default)]
    pub silenced: BTreeSet<String>,
}

/// One evaluation's result: the vector's label sets (without `__name__`) and
/// values, or why it failed.
pub type Evaluation = Result<Vec<(BTreeMap<String, String>, f64)>, String>;

/// A notification the flush decided on: to send, or (`silenced`) to record
/// as held back by a silence.
pub struct Due {
    pub channel_id: String,
    pub notification: types::Notification,
    pub silenced: bool,
}

impl RuleState {
    /// Applies one evaluation at `t_ms` (Prometheus's `AlertingRule.Eval`).
    pub fn observe(&mut self, spec: &RuleSpec, result: Evaluation, t_ms: i64) {
        self.last_eval_ms = Some(t_ms);
        let vector = match result {
            Ok(v) => {
                self.last_error = None;
                if v.is_empty() {
                    match spec.no_data {
                        NoData::Ok => v,
                        NoData::KeepState => return,
                        NoData::Alerting => vec![(reason_labels("no_data"), f64::NAN)],
                    }
                } else {
                    v
                }
            }
            Err(e) => {
                self.last_error = Some(e);
                match spec.on_error {
                    OnError::KeepState => return,
                    OnError::Ok => Vec::new(),
                    OnError::Alerting => vec![(reason_labels("error"), f64::NAN)],
                }
            }
        };
        let alertname = spec.alertname();
        // Fingerprints of the alerts this evaluation returned.
        let mut seen: rustc_hash::FxHashSet<u64> = Default::default();
        seen.reserve(vector.len());
        for (sample_labels, value) in vector {
            // Templates see the sample's labels (`$labels`), as in Prometheus.
            let annotations: BTreeMap<String, String> = spec
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), template::render(v, &sample_labels, value)))
                .collect();
            // The alert's labels: the sample's, the rule's and `alertname`.
            // Without rule labels the fingerprint is taken from the sample's
            // labels and `alertname` as they are, and the set is built only
            // for a new alert (most evaluations find theirs already there).
            let with_rule_labels = (!spec.labels.is_empty()).then(|| {
                let mut labels = sample_labels.clone();
                for (k, v) in &spec.labels {
                    let rendered = template::render(v, &sample_labels, value);
                    if rendered.is_empty() {
                        labels.remove(k);
                    } else {
                        labels.insert(k.clone(), rendered);
                    }
                }
                labels.insert("alertname".into(), alertname.to_string());
                labels
            });
            let hash = match &with_rule_labels {
                Some(labels) => {
                    fingerprint_hash(labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                }
                None => fingerprint_hash(with_alertname(&sample_labels, alertname)),
            };
            seen.insert(hash);
            let fp = FingerprintText::of(hash);
            match self.alerts.get_mut(fp.as_str()) {
                Some(a) if a.state != AlertState::Inactive => {
                    a.value = value;
                    a.annotations = annotations;
                    a.keep_firing_since_ms = None;
                }
                _ => {
                    let labels = with_rule_labels.unwrap_or_else(|| {
                        let mut labels = sample_labels;
                        labels.insert("alertname".into(), alertname.to_string());
                        labels
                    });
                    self.alerts.insert(
                        fp.as_str().to_string(),
                        ActiveAlert {
                            fingerprint: fp.as_str().to_string(),
                            labels,
                            annotations,
                            state: AlertState::Pending,
                            active_at_ms: t_ms,
                            fired_at_ms: None,
                            resolved_at_ms: None,
                            keep_firing_since_ms: None,
                            value,
                        },
                    );
                }
            }
        }
        let mut gone = Vec::new();
        for (fp, a) in self.alerts.iter_mut() {
            let returned = u64::from_str_radix(fp, 16).is_ok_and(|h| seen.contains(&h));
            if !returned {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && spec.keep_firing_for_ms > 0 {
                    let since = *a.keep_firing_since_ms.get_or_insert(t_ms);
                    keep_firing = t_ms - since < spec.keep_firing_for_ms;
                }
                if a.state == AlertState::Pending
                    || a.resolved_at_ms
                        .is_some_and(|r| t_ms - r > RESOLVED_RETENTION_MS)
                {
                    gone.push(fp.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at_ms = Some(t_ms);
                }
                if !keep_firing {
                    continue;
                }
            }
            if a.state == AlertState::Pending && t_ms - a.active_at_ms >= spec.for_ms {
                a.state = AlertState::Firing;
                a.fired_at_ms = Some(t_ms);
            }
        }
        for fp in gone {
            self.alerts.remove(&fp);
        }
    }

    /// The group key and group labels of an alert for `group_by`.
    fn group_of(spec: &RuleSpec, a: &ActiveAlert) -> (String, BTreeMap<String, String>) {
        let labels: BTreeMap<String, String> = if spec.group_by.iter().any(|g| g == "...") {
            a.labels.clone()
        } else {
            spec.group_by
                .iter()
                .filter_map(|g| a.labels.get(g).map(|v| (g.clone(), v.clone())))
                .collect()
        };
        let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        (
            format!("{{}}/{{rule=\"{}\"}}:{{{}}}", spec.name, inner.join(", ")),
            labels,
        )
    }

    /// Decides what is due at `now_ms` for the rule's channels (`channels`:
    /// id and whether it sends resolves) and returns those notifications,
    /// updating each group's timers and notification entry.
    /// Firing alerts `silenced` holds are left out of their groups (so the
    /// end of a silence notifies them as new) and returned once per silenced
    /// stretch as a `silenced` notification.
    pub fn flush(
        &mut self,
        spec: &RuleSpec,
        channels: &[(String, String, bool)],
        external_url: &str,
        rule_id: &str,
        now_ms: i64,
        silenced: &dyn Fn(&BTreeMap<String, String>) -> bool,
    ) -> Vec<Due> {
        let mut due = Vec::new();
        let mut still_silenced = BTreeSet::new();
        // Firing alerts open groups; every alert (firing or resolved) joins
        // the groups that exist.
        let mut members: BTreeMap<String, Vec<&ActiveAlert>> = BTreeMap::new();
        for (channel_id, receiver, _) in channels {
            for a in self.alerts.values() {
                if a.state == AlertState::Pending {
                    continue;
                }
                if a.state == AlertState::Firing && silenced(&a.labels) {
                    let slot = format!("{channel_id}\n{}", a.fingerprint);
                    if !self.silenced.contains(&slot) {
                        let (key, labels) = Self::group_of(spec, a);
                        due.push(Due {
                            channel_id: channel_id.clone(),
                            notification: group(
                                receiver,
                                key,
                                labels.into_iter().collect(),
                                vec![wire_alert(a, external_url, rule_id)],
                                external_url.to_string(),
                            ),
                            silenced: true,
                        });
                    }
                    still_silenced.insert(slot);
                    continue;
                }
                let (key, labels) = Self::group_of(spec, a);
                let slot = format!("{channel_id}\n{key}");
                if !self.groups.contains_key(&slot) {
                    if a.state != AlertState::Firing {
                        continue;
                    }
                    self.groups.insert(
                        slot.clone(),
                        GroupState {
                            channel_id: channel_id.clone(),
                            key,
                            labels,
                            next_flush_ms: now_ms + spec.group_wait_ms,
                            notified: None,
                        },
                    );
                }
                members.entry(slot).or_default().push(a);
            }
        }
        self.silenced = still_silenced;
        let mut drop_groups = Vec::new();
        for (slot, g) in self.groups.iter_mut() {
            let Some((_, receiver, send_resolved)) =
                channels.iter().find(|(id, _, _)| *id == g.channel_id)
            else {
                drop_groups.push(slot.clone());
                continue;
            };
            if now_ms < g.next_flush_ms {
                continue;
            }
            let alerts = members.get(slot).cloned().unwrap_or_default();
            if alerts.is_empty() {
                drop_groups.push(slot.clone());
                continue;
            }
            g.next_flush_ms = now_ms + spec.group_interval_ms;
            let firing: BTreeSet<String> = alerts
                .iter()
                .filter(|a| a.state == AlertState::Firing)
                .map(|a| a.fingerprint.clone())
                .collect();
            let resolved: BTreeSet<String> = alerts
                .iter()
                .filter(|a| a.state == AlertState::Inactive)
                .map(|a| a.fingerprint.clone())
                .collect();
            let needs = match &g.notified {
                None => !firing.is_empty(),
                Some(n) if !firing.is_subset(&n.firing) => true,
                Some(n) if firing.is_empty() => !n.firing.is_empty(),
                Some(n) if *send_resolved && !resolved.is_subset(&n.resolved) => true,
                Some(n) => n.at_ms + spec.repeat_interval_ms <= now_ms,
            };
            if !needs {
                if firing.is_empty() {
                    drop_groups.push(slot.clone());
                }
                continue;
            }
            let sent: Vec<&ActiveAlert> = alerts
                .iter()
                .copied()
                .filter(|a| a.state == AlertState::Firing || *send_resolved)
                .collect();
            if !sent.is_empty() {
                let wire: Vec<types::Alert> = sent
                    .iter()
                    .map(|a| wire_alert(a, external_url, rule_id))
                    .collect();
                due.push(Due {
                    channel_id: g.channel_id.clone(),
                    notification: group(
                        receiver,
                        g.key.clone(),
                        g.labels.clone().into_iter().collect(),
                        wire,
                        external_url.to_string(),
                    ),
                    silenced: false,
                });
            }
            g.notified = Some(Notified {
                firing: firing.clone(),
                resolved,
                at_ms: now_ms,
            });
            if firing.is_empty() {
                drop_groups.push(slot.clone());
            }
        }
        for slot in drop_groups {
            self.groups.remove(&slot);
        }
        due
    }

    /// A digest of what must survive a restart or a change of evaluator:
    /// everything but the last evaluation's time and duration and the
    /// alerts' values and annotations (which the next evaluation renews).
    pub fn durable_digest(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for (fp, a) in &self.alerts {
            fp.hash(&mut h);
            (a.state as u8).hash(&mut h);
            a.active_at_ms.hash(&mut h);
            a.fired_at_ms.hash(&mut h);
            a.resolved_at_ms.hash(&mut h);
            a.keep_firing_since_ms.hash(&mut h);
        }
        for (slot, g) in &self.groups {
            slot.hash(&mut h);
            g.next_flush_ms.hash(&mut h);
            if let Some(n) = &g.notified {
                n.firing.hash(&mut h);
                n.resolved.hash(&mut h);
                n.at_ms.hash(&mut h);
            }
        }
        self.last_error.hash(&mut h);
        self.rule_updated_ms.hash(&mut h);
        self.silenced.hash(&mut h);
        h.finish()
    }

    /// The earliest group flush still ahead.
    pub fn next_flush_ms(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush_ms).min()
    }
}

/// An alert as notifications carry it.
fn wire_alert(a: &ActiveAlert, external_url: &str, rule_id: &str) -> types::Alert {
    types::Alert {
        fingerprint: a.fingerprint.clone(),
        status: if a.state == AlertState::Firing {
            types::AlertStatus::Firing
        } else {
            types::AlertStatus::Resolved
        },
        labels: a.labels.clone().into_iter().collect(),
        annotations: a.annotations.clone().into_iter().collect(),
        starts_at: a.fired_at_ms.unwrap_or(a.active_at_ms),
        ends_at: a.resolved_at_ms.filter(|_| a.state == AlertState::Inactive),
        value: a.value.is_finite().then_some(a.value),
        generator_url: format!("{external_url}/api/v2/alert-rules/{rule_id}"),
    }
}

fn reason_labels(reason: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("alertstate_reason".to_string(), reason.to_string())])
}

/// `labels` with `alertname` set to `name`, in name order.
fn with_alertname<'a>(
    labels: &'a BTreeMap<String, String>,
    name: &'a str,
) -> impl Iterator<Item = (&'a str, &'a str)> {
    use std::ops::Bound::{Excluded, Unbounded};
    let pair = |(k, v): (&'a String, &'a String)| (k.as_str(), v.as_str());
    labels
        .range::<str, _>((Unbounded, Excluded("alertname")))
        .map(pair)
        .chain(std::iter::once(("alertname", name)))
        .chain(
            labels
                .range::<str, _>((Excluded("alertname"), Unbounded))
                .map(pair),
        )
}

/// A fingerprint's 16 hexadecimal digits, without an allocation.
struct FingerprintText([u8; 16]);

impl FingerprintText {
    fn of(hash: u64) -> Self {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 16];
        for (i, d) in out.iter_mut().enumerate() {
            *d = DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize];
        }
        FingerprintText(out)
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
