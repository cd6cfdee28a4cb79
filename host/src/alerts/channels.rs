//! Notification channels: a name, a notifier plugin and its settings for this
//! channel. The settings are checked against the plugin's JSON Schema; the
//! properties the schema marks `"writeOnly": true` are secrets, kept apart
//! (`secrets`), never returned and never logged — an update that leaves one
//! out keeps it. Each channel runs its own configured copy of the plugin
//! ([`ChannelNotifiers`]), with the capabilities the plugin's manifest grants.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::metrics::model::ItemError;
use crate::plugins::manifest::{check_config, ConfigValue};
use crate::plugins::{Plugin, PluginKind, PluginRegistry};
use crate::store::ChannelRow;

/// Longest channel name.
const MAX_NAME: usize = 128;
/// Largest channel config, serialised.
const MAX_CONFIG_BYTES: usize = 64 * 1024;

fn invalid(field: &str, reason: impl Into<String>) -> ItemError {
    ItemError::top(field, reason)
}

/// Why a channel body was refused.
#[derive(Debug)]
pub enum ChannelError {
    Malformed(String),
    Invalid(Vec<ItemError>),
}

/// A create or update body, parsed (fields not given are `None`).
#[derive(Debug, Default)]
pub struct ChannelInput {
    pub name: Option<String>,
    pub plugin: Option<String>,
    /// Merged into the stored settings; a `null` member removes that key.
    pub config: Option<Map<String, Value>>,
    pub send_resolved: Option<bool>,
    pub enabled: Option<bool>,
}

/// Parses a channel body; `create` requires `name` and `plugin`.
pub fn parse_input(body: &[u8], create: bool) -> Result<ChannelInput, ChannelError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ChannelError::Malformed(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(ChannelError::Invalid(vec![invalid(
            "body",
            "must be a JSON object",
        )]));
    };
    let mut input = ChannelInput::default();
    let mut errors = Vec::new();
    for (key, v) in map {
        match (key.as_str(), v) {
            ("name", Value::String(s)) => input.name = Some(s),
            ("plugin", Value::String(s)) => input.plugin = Some(s),
            ("config", Value::Object(o)) => input.config = Some(o),
            ("send_resolved", Value::Bool(b)) => input.send_resolved = Some(b),
            ("enabled", Value::Bool(b)) => input.enabled = Some(b),
            ("name" | "plugin", _) => errors.push(invalid(&key, "must be a string")),
            ("config", _) => errors.push(invalid(&key, "must be an object")),
            ("send_resolved" | "enabled", _) => errors.push(invalid(&key, "must be true or false")),
            ("id" | "created_at" | "updated_at" | "secrets", _) => {
                errors.push(invalid(&key, "is set by the server"))
            }
            (other, _) => errors.push(invalid(
                other,
                "unknown field; use name, plugin, config, send_resolved, enabled",
            )),
        }
    }
    if let Some(name) = &input.name {
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            errors.push(invalid(
                "name",
                format!("1 to {MAX_NAME} characters of A-Z, a-z, 0-9, -, _ and ."),
            ));
        }
    }
    if create {
        for (field, missing) in [
            ("name", input.name.is_none()),
            ("plugin", input.plugin.is_none()),
        ] {
            if missing && !errors.iter().any(|e| e.field == field) {
                errors.push(invalid(field, "required"));
            }
        }
    }
    if errors.is_empty() {
        Ok(input)
    } else {
        Err(ChannelError::Invalid(errors))
    }
}

