//! Blocking HTTP client over `wasi:http/outgoing-handler`.
//!
//! The host lets a request through only when its host (or `host:port`) is on the Scaler's
//! allow-list and its address is granted by the cluster's policy; any other is refused with
//! [`HttpError::Denied`] (the host records why, and the operator reports it in the Scaler's
//! events). Write hosts canonically: `10.0.0.1`, `[fd00::1]`, `name.ns.svc`; spellings such
//! as `10.1` or `user@host` are refused. `https` uses the TLS settings the Scaler gives the
//! host (its CA bundle, its client certificate). Redirects are answers like any other (3xx):
//! the host does not follow them. A call has at most 16 requests in flight. The whole hook call
//! also has a deadline, so set per-request timeouts shorter than it.

use std::fmt;
use std::time::Duration;

use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::StreamError;

/// Largest chunk `output-stream.blocking-write-and-flush` accepts.
const WRITE_CHUNK: usize = 4096;
/// Largest response body read into memory.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL could not be understood.
    InvalidUrl { url: String, reason: String },
    /// The host refused the request: its host is not on the Scaler's allow-list, not
    /// granted by the cluster's policy, or a forbidden address.
    Denied { url: String },
    /// The request could not be built (bad header, bad method).
    InvalidRequest { url: String, reason: String },
    /// Connecting, sending or receiving failed.
    Transport { url: String, reason: String },
    /// The response body was larger than this helper reads into memory (4 MiB).
    BodyTooLarge { url: String },
    /// The server answered with a status the caller did not accept.
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl { url, reason } => write!(f, "invalid URL {url:?}: {reason}"),
            HttpError::Denied { url } => {
                write!(
                    f,
                    "request to {url} denied by the sandbox (the host, its address or its \
                     spelling is not allowed; the operator's events say why)"
                )
            }
            HttpError::InvalidRequest { url, reason } => {
                write!(f, "cannot build request to {url}: {reason}")
            }
            HttpError::Transport { url, reason } => write!(f, "request to {url} failed: {reason}"),
            HttpError::BodyTooLarge { url } => {
                write!(
                    f,
                    "response from {url} is larger than {MAX_RESPONSE_BYTES} bytes"
                )
            }
            HttpError::Status { url, status, body } => {
                let body = truncate(body, 300);
                write!(f, "{url} answered HTTP {status}: {body}")
            }
        }
    }
}

impl std::error::Error for HttpError {}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An HTTP request to send with [`Request::send`].
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// A response with its body read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    url: String,
}

impl Response {
    /// The body as UTF-8 text (invalid sequences replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|err| HttpError::Transport {
            url: self.url.clone(),
            reason: format!("response is not the expected JSON: {err}"),
        })
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `Ok(self)` for a 2xx status, else [`HttpError::Status`].
    pub fn error_for_status(self) -> Result<Self, HttpError> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            let body = self.text();
            Err(HttpError::Status {
                url: self.url,
                status: self.status,
                body,
            })
        }
    }
}

impl Request {
    /// A request with any method (`GET`, `PUT`, `POST`, `DELETE`, ...).
    pub fn new(method: &str, url: impl Into<String>) -> Self {
        Request {
            method: method.to_ascii_uppercase(),
            url: url.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: None,
        }
    }
    /// A `GET` request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new("GET", url)
    }
    /// A `PUT` request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new("PUT", url)
    }
    /// A `POST` request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new("POST", url)
    }
    /// A `DELETE` request.
    pub fn delete(url: impl Into<String>) -> Self {
        Self::new("DELETE", url)
    }

    /// Add a header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Set a raw body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set a JSON body (and `Content-Type: application/json`).
    #[must_use]
    pub fn json(self, value: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Set a form body (`application/x-www-form-urlencoded`).
    #[must_use]
    pub fn form(self, fields: &[(&str, &str)]) -> Self {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        self.header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    }

    /// Bound connecting and waiting for the response's first byte (and between body bytes).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send the request and read the whole response. Any status is a response; use
    /// [`Response::error_for_status`] to turn non-2xx into an error.
    /// The `wasi:http` request for this request's URL, method and headers.
    fn outgoing_request(&self) -> Result<OutgoingRequest, HttpError> {
        let parts = parse_url(&self.url)?;
        let invalid = |reason: String| HttpError::InvalidRequest {
            url: self.url.clone(),
            reason,
        };
        let headers = Fields::new();
        // Always state the body's length: servers that do not accept chunked request bodies
        // (and simple test servers) then read exactly the body.
        if !self.body.is_empty() || matches!(self.method.as_str(), "PUT" | "POST" | "PATCH") {
            let length = self.body.len().to_string();
            headers
                .append("content-length", length.as_bytes())
                .map_err(|e| invalid(format!("content-length: {e:?}")))?;
        }
        for (name, value) in &self.headers {
            headers
                .append(name, value.as_bytes())
                .map_err(|e| invalid(format!("header {name:?}: {e:?}")))?;
        }
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_string()),
        };
        request
            .set_method(&method)
            .map_err(|()| invalid(format!("method {:?}", self.method)))?;
        let scheme = if parts.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("scheme".into()))?;
        request
            .set_authority(Some(&parts.authority))
            .map_err(|()| invalid(format!("authority {:?}", parts.authority)))?;
        request
            .set_path_with_query(Some(&parts.path))
            .map_err(|()| invalid(format!("path {:?}", parts.path)))?;
        Ok(request)
    }

    pub fn send(self) -> Result<Response, HttpError> {
        let url = self.url.clone();
        let invalid = |reason: String| HttpError::InvalidRequest {
            url: url.clone(),
            reason,
        };
        let request = self.outgoing_request()?;

        let options = self.timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // A host that does not support a timeout leaves it unset; the call deadline still
            // bounds the request.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });

        let outgoing_body = request
            .body()
            .map_err(|()| invalid("body taken twice".into()))?;
        let future = outgoing_handler::handle(request, options)
            .map_err(|code| error_from_code(&url, &code))?;
        write_body(&url, outgoing_body, &self.body)?;

        let pollable = future.subscribe();
        pollable.block();
        drop(pollable);
        let response = match future.get() {
            Some(Ok(Ok(response))) => response,
            Some(Ok(Err(code))) => return Err(error_from_code(&url, &code)),
            Some(Err(())) => {
                return Err(HttpError::Transport {
                    url,
                    reason: "response already taken".into(),
                });
            }
            None => {
                return Err(HttpError::Transport {
                    url,
                    reason: "response not ready".into(),
                });
            }
        };
        drop(future);

        let status = response.status();
        let headers = {
            let fields = response.headers();
            let entries = fields
                .entries()
                .into_iter()
                .map(|(n, v)| {
                    (
                        n.to_ascii_lowercase(),
                        String::from_utf8_lossy(&v).into_owned(),
                    )
                })
                .collect();
            drop(fields);
            entries
        };
        let body = response.consume().map_err(|()| HttpError::Transport {
            url: url.clone(),
            reason: "body taken".into(),
        })?;
        let bytes = read_body(&url, &body)?;
        drop(IncomingBody::finish(body));
        drop(response);
        Ok(Response {
            status,
            headers,
            body: bytes,
            url,
        })
    }
}

