//! A rule evaluated over stored history without sending anything: the same
//! expression code, the same state machine (`for`, `keep_firing_for`) and
//! the same grouping decisions as live evaluation, at every step of a past
//! range. Answers when each alert went pending, firing and resolved and
//! when notifications would have gone out. Data is read once for the whole
//! range, then every step is evaluated in memory.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::catalog::{self, SeriesCatalog};
use super::engine::vector_of;
use super::event_rules;
use super::rules::RuleSpec;
use super::state::{AlertState, RuleState};
use crate::store::{EventQuery, Store};

/// Most evaluation steps one preview may take.
pub const MAX_STEPS: i64 = 100_000;

/// An alert's labels and its `(state, at_ms)` transitions.
pub type AlertHistory = (BTreeMap<String, String>, Vec<(&'static str, i64)>);

/// What a preview found.
#[derive(Debug, Default)]
pub struct Preview {
    pub evaluations: i64,
    /// By fingerprint: labels and `(state, at_ms)` transitions.
    pub alerts: BTreeMap<String, AlertHistory>,
    /// `(at_ms, status, alerts)` of each notification that would be sent.
    pub notifications: Vec<(i64, &'static str, usize)>,
    pub errors: Vec<(i64, String)>,
}

impl Preview {
    pub fn to_json(&self) -> Value {
        json!({
            "evaluations": self.evaluations,
            "alerts": self.alerts.iter().map(|(fp, (labels, t))| json!({
                "fingerprint": fp,
                "labels": labels,
                "transitions": t.iter().map(|(s, at)| json!({"state": s, "at": super::rfc3339(*at)}))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "notifications": self.notifications.iter().map(|(at, status, n)| json!({
                "at": super::rfc3339(*at), "status": status, "alerts": n,
            })).collect::<Vec<_>>(),
            "notifications_total": self.notifications.len(),
            "errors": self.errors.iter().take(10).map(|(at, e)| json!({"at": super::rfc3339(*at), "error": e}))
                .collect::<Vec<_>>(),
        })
    }
}

/// One evaluation at an instant, over data read beforehand.
type Step = Box<dyn FnMut(i64) -> super::state::Evaluation + Send>;

/// Runs `spec` at `start_ms`, `start_ms + step_ms`, … up to `end_ms`.
pub async fn run(
    store: &dyn Store,
    catalog: &SeriesCatalog,
    spec: &RuleSpec,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
) -> Result<Preview, String> {
    let mut eval: Step = match &spec.events {
        None => {
            let q = spec.query().map_err(|e| e.message)?;
            let data = catalog::fetch(store, catalog, None, &q, start_ms, end_ms)
                .await
                .map_err(|e| e.to_string())?;
            Box::new(move |t| vector_of(q.eval(t, &data).map_err(|e| e.to_string())?))
        }
        Some(rule) => {
            let events = store
                .list_events(&EventQuery {
                    event_types: vec![rule.event_type.clone()],
                    start: Some((start_ms - rule.window_ms) as f64 / 1_000.0),
                    end: Some(end_ms as f64 / 1_000.0 + 0.000_5),
                    limit: event_rules::MAX_EVENTS,
                    ..EventQuery::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            if events.len() >= event_rules::MAX_EVENTS as usize {
                return Err(format!(
                    "more than {} events in the range; shorten it",
                    event_rules::MAX_EVENTS
                ));
            }
            let rule = rule.clone();
            Box::new(move |t| {
                let lo = (t - rule.window_ms) as f64 / 1_000.0 + 0.000_5;
                let hi = t as f64 / 1_000.0 + 0.000_5;
                let inside: Vec<_> = events
                    .iter()
                    .filter(|e| e.event_ts >= lo && e.event_ts < hi)
                    .cloned()
                    .collect();
                Ok(event_rules::count(&rule, &inside))
            })
        }
    };
    let mut state = RuleState::default();
    let mut out = Preview::default();
    let channels = [("preview".to_string(), "preview".to_string(), true)];
    let never = |_: &BTreeMap<String, String>| false;
    let mut t = start_ms;
    while t <= end_ms {
        let before: BTreeMap<String, AlertState> = state
            .alerts
            .iter()
            .map(|(fp, a)| (fp.clone(), a.state))
            .collect();
        let result = eval(t);
        if let Err(e) = &result {
            out.errors.push((t, e.clone()));
        }
        state.observe(spec, result, t);
        out.evaluations += 1;
        for (fp, a) in &state.alerts {
            if before.get(fp) == Some(&a.state) {
                continue;
            }
            let name = match a.state {
                AlertState::Pending => "pending",
                AlertState::Firing => "firing",
                AlertState::Inactive => "resolved",
            };
            out.alerts
                .entry(fp.clone())
                .or_insert_with(|| (a.labels.clone(), Vec::new()))
                .1
                .push((name, t));
        }
        // Pending alerts that went away without firing.
        for (fp, was) in &before {
            if *was == AlertState::Pending && !state.alerts.contains_key(fp) {
                if let Some(entry) = out.alerts.get_mut(fp) {
                    entry.1.push(("inactive", t));
                }
            }
        }
        for due in state.flush(spec, &channels, "", "preview", t, &never) {
            let status = match due.notification.status {
                crate::plugins::bindings::types::AlertStatus::Firing => "firing",
                crate::plugins::bindings::types::AlertStatus::Resolved => "resolved",
            };
            out.notifications
                .push((t, status, due.notification.alerts.len()));
        }
        t += step_ms;
    }
    Ok(out)
}
