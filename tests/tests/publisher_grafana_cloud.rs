//! The first-party remote-write publisher (`plugins/grafana-cloud`) against a
//! real Prometheus (`--web.enable-remote-write-receiver`): samples read back
//! at their own timestamps with exact names, labels and values; a sample
//! Prometheus refuses (out of order) is a dead letter with Prometheus's
//! message while the rest of its batch is delivered; identical samples sent
//! again are accepted; credentials refused are permanent and named.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use vigil_tests::*;

const WAIT: Duration = Duration::from_secs(60);

fn manifest(endpoint: &str, origin: &str, extra: &str) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{origin}\"]\n[config]\nendpoint = \"{endpoint}\"\ntenant = \"vigil-test\"\n{extra}"
    )
}

/// A manifest that sends samples to `metrics` and events to Loki at
/// `loki_origin` (`push_url` on it).
fn loki_manifest(metrics: &WebhookReceiver, loki_origin: &str, push_url: &str) -> String {
    format!(
        "[capabilities]\nallowed_hosts = [\"{}\", \"{loki_origin}\"]\n[config]\nendpoint = \"{}\"\nloki_endpoint = \"{push_url}\"\n",
        metrics.origin(),
        metrics.url("/api/v1/write"),
    )
}

async fn start(prom: &PrometheusServer, db: &TestDatabase, dir: &PluginDir) -> TestServer {
    let origin = format!("http://{}", prom.addr());
    let manifest = manifest(&prom.remote_write_url(), &origin, "");
    serve_with(db, dir, "rw", &manifest).await
}

/// Installs the `grafana-cloud` plugin as `name` with this manifest, starts a
/// server with it and waits until its cursor is open.
async fn serve_with(db: &TestDatabase, dir: &PluginDir, name: &str, manifest: &str) -> TestServer {
    dir.install_with_manifest(name, "grafana-cloud", manifest);
    let server = TestServer::builder(db).plugin_dir(dir.path()).start().await;
    server
        .wait_publisher(name, WAIT, "cursor opened", |p| p["cursor_seq"] == 0)
        .await;
    server
}

/// RFC 3339 of now minus `secs`, and the same instant in Unix seconds.
fn ago(secs: i64) -> (String, f64) {
    let t = chrono::Utc::now() - chrono::Duration::seconds(secs);
    let t = chrono::DateTime::from_timestamp_millis(t.timestamp_millis()).expect("time");
    (
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        t.timestamp_millis() as f64 / 1000.0,
    )
}

/// A real Prometheus with its remote-write receiver on (`None` after a
/// loud skip when it is not installed).
async fn receiving_prometheus() -> Option<PrometheusServer> {
    PrometheusServer::start(PrometheusOptions {
        remote_write_receiver: true,
        ..Default::default()
    })
    .await
}

