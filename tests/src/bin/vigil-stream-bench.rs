//! `vigil-stream-bench`: benchmarks of issue 13's targets against a running
//! Vigil (loopback only), each printing a human summary on stderr and one
//! JSON line on stdout:
//!
//! - `fanout`: `--subscribers` live SSE subscribers on
//!   `/api/v2/events/stream`; `--events` events posted one at a time every
//!   `--interval`; for each event the time from just before its POST to its
//!   arrival at every subscriber (p50/p99/max over all deliveries) and to
//!   the last subscriber (p50/p99/max over events).
//! - `memory`: the server's RSS (`/proc/<--pid>/status`) before and after
//!   `--subscribers` subscribers connected and received one event.
//! - `executions`: `GET /api/v2/executions/{id}` on a `dim` and a `slurm`
//!   execution (created by the tool; the server should run the `dim` and
//!   `slurm` plugins) from `--concurrency` tasks for `--duration`; latency
//!   percentiles, and how many answers lacked their debug fields.
//!
//! ```text
//! vigil-stream-bench fanout --url http://127.0.0.1:18091 --subscribers 100 --events 300
//! vigil-stream-bench memory --url http://127.0.0.1:18091 --pid $PID --subscribers 1000
//! vigil-stream-bench executions --url http://127.0.0.1:18091 --concurrency 4 --duration 20s
//! ```
//!
//! Every run is bounded (events, duration, a 60 s limit on waits) and stops
//! by itself. Exit codes: 0 done, 1 a request or delivery failed, 2 bad arguments.

use std::collections::HashMap;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, Url};
use serde_json::{json, Value};

const HELP: &str = "\
vigil-stream-bench MODE [OPTIONS]   (MODE: fanout, memory, executions; loopback only)

    --url URL            Server base URL [default: http://127.0.0.1:8080]
    --subscribers N      SSE subscribers [fanout: 100, memory: 1000]
    --events N           fanout: events to post [default: 300]
    --interval D         fanout: pause between events [default: 20ms]
    --pid PID            memory: the server's process id (its RSS is read from /proc)
    --concurrency N      executions: concurrent readers [default: 4]
    --duration D         executions: measured time [default: 20s]
    --warmup D           executions: unmeasured time first [default: 2s]
";

const WAIT: Duration = Duration::from_secs(60);

struct Args {
    mode: String,
    url: Url,
    subscribers: Option<usize>,
    events: usize,
    interval: Duration,
    pid: Option<u32>,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mode = it.next().ok_or("a mode is required")?;
    if mode == "-h" || mode == "--help" {
        return Err(String::new());
    }
    let mut a = Args {
        mode,
        url: Url::parse("http://127.0.0.1:8080").map_err(|e| e.to_string())?,
        subscribers: None,
        events: 300,
        interval: Duration::from_millis(20),
        pid: None,
        concurrency: 4,
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(2),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let dur = |s: String| humantime_like(&s).ok_or(format!("bad duration {s}"));
        match flag.as_str() {
            "--url" => a.url = Url::parse(&value()?).map_err(|e| e.to_string())?,
            "--subscribers" => {
                a.subscribers = Some(value()?.parse().map_err(|_| "bad --subscribers")?)
            }
            "--events" => a.events = value()?.parse().map_err(|_| "bad --events")?,
            "--interval" => a.interval = dur(value()?)?,
            "--pid" => a.pid = Some(value()?.parse().map_err(|_| "bad --pid")?),
            "--concurrency" => a.concurrency = value()?.parse().map_err(|_| "bad --concurrency")?,
            "--duration" => a.duration = dur(value()?)?,
            "--warmup" => a.warmup = dur(value()?)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let host = a.url.host_str().unwrap_or("").to_ascii_lowercase();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback || a.url.scheme() != "http" {
        return Err(format!("{} is not an http:// loopback address", a.url));
    }
    Ok(a)
}

fn humantime_like(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    Some(Duration::from_secs_f64(match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    }))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({"n": v.len(), "p50_ms": percentile(&v, 50.0), "p99_ms": percentile(&v, 99.0),
           "max_ms": v.last().copied().unwrap_or(f64::NAN)})
}

/// Arrival times of each seq at one subscriber.
type Arrivals = Arc<Mutex<HashMap<i64, Instant>>>;

/// Opens one SSE subscriber; its task records every id's arrival.
async fn subscribe(client: &Client, url: &Url) -> Result<Arrivals, String> {
    let resp = client
        .get(
            url.join("/api/v2/events/stream?cursor=latest")
                .map_err(|e| e.to_string())?,
        )
        .header("accept", "text/event-stream")
        .send()
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("subscribe: {}", resp.status()));
    }
    let arrivals: Arrivals = Arc::default();
    let mine = arrivals.clone();
    tokio::spawn(async move {
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Some(id) = line.strip_prefix(b"id: ") {
                    if let Ok(seq) = String::from_utf8_lossy(id).trim().parse::<i64>() {
                        mine.lock().expect("arrivals").insert(seq, now);
                    }
                }
            }
        }
    });
    Ok(arrivals)
}

