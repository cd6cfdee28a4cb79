//! The plugin's configuration, read and checked once in `configure`.

use std::time::Duration;

use vigil_plugin::Config;

pub(crate) const DEFAULT_INDEX_PREFIX: &str = "vigil";
pub(crate) const DEFAULT_NAMESPACE: &str = "default";
pub(crate) const DEFAULT_MAX_BULK_BYTES: usize = 5 << 20;
/// The smallest `max_bulk_bytes` accepted: one ordinary document fits.
pub(crate) const MIN_MAX_BULK_BYTES: usize = 1024;
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Where documents go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Daily `<prefix>-metrics-YYYY.MM.DD` / `<prefix>-events-YYYY.MM.DD`.
    Indices { prefix: String },
    /// `metrics-vigil-<namespace>` / `logs-vigil-<namespace>`.
    DataStream { namespace: String },
}

/// Which credential requests carry (named in 401/403 messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    ApiKey(String),
    Basic { username: String, password: String },
}

impl Auth {
    /// How a refusal names the credential.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Auth::None => "no credential (set config.api_key or config.username/password)",
            Auth::ApiKey(_) => "config.api_key",
            Auth::Basic { .. } => "config.username/password",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// Base URLs without a trailing slash.
    pub hosts: Vec<String>,
    pub mode: Mode,
    pub auth: Auth,
    pub pipeline: Option<String>,
    pub max_bulk_bytes: usize,
    pub manage_template: bool,
    /// Send `_bulk` bodies gzip-compressed (`Content-Encoding: gzip`).
    pub gzip: bool,
    pub timeout: Duration,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
        && !s.starts_with(['-', '_', '.'])
}

impl Settings {
    pub(crate) fn from_config(config: &Config) -> Result<Settings, String> {
        let hosts = config.list("hosts")?;
        if hosts.is_empty() {
            return Err(
                "missing required config key `hosts` (e.g. hosts = [\"http://127.0.0.1:9200\"])"
                    .to_string(),
            );
        }
        let mut clean = Vec::with_capacity(hosts.len());
        for host in hosts {
            let h = host.trim().trim_end_matches('/').to_string();
            let rest = h
                .strip_prefix("http://")
                .or_else(|| h.strip_prefix("https://"))
                .ok_or_else(|| {
                    format!("config.hosts: {host:?} must be an http:// or https:// URL")
                })?;
            if rest.is_empty() || rest.contains(['?', '#', ' ']) {
                return Err(format!(
                    "config.hosts: {host:?} must be a base URL like http://127.0.0.1:9200"
                ));
            }
            clean.push(h);
        }
        let mode = match config.get("mode").unwrap_or("indices") {
            "indices" => {
                let prefix = config
                    .get("index_prefix")
                    .unwrap_or(DEFAULT_INDEX_PREFIX)
                    .to_string();
                if !name_ok(&prefix) {
                    return Err(format!(
                        "config.index_prefix: {prefix:?} is not a valid index name part \
                         (lower-case letters, digits, `_`, `-`, `.`)"
                    ));
                }
                Mode::Indices { prefix }
            }
            "data_stream" => {
                let namespace = config
                    .get("namespace")
                    .unwrap_or(DEFAULT_NAMESPACE)
                    .to_string();
                if !name_ok(&namespace) || namespace.contains('-') {
                    return Err(format!(
                        "config.namespace: {namespace:?} is not a valid data stream namespace \
                         (lower-case letters, digits, `_`, `.`; no `-`)"
                    ));
                }
                Mode::DataStream { namespace }
            }
            other => {
                return Err(format!(
                    "config.mode: {other:?} must be \"indices\" or \"data_stream\""
                ))
            }
        };
        let api_key = config.get("api_key").filter(|v| !v.is_empty());
        let username = config.get("username").filter(|v| !v.is_empty());
        let password = config.get("password");
        let auth = match (api_key, username) {
            (Some(_), Some(_)) => {
                return Err("config: give either api_key or username/password, not both".into())
            }
            (Some(key), None) => Auth::ApiKey(key.to_string()),
            (None, Some(user)) => Auth::Basic {
                username: user.to_string(),
                password: password
                    .ok_or("config.password: required with config.username")?
                    .to_string(),
            },
            (None, None) if password.is_some() => {
                return Err("config.username: required with config.password".into())
            }
            (None, None) => Auth::None,
        };
        let pipeline = match config.get("pipeline") {
            None | Some("") => None,
            Some(p) if name_ok(p) => Some(p.to_string()),
            Some(p) => return Err(format!("config.pipeline: {p:?} is not a valid pipeline id")),
        };
        let max_bulk_bytes: usize = config.parse_or("max_bulk_bytes", DEFAULT_MAX_BULK_BYTES)?;
        if max_bulk_bytes < MIN_MAX_BULK_BYTES {
            return Err(format!(
                "config.max_bulk_bytes: must be at least {MIN_MAX_BULK_BYTES}"
            ));
        }
        let timeout_ms: u64 = config.parse_or("timeout_ms", DEFAULT_TIMEOUT_MS)?;
        if timeout_ms == 0 {
            return Err("config.timeout_ms: must be at least 1".into());
        }
        let gzip = match config.get("compression").unwrap_or("none") {
            "none" => false,
            "gzip" => true,
            other => {
                return Err(format!(
                    "config.compression: {other:?} must be \"none\" or \"gzip\""
                ))
            }
        };
        Ok(Settings {
            gzip,
            hosts: clean,
            mode,
            auth,
            pipeline,
            max_bulk_bytes,
            manage_template: config.parse_or("manage_template", true)?,
            timeout: Duration::from_millis(timeout_ms),
        })
    }
}

pub(crate) fn schema() -> String {
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "elasticsearch",
        "type": "object",
        "required": ["hosts"],
        "properties": {
            "hosts": {
                "type": ["array", "string"],
                "minItems": 1,
                "items": {"type": "string", "format": "uri"},
                "description": "Base URLs; the next one is tried on a connection error or 5xx."
            },
            "mode": {"type": "string", "enum": ["indices", "data_stream"], "default": "indices"},
            "index_prefix": {"type": "string", "minLength": 1, "default": DEFAULT_INDEX_PREFIX},
            "namespace": {"type": "string", "minLength": 1, "default": DEFAULT_NAMESPACE},
            "api_key": {"type": "string", "writeOnly": true,
                        "description": "Sent as `Authorization: ApiKey <key>` (the base64 id:key)."},
            "username": {"type": "string"},
            "password": {"type": "string", "writeOnly": true},
            "pipeline": {"type": "string", "minLength": 1},
            "max_bulk_bytes": {"type": "integer", "minimum": MIN_MAX_BULK_BYTES,
                               "default": DEFAULT_MAX_BULK_BYTES},
            "manage_template": {"type": "boolean", "default": true},
            "compression": {"type": "string", "enum": ["none", "gzip"], "default": "none"},
            "timeout_ms": {"type": "integer", "minimum": 1, "default": DEFAULT_TIMEOUT_MS}
        },
        "additionalProperties": false
    })
    .to_string()
}
