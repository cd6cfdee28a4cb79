//! PromQL over Vigil's stored samples agrees with a real Prometheus over the
//! same samples. The samples (counters with a reset and a gap, gauges at
//! three different intervals) are reported to Vigil with their timestamps
//! and backfilled into Debian's `prometheus` with `promtool tsdb
//! create-blocks-from openmetrics`; then every expression below is asked of
//! both at several instants — Vigil through `GET /api/v2/query`, the code
//! alert rules run — and the label sets and values must match. Instants are
//! chosen off the sample grid, so Prometheus 2's closed range start and
//! Prometheus 3's open one (Vigil's) select the same samples.

use std::collections::BTreeMap;

use vigil_tests::*;

/// `(component, extra label, interval s, samples, value of sample i)`.
type Series = (
    &'static str,
    Option<(&'static str, &'static str)>,
    i64,
    i64,
    fn(i64) -> Option<f64>,
);

fn counter_series() -> Vec<Series> {
    vec![
        // Rises, resets at sample 40, rises again.
        ("w1", None, 15, 80, |i| {
            Some(if i < 40 {
                (3 * i + i % 4) as f64
            } else {
                ((i - 40) * 2) as f64
            })
        }),
        // Every 10 s with a two-minute gap.
        ("w2", None, 10, 120, |i| {
            (!(30..42).contains(&i)).then_some(1.5 * i as f64)
        }),
    ]
}

fn gauge_series() -> Vec<Series> {
    vec![
        ("w1", Some(("pool", "a")), 10, 120, |i| {
            Some(((i * 7) % 23) as f64)
        }),
        ("w2", Some(("pool", "b")), 20, 60, |i| {
            Some(((i * 5) % 17) as f64 + 0.5)
        }),
        ("w3", Some(("pool", "a")), 30, 40, |i| Some(i as f64 * 0.25)),
    ]
}

const EXPRESSIONS: &[&str] = &[
    "queue_depth",
    "queue_depth > 5",
    "queue_depth > bool 5",
    "queue_depth{pool=~\"a|c\"}",
    "queue_depth{pool!=\"a\"}",
    "queue_depth{pool!~\"b\", component=\"w1\"}",
    "rate(jobs_total[1m])",
    "rate(jobs_total[5m])",
    "increase(jobs_total[2m])",
    "delta(queue_depth[3m])",
    "avg_over_time(queue_depth[2m])",
    "min_over_time(queue_depth[2m])",
    "max_over_time(queue_depth[4m])",
    "sum_over_time(queue_depth[1m])",
    "count_over_time(jobs_total[5m])",
    "sum by (pool) (queue_depth)",
    "avg without (component) (queue_depth)",
    "max(queue_depth)",
    "min by (component) (rate(jobs_total[5m]))",
    "count(queue_depth)",
    "queue_depth * 2 + 1",
    "2 * queue_depth - queue_depth / 4",
    "queue_depth - on (component) rate(jobs_total[5m])",
    "queue_depth offset 1m",
    "rate(jobs_total[2m] offset 30s)",
    "sum(rate(jobs_total[5m])) > 0.1",
    "absent(queue_depth{component=\"nowhere\"})",
    "absent(queue_depth)",
];

/// The labels and value of each element of an instant-query answer.
fn elements(result: &[Value]) -> BTreeMap<String, f64> {
    result
        .iter()
        .map(|e| {
            let labels: BTreeMap<String, String> =
                serde_json::from_value(e["metric"].clone()).expect("labels");
            let v: f64 = e["value"][1]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("value");
            (format!("{labels:?}"), v)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

async fn instant_queries_match_a_real_prometheus(backend: Backend) {
    if !PrometheusServer::available() {
        return;
    }
    // Two hours back, on a minute boundary: inside both retentions.
    let now = chrono::Utc::now().timestamp();
    let base_s = (now - 2 * 3600) / 60 * 60;
    let mut om = String::new();
    let db = TestDatabase::new(&backend).await;
    let server = TestServer::start(&db).await;
    for (family, kind, sample, series) in [
        ("jobs", "counter", "jobs_total", counter_series()),
        ("queue_depth", "gauge", "queue_depth", gauge_series()),
    ] {
        om.push_str(&format!("# TYPE {family} {kind}\n"));
        for (component, extra, every, n, value) in series {
            let mut items = Vec::new();
            for i in 0..n {
                let Some(v) = value(i) else { continue };
                let ts = base_s + i * every;
                let mut labels = format!("component=\"{component}\"");
                let mut item =
                    MetricItem::new(family, kind, v).at(&chrono::DateTime::from_timestamp(ts, 0)
                        .expect("time")
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                if let Some((k, val)) = extra {
                    labels.push_str(&format!(",{k}=\"{val}\""));
                    item = item.label(k, val);
                }
                om.push_str(&format!("{sample}{{{labels}}} {v} {ts}\n"));
                items.push(item);
            }
            server.report_ok(&report(component, items)).await;
        }
    }
    om.push_str("# EOF\n");
    let Some(prom) = PrometheusServer::start(PrometheusOptions {
        backfill: Some(om),
        ..Default::default()
    })
    .await
    else {
        return;
    };
    let mut compared = 0;
    // Off the sample grid (s + ms), inside the data, just after it, and past
    // the lookback.
    for offset_ms in [300_700, 577_300, 905_100, 1_203_900, 1_212_345, 1_560_250] {
        let t = base_s as f64 + offset_ms as f64 / 1000.0;
        for expr in EXPRESSIONS {
            let want = elements(&prom.query(expr, Some(t)).await);
            let resp = server
                .client()
                .get(server.url("/api/v2/query"))
                .query(&[("query", expr.to_string()), ("time", format!("{t:.3}"))])
                .send()
                .await
                .expect("vigil query");
            let (status, body) = status_json(resp).await;
            assert_eq!(status, 200, "{expr} at {t}: {body:#}");
            assert_eq!(body["status"], "success");
            let got = elements(body["data"]["result"].as_array().expect("result"));
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                want.keys().collect::<Vec<_>>(),
                "{expr} at +{offset_ms} ms: label sets differ\nvigil: {got:?}\nprometheus: {want:?}"
            );
            for (labels, w) in &want {
                assert!(
                    close(got[labels], *w),
                    "{expr} at +{offset_ms} ms {labels}: vigil {} prometheus {w}",
                    got[labels]
                );
            }
            compared += want.len();
        }
    }
    assert!(
        compared > 200,
        "only {compared} values compared: the data did not load"
    );

    // What neither can answer is refused with the reason, not a 500.
    for (q, status) in [
        ("rate(", 400),
        ("label_replace(up, \"a\", \"b\", \"c\", \"d\")", 400),
    ] {
        let resp = server
            .client()
            .get(server.url("/api/v2/query"))
            .query(&[("query", q)])
            .send()
            .await
            .expect("vigil query");
        let (got, body) = status_json(resp).await;
        assert_eq!(got, status, "{q}: {body:#}");
    }
}

backend_tests!(instant_queries_match_a_real_prometheus);
