//! Outbound HTTP for plugins, over the `wasi:http/outgoing-handler` import.
//!
//! A small blocking client: build a [`Request`] with [`get`], [`post`], [`put`],
//! … , [`Request::send`] it, read the whole [`Response`]. The host decides which
//! destinations are reachable (the manifest's `allowed_hosts`) and reports a
//! refusal as [`HttpError::Denied`]. Redirects are not followed. Every
//! [`HttpError`] converts with `?` into a publish or notify error, retryable or
//! permanent as the failure warrants.
//!
//! ```no_run
//! # fn demo() -> Result<(), vigil_plugin::http::HttpError> {
//! use std::time::Duration;
//! use vigil_plugin::http;
//!
//! let response = http::post("https://receiver.example/ingest")
//!     .bearer_auth("token")
//!     .timeout(Duration::from_secs(5))
//!     .json(&serde_json::json!({"hello": "world"}))
//!     .send()?
//!     .error_for_status()?;
//! let _text = response.text()?;
//! # Ok(())
//! # }
//! ```

mod error;
mod transport;
pub(crate) mod url;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::HttpError;

/// Default cap on a response body: 16 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

/// A `GET` request to `url`.
pub fn get(url: &str) -> Request {
    Request::new(Method::Get, url)
}

/// A `POST` request to `url`.
pub fn post(url: &str) -> Request {
    Request::new(Method::Post, url)
}

/// A `PUT` request to `url`.
pub fn put(url: &str) -> Request {
    Request::new(Method::Put, url)
}

/// A `PATCH` request to `url`.
pub fn patch(url: &str) -> Request {
    Request::new(Method::Patch, url)
}

/// A `DELETE` request to `url`.
pub fn delete(url: &str) -> Request {
    Request::new(Method::Delete, url)
}

/// A request being built; nothing is sent before [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
    max_response_bytes: usize,
    /// The first builder error, reported by `send`.
    error: Option<HttpError>,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            error: None,
        }
    }

    /// The method.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets header `name` (replacing an earlier value of the same name).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        let name = name.to_ascii_lowercase();
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.as_ref().to_vec()));
        self
    }

    /// Sets the body to `value` as JSON, and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Request {
        match serde_json::to_vec(value) {
            Ok(body) => self.header("content-type", "application/json").body(body),
            Err(e) => self.fail(HttpError::InvalidRequest(format!("JSON body: {e}"))),
        }
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// `Authorization: Basic …`.
    pub fn basic_auth(self, user: &str, password: &str) -> Request {
        let token = base64(format!("{user}:{password}").as_bytes());
        self.header("authorization", format!("Basic {token}"))
    }

    /// `Authorization: Bearer …`.
    pub fn bearer_auth(self, token: &str) -> Request {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// Limits connecting, the wait for the first response byte, and each wait
    /// between body bytes to `timeout` (the `wasi:http` request options).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Fails with [`HttpError::TooLarge`] past `bytes` of response body
    /// (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub fn max_response_bytes(mut self, bytes: usize) -> Request {
        self.max_response_bytes = bytes;
        self
    }

    /// Sends the request and reads the whole response. Any status is `Ok`; see
    /// [`Response::error_for_status`].
    pub fn send(self) -> Result<Response, HttpError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut url = url::parse(&self.url).map_err(HttpError::InvalidRequest)?;
        let mut request = self;
        if let Some((user, password)) = url.credentials.take() {
            if !request.headers.iter().any(|(n, _)| n == "authorization") {
                request = request.basic_auth(&user, &password);
            }
        }
        // A known length instead of chunked encoding: not every receiver takes chunks.
        let has_body = !request.body.is_empty()
            || matches!(request.method, Method::Post | Method::Put | Method::Patch);
        if has_body && !request.headers.iter().any(|(n, _)| n == "content-length") {
            let length = request.body.len().to_string();
            request = request.header("content-length", length);
        }
        transport::send(&request, &url)
    }

    fn fail(mut self, error: HttpError) -> Request {
        self.error.get_or_insert(error);
        self
    }
}

/// A response, body read in full.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Response {
    /// A response as the transport read it; public so plugins can test their
    /// response handling natively.
    pub fn new(status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) -> Response {
        Response {
            status,
            headers,
            body,
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case), if present and UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// All headers, names as the host gave them (lower case).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// `Retry-After` in milliseconds (delay-seconds form only).
    pub fn retry_after_ms(&self) -> Option<u64> {
        self.header("retry-after")
            .and_then(error::parse_retry_after)
    }

    /// The body.
    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as UTF-8.
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body)
            .map_err(|e| HttpError::Decode(format!("body is not UTF-8: {e}")))
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Decode(format!("JSON body: {e}")))
    }

    /// `Ok(self)` unless the status is 4xx or 5xx; then [`HttpError::Status`]
    /// with `Retry-After` and the start of the body.
    pub fn error_for_status(self) -> Result<Response, HttpError> {
        if self.status < 400 {
            return Ok(self);
        }
        let mut body = String::from_utf8_lossy(&self.body).into_owned();
        if body.len() > 512 {
            let mut cut = 512;
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            body.truncate(cut);
            body.push('…');
        }
        Err(HttpError::Status {
            status: self.status,
            retry_after_ms: self.retry_after_ms(),
            body: body.trim().to_string(),
        })
    }
}

/// Standard base64 with padding (for Basic auth).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
    }

    #[test]
    fn builder_sets_headers_once() {
        let r = post("http://x/")
            .header("X-A", "1")
            .header("x-a", "2")
            .basic_auth("Aladdin", "open sesame")
            .json(&[1, 2]);
        let a: Vec<_> = r.headers.iter().filter(|(n, _)| n == "x-a").collect();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].1, b"2");
        let auth = r
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap();
        assert_eq!(auth.1, b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(r.body, b"[1,2]");
    }

    #[test]
    fn error_for_status_keeps_retry_after_and_body() {
        let ok = Response::new(204, vec![], vec![]);
        assert!(ok.error_for_status().is_ok());
        let r = Response::new(
            429,
            vec![("retry-after".into(), b"7".to_vec())],
            b"slow down".to_vec(),
        );
        assert_eq!(r.header("Retry-After"), Some("7"));
        match r.error_for_status() {
            Err(HttpError::Status {
                status: 429,
                retry_after_ms: Some(7000),
                body,
            }) => assert_eq!(body, "slow down"),
            other => panic!("{other:?}"),
        }
        let long = Response::new(500, vec![], "é".repeat(600).into_bytes());
        let Err(HttpError::Status { body, .. }) = long.error_for_status() else {
            panic!("500 is an error")
        };
        assert!(body.len() <= 512 + '…'.len_utf8());
    }

    #[test]
    fn sending_outside_a_component_is_unsupported_not_a_panic() {
        assert_eq!(
            get("http://127.0.0.1:1/").send().unwrap_err(),
            HttpError::Unsupported
        );
        assert!(matches!(
            get("nonsense").send(),
            Err(HttpError::InvalidRequest(_))
        ));
    }
}
