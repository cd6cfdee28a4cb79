//! Scrape-render benchmark: how long one scrape of 100,000 live series takes to
//! render from the latest-value index, in both exposition formats.
//!
//! `cargo bench -p vigil-host --bench export [-- SERIES]`

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_host::metrics::index::{
    ExportScope, ExpositionFormat, NewEntry, SeriesIndex, SeriesKey, SeriesUpdate, SeriesValue,
};
use vigil_host::metrics::model::{series_fingerprint, MetricKind};
use vigil_host::telemetry::{render_export, SelfMetrics};

fn build_index(series: usize) -> SeriesIndex {
    let index = SeriesIndex::new();
    let mut updates = Vec::with_capacity(series);
    for i in 0..series {
        let labels: BTreeMap<String, String> = [
            ("host", format!("node-{}", i % 1000)),
            ("region", format!("region-{}", i % 7)),
            ("shard", format!("{}", i % 64)),
            ("instance", format!("inst-{i}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let name = format!("load_metric_{}", i % 100);
        let component = format!("load-{}", i % 8);
        let labels_key = serde_json::to_string(&labels).expect("labels serialize");
        updates.push(SeriesUpdate::New(Box::new(NewEntry {
            id: i as i64 + 1,
            fingerprint: series_fingerprint(&component, &name, &labels_key),
            key: SeriesKey {
                component: Arc::from(component.as_str()),
                name: Arc::from(name.as_str()),
                labels: labels_key,
            },
            kind: MetricKind::Gauge,
            labels,
            help: "A load-test gauge".into(),
            unit: String::new(),
            value: SeriesValue::Scalar(i as f64 * 1.5),
        })));
    }
    index.apply(updates, 0);
    index
}

fn measure(
    index: &SeriesIndex,
    own: &SelfMetrics,
    format: ExpositionFormat,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    // As a scrape renders: each series with its component's type.
    let types: HashMap<String, String> = (0..8)
        .map(|i| (format!("load-{i}"), "worker_pool".to_string()))
        .collect();
    let scope = ExportScope {
        component: None,
        component_types: Some(&types),
    };
    for _ in 0..30 {
        let started = Instant::now();
        let body = render_export(index, own, None, format, 0, 0, &scope);
        times.push(started.elapsed());
        bytes = body.len();
    }
    times.sort();
    (times, bytes)
}

fn main() {
    let series: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let index = build_index(series);
    let own = SelfMetrics::new();
    for (label, format) in [
        ("text 0.0.4", ExpositionFormat::Text),
        ("openmetrics", ExpositionFormat::OpenMetrics),
    ] {
        let (times, bytes) = measure(&index, &own, format);
        let p50 = times[times.len() / 2];
        let max = times[times.len() - 1];
        println!(
            "scrape render {label}: {series} series, {:.1} MB, p50 {:.1} ms, max {:.1} ms",
            bytes as f64 / 1e6,
            p50.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}
