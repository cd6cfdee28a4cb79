//! The first-party Elasticsearch publisher (`plugins/elasticsearch`), loaded
//! from the plugin directory like any plugin, against the strict receiver of
//! `tests/src/receivers/elasticsearch.rs`: every item once (ids from seqs,
//! 409 counts as delivered), per-item 429 retried, 400 dead-lettered with
//! Elasticsearch's reason, requests split at `max_bulk_bytes`, the next host
//! tried when one is down, outages and 503s survived, 401 permanent and
//! named, the template installed, SIGKILL mid-delivery without a duplicate or
//! a loss, and misconfigurations shown with their reason.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);
/// `base64("id:secret")`, as Elasticsearch API keys are given.
const API_KEY: &str = "aWQ6c2VjcmV0";

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn manifest(hosts: &[String], extra: &str) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[capabilities]\nallowed_hosts = [{}]\n[config]\nhosts = [{}]\napi_key = \"${{ES_TEST_API_KEY}}\"\n{extra}",
        list(hosts),
        list(hosts)
    )
}

async fn start_server(db: &TestDatabase, dir: &PluginDir, names: &[&str]) -> TestServer {
    let server = TestServer::builder(db)
        .plugin_dir(dir.path())
        .env("ES_TEST_API_KEY", API_KEY)
        .start()
        .await;
    for name in names {
        server
            .wait_publisher(name, WAIT, "cursor opened", |p| p["cursor_seq"] == 0)
            .await;
    }
    server
}

async fn post_events(server: &TestServer, events: &Value) -> Vec<i64> {
    let (status, body) = status_json(server.post_json("/api/v2/events", events).await).await;
    assert_eq!(status, 200, "{body:#}");
    body["seqs"]
        .as_array()
        .expect("seqs")
        .iter()
        .map(|s| s.as_i64().expect("stored"))
        .collect()
}

async fn wait_lag_zero(server: &TestServer, name: &str) -> Value {
    server
        .wait_publisher(name, WAIT, "lag 0", |p| p["lag"] == 0)
        .await
}

fn doc_ids(receiver: &ElasticsearchReceiver) -> Vec<String> {
    receiver.docs().into_iter().map(|d| d.id).collect()
}

