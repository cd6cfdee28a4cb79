//! A strict stand-in for Elasticsearch's `_bulk` and template APIs, on top of
//! [`WebhookReceiver`]'s HTTP server.
//!
//! It parses every NDJSON line and refuses malformed requests the way
//! Elasticsearch does (whole-request `400` with `x_content_parse_exception` /
//! `illegal_argument_exception`), keeps documents by `(_index, _id)`, answers
//! each item `201` or `409` (`version_conflict_engine_exception`) in
//! Elasticsearch's response format, and can be told to answer `429`
//! (`es_rejected_execution_exception`) for chosen documents, `503` with
//! `Retry-After` for a number of requests, `401` (`security_exception`), or
//! `400 mapper_parsing_exception` for a chosen document (by `_id`, or by the
//! document's `labels.es_fault` / `attributes.es_fault` = `"busy"` (429 the
//! first [`ElasticsearchReceiver::set_busy_times`] times) or `"mapper"`). It checks the
//! `Authorization` header it was given and the template requests.
//! Everything a real Elasticsearch would refuse and a few things it would
//! merely tolerate (an action other than `create`, a missing `_id`) are also
//! recorded as [`ElasticsearchReceiver::violations`], which tests assert empty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::webhook::{ReceivedRequest, Reply, WebhookReceiver};

/// One stored document.
#[derive(Clone, Debug)]
pub struct StoredDoc {
    pub index: String,
    pub id: String,
    pub source: Value,
}

#[derive(Default)]
struct State {
    /// `(index, id)` → document.
    docs: BTreeMap<(String, String), Value>,
    /// How many times each `(index, id)` was answered 201 (must be 1).
    created: BTreeMap<(String, String), usize>,
    /// `path` → template body.
    templates: BTreeMap<String, Value>,
    violations: Vec<String>,
    /// `_id`s answered 429, and how many more times.
    reject_429: BTreeMap<String, usize>,
    /// `_id`s answered 400 mapper_parsing_exception.
    mapper_error: BTreeSet<String>,
    /// Whole `_bulk` requests still to answer 503 with `Retry-After: 1`.
    unavailable: usize,
    /// Answer every request 401.
    unauthorized: bool,
    /// The `Authorization` header expected, if any.
    expected_auth: Option<String>,
    /// How many times a document marked `es_fault = "busy"` is answered 429.
    busy_times: usize,
    /// How many times each busy `_id` was answered 429 so far.
    busy_answered: BTreeMap<String, usize>,
    /// Waited before each `_bulk` answer.
    delay: std::time::Duration,
    /// Items answered 409.
    conflicts: usize,
    /// Bulk requests answered (any status).
    bulk_requests: usize,
    /// `_bulk` bodies that came gzip-compressed.
    gzipped_bulks: usize,
    /// Bytes of `_bulk` bodies as sent (compressed or not).
    bulk_bytes_on_wire: usize,
    /// Largest `_bulk` body seen.
    largest_bulk: usize,
}

/// The receiver; stops on drop.
pub struct ElasticsearchReceiver {
    http: WebhookReceiver,
    state: Arc<Mutex<State>>,
}

fn es_error(status: u16, kind: &str, reason: &str) -> Reply {
    Reply::status(status).json(&json!({
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status
    }))
}

impl ElasticsearchReceiver {
    /// Starts a receiver that accepts every well-formed request.
    pub async fn start() -> ElasticsearchReceiver {
        ElasticsearchReceiver::start_on(0).await
    }

    /// Like [`ElasticsearchReceiver::start`], on 127.0.0.1:`port`.
    pub async fn start_on(port: u16) -> ElasticsearchReceiver {
        let http = WebhookReceiver::start_on(port).await;
        let state: Arc<Mutex<State>> = Arc::default();
        let s = state.clone();
        http.set_handler(move |req, _| handle(&mut s.lock().expect("es state"), req));
        ElasticsearchReceiver { http, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("es state"))
    }

    /// `http://127.0.0.1:<port>` (for `hosts` and `allowed_hosts`).
    pub fn origin(&self) -> String {
        self.http.origin()
    }

