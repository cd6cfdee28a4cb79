//! `vigil-load`: HTTP load generator for the Vigil telemetry server.
//!
//! It drives `POST /api/metrics/report` from `--clients` concurrent tokio tasks that share a
//! single keep-alive `reqwest::Client`. Each request carries `--batch` gauge samples. Every
//! request body is built and serialized once, before the clock starts, from a pool of bodies
//! that together spread the samples over `--series` distinct series (metric name + labels +
//! component). The tool measures the latency of every request completed after `--warmup`.
//! It prints a human summary on stderr and one JSON line on stdout, so
//! `vigil-load ... > result.json` keeps only the machine-readable figures.
//!
//! With `--events` it drives `POST /api/v2/events` instead: each request carries `--batch`
//! RHAPSODY-shaped lifecycle events (AsyncFlow's `asyncflow.workflow_id` in `attributes`),
//! every one with an `event_id` never sent before, its `event_time` the request's own time,
//! and the lifecycle steps of tasks in flight (each request creates new tasks and moves the
//! previous requests' tasks on), as a live client's batches are: a per-client template whose
//! fixed-width fields are rewritten in place per request; none is a duplicate.
//!
//! With `--pushgateway` or `--remote-write` it drives a peer instead, with the same series
//! and batch sizes, for the benchmark table's comparison figures: a Prometheus Pushgateway
//! (`POST /metrics/job/vigil-load/client/<n>`, text format 0.0.4, one group per client) or
//! Prometheus's remote-write receiver (`POST /api/v1/write`, protobuf `WriteRequest`, snappy,
//! remote-write 1.0 headers, a fresh timestamp per request).
//!
//! With `--scrape` (after the load) or `--scrape-only` (no load), it also times
//! `GET /api/metrics/prometheus` `--scrapes` times and reports p50/p99 latency, body size and
//! line count.
//!
//! It only talks to loopback servers: a `--url` whose host is not in 127.0.0.0/8, `localhost`
//! or `[::1]` is refused with exit code 2. System HTTP proxies are ignored.
//!
//! # README benchmark
//!
//! ```text
//! cargo build --release -p vigil-host -p vigil-tests
//! target/release/vigil serve --listen 127.0.0.1:18080 --metrics-listen off --data-dir /tmp/vigil-bench &
//! target/release/vigil-load --url http://127.0.0.1:18080 --clients 8 --batch 1000 \
//!     --duration 20s --warmup 2s --series 100000 --scrape
//! ```
//!
//! The JSON line (`clients`, `batch`, `requests`, `errors`, `samples_per_sec`, `p50_ms`,
//! `p99_ms`, `max_ms`, `duration_s`, plus extra fields) is what goes into the README table.
//! Exit codes: 0 success, 1 if any request failed (or the server was unreachable),
//! 2 on bad arguments.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, StatusCode, Url};
use serde::Serialize;
use serde_json::json;
use vigil_tests::remote_write;

const HELP: &str = "\
vigil-load: HTTP load generator for the Vigil telemetry server (loopback only)

USAGE:
    vigil-load [--url URL] [OPTIONS]