/// The names of the properties a JSON Schema marks `writeOnly`.
pub fn secret_fields(schema: &str) -> Vec<String> {
    serde_json::from_str::<Value>(schema)
        .ok()
        .and_then(|s| s.get("properties").and_then(Value::as_object).cloned())
        .map(|props| {
            props
                .into_iter()
                .filter(|(_, p)| p.get("writeOnly") == Some(&Value::Bool(true)))
                .map(|(k, _)| k)
                .collect()
        })
        .unwrap_or_default()
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Applies `input` to `current` (None: a new channel) and checks the result
/// against the named plugin; returns the row to store.
pub fn apply(
    registry: &PluginRegistry,
    current: Option<&ChannelRow>,
    input: ChannelInput,
    id: String,
    now_ms: i64,
) -> Result<ChannelRow, ChannelError> {
    let plugin_name = input
        .plugin
        .clone()
        .or_else(|| current.map(|c| c.plugin.clone()))
        .unwrap_or_default();
    let plugin = notifier_plugin(registry, &plugin_name)
        .map_err(|reason| ChannelError::Invalid(vec![invalid("plugin", reason)]))?;
    let schema = &plugin.description.config_schema;
    let secret_names = secret_fields(schema);
    // Start from the stored settings unless the plugin changes: a different
    // plugin starts from nothing (its settings mean something else).
    let same_plugin = current.is_some_and(|c| c.plugin == plugin_name);
    let mut merged = match current {
        Some(c) if same_plugin => {
            let mut m = object(&c.config);
            m.extend(object(&c.secrets));
            m
        }
        _ => Map::new(),
    };
    for (k, v) in input.config.unwrap_or_default() {
        if v.is_null() {
            merged.remove(&k);
        } else {
            merged.insert(k, v);
        }
    }
    let merged = Value::Object(merged);
    if merged.to_string().len() > MAX_CONFIG_BYTES {
        return Err(ChannelError::Invalid(vec![invalid(
            "config",
            format!("larger than {MAX_CONFIG_BYTES} bytes"),
        )]));
    }
    if let Err(problems) = check_config(schema, &merged) {
        return Err(ChannelError::Invalid(
            problems
                .into_iter()
                .map(|p| match p.split_once(": ") {
                    Some((field, reason)) if field.starts_with("config.") => {
                        invalid(field, reason.to_string())
                    }
                    _ => invalid("config", p),
                })
                .collect(),
        ));
    }
    let (mut public, mut secrets) = (Map::new(), Map::new());
    if let Value::Object(m) = merged {
        for (k, v) in m {
            if secret_names.contains(&k) {
                secrets.insert(k, v);
            } else {
                public.insert(k, v);
            }
        }
    }
    Ok(ChannelRow {
        id,
        name: input
            .name
            .or_else(|| current.map(|c| c.name.clone()))
            .unwrap_or_default(),
        plugin: plugin_name,
        config: Value::Object(public).to_string(),
        secrets: Value::Object(secrets).to_string(),
        send_resolved: input
            .send_resolved
            .or(current.map(|c| c.send_resolved))
            .unwrap_or(true),
        enabled: input.enabled.or(current.map(|c| c.enabled)).unwrap_or(true),
        created_ms: current.map_or(now_ms, |c| c.created_ms),
        updated_ms: now_ms,
    })
}

/// The loaded notifier plugin named `name`, or why it cannot serve a channel.
pub fn notifier_plugin(registry: &PluginRegistry, name: &str) -> Result<Arc<Plugin>, String> {
    let plugin = registry.get(name).ok_or_else(|| {
        let notifiers: Vec<String> = registry
            .running()
            .into_iter()
            .filter(|p| p.kind == PluginKind::Notifier)
            .map(|p| p.name.clone())
            .collect();
        format!(
            "no notifier plugin `{}` is loaded (loaded notifiers: {})",
            name.escape_debug(),
            if notifiers.is_empty() {
                "none".to_string()
            } else {
                notifiers.join(", ")
            }
        )
    })?;
    if plugin.kind != PluginKind::Notifier {
        return Err(format!(
            "plugin `{name}` is a {}, not a notifier",
            plugin.kind.as_str()
        ));
    }
    Ok(plugin)
}

/// A channel as the API shows it: settings without secrets, and the names of
/// the secrets that are set.
pub fn to_json(row: &ChannelRow) -> Value {
    let secrets: Vec<String> = object(&row.secrets).keys().cloned().collect();
    serde_json::json!({
        "id": row.id,
        "name": row.name,
        "plugin": row.plugin,
        "config": Value::Object(object(&row.config)),
        "secrets_set": secrets,
        "send_resolved": row.send_resolved,
        "enabled": row.enabled,
        "created_at": crate::alerts::rfc3339(row.created_ms),
        "updated_at": crate::alerts::rfc3339(row.updated_ms),
    })
}

/// The settings a channel's plugin copy is configured with (secrets included).
fn plugin_config(row: &ChannelRow) -> BTreeMap<String, ConfigValue> {
    let mut out = BTreeMap::new();
    for (k, v) in object(&row.config) {
        out.insert(
            k,
            ConfigValue {
                value: v,
                secret: false,
            },
        );
    }
    for (k, v) in object(&row.secrets) {
        out.insert(
            k,
            ConfigValue {
                value: v,
                secret: true,
            },
        );
    }
    out
}

/// A channel's configured notifier: made for the channel as of
/// `updated_ms`, from the plugin whose file hashed to `sha256`.
struct Copy {
    updated_ms: i64,
    sha256: String,
    plugin: Arc<Plugin>,
}

/// One configured copy of its notifier per channel, re-made when the channel
/// or the plugin changes.
#[derive(Default)]
pub struct ChannelNotifiers {
    copies: tokio::sync::Mutex<HashMap<String, Copy>>,
}

impl ChannelNotifiers {
    /// The channel's notifier, configured with its settings.
    pub async fn get(
        &self,
        registry: &PluginRegistry,
        row: &ChannelRow,
    ) -> Result<Arc<Plugin>, String> {
        let plugin = notifier_plugin(registry, &row.plugin)?;
        let mut copies = self.copies.lock().await;
        if let Some(copy) = copies.get(&row.id) {
            if copy.updated_ms == row.updated_ms && copy.sha256 == plugin.sha256 {
                return Ok(copy.plugin.clone());
            }
        }
        let configured = Arc::new(plugin.with_config(plugin_config(row)).await?);
        copies.insert(
            row.id.clone(),
            Copy {
                updated_ms: row.updated_ms,
                sha256: plugin.sha256.clone(),
                plugin: configured.clone(),
            },
        );
        Ok(configured)
    }

    /// Forgets a deleted channel's copy.
    pub async fn forget(&self, id: &str) {
        self.copies.lock().await.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_field_by_field() {
        let ok = parse_input(
            br#"{"name":"ops","plugin":"webhook","config":{"url":"http://x"}}"#,
            true,
        )
        .expect("valid");
        assert_eq!(ok.name.as_deref(), Some("ops"));
        let Err(ChannelError::Invalid(errors)) = parse_input(
            br#"{"name":"bad name","enabled":"yes","id":"x","colour":1}"#,
            true,
        ) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["enabled", "id", "colour", "name", "plugin"]);
        assert!(matches!(
            parse_input(b"[", true),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            parse_input(b"[]", false),
            Err(ChannelError::Invalid(_))
        ));
    }

    #[test]
    fn write_only_properties_are_secrets() {
        let schema = r#"{"properties":{"url":{"type":"string"},"token":{"type":"string","writeOnly":true}}}"#;
        assert_eq!(secret_fields(schema), vec!["token".to_string()]);
        assert!(secret_fields("not json").is_empty());
    }
}