    /// Requires `Authorization: <value>` on every request (else 401).
    pub fn expect_auth(&self, value: &str) {
        self.with(|s| s.expected_auth = Some(value.to_string()));
    }

    /// Answers the next `times` bulk items with `_id` `id` 429.
    pub fn reject_429(&self, id: &str, times: usize) {
        self.with(|s| s.reject_429.insert(id.to_string(), times));
    }

    /// Answers every bulk item with `_id` `id` 400 mapper_parsing_exception.
    pub fn mapper_error(&self, id: &str) {
        self.with(|s| s.mapper_error.insert(id.to_string()));
    }

    /// Documents marked `es_fault = "busy"` are answered 429 this many times
    /// (default 0), then created.
    pub fn set_busy_times(&self, n: usize) {
        self.with(|s| s.busy_times = n);
    }

    /// Waits `d` before answering each `_bulk` request.
    pub fn set_delay(&self, d: Duration) {
        self.with(|s| s.delay = d);
    }

    /// Items answered 409 so far.
    pub fn conflicts(&self) -> usize {
        self.with(|s| s.conflicts)
    }

    /// Answers the next `n` `_bulk` requests 503 with `Retry-After: 1`.
    pub fn unavailable_for(&self, n: usize) {
        self.with(|s| s.unavailable = n);
    }

    /// Answers every request 401 (`security_exception`) while `on`.
    pub fn set_unauthorized(&self, on: bool) {
        self.with(|s| s.unauthorized = on);
    }

    /// Every stored document, by `(index, id)`.
    pub fn docs(&self) -> Vec<StoredDoc> {
        self.with(|s| {
            s.docs
                .iter()
                .map(|((index, id), source)| StoredDoc {
                    index: index.clone(),
                    id: id.clone(),
                    source: source.clone(),
                })
                .collect()
        })
    }

    /// `_id`s answered 201 more than once (must be empty).
    pub fn created_twice(&self) -> Vec<String> {
        self.with(|s| {
            s.created
                .iter()
                .filter(|(_, n)| **n > 1)
                .map(|((_, id), _)| id.clone())
                .collect()
        })
    }

    /// Template bodies by request path (`/_index_template/vigil`, …).
    pub fn templates(&self) -> BTreeMap<String, Value> {
        self.with(|s| s.templates.clone())
    }

    /// Protocol violations seen (must be empty).
    pub fn violations(&self) -> Vec<String> {
        self.with(|s| s.violations.clone())
    }

    /// `_bulk` requests answered.
    pub fn bulk_requests(&self) -> usize {
        self.with(|s| s.bulk_requests)
    }

    /// `_bulk` requests that came with `Content-Encoding: gzip`.
    pub fn gzipped_bulks(&self) -> usize {
        self.with(|s| s.gzipped_bulks)
    }

    /// Bytes of `_bulk` bodies as they came over the wire.
    pub fn bulk_bytes_on_wire(&self) -> usize {
        self.with(|s| s.bulk_bytes_on_wire)
    }

    /// The largest `_bulk` body in bytes (as sent).
    pub fn largest_bulk(&self) -> usize {
        self.with(|s| s.largest_bulk)
    }

    /// Every raw request.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.http.requests()
    }
}

fn handle(s: &mut State, req: &ReceivedRequest) -> Reply {
    if s.unauthorized
        || s.expected_auth
            .as_deref()
            .is_some_and(|want| req.header("authorization") != Some(want))
    {
        return es_error(
            401,
            "security_exception",
            "unable to authenticate user [vigil] for REST request [/_bulk]",
        )
        .header("www-authenticate", "ApiKey");
    }
    let path = req.path.split('?').next().unwrap_or("");
    match (req.method.as_str(), path) {
        ("POST" | "PUT", "/_bulk") => bulk(s, req),
        ("PUT", p)
            if p.starts_with("/_index_template/") || p.starts_with("/_component_template/") =>
        {
            template(s, req, p)
        }
        _ => {
            s.violations
                .push(format!("unexpected request {} {}", req.method, req.path));
            es_error(
                400,
                "illegal_argument_exception",
                &format!(
                    "no handler found for uri [{}] and method [{}]",
                    req.path, req.method
                ),
            )
        }
    }
}

