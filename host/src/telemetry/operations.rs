//! The operational view an operator reads when a source or run is stuck
//! (readiness, then these gauges): the health of every dependency (the
//! database, each plugin, each publisher) with the reason of each failing
//! one, and the gauges on `/metrics` built from it:
//!
//! | family | labels | what |
//! |---|---|---|
//! | `vigil_dependency_up` | `kind` (`database`, `plugin`, `publisher`), `name` | 1 when healthy, else 0 |
//! | `vigil_executions` | `backend`, `state` | executions in that state (every state of every backend seen, zeros included) |
//! | `vigil_publisher_queue_depth` | `publisher` | log items behind the publisher's cursor (counted up to 1,000,000 of samples and of events) |
//! | `vigil_publisher_oldest_undelivered_age_seconds` | `publisher` | age of the first undelivered item (an event's receive time, a sample's timestamp); 0 when none |
//! | `vigil_stream_subscribers` | — | open live event streams on this replica |
//!
//! Computed when scraped (a few small queries; nothing is cached), so every
//! replica of a shared PostgreSQL database shows the same execution counts
//! and queue depths. Does not own readiness' HTTP shape (`api::health`).

use std::time::Duration;

use serde::Serialize;

use crate::bus::{DeliveryManager, LiveHub};
use crate::executions::ExecutionState;
use crate::metrics::index::{escape_label_value, write_value};
use crate::plugins::{PluginCondition, PluginRegistry};
use crate::store::Store;

/// Items counted behind a cursor at most (per part of the log).
pub const QUEUE_DEPTH_CAP: i64 = 1_000_000;

/// The health of one dependency.
#[derive(Clone, Debug, Serialize)]
pub struct Dependency {
    /// `database`, `plugin` or `publisher`.
    pub kind: &'static str,
    pub name: String,
    pub ok: bool,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Database, plugins and publishers, with reasons.
pub async fn dependencies(
    store: &dyn Store,
    plugins: &PluginRegistry,
    delivery: &DeliveryManager,
) -> Vec<Dependency> {
    let mut out = Vec::new();
    let database = match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("{} did not answer within 2s", store.backend())),
    };
    let db_ok = database.is_none();
    out.push(Dependency {
        kind: "database",
        name: store.backend().to_string(),
        ok: db_ok,
        reason: database,
    });
    let mut snapshot = plugins.snapshot();
    snapshot.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, plugin, load_error) in snapshot {
        let (ok, reason) = match plugin {
            None => (
                false,
                Some(format!(
                    "failed to load: {}",
                    load_error.unwrap_or_else(|| "unknown reason".into())
                )),
            ),
            Some(p) => match p.condition() {
                (PluginCondition::Loaded, _, _) => (true, None),
                (PluginCondition::Quarantined, e, n) => (
                    false,
                    Some(format!(
                        "quarantined after {n} consecutive failures: {}",
                        e.unwrap_or_default()
                    )),
                ),
                (PluginCondition::Failed, e, _) => {
                    (false, Some(format!("failing: {}", e.unwrap_or_default())))
                }
            },
        };
        out.push(Dependency {
            kind: "plugin",
            name,
            ok,
            reason,
        });
    }
    if db_ok {
        match delivery.status().await {
            Ok(publishers) => {
                for p in publishers.into_iter().filter(|p| p.state != "removed") {
                    let ok = p.state != "backing_off" && p.state != "waiting_for_plugin";
                    let reason = (!ok).then(|| match (&p.state[..], &p.last_error) {
                        ("waiting_for_plugin", _) => "its plugin is not serving".to_string(),
                        (_, Some(e)) => format!("delivery failing: {e}"),
                        (_, None) => "delivery failing".to_string(),
                    });
                    out.push(Dependency {
                        kind: "publisher",
                        name: p.name,
                        ok,
                        reason,
                    });
                }
            }
            Err(e) => tracing::warn!(error = %e, "publisher status unavailable for the gauges"),
        }
    }
    out
}

fn family(out: &mut String, name: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    write_value(out, value);
    out.push('\n');
}

/// Renders the operational gauges (the same lines in text 0.0.4 and
/// OpenMetrics: every family is a gauge).
pub async fn render_gauges(
    store: &dyn Store,
    plugins: &PluginRegistry,
    delivery: &DeliveryManager,
    live: &LiveHub,
    now_ms: i64,
) -> String {
    let mut out = String::with_capacity(4096);
    let deps = dependencies(store, plugins, delivery).await;
    family(
        &mut out,
        "vigil_dependency_up",
        "Whether a dependency is healthy (1) or not (0): the database, each plugin, each publisher",
    );
    for d in &deps {
        sample(
            &mut out,
            "vigil_dependency_up",
            &[("kind", d.kind), ("name", &d.name)],
            if d.ok { 1.0 } else { 0.0 },
        );
    }
    family(
        &mut out,
        "vigil_stream_subscribers",
        "Open live event streams (SSE) on this replica",
    );
    sample(
        &mut out,
        "vigil_stream_subscribers",
        &[],
        live.subscribers() as f64,
    );
    let db_ok = deps.first().is_some_and(|d| d.ok);
    if !db_ok {
        return out;
    }
    match store.execution_counts().await {
        Ok(counts) => {
            family(
                &mut out,
                "vigil_executions",
                "Executions by backend and state",
            );
            let mut backends: Vec<&str> = counts.iter().map(|c| c.backend.as_str()).collect();
            backends.dedup();
            for backend in backends {
                for state in ExecutionState::ALL {
                    let n = counts
                        .iter()
                        .find(|c| c.backend == backend && c.state == state.as_str())
                        .map_or(0, |c| c.count);
                    sample(
                        &mut out,
                        "vigil_executions",
                        &[("backend", backend), ("state", state.as_str())],
                        n as f64,
                    );
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "execution counts unavailable for the gauges"),
    }
    if let Ok(cursors) = store.list_cursors().await {
        let mut depth = String::new();
        let mut age = String::new();
        for c in cursors {
            if plugins.get(&c.publisher).is_none() {
                continue;
            }
            let (Ok(n), Ok(first)) = (
                store.items_after(c.cursor_seq, QUEUE_DEPTH_CAP).await,
                store.first_after_ms(c.cursor_seq).await,
            ) else {
                continue;
            };
            sample(
                &mut depth,
                "vigil_publisher_queue_depth",
                &[("publisher", &c.publisher)],
                n as f64,
            );
            let seconds = first.map_or(0.0, |at| ((now_ms - at).max(0) as f64) / 1000.0);
            sample(
                &mut age,
                "vigil_publisher_oldest_undelivered_age_seconds",
                &[("publisher", &c.publisher)],
                seconds,
            );
        }
        family(
            &mut out,
            "vigil_publisher_queue_depth",
            "Log items (samples and events) behind the publisher's cursor",
        );
        out.push_str(&depth);
        family(
            &mut out,
            "vigil_publisher_oldest_undelivered_age_seconds",
            "Age of the oldest item the publisher has not delivered (0 when none)",
        );
        out.push_str(&age);
    }
    out
}

/// Puts `gauges` into an exposition body: before OpenMetrics' `# EOF`, or at the end.
pub fn insert_gauges(body: &mut String, gauges: &str) {
    match body.rfind("# EOF") {
        Some(at) if body[at..].trim_end() == "# EOF" => body.insert_str(at, gauges),
        _ => body.push_str(gauges),
    }
}
