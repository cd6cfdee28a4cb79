//! First-party publisher: samples to anything that takes Prometheus
//! remote-write 1.0 (Grafana Cloud, Mimir, Cortex, Thanos Receive,
//! VictoriaMetrics, Prometheus itself). See README.md.
//!
//! A receiver that refuses a request (`400`: a sample out of order, too old, a
//! duplicate timestamp) rolls all of it back; the plugin then halves the
//! request until it has found the refused samples, which become dead letters
//! with the receiver's message, and delivers the rest. Re-sending samples
//! already stored (a retry, a crash) is accepted by these receivers.

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

struct GrafanaCloud {
    endpoint: String,
    auth: Auth,
    tenant: Option<String>,
    counter_names: CounterNames,
    max_samples: usize,
    timeout: Duration,
}

/// How one request went.
enum Sent {
    Accepted,
    /// The receiver refused the request's content (`400`); its message.
    Refused(String),
}

impl GrafanaCloud {
    fn credential(&self) -> &'static str {
        match self.auth {
            Auth::None => {
                "no credential (set config.api_key, and config.username for Grafana Cloud)"
            }
            Auth::Basic { .. } => "config.username/api_key",
            Auth::Bearer(_) => "config.api_key (as a bearer token)",
        }
    }

    fn send(&self, labels: &[LabelSet], units: &[Unit]) -> Result<Sent, PublishError> {
        let raw = proto::write_request(&series::series_of(labels, units));
        let body = snap::raw::Encoder::new()
            .compress_vec(&raw)
            .map_err(|e| PublishError::permanent(format!("snappy: {e}")))?;
        let mut request = http::post(&self.endpoint)
            .timeout(self.timeout)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header(
                "user-agent",
                concat!("vigil-grafana-cloud/", env!("CARGO_PKG_VERSION")),
            )
            .body(body);
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

    /// Sends `units`; on a refusal halves them, in order, until each refused
    /// sample is alone (then rejected with the receiver's message).
    fn narrow(
        &self,
        labels: &[LabelSet],
        units: &[Unit],
        report: &mut PublishReport,
    ) -> Result<(), PublishError> {
        if units.is_empty() {
            return Ok(());
        }
        match self.send(labels, units)? {
            Sent::Accepted => Ok(()),
            Sent::Refused(message) if units.len() == 1 => {
                report.reject(units[0].seq, message);
                Ok(())
            }
            Sent::Refused(_) => {
                let (left, right) = units.split_at(units.len() / 2);
                self.narrow(labels, left, report)?;
                self.narrow(labels, right, report)
            }
        }
    }
}

impl Publisher for GrafanaCloud {
    fn configure(config: &Config) -> Result<Self, String> {
        let endpoint = config.require("endpoint")?;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "config.endpoint: {endpoint:?} must be an http:// or https:// URL"
            ));
        }
        let key = config
            .get("api_key")
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let user = config
            .get("username")
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let auth = match (user, key) {
            (Some(user), Some(key)) => Auth::Basic { user, key },
            (None, Some(key)) => Auth::Bearer(key),
            (Some(_), None) => return Err("config.api_key: required with config.username".into()),
            (None, None) => Auth::None,
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
                endpoint = endpoint
            );
        }
        Ok(GrafanaCloud {
            endpoint,
            auth,
            tenant: config
                .get("tenant")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
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
        for chunk in grouped.units.chunks(self.max_samples) {
            self.narrow(&grouped.labels, chunk, &mut report)?;
        }
        vigil_plugin::debug!(
            "batch remote-written",
            samples = grouped.units.len(),
            series = grouped.labels.len(),
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
                "tenant": {"type": "string", "minLength": 1, "description": "X-Scope-OrgID for self-hosted Mimir/Cortex."},
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