fn template(s: &mut State, req: &ReceivedRequest, path: &str) -> Reply {
    if !req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        s.violations.push(format!(
            "{path}: content-type {:?}",
            req.header("content-type")
        ));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return es_error(
            400,
            "x_content_parse_exception",
            "template body is not JSON",
        );
    };
    let index = path.starts_with("/_index_template/");
    let mappings = if index && body.get("composed_of").is_some() {
        Some(&Value::Null)
    } else {
        body.pointer("/template/mappings")
    };
    let ok = mappings.is_some()
        && (!index
            || body["index_patterns"]
                .as_array()
                .is_some_and(|p| !p.is_empty() && p.iter().all(Value::is_string)));
    if !ok {
        s.violations
            .push(format!("{path}: incomplete template {body}"));
        return es_error(
            400,
            "action_request_validation_exception",
            "Validation Failed: 1: index patterns are missing;",
        );
    }
    if let Some(m) = mappings.filter(|m| !m.is_null()) {
        for field in ["labels", "attributes"] {
            if m.pointer(&format!("/properties/{field}/type")) != Some(&json!("flattened")) {
                s.violations
                    .push(format!("{path}: {field} is not flattened"));
            }
        }
    }
    s.templates.insert(path.to_string(), body);
    Reply::ok().json(&json!({"acknowledged": true}))
}

fn bulk(s: &mut State, req: &ReceivedRequest) -> Reply {
    let delay = s.delay;
    bulk_answer(s, req).delay(delay)
}

