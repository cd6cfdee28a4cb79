//! Sending a [`Request`] with `wasi:http/outgoing-handler` and reading the whole
//! response with `wasi:io` streams (blocking reads, pollables for writes).
//!
//! Child resources (streams, pollables, header fields) are always dropped before
//! their parents: the host traps on a parent dropped while a child lives.
//! Outside wasm32 there is no `wasi:http`: `send` answers [`HttpError::Unsupported`].

use super::url::RequestUrl;
use super::{HttpError, Request, Response};

#[cfg(not(target_arch = "wasm32"))]
pub(super) fn send(_request: &Request, _url: &RequestUrl) -> Result<Response, HttpError> {
    Err(HttpError::Unsupported)
}

#[cfg(target_arch = "wasm32")]
pub(super) use wasi_impl::send;

#[cfg(target_arch = "wasm32")]
mod wasi_impl {
    use super::super::Method;
    use super::*;
    use crate::bindings::imports::wasi::http::outgoing_handler;
    use crate::bindings::imports::wasi::http::types::{
        self as wasi, ErrorCode, Fields, IncomingBody, OutgoingBody, OutgoingRequest,
        RequestOptions,
    };
    use crate::bindings::imports::wasi::io::streams::{InputStream, OutputStream, StreamError};

    const READ_CHUNK: u64 = 64 * 1024;

    pub(in super::super) fn send(
        request: &Request,
        url: &RequestUrl,
    ) -> Result<Response, HttpError> {
        let invalid = |what: &str| HttpError::InvalidRequest(format!("{what} refused by the host"));
        let headers = Fields::from_list(&request.headers)
            .map_err(|e| HttpError::InvalidRequest(format!("header refused by the host: {e:?}")))?;
        let outgoing = OutgoingRequest::new(headers);
        outgoing
            .set_method(&wasi_method(request.method))
            .map_err(|()| invalid("method"))?;
        let scheme = match url.scheme.as_str() {
            "http" => wasi::Scheme::Http,
            "https" => wasi::Scheme::Https,
            other => wasi::Scheme::Other(other.to_string()),
        };
        outgoing
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme"))?;
        outgoing
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("authority"))?;
        outgoing
            .set_path_with_query(Some(&url.path_with_query))
            .map_err(|()| invalid("path"))?;
        let body = outgoing.body().map_err(|()| invalid("body"))?;
        let options = request.timeout.map(|timeout| {
            let options = RequestOptions::new();
            let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
            // An Err means "not supported by this host": then there is no timeout.
            let _ = options.set_connect_timeout(Some(nanos));
            let _ = options.set_first_byte_timeout(Some(nanos));
            let _ = options.set_between_bytes_timeout(Some(nanos));
            options
        });

        let future = outgoing_handler::handle(outgoing, options)
            .map_err(|code| classify(&request.url, &code))?;

        // Stream the body after `handle`: the host consumes it while we write.
        // A failed write is not reported by itself: it also fails the response
        // (with the host's more telling error code), unless the receiver
        // answered before reading the whole body, and then that answer counts.
        let _ = write_body(body, &request.body, &request.url);

        let response = {
            let pollable = future.subscribe();
            loop {
                match future.get() {
                    Some(Ok(Ok(response))) => break response,
                    Some(Ok(Err(code))) => return Err(classify(&request.url, &code)),
                    Some(Err(())) => {
                        return Err(HttpError::Connection {
                            url: request.url.clone(),
                            code: "response already taken".into(),
                        })
                    }
                    None => pollable.block(),
                }
            }
        };
        let status = response.status();
        let headers = {
            let fields = response.headers();
            fields.entries()
        };
        let incoming = response.consume().map_err(|()| HttpError::Connection {
            url: request.url.clone(),
            code: "response body unavailable".into(),
        })?;
        let bytes = read_body(&incoming, request.max_response_bytes, &request.url);
        drop(IncomingBody::finish(incoming));
        drop(response);
        Ok(Response::new(status, headers, bytes?))
    }

    fn wasi_method(method: Method) -> wasi::Method {
        match method {
            Method::Get => wasi::Method::Get,
            Method::Head => wasi::Method::Head,
            Method::Post => wasi::Method::Post,
            Method::Put => wasi::Method::Put,
            Method::Patch => wasi::Method::Patch,
            Method::Delete => wasi::Method::Delete,
        }
    }

    fn write_body(body: OutgoingBody, bytes: &[u8], url: &str) -> Result<(), HttpError> {
        if !bytes.is_empty() {
            let stream = body.write().map_err(|()| HttpError::Connection {
                url: url.to_string(),
                code: "request body stream unavailable".into(),
            })?;
            let result = write_all(&stream, bytes);
            drop(stream);
            result.map_err(|e| stream_error(url, e))?;
        }
        OutgoingBody::finish(body, None).map_err(|code| classify(url, &code))
    }

    fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
        let pollable = stream.subscribe();
        while !bytes.is_empty() {
            let permitted = stream.check_write()?;
            if permitted == 0 {
                pollable.block();
                continue;
            }
            let n = usize::try_from(permitted)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            stream.write(&bytes[..n])?;
            bytes = &bytes[n..];
        }
        drop(pollable);
        stream.blocking_flush()
    }

    fn read_body(incoming: &IncomingBody, limit: usize, url: &str) -> Result<Vec<u8>, HttpError> {
        let stream: InputStream = incoming.stream().map_err(|()| HttpError::Connection {
            url: url.to_string(),
            code: "response body stream unavailable".into(),
        })?;
        let mut bytes = Vec::new();
        let result = loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => {
                    if bytes.len() + chunk.len() > limit {
                        break Err(HttpError::TooLarge { limit });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Err(StreamError::Closed) => break Ok(bytes),
                Err(e) => break Err(stream_error(url, e)),
            }
        };
        drop(stream);
        result
    }

    fn stream_error(url: &str, error: StreamError) -> HttpError {
        match error {
            StreamError::Closed => HttpError::Connection {
                url: url.to_string(),
                code: "stream closed early".into(),
            },
            StreamError::LastOperationFailed(e) => match wasi::http_error_code(&e) {
                Some(code) => classify(url, &code),
                None => HttpError::Connection {
                    url: url.to_string(),
                    code: e.to_debug_string(),
                },
            },
        }
    }

    /// Sorts a `wasi:http` error code into denied / invalid / timeout / connection.
    fn classify(url: &str, code: &ErrorCode) -> HttpError {
        let url = url.to_string();
        let text = format!("{code:?}");
        match code {
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
                HttpError::Denied { url, code: text }
            }
            ErrorCode::HttpRequestMethodInvalid
            | ErrorCode::HttpRequestUriInvalid
            | ErrorCode::HttpRequestUriTooLong
            | ErrorCode::HttpRequestHeaderSectionSize(_)
            | ErrorCode::HttpRequestHeaderSize(_)
            | ErrorCode::HttpRequestBodySize(_)
            | ErrorCode::HttpRequestLengthRequired => {
                HttpError::InvalidRequest(format!("{url}: {text}"))
            }
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout { url, code: text },
            _ => HttpError::Connection { url, code: text },
        }
    }
}
