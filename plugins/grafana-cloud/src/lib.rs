//! First-party publisher: samples to anything that takes Prometheus
//! remote-write 1.0 (Grafana Cloud, Mimir, Cortex, Thanos Receive,
//! VictoriaMetrics, Prometheus itself). See README.md.
//!
//! A receiver that refuses a request (`400`: a sample out of order, too old, a
//! duplicate timestamp) rolls all of it back; the plugin then halves the
//! request until it has found the refused samples, which become dead letters
//! with the receiver's message, and delivers the rest. Re-sending samples
//! already stored (a retry, a crash) is accepted by these receivers.
//!
//! Events go to Loki when `loki_endpoint` is set ([`loki`]); Loki's `400`
//! (entry out of order, too old) is narrowed down the same way, and
//! entries sent twice are dropped by Loki as duplicates.

mod loki;
mod proto;
mod series;

use std::time::Duration;

use vigil_plugin::http::{self, Response};
use vigil_plugin::publisher::{Batch, Config, PublishError, PublishReport, Publisher};

use series::{CounterNames, LabelSet, Unit};

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_SAMPLES: usize = 5_000;

enum Auth {
    None,
    Basic { user: String, key: String },
    Bearer(String),
}

/// One receiver: URL, credential, tenant.
struct Target {
    endpoint: String,
    auth: Auth,
    tenant: Option<String>,
}

struct GrafanaCloud {
    metrics: Target,
    loki: Option<Target>,
    counter_names: CounterNames,
    /// The `service` stream label of Loki entries.
    service: String,
    max_samples: usize,
    timeout: Duration,
}

/// How one request went.
enum Sent {
    Accepted,
    /// The receiver refused the request's content (`400`); its message.
    Refused(String),
}

impl Target {
    fn credential(&self) -> &'static str {
        match self.auth {
            Auth::None => {
                "no credential (set config.api_key, and config.username for Grafana Cloud)"
            }
            Auth::Basic { .. } => "config.username/api_key",
            Auth::Bearer(_) => "config.api_key (as a bearer token)",
        }
    }

    fn post(
        &self,
        timeout: Duration,
        content_type: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Sent, PublishError> {
        let mut request = http::post(&self.endpoint)
            .timeout(timeout)
            .header("content-type", content_type)
            .header(
                "user-agent",
                concat!("vigil-grafana-cloud/", env!("CARGO_PKG_VERSION")),
            )
            .body(body);
        for (k, v) in extra {
            request = request.header(k, v);
        }
        request = match &self.auth {
            Auth::None => request,
            Auth::Basic { user, key } => request.basic_auth(user, key),
            Auth::Bearer(token) => request.bearer_auth(token),
        };
        if let Some(t) = &self.tenant {
            request = request.header("x-scope-orgid", t);
        }
        let response = request.send()?;
        self.outcome(response)
    }

    fn outcome(&self, response: Response) -> Result<Sent, PublishError> {
        let status = response.status();
        let text = || {
            let b = response.bytes();
            String::from_utf8_lossy(&b[..b.len().min(512)])
                .trim()
                .to_string()
        };
        match status {
            200..=299 => Ok(Sent::Accepted),
            400 => Ok(Sent::Refused(format!(
                "{} answered 400: {}",
                self.endpoint,
                text()
            ))),
            401 | 403 => Err(PublishError::permanent(format!(
                "{} refused {} (HTTP {status}: {})",
                self.endpoint,
                self.credential(),
                text()
            ))),
            408 | 429 | 500..=599 => {
                let e = PublishError::retryable(format!(
                    "{} answered HTTP {status}: {}",
                    self.endpoint,
                    text()
                ));
                Err(match response.retry_after_ms() {
                    Some(ms) => e.retry_after(ms),
                    None => e,
                })
            }
            _ => Err(PublishError::permanent(format!(
                "{} answered HTTP {status}: {}",
                self.endpoint,
                text()
            ))),
        }
    }
}

/// Sends `items` with `send`; on a refusal halves them, in order, until each
/// refused item is alone (then rejected with the receiver's message).
fn narrow<T>(
    items: &[T],
    seq: fn(&T) -> u64,
    send: &dyn Fn(&[T]) -> Result<Sent, PublishError>,
    report: &mut PublishReport,
) -> Result<(), PublishError> {
    if items.is_empty() {
        return Ok(());
    }
    match send(items)? {
        Sent::Accepted => Ok(()),
        Sent::Refused(message) if items.len() == 1 => {
            report.reject(seq(&items[0]), message);
            Ok(())
        }
        Sent::Refused(_) => {
            let (left, right) = items.split_at(items.len() / 2);
            narrow(left, seq, send, report)?;
            narrow(right, seq, send, report)
        }
    }
}

impl GrafanaCloud {
    fn write(&self, labels: &[LabelSet], units: &[Unit]) -> Result<Sent, PublishError> {
        let raw = proto::write_request(&series::series_of(labels, units));
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| PublishError::permanent(format!("snappy: {e}")))?;
        self.metrics.post(
            self.timeout,
            "application/x-protobuf",
            &[
                ("content-encoding", "snappy"),
                ("x-prometheus-remote-write-version", "0.1.0"),
            ],
            body,
        )
    }
}

