//! `vigil plugin …`: tools for plugin authors that need no server.
//! `check` loads a component the way the host does and prints what it is;
//! `run` feeds it one input and prints the answer; `new` scaffolds an author
//! crate that builds as is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};

use super::bindings::types;
use super::engine::PluginEngine;
use super::manifest::PluginManifest;
use super::plugin::{Plugin, PluginKind};
use crate::bus::build_log_batch;
use crate::events::{parse_events, EventsError, StoredEvent};
use crate::metrics::model::{parse_report, MetricKind};
use crate::store::LogSample;

/// `vigil plugin` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a component as the host would and print its world, name, version and imports.
    Check(CheckArgs),
    /// Run a plugin once on an input file and print its answer (JSON).
    Run(RunArgs),
    /// Scaffold a plugin crate that builds as is.
    New(NewArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// A manifest whose `[config]` is checked and applied too.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// Input JSON: for a publisher a NoETL report or `{"samples":[{component,name,kind,value,labels}]}`;
    /// for a notifier a notification (`alerts[]` of `fingerprint, status, labels, annotations, starts_at, ends_at, value, generator_url`, plus `group_key`, `receiver`, …) or one alert; for a debug-fields provider an execution record.
    #[arg(long)]
    pub input: PathBuf,
    /// The plugin's manifest (capabilities and `[config]`).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum NewKind {
    Publisher,
    Notifier,
    DebugFields,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// Crate name (lower-case letters, digits, `-`).
    pub name: String,
    #[arg(long, value_enum)]
    pub kind: NewKind,
    /// Where to create the crate [default: ./NAME].
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Path to the `vigil-plugin` SDK crate [default: the SDK this vigil was built from].
    #[arg(long)]
    pub sdk_path: Option<PathBuf>,
}

/// Runs a `vigil plugin` subcommand; `Err` carries the message for stderr.
pub async fn run(command: PluginCommand) -> Result<(), String> {
    match command {
        PluginCommand::Check(args) => check(args).await,
        PluginCommand::Run(args) => run_once(args).await,
        PluginCommand::New(args) => scaffold(args),
    }
}

fn read_manifest(path: Option<&Path>) -> Result<PluginManifest, String> {
    match path {
        None => Ok(PluginManifest::default()),
        Some(p) => {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            PluginManifest::parse(&text, &p.display().to_string(), |k| std::env::var(k).ok())
                .map_err(|e| e.0)
        }
    }
}

async fn load(file: &Path, manifest: PluginManifest, configure: bool) -> Result<Plugin, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
    // One-shot runs want the code the server would run in steady state.
    let engine = Arc::new(PluginEngine::with_tiers(None, false).map_err(|e| e.0)?);
    let compiled = engine.compile(&bytes).map_err(|e| e.0)?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    Plugin::load_with(
        engine,
        &name,
        file.to_path_buf(),
        compiled,
        manifest,
        configure,
        None,
    )
    .await
}

