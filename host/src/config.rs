//! Command line, `VIGIL_*` environment variables and the TOML config file,
//! merged into one validated [`Config`]. Precedence: flag or environment
//! variable, then the config file, then the default. Owns every start-up check
//! on configuration; nothing else reads the environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

/// Vigil: a telemetry host with sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "vigil", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Plugin author tools: check, run, new.
    #[command(subcommand)]
    Plugin(crate::plugins::cli::PluginCommand),
    /// Replay NDJSON event files (RHAPSODY checkpoint files) into a running Vigil.
    Import(crate::import::ImportArgs),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Flags of `vigil serve`; each is also read from `VIGIL_<FLAG>`.
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// TOML file with the same keys as the flags (`series_ttl = "5m"`).
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// API address [default: 127.0.0.1:8080].
    #[arg(long, env = "VIGIL_LISTEN")]
    pub listen: Option<String>,
    /// Scrape address for /metrics, or `off` [default: 127.0.0.1:9090].
    #[arg(long, env = "VIGIL_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Data directory; SQLite lives at <data-dir>/vigil.db [default: ./data].
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://…`; overrides the SQLite default.
    #[arg(long, env = "VIGIL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Plugin directory [default: <data-dir>/plugins].
    #[arg(long, env = "VIGIL_PLUGIN_DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Log format [default: text].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// API token `SCOPES:SECRET`, scopes a comma list of read, write, admin. Repeatable;
    /// VIGIL_TOKENS takes several separated by spaces.
    #[arg(
        long = "token",
        env = "VIGIL_TOKENS",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// Allow listening on a non-loopback address without any token.
    #[arg(long, env = "VIGIL_ALLOW_UNAUTHENTICATED")]
    pub allow_unauthenticated: bool,
    /// Refuse reports from components that were not registered (422).
    #[arg(long, env = "VIGIL_STRICT_COMPONENTS")]
    pub strict_components: bool,
    /// Series not reported for this long leave the export; `0s` never [default: 5m].
    #[arg(long, env = "VIGIL_SERIES_TTL")]
    pub series_ttl: Option<String>,
    /// Samples older than this are deleted [default: 24h].
    #[arg(long, env = "VIGIL_RETENTION")]
    pub retention: Option<String>,
    /// A component without heartbeat or report for this long is stale [default: 60s].
    #[arg(long, env = "VIGIL_COMPONENT_STALE_AFTER")]
    pub component_stale_after: Option<String>,
    /// Interval of the host's own self-report; `0s` disables [default: 60s].
    #[arg(long, env = "VIGIL_SELF_REPORT_INTERVAL")]
    pub self_report_interval: Option<String>,
    /// Component name of the timed self-report [default: vigil].
    #[arg(long, env = "VIGIL_SELF_REPORT_COMPONENT")]
    pub self_report_component: Option<String>,
    /// Largest accepted request body in bytes [default: 16777216].
    #[arg(long, env = "VIGIL_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most metrics in one report [default: 10000].
    #[arg(long, env = "VIGIL_MAX_ITEMS_PER_REQUEST")]
    pub max_items_per_request: Option<usize>,
    /// A request's headers must arrive within this time of its first byte;
    /// a new connection must start a request within it [default: 10s].
    #[arg(long, env = "VIGIL_HEADER_READ_TIMEOUT")]
    pub header_read_timeout: Option<String>,
    /// A request's body must arrive within this time of its headers [default: 60s].
    #[arg(long, env = "VIGIL_BODY_READ_TIMEOUT")]
    pub body_read_timeout: Option<String>,
    /// A keep-alive connection without a request is closed after this [default: 60s].
    #[arg(long, env = "VIGIL_IDLE_TIMEOUT")]
    pub idle_timeout: Option<String>,
    /// Most connections open at once per listener; more wait to be accepted [default: 4096].
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// How counters are named on export: `total` (a `_total` suffix, as the
    /// Prometheus client libraries do) or `reported` (NoETL's names) [default: total].
    #[arg(long, env = "VIGIL_COUNTER_NAMES", value_enum)]
    pub counter_names: Option<CounterNaming>,
    // --- executions and provenance streams (issue 13) ---
    /// Time all debug-field providers together get per execution read [default: 250ms].
    #[arg(long, env = "VIGIL_DEBUG_FIELDS_BUDGET")]
    pub debug_fields_budget: Option<String>,
    /// Interval of keep-alive comments on idle event streams [default: 15s].
    #[arg(long, env = "VIGIL_STREAM_KEEP_ALIVE")]
    pub stream_keep_alive: Option<String>,
    /// Events kept in memory for live stream subscribers [default: 4096].
    #[arg(long, env = "VIGIL_STREAM_BUFFER")]
    pub stream_buffer: Option<usize>,
    /// A live stream subscriber behind the live log for this long is cut [default: 10s].
    #[arg(long, env = "VIGIL_STREAM_SLOW_AFTER")]
    pub stream_slow_after: Option<String>,
}

