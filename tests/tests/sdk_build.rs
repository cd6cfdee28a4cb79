//! Plugin authors' two build paths work on a scaffold from `vigil plugin new`:
//! `cargo build --target wasm32-wasip2` and `cargo component build`, and the
//! host loads what they produce (`vigil plugin check`, `vigil plugin run`).

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_tests::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Builds in a shared target directory so repeated runs are incremental.
fn scaffold_target() -> PathBuf {
    repo().join("target/scaffold")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn scaffold(kind: &str) -> (PathBuf, String) {
    let name = format!("scaffold-{kind}");
    let dir =
        std::env::temp_dir().join(format!("vigil-{}-{}", name, uuid::Uuid::new_v4().simple()));
    run(Command::new(vigil_binary()).args([
        "plugin",
        "new",
        &name,
        "--kind",
        kind,
        "--dir",
        dir.to_str().expect("utf-8 path"),
        "--sdk-path",
        repo().join("plugins/sdk").to_str().expect("utf-8 path"),
    ]));
    (dir, name)
}

fn check(wasm: &Path, kind: &str) {
    let text =
        run(Command::new(vigil_binary()).args(["plugin", "check", wasm.to_str().expect("utf-8")]));
    assert!(
        text.contains(&format!("world:       vigil:plugin/{kind}@0.2.0")),
        "{text}"
    );
    assert!(text.contains("name:        scaffold-"), "{text}");
}

#[test]
fn scaffolds_of_every_kind_build_for_wasm32_wasip2_and_load() {
    for kind in ["publisher", "notifier", "debug-fields"] {
        let (dir, name) = scaffold(kind);
        run(Command::new(cargo())
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", scaffold_target())
            .current_dir(&dir));
        let wasm = scaffold_target()
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        check(&wasm, kind);
        if kind == "publisher" {
            let input = dir.join("input.json");
            std::fs::write(
                &input,
                r#"{"component_name":"w1","metrics":[{"metric_name":"a","metric_type":"gauge","metric_value":1}]}"#,
            )
            .expect("input");
            let out = run(Command::new(vigil_binary()).args([
                "plugin",
                "run",
                wasm.to_str().expect("utf-8"),
                "--input",
                input.to_str().expect("utf-8"),
            ]));
            assert!(out.contains("\"accepted\": 1"), "{out}");
            // Samples and events together, in the POST /api/v2/events format.
            std::fs::write(
                &input,
                r#"{"samples":[{"component":"w1","name":"a","value":1}],
                    "events":[{"event_type":"TaskCreated","task_id":"t1"},
                              {"event_type":"asyncflow.TaskResolved","task_id":"t1"}]}"#,
            )
            .expect("input");
            let run_input = || {
                Command::new(vigil_binary())
                    .args([
                        "plugin",
                        "run",
                        wasm.to_str().expect("utf-8"),
                        "--input",
                        input.to_str().expect("utf-8"),
                    ])
                    .output()
                    .expect("run vigil plugin run")
            };
            let out = run_input();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            assert!(text.contains("\"accepted\": 3"), "{text}");
            // A bad event is named, and nothing is published.
            std::fs::write(
                &input,
                r#"{"events":[{"event_type":"TaskCreated"},{"event_type":"Checkpoint"}]}"#,
            )
            .expect("input");
            let out = run_input();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "a bad event was accepted: {err}");
            assert!(err.contains("events[1].event_type"), "{err}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}

#[test]
fn a_scaffold_builds_with_cargo_component() {
    let has_component = Command::new(cargo())
        .args(["component", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_component {
        skip_or_fail(
            "cargo-component: install it with `cargo install cargo-component --locked --version 0.21.1`",
            "cargo-component required but not installed",
        );
        return;
    }
    let (dir, name) = scaffold("publisher");
    run(Command::new(cargo())
        .args(["component", "build", "--release"])
        .env("CARGO_TARGET_DIR", scaffold_target())
        .current_dir(&dir));
    // cargo-component builds for wasm32-wasip1 and adapts to a component.
    let wasm = scaffold_target()
        .join("wasm32-wasip1/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    check(&wasm, "publisher");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn plugin_check_refuses_what_is_not_a_plugin_component() {
    let junk =
        std::env::temp_dir().join(format!("vigil-junk-{}.wasm", uuid::Uuid::new_v4().simple()));
    std::fs::write(&junk, b"definitely not wasm").expect("write");
    let out = Command::new(vigil_binary())
        .args(["plugin", "check", junk.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a WebAssembly file"), "{err}");
    std::fs::remove_file(&junk).expect("cleanup");
    let missing = Command::new(vigil_binary())
        .args(["plugin", "check", "/nonexistent/x.wasm"])
        .output()
        .expect("run");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("reading /nonexistent/x.wasm"));
}
