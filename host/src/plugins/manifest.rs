//! `<name>.toml` plugin manifests: capabilities the host grants (outbound
//! hosts, memory, call time) and the plugin's configuration, with `${ENV}`
//! secret references resolved at load and never shown again. Also checks the
//! configuration against the JSON Schema the plugin describes.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Default memory cap per plugin instance.
pub const DEFAULT_MEMORY_MB: u32 = 64;
/// Largest memory cap a manifest may ask for.
pub const MAX_MEMORY_MB: u32 = 1024;
/// Default time cap per call.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 5_000;
/// Largest time cap a manifest may ask for.
pub const MAX_CALL_TIMEOUT_MS: u64 = 300_000;

/// A manifest problem; the message names the file and key.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// One origin a plugin may send HTTP requests to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl AllowedHost {
    /// Parses `scheme://host[:port]` (no path); the port defaults by scheme.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| format!("`{raw}` must look like http://host:port or https://host"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("`{raw}`: only http and https are allowed")),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains('?') {
            return Err(format!(
                "`{raw}`: give scheme, host and port only, no path or user"
            ));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| format!("`{raw}`: invalid port"))?;
        if host.is_empty() {
            return Err(format!("`{raw}`: missing host"));
        }
        Ok(AllowedHost {
            scheme,
            host: host.to_ascii_lowercase(),
            port: port.unwrap_or(default_port),
        })
    }

    /// Whether a request to `scheme://host:port` matches this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
            && self
                .host
                .eq_ignore_ascii_case(host.trim_start_matches('[').trim_end_matches(']'))
            && self.port == port
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        // [v6]:port
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((s, None)),
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// What the host grants a plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    pub allowed_hosts: Vec<AllowedHost>,
    pub memory_mb: u32,
    pub call_timeout_ms: u64,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            allowed_hosts: Vec::new(),
            memory_mb: DEFAULT_MEMORY_MB,
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
        }
    }
}

/// One configuration value; secrets print as `***`.
#[derive(Clone, PartialEq)]
pub struct ConfigValue {
    pub value: serde_json::Value,
    pub secret: bool,
}

impl fmt::Debug for ConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("\"***\"")
        } else {
            write!(f, "{}", self.value)
        }
    }
}

impl ConfigValue {
    /// The value as the plugin receives it: a string as is, anything else
    /// (numbers, booleans, arrays, tables) as JSON text.
    pub fn as_plugin_string(&self) -> String {
        match &self.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }

    /// The value as the API shows it.
    pub fn redacted(&self) -> serde_json::Value {
        if self.secret {
            serde_json::Value::String("***".into())
        } else {
            self.value.clone()
        }
    }
}

/// How the host hands a publisher the log (`[delivery]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryOptions {
    /// Histogram and summary observations reach the publisher as the series
    /// Vigil's own export shows for them (`_bucket{le}`, `_sum`, `_count`,
    /// quantiles) instead of as observations.
    pub derived_series: bool,
}

/// A parsed, resolved manifest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PluginManifest {
    pub capabilities: Capabilities,
    pub delivery: DeliveryOptions,
    pub config: BTreeMap<String, ConfigValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    capabilities: Option<RawCapabilities>,
    #[serde(default)]
    delivery: Option<RawDelivery>,
    #[serde(default)]
    config: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default)]
    derived_series: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    allowed_hosts: Vec<String>,
    memory_mb: Option<u32>,
    call_timeout_ms: Option<u64>,
}