async fn subscribers_gauge(client: &Client, url: &Url) -> Option<f64> {
    let text = client
        .get(url.join("/api/metrics/prometheus").ok()?)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("vigil_stream_subscribers "))
        .and_then(|v| v.trim().parse().ok())
}

async fn connect_all(client: &Client, url: &Url, n: usize) -> Result<Vec<Arrivals>, String> {
    let before = subscribers_gauge(client, url).await.unwrap_or(0.0);
    let mut subs = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let opened = futures::future::join_all(chunk.iter().map(|_| subscribe(client, url))).await;
        for s in opened {
            subs.push(s?);
        }
    }
    let deadline = Instant::now() + WAIT;
    while subscribers_gauge(client, url).await.unwrap_or(0.0) < before + n as f64 {
        if Instant::now() > deadline {
            return Err("not every subscriber was counted by the server".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(subs)
}

async fn post_event(client: &Client, url: &Url, i: usize) -> Result<i64, String> {
    let resp = client
        .post(url.join("/api/v2/events").map_err(|e| e.to_string())?)
        .json(&json!({"event_type": "bench.Fanout", "task_id": format!("t{i}")}))
        .send()
        .await
        .map_err(|e| format!("post: {e}"))?;
    let body: Value = resp.json().await.map_err(|e| format!("post: {e}"))?;
    body["seqs"][0].as_i64().ok_or(format!("post: {body}"))
}

async fn wait_delivered(subs: &[Arrivals], seq: i64) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !subs
        .iter()
        .all(|s| s.lock().expect("arrivals").contains_key(&seq))
    {
        if Instant::now() > deadline {
            return Err(format!("event {seq} did not reach every subscriber"));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn fanout(a: &Args, client: &Client) -> Result<Value, String> {
    let n = a.subscribers.unwrap_or(100);
    let subs = connect_all(client, &a.url, n).await?;
    eprintln!("{n} subscribers connected; posting {} events", a.events);
    let mut sent = Vec::with_capacity(a.events);
    for i in 0..a.events {
        let at = Instant::now();
        let seq = post_event(client, &a.url, i).await?;
        sent.push((seq, at));
        tokio::time::sleep(a.interval).await;
    }
    let mut every = Vec::new();
    let mut last = Vec::new();
    for (seq, at) in &sent {
        wait_delivered(&subs, *seq).await?;
        let mut slowest: f64 = 0.0;
        for s in &subs {
            let t = s.lock().expect("arrivals")[seq];
            let ms = t.saturating_duration_since(*at).as_secs_f64() * 1000.0;
            slowest = slowest.max(ms);
            every.push(ms);
        }
        last.push(slowest);
    }
    let out = json!({"mode": "fanout", "subscribers": n, "events": a.events,
        "delivery": summary(every), "last_subscriber": summary(last)});
    eprintln!(
        "one event to {n} subscribers: last subscriber p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        out["last_subscriber"]["p50_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        out["last_subscriber"]["p99_ms"]
            .as_f64()
            .unwrap_or(f64::NAN),
        out["last_subscriber"]["max_ms"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    Ok(out)
}

fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or("no VmRSS".into())
}

async fn memory(a: &Args, client: &Client) -> Result<Value, String> {
    let pid = a.pid.ok_or("memory needs --pid")?;
    let n = a.subscribers.unwrap_or(1000);
    // Warm the code paths once, so the baseline is not first-use allocation.
    {
        let warm = connect_all(client, &a.url, 10).await?;
        let seq = post_event(client, &a.url, 0).await?;
        wait_delivered(&warm, seq).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_bytes(pid)?;
    let subs = connect_all(client, &a.url, n).await?;
    let seq = post_event(client, &a.url, 1).await?;
    wait_delivered(&subs, seq).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(pid)?;
    let mb = (after as f64 - before as f64) / 1e6;
    eprintln!(
        "{n} subscribers: server RSS {:.1} MB -> {:.1} MB, +{mb:.1} MB ({:.1} KB each)",
        before as f64 / 1e6,
        after as f64 / 1e6,
        mb * 1000.0 / n as f64
    );
    Ok(
        json!({"mode": "memory", "subscribers": n, "rss_before_bytes": before,
        "rss_after_bytes": after, "delta_mb": mb}),
    )
}

async fn executions(a: &Args, client: &Client) -> Result<Value, String> {
    let mut ids = Vec::new();
    for body in [
        json!({"backend": "dim", "scheduler_ids": {"session_id": "bench-session"},
               "profile": {"host": "dim.example", "port": 8001}}),
        json!({"backend": "slurm", "scheduler_ids": {"job_id": "s:1|/scratch/s"},
               "profile": {"login_node": "ln1", "remote_user": "bench"}}),
    ] {
        let resp = client
            .post(
                a.url
                    .join("/api/v2/executions")
                    .map_err(|e| e.to_string())?,
            )
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let v: Value = resp.json().await.map_err(|e| e.to_string())?;
        ids.push(v["id"].as_str().ok_or(format!("create: {v}"))?.to_string());
    }
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let tasks = (0..a.concurrency).map(|t| {
        let client = client.clone();
        let urls: Vec<Url> = ids
            .iter()
            .map(|id| {
                a.url
                    .join(&format!("/api/v2/executions/{id}"))
                    .expect("url")
            })
            .collect();
        tokio::spawn(async move {
            let (mut lat, mut incomplete, mut failed) = (Vec::new(), 0u64, 0u64);
            let mut i = t;
            while Instant::now() < end {
                let url = &urls[i % urls.len()];
                i += 1;
                let t0 = Instant::now();
                let got = match client.get(url.clone()).send().await {
                    Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                    _ => None,
                };
                let ms = t0.elapsed().as_secs_f64() * 1000.0;
                match got {
                    Some(v) => {
                        let full = v["debug_fields"].as_object().is_some_and(|f| !f.is_empty())
                            && v["debug_errors"].as_array().is_some_and(|e| e.is_empty());
                        if t0 >= measure_from {
                            lat.push(ms);
                            if !full {
                                incomplete += 1;
                            }
                        }
                    }
                    None => failed += 1,
                }
            }
            (lat, incomplete, failed)
        })
    });
    let (mut lat, mut incomplete, mut failed) = (Vec::new(), 0, 0);
    for r in futures::future::join_all(tasks).await {
        let (l, i, f) = r.map_err(|e| e.to_string())?;
        lat.extend(l);
        incomplete += i;
        failed += f;
    }
    let rps = lat.len() as f64 / a.duration.as_secs_f64();
    let s = summary(lat);
    eprintln!(
        "GET /api/v2/executions/{{id}} with both providers, {} readers: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {incomplete} without their fields, {failed} failed",
        a.concurrency,
        rps,
        s["p50_ms"].as_f64().unwrap_or(f64::NAN),
        s["p99_ms"].as_f64().unwrap_or(f64::NAN),
        s["max_ms"].as_f64().unwrap_or(f64::NAN)
    );
    if failed > 0 || incomplete > 0 {
        return Err(format!(
            "{failed} failed and {incomplete} incomplete answers"
        ));
    }
    Ok(
        json!({"mode": "executions", "concurrency": a.concurrency, "requests_per_sec": rps, "latency": s}),
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vigil-stream-bench: {e}");
            }
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-stream-bench: {e}");
            return ExitCode::from(1);
        }
    };
    let client = match Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(2000)
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vigil-stream-bench: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match args.mode.as_str() {
            "fanout" => fanout(&args, &client).await,
            "memory" => memory(&args, &client).await,
            "executions" => executions(&args, &client).await,
            other => Err(format!("unknown mode {other}")),
        }
    });
    match result {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil-stream-bench: {e}");
            ExitCode::from(1)
        }
    }
}