Sends POST /api/metrics/report from N concurrent clients over keep-alive connections.
Each request carries BATCH gauge samples drawn from a pre-serialized pool of bodies
that spread the samples over SERIES distinct series. Prints a human summary on
stderr and one JSON line on stdout:
  {\"clients\":..,\"batch\":..,\"requests\":..,\"errors\":..,\"samples_per_sec\":..,
   \"p50_ms\":..,\"p99_ms\":..,\"max_ms\":..,\"duration_s\":..,...}

OPTIONS:
    --url URL            Server base URL [default: http://127.0.0.1:8080].
                         Host must be 127.0.0.0/8, localhost or [::1] (otherwise exit 2).
    --clients N          Concurrent client tasks [default: 8]
    --batch N            Metrics per request [default: 1000] (server default limit: 10000)
    --duration D         Measured load window after warmup, e.g. 20s, 500ms, 2m [default: 20s]
    --warmup D           Load before measuring; those requests are not timed [default: 2s]
                         Total run time = warmup + duration.
    --series N           Distinct series in total, split over clients [default: 100000]
    --labels N           Labels per sample, 1..=16 (host, region, shard, instance, ...) [default: 4]
    --max-requests N     Stop after N requests in total (warmup included), even before the
                         duration ends
    --token SECRET       Send `Authorization: Bearer SECRET` (needs write scope; also used
                         for scrapes unless --scrape-token is given)
    --scrape-token SECRET  Bearer token for the scrape requests (read scope)
    --bodies N           Pre-built bodies per client [default: enough to cover every series,
                         at least 64 in total, capped at ~1M pooled samples]
    --timeout D          Per-request timeout [default: 30s]
    --threads N          Tokio worker threads [default: number of CPUs]
    --events             POST /api/v2/events instead: BATCH RHAPSODY-shaped events per
                         request, each with a new event_id (none is a duplicate)
    --pushgateway        Drive a Prometheus Pushgateway at URL instead (same series, text
                         format, POST /metrics/job/vigil-load/client/<n>)
    --remote-write       Drive a Prometheus remote-write receiver at URL instead (same series,
                         protobuf + snappy, POST /api/v1/write)
    --scrape             After the load, GET /api/metrics/prometheus --scrapes times
    --scrape-only        Only scrape (no load)
    --scrapes N          Number of scrapes [default: 20]
    -h, --help           Print this help

COUNTING:
    requests  = requests started after warmup (successful + failed)
    errors    = failed requests over the whole run, warmup included (non-200, transport
                error, or `accepted` != batch); the first error body is printed
    samples_per_sec = successful measured requests * batch / duration_s
    duration_s = from the end of warmup until the last in-flight request finished
    Latency percentiles are over successful measured requests (nearest rank).
    Ctrl-C stops the load early and still prints the summary.

EXIT CODES:
    0 success, 1 any request/scrape error or server unreachable, 2 bad arguments

EXAMPLE (README benchmark):
    vigil serve --listen 127.0.0.1:18080 --metrics-listen off --data-dir /tmp/vigil-bench &
    vigil-load --url http://127.0.0.1:18080 --clients 8 --batch 1000 --duration 20s \\
        --warmup 2s --series 100000 --scrape
";

/// Metric names per client (at most; fewer if a client owns fewer series).
const METRIC_NAMES: usize = 100;
/// Minimum number of bodies in the whole pool.
const MIN_POOL_BODIES: usize = 64;
/// Cap on the number of samples held in the pool (memory bound, ~200 bytes each).
const MAX_POOL_SAMPLES: usize = 1_000_000;

const LABEL_NAMES: [&str; 16] = [
    "host",
    "region",
    "shard",
    "instance",
    "zone",
    "rack",
    "pod",
    "container",
    "tier",
    "cluster",
    "env",
    "team",
    "service",
    "node",
    "disk",
    "port",
];
/// Radix of each label except the last one (which takes whatever is left).
const LABEL_RADIX: [usize; 16] = [50, 8, 16, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4];

// ---------------------------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Args {
    url: Url,
    clients: usize,
    batch: usize,
    duration: Duration,
    warmup: Duration,
    series: usize,
    labels: usize,
    max_requests: Option<u64>,
    token: Option<String>,
    scrape_token: Option<String>,
    bodies: Option<usize>,
    timeout: Duration,
    threads: Option<usize>,
    scrape: bool,
    scrape_only: bool,
    scrapes: usize,
    events: bool,
    target: Target,
}

/// What the load is sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// Vigil's report or events API.
    Vigil,
    /// A Prometheus Pushgateway.
    Pushgateway,
    /// Prometheus's remote-write receiver.
    RemoteWrite,
}

enum ParseOutcome {
    Run(Box<Args>),
    Help,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (examples: 20s, 500ms, 2m, 1.5s)"))?;
    let secs = match unit.trim() {
        "" | "s" | "sec" | "secs" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" | "mins" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit `{other}` in `{s}` (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{flag}: invalid number `{v}`"))
}

/// Accept only loopback hosts: 127.0.0.0/8, localhost, [::1].
fn check_loopback(url: &Url) -> Result<(), String> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(format!("--url: unsupported scheme `{other}` (use http)")),
    }
    let host = url
        .host_str()
        .ok_or_else(|| format!("--url `{url}` has no host"))?;
    let host_lc = host.to_ascii_lowercase();
    if host_lc == "localhost" || host_lc == "localhost." {
        return Ok(());
    }
    let bare = host_lc.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) if v4.is_loopback() => Ok(()),
        Ok(IpAddr::V6(v6)) if v6.is_loopback() => Ok(()),
        _ => Err(format!(
            "refusing --url `{url}`: host `{host}` is not loopback \
             (allowed: 127.0.0.0/8, localhost, [::1]); vigil-load only targets local servers"
        )),
    }
}

