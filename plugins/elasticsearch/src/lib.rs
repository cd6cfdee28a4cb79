//! First-party publisher: writes samples and events to Elasticsearch with the
//! `_bulk` API, each exactly once (see README.md for config and documents).
//!
//! Every action is a `create` with `_id` from the item's seq ([`docs`]), so a
//! batch the host re-sends (retry, crash, lease change) comes back `409` for
//! what is already there. Each item of the answer is read: `201`/`409`
//! delivered; `429`/`5xx` make the batch retryable; other `4xx` are dead
//! letters with Elasticsearch's `type` and `reason`.

mod bulk;
mod docs;
mod gzip;
mod settings;
mod template;

use vigil_plugin::http::{self, HttpError, Method, Response};
use vigil_plugin::publisher::{Batch, Config, PublishError, PublishReport, Publisher};

use settings::{Auth, Settings};

struct Elasticsearch {
    settings: Settings,
    /// Index of the host that answered last.
    current: usize,
    /// The template still has to be installed (`configure` could not reach
    /// Elasticsearch).
    template_pending: bool,
}

impl Elasticsearch {
    fn request(&self, method: Method, host: &str, path: &str) -> http::Request {
        let mut r =
            http::Request::new(method, &format!("{host}{path}")).timeout(self.settings.timeout);
        match &self.settings.auth {
            Auth::None => {}
            Auth::ApiKey(key) => r = r.header("authorization", format!("ApiKey {key}")),
            Auth::Basic { username, password } => r = r.basic_auth(username, password),
        }
        r
    }

    /// Sends to the current host, then to the others on a connection error,
    /// a timeout or a 5xx. A 5xx from the last one tried is returned as
    /// the response.
    fn send(
        &mut self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &[u8],
        gzip: bool,
    ) -> Result<(String, Response), PublishError> {
        let n = self.settings.hosts.len();
        let mut last: Option<Result<(String, Response), HttpError>> = None;
        for i in 0..n {
            let index = (self.current + i) % n;
            let host = self.settings.hosts[index].clone();
            let mut request = self
                .request(method, &host, path)
                .header("content-type", content_type);
            request = if gzip {
                request
                    .header("content-encoding", "gzip")
                    .body(gzip::gzip(body))
            } else {
                request.body(body.to_vec())
            };
            let result = request.send();
            match result {
                Ok(r) if r.status() >= 500 => {
                    vigil_plugin::warn!(
                        "Elasticsearch answered a 5xx",
                        host = host,
                        status = r.status()
                    );
                    last = Some(Ok((host, r)));
                }
                Ok(r) => {
                    self.current = index;
                    return Ok((host, r));
                }
                Err(e @ (HttpError::Timeout { .. } | HttpError::Connection { .. })) => {
                    vigil_plugin::warn!(
                        "Elasticsearch host unreachable",
                        host = host,
                        error = e.to_string()
                    );
                    last = Some(Err(e));
                }
                Err(e) => return Err(e.into()),
            }
        }
        match last {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(e)) => Err(e.into()),
            None => Err(PublishError::permanent("no Elasticsearch hosts configured")),
        }
    }

    fn install_template(&mut self) -> Result<(), PublishError> {
        for (path, body) in template::requests(&self.settings.mode) {
            let body = body.to_string();
            let (host, response) = self.send(
                Method::Put,
                &path,
                "application/json",
                body.as_bytes(),
                false,
            )?;
            if !response.is_success() {
                return Err(bulk::request_error(
                    &host,
                    &path,
                    &self.settings.auth,
                    &response,
                ));
            }
        }
        self.template_pending = false;
        vigil_plugin::info!("index template installed");
        Ok(())
    }

    fn bulk_path(&self) -> String {
        match &self.settings.pipeline {
            Some(p) => format!("/_bulk?pipeline={p}"),
            None => "/_bulk".to_string(),
        }
    }
}

impl Publisher for Elasticsearch {
    fn configure(config: &Config) -> Result<Self, String> {
        let settings = Settings::from_config(config)?;
        let mut es = Elasticsearch {
            template_pending: settings.manage_template,
            settings,
            current: 0,
        };
        if es.template_pending {
            match es.install_template() {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    vigil_plugin::warn!(
                        "could not install the index template yet; trying again before the first batch",
                        error = e.to_string()
                    );
                }
                Err(e) => return Err(format!("installing the index template: {}", e.message())),
            }
        }
        Ok(es)
    }

    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {
        if batch.is_empty() {
            return Ok(PublishReport::all_accepted());
        }
        if self.template_pending {
            self.install_template()?;
        }
        let path = self.bulk_path();
        let mut outcome = bulk::Outcome::default();
        for (body, items) in docs::encode(batch, &self.settings.mode, self.settings.max_bulk_bytes)
        {
            let (host, response) = self.send(
                Method::Post,
                &path,
                "application/x-ndjson",
                &body,
                self.settings.gzip,
            )?;
            if response.status() != 200 {
                return Err(bulk::request_error(
                    &host,
                    &path,
                    &self.settings.auth,
                    &response,
                ));
            }
            bulk::read_items(&response, &items, &mut outcome)?;
        }
        vigil_plugin::debug!(
            "batch written",
            samples = batch.sample_count(),
            events = batch.event_count(),
            rejected = outcome.rejected.len(),
            retry = outcome.retry,
        );
        outcome.into_report()
    }

    fn config_schema() -> String {
        settings::schema()
    }
}

vigil_plugin::export_publisher!(Elasticsearch);

#[cfg(test)]
mod tests;
