//! Vigil's own metrics, registered with prometheus-client under the `vigil_` prefix.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotificationLabels {
    channel: String,
    outcome: String,
}

/// The host's own metrics.
pub struct SelfMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    samples_ingested: Counter,
    events_ingested: Counter,
    store_write: Histogram,
    live_series: Gauge<i64, std::sync::atomic::AtomicI64>,
    components_alive: Gauge<i64, std::sync::atomic::AtomicI64>,
    up_since: Gauge<f64, AtomicU64>,
    notifications: Family<NotificationLabels, Counter>,
    rule_evaluations: Family<OutcomeLabels, Counter>,
    evaluation_pass: Histogram,
    last_pass: Gauge<f64, AtomicU64>,
    last_pass_rules: Gauge<i64, std::sync::atomic::AtomicI64>,
    alerts: Family<StateLabels, Gauge<i64, std::sync::atomic::AtomicI64>>,
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vigil");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by route",
            Unit::Seconds,
            request_duration.clone(),
        );
        let samples_ingested = Counter::default();
        registry.register(
            "samples_ingested",
            "Metric samples committed to the store",
            samples_ingested.clone(),
        );
        let events_ingested = Counter::default();
        registry.register(
            "events_ingested",
            "Lifecycle and custom events committed to the store (duplicates not counted)",
            events_ingested.clone(),
        );
        let store_write = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        registry.register_with_unit(
            "store_write_duration",
            "Time to commit one group of samples to the store",
            Unit::Seconds,
            store_write.clone(),
        );
        let live_series = Gauge::default();
        registry.register(
            "live_series",
            "Reported series currently exported",
            live_series.clone(),
        );
        let components_alive = Gauge::default();
        registry.register(
            "components_alive",
            "Registered components whose last heartbeat is recent",
            components_alive.clone(),
        );
        let up_since = Gauge::<f64, AtomicU64>::default();
        up_since.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        registry.register_with_unit(
            "start_time",
            "Unix time the host started",
            Unit::Seconds,
            up_since.clone(),
        );
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "alert_notifications",
            "Notification attempts by channel and outcome (sent, retrying, failed)",
            notifications.clone(),
        );
        let rule_evaluations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "alert_rule_evaluations",
            "Alert rule evaluations by outcome (ok, error)",
            rule_evaluations.clone(),
        );
        let evaluation_pass = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "alert_evaluation_pass_duration",
            "Time of one evaluator pass over every due rule",
            Unit::Seconds,
            evaluation_pass.clone(),
        );
        let last_pass = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "alert_evaluation_last_pass_duration",
            "Time of the last evaluator pass that evaluated at least one rule, its commit included",
            Unit::Seconds,
            last_pass.clone(),
        );
        let last_pass_rules = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
        registry.register(
            "alert_evaluation_last_pass_rules",
            "Rules evaluated by the last evaluator pass that evaluated any",
            last_pass_rules.clone(),
        );
        let alerts = Family::<StateLabels, Gauge<i64, std::sync::atomic::AtomicI64>>::default();
        registry.register(
            "alerts",
            "Alerts held by the evaluator, by state (pending, firing)",
            alerts.clone(),
        );
        SelfMetrics {
            notifications,
            rule_evaluations,
            evaluation_pass,
            last_pass,
            last_pass_rules,
            alerts,
            registry,
            requests,
            request_duration,
            samples_ingested,
            events_ingested,
            store_write,
            live_series,
            components_alive,
            up_since,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts one notification attempt through `channel` that came to `outcome`.
    pub fn count_notification(&self, channel: &str, outcome: &str) {
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts one rule evaluation that came to `outcome` (`ok`, `error`).
    pub fn count_rule_evaluation(&self, outcome: &str) {
        self.rule_evaluations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records one evaluator pass and the alerts it holds afterwards.
    pub fn observe_evaluation_pass(
        &self,
        elapsed: Duration,
        evaluated: usize,
        pending: i64,
        firing: i64,
    ) {
        self.evaluation_pass.observe(elapsed.as_secs_f64());
        if evaluated > 0 {
            self.last_pass.set(elapsed.as_secs_f64());
            self.last_pass_rules.set(evaluated as i64);
        }
        for (state, n) in [("pending", pending), ("firing", firing)] {
            self.alerts
                .get_or_create(&StateLabels {
                    state: state.to_string(),
                })
                .set(n);
        }
    }

    pub fn observe_store_write(&self, elapsed: Duration) {
        self.store_write.observe(elapsed.as_secs_f64());
    }

    pub fn add_samples_ingested(&self, n: u64) {
        self.samples_ingested.inc_by(n);
    }

    pub fn add_events_ingested(&self, n: u64) {
        self.events_ingested.inc_by(n);
    }

    pub fn set_live_series(&self, n: usize) {
        self.live_series.set(n as i64);
    }

    pub fn set_components_alive(&self, n: usize) {
        self.components_alive.set(n as i64);
    }

    /// Start time, seconds since the epoch.
    pub fn start_time(&self) -> f64 {
        self.up_since.get()
    }

    /// OpenMetrics text of the registry, ending in `# EOF`.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding own metrics failed");
        }
        out
    }
}
