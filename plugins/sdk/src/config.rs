//! [`Config`]: the plugin's configuration as `configure` receives it.
//!
//! The host flattens the manifest's `[config]` table to string pairs and resolves
//! `${ENV}` secrets before the call; this module only reads those pairs. It does
//! not validate against the plugin's JSON Schema (the host may).

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
}