fn parse_args(raw: Vec<String>) -> Result<ParseOutcome, String> {
    let mut url = String::from("http://127.0.0.1:8080");
    let mut args = Args {
        url: Url::parse("http://127.0.0.1:8080").map_err(|e| e.to_string())?,
        clients: 8,
        batch: 1000,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
        series: 100_000,
        labels: 4,
        max_requests: None,
        token: None,
        scrape_token: None,
        bodies: None,
        timeout: Duration::from_secs(30),
        threads: None,
        scrape: false,
        scrape_only: false,
        scrapes: 20,
        events: false,
        target: Target::Vigil,
    };

    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        // Boolean flags.
        match flag.as_str() {
            "-h" | "--help" => return Ok(ParseOutcome::Help),
            "--scrape" | "--scrape-only" | "--events" | "--pushgateway" | "--remote-write" => {
                if inline.is_some() {
                    return Err(format!("{flag} takes no value"));
                }
                match flag.as_str() {
                    "--scrape" => args.scrape = true,
                    "--scrape-only" => args.scrape_only = true,
                    "--pushgateway" => args.target = Target::Pushgateway,
                    "--remote-write" => args.target = Target::RemoteWrite,
                    _ => args.events = true,
                }
                continue;
            }
            _ => {}
        }
        let mut value = || -> Result<String, String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it.next().ok_or_else(|| format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--url" => url = value()?,
            "--clients" => args.clients = parse_num(&flag, &value()?)?,
            "--batch" => args.batch = parse_num(&flag, &value()?)?,
            "--duration" => {
                args.duration = parse_duration(&value()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "--warmup" => {
                args.warmup = parse_duration(&value()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "--timeout" => {
                args.timeout = parse_duration(&value()?).map_err(|e| format!("{flag}: {e}"))?
            }
            "--series" => args.series = parse_num(&flag, &value()?)?,
            "--labels" => args.labels = parse_num(&flag, &value()?)?,
            "--max-requests" => args.max_requests = Some(parse_num(&flag, &value()?)?),
            "--token" => args.token = Some(value()?),
            "--scrape-token" => args.scrape_token = Some(value()?),
            "--bodies" => args.bodies = Some(parse_num(&flag, &value()?)?),
            "--threads" => args.threads = Some(parse_num(&flag, &value()?)?),
            "--scrapes" => args.scrapes = parse_num(&flag, &value()?)?,
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }

    args.url = Url::parse(&url).map_err(|e| format!("--url `{url}`: {e}"))?;
    check_loopback(&args.url)?;

    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if args.batch == 0 {
        return Err("--batch must be at least 1".into());
    }
    if args.series < args.clients {
        return Err(format!(
            "--series ({}) must be at least --clients ({}): each client owns its own series",
            args.series, args.clients
        ));
    }
    if args.labels == 0 || args.labels > LABEL_NAMES.len() {
        return Err(format!("--labels must be in 1..={}", LABEL_NAMES.len()));
    }
    if args.duration.is_zero() && args.max_requests.is_none() && !args.scrape_only {
        return Err("--duration must be > 0 (or give --max-requests)".into());
    }
    if args.max_requests == Some(0) {
        return Err("--max-requests must be at least 1".into());
    }
    if args.bodies == Some(0) {
        return Err("--bodies must be at least 1".into());
    }
    if args.threads == Some(0) {
        return Err("--threads must be at least 1".into());
    }
    if args.timeout.is_zero() {
        return Err("--timeout must be > 0".into());
    }
    if args.target != Target::Vigil && (args.events || args.scrape || args.scrape_only) {
        return Err(
            "--pushgateway and --remote-write send reports only (no --events, --scrape)".into(),
        );
    }
    if (args.scrape || args.scrape_only) && args.scrapes == 0 {
        return Err("--scrapes must be at least 1".into());
    }
    Ok(ParseOutcome::Run(Box::new(args)))
}

fn endpoint(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let prefix = base.path().trim_end_matches('/').to_string();
    u.set_path(&format!("{prefix}{path}"));
    u.set_query(None);
    u.set_fragment(None);
    u
}

// ---------------------------------------------------------------------------------------------
// Body pool
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct Report<'a> {
    component_name: &'a str,
    component_type: &'static str,
    metrics: Vec<Metric<'a>>,
}

#[derive(Serialize)]
struct Metric<'a> {
    metric_name: &'a str,
    metric_type: &'static str,
    metric_value: f64,
    labels: BTreeMap<&'static str, String>,
}

struct Pool {
    /// `bodies[client]` = that client's pre-serialized bodies (leaked: they live for the whole run).
    bodies: Vec<Vec<&'static [u8]>>,
    series_covered: usize,
    total_bytes: usize,
    total_bodies: usize,
}

fn series_for_client(series: usize, clients: usize, c: usize) -> usize {
    series / clients + usize::from(c < series % clients)
}

/// Label values for the local series index `rest` (mixed radix; the last label is unbounded,
/// so distinct `rest` always give distinct label sets).
fn label_set(rest: usize, n_labels: usize) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    let mut r = rest;
    for i in 0..n_labels {
        let name = LABEL_NAMES[i];
        let digit = if i + 1 == n_labels {
            r
        } else {
            let d = r % LABEL_RADIX[i];
            r /= LABEL_RADIX[i];
            d
        };
        let value = match name {
            "host" => format!("host-{digit:03}"),
            "region" => format!("region-{digit}"),
            "shard" => format!("shard-{digit:02}"),
            "instance" => format!("i-{digit}"),
            other => format!("{other}-{digit}"),
        };
        out.insert(name, value);
    }
    out
}

/// Every series client `c` owns: metric name and labels, as in its reports.
fn client_series(args: &Args, c: usize) -> Vec<(String, BTreeMap<&'static str, String>)> {
    let per_client = series_for_client(args.series, args.clients, c);
    let n_names = per_client.min(METRIC_NAMES);
    (0..per_client)
        .map(|j| {
            (
                format!("load_metric_{}", j % n_names),
                label_set(j / n_names, args.labels),
            )
        })
        .collect()
}

/// Text-format bodies of `batch` samples each covering client `c`'s series,
/// for a Pushgateway (families contiguous, each with its TYPE line).
fn pushgateway_bodies(args: &Args, c: usize) -> Vec<&'static [u8]> {
    let series = client_series(args, c);
    let mut out = Vec::new();
    for (b, chunk) in series.chunks(args.batch).enumerate() {
        let mut chunk: Vec<&(String, BTreeMap<&str, String>)> = chunk.iter().collect();
        chunk.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = String::with_capacity(chunk.len() * 110);
        let mut family = "";
        for (i, (name, labels)) in chunk.iter().enumerate() {
            if name != family {
                text.push_str(&format!("# TYPE {name} gauge\n"));
                family = name;
            }
            let rendered: Vec<String> =
                labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            text.push_str(&format!(
                "{name}{{{}}} {}\n",
                rendered.join(","),
                (b * 7 + i) % 1000
            ));
        }
        out.push(&*Box::leak(text.into_bytes().into_boxed_slice()));
    }
    out
}

