//! NoETL's workers and servers, v0.2.0 and v1.0.0, talking to Vigil
//! unchanged: registry calls, heartbeats with and without registration,
//! worker pool, queue worker and server reports, NoETL's query and component
//! listing, over SQLite and PostgreSQL. The request bodies are built as
//! NoETL's code builds them (see `vigil_tests::noetl`).

use vigil_tests::noetl::*;
use vigil_tests::*;

async fn send(server: &TestServer, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let req = match method {
        "POST" => server.client().post(server.url(path)),
        "DELETE" => server.client().delete(server.url(path)),
        other => panic!("unexpected method {other}"),
    };
    status_json(req.json(body).send().await.expect("request")).await
}

async fn get_json(server: &TestServer, path: &str) -> Value {
    let (status, body) = status_json(server.get(path).await).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn rows(v: &Value, key: &str) -> Vec<Value> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` array: {v}"))
        .clone()
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {list:?}"))
}

async fn noetl_v0_2_0_worker_pool_registers_beats_reports_and_deregisters(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let release = NoetlRelease::V0_2_0;
    let pool = unique("worker-cpu");
    let reg = worker_pool_registration(
        release,
        &pool,
        "cpu",
        None,
        Some(vec!["etl", "fast"]),
        "node-1",
    );
    let (status, answer) = send(&server, "POST", "/api/worker/pool/register", &reg).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["name"], pool.as_str());
    assert_eq!(answer["runtime"], "cpu");
    let runtime_id = answer["runtime_id"].as_i64().expect("numeric runtime_id");
    assert!(runtime_id > 0);

    // Heartbeat: 200 with the same id.
    let (status, beat) = send(
        &server,
        "POST",
        "/api/worker/pool/heartbeat",
        &heartbeat(&pool),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(
        beat,
        json!({"status": "ok", "name": pool, "runtime_id": runtime_id})
    );

    // The pool's report: eight gauges, all stored.
    let (status, rep) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &worker_pool_report(release, &pool, "wid-1", "node-1"),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["status"], "ok");
    assert_eq!(rep["runtime_id"], runtime_id);
    assert_eq!(rep["metrics_inserted"], 8);
    assert_eq!(rep["accepted"], 8);

    // A queue worker reporting on its own registers itself with its report.
    let queue_worker = unique("worker");
    let (status, rep2) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &queue_worker_report(release, &queue_worker, "wid-2", "node-1"),
    )
    .await;
    assert_eq!(status, 200, "{rep2}");
    assert_eq!(rep2["metrics_inserted"], 3);
    let queue_worker_id = rep2["runtime_id"].as_i64().expect("runtime_id");
    assert_ne!(queue_worker_id, runtime_id);

    // NoETL's pool listing.
    let pools = get_json(&server, "/api/worker/pools").await;
    assert_eq!(pools["count"], 1, "{pools}");
    assert!(
        pools["runtime"].is_null() && pools["status"].is_null(),
        "{pools}"
    );
    let item = &rows(&pools, "items")[0];
    assert_eq!(item["name"], pool.as_str());
    assert_eq!(
        item["runtime"],
        json!({"type": "cpu", "pid": 4242, "hostname": "node-1"})
    );
    assert_eq!(item["status"], "ready");
    assert!(item["capacity"].is_null(), "{item}");
    assert_eq!(item["labels"], json!(["etl", "fast"]));
    for key in ["last_heartbeat", "created_at", "updated_at"] {
        parse_ts(&item[key]);
    }
    assert_eq!(
        get_json(&server, "/api/worker/pools?runtime=cpu").await["count"],
        1
    );
    assert_eq!(
        get_json(&server, "/api/worker/pools?runtime=gpu").await["count"],
        0
    );
    assert_eq!(
        get_json(&server, "/api/worker/pools?status=offline").await["count"],
        0
    );

    // The component listings are views of one registry.
    let comps = rows(
        &get_json(&server, "/api/metrics/components").await,
        "components",
    );
    let p = named(&comps, &pool);
    assert_eq!(p["runtime_id"], runtime_id);
    assert_eq!(p["component_type"], "worker_pool");
    assert_eq!(p["status"], "ready");
    parse_ts(&p["last_heartbeat"]);
    let q = named(&comps, &queue_worker);
    assert_eq!(q["component_type"], "queue_worker");
    assert_eq!(q["runtime_id"], queue_worker_id);
    let v2 = rows(&get_json(&server, "/api/v2/components").await, "components");
    assert_eq!(named(&v2, &pool)["type"], "worker_pool");
    assert_eq!(named(&v2, &queue_worker)["type"], "queue_worker");

    // NoETL's query by runtime_id, type and time range.
    let by_id = get_json(
        &server,
        &format!("/api/metrics/query?runtime_id={runtime_id}"),
    )
    .await;
    assert_eq!(by_id["count"], 8, "{by_id}");
    for m in rows(&by_id, "metrics") {
        assert_eq!(m["runtime_id"], runtime_id, "{m}");
        assert_eq!(m["component_name"], pool.as_str(), "{m}");
        assert_eq!(m["component_type"], "worker_pool", "{m}");
        assert_eq!(m["metric_type"], "gauge", "{m}");
        assert_eq!(
            m["labels"],
            json!({"worker_id": "wid-1", "hostname": "node-1"}),
            "{m}"
        );
        assert!(m["metric_id"].is_i64() && m["created_at"].is_null(), "{m}");
        assert!(m["help_text"].is_string() && m["unit"].is_string(), "{m}");
    }
    let cpu = get_json(
        &server,
        &format!(
            "/api/metrics/query?component_name={pool}&metric_name=noetl_system_memory_usage_bytes"
        ),
    )
    .await;
    assert_eq!(cpu["count"], 1, "{cpu}");
    assert_eq!(
        cpu["metrics"][0]["metric_value"].as_f64(),
        Some(3_221_225_472.0)
    );
    assert_eq!(cpu["metrics"][0]["unit"], "bytes");
    let counters = get_json(&server, "/api/metrics/query?metric_type=counter").await;
    assert_eq!(counters["count"], 0, "{counters}");
    let later = get_json(&server, "/api/metrics/query?start_time=2999-01-01T00:00:00").await;
    assert_eq!(later["count"], 0, "{later}");
    let window = get_json(
        &server,
        "/api/metrics/query?start_time=2020-01-01T00:00:00&end_time=2999-01-01T00:00:00&limit=5",
    )
    .await;
    assert_eq!(
        (window["count"].clone(), window["limit"].clone()),
        (json!(5), json!(5)),
        "{window}"
    );
    let unknown_id = get_json(&server, "/api/metrics/query?runtime_id=999999").await;
    assert_eq!(unknown_id["count"], 0, "{unknown_id}");

    // Deregistration (DELETE, and POST as some workers send it) marks offline.
    let (status, gone) = send(
        &server,
        "DELETE",
        "/api/worker/pool/deregister",
        &json!({"name": pool}),
    )
    .await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone, json!({"status": "ok", "name": pool}));
    let offline = get_json(&server, "/api/worker/pools?status=offline").await;
    assert_eq!(offline["count"], 1, "{offline}");
    assert_eq!(
        get_json(&server, "/api/worker/pools?status=ready").await["count"],
        0
    );
    let (status, _) = send(
        &server,
        "POST",
        "/api/worker/pool/deregister",
        &json!({"name": pool}),
    )
    .await;
    assert_eq!(status, 200);
    // A heartbeat makes it ready again, with the same id.
    let (status, beat) = send(
        &server,
        "POST",
        "/api/worker/pool/heartbeat",
        &heartbeat(&pool),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["runtime_id"], runtime_id);
    assert_eq!(
        get_json(&server, "/api/worker/pools?status=ready").await["count"],
        1
    );

    // The server registers itself and deregisters on shutdown.
    let srv = unique("server");
    let (status, reg) = send(
        &server,
        "POST",
        "/api/runtime/register",
        &server_registration(&srv, "http://localhost:8082/api", "node-0"),
    )
    .await;
    assert_eq!(status, 200, "{reg}");
    assert_eq!(reg["status"], "ok");
    assert_eq!(reg["component_type"], "server_api");
    let server_id = reg["runtime_id"].as_i64().expect("runtime_id");
    assert!(server_id != runtime_id && server_id != queue_worker_id);
    let (status, gone) = send(
        &server,
        "DELETE",
        "/api/runtime/deregister",
        &json!({"name": srv, "component_type": "server_api"}),
    )
    .await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(
        gone,
        json!({"status": "ok", "name": srv, "component_type": "server_api"})
    );
    let comps = rows(
        &get_json(&server, "/api/metrics/components").await,
        "components",
    );
    assert_eq!(named(&comps, &srv)["status"], "offline");
    // The pool listing shows worker pools only.
    assert_eq!(get_json(&server, "/api/worker/pools").await["count"], 1);
}

async fn noetl_v1_0_0_workers_and_server_are_answered_alike(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let release = NoetlRelease::V1_0_0;
    let pool = unique("worker-cpu");
    let reg = worker_pool_registration(release, &pool, "cpu", Some(4), None, "worker-cpu-0");
    let (status, answer) = send(&server, "POST", "/api/worker/pool/register", &reg).await;
    assert_eq!(status, 200, "{answer}");
    let runtime_id = answer["runtime_id"].as_i64().expect("runtime_id");
    assert_eq!(answer["runtime"], "cpu");

    // A heartbeat from a worker the server does not know (never registered):
    // 404, NoETL's detail, and when to register again.
    let stranger = unique("worker-gpu");
    let resp = server
        .client()
        .post(server.url("/api/worker/pool/heartbeat"))
        .json(&heartbeat(&stranger))
        .send()
        .await
        .expect("heartbeat");
    assert_eq!(resp.status(), 404);
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert_eq!(retry.as_deref(), Some("3"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body["detail"],
        json!({"status": "unknown", "name": stranger})
    );
    assert_eq!(body["error"]["code"], "not_found");
    // It registers (v1.0.0 style, with `endpoint` this time) and beats.
    let mut reg = worker_pool_registration(release, &stranger, "gpu", Some(1), None, "gpu-0");
    let uri = reg
        .as_object_mut()
        .expect("object")
        .remove("uri")
        .expect("uri");
    reg["endpoint"] = uri;
    let (status, answer) = send(&server, "POST", "/api/worker/pool/register", &reg).await;
    assert_eq!(status, 200, "{answer}");
    let (status, beat) = send(
        &server,
        "POST",
        "/api/worker/pool/heartbeat",
        &heartbeat(&stranger),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["runtime_id"], answer["runtime_id"]);

    // Reports: pool and queue worker without timestamps, the server's with
    // `kind` instead of `component_type`.
    let (status, rep) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &worker_pool_report(release, &pool, "wid-1", "worker-cpu-0"),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(
        (rep["runtime_id"].clone(), rep["metrics_inserted"].clone()),
        (json!(runtime_id), json!(8))
    );
    let qw = unique("worker");
    let (status, rep) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &queue_worker_report(release, &qw, "wid-2", "worker-cpu-0"),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["metrics_inserted"], 3);
    let srv = unique("noetl-server");
    let (status, rep) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &server_report_v1(&srv, "node-0"),
    )
    .await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["metrics_inserted"], 8);
    let comps = rows(
        &get_json(&server, "/api/metrics/components").await,
        "components",
    );
    assert_eq!(
        named(&comps, &srv)["component_type"],
        "server_api",
        "`kind` read as the type"
    );
    assert_eq!(named(&comps, &qw)["component_type"], "queue_worker");
    let pools = get_json(&server, "/api/worker/pools?runtime=cpu").await;
    let item = &rows(&pools, "items")[0];
    assert_eq!(item["capacity"], 4);
    assert_eq!(
        item["runtime"],
        json!({"type": "cpu", "pid": 4242, "hostname": "worker-cpu-0"})
    );
    assert!(item["labels"].is_null(), "{item}");
    let start = get_json(
        &server,
        &format!(
            "/api/metrics/query?component_name={srv}&metric_name=noetl_process_start_time_seconds"
        ),
    )
    .await;
    assert_eq!(
        start["metrics"][0]["metric_value"].as_f64(),
        Some(1_764_640_000.25)
    );
    assert_eq!(
        start["metrics"][0]["labels"],
        json!({"hostname": "node-0", "instance": srv})
    );

    // Python's str(datetime) (a space, not a `T`) is a timestamp too.
    let custom = json!({
        "component_name": srv,
        "kind": "server_api",
        "metrics": [{
            "metric_name": "custom_work_items_processed",
            "metric_type": "counter",
            "metric_value": 150,
            "timestamp": python_str_now_utc(),
            "labels": {"worker_type": "batch_processor"},
            "help_text": "Number of work items processed",
            "unit": "items",
        }],
    });
    let (status, rep) = send(&server, "POST", "/api/metrics/report", &custom).await;
    assert_eq!(status, 200, "{rep}");
    let counters = get_json(&server, "/api/metrics/query?metric_type=counter").await;
    assert_eq!(counters["count"], 1, "{counters}");
    let age = chrono::Utc::now() - parse_ts(&counters["metrics"][0]["timestamp"]);
    assert!(age.num_seconds().abs() < 300, "{counters}");
}

async fn registry_calls_with_bad_bodies_are_refused_and_change_nothing(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let pool = unique("worker-cpu");
    let good = worker_pool_registration(NoetlRelease::V0_2_0, &pool, "cpu", Some(2), None, "h");
    let (status, _) = send(&server, "POST", "/api/worker/pool/register", &good).await;
    assert_eq!(status, 200);
    let before = get_json(&server, "/api/worker/pools").await;

    let without = |key: &str| {
        let mut b = good.clone();
        b.as_object_mut().expect("object").remove(key);
        b
    };
    let with = |key: &str, v: Value| {
        let mut b = good.clone();
        b[key] = v;
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no name", without("name"), "`name`"),
        ("blank name", with("name", json!("  ")), "`name`"),
        ("no runtime", without("runtime"), "`runtime`"),
        ("no address", without("base_url"), "address"),
        (
            "negative capacity",
            with("capacity", json!(-1)),
            "`capacity`",
        ),
        (
            "status with spaces",
            with("status", json!("not ready")),
            "`status`",
        ),
        (
            "control characters",
            with("name", json!("a\u{1}b")),
            "`name`",
        ),
        (
            "address too long",
            with("base_url", json!("x".repeat(5000))),
            "`uri`",
        ),
        (
            "huge labels",
            with("labels", json!(vec!["l".repeat(100); 200])),
            "`labels`",
        ),
        (
            "capacity as text",
            with("capacity", json!("4")),
            "invalid type",
        ),
    ];
    for (what, body, mentions) in cases {
        let (status, err) = send(&server, "POST", "/api/worker/pool/register", &body).await;
        assert_eq!(status, 400, "{what}: {err}");
        assert_eq!(err["error"]["code"], "invalid_request", "{what}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(mentions), "{what}: {message}");
    }
    for path in [
        "/api/worker/pool/register",
        "/api/worker/pool/heartbeat",
        "/api/runtime/register",
    ] {
        let resp = server.post_raw(path, "{\"name\": ").await;
        expect_error(resp, 400, "malformed_json").await;
        let resp = server.post_raw(path, "[1, 2]").await;
        expect_error(resp, 400, "invalid_request").await;
    }
    let (status, err) = send(&server, "POST", "/api/worker/pool/heartbeat", &json!({})).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (400, json!("invalid_request")),
        "{err}"
    );
    let (status, err) = send(
        &server,
        "DELETE",
        "/api/worker/pool/deregister",
        &json!({"name": "nobody"}),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (404, json!("not_found")),
        "{err}"
    );
    let (status, err) = send(
        &server,
        "DELETE",
        "/api/runtime/deregister",
        &json!({"name": pool, "component_type": "server_api"}),
    )
    .await;
    assert_eq!(status, 404, "a pool is not a server_api: {err}");
    let resp = server.get("/api/worker/pools?kind=cpu").await;
    expect_error(resp, 400, "invalid_query").await;
    for bad in [
        "runtime_id=abc",
        "runtime_id=0",
        "metric_type=meter",
        "limit=10001",
        "start=2024-01-01",
        "end_time=yesterday",
    ] {
        let resp = server.get(&format!("/api/metrics/query?{bad}")).await;
        expect_error(resp, 400, "invalid_query").await;
    }
    // Nothing changed.
    assert_eq!(get_json(&server, "/api/worker/pools").await, before);
}

async fn runtime_ids_stay_the_same_across_reregistration_and_restart(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::builder(&db)
        .arg("--strict-components")
        .start()
        .await;
    let pool = unique("worker-cpu");
    // Strict mode: an unregistered worker's report is refused…
    let report_body = worker_pool_report(NoetlRelease::V0_2_0, &pool, "wid", "h");
    let resp = server.post_json("/api/metrics/report", &report_body).await;
    expect_error(resp, 422, "unknown_component").await;
    // …and accepted once it registered through NoETL's route.
    let reg = worker_pool_registration(NoetlRelease::V0_2_0, &pool, "cpu", None, None, "h");
    let (status, first) = send(&server, "POST", "/api/worker/pool/register", &reg).await;
    assert_eq!(status, 200, "{first}");
    let id = first["runtime_id"].as_i64().expect("runtime_id");
    let (status, rep) = send(&server, "POST", "/api/metrics/report", &report_body).await;
    assert_eq!(status, 200, "{rep}");
    assert_eq!(rep["runtime_id"], id);
    let (_, again) = send(&server, "POST", "/api/worker/pool/register", &reg).await;
    assert_eq!(
        again["runtime_id"], id,
        "an upsert on the name keeps the id"
    );
    server.restart().await;
    let (status, beat) = send(
        &server,
        "POST",
        "/api/worker/pool/heartbeat",
        &heartbeat(&pool),
    )
    .await;
    assert_eq!(status, 200, "{beat}");
    assert_eq!(beat["runtime_id"], id);
    let (status, rep) = send(&server, "POST", "/api/metrics/report", &report_body).await;
    assert_eq!(
        status, 200,
        "strict mode still knows the worker after a restart: {rep}"
    );
    assert_eq!(rep["runtime_id"], id);
}

async fn refusals_of_what_would_break_the_export_say_what_to_rename_to(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let body = report(
        &unique("worker"),
        [
            gauge("worker.queue-size", 1.0),
            gauge("ok_gauge", 1.0).label("k8s.pod", "p-1"),
            counter("jobs_done", -3.0),
        ],
    );
    let resp = server.post_json("/api/metrics/report", &body).await;
    let err = expect_error(resp, 400, "invalid_report").await;
    let reasons: Vec<String> = err["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    for wanted in [
        "rename it to `worker_queue_size`",
        "rename it to `k8s_pod`",
        "as a gauge",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(wanted)),
            "{wanted}: {reasons:?}"
        );
    }
    assert!(server.query_all(&[]).await.is_empty(), "nothing stored");
}

async fn ttl_rules_keep_samples_longer_or_shorter_and_cleanup_applies_them(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::builder(&db)
        .args(["--retention", "2d"])
        .start()
        .await;
    let (a, short) = (unique("worker"), unique("short-lived"));
    let post = |path: String| {
        let server = &server;
        async move { status_json(server.post_json(&path, &json!({})).await).await }
    };
    // Rules first: the retention timer may run at any moment.
    let (status, set) = post("/api/metrics/ttl/set?metric_name=keep_me&ttl_days=7".into()).await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["status"], "ok");
    assert_eq!(set["metric_name"], "keep_me");
    assert_eq!(set["new_ttl_days"], 7);
    let (status, ext) = post(format!(
        "/api/metrics/ttl/extend-component?component_name={short}&ttl_days=1"
    ))
    .await;
    assert_eq!(status, 200, "{ext}");
    assert_eq!(ext["component_name"], short.as_str());
    let ago = |hours: i64| {
        (chrono::Utc::now() - chrono::Duration::hours(hours))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    server
        .report_ok(&report(
            &a,
            [
                gauge("keep_me", 1.0).at(&ago(72)),
                gauge("gone", 2.0).at(&ago(72)),
                gauge("fresh", 3.0).at(&ago(1)),
            ],
        ))
        .await;
    server
        .report_ok(&report(
            &short,
            [
                gauge("recent", 4.0).at(&ago(36)),
                gauge("keep_me", 5.0).at(&ago(72)),
            ],
        ))
        .await;
    let (status, done) = post("/api/metrics/cleanup".into()).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "ok");
    assert!(
        done["deleted_samples"].as_u64().is_some_and(|n| n <= 2),
        "{done}"
    );
    let mut left: Vec<f64> = server
        .query_all(&[])
        .await
        .iter()
        .map(|s| s["metric_value"].as_f64().expect("value"))
        .collect();
    left.sort_by(f64::total_cmp);
    // keep_me (its own 7 days beat --retention and the component's 1 day)
    // and fresh stay; gone (past 2 days) and recent (past its component's day) went.
    assert_eq!(left, vec![1.0, 3.0, 5.0]);
    let (status, again) = post("/api/metrics/cleanup".into()).await;
    assert_eq!(status, 200);
    assert_eq!(again["deleted_samples"], 0, "{again}");
    for bad in [
        "/api/metrics/ttl/set?metric_name=keep_me&ttl_days=0",
        "/api/metrics/ttl/set?metric_name=keep_me&ttl_days=x",
        "/api/metrics/ttl/set?ttl_days=3",
        "/api/metrics/ttl/set?metric_name=keep_me&days=3",
        "/api/metrics/ttl/extend-component?component_name=&ttl_days=3",
        "/api/metrics/cleanup?now=1",
    ] {
        let resp = server.post_json(bad, &json!({})).await;
        expect_error(resp, 400, "invalid_query").await;
    }
}

/// A report body as Python's `json.dumps` writes it: the non-finite floats
/// as the bare tokens `NaN`, `Infinity`, `-Infinity`.
fn python_report(component: &str, items: &[(&str, &str, &str)]) -> String {
    let metrics: Vec<String> = items
        .iter()
        .map(|(name, kind, value)| {
            format!(
                r#"{{"metric_name": "{name}", "metric_type": "{kind}", "metric_value": {value}, "labels": {{"host": "h1"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"component_name": "{component}", "component_type": "worker_pool", "metrics": [{}]}}"#,
        metrics.join(", ")
    )
}

async fn post_text(server: &TestServer, body: String) -> (u16, Value) {
    let resp = server
        .client()
        .post(server.url("/api/metrics/report"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("report");
    status_json(resp).await
}

async fn non_finite_gauges_are_stored_exported_and_answered(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let mut server = TestServer::start(&db).await;
    let component = unique("pool");
    let (status, body) = post_text(
        &server,
        python_report(
            &component,
            &[
                ("q_nan", "gauge", "NaN"),
                ("q_inf", "gauge", "Infinity"),
                ("q_neg", "gauge", "-Infinity"),
                ("q_ok", "gauge", "2.5"),
            ],
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["metrics_inserted"], 4, "{body}");

    // A counter (or histogram, summary) must stay finite; the whole report
    // is refused and nothing of it stored.
    for kind in ["counter", "histogram", "summary"] {
        let (status, body) = post_text(
            &server,
            python_report(
                &component,
                &[("q_later", "gauge", "1"), ("c_bad", kind, "NaN")],
            ),
        )
        .await;
        assert_eq!(status, 400, "{kind}: {body}");
        let details = body["error"]["details"].as_array().expect("details");
        assert!(
            details
                .iter()
                .any(|d| d["index"] == 1 && d["field"] == "metric_value"),
            "{kind}: {body}"
        );
    }
    // A string that only looks like a number is still not one.
    let (status, body) = post_text(
        &server,
        python_report(&component, &[("q_str", "gauge", "\"NaN\"")]),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    let check = |text: &str, what: &str| {
        let find = |name: &str| {
            parse_exposition(text)
                .into_iter()
                .find(|s| s.name == name && s.label("component") == Some(component.as_str()))
                .unwrap_or_else(|| panic!("{what}: no {name}:\n{text}"))
                .value
        };
        assert!(find("q_nan").is_nan(), "{what}");
        assert_eq!(find("q_inf"), f64::INFINITY, "{what}");
        assert_eq!(find("q_neg"), f64::NEG_INFINITY, "{what}");
        assert_eq!(find("q_ok"), 2.5, "{what}");
        assert!(
            !text.contains("q_later"),
            "{what}: a refused report left a series"
        );
    };
    let text = server.export().await;
    check(&text, "text export");
    promtool_check(&text).expect("promtool accepts NaN and ±Inf gauges");
    check(&server.export_openmetrics().await, "OpenMetrics export");

    // The JSON queries answer as Python writes them, or as strings.
    let raw = server
        .get(&format!(
            "/api/v2/metrics/query?component_name={component}&metric_name=q_nan"
        ))
        .await
        .text()
        .await
        .expect("body");
    assert!(raw.contains(r#""metric_value":NaN"#), "{raw}");
    for (name, want) in [
        ("q_nan", "NaN"),
        ("q_inf", "Infinity"),
        ("q_neg", "-Infinity"),
    ] {
        let page = server
            .query_page(&[
                ("component_name", component.as_str()),
                ("metric_name", name),
                ("json", "strict"),
            ])
            .await;
        assert_eq!(page["samples"][0]["metric_value"], want, "{page}");
        let noetl = get_json(
            &server,
            &format!(
                "/api/metrics/query?component_name={component}&metric_name={name}&json=strict"
            ),
        )
        .await;
        assert_eq!(noetl["metrics"][0]["metric_value"], want, "{noetl}");
    }
    let (status, body) = status_json(
        server
            .get(&format!(
                "/api/v2/metrics/query?component_name={component}&json=loose"
            ))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Stored, not only held in memory: after a SIGKILL and a restart (the
    // latest values replayed from the samples) the export and the queries
    // still give them.
    server.kill();
    server.restart().await;
    check(&server.export().await, "export after restart");
    let page = server
        .query_page(&[("component_name", component.as_str()), ("json", "strict")])
        .await;
    let values: Vec<&Value> = page["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| &s["metric_value"])
        .collect();
    assert_eq!(values.len(), 4, "{page}");
    assert!(
        values.contains(&&json!("NaN")) && values.contains(&&json!(2.5)),
        "{page}"
    );
}

async fn reports_may_name_their_component_by_runtime_id(backend: Backend) {
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    let name = unique("server");
    let (status, reg) = send(
        &server,
        "POST",
        "/api/runtime/register",
        &server_registration(&name, "http://localhost:8082/api", "node-0"),
    )
    .await;
    assert_eq!(status, 200, "{reg}");
    let id = reg["runtime_id"].as_i64().expect("runtime_id");
    let metric =
        |v: f64| json!([{"metric_name": "rid_gauge", "metric_type": "gauge", "metric_value": v}]);

    // As a number, and (NoETL v1.0.0) as a string; it wins over a name.
    for (body, value) in [
        (json!({"runtime_id": id, "metrics": metric(1.0)}), 1.0),
        (
            json!({"runtime_id": id.to_string(), "metrics": metric(2.0)}),
            2.0,
        ),
        (
            json!({"runtime_id": id, "component_name": "someone-else", "metrics": metric(3.0)}),
            3.0,
        ),
    ] {
        let (status, answer) = send(&server, "POST", "/api/metrics/report", &body).await;
        assert_eq!(status, 200, "{body}: {answer}");
        assert_eq!(answer["runtime_id"], id, "{answer}");
        let text = server.export().await;
        assert_eq!(
            expo_value(&text, "rid_gauge", &[("component", name.as_str())]),
            value,
            "{text}"
        );
    }
    assert!(!server.export().await.contains("someone-else"));

    // An id nobody has, a bad id, or neither id nor name: refused, nothing stored.
    let (status, answer) = send(
        &server,
        "POST",
        "/api/metrics/report",
        &json!({"runtime_id": id + 1000, "metrics": metric(9.0)}),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "not_found", "{answer}");
    for bad in [
        json!({"runtime_id": "seven", "metrics": metric(9.0)}),
        json!({"runtime_id": -3, "component_name": name, "metrics": metric(9.0)}),
        json!({"metrics": metric(9.0)}),
    ] {
        let (status, answer) = send(&server, "POST", "/api/metrics/report", &bad).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        let field = answer["error"]["details"][0]["field"]
            .as_str()
            .unwrap_or("");
        assert!(
            field == "runtime_id" || field == "component_name",
            "{bad}: {answer}"
        );
    }
    let text = server.export().await;
    assert_eq!(
        expo_value(&text, "rid_gauge", &[("component", name.as_str())]),
        3.0,
        "{text}"
    );
}

backend_tests!(
    non_finite_gauges_are_stored_exported_and_answered,
    reports_may_name_their_component_by_runtime_id,
    ttl_rules_keep_samples_longer_or_shorter_and_cleanup_applies_them,
    refusals_of_what_would_break_the_export_say_what_to_rename_to,
    noetl_v0_2_0_worker_pool_registers_beats_reports_and_deregisters,
    noetl_v1_0_0_workers_and_server_are_answered_alike,
    registry_calls_with_bad_bodies_are_refused_and_change_nothing,
    runtime_ids_stay_the_same_across_reregistration_and_restart,
);