/// `--counter-names`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CounterNaming {
    #[default]
    Total,
    Reported,
}

/// The config file: the same keys as the flags, with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    plugin_dir: Option<PathBuf>,
    log_format: Option<LogFormat>,
    tokens: Option<Vec<FileToken>>,
    allow_unauthenticated: Option<bool>,
    strict_components: Option<bool>,
    series_ttl: Option<String>,
    retention: Option<String>,
    component_stale_after: Option<String>,
    self_report_interval: Option<String>,
    self_report_component: Option<String>,
    max_body_bytes: Option<usize>,
    max_items_per_request: Option<usize>,
    header_read_timeout: Option<String>,
    body_read_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_connections: Option<usize>,
    counter_names: Option<CounterNaming>,
    debug_fields_budget: Option<String>,
    stream_keep_alive: Option<String>,
    stream_buffer: Option<usize>,
    stream_slow_after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToken {
    secret: String,
    scopes: Vec<Scope>,
}

/// What a token may do. `admin` includes `read` and `write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Write,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s {
            "read" => Some(Scope::Read),
            "write" => Some(Scope::Write),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// A bearer token and its scopes.
#[derive(Clone)]
pub struct Token {
    pub secret: String,
    pub scopes: Vec<Scope>,
}

impl Token {
    pub fn allows(&self, needed: Scope) -> bool {
        self.scopes.contains(&Scope::Admin) || self.scopes.contains(&needed)
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("secret", &"***")
            .field("scopes", &self.scopes)
            .finish()
    }
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub plugin_dir: PathBuf,
    pub log_format: LogFormat,
    pub tokens: Vec<Token>,
    pub allow_unauthenticated: bool,
    pub strict_components: bool,
    pub series_ttl: Duration,
    pub retention: Duration,
    pub component_stale_after: Duration,
    pub self_report_interval: Duration,
    pub self_report_component: String,
    pub max_body_bytes: usize,
    pub max_items_per_request: usize,
    pub connections: crate::api::connections::ConnectionLimits,
    pub counter_names: crate::metrics::index::CounterNames,
    pub debug_fields_budget: Duration,
    pub stream_keep_alive: Duration,
    pub stream_buffer: usize,
    pub stream_slow_after: Duration,
}

/// A configuration problem, reported before anything starts.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

fn duration(key: &str, value: Option<String>, default: &str) -> Result<Duration, ConfigError> {
    let raw = value.unwrap_or_else(|| default.to_string());
    humantime::parse_duration(raw.trim()).map_err(|e| {
        err(format!(
            "invalid duration for `{key}`: `{raw}` ({e}); use e.g. 30s, 5m, 24h"
        ))
    })
}

fn positive_duration(
    key: &str,
    value: Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let d = duration(key, value, default)?;
    if d.is_zero() {
        return Err(err(format!("`{key}` must be greater than 0")));
    }
    Ok(d)
}

fn address(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        err(format!(
            "invalid address for `{key}`: `{raw}`; use IP:PORT, e.g. 127.0.0.1:8080"
        ))
    })
}