fn build_pool(args: &Args) -> Result<Pool, String> {
    let clients = args.clients;
    let batch = args.batch;
    let max_per_client = series_for_client(args.series, clients, 0);
    let bodies_per_client = match args.bodies {
        Some(b) => b,
        None => {
            let min = MIN_POOL_BODIES.div_ceil(clients).max(1);
            let cover = max_per_client.div_ceil(batch);
            let cap = (MAX_POOL_SAMPLES / (clients * batch)).max(1);
            min.max(cover).min(cap).max(1)
        }
    };

    let names: Vec<String> = (0..METRIC_NAMES)
        .map(|k| format!("load_metric_{k}"))
        .collect();
    let mut pool = Pool {
        bodies: Vec::with_capacity(clients),
        series_covered: 0,
        total_bytes: 0,
        total_bodies: 0,
    };
    for c in 0..clients {
        let per_client = series_for_client(args.series, clients, c);
        let n_names = per_client.min(METRIC_NAMES);
        let component = format!("load-{c}");
        let mut mine = Vec::with_capacity(bodies_per_client);
        for b in 0..bodies_per_client {
            let mut metrics = Vec::with_capacity(batch);
            for m in 0..batch {
                let g = b * batch + m;
                let j = g % per_client;
                let k = j % n_names;
                let rest = j / n_names;
                // Deterministic but varied values in [0, 1000).
                let v = (c as u64)
                    .wrapping_mul(1_000_003)
                    .wrapping_add((g as u64).wrapping_mul(7919))
                    % 100_000;
                metrics.push(Metric {
                    metric_name: &names[k],
                    metric_type: "gauge",
                    metric_value: v as f64 / 100.0,
                    labels: label_set(rest, args.labels),
                });
            }
            let report = Report {
                component_name: &component,
                component_type: "loadgen",
                metrics,
            };
            let bytes = serde_json::to_vec(&report).map_err(|e| format!("serialize: {e}"))?;
            pool.total_bytes += bytes.len();
            pool.total_bodies += 1;
            mine.push(&*Box::leak(bytes.into_boxed_slice()));
        }
        pool.series_covered += per_client.min(bodies_per_client * batch);
        pool.bodies.push(mine);
    }
    Ok(pool)
}

/// Digits of the per-event counter in an event id, and of task and workflow numbers.
const ID_DIGITS: usize = 12;

/// A fixed-width field of the events template, rewritten for every request.
#[derive(Clone, Copy)]
enum Field {
    /// The event's id counter.
    Id,
    /// `event_time` (or `emit_time`, `later` seconds after it) as
    /// `SSSSSSSSSS.UUUUUU`: the request's own time, so times grow as a live
    /// client's do.
    Time { later_us: u64 },
    /// The task number: event `i` of a request is lifecycle step `i % 4` of
    /// task `(request - step) * tasks + i / 4`, so a request creates new tasks
    /// and moves the three previous requests' tasks on (as a RHAPSODY batch
    /// holds the events of many tasks in flight).
    Task,
    /// The workflow of that task (ten tasks each).
    Workflow,
}

/// One client's events body: a JSON array of `batch` events whose ids, times,
/// task and workflow numbers are fixed-width fields at known offsets,
/// rewritten for every request.
struct EventTemplate {
    bytes: Vec<u8>,
    /// (offset, event index, field)
    fields: Vec<(usize, usize, Field)>,
    batch: usize,
    sent: u64,
}

const TIME_WIDTH: usize = 17;

impl EventTemplate {
    const TYPES: [&'static str; 4] = [
        "TaskCreated",
        "TaskSubmitted",
        "TaskStarted",
        "TaskCompleted",
    ];

    fn new(client: usize, batch: usize) -> EventTemplate {
        let mut bytes = Vec::with_capacity(batch * 420);
        let mut fields = Vec::with_capacity(batch * 5);
        let mut field = |bytes: &mut Vec<u8>, i: usize, f: Field, width: usize| {
            fields.push((bytes.len(), i, f));
            bytes.extend(std::iter::repeat_n(b'0', width));
        };
        bytes.push(b'[');
        for i in 0..batch {
            if i > 0 {
                bytes.push(b',');
            }
            bytes.extend_from_slice(format!("{{\"event_id\":\"load{client:02}-").as_bytes());
            field(&mut bytes, i, Field::Id, ID_DIGITS);
            bytes.extend_from_slice(
                format!(
                    "\",\"event_type\":\"{}\",\"event_time\":",
                    Self::TYPES[i % Self::TYPES.len()]
                )
                .as_bytes(),
            );
            field(&mut bytes, i, Field::Time { later_us: 0 }, TIME_WIDTH);
            bytes.extend_from_slice(b",\"emit_time\":");
            field(&mut bytes, i, Field::Time { later_us: 1500 }, TIME_WIDTH);
            bytes.extend_from_slice(
                format!(
                    ",\"session_id\":\"session.load-{client}\",\"backend\":\"concurrent\",\"task_id\":\"task."
                )
                .as_bytes(),
            );
            field(&mut bytes, i, Field::Task, ID_DIGITS);
            bytes.extend_from_slice(
                b"\",\"node_id\":null,\"attributes\":{\"executable\":\"/bin/sleep\",\
                  \"task_type\":\"ComputeTask\",\"asyncflow.workflow_id\":\"block.",
            );
            field(&mut bytes, i, Field::Workflow, ID_DIGITS);
            bytes.extend_from_slice(b"\"},\"duration_seconds\":0.25}");
        }
        bytes.push(b']');
        EventTemplate {
            bytes,
            fields,
            batch,
            sent: 0,
        }
    }

