//! Per-call store state: WASI with nothing granted, filtered `wasi:http`, the log import, a
//! memory limiter and a bounded capture of the guest's stderr.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::allow::AllowList;
use crate::bindings::{log, types};
use crate::runner::CallIdentity;

/// Longest guest log line kept.
const MAX_LOG_LINE: usize = 4096;

/// The `T` of every `Store<T>`: one per hook call.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) policy: HttpPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) identity: Arc<CallIdentity>,
    pub(crate) hook: &'static str,
    pub(crate) digest: Arc<str>,
}

impl HostState {
    pub(crate) fn new(
        identity: Arc<CallIdentity>,
        hook: &'static str,
        digest: Arc<str>,
        allow: AllowList,
        memory_limit: u64,
        stderr: CapturedOutput,
    ) -> Self {
        let mut builder = WasiCtx::builder();
        // Nothing is granted: no preopened directories, no environment, no arguments, no
        // sockets or name lookups (and every socket address refused should one be enabled).
        // stdout is discarded; stderr is captured for panic messages.
        builder
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }));
        let denied = Arc::new(Mutex::new(Vec::new()));
        HostState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            policy: HttpPolicy {
                allow,
                denied,
                identity: identity.clone(),
                hook,
            },
            limiter: MemoryLimiter {
                limit: memory_limit,
                refused: None,
            },
            identity,
            hook,
            digest,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.policy,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut end = MAX_LOG_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let id = &self.identity;
        let digest = &self.digest[..self.digest.len().min(12)];
        macro_rules! emit {
            ($lvl:ident) => {
                tracing::$lvl!(
                    target: "hoist::plugin",
                    namespace = %id.namespace,
                    scaler = %id.scaler,
                    hook = self.hook,
                    operation = %id.operation,
                    attempt = id.attempt,
                    plugin = digest,
                    "{message}"
                )
            };
        }
        match level {
            log::Level::Trace => emit!(trace),
            log::Level::Debug => emit!(debug),
            log::Level::Info => emit!(info),
            log::Level::Warn => emit!(warn),
            log::Level::Error => emit!(error),
        }
    }
}

/// Decides which outgoing requests leave the sandbox.
pub(crate) struct HttpPolicy {
    allow: AllowList,
    /// Authorities refused during this call.
    pub(crate) denied: Arc<Mutex<Vec<String>>>,
    identity: Arc<CallIdentity>,
    hook: &'static str,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if host.is_empty() || !self.allow.allows(&host, port) {
            let authority = uri
                .authority()
                .map_or_else(|| host.clone(), ToString::to_string);
            let id = &self.identity;
            tracing::warn!(
                target: "hoist::plugin",
                namespace = %id.namespace,
                scaler = %id.scaler,
                hook = self.hook,
                operation = %id.operation,
                attempt = id.attempt,
                host = %authority,
                allowed = %self.allow,
                "plugin request denied: host not on the allow-list"
            );
            self.denied
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(authority);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// Caps a store's linear memories (and tables) and remembers a refused growth, so that the
/// trap that follows is reported as a memory-limit error.
pub(crate) struct MemoryLimiter {
    limit: u64,
    pub(crate) refused: Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = u64::try_from(desired).unwrap_or(u64::MAX);
        if desired > self.limit {
            self.refused = Some(self.refused.map_or(desired, |r| r.max(desired)));
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million entries is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// A bounded, shared in-memory sink for a guest's stderr: keeps the first `capacity` bytes and
/// drops the rest (a guest writing more is not an error).
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    buffer: Arc<Mutex<Vec<u8>>>,
    capacity: usize,
}

impl CapturedOutput {
    pub(crate) fn new(capacity: usize) -> Self {
        CapturedOutput {
            buffer: Arc::new(Mutex::new(Vec::new())),
            capacity,
        }
    }

    pub(crate) fn contents(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.capacity.saturating_sub(buffer.len());
        buffer.extend_from_slice(&buf[..buf.len().min(room)]);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The panic message in a Rust guest's stderr (`thread '…' panicked at file:line:col:\nmsg`),
/// or the trimmed stderr tail for other guests.
pub(crate) fn guest_failure_text(stderr: &str) -> Option<String> {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        return None;
    }
    if let Some(idx) = stderr.rfind("panicked at ") {
        let after = &stderr[idx + "panicked at ".len()..];
        let (location, rest) = after.split_once('\n').unwrap_or((after, ""));
        let message: Vec<&str> = rest
            .lines()
            .take_while(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .collect();
        let location = location.trim_end_matches(':');
        return Some(format!(
            "panicked at {location}: {}",
            message.join("\n").trim()
        ));
    }
    let tail_start = stderr.len().saturating_sub(1024);
    let mut start = tail_start;
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    Some(stderr[start..].to_string())
}

#[cfg(test)]
mod tests {
    use super::guest_failure_text;

    #[test]
    fn extracts_rust_panic_message() {
        let stderr = "\nthread '<unnamed>' panicked at fixtures/trap/src/lib.rs:8:9:\nboom in pre-scale\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(
            guest_failure_text(stderr).as_deref(),
            Some("panicked at fixtures/trap/src/lib.rs:8:9: boom in pre-scale")
        );
        assert_eq!(guest_failure_text("  \n"), None);
        assert_eq!(
            guest_failure_text("other failure").as_deref(),
            Some("other failure")
        );
    }
}