fn assert_clean(receiver: &ElasticsearchReceiver) {
    assert_eq!(
        receiver.violations(),
        Vec::<String>::new(),
        "protocol violations"
    );
    assert_eq!(
        receiver.created_twice(),
        Vec::<String>::new(),
        "documents created twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_is_one_document_and_each_bulk_item_answer_counts() {
    let receiver = ElasticsearchReceiver::start().await;
    receiver.expect_auth(&format!("ApiKey {API_KEY}"));
    receiver.set_busy_times(2);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "es",
        "elasticsearch",
        &manifest(&[dead, receiver.origin()], "max_bulk_bytes = 2048\n"),
    );
    let server = start_server(&db, &dir, &["es"]).await;
    let component = unique("es");
    let fault = |i: usize| match i {
        7 => "busy",
        11 => "mapper",
        _ => "none",
    };
    server
        .report_ok(&report(
            &component,
            (0..40)
                .map(|i| gauge("es_value", i as f64).label("es_fault", fault(i)))
                .chain([
                    counter("es_requests", 3.0),
                    histogram("es_latency_seconds", 0.25),
                    summary("es_size_bytes", 512.0),
                ]),
        ))
        .await;
    let session = unique("session");
    let events = post_events(
        &server,
        &json!([
            {"event_type": "TaskCreated", "event_id": format!("{session}-1"), "session_id": session,
             "task_id": "task.0001", "asyncflow.workflow_id": "etl-run-42", "backend": "dim",
             "event_time": 1_700_000_000.5},
            {"event_type": "TaskFailed", "session_id": session, "task_id": "task.0002", "es_fault": "mapper"},
        ]),
    )
    .await;

    let p = wait_lag_zero(&server, "es").await;
    assert_eq!(p["dead_lettered"], 2, "{p:#}");
    assert_eq!(p["delivered"], 43 + 2 - 2, "{p:#}");
    assert_eq!(p["last_error"], Value::Null, "{p:#}");
    assert_clean(&receiver);

    // Exactly the stored items, once each, minus the two refused.
    let samples: Vec<Value> = server
        .query_all(&[("component_name", component.as_str()), ("limit", "10000")])
        .await;
    let mapper_sample = samples
        .iter()
        .find(|s| s["labels"]["es_fault"] == "mapper")
        .expect("mapper sample")["seq"]
        .as_i64()
        .expect("seq");
    let mut expected: BTreeSet<String> = samples
        .iter()
        .map(|s| s["seq"].as_i64().expect("seq"))
        .filter(|s| *s != mapper_sample)
        .map(|s| format!("m-{s}"))
        .collect();
    expected.insert(format!("e-{}", events[0]));
    let got: BTreeSet<String> = doc_ids(&receiver).into_iter().collect();
    assert_eq!(got, expected);
    assert_eq!(receiver.docs().len(), expected.len(), "one document per id");
    // The busy item was answered 429 twice and retried: the items created
    // before came back 409, not as second documents.
    assert!(receiver.conflicts() > 0, "a retry re-sent created items");

    // Several requests, none above max_bulk_bytes.
    assert!(receiver.bulk_requests() > 3, "{}", receiver.bulk_requests());
    assert!(
        receiver.largest_bulk() <= 2048,
        "{}",
        receiver.largest_bulk()
    );

    // Document shapes and daily indices.
    let docs = receiver.docs();
    let first = samples
        .iter()
        .find(|s| s["metric_name"] == "es_value" && s["metric_value"] == 0.0)
        .expect("first");
    let seq = first["seq"].as_i64().expect("seq");
    let doc = docs
        .iter()
        .find(|d| d.id == format!("m-{seq}"))
        .expect("doc");
    let ts = parse_ts(&first["timestamp"]);
    assert_eq!(
        doc.index,
        format!("vigil-metrics-{}", ts.format("%Y.%m.%d"))
    );
    assert_eq!(
        doc.source,
        json!({"@timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
               "name": "es_value", "type": "gauge", "value": 0.0,
               "labels": {"es_fault": "none"}, "component": component, "seq": seq})
    );
    for (name, kind) in [
        ("es_requests", "counter"),
        ("es_latency_seconds", "histogram"),
        ("es_size_bytes", "summary"),
    ] {
        assert!(
            docs.iter()
                .any(|d| d.source["name"] == name && d.source["type"] == kind),
            "{name}"
        );
    }
    let ev = docs
        .iter()
        .find(|d| d.id == format!("e-{}", events[0]))
        .expect("event doc");
    assert_eq!(ev.index, "vigil-events-2023.11.14");
    assert_eq!(ev.source["@timestamp"], "2023-11-14T22:13:20.500Z");
    assert_eq!(ev.source["type"], "TaskCreated");
    assert_eq!(ev.source["id"], format!("{session}-1"));
    assert_eq!(ev.source["session"], session.as_str());
    assert_eq!(ev.source["task"], "task.0001");
    assert_eq!(ev.source["workflow"], "etl-run-42");
    assert_eq!(ev.source["backend"], "dim");
    assert_eq!(ev.source["attributes"]["task_id"], "task.0001");

    // The template, installed on configure.
    let templates = receiver.templates();
    let t = templates
        .get("/_index_template/vigil")
        .expect("index template");
    assert_eq!(
        t["index_patterns"],
        json!(["vigil-metrics-*", "vigil-events-*"])
    );
    assert_eq!(
        t["template"]["mappings"]["properties"]["@timestamp"]["type"],
        "date"
    );
    assert_eq!(
        t["template"]["mappings"]["properties"]["value"]["type"],
        "double"
    );

    // The refused items are dead letters with Elasticsearch's type and reason.
    let (status, page) = status_json(server.get("/api/v2/publishers/es/dead-letters").await).await;
    assert_eq!(status, 200, "{page:#}");
    let letters = page["dead_letters"].as_array().expect("dead_letters");
    let seqs: Vec<i64> = letters
        .iter()
        .map(|d| d["seq"].as_i64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![mapper_sample, events[1]], "{page:#}");
    for d in letters {
        let reason = d["reason"].as_str().expect("reason");
        assert!(
            reason.contains("mapper_parsing_exception")
                && reason.contains("failed to parse field [value]"),
            "{reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_stream_mode_writes_gzipped_creates_with_a_component_template() {
    let receiver = ElasticsearchReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest(
        "es_ds",
        "elasticsearch",
        &manifest(
            &[receiver.origin()],
            "mode = \"data_stream\"\nnamespace = \"test\"\ncompression = \"gzip\"\n",
        ),
    );
    let server = start_server(&db, &dir, &["es_ds"]).await;
    let component = unique("ds");
    server
        .report_ok(&report(
            &component,
            (0..5).map(|i| gauge("ds_value", i as f64)),
        ))
        .await;
    post_events(
        &server,
        &json!([{"event_type": "TaskCreated", "session_id": "s"}]),
    )
    .await;
    let p = wait_lag_zero(&server, "es_ds").await;
    assert_eq!(p["delivered"], 6, "{p:#}");
    assert_clean(&receiver);
    assert!(
        receiver.gzipped_bulks() >= 1,
        "bodies were not gzip-compressed"
    );
    assert_eq!(receiver.gzipped_bulks(), receiver.bulk_requests());
    let indices: BTreeSet<String> = receiver.docs().into_iter().map(|d| d.index).collect();
    assert_eq!(
        indices,
        BTreeSet::from([
            "metrics-vigil-test".to_string(),
            "logs-vigil-test".to_string()
        ])
    );
    let t = receiver.templates();
    assert!(
        t.contains_key("/_component_template/vigil-mappings"),
        "{t:?}"
    );
    let it = &t["/_index_template/vigil-data-streams"];
    assert_eq!(it["data_stream"], json!({}));
    assert_eq!(it["composed_of"], json!(["vigil-mappings"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_then_503s_then_recovery_delivers_every_item_once_and_401_is_permanent() {
    // The receiver is down: nothing listens on its port yet.
    let port = free_port();
    let origin = format!("http://127.0.0.1:{port}");
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    dir.install_with_manifest("es", "elasticsearch", &manifest(&[origin], ""));
    let server = start_server(&db, &dir, &["es"]).await;
    let component = unique("outage");
    server
        .report_ok(&report(
            &component,
            (0..20).map(|i| gauge("outage_value", i as f64)),
        ))
        .await;
    let p = server
        .wait_publisher("es", WAIT, "a connection error", |p| {
            p["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("127.0.0.1"))
        })
        .await;
    assert_eq!(p["delivered"], 0, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");

    // It comes up answering 503 with Retry-After, then recovers.
    let receiver = ElasticsearchReceiver::start_on(port).await;
    receiver.unavailable_for(2);
    let p = wait_lag_zero(&server, "es").await;
    assert_eq!(p["delivered"], 20, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    assert_clean(&receiver);
    assert!(
        receiver.bulk_requests() >= 3,
        "{}",
        receiver.bulk_requests()
    );
    let expected: BTreeSet<String> = server
        .stored_seqs(&component)
        .await
        .into_iter()
        .map(|s| format!("m-{s}"))
        .collect();
    let got: Vec<String> = doc_ids(&receiver);
    assert_eq!(got.len(), 20);
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    // The template came with the first batch (configure could not reach it).
    assert!(receiver.templates().contains_key("/_index_template/vigil"));

    // Credentials refused: permanent, and the message says which one.
    receiver.set_unauthorized(true);
    server
        .report_ok(&report(
            &component,
            (0..5).map(|i| gauge("outage_value", i as f64)),
        ))
        .await;
    let p = server
        .wait_publisher("es", WAIT, "401 reported", |p| {
            p["last_error"].as_str().is_some_and(|e| e.contains("401"))
        })
        .await;
    let e = p["last_error"].as_str().expect("last_error");
    assert!(
        e.contains("config.api_key") && e.contains("security_exception"),
        "{e}"
    );
    assert_eq!(p["lag"], 5, "held back, not dropped: {p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    assert_eq!(receiver.docs().len(), 20);
}

async fn a_sigkill_mid_delivery_leaves_one_document_per_acknowledged_item(backend: Backend) {
    let receiver = ElasticsearchReceiver::start().await;
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    dir.install_with_manifest("es", "elasticsearch", &manifest(&[receiver.origin()], ""));
    let mut server = start_server(&db, &dir, &["es"]).await;
    let component = unique("kill");
    receiver.set_delay(Duration::from_millis(300));
    let (_stop, acked, reporter) = start_reporter(
        &server,
        &component,
        "kill_value",
        10,
        Duration::from_millis(20),
    );
    poll_until(WAIT, "deliveries and a backlog", || {
        let (n, a) = (receiver.bulk_requests(), acked.load(Ordering::SeqCst));
        let server = &server;
        async move {
            if n < 3 || a < 300 {
                return None;
            }
            let lag = server.publisher("es").await?["lag"].as_i64()?;
            (lag > 0).then_some(())
        }
    })
    .await;
    server.kill();
    let killed_at = Instant::now();
    reporter.await.expect("reporter");
    let acked = acked.load(Ordering::SeqCst);
    receiver.set_delay(Duration::ZERO);
    server.restart().await;
    let p = wait_lag_zero(&server, "es").await;
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    assert!(
        receiver
            .requests()
            .iter()
            .any(|r| r.accepted_at > killed_at),
        "nothing was delivered after the restart"
    );
    let stored = server.stored_seqs(&component).await;
    assert!(
        stored.len() >= acked,
        "{} stored < {acked} acknowledged",
        stored.len()
    );
    let expected: BTreeSet<String> = stored.iter().map(|s| format!("m-{s}")).collect();
    let ids = doc_ids(&receiver);
    assert_eq!(ids.len(), expected.len(), "one document per stored sample");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_clean(&receiver);
    eprintln!(
        "kill ({}): {} stored, {acked} acknowledged, {} bulk requests, {} re-sent items answered 409",
        backend.name(),
        stored.len(),
        receiver.bulk_requests(),
        receiver.conflicts()
    );
}

backend_tests!(a_sigkill_mid_delivery_leaves_one_document_per_acknowledged_item);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misconfigured_elasticsearch_plugins_say_why_and_the_others_deliver() {
    let receiver = ElasticsearchReceiver::start().await;
    let other = ElasticsearchReceiver::start().await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let origin = receiver.origin();
    dir.install_with_manifest("es_a", "elasticsearch", &manifest(&[receiver.origin()], ""));
    dir.install_with_manifest("es_b", "elasticsearch", &manifest(&[other.origin()], ""));
    let server = start_server(&db, &dir, &["es_a", "es_b"]).await;
    // The broken ones arrive while it runs (the watcher loads them), so the
    // start does not wait for eight compilations.
    for (name, text) in [
        ("es_numbers", format!("[capabilities]\nallowed_hosts = [\"{origin}\"]\n[config]\nhosts = [7]\n")),
        ("es_nohosts", "[config]\nmode = \"indices\"\n".to_string()),
        ("es_badurl", "[config]\nhosts = [\"ftp://127.0.0.1:9200\"]\n".to_string()),
        ("es_badmode", format!("[capabilities]\nallowed_hosts = [\"{origin}\"]\n[config]\nhosts = [\"{origin}\"]\nmode = \"bulk\"\n")),
        ("es_denied", format!("[config]\nhosts = [\"{origin}\"]\n")),
        ("es_nokey", format!("[capabilities]\nallowed_hosts = [\"{origin}\"]\n[config]\nhosts = [\"{origin}\"]\napi_key = \"${{ES_TEST_MISSING_KEY}}\"\n")),
    ] {
        dir.install_with_manifest(name, "elasticsearch", &text);
    }
    for (name, needle) in [
        ("es_numbers", "config.hosts[0]: expected string"),
        ("es_nohosts", "config.hosts: required"),
        ("es_badurl", "config.hosts[0]: must be an http(s) URL"),
        ("es_badmode", "config.mode: must be one of"),
        ("es_denied", "allowed_hosts"),
        ("es_nokey", "ES_TEST_MISSING_KEY}, which is not set"),
    ] {
        let p = server
            .wait_plugin(name, WAIT, "failed", |p| p["state"] == "failed")
            .await;
        let e = p["last_error"].as_str().unwrap_or("");
        assert!(e.contains(needle), "{name}: {needle:?} not in {p:#}");
    }
    // One receiver down holds up none of the others.
    other.set_unauthorized(true);
    let component = unique("two");
    server
        .report_ok(&report(
            &component,
            (0..10).map(|i| gauge("two_value", i as f64)),
        ))
        .await;
    let a = wait_lag_zero(&server, "es_a").await;
    assert_eq!(a["delivered"], 10, "{a:#}");
    let b = server
        .wait_publisher("es_b", WAIT, "401", |p| {
            p["last_error"].as_str().is_some_and(|e| e.contains("401"))
        })
        .await;
    assert_eq!(b["lag"], 10, "{b:#}");
    assert_eq!(receiver.docs().len(), 10);
    assert_eq!(other.docs().len(), 0);
    // Still failed, not restarting in a loop.
    let p = server.plugin("es_badmode").await.expect("listed");
    assert_eq!(p["state"], "failed", "{p:#}");
    assert_eq!(p["restarts"], 0, "{p:#}");
    let pubs = server.publishers().await;
    let listed = pubs.iter().find(|p| p["name"] == "es_denied");
    if let Some(p) = listed {
        assert!(p.to_string().contains("allowed_hosts"), "{p:#}");
    }
}
