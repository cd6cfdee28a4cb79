//! Report bodies for tests, and a background reporter.

use std::sync::Arc;
use std::time::Duration;

use crate::TestServer;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// Report bodies
// ---------------------------------------------------------------------------

/// Builder for one item of a report's `metrics` array.
#[derive(Debug, Clone)]
pub struct MetricItem(pub Value);

impl MetricItem {
    /// An item with `metric_name`, `metric_type` and `metric_value`.
    pub fn new(name: &str, metric_type: &str, value: f64) -> Self {
        MetricItem(json!({"metric_name": name, "metric_type": metric_type, "metric_value": value}))
    }
    /// Adds a label.
    pub fn label(mut self, name: &str, value: &str) -> Self {
        if !self.0["labels"].is_object() {
            self.0["labels"] = json!({});
        }
        self.0["labels"][name] = json!(value);
        self
    }
    /// Sets `help_text`.
    pub fn help(mut self, help: &str) -> Self {
        self.0["help_text"] = json!(help);
        self
    }
    /// Sets `unit`.
    pub fn unit(mut self, unit: &str) -> Self {
        self.0["unit"] = json!(unit);
        self
    }
    /// Sets `timestamp` (any JSON string).
    pub fn at(mut self, timestamp: &str) -> Self {
        self.0["timestamp"] = json!(timestamp);
        self
    }
    /// Sets an arbitrary field (to build malformed items).
    pub fn field(mut self, key: &str, value: Value) -> Self {
        self.0[key] = value;
        self
    }
}

impl From<MetricItem> for Value {
    fn from(m: MetricItem) -> Value {
        m.0
    }
}

/// A gauge item.
pub fn gauge(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "gauge", value)
}
/// A counter item.
pub fn counter(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "counter", value)
}
/// A histogram observation.
pub fn histogram(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "histogram", value)
}
/// A summary observation.
pub fn summary(name: &str, value: f64) -> MetricItem {
    MetricItem::new(name, "summary", value)
}

/// A report body for `component` (type `worker_pool`) with the given items.
pub fn report<I, M>(component: &str, metrics: I) -> Value
where
    I: IntoIterator<Item = M>,
    M: Into<Value>,
{
    json!({
        "component_name": component,
        "component_type": "worker_pool",
        "metrics": metrics.into_iter().map(Into::into).collect::<Vec<Value>>(),
    })
}

/// A unique name with `prefix`, valid as component, metric or label value.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// The current time as RFC 3339 (UTC, `Z`, milliseconds).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 timestamp from a query response; panics with the value otherwise.
pub fn parse_ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is not a string: {v}"));
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("timestamp {s:?} is not RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}

/// A task reporting gauge samples to `server` until stopped: every `interval`
/// one report of `per_report` samples of `name` for `component`, with values
/// counting up from 0. Returns the stop flag, the number of acknowledged
/// samples, and the task (which ends at the first failed request).
pub fn start_reporter(
    server: &TestServer,
    component: &str,
    name: &str,
    per_report: usize,
    interval: Duration,
) -> Reporter {
    let (component, name) = (component.to_string(), name.to_string());
    start_reporter_with(server, per_report, interval, move |n| {
        report(
            &component,
            (0..per_report).map(|i| gauge(&name, (n + i) as f64)),
        )
    })
}

/// What [`start_reporter`] returns: the stop flag, the number of
/// acknowledged samples, and the task.
pub type Reporter = (
    Arc<std::sync::atomic::AtomicBool>,
    Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
);

/// [`start_reporter`] with the report built by `make(n)`, `n` the number of
/// samples acknowledged before it (each report holds `per_report`).
pub fn start_reporter_with(
    server: &TestServer,
    per_report: usize,
    interval: Duration,
    make: impl Fn(usize) -> Value + Send + 'static,
) -> Reporter {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let url = server.url("/api/v2/metrics/report");
    let (s, a) = (stop.clone(), acked.clone());
    let task = tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let mut n = 0usize;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !s.load(Ordering::SeqCst) {
            tick.tick().await;
            let body = make(n);
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status() == 200 => {
                    n += per_report;
                    a.fetch_add(per_report, Ordering::SeqCst);
                }
                _ => return,
            }
        }
    });
    (stop, acked, task)
}
