//! A strict stand-in for Loki's push API (`POST /loki/api/v1/push`, JSON), on
//! top of [`WebhookReceiver`]'s HTTP server.
//!
//! It checks the body (`{"streams":[{"stream":{…},"values":[["<ns>","<line>"]]}]}`,
//! label names valid, timestamps decimal nanosecond strings), keeps entries
//! per stream, and answers as Loki does: identical entries (same stream,
//! timestamp and line) are dropped as duplicates; an entry older than the
//! stream's newest is refused — the others of the push are still written —
//! with `400` and `entry with timestamp … ignored, reason: 'entry out of
//! order' for stream: {…}`. It can answer `503` with `Retry-After` or `429`
//! for a number of pushes. Requests that break the format are recorded as
//! [`LokiReceiver::violations`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::webhook::{ReceivedRequest, Reply, WebhookReceiver};

#[derive(Default)]
struct State {
    /// Stream (labels rendered `{a="b", …}`) → entries `(ns, line)` in order.
    streams: BTreeMap<String, Vec<(i128, String)>>,
    violations: Vec<String>,
    /// Pushes still to answer with this status (503 carries `Retry-After: 1`).
    failing: Vec<u16>,
    pushes: usize,
}

/// The receiver; stops on drop.
pub struct LokiReceiver {
    http: WebhookReceiver,
    state: Arc<Mutex<State>>,
}

fn label_name_ok(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl LokiReceiver {
    /// Starts a receiver that accepts every well-formed push.
    pub async fn start() -> LokiReceiver {
        let http = WebhookReceiver::start().await;
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        http.set_handler(move |req, _| push(&mut s.lock().expect("loki state"), req));
        LokiReceiver { http, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("loki state"))
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.http.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn origin(&self) -> String {
        self.http.origin()
    }

    /// The push URL.
    pub fn push_url(&self) -> String {
        self.http.url("/loki/api/v1/push")
    }

    /// Answers the next pushes with these statuses, in order (`503` with
    /// `Retry-After: 1`, `429`, …).
    pub fn fail_next(&self, statuses: &[u16]) {
        self.with(|s| s.failing = statuses.to_vec());
    }

    /// Every stream and its entries `(ns, line)` in stored order.
    pub fn streams(&self) -> BTreeMap<String, Vec<(i128, String)>> {
        self.with(|s| s.streams.clone())
    }

    /// Every stored line parsed as JSON, with its stream.
    pub fn lines(&self) -> Vec<(String, Value)> {
        self.streams()
            .into_iter()
            .flat_map(|(k, v)| {
                v.into_iter()
                    .map(move |(_, l)| (k.clone(), serde_json::from_str(&l).unwrap_or(Value::Null)))
            })
            .collect()
    }

    /// Format violations seen (must be empty).
    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    /// Pushes answered (any status).
    pub fn pushes(&self) -> usize {
        self.with(|s| s.pushes)
    }

    /// Every raw request.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.http.requests()
    }
}

/// Loki answers errors as plain text (the receiver's content-type header
/// stays JSON; the plugin reads the text either way).
fn text(status: u16, body: &str) -> Reply {
    let mut r = Reply::status(status);
    r.body = body.to_string();
    r
}

fn push(s: &mut State, req: &ReceivedRequest) -> Reply {
    s.pushes += 1;
    if req.method != "POST" || req.path != "/loki/api/v1/push" {
        s.violations
            .push(format!("unexpected request {} {}", req.method, req.path));
        return text(404, "404 page not found");
    }
    if !s.failing.is_empty() {
        let status = s.failing.remove(0);
        let reply = text(status, "Ingestion rate limit exceeded");
        return if status == 503 {
            reply.header("retry-after", "1")
        } else {
            reply
        };
    }
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        s.violations
            .push(format!("content-type {:?}", req.header("content-type")));
        return text(415, "unsupported content type");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        s.violations.push("body is not JSON".into());
        return text(400, "loghttp.PushRequest.Streams: ReadArray: expect [");
    };
    let Some(streams) = body["streams"].as_array() else {
        s.violations.push(format!("no streams array: {body}"));
        return text(400, "loghttp.PushRequest.Streams: ReadArray: expect [");
    };
    // Parse everything first: a malformed push is refused whole.
    let mut parsed = Vec::new();
    for stream in streams {
        let Some(labels) = stream["stream"].as_object().filter(|l| !l.is_empty()) else {
            s.violations
                .push(format!("stream without labels: {stream}"));
            return text(
                400,
                "error parsing labels: at least one label pair is required per stream",
            );
        };
        let mut pairs = Vec::new();
        for (k, v) in labels {
            if !label_name_ok(k) || !v.is_string() {
                s.violations.push(format!("bad label {k}={v}"));
                return text(400, &format!("error parsing labels: invalid label {k}"));
            }
            pairs.push(format!("{k}={v}"));
        }
        pairs.sort();
        let key = format!("{{{}}}", pairs.join(", "));
        let Some(values) = stream["values"].as_array() else {
            s.violations
                .push(format!("stream without values: {stream}"));
            return text(400, "loghttp.PushRequest.Streams: values missing");
        };
        let mut entries = Vec::new();
        let mut prev = i128::MIN;
        for v in values {
            let ts = v[0].as_str().and_then(|t| t.parse::<i128>().ok());
            let (Some(ts), Some(line), Some(2)) = (ts, v[1].as_str(), v.as_array().map(Vec::len))
            else {
                s.violations.push(format!("bad entry {v}"));
                return text(
                    400,
                    "loghttp.PushRequest.Streams: entry must be [\"<ns>\", \"<line>\"]",
                );
            };
            if ts < prev {
                s.violations
                    .push(format!("{key}: entries of the push not in time order"));
            }
            prev = ts;
            entries.push((ts, line.to_string()));
        }
        parsed.push((key, entries));
    }
    let mut refused = Vec::new();
    for (key, entries) in parsed {
        let stored = s.streams.entry(key.clone()).or_default();
        for (ts, line) in entries {
            let newest = stored.last().map(|(t, _)| *t);
            if stored.iter().any(|(t, l)| *t == ts && *l == line) {
                continue; // duplicate: dropped silently, as Loki does
            }
            if newest.is_some_and(|n| ts < n) {
                refused.push(format!(
                    "entry with timestamp {ts} ignored, reason: 'entry out of order' for stream: {key},"
                ));
                continue;
            }
            stored.push((ts, line));
        }
    }
    if refused.is_empty() {
        text(204, "")
    } else {
        text(
            400,
            &format!(
                "{}\ntotal ignored: {} out of many",
                refused.join("\n"),
                refused.len()
            ),
        )
    }
}
