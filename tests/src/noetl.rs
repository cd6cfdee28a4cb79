//! The requests NoETL's workers and servers send, field for field as its
//! code builds them at v0.2.0 (commit c76c69c1: `noetl/worker/worker.py`,
//! `noetl/api/routers/{metrics,runtime}.py`) and v1.0.0 (commit 54b0ba76:
//! `noetl/worker/worker.py`, `noetl/server/app.py`,
//! `noetl/server/api/{metrics,runtime}/`). Only the values differ (what psutil
//! would have measured); keys, types, optional and absent fields are theirs.

use serde_json::{json, Value};

/// Which NoETL release builds the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoetlRelease {
    V0_2_0,
    V1_0_0,
}

/// `datetime.datetime.now().isoformat()`: local time, microseconds, no
/// offset (the test machine runs on UTC, as NoETL's containers do).
pub fn python_isoformat_now() -> String {
    chrono::Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// `str(datetime.now(timezone.utc))`: a space instead of the `T`.
pub fn python_str_now_utc() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%d %H:%M:%S%.6f+00:00")
        .to_string()
}

/// The body of `register_worker_pool_from_env()`: v0.2.0 sends the
/// address as `base_url` (default `http://queue-worker`) and labels as the
/// CSV list of `NOETL_WORKER_LABELS`; v1.0.0 sends `uri` (`local://host` or
/// `k8s://namespace/host`).
pub fn worker_pool_registration(
    release: NoetlRelease,
    name: &str,
    runtime: &str,
    capacity: Option<i64>,
    labels: Option<Vec<&str>>,
    hostname: &str,
) -> Value {
    let mut body = json!({
        "name": name,
        "runtime": runtime,
        "status": "ready",
        "capacity": capacity,
        "labels": labels,
        "pid": 4242,
        "hostname": hostname,
    });
    match release {
        NoetlRelease::V0_2_0 => body["base_url"] = json!("http://queue-worker"),
        NoetlRelease::V1_0_0 => body["uri"] = json!(format!("k8s://noetl/{hostname}")),
    }
    body
}

/// The body of `register_server_from_env()` (both releases).
pub fn server_registration(name: &str, server_url: &str, hostname: &str) -> Value {
    json!({
        "name": name,
        "component_type": "server_api",
        "runtime": "server",
        "base_url": server_url,
        "status": "ready",
        "capacity": null,
        "labels": null,
        "pid": 4343,
        "hostname": hostname,
    })
}

/// The heartbeat loop's body (both releases).
pub fn heartbeat(name: &str) -> Value {
    json!({"name": name})
}

fn item(
    release: NoetlRelease,
    name: &str,
    value: Value,
    help: &str,
    unit: &str,
    labels: &Value,
) -> Value {
    let mut m = json!({
        "metric_name": name,
        "metric_type": "gauge",
        "metric_value": value,
        "labels": labels,
        "help_text": help,
        "unit": unit,
    });
    // v1.0.0 workers dropped the timestamp; v0.2.0 sends naive isoformat.
    if release == NoetlRelease::V0_2_0 {
        m["timestamp"] = json!(python_isoformat_now());
    }
    m
}

/// `ScalableQueueWorkerPool._report_worker_metrics`: five system gauges
/// and three pool gauges, as `component_type: worker_pool`.
pub fn worker_pool_report(
    release: NoetlRelease,
    name: &str,
    worker_id: &str,
    hostname: &str,
) -> Value {
    let labels = json!({"component": name, "worker_id": worker_id, "hostname": hostname});
    let metrics = [
        (
            "noetl_system_cpu_usage_percent",
            json!(12.5),
            "CPU usage percentage",
            "percent",
        ),
        (
            "noetl_system_memory_usage_bytes",
            json!(3_221_225_472_u64),
            "Memory usage in bytes",
            "bytes",
        ),
        (
            "noetl_system_memory_usage_percent",
            json!(41.7),
            "Memory usage percentage",
            "percent",
        ),
        (
            "noetl_process_cpu_percent",
            json!(0.0),
            "Process CPU usage percentage",
            "percent",
        ),
        (
            "noetl_process_memory_rss_bytes",
            json!(88_342_528_u64),
            "Process RSS memory in bytes",
            "bytes",
        ),
        (
            "noetl_worker_active_tasks",
            json!(2),
            "Number of active worker tasks",
            "tasks",
        ),
        (
            "noetl_worker_max_workers",
            json!(8),
            "Maximum configured workers",
            "workers",
        ),
        (
            "noetl_worker_queue_size",
            json!(0),
            "Current queue size",
            "jobs",
        ),
    ];
    json!({
        "component_name": name,
        "component_type": "worker_pool",
        "metrics": metrics
            .iter()
            .map(|(n, v, h, u)| item(release, n, v.clone(), h, u, &labels))
            .collect::<Vec<_>>(),
    })
}

/// `QueueWorker._report_simple_worker_metrics`: three gauges as
/// `component_type: queue_worker`.
pub fn queue_worker_report(
    release: NoetlRelease,
    name: &str,
    worker_id: &str,
    hostname: &str,
) -> Value {
    let labels = json!({"component": name, "worker_id": worker_id, "hostname": hostname});
    let metrics = [
        (
            "noetl_system_cpu_usage_percent",
            json!(3.1),
            "CPU usage percentage",
            "percent",
        ),
        (
            "noetl_system_memory_usage_percent",
            json!(40.2),
            "Memory usage percentage",
            "percent",
        ),
        (
            "noetl_worker_status",
            json!(1),
            "Worker status (1=active, 0=inactive)",
            "status",
        ),
    ];
    json!({
        "component_name": name,
        "component_type": "queue_worker",
        "metrics": metrics
            .iter()
            .map(|(n, v, h, u)| item(release, n, v.clone(), h, u, &labels))
            .collect::<Vec<_>>(),
    })
}

/// v1.0.0's server `_report_server_metrics`: `collect_system_metrics()`
/// (six gauges) and two server gauges, posted with `kind: server_api`
/// (not `component_type`) and a naive isoformat timestamp on each item.
pub fn server_report_v1(name: &str, hostname: &str) -> Value {
    let labels = json!({"component": name, "hostname": hostname, "instance": name});
    let metrics = [
        (
            "noetl_system_cpu_usage_percent",
            json!(7.5),
            "CPU usage percentage",
            "percent",
        ),
        (
            "noetl_system_memory_usage_bytes",
            json!(2_147_483_648_u64),
            "Memory usage in bytes",
            "bytes",
        ),
        (
            "noetl_system_memory_usage_percent",
            json!(27.0),
            "Memory usage percentage",
            "percent",
        ),
        (
            "noetl_process_cpu_percent",
            json!(1.5),
            "Process CPU usage percentage",
            "percent",
        ),
        (
            "noetl_process_memory_rss_bytes",
            json!(120_000_000_u64),
            "Process RSS memory in bytes",
            "bytes",
        ),
        (
            "noetl_process_start_time_seconds",
            json!(1_764_640_000.25),
            "Process start time since unix epoch",
            "seconds",
        ),
        (
            "noetl_server_active_workers",
            json!(1),
            "Number of active workers",
            "workers",
        ),
        (
            "noetl_server_queue_size",
            json!(0),
            "Current queue size",
            "jobs",
        ),
    ];
    json!({
        "component_name": name,
        "kind": "server_api",
        "metrics": metrics
            .iter()
            .map(|(n, v, h, u)| {
                let mut m = item(NoetlRelease::V1_0_0, n, v.clone(), h, u, &labels);
                m["timestamp"] = json!(python_isoformat_now());
                m
            })
            .collect::<Vec<_>>(),
    })
}