/// The one series `expr` returns at `time`: its labels and value.
async fn one(prom: &PrometheusServer, expr: &str, time: f64) -> (Value, String) {
    let result = prom.query(expr, Some(time)).await;
    assert_eq!(result.len(), 1, "{expr} at {time}: {result:?}");
    let value = result[0]["value"][1].as_str().expect("value").to_string();
    (result[0]["metric"].clone(), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_read_back_exactly_from_a_real_prometheus() {
    let Some(prom) = receiving_prometheus().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&prom, &db, &dir).await;
    let component = unique("rw");
    let (t1, s1) = ago(40);
    let (t2, s2) = ago(20);
    server
        .report_ok(&report(
            &component,
            [
                gauge("rw_depth", 1.5).label("queue", "a").at(&t1),
                gauge("rw_depth", 2.25).label("queue", "a").at(&t2),
                gauge("rw_depth", -7.0)
                    .label("queue", "b")
                    .label("component", "inner")
                    .at(&t1),
                counter("rw_jobs", 7.0).at(&t1),
                counter("rw_done_total", 3.0).at(&t2),
                histogram("rw_latency_seconds", 0.2).at(&t2),
            ],
        ))
        .await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], 5, "{p:#}");
    assert_eq!(
        p["dead_lettered"], 1,
        "observations are dead letters without derived_series: {p:#}"
    );
    assert_eq!(p["last_error"], Value::Null, "{p:#}");
    let (_, page) = status_json(server.get("/api/v2/publishers/rw/dead-letters").await).await;
    let reason = page["dead_letters"][0]["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("derived_series = true"), "{page:#}");

    let sel = |name: &str, extra: &str| format!("{name}{{component=\"{component}\"{extra}}}");
    let (labels, v) = one(&prom, &sel("rw_depth", ",queue=\"a\""), s1).await;
    assert_eq!(v, "1.5");
    assert_eq!(
        labels,
        json!({"__name__": "rw_depth", "component": component, "queue": "a"})
    );
    let (_, v) = one(&prom, &sel("rw_depth", ",queue=\"a\""), s2).await;
    assert_eq!(v, "2.25");
    let (labels, v) = one(&prom, &sel("rw_depth", ",queue=\"b\""), s1).await;
    assert_eq!(v, "-7");
    assert_eq!(
        labels,
        json!({"__name__": "rw_depth", "component": component, "queue": "b", "exported_component": "inner"})
    );
    // Counters take their exported `_total` name, as on Vigil's /metrics.
    let (_, v) = one(&prom, &sel("rw_jobs_total", ""), s1).await;
    assert_eq!(v, "7");
    assert!(prom.query(&sel("rw_jobs", ""), Some(s1)).await.is_empty());
    let (_, v) = one(&prom, &sel("rw_done_total", ""), s2).await;
    assert_eq!(v, "3");
    // Exactly at its timestamp: nothing before it.
    assert!(prom
        .query(&sel("rw_done_total", ""), Some(s2 - 0.001))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_order_sample_is_a_dead_letter_and_the_rest_of_its_batch_arrives() {
    let Some(prom) = receiving_prometheus().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let server = start(&prom, &db, &dir).await;
    let component = unique("ooo");
    let (t_new, s_new) = ago(10);
    let (t_old, _) = ago(60);
    server
        .report_ok(&report(&component, [gauge("ooo_value", 1.0).at(&t_new)]))
        .await;
    server
        .wait_publisher("rw", WAIT, "first delivered", |p| p["delivered"] == 1)
        .await;
    // A client reports an older timestamp for the same series, among good
    // samples, and the identical first sample again (as after a crash).
    let (t_a, s_a) = ago(5);
    let mut items = vec![
        gauge("ooo_value", 2.0).at(&t_old),
        gauge("ooo_value", 1.0).at(&t_new),
    ];
    items.extend((0..20).map(|i| {
        gauge("ooo_other", i as f64)
            .label("i", &i.to_string())
            .at(&t_a)
    }));
    server.report_ok(&report(&component, items)).await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["dead_lettered"], 1, "{p:#}");
    assert_eq!(p["delivered"], 22, "{p:#}");
    let (_, page) = status_json(server.get("/api/v2/publishers/rw/dead-letters").await).await;
    let letters = page["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 1, "{page:#}");
    assert_eq!(letters[0]["item"]["value"], 2.0, "{page:#}");
    let reason = letters[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("400") && reason.contains("out of order"),
        "{reason}"
    );
    // Everything else is there.
    let other = prom
        .query(
            &format!("ooo_other{{component=\"{component}\"}}"),
            Some(s_a),
        )
        .await;
    assert_eq!(other.len(), 20, "{other:?}");
    let (_, v) = one(
        &prom,
        &format!("ooo_value{{component=\"{component}\"}}"),
        s_new,
    )
    .await;
    assert_eq!(v, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_permanent_and_named() {
    let receiver = WebhookReceiver::start().await;
    receiver.set_handler(|_, _| {
        Reply::status(401)
            .json(&json!({"status": "error", "error": "authentication error: invalid token"}))
    });
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let manifest = manifest(
        &receiver.url("/api/prom/push"),
        &receiver.origin(),
        "username = \"123456\"\napi_key = \"glc_x\"\n",
    );
    let server = serve_with(&db, &dir, "rw", &manifest).await;
    server
        .report_ok(&report(&unique("auth"), [gauge("auth_value", 1.0)]))
        .await;
    let p = server
        .wait_publisher("rw", WAIT, "401", |p| {
            p["last_error"].as_str().is_some_and(|e| e.contains("401"))
        })
        .await;
    let e = p["last_error"].as_str().expect("error");
    assert!(
        e.contains("config.username/api_key") && e.contains("invalid token"),
        "{e}"
    );
    assert_eq!(p["lag"], 1, "{p:#}");
    let r = &receiver.requests()[0];
    assert_eq!(r.path, "/api/prom/push");
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("content-encoding"), Some("snappy"));
    assert_eq!(r.header("x-prometheus-remote-write-version"), Some("0.1.0"));
    assert_eq!(r.header("x-scope-orgid"), Some("vigil-test"));
    assert_eq!(r.header("authorization"), Some("Basic MTIzNDU2OmdsY194"));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .expect("snappy block format");
    assert!(
        raw.windows(10).any(|w| w == b"auth_value"),
        "protobuf carries the name"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_loki_in_time_order_once_each_and_refused_entries_are_dead_letters() {
    let metrics = WebhookReceiver::start().await;
    let loki = LokiReceiver::start().await;
    loki.fail_next(&[503, 429]);
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let manifest = loki_manifest(&metrics, &loki.origin(), &loki.push_url());
    let server = serve_with(&db, &dir, "gc", &manifest).await;
    let t = 1_700_000_000.0;
    let first = post_events(
        &server,
        &json!([
            {"event_type": "TaskCreated", "session_id": "s1", "task_id": "t2", "backend": "dim", "event_time": t + 2.0},
            {"event_type": "TaskCreated", "session_id": "s1", "task_id": "t1", "backend": "dim", "event_time": t + 1.0},
        ]),
    )
    .await;
    let p = server
        .wait_publisher("gc", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], 2, "{p:#}");
    // An older entry for the same stream, beside one of another stream.
    let second = post_events(
        &server,
        &json!([
            {"event_type": "TaskCreated", "session_id": "s1", "task_id": "t0", "backend": "dim", "event_time": t},
            {"event_type": "TaskFailed", "session_id": "s1", "task_id": "t3", "backend": "dim", "event_time": t},
        ]),
    )
    .await;
    let p = server
        .wait_publisher("gc", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["dead_lettered"], 1, "{p:#}");
    assert_eq!(p["delivered"], 3, "{p:#}");
    assert_eq!(loki.violations(), Vec::<String>::new());
    assert!(loki.pushes() >= 5, "{}", loki.pushes());

    let (_, page) = status_json(server.get("/api/v2/publishers/gc/dead-letters").await).await;
    let letters = page["dead_letters"].as_array().expect("dead_letters");
    assert_eq!(letters.len(), 1, "{page:#}");
    assert_eq!(letters[0]["seq"], second[0], "{page:#}");
    let reason = letters[0]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("400") && reason.contains("entry out of order"),
        "{reason}"
    );

    let streams = loki.streams();
    let created = &streams["{backend=\"dim\", event_type=\"TaskCreated\", service=\"vigil\"}"];
    let ns: Vec<i128> = created.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        ns,
        vec![1_700_000_001_000_000_000, 1_700_000_002_000_000_000],
        "{streams:?}"
    );
    let lines = loki.lines();
    let mut seqs: Vec<i64> = lines
        .iter()
        .map(|(_, l)| l["seq"].as_i64().expect("seq"))
        .collect();
    seqs.sort_unstable();
    let mut expected = vec![first[0], first[1], second[1]];
    expected.sort_unstable();
    assert_eq!(seqs, expected, "each event once");
    let (_, line) = lines
        .iter()
        .find(|(_, l)| l["seq"] == first[1])
        .expect("line");
    assert_eq!(line["event_type"], "TaskCreated");
    assert_eq!(line["attributes"]["task_id"], "t1");
    assert_eq!(line["timestamp_ms"], 1_700_000_001_000i64);
    // No samples were reported: nothing went to remote-write.
    assert_eq!(metrics.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_outage_delays_samples_without_losing_any() {
    let Some(prom) = receiving_prometheus().await else {
        return;
    };
    let mut proxy = TcpProxy::start(prom.addr()).await;
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let origin = format!("http://{}", proxy.addr());
    let manifest = manifest(&format!("{origin}/api/v1/write"), &origin, "");
    let server = serve_with(&db, &dir, "rw", &manifest).await;
    proxy.stop().await;
    let component = unique("outage");
    let (t, s) = ago(15);
    server
        .report_ok(&report(
            &component,
            (0..30).map(|i| {
                gauge("outage_value", i as f64)
                    .label("i", &i.to_string())
                    .at(&t)
            }),
        ))
        .await;
    let p = server
        .wait_publisher("rw", WAIT, "a connection error", |p| {
            p["last_error"].is_string()
        })
        .await;
    assert_eq!(p["delivered"], 0, "{p:#}");
    proxy.start_again().await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], 30, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    let result = prom
        .query(
            &format!("outage_value{{component=\"{component}\"}}"),
            Some(s),
        )
        .await;
    assert_eq!(result.len(), 30, "{result:?}");
    for r in &result {
        let i = r["metric"]["i"].as_str().expect("i");
        assert_eq!(r["value"][1].as_str(), Some(i), "{r}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loki_outage_then_503s_then_recovery_delivers_every_event_once() {
    let metrics = WebhookReceiver::start().await;
    let loki = LokiReceiver::start().await;
    let mut proxy = TcpProxy::start(loki.addr()).await;
    let origin = format!("http://{}", proxy.addr());
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let manifest = loki_manifest(&metrics, &origin, &format!("{origin}/loki/api/v1/push"));
    let server = serve_with(&db, &dir, "gc", &manifest).await;
    // Down: nothing listens where the plugin sends.
    proxy.stop().await;
    let t = 1_700_000_000.0;
    let events: Vec<Value> = (0..20)
        .map(|i| {
            json!({"event_type": "TaskCompleted", "session_id": "s-out", "task_id": format!("t{i}"),
                   "backend": "dim", "event_time": t + i as f64})
        })
        .collect();
    let seqs = post_events(&server, &Value::Array(events)).await;
    let p = server
        .wait_publisher("gc", WAIT, "a connection error", |p| {
            p["last_error"].is_string()
        })
        .await;
    assert_eq!(p["delivered"], 0, "{p:#}");
    assert_eq!(loki.pushes(), 0, "nothing reached Loki while it was down");
    // Up again, but answering 503 (with Retry-After) twice, then 200.
    loki.fail_next(&[503, 503]);
    proxy.start_again().await;
    let p = server
        .wait_publisher("gc", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], 20, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    assert!(
        loki.pushes() >= 3,
        "the 503s were answered: {}",
        loki.pushes()
    );
    assert_eq!(loki.violations(), Vec::<String>::new());
    let mut got: Vec<i64> = loki
        .lines()
        .iter()
        .map(|(_, l)| l["seq"].as_i64().expect("seq"))
        .collect();
    got.sort_unstable();
    let mut expected = seqs.clone();
    expected.sort_unstable();
    assert_eq!(got, expected, "every event once");
    let streams = loki.streams();
    let ns: Vec<i128> = streams
        .values()
        .flat_map(|v| v.iter().map(|(t, _)| *t))
        .collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in time order: {ns:?}");
    assert_eq!(metrics.count(), 0);
}

/// A manifest sending to `endpoint` with derived histogram/summary series.
fn derived_manifest(endpoint: &str, origin: &str) -> String {
    manifest(endpoint, origin, "") + "[delivery]\nderived_series = true\n"
}

/// `expr`'s result as `labels → value`, without the labels only a scrape
/// has: `job`, `instance` (Prometheus's) and `component_type` (the export
/// adds the component's registered type; remote-write sends `component`).
async fn by_labels(prom: &PrometheusServer, expr: &str) -> BTreeMap<String, String> {
    prom.query(expr, None)
        .await
        .into_iter()
        .map(|r| {
            let labels: BTreeMap<String, Value> = r["metric"]
                .as_object()
                .expect("labels")
                .iter()
                .filter(|(k, _)| !["job", "instance", "component_type"].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let value = r["value"][1].as_str().expect("value").to_string();
            (format!("{labels:?}"), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_histogram_and_summary_series_agree_with_a_scrape_of_vigil() {
    let Some(rw) = receiving_prometheus().await else {
        return;
    };
    let db = TestDatabase::new(&Backend::Sqlite).await;
    let dir = PluginDir::new();
    let origin = format!("http://{}", rw.addr());
    let server = serve_with(
        &db,
        &dir,
        "rw",
        &derived_manifest(&rw.remote_write_url(), &origin),
    )
    .await;
    let component = unique("derived");
    let times: Vec<(String, f64)> = [50, 40, 30, 20].iter().map(|s| ago(*s)).collect();
    let lat = |v: f64, t: usize| {
        histogram("d_latency_seconds", v)
            .label("path", "/a")
            .label("le", "0.1,0.5,1,+Inf")
            .at(&times[t].0)
    };
    let q = |v: f64, t: usize| {
        summary("d_size_bytes", v)
            .label("quantile", "0.5,0.9")
            .at(&times[t].0)
    };
    // Two observations of one series share a timestamp (t1), and one
    // default-bucket histogram has a single observation.
    let observations = vec![
        lat(0.05, 0),
        lat(0.3, 1),
        lat(0.7, 1),
        lat(2.0, 2),
        lat(0.4, 3),
        q(100.0, 0),
        q(300.0, 1),
        q(200.0, 2),
        histogram("d_plain", 0.02).at(&times[3].0),
        gauge("d_depth", 4.0).at(&times[3].0),
    ];
    let n = observations.len();
    server.report_ok(&report(&component, observations)).await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], n, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    assert_eq!(p["last_error"], Value::Null, "{p:#}");

    let Some(scrape) = PrometheusServer::start(PrometheusOptions {
        scrape_targets: vec![server.metrics_addr().expect("metrics listener").to_string()],
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let sel = |name: &str| format!("{name}{{component=\"{component}\"}}");
    scrape.query_until_some(&sel("d_plain_count"), WAIT).await;
    // Every derived series, labels and values, as the scrape shows it.
    for name in [
        "d_latency_seconds_bucket",
        "d_latency_seconds_sum",
        "d_latency_seconds_count",
        "d_size_bytes",
        "d_size_bytes_sum",
        "d_size_bytes_count",
        "d_plain_bucket",
        "d_plain_count",
    ] {
        let remote = by_labels(&rw, &sel(name)).await;
        assert!(!remote.is_empty(), "{name} not remote-written");
        assert_eq!(remote, by_labels(&scrape, &sel(name)).await, "{name}");
    }
    for expr in [
        "histogram_quantile(0.9, d_latency_seconds_bucket{C})",
        "histogram_quantile(0.5, d_latency_seconds_bucket{C})",
        "histogram_quantile(0.99, sum by (le) (d_plain_bucket{C}))",
        "d_latency_seconds_sum{C} / d_latency_seconds_count{C}",
    ] {
        let expr = expr.replace("{C}", &format!("{{component=\"{component}\"}}"));
        let remote = by_labels(&rw, &expr).await;
        assert_eq!(remote.len(), 1, "{expr}: {remote:?}");
        assert_eq!(remote, by_labels(&scrape, &expr).await, "{expr}");
    }
    // What a scrape cannot show: the aggregate at each observation's time.
    let le = |bound: &str| {
        format!("d_latency_seconds_bucket{{component=\"{component}\",le=\"{bound}\"}}")
    };
    for (t, count, under_half) in [(0, "1", "1"), (1, "3", "2"), (2, "4", "2"), (3, "5", "3")] {
        let (_, v) = one(&rw, &le("+Inf"), times[t].1).await;
        assert_eq!(v, count, "count at t{t}");
        let (_, v) = one(&rw, &le("0.5"), times[t].1).await;
        assert_eq!(v, under_half, "le=0.5 at t{t}");
    }
    let (_, v) = one(&rw, &sel("d_size_bytes_sum"), times[1].1).await;
    assert_eq!(v, "400");

    // An observation reported with an older timestamp than the series' last:
    // Prometheus refuses its derived samples, so the observation is a dead
    // letter with Prometheus's message; the next one's samples include it.
    let (t_late, s_late) = ago(5);
    server
        .report_ok(&report(
            &component,
            [
                histogram("d_latency_seconds", 0.2)
                    .label("path", "/a")
                    .at(&times[0].0),
                histogram("d_latency_seconds", 0.9)
                    .label("path", "/a")
                    .at(&t_late),
            ],
        ))
        .await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["dead_lettered"], 1, "{p:#}");
    assert_eq!(p["delivered"], n + 1, "{p:#}");
    let (_, page) = status_json(server.get("/api/v2/publishers/rw/dead-letters").await).await;
    let letter = &page["dead_letters"][0];
    assert_eq!(letter["item"]["value"], 0.2, "{page:#}");
    assert_eq!(letter["item"]["kind"], "histogram", "{page:#}");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("out of"),
        "Prometheus's message: {page:#}"
    );
    let (_, v) = one(&rw, &le("+Inf"), s_late).await;
    assert_eq!(v, "7", "both late observations are counted");
    let (_, v) = one(&rw, &le("0.5"), s_late).await;
    assert_eq!(v, "4");
}

/// Observations the publisher had not delivered when Vigil restarted
/// continue the counts from the store's aggregate, not from zero.
async fn derived_series_continue_from_the_store_after_a_restart(backend: Backend) {
    let Some(rw) = receiving_prometheus().await else {
        return;
    };
    let mut proxy = TcpProxy::start(rw.addr()).await;
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let origin = format!("http://{}", proxy.addr());
    let mut server = serve_with(
        &db,
        &dir,
        "rw",
        &derived_manifest(&format!("{origin}/api/v1/write"), &origin),
    )
    .await;
    let component = unique("restart");
    let times: Vec<(String, f64)> = [50, 40, 30].iter().map(|s| ago(*s)).collect();
    let obs = |v: f64, t: usize| histogram("r_lat", v).label("le", "1").at(&times[t].0);
    server
        .report_ok(&report(
            &component,
            [obs(0.5, 0), obs(2.0, 0), obs(0.25, 0)],
        ))
        .await;
    server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    proxy.stop().await;
    server
        .report_ok(&report(&component, [obs(0.75, 1), obs(3.0, 1)]))
        .await;
    server
        .wait_publisher("rw", WAIT, "a connection error", |p| {
            p["last_error"].is_string()
        })
        .await;
    server.restart().await;
    server.report_ok(&report(&component, [obs(0.125, 2)])).await;
    proxy.start_again().await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["delivered"], 6, "{p:#}");
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    let at = |name: &str, extra: &str| format!("{name}{{component=\"{component}\"{extra}}}");
    for (t, count, le1, sum) in [
        (0, "3", "2", "2.75"),
        (1, "5", "3", "6.5"),
        (2, "6", "4", "6.625"),
    ] {
        let (_, v) = one(&rw, &at("r_lat_count", ""), times[t].1).await;
        assert_eq!(v, count, "count at t{t}");
        let (_, v) = one(&rw, &at("r_lat_bucket", ",le=\"1\""), times[t].1).await;
        assert_eq!(v, le1, "le=1 at t{t}");
        let (_, v) = one(&rw, &at("r_lat_sum", ""), times[t].1).await;
        assert_eq!(v, sum, "sum at t{t}");
    }
}

/// SIGKILL while samples are being reported and delivered; after the
/// restart Prometheus holds every acknowledged sample (re-sent identical
/// samples are accepted, none is a dead letter).
async fn a_sigkill_mid_delivery_loses_no_acknowledged_sample(backend: Backend) {
    let Some(prom) = receiving_prometheus().await else {
        return;
    };
    let db = TestDatabase::new(&backend).await;
    let dir = PluginDir::new();
    let origin = format!("http://{}", prom.addr());
    let mut server = serve_with(
        &db,
        &dir,
        "rw",
        &manifest(&prom.remote_write_url(), &origin, ""),
    )
    .await;
    let component = unique("kill");
    // One series per sample (label `i`), so samples of one report, which
    // share the receive time, never meet at one timestamp of one series.
    let c = component.clone();
    let (_stop, acked, reporter) =
        start_reporter_with(&server, 10, Duration::from_millis(20), move |n| {
            report(
                &c,
                (n..n + 10).map(|i| gauge("kill_value", i as f64).label("i", &i.to_string())),
            )
        });
    poll_until(WAIT, "deliveries and a backlog", || {
        let (a, server) = (acked.load(Ordering::SeqCst), &server);
        async move {
            let p = server.publisher("rw").await?;
            (a >= 300 && p["delivered"].as_i64()? >= 50 && p["lag"].as_i64()? > 0).then_some(())
        }
    })
    .await;
    server.kill();
    reporter.await.expect("reporter");
    let acked = acked.load(Ordering::SeqCst);
    server.restart().await;
    let p = server
        .wait_publisher("rw", WAIT, "lag 0", |p| p["lag"] == 0)
        .await;
    assert_eq!(p["dead_lettered"], 0, "{p:#}");
    let stored = server.stored_seqs(&component).await;
    assert!(
        stored.len() >= acked,
        "{} stored < {acked} acknowledged",
        stored.len()
    );
    let result = prom
        .query(&format!("kill_value{{component=\"{component}\"}}"), None)
        .await;
    let mut values: Vec<i64> = result
        .iter()
        .map(|r| {
            let i: i64 = r["metric"]["i"]
                .as_str()
                .expect("i")
                .parse()
                .expect("number");
            assert_eq!(r["value"][1].as_str(), Some(i.to_string().as_str()), "{r}");
            i
        })
        .collect();
    values.sort_unstable();
    let expected: Vec<i64> = (0..stored.len() as i64).collect();
    assert_eq!(values, expected, "every stored sample, once");
    eprintln!(
        "kill ({}): {} stored, {acked} acknowledged, {} delivered",
        backend.name(),
        stored.len(),
        p["delivered"]
    );
}

backend_tests!(
    derived_series_continue_from_the_store_after_a_restart,
    a_sigkill_mid_delivery_loses_no_acknowledged_sample,
);
