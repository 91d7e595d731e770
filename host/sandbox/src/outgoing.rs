//! Sending one outgoing request of a hook call, instead of wasmtime-wasi-http's default
//! sender: the authority checked ([`Egress::check_authority`]), the name resolved once and
//! every address checked ([`Egress::resolve_target`]), a TCP connection to a checked
//! address only, TLS with the call's settings and the canonical name, HTTP/1.1, within the
//! call's bounds. Redirects are answers like any other: the guest follows them, or not, with
//! a new request that is checked again.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

use crate::call::CallIdentity;
use crate::egress::{Egress, EgressLimits, Host, Refusal, Target};
use crate::host::{MAX_DENIED_HOST_BYTES, record_denied};
use crate::secrets::HookSecrets;
use crate::text::loggable_text;

/// How long a request waits for a step when its options set no timeout (the call's
/// deadline bounds it anyway); wasmtime-wasi-http's default.
const DEFAULT_TIMEOUT: Duration = Duration::from_mins(10);

/// The connection-driving future handed back with a response.
pub(crate) type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

type Connection =
    hyper::client::conn::http1::Connection<TokioIo<Box<dyn Stream>>, Limited<WasiBody>>;
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Everything the requests of one call share.
pub(crate) struct Outgoing {
    pub(crate) egress: Egress,
    pub(crate) limits: EgressLimits,
    /// Requests of this call in flight.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Requests in flight across calls, when the operator shares a bound.
    pub(crate) shared: Option<Arc<Semaphore>>,
    /// The call's deadline.
    pub(crate) deadline: Instant,
    /// Refused requests of this call, `authority (reason)`, for the call's error.
    pub(crate) denied: Arc<Mutex<Vec<String>>>,
    pub(crate) identity: Arc<CallIdentity>,
    pub(crate) hook: &'static str,
    pub(crate) secrets: HookSecrets,
    /// Whether this call already warned that it hit its limit of requests in flight.
    limit_warned: AtomicBool,
}