fn bulk_answer(s: &mut State, req: &ReceivedRequest) -> Reply {
    s.bulk_requests += 1;
    s.largest_bulk = s.largest_bulk.max(req.body.len());
    s.bulk_bytes_on_wire += req.body.len();
    if s.unavailable > 0 {
        s.unavailable -= 1;
        return es_error(
            503,
            "cluster_block_exception",
            "blocked by: [SERVICE_UNAVAILABLE/2/no master];",
        )
        .header("retry-after", "1");
    }
    if req.header("content-type") != Some("application/x-ndjson") {
        s.violations.push(format!(
            "_bulk content-type {:?}",
            req.header("content-type")
        ));
        return es_error(
            406,
            "illegal_argument_exception",
            "Content-Type header is not supported",
        );
    }
    let decoded;
    let body: &[u8] = match req.header("content-encoding") {
        None => &req.body,
        Some("gzip") => match gunzip(&req.body) {
            Ok(d) => {
                s.gzipped_bulks += 1;
                decoded = d;
                &decoded
            }
            Err(e) => {
                s.violations.push(format!("_bulk gzip body: {e}"));
                return es_error(
                    400,
                    "parse_exception",
                    &format!("request body is not valid gzip: {e}"),
                );
            }
        },
        Some(other) => {
            s.violations.push(format!("_bulk content-encoding {other}"));
            return es_error(
                415,
                "illegal_argument_exception",
                "unsupported content-encoding",
            );
        }
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return es_error(400, "x_content_parse_exception", "body is not UTF-8");
    };
    if !text.ends_with('\n') {
        s.violations
            .push("_bulk body does not end with a newline".into());
        return es_error(
            400,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    // Parse everything first: a malformed line refuses the whole request.
    let mut actions = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let action: Value = match serde_json::from_str(lines[i]) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                s.violations
                    .push(format!("malformed action line {line_no}"));
                return es_error(
                    400,
                    "x_content_parse_exception",
                    &format!(
                        "[1:1] Malformed action/metadata line [{line_no}], expected START_OBJECT"
                    ),
                );
            }
        };
        let obj = action.as_object().expect("object");
        let (op, meta) = match obj.iter().next() {
            Some((op, meta)) if obj.len() == 1 => (op.clone(), meta.clone()),
            _ => {
                s.violations
                    .push(format!("action line {line_no} has {} keys", obj.len()));
                return es_error(
                    400,
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line [{line_no}], expected a simple value for field [{}]", obj.len()),
                );
            }
        };
        if op != "create" {
            s.violations
                .push(format!("line {line_no}: action {op}, not create"));
        }
        let index = meta["_index"].as_str().unwrap_or("").to_string();
        let id = meta["_id"].as_str().unwrap_or("").to_string();
        if index.is_empty() || id.is_empty() {
            s.violations
                .push(format!("line {line_no}: missing _index or _id: {meta}"));
            return es_error(
                400,
                "action_request_validation_exception",
                "Validation Failed: 1: index is missing;",
            );
        }
        let Some(doc_line) = lines.get(i + 1) else {
            s.violations
                .push(format!("line {line_no}: action without a document"));
            return es_error(
                400,
                "illegal_argument_exception",
                "The bulk request must be terminated by a newline [\\n]",
            );
        };
        let doc: Value = match serde_json::from_str(doc_line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                s.violations
                    .push(format!("malformed document line {}", line_no + 1));
                return es_error(
                    400,
                    "x_content_parse_exception",
                    "[1:1] failed to parse the document",
                );
            }
        };
        actions.push((index, id, doc));
        i += 2;
    }
    let mut items = Vec::with_capacity(actions.len());
    let mut errors = false;
    for (index, id, doc) in actions {
        let item = |status: u16, extra: Value| {
            let mut v = json!({"_index": index, "_id": id, "status": status});
            if let (Some(o), Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            json!({ "create": v })
        };
        let fault = doc
            .pointer("/labels/es_fault")
            .or_else(|| doc.pointer("/attributes/es_fault"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let busy = fault == "busy" && {
            let n = s.busy_answered.entry(id.clone()).or_insert(0);
            *n += 1;
            *n <= s.busy_times
        };
        let listed = s.reject_429.get(&id).is_some_and(|n| *n > 0);
        if busy || listed {
            if let Some(n) = s.reject_429.get_mut(&id) {
                *n = n.saturating_sub(1);
            }
            errors = true;
            items.push(item(429, json!({"error": {"type": "es_rejected_execution_exception",
                "reason": "rejected execution of coordinating operation [shard_detail=[vigil][0][C]]"}})));
            continue;
        }
        if s.mapper_error.contains(&id) || fault == "mapper" {
            errors = true;
            items.push(item(400, json!({"error": {"type": "mapper_parsing_exception",
                "reason": "failed to parse field [value] of type [double] in document with id '".to_string() + &id + "'",
                "caused_by": {"type": "number_format_exception", "reason": "For input string: \"x\""}}})));
            continue;
        }
        let data_stream = index.starts_with("metrics-") || index.starts_with("logs-");
        if data_stream && !doc["@timestamp"].is_string() {
            s.violations
                .push(format!("{id}: data stream document without @timestamp"));
        }
        let key = (index.clone(), id.clone());
        if s.docs.contains_key(&key) {
            errors = true;
            s.conflicts += 1;
            items.push(item(409, json!({"error": {"type": "version_conflict_engine_exception",
                "reason": format!("[{id}]: version conflict, document already exists (current version [1])")}})));
            continue;
        }
        s.docs.insert(key.clone(), doc);
        *s.created.entry(key).or_insert(0) += 1;
        items.push(item(
            201,
            json!({"_version": 1, "result": "created", "_seq_no": 0, "_primary_term": 1}),
        ));
    }
    Reply::ok().json(&json!({"took": 1, "errors": errors, "items": items}))
}

/// One gzip member (RFC 1952): header checked, deflate inflated, CRC-32 and
/// length checked, nothing after it.
fn gunzip(z: &[u8]) -> Result<Vec<u8>, String> {
    if z.len() < 18 || z[..3] != [0x1f, 0x8b, 8] {
        return Err("no gzip header".into());
    }
    if z[3] != 0 {
        return Err(format!("gzip flags {:#x} not expected", z[3]));
    }
    let (body, trailer) = z[10..].split_at(z.len() - 18);
    let data =
        miniz_oxide::inflate::decompress_to_vec(body).map_err(|e| format!("inflate: {e:?}"))?;
    let crc = u32::from_le_bytes(trailer[..4].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(trailer[4..].try_into().expect("4 bytes"));
    if crc != crc32fast::hash(&data) || len != data.len() as u32 {
        return Err("CRC-32 or length does not match".into());
    }
    Ok(data)
}