fn parse_token(raw: &str) -> Result<Token, ConfigError> {
    let (scopes, secret) = raw
        .split_once(':')
        .ok_or_else(|| err("invalid token: use SCOPES:SECRET, e.g. read,write:s3cret"))?;
    let scopes = scopes
        .split(',')
        .map(|s| {
            Scope::parse(s.trim()).ok_or_else(|| {
                err(format!(
                    "invalid token scope `{s}`: use read, write or admin"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_secret(secret)?;
    Ok(Token {
        secret: secret.to_string(),
        scopes,
    })
}

fn check_secret(secret: &str) -> Result<(), ConfigError> {
    if secret.is_empty() {
        return Err(err("token secrets must not be empty"));
    }
    if secret.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(
            "token secrets must not contain spaces or control characters",
        ));
    }
    Ok(())
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(format!("reading config file {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| err(format!("config file {}: {}", path.display(), e.message())))
}

impl Config {
    /// Merges flags/environment with the config file and validates the result.
    pub fn resolve(args: ServeArgs) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let listen_raw = args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = address("listen", &listen_raw)?;
        let metrics_raw = args
            .metrics_listen
            .or(file.metrics_listen)
            .unwrap_or_else(|| "127.0.0.1:9090".into());
        let metrics_listen = if metrics_raw.eq_ignore_ascii_case("off") {
            None
        } else {
            Some(address("metrics_listen", &metrics_raw)?)
        };
        let data_dir = args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let database_url = match args.database_url.or(file.database_url) {
            Some(url) => url,
            None => format!("sqlite://{}", data_dir.join("vigil.db").display()),
        };
        let plugin_dir = args
            .plugin_dir
            .or(file.plugin_dir)
            .unwrap_or_else(|| data_dir.join("plugins"));
        let mut tokens = args
            .tokens
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| parse_token(t.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        for t in file.tokens.unwrap_or_default() {
            check_secret(&t.secret)?;
            if t.scopes.is_empty() {
                return Err(err("a token in the config file has no scopes"));
            }
            tokens.push(Token {
                secret: t.secret,
                scopes: t.scopes,
            });
        }
        let allow_unauthenticated =
            args.allow_unauthenticated || file.allow_unauthenticated.unwrap_or(false);
        let max_body_bytes = args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(16 * 1024 * 1024);
        let max_items_per_request = args
            .max_items_per_request
            .or(file.max_items_per_request)
            .unwrap_or(10_000);
        if max_body_bytes == 0 || max_items_per_request == 0 {
            return Err(err(
                "max_body_bytes and max_items_per_request must be greater than 0",
            ));
        }
        let config = Config {
            listen,
            metrics_listen,
            data_dir,
            database_url,
            plugin_dir,
            log_format: args.log_format.or(file.log_format).unwrap_or_default(),
            tokens,
            allow_unauthenticated,
            strict_components: args.strict_components || file.strict_components.unwrap_or(false),
            series_ttl: duration("series_ttl", args.series_ttl.or(file.series_ttl), "5m")?,
            retention: duration("retention", args.retention.or(file.retention), "24h")?,
            component_stale_after: duration(
                "component_stale_after",
                args.component_stale_after.or(file.component_stale_after),
                "60s",
            )?,
            self_report_interval: duration(
                "self_report_interval",
                args.self_report_interval.or(file.self_report_interval),
                "60s",
            )?,
            self_report_component: args
                .self_report_component
                .or(file.self_report_component)
                .unwrap_or_else(|| "vigil".into()),
            max_body_bytes,
            max_items_per_request,
            connections: crate::api::connections::ConnectionLimits {
                header_read_timeout: positive_duration(
                    "header_read_timeout",
                    args.header_read_timeout.or(file.header_read_timeout),
                    "10s",
                )?,
                body_read_timeout: positive_duration(
                    "body_read_timeout",
                    args.body_read_timeout.or(file.body_read_timeout),
                    "60s",
                )?,
                idle_timeout: positive_duration(
                    "idle_timeout",
                    args.idle_timeout.or(file.idle_timeout),
                    "60s",
                )?,
                max_connections: match args.max_connections.or(file.max_connections) {
                    Some(0) => return Err(err("max_connections must be greater than 0")),
                    Some(n) => n,
                    None => 4096,
                },
                ..Default::default()
            },
            counter_names: match args
                .counter_names
                .or(file.counter_names)
                .unwrap_or_default()
            {
                CounterNaming::Total => crate::metrics::index::CounterNames::Total,
                CounterNaming::Reported => crate::metrics::index::CounterNames::Reported,
            },
            debug_fields_budget: duration(
                "debug_fields_budget",
                args.debug_fields_budget.or(file.debug_fields_budget),
                "250ms",
            )?,
            stream_keep_alive: duration(
                "stream_keep_alive",
                args.stream_keep_alive.or(file.stream_keep_alive),
                "15s",
            )?,
            stream_buffer: args.stream_buffer.or(file.stream_buffer).unwrap_or(4096),
            stream_slow_after: duration(
                "stream_slow_after",
                args.stream_slow_after.or(file.stream_slow_after),
                "10s",
            )?,
        };
        if config.debug_fields_budget.is_zero() || config.stream_keep_alive.is_zero() {
            return Err(err(
                "debug_fields_budget and stream_keep_alive must be greater than 0",
            ));
        }
        if !(1..=1_000_000).contains(&config.stream_buffer) {
            return Err(err("stream_buffer must be from 1 to 1000000 events"));
        }
        config.check_exposure()?;
        if config.retention.is_zero() {
            return Err(err("retention must be greater than 0"));
        }
        Ok(config)
    }

    /// Without tokens the server must stay on loopback unless explicitly allowed.
    fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.tokens.is_empty() || self.allow_unauthenticated {
            return Ok(());
        }
        let exposed: Vec<String> = std::iter::once(self.listen)
            .chain(self.metrics_listen)
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect();
        if exposed.is_empty() {
            Ok(())
        } else {
            Err(err(format!(
                "refusing to listen on non-loopback address {} without API tokens: \
                 configure --token SCOPES:SECRET, or pass --allow-unauthenticated",
                exposed.join(", ")
            )))
        }
    }

    /// Whether bearer tokens are checked at all.
    pub fn auth_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(f: impl FnOnce(&mut ServeArgs)) -> ServeArgs {
        let mut a = ServeArgs::default();
        f(&mut a);
        a
    }

    #[test]
    fn non_loopback_without_tokens_is_refused_unless_allowed() {
        let e = Config::resolve(args(|a| a.listen = Some("0.0.0.0:8080".into()))).unwrap_err();
        assert!(e.0.contains("--allow-unauthenticated"), "{e}");
        Config::resolve(args(|a| {
            a.listen = Some("0.0.0.0:8080".into());
            a.allow_unauthenticated = true;
        }))
        .unwrap();
        Config::resolve(args(|a| {
            a.listen = Some("0.0.0.0:8080".into());
            a.tokens = vec!["read:abcdefgh".into()];
        }))
        .unwrap();
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::resolve(args(|a| a.series_ttl = Some("five".into()))).unwrap_err();
        assert!(e.0.contains("series_ttl"), "{e}");
        let e = Config::resolve(args(|a| a.tokens = vec!["root:abcdefgh".into()])).unwrap_err();
        assert!(e.0.contains("scope"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("vigil-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigil.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:1\"\nseries_tll = \"5m\"\n").unwrap();
        let e = Config::resolve(args(|a| a.config = Some(path.clone()))).unwrap_err();
        assert!(e.0.contains("series_tll"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn database_url_defaults_to_sqlite_in_data_dir() {
        let c = Config::resolve(args(|a| a.data_dir = Some("/tmp/x".into()))).unwrap();
        assert_eq!(c.database_url, "sqlite:///tmp/x/vigil.db");
        assert_eq!(c.plugin_dir, PathBuf::from("/tmp/x/plugins"));
    }
}