impl PluginManifest {
    /// Parses manifest text; `env` resolves `${NAME}` references.
    pub fn parse(
        text: &str,
        file: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError(format!("{file}: {}", e.message())))?;
        let mut capabilities = Capabilities::default();
        if let Some(c) = raw.capabilities {
            for h in &c.allowed_hosts {
                capabilities
                    .allowed_hosts
                    .push(AllowedHost::parse(h).map_err(|e| {
                        ManifestError(format!("{file}: capabilities.allowed_hosts: {e}"))
                    })?);
            }
            if let Some(mb) = c.memory_mb {
                if mb == 0 || mb > MAX_MEMORY_MB {
                    return Err(ManifestError(format!(
                        "{file}: capabilities.memory_mb must be between 1 and {MAX_MEMORY_MB}"
                    )));
                }
                capabilities.memory_mb = mb;
            }
            if let Some(ms) = c.call_timeout_ms {
                if ms == 0 || ms > MAX_CALL_TIMEOUT_MS {
                    return Err(ManifestError(format!(
                        "{file}: capabilities.call_timeout_ms must be between 1 and {MAX_CALL_TIMEOUT_MS}"
                    )));
                }
                capabilities.call_timeout_ms = ms;
            }
        }
        let mut config = BTreeMap::new();
        for (key, value) in raw.config.unwrap_or_default() {
            let mut secret = false;
            let value = config_value(&value, &key, 0, &mut secret, &env)
                .map_err(|e| ManifestError(format!("{file}: {e}")))?;
            config.insert(key, ConfigValue { value, secret });
        }
        let delivery = DeliveryOptions {
            derived_series: raw.delivery.is_some_and(|d| d.derived_series),
        };
        Ok(PluginManifest {
            capabilities,
            delivery,
            config,
        })
    }

    /// The configuration as a JSON object (for schema checks).
    pub fn config_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.config
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone()))
                .collect(),
        )
    }

    /// The configuration with secrets replaced by `***`.
    pub fn config_redacted(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.config
                .iter()
                .map(|(k, v)| (k.clone(), v.redacted()))
                .collect(),
        )
    }
}

/// Deepest nesting of arrays and tables a config value may have.
pub const MAX_CONFIG_DEPTH: usize = 4;
/// Most entries one config array or table may hold.
pub const MAX_CONFIG_ITEMS: usize = 256;

/// One `[config]` value as JSON: strings (with `${ENV}` resolved; any
/// reference makes the whole value secret), numbers, booleans, and arrays
/// and tables of those up to [`MAX_CONFIG_DEPTH`] deep. `path` names the key.
fn config_value(
    value: &toml::Value,
    path: &str,
    depth: usize,
    secret: &mut bool,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<serde_json::Value, String> {
    use serde_json::Value as J;
    let nested = |len: usize| {
        if depth >= MAX_CONFIG_DEPTH {
            Err(format!(
                "config.{path}: nested deeper than {MAX_CONFIG_DEPTH} levels"
            ))
        } else if len > MAX_CONFIG_ITEMS {
            Err(format!(
                "config.{path}: more than {MAX_CONFIG_ITEMS} entries"
            ))
        } else {
            Ok(())
        }
    };
    Ok(match value {
        toml::Value::String(s) => {
            let (resolved, used_env) =
                resolve_env(s, env).map_err(|e| format!("config.{path}: {e}"))?;
            *secret |= used_env;
            J::String(resolved)
        }
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .ok_or_else(|| format!("config.{path}: not a finite number"))?,
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Array(items) => {
            nested(items.len())?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                out.push(config_value(
                    item,
                    &format!("{path}[{i}]"),
                    depth + 1,
                    secret,
                    env,
                )?);
            }
            J::Array(out)
        }
        toml::Value::Table(table) => {
            nested(table.len())?;
            let mut out = serde_json::Map::new();
            for (k, item) in table {
                out.insert(
                    k.clone(),
                    config_value(item, &format!("{path}.{k}"), depth + 1, secret, env)?,
                );
            }
            J::Object(out)
        }
        toml::Value::Datetime(_) => {
            return Err(format!(
                "config.{path}: dates are not supported; quote the value as a string"
            ))
        }
    })
}