fn write_body(url: &str, body: OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    let transport = |reason: String| HttpError::Transport {
        url: url.to_string(),
        reason,
    };
    {
        let stream = body
            .write()
            .map_err(|()| transport("request body stream taken".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| transport(format!("writing request body: {}", stream_error(&e))))?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|code| error_from_code(url, &code))
}

fn read_body(url: &str, body: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = body.stream().map_err(|()| HttpError::Transport {
        url: url.to_string(),
        reason: "response body stream taken".into(),
    })?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() > MAX_RESPONSE_BYTES {
                    return Err(HttpError::BodyTooLarge {
                        url: url.to_string(),
                    });
                }
            }
            Err(StreamError::Closed) => break,
            Err(e) => {
                return Err(HttpError::Transport {
                    url: url.to_string(),
                    reason: format!("reading response body: {}", stream_error(&e)),
                });
            }
        }
    }
    Ok(out)
}

fn stream_error(err: &StreamError) -> String {
    match err {
        StreamError::Closed => "stream closed".to_string(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

fn error_from_code(url: &str, code: &ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied {
            url: url.to_string(),
        },
        other => HttpError::Transport {
            url: url.to_string(),
            reason: describe_code(other),
        },
    }
}

fn describe_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::ConnectionTimeout => "connection timed out".into(),
        ErrorCode::ConnectionReadTimeout => "timed out reading the response".into(),
        ErrorCode::ConnectionTerminated => "connection terminated".into(),
        ErrorCode::DnsError(p) => format!("DNS error {:?}", p.rcode),
        ErrorCode::DestinationNotFound => "destination not found".into(),
        ErrorCode::DestinationUnavailable => "destination unavailable".into(),
        ErrorCode::HttpResponseTimeout => "timed out waiting for the response".into(),
        ErrorCode::TlsProtocolError => "TLS protocol error".into(),
        ErrorCode::TlsCertificateError => "TLS certificate error".into(),
        ErrorCode::TlsAlertReceived(alert) => match &alert.alert_message {
            Some(message) => format!("TLS alert: {message}"),
            None => format!("TLS alert {:?}", alert.alert_id),
        },
        ErrorCode::ConnectionLimitReached => {
            "too many requests in flight in this call (the host allows 16)".into()
        }
        ErrorCode::HttpRequestBodySize(_) => "request body too large for the host".into(),
        ErrorCode::HttpResponseHeaderSectionSize(_) => "response headers too large".into(),
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}

struct UrlParts {
    https: bool,
    authority: String,
    path: String,
}

fn parse_url(url: &str) -> Result<UrlParts, HttpError> {
    let bad = |reason: &str| HttpError::InvalidUrl {
        url: url.to_string(),
        reason: reason.into(),
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        _ => return Err(bad("scheme must be http or https")),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains('@') {
        return Err(bad("credentials in URLs are not supported; use a header"));
    }
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(UrlParts {
        https,
        authority: authority.to_string(),
        path,
    })
}

/// Percent-encode a value for a URL path segment or a form field.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// `host:port` for an address (IPv6 addresses are bracketed).
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