    /// The next body: every id new, times now, tasks moved on.
    fn next_body(&mut self) -> Vec<u8> {
        let mut body = self.bytes.clone();
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1_700_000_000_000_000);
        let steps = Self::TYPES.len() as u64;
        let tasks = (self.batch as u64).div_ceil(steps);
        let first_id = self.sent * self.batch as u64;
        for &(at, i, field) in &self.fields {
            let i = i as u64;
            let task = || (self.sent + steps - i % steps) * tasks + i / steps;
            match field {
                Field::Id => put_digits(&mut body[at..at + ID_DIGITS], first_id + i),
                Field::Task => put_digits(&mut body[at..at + ID_DIGITS], task()),
                Field::Workflow => put_digits(&mut body[at..at + ID_DIGITS], task() / 10),
                Field::Time { later_us } => {
                    // Events of a request happened over the last moments, 10 µs apart.
                    let t = now_us - (self.batch as u64 - i) * 10 + later_us;
                    put_digits(&mut body[at..at + 10], t / 1_000_000);
                    body[at + 10] = b'.';
                    put_digits(&mut body[at + 11..at + TIME_WIDTH], t % 1_000_000);
                }
            }
        }
        self.sent += 1;
        body
    }
}

/// Writes `n` into `out` as decimal digits, zero-padded to its width.
fn put_digits(out: &mut [u8], mut n: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// One client's series for remote write: the sorted label pairs of each
/// (`__name__` first), and the timestamp of the last request.
struct RemoteSeries {
    series: Vec<Vec<(String, String)>>,
    next: usize,
    batch: usize,
    last_ts: i64,
}

impl RemoteSeries {
    /// The next `WriteRequest` (remote-write 1.0), snappy-compressed: the
    /// next `batch` series, one sample each at a timestamp later than the last.
    fn next_body(&mut self) -> Vec<u8> {
        let now = chrono::Utc::now().timestamp_millis();
        self.last_ts = now.max(self.last_ts + 1);
        let mut request = Vec::with_capacity(self.batch * 96);
        for i in 0..self.batch {
            let labels = &self.series[(self.next + i) % self.series.len()];
            remote_write::put_series(&mut request, labels, (i % 1000) as f64 / 10.0, self.last_ts);
        }
        self.next = (self.next + self.batch) % self.series.len();
        remote_write::compress(&request)
    }
}

/// Where a client's request bodies come from.
enum Bodies {
    /// Pre-serialized reports (or Pushgateway text bodies), sent round robin.
    Reports(Vec<&'static [u8]>),
    /// An events template, new ids per request.
    Events(EventTemplate),
    /// Remote-write requests, built per request.
    RemoteWrite(RemoteSeries),
}

// ---------------------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------------------

struct Shared {
    client: Client,
    target: Target,
    report_url: Url,
    batch: usize,
    warm_end: Instant,
    deadline: Option<Instant>,
    max_requests: Option<u64>,
    issued: AtomicU64,
    stop: AtomicBool,
    warmup_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

#[derive(Default)]
struct ClientStats {
    /// Latencies (ns) of successful requests started after warmup.
    latencies_ns: Vec<u64>,
    measured_requests: u64,
    measured_errors: u64,
}

impl Shared {
    fn record_error(&self, msg: String) {
        let mut first = match self.first_error.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if first.is_none() {
            eprintln!("vigil-load: first error: {msg}");
            *first = Some(msg);
        }
    }
}

/// `e` and its chain of sources ("error sending request: ...: Connection refused").
fn err_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        src = s.source();
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

/// One request; Ok(()) if 200 and `accepted == batch`.
async fn send_one(shared: &Shared, body: reqwest::Body, c: usize) -> Result<(), String> {
    let request = match shared.target {
        Target::Vigil => shared
            .client
            .post(shared.report_url.clone())
            .header(CONTENT_TYPE, "application/json"),
        Target::Pushgateway => shared
            .client
            .post(format!("{}/client/{c}", shared.report_url))
            .header(CONTENT_TYPE, "text/plain; version=0.0.4"),
        Target::RemoteWrite => shared
            .client
            .post(shared.report_url.clone())
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0"),
    };
    let resp = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("transport error: {}", err_chain(&e)))?;
    let status = resp.status();
    // Always read the whole body so the connection goes back to the pool.
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("reading response ({status}): {}", err_chain(&e)))?;
    if shared.target != Target::Vigil {
        return if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "HTTP {status}: {}",
                truncate(&String::from_utf8_lossy(&bytes), 2000)
            ))
        };
    }
    if status != StatusCode::OK {
        return Err(format!(
            "HTTP {status}: {}",
            truncate(&String::from_utf8_lossy(&bytes), 2000)
        ));
    }
    let accepted = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("accepted").and_then(serde_json::Value::as_u64));
    match accepted {
        Some(n) if n == shared.batch as u64 => Ok(()),
        _ => Err(format!(
            "HTTP 200 but unexpected body (want accepted={}): {}",
            shared.batch,
            truncate(&String::from_utf8_lossy(&bytes), 2000)
        )),
    }
}