/// Replaces `${NAME}` with the variable's value; a value that used any
/// reference is a secret.
fn resolve_env(raw: &str, env: &impl Fn(&str) -> Option<String>) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut secret = false;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` reference".to_string())?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable reference"
            ));
        }
        let value = env(name).ok_or_else(|| format!("refers to ${{{name}}}, which is not set"))?;
        out.push_str(&value);
        secret = true;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, secret))
}

/// Checks a config object against the subset of JSON Schema plugins use:
/// `type` (string, integer, number, boolean, array, object, or a list of
/// those), `enum`, `minimum`, `maximum`, `minLength`, `pattern` (strings),
/// `format: uri`; for
/// arrays `items`, `minItems`, `maxItems`; for objects (the config itself and
/// nested tables) `properties`, `required` and `additionalProperties: false`.
/// Every problem is listed, each naming its key path.
pub fn check_config(schema_text: &str, config: &serde_json::Value) -> Result<(), Vec<String>> {
    use serde_json::Value;
    let schema: Value = serde_json::from_str(schema_text)
        .map_err(|e| vec![format!("the plugin's config schema is not valid JSON: {e}")])?;
    let Some(schema) = schema.as_object() else {
        return Err(vec![
            "the plugin's config schema is not a JSON object".into()
        ]);
    };
    let Some(config) = config.as_object() else {
        return Err(vec!["config must be a table".into()]);
    };
    let mut errors = Vec::new();
    check_object("config", schema, config, &mut errors);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

fn check_object(path: &str, schema: &JsonMap, config: &JsonMap, errors: &mut Vec<String>) {
    use serde_json::Value;
    let properties = schema.get("properties").and_then(Value::as_object);
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !config.contains_key(key) {
                errors.push(format!("{path}.{key}: required by the plugin"));
            }
        }
    }
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    for (key, value) in config {
        let Some(prop) = properties
            .and_then(|p| p.get(key))
            .and_then(Value::as_object)
        else {
            if closed {
                let known: Vec<&str> = properties
                    .map(|p| p.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                errors.push(format!(
                    "{path}.{key}: unknown key; the plugin accepts {}",
                    if known.is_empty() {
                        "no keys".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            continue;
        };
        check_value(&format!("{path}.{key}"), prop, value, errors);
    }
}

fn type_matches(name: &str, value: &serde_json::Value) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

fn check_value(path: &str, prop: &JsonMap, value: &serde_json::Value, errors: &mut Vec<String>) {
    use serde_json::Value;
    let (type_ok, expected) = match prop.get("type") {
        Some(Value::String(t)) => (type_matches(t, value), t.clone()),
        Some(Value::Array(ts)) => {
            let names: Vec<&str> = ts.iter().filter_map(Value::as_str).collect();
            (
                names.is_empty() || names.iter().any(|t| type_matches(t, value)),
                names.join(" or "),
            )
        }
        _ => (true, String::new()),
    };
    if !type_ok {
        errors.push(format!("{path}: expected {expected}"));
        return;
    }
    if let Some(allowed) = prop.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(format!(
                "{path}: must be one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    if let (Some(text), Some(pattern)) =
        (value.as_str(), prop.get("pattern").and_then(Value::as_str))
    {
        // JSON Schema patterns are unanchored, as written.
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(text) => {}
            Ok(_) => errors.push(format!("{path}: must match the pattern {pattern}")),
            Err(_) => errors.push(format!(
                "{path}: the plugin's schema has a pattern this host cannot read ({pattern})"
            )),
        }
    }
    if let (Some(n), Some(min)) = (value.as_f64(), prop.get("minimum").and_then(Value::as_f64)) {
        if n < min {
            errors.push(format!("{path}: must be at least {min}"));
        }
    }
    if let (Some(n), Some(max)) = (value.as_f64(), prop.get("maximum").and_then(Value::as_f64)) {
        if n > max {
            errors.push(format!("{path}: must be at most {max}"));
        }
    }
    if let (Some(s), Some(min)) = (
        value.as_str(),
        prop.get("minLength").and_then(Value::as_u64),
    ) {
        if (s.chars().count() as u64) < min {
            errors.push(format!("{path}: must be at least {min} characters"));
        }
    }
    if prop.get("format").and_then(Value::as_str) == Some("uri") {
        if let Some(s) = value.as_str() {
            if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() < 10 {
                errors.push(format!("{path}: must be an http(s) URL"));
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = prop.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                errors.push(format!("{path}: must have at least {min} entries"));
            }
        }
        if let Some(max) = prop.get("maxItems").and_then(Value::as_u64) {
            if (items.len() as u64) > max {
                errors.push(format!("{path}: must have at most {max} entries"));
            }
        }
        if let Some(item_schema) = prop.get("items").and_then(Value::as_object) {
            for (i, item) in items.iter().enumerate() {
                check_value(&format!("{path}[{i}]"), item_schema, item, errors);
            }
        }
    }
    if let Some(table) = value.as_object() {
        check_object(path, prop, table, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "ES_API_KEY").then(|| "s3cret".to_string())
    }

    #[test]
    fn manifests_grant_hosts_caps_and_resolve_secrets() {
        let m = PluginManifest::parse(
            r#"
            [capabilities]
            allowed_hosts = ["http://127.0.0.1:9200", "https://logs.example.com"]
            memory_mb = 32
            call_timeout_ms = 2000
            [config]
            endpoint = "http://127.0.0.1:9200"
            api_key = "ApiKey ${ES_API_KEY}"
            batch = 500
            "#,
            "es.toml",
            env,
        )
        .unwrap();
        assert_eq!(m.capabilities.memory_mb, 32);
        assert!(m.capabilities.allowed_hosts[0].allows("http", "127.0.0.1", 9200));
        assert!(m.capabilities.allowed_hosts[1].allows("https", "logs.example.com", 443));
        assert!(!m.capabilities.allowed_hosts[1].allows("http", "logs.example.com", 443));
        assert_eq!(m.config["api_key"].as_plugin_string(), "ApiKey s3cret");
        assert!(!format!("{m:?}").contains("s3cret"));
        assert!(!m.config_redacted().to_string().contains("s3cret"));
        assert_eq!(m.config["batch"].as_plugin_string(), "500");
        assert!(!m.delivery.derived_series, "observations unless asked");
        let m = PluginManifest::parse("[delivery]\nderived_series = true", "rw.toml", |_| None)
            .unwrap();
        assert!(m.delivery.derived_series);
    }

    #[test]
    fn bad_manifests_name_the_problem() {
        for (text, needle) in [
            (
                "[capabilities]\nallowed_hosts = [\"ftp://x\"]",
                "only http and https",
            ),
            (
                "[capabilities]\nallowed_hosts = [\"http://x/path\"]",
                "no path",
            ),
            ("[capabilities]\nmemory_mb = 0", "memory_mb"),
            ("[capabilities]\nfuel = 3", "unknown field `fuel`"),
            ("[delivery]\nderived = true", "unknown field `derived`"),
            (
                "[delivery]\nderived_series = \"yes\"",
                "invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[config]\nkey = \"${MISSING}\"",
                "MISSING}, which is not set",
            ),
            (
                "[config]\nkey = 1979-05-27",
                "config.key: dates are not supported",
            ),
            (
                "[config]\nhosts = [\"a\", \"${MISSING}\"]",
                "config.hosts[1]: refers to ${MISSING}",
            ),
            (
                "[config]\nk = [[[[[1]]]]]",
                "config.k[0][0][0][0]: nested deeper than 4 levels",
            ),
            ("[config.t]\nx = nan", "config.t.x: not a finite number"),
            ("[plugin]\nname = \"x\"", "unknown field `plugin`"),
        ] {
            let e = PluginManifest::parse(text, "p.toml", env).unwrap_err();
            assert!(e.0.contains(needle), "{text}: {e}");
            assert!(e.0.starts_with("p.toml"), "{e}");
        }
    }

    #[test]
    fn config_is_checked_against_the_plugin_schema() {
        let schema = r#"{"type":"object","required":["url"],"additionalProperties":false,
            "properties":{"url":{"type":"string","format":"uri"},"timeout_ms":{"type":"integer","minimum":1}}}"#;
        assert!(check_config(schema, &serde_json::json!({"url":"http://127.0.0.1:1/x"})).is_ok());
        let errors =
            check_config(schema, &serde_json::json!({"timeout_ms": 0, "urll": "x"})).unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("config.url: required")));
        assert!(errors
            .iter()
            .any(|e| e.contains("config.urll: unknown key")));
        assert!(errors
            .iter()
            .any(|e| e.contains("config.timeout_ms: must be at least 1")));
    }

    #[test]
    fn string_patterns_are_enforced_and_other_types_pass_them() {
        let schema = r#"{"type":"object","properties":{
            "key":{"type":"string","pattern":"^[A-Za-z0-9]{32}$"},
            "timeout_ms":{"type":["integer","string"],"pattern":"^[1-9][0-9]*$"},
            "odd":{"type":"string","pattern":"(unclosed"}}}"#;
        let ok = serde_json::json!({"key": "R0UT1NGKEY0123456789abcdefABCDEF", "timeout_ms": 5});
        assert!(check_config(schema, &ok).is_ok());
        let errors = check_config(
            schema,
            &serde_json::json!({"key": "short", "timeout_ms": "05", "odd": "x"}),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors
            .iter()
            .any(|e| e.starts_with("config.key: must match")));
        assert!(errors
            .iter()
            .any(|e| e.starts_with("config.timeout_ms: must match")));
        assert!(errors.iter().any(|e| e.contains("cannot read")));
    }

    #[test]
    fn arrays_and_tables_reach_the_plugin_as_json_and_secrets_stay_hidden() {
        let m = PluginManifest::parse(
            r#"
            [config]
            hosts = ["http://a:9200", "http://b:9200"]
            [config.auth]
            api_key = "${ES_API_KEY}"
            retries = 3
            "#,
            "es.toml",
            env,
        )
        .unwrap();
        assert_eq!(
            m.config["hosts"].as_plugin_string(),
            r#"["http://a:9200","http://b:9200"]"#
        );
        assert!(!m.config["hosts"].secret);
        assert!(m.config["auth"].secret);
        assert_eq!(
            m.config["auth"].as_plugin_string(),
            r#"{"api_key":"s3cret","retries":3}"#
        );
        assert_eq!(m.config_redacted()["auth"], "***");
        let big = format!("[config]\nk = [{}]", vec!["1"; 257].join(","));
        let e = PluginManifest::parse(&big, "p.toml", env).unwrap_err();
        assert!(e.0.contains("config.k: more than 256 entries"), "{e}");
    }

    #[test]
    fn arrays_and_tables_are_checked_against_the_schema() {
        let schema = r#"{"type":"object","additionalProperties":false,"properties":{
            "hosts":{"type":"array","minItems":1,"items":{"type":"string","format":"uri"}},
            "auth":{"type":"object","additionalProperties":false,"required":["user"],
                    "properties":{"user":{"type":"string","minLength":1}}},
            "timeout_ms":{"type":["integer","string"]}}}"#;
        let ok =
            serde_json::json!({"hosts":["http://a:9200"],"auth":{"user":"u"},"timeout_ms":"5"});
        assert!(check_config(schema, &ok).is_ok());
        let errors = check_config(
            schema,
            &serde_json::json!({"hosts":["http://a:9200", 7, "ftp://x"], "auth":{"pass":"p"},
                                "timeout_ms": true}),
        )
        .unwrap_err();
        for needle in [
            "config.hosts[1]: expected string",
            "config.hosts[2]: must be an http(s) URL",
            "config.auth.user: required by the plugin",
            "config.auth.pass: unknown key; the plugin accepts user",
            "config.timeout_ms: expected integer or string",
        ] {
            assert!(errors.iter().any(|e| e == needle), "{needle}: {errors:?}");
        }
        assert_eq!(errors.len(), 5, "{errors:?}");
        let errors =
            check_config(schema, &serde_json::json!({"hosts":[], "auth":"x"})).unwrap_err();
        assert!(errors.contains(&"config.hosts: must have at least 1 entries".to_string()));
        assert!(errors.contains(&"config.auth: expected object".to_string()));
    }
}