async fn check(args: CheckArgs) -> Result<(), String> {
    let manifest = read_manifest(args.manifest.as_deref())?;
    let configure = args.manifest.is_some();
    let plugin = load(&args.file, manifest, configure).await?;
    println!(
        "world:       vigil:plugin/{}@{}",
        plugin.kind.as_str(),
        plugin.world_version
    );
    println!("name:        {}", plugin.description.name);
    println!("version:     {}", plugin.description.version);
    println!("description: {}", plugin.description.description);
    println!("sha256:      {}", plugin.sha256);
    println!("imports:");
    for import in &plugin.imports {
        println!("  {import}");
    }
    println!("config schema: {}", plugin.description.config_schema);
    if configure {
        println!("configuration: accepted");
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct InputSample {
    #[serde(default)]
    seq: Option<i64>,
    component: String,
    name: String,
    #[serde(default = "gauge")]
    kind: String,
    value: f64,
    #[serde(default)]
    timestamp_ms: Option<i64>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

fn gauge() -> String {
    "gauge".into()
}

fn input_samples(value: serde_json::Value) -> Result<Vec<LogSample>, String> {
    let now = chrono::Utc::now().timestamp_millis();
    if value.get("metrics").is_some() {
        let body = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        let report =
            parse_report(&body, usize::MAX, now, &|_| None).map_err(|e| format!("{e:?}"))?;
        return Ok(report
            .metrics
            .into_iter()
            .enumerate()
            .map(|(i, m)| LogSample {
                seq: i as i64 + 1,
                series_id: 0,
                ts_ms: m.ts_ms,
                value: m.value,
                component: report.component_name.clone(),
                metric_name: m.name,
                kind: m.kind,
                labels: m.labels_key,
            })
            .collect());
    }
    let samples: Vec<InputSample> =
        serde_json::from_value(match (value.get("samples"), value.get("events")) {
            (Some(samples), _) => samples.clone(),
            (None, Some(_)) => serde_json::Value::Array(Vec::new()),
            (None, None) => {
                return Err(
                    "input has neither `metrics` (a NoETL report) nor `samples` nor `events`"
                        .into(),
                )
            }
        })
        .map_err(|e| format!("input samples: {e}"))?;
    samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(LogSample {
                seq: s.seq.unwrap_or(i as i64 + 1),
                series_id: 0,
                ts_ms: s.timestamp_ms.unwrap_or(now),
                value: s.value,
                kind: MetricKind::parse(&s.kind).ok_or_else(|| {
                    format!("samples[{i}].kind: `{}` is not a metric type", s.kind)
                })?,
                component: s.component,
                metric_name: s.name,
                labels: serde_json::to_string(&s.labels).map_err(|e| e.to_string())?,
            })
        })
        .collect()
}

/// The input's `events` (in the `POST /api/v2/events` format), numbered
/// after the samples.
fn input_events(value: &serde_json::Value, first_seq: i64) -> Result<Vec<StoredEvent>, String> {
    let Some(events) = value.get("events") else {
        return Ok(Vec::new());
    };
    let now = chrono::Utc::now().timestamp_millis();
    let body = serde_json::to_vec(events).map_err(|e| e.to_string())?;
    let parsed = parse_events(&body, false, usize::MAX, now).map_err(|e| match e {
        EventsError::MalformedJson(m) => format!("input events: {m}"),
        EventsError::Invalid(items) => items
            .iter()
            .map(|i| match i.index {
                Some(n) => format!("events[{n}].{}: {}", i.field, i.reason),
                None => format!("events: {}", i.reason),
            })
            .collect::<Vec<_>>()
            .join("; "),
        EventsError::TooManyItems { count, .. } => format!("{count} events"),
    })?;
    Ok(parsed
        .events
        .into_iter()
        .enumerate()
        .map(|(i, e)| StoredEvent {
            seq: first_seq + i as i64,
            event_id: e.event_id,
            event_type: e.event_type,
            event_ts: e.event_ts,
            session_id: e.session_id,
            workflow_id: e.workflow_id,
            task_id: e.task_id,
            backend: e.backend,
            execution_id: e.execution_id,
            source_id: e.source_id,
            project_module: e.project_module,
            body: e.body,
            received_ms: now,
        })
        .collect())
}

fn pairs(value: Option<&serde_json::Value>) -> Vec<(String, String)> {
    value
        .and_then(|v| v.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_string),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn text(value: &serde_json::Value, key: &str) -> String {
    value
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

fn status(value: &serde_json::Value) -> types::AlertStatus {
    if text(value, "status") == "resolved" {
        types::AlertStatus::Resolved
    } else {
        types::AlertStatus::Firing
    }
}

/// A notification from `vigil plugin run`'s input: a group (`alerts[]` and
/// the group's fields, snake_case) or, without `alerts`, a group of the one
/// alert the input describes.
fn input_notification(input: &serde_json::Value) -> types::Notification {
    let alert = |a: &serde_json::Value| types::Alert {
        fingerprint: text(a, "fingerprint"),
        status: status(a),
        labels: pairs(a.get("labels")),
        annotations: pairs(a.get("annotations")),
        starts_at: a
            .get("starts_at")
            .and_then(|v| v.as_i64())
            .unwrap_or_default(),
        ends_at: a.get("ends_at").and_then(|v| v.as_i64()),
        value: a.get("value").and_then(|v| v.as_f64()),
        generator_url: text(a, "generator_url"),
    };
    let alerts: Vec<types::Alert> = match input.get("alerts").and_then(|v| v.as_array()) {
        Some(list) => list.iter().map(alert).collect(),
        None => vec![alert(input)],
    };
    types::Notification {
        group_key: text(input, "group_key"),
        status: if alerts
            .iter()
            .any(|a| matches!(a.status, types::AlertStatus::Firing))
        {
            types::AlertStatus::Firing
        } else {
            types::AlertStatus::Resolved
        },
        receiver: text(input, "receiver"),
        group_labels: pairs(input.get("group_labels")),
        common_labels: pairs(input.get("common_labels")),
        common_annotations: pairs(input.get("common_annotations")),
        external_url: text(input, "external_url"),
        alerts,
        truncated_alerts: 0,
    }
}

async fn run_once(args: RunArgs) -> Result<(), String> {
    let manifest = read_manifest(args.manifest.as_deref())?;
    let input: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&args.input)
            .map_err(|e| format!("reading {}: {e}", args.input.display()))?,
    )
    .map_err(|e| format!("{}: not JSON: {e}", args.input.display()))?;
    let plugin = load(&args.file, manifest, true).await?;
    let answer = match plugin.kind {
        PluginKind::Publisher => {
            let samples = input_samples(input.clone())?;
            let first_event = samples.iter().map(|s| s.seq).max().unwrap_or(0) + 1;
            let events = input_events(&input, first_event)?;
            let batch = build_log_batch(&samples, &events);
            match plugin.publish(&batch).await.map_err(|e| e.to_string())? {
                Ok(report) => serde_json::json!({
                    "accepted": batch.samples.seqs.len() + batch.events.len() - report.rejected.len(),
                    "rejected": report.rejected.iter().map(|r| serde_json::json!({"seq": r.seq, "reason": r.reason})).collect::<Vec<_>>(),
                }),
                Err(e) => delivery_error(e),
            }
        }
        PluginKind::Notifier => {
            let n = input_notification(&input);
            // A notifier without `[config]` loads as a channel template,
            // unconfigured; configure a copy as a channel would.
            let configured = plugin.with_config(plugin.manifest.config.clone()).await?;
            let outcome = configured.notify(&n).await.map_err(|e| e.to_string())?;
            let mut answer = match outcome.result {
                Ok(r) => serde_json::json!({"receipt": {"id": r.id, "detail": r.detail}}),
                Err(e) => delivery_error(e),
            };
            answer["response_status"] = serde_json::json!(outcome.response_status);
            answer
        }
        PluginKind::DebugFields => {
            let e = types::ExecutionRecord {
                id: text(&input, "id"),
                backend: text(&input, "backend"),
                status: text(&input, "status"),
                attributes: pairs(input.get("attributes")),
            };
            match plugin.fields(&e).await.map_err(|e| e.to_string())? {
                Ok(fields) => serde_json::json!({
                    "fields": fields.into_iter().map(|f| (f.name, serde_json::Value::String(f.value))).collect::<serde_json::Map<_, _>>()
                }),
                Err(message) => serde_json::json!({"error": message}),
            }
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&answer).unwrap_or_default()
    );
    Ok(())
}

fn delivery_error(e: types::DeliveryError) -> serde_json::Value {
    match e {
        types::DeliveryError::Retryable(r) => {
            serde_json::json!({"error": {"retryable": true, "message": r.message, "retry_after_ms": r.retry_after_ms}})
        }
        types::DeliveryError::Permanent(m) => {
            serde_json::json!({"error": {"retryable": false, "message": m}})
        }
    }
}

fn scaffold(args: NewArgs) -> Result<(), String> {
    let name = args.name.as_str();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || name.starts_with('-')
    {
        return Err(format!(
            "`{name}` is not a crate name for a plugin (lower-case letters, digits and -)"
        ));
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let sdk = match &args.sdk_path {
        Some(p) => p.clone(),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk")),
    };
    let sdk = sdk
        .canonicalize()
        .map_err(|e| format!("SDK not found at {} ({e}); pass --sdk-path", sdk.display()))?;
    let files = super::scaffold::files(name, args.kind, &sdk);
    for (path, content) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, content).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    println!("created {} ({:?} plugin)", dir.display(), args.kind);
    println!(
        "build:   cd {} && cargo build --target wasm32-wasip2 --release",
        dir.display()
    );
    println!(
        "install: copy target/wasm32-wasip2/release/{}.wasm into the plugin directory",
        name.replace('-', "_")
    );
    Ok(())
}
