//! The WebAssembly plugins of `plugins/` (first-party plugins and hostile test
//! fixtures), built for tests.
//!
//! [`plugin_wasm`] runs `cargo build --target wasm32-wasip2 --release` in the
//! `plugins/` workspace once per test process (incremental: a no-op build takes
//! well under a second) and returns the path of one component. The build goes
//! to `<target>/wasm`, where `<target>` is `$CARGO_TARGET_DIR` or the
//! repository's `target/`, so it never disturbs the host's own build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Rust target the plugins are built for.
pub const PLUGIN_TARGET: &str = "wasm32-wasip2";

/// Every crate of the plugins workspace: first-party plugins, then fixtures.
///
/// - `noop-publisher`: accepts everything after reading every sample (benchmarks).
/// - `webhook-publisher`: POSTs batches as JSON to config `url`.
/// - `webhook-notifier`: notifier; POSTs Alertmanager's webhook payload (v4) to `url`.
/// - `elasticsearch`: `_bulk` creates with ids from seqs to config `hosts`
///   (strict receiver: [`crate::ElasticsearchReceiver`]).
/// - `grafana-cloud`: Prometheus remote-write 1.0 of counters and gauges to
///   config `endpoint` (tested against a real Prometheus).
/// - `dim`: debug-fields world, backend `dim`: `dim_session_status_url`,
///   `dim_graph_status_url` (table in `plugins/dim/tests/cases.json`).
/// - `slurm`: debug-fields world, backend `slurm`: `slurm_session_dir`,
///   `slurm_login_node`, `slurm_remote_user` (table in `plugins/slurm/tests/cases.json`).
/// - `echo-debug-fields`: debug-fields world; backend `echo`, field `echo_id`.
/// - `echo-notifier`: notifier world of `vigil:plugin@0.1.0` (built from
///   `wit/0.1.0` without the SDK); receipt id = alert id, detail `<rule> <status>`;
///   config `fail = "permanent"` refuses every alert.
/// - `file-reader`: publish fails permanently with the error of reading /etc/passwd.
/// - `flaky-publisher`: publish panics for the first `fail_first` calls of an
///   instance, or until the wall clock passes `fail_until_ms`.
/// - `garbage-debug-fields`, `hang-debug-fields`, `trap-debug-fields`:
///   debug-field providers for `dim`, `slurm` and `hostile` whose `fields`
///   returns rule-breaking fields (kind chosen by the execution attribute
///   `garbage`: too_many, huge, bad_name, control, duplicate, error) / never
///   returns / panics.
/// - `forbidden-host`: publish POSTs to http://203.0.113.7:9/ and fails
///   permanently with the host's denial (`HttpRequestDenied`).
/// - `large-publisher`: accepts everything; about 2 MB of generated code (reload benchmarks).
/// - `infinite-loop`, `memory-bomb`, `panic-publisher`, `stack-overflow`: publish
///   never returns / exhausts memory / panics / exhausts the stack.
/// - `big-alloc`: publish makes one allocation of config `bytes` (2 GiB).
/// - `lying-publisher`: publish's report rejects a seq not in the batch, the
///   same seq twice, or more items than the batch holds (config `lie`).
/// - `oversized-result`: publish rejects `count` (2,000,000) items with
///   `reason_bytes` (1 KiB) reasons, or as many as fit in memory.
pub fn all_plugin_names() -> &'static [&'static str] {
    &[
        "noop-publisher",
        "webhook-publisher",
        "webhook-notifier",
        "elasticsearch",
        "grafana-cloud",
        "big-alloc",
        "dim",
        "slurm",
        "echo-debug-fields",
        "echo-notifier",
        "file-reader",
        "flaky-publisher",
        "forbidden-host",
        "garbage-debug-fields",
        "hang-debug-fields",
        "infinite-loop",
        "large-publisher",
        "lying-publisher",
        "memory-bomb",
        "oversized-result",
        "panic-publisher",
        "stack-overflow",
        "trap-debug-fields",
    ]
}

/// The `plugins/` workspace directory.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .join("plugins")
}

/// Path of the built component of plugin crate `name` (e.g. `"webhook-publisher"`
/// → `.../wasm32-wasip2/release/webhook_publisher.wasm`). Builds the plugins
/// workspace on first use; panics with cargo's output when the build fails or
/// `name` is not one of [`all_plugin_names`].
pub fn plugin_wasm(name: &str) -> PathBuf {
    let out_dir = match built_plugins() {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = out_dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "no component for plugin {name:?} at {} (known plugins: {:?})",
        path.display(),
        all_plugin_names()
    );
    path
}

/// Builds the workspace once; the directory holding the `.wasm` files, or why
/// the build failed (remembered, so every test reports it without rebuilding).
fn built_plugins() -> &'static Result<PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => PathBuf::from(dir).join("wasm"),
            None => plugins_dir()
                .parent()
                .expect("repository root")
                .join("target")
                .join("wasm"),
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut cmd = Command::new(&cargo);
        cmd.args([
            "build",
            "--release",
            "--target",
            PLUGIN_TARGET,
            "--target-dir",
        ])
        .arg(&target_dir)
        .current_dir(plugins_dir());
        eprintln!("[harness] building plugins: {cmd:?}");
        let out = cmd
            .output()
            .map_err(|e| format!("could not run {cargo}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building the plugins failed ({}); is the {PLUGIN_TARGET} target installed \
                 (`rustup target add {PLUGIN_TARGET}`)?\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(target_dir.join(PLUGIN_TARGET).join("release"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `\0asm`, then version 0x0d and layer 1: a component, not a core module.
    const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

    #[test]
    fn every_plugin_builds_into_a_component() {
        for name in all_plugin_names() {
            let path = plugin_wasm(name);
            let bytes = std::fs::read(&path).expect("read component");
            assert_eq!(
                bytes.get(..8),
                Some(&COMPONENT_PREAMBLE[..]),
                "{} is not a component",
                path.display()
            );
        }
    }
}