async fn client_loop(shared: Arc<Shared>, mut bodies: Bodies, c: usize) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut i = match &bodies {
        Bodies::Reports(b) => c % b.len().max(1),
        Bodies::Events(_) | Bodies::RemoteWrite(_) => 0,
    };
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let t0 = Instant::now();
        if shared.deadline.is_some_and(|d| t0 >= d) {
            break;
        }
        if let Some(max) = shared.max_requests {
            if shared.issued.fetch_add(1, Ordering::Relaxed) >= max {
                break;
            }
        }
        let body = match &mut bodies {
            Bodies::Reports(b) => {
                let body = b[i];
                i = (i + 1) % b.len();
                reqwest::Body::from(body)
            }
            Bodies::Events(t) => reqwest::Body::from(t.next_body()),
            Bodies::RemoteWrite(r) => reqwest::Body::from(r.next_body()),
        };
        let result = send_one(&shared, body, c).await;
        let elapsed = t0.elapsed();
        let measured = t0 >= shared.warm_end;
        match result {
            Ok(()) => {
                if measured {
                    stats.measured_requests += 1;
                    stats
                        .latencies_ns
                        .push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Err(msg) => {
                if measured {
                    stats.measured_requests += 1;
                    stats.measured_errors += 1;
                } else {
                    shared.warmup_errors.fetch_add(1, Ordering::Relaxed);
                }
                shared.record_error(msg);
            }
        }
    }
    stats
}

/// Nearest-rank percentile of a sorted slice.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(ns: u64) -> f64 {
    round3(ns as f64 / 1e6)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

struct LoadResult {
    requests: u64,
    errors: u64,
    warmup_errors: u64,
    samples_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
    duration_s: f64,
    ok_requests: u64,
}

async fn run_load(args: &Args, client: Client) -> Result<LoadResult, String> {
    let t_build = Instant::now();
    let pool = if args.events || args.target != Target::Vigil {
        Pool {
            bodies: Vec::new(),
            series_covered: args.series,
            total_bytes: 0,
            total_bodies: 0,
        }
    } else {
        build_pool(args)?
    };
    let avg_body = pool.total_bytes / pool.total_bodies.max(1);
    eprintln!(
        "vigil-load: built {} bodies ({} per client) in {:.2}s: {:.1} MiB total, ~{} KiB each, \
         {} series covered of {} requested",
        pool.total_bodies,
        pool.bodies.first().map_or(0, Vec::len),
        t_build.elapsed().as_secs_f64(),
        pool.total_bytes as f64 / (1024.0 * 1024.0),
        avg_body / 1024,
        pool.series_covered,
        args.series,
    );
    if pool.series_covered < args.series {
        eprintln!(
            "vigil-load: warning: pool covers only {} of {} series (raise --bodies or --batch)",
            pool.series_covered, args.series
        );
    }
    if args.batch > 10_000 {
        eprintln!(
            "vigil-load: warning: --batch {} exceeds the server's default --max-items-per-request \
             (10000); expect 413 unless the server was started with a higher limit",
            args.batch
        );
    }

    let start = Instant::now();
    let warm_end = start + args.warmup;
    let deadline = if args.duration.is_zero() {
        None
    } else {
        Some(warm_end + args.duration)
    };
    let shared = Arc::new(Shared {
        client,
        target: args.target,
        report_url: endpoint(
            &args.url,
            match (args.target, args.events) {
                (Target::Pushgateway, _) => "/metrics/job/vigil-load",
                (Target::RemoteWrite, _) => "/api/v1/write",
                (Target::Vigil, true) => "/api/v2/events",
                (Target::Vigil, false) => "/api/metrics/report",
            },
        ),
        batch: args.batch,
        warm_end,
        deadline,
        max_requests: args.max_requests,
        issued: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        warmup_errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });

    eprintln!(
        "vigil-load: {} clients x {} samples/request -> {} for {:.1}s (+{:.1}s warmup){}",
        args.clients,
        args.batch,
        shared.report_url,
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        args.max_requests
            .map(|m| format!(", at most {m} requests"))
            .unwrap_or_default(),
    );

    // Ctrl-C: stop issuing requests, still print the summary.
    let stopper = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("vigil-load: interrupted, stopping");
                shared.stop.store(true, Ordering::Relaxed);
            }
        })
    };

    let sources: Vec<Bodies> = if args.events {
        (0..args.clients)
            .map(|c| Bodies::Events(EventTemplate::new(c, args.batch)))
            .collect()
    } else {
        match args.target {
            Target::Vigil => pool.bodies.into_iter().map(Bodies::Reports).collect(),
            Target::Pushgateway => (0..args.clients)
                .map(|c| Bodies::Reports(pushgateway_bodies(args, c)))
                .collect(),
            Target::RemoteWrite => (0..args.clients)
                .map(|c| {
                    Bodies::RemoteWrite(RemoteSeries {
                        series: client_series(args, c)
                            .into_iter()
                            .map(|(name, labels)| {
                                let mut pairs: Vec<(String, String)> = labels
                                    .into_iter()
                                    .map(|(k, v)| (k.to_string(), v))
                                    .collect();
                                pairs.push(("__name__".into(), name));
                                pairs.push(("component".into(), format!("load-{c}")));
                                pairs.sort();
                                pairs
                            })
                            .collect(),
                        next: 0,
                        batch: args.batch,
                        last_ts: 0,
                    })
                })
                .collect(),
        }
    };
    let mut handles = Vec::with_capacity(args.clients);
    for (c, bodies) in sources.into_iter().enumerate() {
        handles.push(tokio::spawn(client_loop(Arc::clone(&shared), bodies, c)));
    }
    let mut all_lat: Vec<u64> = Vec::new();
    let mut requests = 0u64;
    let mut measured_errors = 0u64;
    for h in handles {
        let s = h.await.map_err(|e| format!("client task failed: {e}"))?;
        all_lat.extend_from_slice(&s.latencies_ns);
        requests += s.measured_requests;
        measured_errors += s.measured_errors;
    }
    let end = Instant::now();
    stopper.abort();

    let duration_s = end.saturating_duration_since(warm_end).as_secs_f64();
    all_lat.sort_unstable();
    let ok_requests = all_lat.len() as u64;
    let warmup_errors = shared.warmup_errors.load(Ordering::Relaxed);
    let samples_per_sec = if duration_s > 0.0 {
        ok_requests as f64 * args.batch as f64 / duration_s
    } else {
        0.0
    };
    let mean_ns = if all_lat.is_empty() {
        0
    } else {
        all_lat.iter().sum::<u64>() / all_lat.len() as u64
    };
    if end <= warm_end {
        eprintln!("vigil-load: warning: the run ended during warmup; nothing was measured");
    }
    Ok(LoadResult {
        requests,
        errors: measured_errors + warmup_errors,
        warmup_errors,
        samples_per_sec: (samples_per_sec * 10.0).round() / 10.0,
        p50_ms: ms(percentile(&all_lat, 50.0)),
        p99_ms: ms(percentile(&all_lat, 99.0)),
        max_ms: ms(all_lat.last().copied().unwrap_or(0)),
        mean_ms: ms(mean_ns),
        duration_s: round3(duration_s),
        ok_requests,
    })
}

