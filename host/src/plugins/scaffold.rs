//! The files `vigil plugin new` writes: a `cdylib` crate against the SDK, one
//! struct and one trait impl per kind, and a sample manifest.

use std::path::{Path, PathBuf};

use super::cli::NewKind;

fn struct_name(name: &str) -> String {
    name.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// `(relative path, content)` of every file of a new plugin crate.
pub fn files(name: &str, kind: NewKind, sdk: &Path) -> Vec<(PathBuf, String)> {
    let ty = struct_name(name);
    let ty = if ty.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        format!("Plugin{ty}")
    } else {
        ty
    };
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
description = "A Vigil plugin"

[lib]
crate-type = ["cdylib"]

[dependencies]
vigil-plugin = {{ path = "{sdk}" }}

[package.metadata.component]
package = "vigil:{name}"

[profile.release]
opt-level = "s"
panic = "abort"
strip = "debuginfo"

# A workspace of its own, so it builds wherever it is created.
[workspace]
"#,
        sdk = sdk.display()
    );
    let lib = match kind {
        NewKind::Publisher => format!(
            r#"//! A Vigil publisher: receives batches of samples and events.

use vigil_plugin::publisher::{{Batch, Config, PublishError, PublishReport, Publisher}};

struct {ty} {{
    prefix: String,
}}

impl Publisher for {ty} {{
    fn configure(config: &Config) -> Result<Self, String> {{
        Ok({ty} {{
            prefix: config.get("prefix").unwrap_or("vigil").to_string(),
        }})
    }}

    fn publish(&mut self, batch: &Batch) -> Result<PublishReport, PublishError> {{
        for sample in batch.samples() {{
            vigil_plugin::debug!("sample", prefix = self.prefix, name = sample.name(), value = sample.value());
        }}
        Ok(PublishReport::all_accepted())
    }}
}}

vigil_plugin::export_publisher!({ty});
"#
        ),
        NewKind::Notifier => format!(
            r#"//! A Vigil notifier: delivers notifications (groups of alerts) to a channel.

use vigil_plugin::notifier::{{Config, Notification, Notifier, NotifyError, Receipt}};

struct {ty} {{
    channel: String,
}}

impl Notifier for {ty} {{
    fn configure(config: &Config) -> Result<Self, String> {{
        Ok({ty} {{
            channel: config.get("channel").unwrap_or("default").to_string(),
        }})
    }}

    fn notify(&mut self, notification: &Notification) -> Result<Receipt, NotifyError> {{
        vigil_plugin::info!(
            "notification",
            channel = self.channel,
            group = notification.group_key,
            alerts = notification.alerts.len()
        );
        Ok(Receipt::new("logged").with_id(notification.group_key.clone()))
    }}
}}

vigil_plugin::export_notifier!({ty});
"#
        ),
        NewKind::DebugFields => format!(
            r#"//! A Vigil debug-field provider: adds fields to execution records.

use vigil_plugin::debug_fields::{{Config, DebugFields, Execution}};

struct {ty};

impl DebugFields for {ty} {{
    fn configure(_config: &Config) -> Result<Self, String> {{
        Ok({ty})
    }}

    fn backends() -> Vec<String> {{
        vec!["example".to_string()]
    }}

    fn fields(&mut self, execution: &Execution) -> Result<Vec<(String, String)>, String> {{
        Ok(vec![("example_status".to_string(), execution.status.clone())])
    }}
}}

vigil_plugin::export_debug_fields!({ty});
"#
        ),
    };
    let manifest = format!(
        r#"# Copy next to {file}.wasm in the plugin directory as {file}.toml.
[capabilities]
allowed_hosts = []
memory_mb = 64
call_timeout_ms = 5000

[config]
"#,
        file = name
    );
    vec![
        (PathBuf::from("Cargo.toml"), cargo),
        (PathBuf::from("src/lib.rs"), lib),
        (PathBuf::from(format!("{name}.toml")), manifest),
        (
            PathBuf::from(".gitignore"),
            "/target\nCargo.lock\n".to_string(),
        ),
    ]
}
