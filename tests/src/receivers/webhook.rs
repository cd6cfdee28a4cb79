//! A minimal HTTP/1.1 receiver standing in for a webhook: records every
//! request and answers what the test's handler says.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request a [`WebhookReceiver`] read completely.
#[derive(Clone, Debug)]
pub struct ReceivedRequest {
    /// When its connection was accepted.
    pub accepted_at: Instant,
    /// When the request had been read completely.
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body (chunked transfer coding removed).
    pub body: Vec<u8>,
    /// The status the receiver answered (or was about to answer).
    pub status: u16,
}

impl ReceivedRequest {
    /// First header of that (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The `samples` array of a webhook-publisher body.
    pub fn samples(&self) -> Vec<Value> {
        self.json()["samples"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `seq` of every sample in the body, in body order.
    pub fn seqs(&self) -> Vec<i64> {
        self.samples()
            .iter()
            .filter_map(|s| s["seq"].as_i64())
            .collect()
    }

    /// The `events` array of a webhook-publisher body.
    pub fn events(&self) -> Vec<Value> {
        self.json()["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `seq` of every sample and every event in the body.
    pub fn all_seqs(&self) -> Vec<i64> {
        self.samples()
            .iter()
            .chain(self.events().iter())
            .filter_map(|s| s["seq"].as_i64())
            .collect()
    }
}

/// What a [`WebhookReceiver`] answers to one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Waited before the answer is written.
    pub delay: Duration,
}

impl Reply {
    /// `200 {}`.
    pub fn ok() -> Reply {
        Reply::status(200)
    }
    /// `<code> {}`.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: code,
            headers: Vec::new(),
            body: "{}".into(),
            delay: Duration::ZERO,
        }
    }
    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    /// Sets a JSON body.
    pub fn json(mut self, body: &Value) -> Reply {
        self.body = body.to_string();
        self
    }
    /// Waits `d` before answering.
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

type ReplyFn = Box<dyn FnMut(&ReceivedRequest, usize) -> Reply + Send>;

/// A minimal HTTP/1.1 server on 127.0.0.1 standing in for a webhook: reads each
/// request (Content-Length or chunked body), records it, answers what the
/// handler says (default `200 {}`) and closes the connection. Runs on the
/// current tokio runtime; stops on drop.
pub struct WebhookReceiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    handler: Arc<Mutex<ReplyFn>>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts a receiver that answers `200 {}` to everything.
    pub async fn start() -> WebhookReceiver {
        WebhookReceiver::start_on(0).await
    }

    /// Like [`WebhookReceiver::start`], on 127.0.0.1:`port` (0: any free
    /// port), e.g. a port a plugin was already failing to reach.
    pub async fn start_on(port: u16) -> WebhookReceiver {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let requests: Arc<Mutex<Vec<ReceivedRequest>>> = Arc::default();
        let handler: Arc<Mutex<ReplyFn>> = Arc::new(Mutex::new(Box::new(|_, _| Reply::ok())));
        let (reqs, h) = (requests.clone(), handler.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let accepted_at = Instant::now();
                let (reqs, h) = (reqs.clone(), h.clone());
                tokio::spawn(async move {
                    let _ = serve_one(stream, accepted_at, reqs, h).await;
                });
            }
        });
        WebhookReceiver {
            addr,
            requests,
            handler,
            task,
        }
    }

    /// Replaces the handler; it gets the request and its 0-based index.
    pub fn set_handler(&self, f: impl FnMut(&ReceivedRequest, usize) -> Reply + Send + 'static) {
        *self.handler.lock().expect("handler") = Box::new(f);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (for `allowed_hosts`).
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request read so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.requests.lock().expect("requests").clone()
    }

    /// Number of requests read so far.
    pub fn count(&self) -> usize {
        self.requests.lock().expect("requests").len()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    accepted_at: Instant,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    handler: Arc<Mutex<ReplyFn>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(());
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().ok_or_else(|| bad("no method"))?.to_string();
    let path = parts.next().ok_or_else(|| bad("no path"))?.to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Err(bad("eof in headers"));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            line.clear();
            if reader.read_line(&mut line).await? == 0 {
                return Err(bad("eof in chunk size"));
            }
            let size_text = line
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            let size = usize::from_str_radix(&size_text, 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                // Trailers until the empty line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).await? == 0
                        || line.trim_end_matches(['\r', '\n']).is_empty()
                    {
                        break;
                    }
                }
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).await?;
            let mut crlf = [0u8; 2];
            reader.read_exact(&mut crlf).await?;
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len.parse().map_err(|_| bad("content-length"))?;
        body.resize(len, 0);
        reader.read_exact(&mut body).await?;
    }
    let mut req = ReceivedRequest {
        accepted_at,
        at: Instant::now(),
        method,
        path,
        headers,
        body,
        status: 0,
    };
    let reply = {
        let mut reqs = requests.lock().expect("requests");
        let index = reqs.len();
        let reply = (handler.lock().expect("handler"))(&req, index);
        req.status = reply.status;
        reqs.push(req);
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let stream = reader.get_mut();
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(reply.body.as_bytes()).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}