// ---------------------------------------------------------------------------------------------
// Scrape
// ---------------------------------------------------------------------------------------------

struct ScrapeResult {
    scrapes: usize,
    errors: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    bytes: usize,
    lines: usize,
    sample_lines: usize,
}

async fn run_scrapes(args: &Args, client: &Client) -> ScrapeResult {
    let url = endpoint(&args.url, "/api/metrics/prometheus");
    let token = args.scrape_token.as_ref().or(args.token.as_ref());
    eprintln!("vigil-load: scraping {url} {} times", args.scrapes);
    let mut lat = Vec::with_capacity(args.scrapes);
    let mut errors = 0u64;
    let mut first_error_printed = false;
    let (mut bytes, mut lines, mut sample_lines) = (0, 0, 0);
    for _ in 0..args.scrapes {
        let mut req = client.get(url.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let t0 = Instant::now();
        let outcome = match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(b) if status == StatusCode::OK => Ok(b),
                    Ok(b) => Err(format!(
                        "HTTP {status}: {}",
                        truncate(&String::from_utf8_lossy(&b), 2000)
                    )),
                    Err(e) => Err(format!("reading scrape body: {}", err_chain(&e))),
                }
            }
            Err(e) => Err(format!("transport error: {}", err_chain(&e))),
        };
        let elapsed = t0.elapsed();
        match outcome {
            Ok(body) => {
                lat.push(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
                bytes = body.len();
                let text = String::from_utf8_lossy(&body);
                lines = text.lines().count();
                sample_lines = text
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .count();
            }
            Err(msg) => {
                errors += 1;
                if !first_error_printed {
                    eprintln!("vigil-load: first scrape error: {msg}");
                    first_error_printed = true;
                }
            }
        }
    }
    lat.sort_unstable();
    ScrapeResult {
        scrapes: args.scrapes,
        errors,
        p50_ms: ms(percentile(&lat, 50.0)),
        p99_ms: ms(percentile(&lat, 99.0)),
        max_ms: ms(lat.last().copied().unwrap_or(0)),
        bytes,
        lines,
        sample_lines,
    }
}

// ---------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------

fn build_client(args: &Args) -> Result<Client, String> {
    let mut headers = HeaderMap::new();
    if let Some(t) = &args.token {
        let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
            .map_err(|_| "--token contains characters not allowed in a header".to_string())?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    Client::builder()
        .no_proxy()
        .default_headers(headers)
        .pool_max_idle_per_host(args.clients.max(1) + 2)
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_nodelay(true)
        .timeout(args.timeout)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("building HTTP client: {e}"))
}

async fn check_health(args: &Args, client: &Client) -> Result<(), String> {
    let url = endpoint(&args.url, "/api/v2/health");
    match client.get(url.clone()).send().await {
        Ok(resp) => {
            let status = resp.status();
            let _ = resp.bytes().await;
            if status.is_success() {
                Ok(())
            } else {
                // Not fatal: an older server may not have the route; the load shows real errors.
                eprintln!("vigil-load: warning: {url} answered {status}");
                Ok(())
            }
        }
        Err(e) => Err(format!(
            "cannot reach the server at {}: {}",
            args.url,
            err_chain(&e)
        )),
    }
}

