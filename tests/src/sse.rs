//! A strict Server-Sent Events client for the provenance streams: parses the
//! wire format (`id:`, `event:`, `data:` lines, `:` comments, blank line
//! between messages) as the WHATWG spec reads it, so tests see exactly what a
//! browser's `EventSource` or a proxy would.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::TestServer;

/// One SSE message (or a comment, when `comment` is set).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    /// Text of a `:` comment line (keep-alives), when this is one.
    pub comment: Option<String>,
}

impl SseMessage {
    /// `data` as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }

    /// The id as a sequence number.
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|i| i.parse().ok())
            .unwrap_or_else(|| panic!("message without a numeric id: {self:?}"))
    }
}

/// An open `text/event-stream` response.
pub struct SseStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    current: SseMessage,
    pub headers: reqwest::header::HeaderMap,
}

impl SseStream {
    /// Opens `path` with `Accept: text/event-stream` (and `Last-Event-ID`
    /// when given); panics unless the answer is `200 text/event-stream`.
    pub async fn open(server: &TestServer, path: &str, last_event_id: Option<i64>) -> SseStream {
        let client = reqwest::Client::builder().build().expect("client");
        let mut req = client
            .get(server.url(path))
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("open SSE");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        if status != 200 {
            panic!(
                "SSE {path}: {status} {}",
                resp.text().await.unwrap_or_default()
            );
        }
        let ct = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        SseStream {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            current: SseMessage::default(),
            headers,
        }
    }

    /// The next message or comment; `None` when the server closed the
    /// stream. Panics after `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<SseMessage> {
        tokio::time::timeout(timeout, self.next_item())
            .await
            .unwrap_or_else(|_| panic!("no SSE message within {timeout:?}"))
    }

    async fn next_item(&mut self) -> Option<SseMessage> {
        loop {
            while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let line = String::from_utf8(line).expect("SSE is UTF-8");
                if line.is_empty() {
                    let msg = std::mem::take(&mut self.current);
                    if msg.id.is_some() || msg.event.is_some() || !msg.data.is_empty() {
                        return Some(msg);
                    }
                    continue;
                }
                if let Some(comment) = line.strip_prefix(':') {
                    return Some(SseMessage {
                        comment: Some(comment.trim_start().to_string()),
                        ..SseMessage::default()
                    });
                }
                let (field, value) = match line.split_once(':') {
                    Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                    None => (line.as_str(), ""),
                };
                match field {
                    "id" => self.current.id = Some(value.to_string()),
                    "event" => self.current.event = Some(value.to_string()),
                    "data" => {
                        if !self.current.data.is_empty() {
                            self.current.data.push('\n');
                        }
                        self.current.data.push_str(value);
                    }
                    "retry" => {}
                    other => panic!("unknown SSE field `{other}` in line {line:?}"),
                }
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("SSE body failed: {e}"),
                None => return None,
            }
        }
    }

    /// The next message that is not a comment.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<SseMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_within(left).await {
                Some(m) if m.comment.is_some() => continue,
                other => return other,
            }
        }
    }

    /// The next `n` event messages (comments skipped); panics on anything else.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Vec<SseMessage> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.next_message(timeout).await {
                Some(m) if m.event.is_none() => out.push(m),
                other => panic!("expected event {} of {n}, got {other:?}", out.len() + 1),
            }
        }
        out
    }
}