impl Outgoing {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        egress: Egress,
        limits: EgressLimits,
        shared: Option<Arc<Semaphore>>,
        deadline: Instant,
        denied: Arc<Mutex<Vec<String>>>,
        identity: Arc<CallIdentity>,
        hook: &'static str,
        secrets: HookSecrets,
    ) -> Self {
        Outgoing {
            in_flight: Arc::new(Semaphore::new(
                limits
                    .max_concurrent_requests
                    .clamp(1, Semaphore::MAX_PERMITS),
            )),
            egress,
            limits,
            shared,
            deadline,
            denied,
            identity,
            hook,
            secrets,
            limit_warned: AtomicBool::new(false),
        }
    }

    /// Send `request`; the response's body streams from the connection, which the returned
    /// future drives to its end.
    pub(crate) async fn send(
        self: Arc<Self>,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let uri = request.uri().clone();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let authority = uri.authority().map_or("", http::uri::Authority::as_str);
        let target = self
            .egress
            .check_authority(authority, if https { 443 } else { 80 })
            .map_err(|r| self.refuse(&r))?;

        let Ok(call_permit) = self.in_flight.clone().try_acquire_owned() else {
            self.warn_limit();
            return Err(Error::ConnectionLimitReached);
        };
        let shared_permit = match &self.shared {
            Some(shared) => Some(
                tokio::time::timeout_at(self.deadline, shared.clone().acquire_owned())
                    .await
                    .map_err(|_| Error::ConnectionLimitReached)?
                    .map_err(|_| Error::ConnectionLimitReached)?,
            ),
            None => None,
        };

        let max_body = self.limits.max_request_body_bytes;
        if let Some(length) = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && length > max_body
        {
            return Err(Error::HttpRequestBodySize(Some(max_body)));
        }

        let timeout = |t: Option<Duration>| t.unwrap_or(DEFAULT_TIMEOUT);
        let connect_timeout = timeout(options.and_then(|o| o.connect_timeout));
        let first_byte_timeout = timeout(options.and_then(|o| o.first_byte_timeout));
        let between_bytes_timeout = timeout(options.and_then(|o| o.between_bytes_timeout));
        let connect_until = self.deadline.min(Instant::now() + connect_timeout);

        let addrs =
            match tokio::time::timeout_at(connect_until, self.egress.resolve_target(&target)).await
            {
                Err(_) => return Err(Error::DnsTimeout),
                Ok(Err(r)) if r.is_lookup_failure() => {
                    return Err(Error::DnsError {
                        rcode: Some(r.reason),
                        info_code: None,
                    });
                }
                Ok(Err(r)) => return Err(self.refuse(&r)),
                Ok(Ok(addrs)) => addrs,
            };
        let tcp = connect(&addrs, connect_until).await?;
        let stream: Box<dyn Stream> = if https {
            Box::new(self.tls(&target, tcp, connect_until).await?)
        } else {
            Box::new(tcp)
        };

        let first_byte_until = self.deadline.min(Instant::now() + first_byte_timeout);
        let (response, conn) = self
            .exchange(stream, request, &target, first_byte_until)
            .await?;
        let io_target = target.clone();
        let io: IoFuture = Box::new(async move {
            // The permits are held until the connection ends (or the guest drops the
            // response, which drops this future).
            let _permits = (call_permit, shared_permit);
            match conn {
                Some(conn) => conn.await.map_err(|e| hyper_error(e, &io_target)),
                None => Ok(()),
            }
        });
        let response = response.map(|incoming| {
            ResponseBody {
                incoming,
                between_bytes: between_bytes_timeout,
                idle: Box::pin(tokio::time::sleep(between_bytes_timeout)),
                target,
            }
            .boxed_unsync()
        });
        Ok((response, io))
    }

    /// HTTP/1.1 over `stream`: send `request` (origin form, canonical `Host`, bounded body)
    /// and wait until `until` for the response head, driving the connection meanwhile. The
    /// connection is handed back unless it already ended.
    async fn exchange(
        &self,
        stream: Box<dyn Stream>,
        mut request: http::Request<WasiBody>,
        target: &Target,
        until: Instant,
    ) -> Result<
        (
            http::Response<hyper::body::Incoming>,
            Option<Pin<Box<Connection>>>,
        ),
        Error,
    > {
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_header_size(self.limits.max_response_header_bytes)
            .handshake::<_, Limited<WasiBody>>(TokioIo::new(stream))
            .await
            .map_err(|e| hyper_error(e, target))?;

        // Origin form on the wire, and the canonical host in the Host header.
        let path = request
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_string(), ToString::to_string);
        *request.uri_mut() = http::Uri::builder()
            .path_and_query(path)
            .build()
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        let host = HeaderValue::from_str(&target.host_header())
            .map_err(|_| Error::HttpRequestUriInvalid)?;
        request.headers_mut().insert(HOST, host);
        let max_body = to_usize(self.limits.max_request_body_bytes);
        let request = request.map(|body| Limited::new(body, max_body));

        let mut conn = Some(Box::pin(conn));
        let send = sender.send_request(request);
        tokio::pin!(send);
        let answer = tokio::time::timeout_at(until, async {
            loop {
                let Some(driver) = conn.as_mut() else {
                    return send.as_mut().await;
                };
                tokio::select! {
                    answer = send.as_mut() => return answer,
                    ended = driver => {
                        conn = None;
                        ended?;
                    }
                }
            }
        })
        .await;
        let response = match answer {
            Err(_) => return Err(Error::ConnectionReadTimeout),
            Ok(Err(e)) => return Err(hyper_error(e, target)),
            Ok(Ok(response)) => response,
        };
        drop(sender);
        Ok((response, conn))
    }

    async fn tls(
        &self,
        target: &Target,
        tcp: TcpStream,
        until: Instant,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
        let config = self
            .egress
            .tls_config()
            .map_err(|e| Error::InternalError(Some(e.to_string())))?;
        let name = match &target.host {
            Host::Ip(ip) => rustls::pki_types::ServerName::IpAddress((*ip).into()),
            Host::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        tokio::time::timeout_at(
            until,
            tokio_rustls::TlsConnector::from(config).connect(name, tcp),
        )
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(|e| match rustls_cause(&e) {
            Some(cause) => tls_error(cause, target),
            None => Error::Tls(e),
        })
    }

    /// Record (and, the first time, log) a refused request; the guest sees
    /// `http-request-denied`.
    fn refuse(&self, refusal: &Refusal) -> Error {
        let shown = shown_authority(&refusal.target);
        let shown = self.secrets.redact(&shown);
        let reason = self.secrets.redact(&refusal.reason);
        let new = record_denied(
            &mut self.denied.lock().unwrap_or_else(PoisonError::into_inner),
            &format!("{shown} ({reason})"),
        );
        if new {
            // A call warns once for each of its first few refused requests, so a guest
            // retrying in a loop cannot flood the log.
            let id = &self.identity;
            tracing::warn!(
                target: "hoist::plugin",
                namespace = %id.namespace,
                scaler = %id.scaler,
                hook = self.hook,
                operation = %id.operation,
                attempt = id.attempt,
                host = %loggable_text(&shown, MAX_DENIED_HOST_BYTES),
                allowed = %self.egress.allow_list(),
                "plugin request denied: {reason}"
            );
        }
        Error::HttpRequestDenied
    }

    fn warn_limit(&self) {
        if self.limit_warned.swap(true, Ordering::Relaxed) {
            return;
        }
        let id = &self.identity;
        tracing::warn!(
            target: "hoist::plugin",
            namespace = %id.namespace,
            scaler = %id.scaler,
            hook = self.hook,
            operation = %id.operation,
            attempt = id.attempt,
            "plugin request denied: already {} requests in flight in this call \
             (further ones fail with connection-limit-reached)",
            self.limits.max_concurrent_requests
        );
    }
}