fn auth_of(user: Option<String>, key: Option<String>, user_key: &str) -> Result<Auth, String> {
    Ok(match (user, key) {
        (Some(user), Some(key)) => Auth::Basic { user, key },
        (None, Some(key)) => Auth::Bearer(key),
        (Some(_), None) => return Err(format!("config.api_key: required with config.{user_key}")),
        (None, None) => Auth::None,
    })
}

fn url_of(config: &Config, key: &str) -> Result<Option<String>, String> {
    match config.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(Some(u.to_string())),
        Some(u) => Err(format!(
            "config.{key}: {u:?} must be an http:// or https:// URL"
        )),
    }
}

impl Publisher for GrafanaCloud {
    fn configure(config: &Config) -> Result<Self, String> {
        let endpoint = url_of(config, "endpoint")?
            .ok_or("missing required config key `endpoint` (the remote-write URL)")?;
        let opt = |k: &str| config.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let tenant = opt("tenant");
        let metrics = Target {
            endpoint,
            auth: auth_of(opt("username"), opt("api_key"), "username")?,
            tenant: tenant.clone(),
        };
        let loki = match url_of(config, "loki_endpoint")? {
            None => None,
            Some(endpoint) => Some(Target {
                endpoint,
                auth: auth_of(
                    opt("loki_username").or(opt("username")),
                    opt("api_key"),
                    "loki_username",
                )?,
                tenant,
            }),
        };
        let counter_names = match config.get("counter_names").unwrap_or("total") {
            "total" => CounterNames::Total,
            "reported" => CounterNames::Reported,
            other => {
                return Err(format!(
                    "config.counter_names: {other:?} must be \"total\" or \"reported\""
                ))
            }
        };
        let max_samples: usize = config.parse_or("max_samples_per_request", DEFAULT_MAX_SAMPLES)?;
        let timeout_ms: u64 = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        if max_samples == 0 || timeout_ms == 0 {
            return Err(
                "config.max_samples_per_request and config.timeout_ms must be at least 1".into(),
            );
        }
        if let Some(org) = config.get("org_slug") {
            vigil_plugin::info!(
                "remote-write configured",
                org_slug = org,
                endpoint = metrics.endpoint
            );
        }
        Ok(GrafanaCloud {
            metrics,
            loki,
            service: opt("service").unwrap_or_else(|| "vigil".to_string()),
            counter_names,
            max_samples,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {
        let grouped = series::group(batch, self.counter_names);
        let mut report = PublishReport::all_accepted();
        for (seq, reason) in &grouped.unsupported {
            report.reject(*seq, reason.clone());
        }
        let write = |units: &[Unit]| self.write(&grouped.labels, units);
        for chunk in grouped.units.chunks(self.max_samples) {
            narrow(chunk, |u| u.seq, &write, &mut report)?;
        }
        let mut entries = 0;
        if let Some(target) = &self.loki {
            let streams = loki::group(batch, &self.service);
            entries = streams.entries.len();
            let push = |items: &[loki::Entry]| {
                target.post(
                    self.timeout,
                    "application/json",
                    &[],
                    loki::push_body(&streams.labels, items),
                )
            };
            for chunk in streams.entries.chunks(self.max_samples) {
                narrow(chunk, |e| e.seq, &push, &mut report)?;
            }
        }
        vigil_plugin::debug!(
            "batch remote-written",
            samples = grouped.units.len(),
            series = grouped.labels.len(),
            entries = entries,
            rejected = report.rejected().len(),
        );
        Ok(report)
    }

    fn config_schema() -> String {
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "grafana-cloud",
            "type": "object",
            "required": ["endpoint"],
            "properties": {
                "endpoint": {"type": "string", "format": "uri",
                             "description": "Remote-write URL, e.g. https://prometheus-prod-01-eu-west-0.grafana.net/api/prom/push"},
                "api_key": {"type": "string", "writeOnly": true,
                            "description": "Grafana Cloud access policy token (password with username, else a bearer token)."},
                "username": {"type": "string", "description": "Grafana Cloud Prometheus instance id (basic auth user)."},
                "org_slug": {"type": "string", "description": "Grafana Cloud organisation (shown in logs)."},
                "tenant": {"type": "string", "minLength": 1, "description": "X-Scope-OrgID for self-hosted Mimir/Cortex/Loki."},
                "loki_endpoint": {"type": "string", "format": "uri",
                                  "description": "Loki push URL (…/loki/api/v1/push); events are not sent without it."},
                "loki_username": {"type": "string", "description": "Grafana Cloud Loki instance id (default: username)."},
                "service": {"type": "string", "minLength": 1, "default": "vigil", "description": "Loki stream label `service`."},
                "counter_names": {"type": "string", "enum": ["total", "reported"], "default": "total",
                                  "description": "As the host's --counter-names."},
                "max_samples_per_request": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_SAMPLES},
                "timeout_ms": {"type": "integer", "minimum": 1, "default": DEFAULT_TIMEOUT_MS}
            },
            "additionalProperties": false
        })
        .to_string()
    }
}

vigil_plugin::export_publisher!(GrafanaCloud);

#[cfg(test)]
mod tests;
