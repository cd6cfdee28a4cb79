//! Alert-rule evaluation benchmark: 1,000 rules over 100,000 series (500
//! jobs × 100 instances × 2 metrics, 40 samples each) evaluated in memory at
//! one instant, as one evaluator tick does once the samples are read; and a
//! preview's inner loop, one series over 24 hours at a 15 s step (5,760
//! evaluations); and the tick again with every rule's alert states moved.
//! Prints the best of five runs of each.
//!
//! `cargo bench -p vigil-host --bench alerting`

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::alerts::engine::vector_of;
use vigil_host::alerts::promql::{parse, Data, SeriesData};
use vigil_host::alerts::rules::RuleSpec;
use vigil_host::alerts::state::RuleState;

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;

fn series(pairs: &[(&str, &str)], samples: Vec<(i64, f64)>) -> SeriesData {
    let labels: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    SeriesData {
        labels: Arc::new(labels),
        samples,
    }
}

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        f();
        best = best.min(start.elapsed());
    }
    best
}

fn main() {
    let t = 1_700_000_000_000_i64;
    let mut by_job: HashMap<String, Vec<SeriesData>> = HashMap::new();
    for job in 0..500 {
        let job = format!("j{job}");
        for instance in 0..100_i64 {
            let inst = format!("i{instance}");
            for name in ["http_requests_total", "temp"] {
                let samples = (0..40)
                    .map(|i| {
                        (
                            t - 10 * MINUTE + i * 15 * SECOND + instance * 7,
                            (i * (instance + 1)) as f64,
                        )
                    })
                    .collect();
                by_job.entry(job.clone()).or_default().push(series(
                    &[("__name__", name), ("job", &job), ("instance", &inst)],
                    samples,
                ));
            }
        }
    }
    let templates = [
        r#"sum by (instance) (rate(http_requests_total{job="JOB"}[5m])) > 0.5"#,
        r#"rate(http_requests_total{job="JOB"}[5m]) > 1"#,
        r#"avg_over_time(temp{job="JOB"}[5m]) > 10"#,
        r#"temp{job="JOB"} / on(instance) rate(http_requests_total{job="JOB"}[5m]) > 3"#,
    ];
    let rules: Vec<_> = (0..1000)
        .map(|r| {
            let job = format!("j{}", r % 500);
            let q = parse(&templates[r % templates.len()].replace("JOB", &job)).expect("parses");
            let data = Data {
                series: q
                    .selectors()
                    .iter()
                    .map(|sel| {
                        by_job[&job]
                            .iter()
                            .filter(|s| sel.matches(&s.labels))
                            .cloned()
                            .collect()
                    })
                    .collect(),
            };
            (q, data)
        })
        .collect();
    let read: usize = rules
        .iter()
        .map(|(_, d)| d.series.iter().map(Vec::len).sum::<usize>())
        .sum();
    let mut elements = 0;
    let tick = best_of(5, || {
        elements = 0;
        for (q, data) in &rules {
            if let Ok(vigil_host::alerts::promql::Value::Vector(v)) = q.eval(t, data) {
                elements += v.len();
            }
        }
    });
    println!(
        "1,000 rules reading {read} series: {:.1} ms per tick ({elements} result elements)",
        tick.as_secs_f64() * 1e3
    );

    // The same tick with each rule's alerts moved (`for: 1m`), as the
    // evaluator does after evaluating: alert label sets, fingerprints and
    // the pending/firing bookkeeping of every element.
    let no_channels = |_: &str| None;
    let specs: Vec<RuleSpec> = rules
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let body = serde_json::json!({
                "name": format!("R{i}"),
                "expr": templates[i % templates.len()].replace("JOB", &format!("j{}", i % 500)),
                "for": "1m",
            });
            vigil_host::alerts::rules::parse(body.to_string().as_bytes(), None, &no_channels)
                .expect("rule")
        })
        .collect();
    let mut states: Vec<RuleState> = vec![RuleState::default(); rules.len()];
    let mut at = t;
    let tick = best_of(5, || {
        at += 15 * SECOND;
        for (((q, data), spec), state) in rules.iter().zip(&specs).zip(&mut states) {
            let result = vector_of(q.eval(t, data).expect("evaluates"));
            state.observe(spec, result, at);
        }
    });
    let alerts: usize = states.iter().map(|s| s.alerts.len()).sum();
    println!(
        "the same tick with alert states moved: {:.1} ms per tick ({alerts} alerts)",
        tick.as_secs_f64() * 1e3
    );

    // A day of one series at 15 s, previewed at a 15 s step.
    let day: Vec<(i64, f64)> = (0..5_760)
        .map(|i| (t - 86_400_000 + i * 15 * SECOND, (i % 200) as f64))
        .collect();
    let q = parse("avg_over_time(queue_depth[5m]) > 100").expect("parses");
    let data = Data {
        series: vec![vec![series(
            &[("__name__", "queue_depth"), ("component", "w1")],
            day,
        )]],
    };
    let preview = best_of(5, || {
        let mut at = t - 86_400_000;
        while at <= t {
            let _ = q.eval(at, &data);
            at += 15 * SECOND;
        }
    });
    println!(
        "preview of 24 h of one series at a 15 s step (5,761 evaluations): {:.1} ms",
        preview.as_secs_f64() * 1e3
    );
}
