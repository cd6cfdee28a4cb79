//! [`Config`]: the plugin's configuration as `configure` receives it.
//!
//! The host flattens the manifest's `[config]` table to string pairs and resolves
//! `${ENV}` secrets before the call; this module only reads those pairs. Strings
//! arrive as they are; numbers, booleans, arrays and nested tables arrive as JSON
//! text (`hosts = ["http://a:9200", "http://b:9200"]` →
//! `["http://a:9200","http://b:9200"]`), read with [`Config::list`] and
//! [`Config::json`]. The host checks every value against the plugin's JSON
//! Schema before `configure`.

use std::fmt;
use std::str::FromStr;

/// The manifest's `[config]` table, flattened to `key = "value"` strings.
///
/// ```
/// use vigil_plugin::Config;
///
/// let config = Config::from_pairs([("url", "http://127.0.0.1:9200"), ("timeout_ms", "500")]);
/// assert_eq!(config.get("url"), Some("http://127.0.0.1:9200"));
/// assert_eq!(config.parse::<u64>("timeout_ms"), Ok(Some(500)));
/// assert!(config.require("api_key").is_err());
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// A configuration from `(key, value)` pairs; a later duplicate key wins.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Config
    where
        K: Into<String>,
        V: Into<String>,
    {
        Config {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key`; an error naming the key when it is missing or empty.
    pub fn require(&self, key: &str) -> Result<String, String> {
        match self.get(key) {
            Some(v) if !v.trim().is_empty() => Ok(v.to_string()),
            Some(_) => Err(format!("config key `{key}` is empty")),
            None => Err(format!(
                "missing required config key `{key}` (set it in the plugin's [config] table)"
            )),
        }
    }

    /// The value of `key` parsed as `T`: `Ok(None)` when it is not set, an error
    /// naming the key and the value when it does not parse.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map(Some)
                .map_err(|e| format!("config key `{key}` = {raw:?} is invalid: {e}")),
        }
    }

    /// Like [`Config::parse`], with `default` when the key is not set.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, String>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.parse(key)?.unwrap_or(default))
    }

    /// The value of `key` as a list of strings: a manifest array of strings
    /// (JSON text), or one plain string as a list of one. Empty when not set;
    /// an error naming the key for anything else (an array of numbers, a table,
    /// an empty string).
    pub fn list(&self, key: &str) -> Result<Vec<String>, String> {
        let Some(raw) = self.get(key) else {
            return Ok(Vec::new());
        };
        if raw.trim_start().starts_with('[') {
            return serde_json::from_str::<Vec<String>>(raw)
                .map_err(|e| format!("config key `{key}` must be a list of strings: {e}"));
        }
        if raw.trim().is_empty() {
            return Err(format!("config key `{key}` is empty"));
        }
        Ok(vec![raw.to_string()])
    }

    /// The value of `key` (a manifest table, array, number or boolean, which
    /// arrive as JSON text) deserialised as `T`: `Ok(None)` when not set, an
    /// error naming the key when it does not fit.
    pub fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(raw) => serde_json::from_str(raw)
                .map(Some)
                .map_err(|e| format!("config key `{key}` is invalid: {e}")),
        }
    }

    /// Every `(key, value)` pair, in the order the host gave them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the host passed no configuration at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Values are hidden: configuration holds secrets.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.iter().map(|(k, _)| (k, "<redacted>")))
            .finish()
    }
}

impl From<Vec<crate::bindings::publisher::ConfigEntry>> for Config {
    fn from(entries: Vec<crate::bindings::publisher::ConfigEntry>) -> Config {
        Config {
            entries: entries.into_iter().map(|e| (e.key, e.value)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_names_the_missing_key() {
        let config = Config::from_pairs([("url", "http://x"), ("empty", " ")]);
        assert_eq!(config.require("url"), Ok("http://x".to_string()));
        let missing = config.require("api_key").unwrap_err();
        assert!(missing.contains("`api_key`"), "{missing}");
        assert!(config.require("empty").unwrap_err().contains("empty"));
    }

    #[test]
    fn parse_distinguishes_absent_from_invalid() {
        let config = Config::from_pairs([("n", " 42 "), ("bad", "4x2")]);
        assert_eq!(config.parse::<u32>("n"), Ok(Some(42)));
        assert_eq!(config.parse::<u32>("absent"), Ok(None));
        assert_eq!(config.parse_or::<u32>("absent", 7), Ok(7));
        let err = config.parse::<u32>("bad").unwrap_err();
        assert!(err.contains("`bad`") && err.contains("\"4x2\""), "{err}");
    }

    #[test]
    fn later_duplicates_win_and_debug_hides_values() {
        let config = Config::from_pairs([("k", "1"), ("k", "2"), ("token", "s3cret")]);
        assert_eq!(config.get("k"), Some("2"));
        assert_eq!(config.len(), 3);
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("token"),
            "{shown}"
        );
    }

    #[test]
    fn lists_and_tables_arrive_as_json() {
        let config = Config::from_pairs([
            ("hosts", r#"["http://a:9200","http://b:9200"]"#),
            ("one", "http://c:9200"),
            ("nums", "[1,2]"),
            ("empty", ""),
            ("auth", r#"{"user":"u","retries":3}"#),
        ]);
        assert_eq!(
            config.list("hosts"),
            Ok(vec![
                "http://a:9200".to_string(),
                "http://b:9200".to_string()
            ])
        );
        assert_eq!(config.list("one"), Ok(vec!["http://c:9200".to_string()]));
        assert_eq!(config.list("absent"), Ok(Vec::new()));
        assert!(config.list("nums").unwrap_err().contains("`nums`"));
        assert!(config.list("empty").unwrap_err().contains("empty"));
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Auth {
            user: String,
            retries: u32,
        }
        assert_eq!(
            config.json::<Auth>("auth"),
            Ok(Some(Auth {
                user: "u".into(),
                retries: 3
            }))
        );
        assert!(config.json::<Auth>("one").unwrap_err().contains("`one`"));
        assert_eq!(config.json::<Auth>("absent"), Ok(None));
    }
}