async fn real_main(args: Args) -> ExitCode {
    let client = match build_client(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-load: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = check_health(&args, &client).await {
        eprintln!("vigil-load: {e}");
        return ExitCode::from(1);
    }

    let mut out = serde_json::Map::new();
    let mut failed = false;

    if !args.scrape_only {
        let r = match run_load(&args, client.clone()).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("vigil-load: {e}");
                return ExitCode::from(1);
            }
        };
        eprintln!();
        eprintln!("=== vigil-load: POST /api/metrics/report ===");
        eprintln!(
            "  clients {}  batch {}  series {}  labels {}",
            args.clients, args.batch, args.series, args.labels
        );
        eprintln!(
            "  measured   {:.3} s after {:.1} s warmup",
            r.duration_s,
            args.warmup.as_secs_f64()
        );
        eprintln!(
            "  requests   {} ({} ok, {} failed; {} failed during warmup)",
            r.requests,
            r.ok_requests,
            r.errors - r.warmup_errors,
            r.warmup_errors
        );
        eprintln!(
            "  throughput {:.0} samples/s, {:.1} requests/s",
            r.samples_per_sec,
            if r.duration_s > 0.0 {
                r.ok_requests as f64 / r.duration_s
            } else {
                0.0
            }
        );
        eprintln!(
            "  latency    p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms  mean {:.3} ms",
            r.p50_ms, r.p99_ms, r.max_ms, r.mean_ms
        );
        failed |= r.errors > 0;
        let v = json!({
            "clients": args.clients,
            "batch": args.batch,
            "requests": r.requests,
            "errors": r.errors,
            "samples_per_sec": r.samples_per_sec,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "max_ms": r.max_ms,
            "duration_s": r.duration_s,
            "series": args.series,
            "labels": args.labels,
            "warmup_s": round3(args.warmup.as_secs_f64()),
            "mean_ms": r.mean_ms,
        });
        if let serde_json::Value::Object(m) = v {
            out.extend(m);
        }
    }

    if args.scrape || args.scrape_only {
        let s = run_scrapes(&args, &client).await;
        eprintln!();
        eprintln!("=== vigil-load: GET /api/metrics/prometheus ===");
        eprintln!("  scrapes    {} ({} failed)", s.scrapes, s.errors);
        eprintln!(
            "  latency    p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            s.p50_ms, s.p99_ms, s.max_ms
        );
        eprintln!(
            "  body       {} bytes, {} lines ({} sample lines)",
            s.bytes, s.lines, s.sample_lines
        );
        failed |= s.errors > 0;
        let v = json!({
            "scrapes": s.scrapes,
            "scrape_errors": s.errors,
            "scrape_p50_ms": s.p50_ms,
            "scrape_p99_ms": s.p99_ms,
            "scrape_max_ms": s.max_ms,
            "scrape_bytes": s.bytes,
            "scrape_lines": s.lines,
            "scrape_sample_lines": s.sample_lines,
        });
        if let serde_json::Value::Object(m) = v {
            out.extend(m);
        }
    }

    println!("{}", serde_json::Value::Object(out));
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1).collect()) {
        Ok(ParseOutcome::Run(a)) => *a,
        Ok(ParseOutcome::Help) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vigil-load: error: {e}");
            eprintln!("Try `vigil-load --help`.");
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil-load: cannot start tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(real_main(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        match parse_args(v.iter().map(|s| s.to_string()).collect())? {
            ParseOutcome::Run(a) => Ok(*a),
            ParseOutcome::Help => Err("help".into()),
        }
    }

    #[test]
    fn loopback_only() {
        assert!(parse(&["--url", "http://127.0.0.1:8080"]).is_ok());
        assert!(parse(&["--url", "http://127.9.8.7:1"]).is_ok());
        assert!(parse(&["--url", "http://localhost:8080"]).is_ok());
        assert!(parse(&["--url=http://[::1]:8080"]).is_ok());
        assert!(parse(&["--url", "http://10.0.0.1:8080"]).is_err());
        assert!(parse(&["--url", "http://example.com"]).is_err());
        assert!(parse(&["--url", "http://[::2]:8080"]).is_err());
        assert!(parse(&["--url", "http://128.0.0.1"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn pool_covers_all_series_exactly() {
        let a = parse(&["--clients", "3", "--batch", "100", "--series", "1000"]).expect("args");
        let pool = build_pool(&a).expect("pool");
        assert_eq!(pool.series_covered, 1000);
        let mut seen = std::collections::HashSet::new();
        for (c, bodies) in pool.bodies.iter().enumerate() {
            for b in bodies {
                let v: serde_json::Value = serde_json::from_slice(b).expect("json");
                assert_eq!(v["component_name"], format!("load-{c}"));
                assert_eq!(v["component_type"], "loadgen");
                let ms = v["metrics"].as_array().expect("metrics");
                assert_eq!(ms.len(), 100);
                for m in ms {
                    assert!(m.get("timestamp").is_none());
                    assert_eq!(m["metric_type"], "gauge");
                    assert_eq!(m["labels"].as_object().expect("labels").len(), 4);
                    seen.insert((c, m["metric_name"].to_string(), m["labels"].to_string()));
                }
            }
        }
        assert_eq!(seen.len(), 1000);
    }
}