/// An authority as logged and reported: userinfo is never shown.
fn shown_authority(authority: &str) -> String {
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("[userinfo]@{host}"),
        None => authority.to_string(),
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Connect to the first address that answers, within `until`.
async fn connect(addrs: &[SocketAddr], until: Instant) -> Result<TcpStream, Error> {
    let mut last = Error::ConnectionRefused;
    for addr in addrs {
        match tokio::time::timeout_at(until, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Small requests and answers: do not wait to fill packets.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = Error::ConnectionRefused;
            }
            Ok(Err(e)) => last = Error::Connect(e),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    }
    Err(last)
}

/// The rustls error inside an error chain (hyper wraps I/O errors that wrap it).
fn rustls_cause<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        current = e.source();
    }
    None
}

/// A TLS failure as the guest sees it: what went wrong, in words.
fn tls_error(err: &rustls::Error, target: &Target) -> Error {
    let host = &target.host;
    match err {
        rustls::Error::AlertReceived(alert) => {
            use rustls::AlertDescription as A;
            let hint = match alert {
                A::CertificateRequired | A::HandshakeFailure | A::BadCertificate => {
                    ": the server wants a (valid) client certificate"
                }
                A::UnknownCA => ": the server does not trust the client certificate's issuer",
                _ => "",
            };
            Error::TlsAlertReceived {
                alert_id: Some(u8::from(*alert)),
                alert_message: Some(format!("{host} refused the TLS session ({alert:?}){hint}")),
            }
        }
        rustls::Error::InvalidCertificate(_) => Error::InternalError(Some(format!(
            "TLS: {host} presented a certificate this call does not accept ({err}); a server \
             with a private CA needs that CA in the Scaler's TLS settings"
        ))),
        other => Error::InternalError(Some(format!("TLS with {host} failed: {other}"))),
    }
}

/// A hyper error as the guest sees it.
fn hyper_error(err: hyper::Error, target: &Target) -> Error {
    if let Some(tls) = rustls_cause(&err) {
        return tls_error(tls, target);
    }
    let mut source = err.source();
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Error::HttpRequestBodySize(None);
        }
        source = e.source();
    }
    if err.is_parse_too_large() {
        Error::HttpResponseHeaderSectionSize(None)
    } else if err.is_timeout() {
        Error::HttpResponseTimeout
    } else if err.is_incomplete_message() {
        Error::HttpResponseIncomplete
    } else {
        Error::Hyper(err)
    }
}

/// A response body that fails when no bytes come for `between_bytes`.
struct ResponseBody {
    incoming: hyper::body::Incoming,
    between_bytes: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
    target: Target,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(hyper_error(e, &this.target)))),
            Poll::Ready(Some(Ok(frame))) => {
                let next = Instant::now() + this.between_bytes;
                this.idle.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::shown_authority;

    #[test]
    fn userinfo_is_never_shown() {
        assert_eq!(shown_authority("a:b@host:80"), "[userinfo]@host:80");
        assert_eq!(shown_authority("host:80"), "host:80");
    }
}
