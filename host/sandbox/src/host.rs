//! Per-call store state: WASI with nothing granted, filtered `wasi:http`, the log import with
//! its per-call budget, a memory limiter and a bounded capture of the guest's stderr.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hoist_types::Digest;
use tokio::io::AsyncWrite;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::{log, secrets, types};
use crate::call::{CallIdentity, CallOptions};
use crate::outgoing::Outgoing;
use crate::secrets::HookSecrets;
use crate::text::{bounded_text, loggable_text};

/// Longest guest log message written, in bytes, after escaping (see [`crate::loggable_text`]);
/// a longer one is cut and says by how much.
pub const MAX_LOG_LINE_BYTES: usize = 4096;

/// Most guest log records one hook call writes. The guest's further `log` calls succeed but
/// are dropped, and the call ends with one warning that counts them. Lines at a level the
/// operator does not log are not counted.
pub const LOG_LINES_PER_CALL: usize = 200;

/// Most bytes of guest log messages (as written: escaped and cut) one hook call writes;
/// beyond, lines are dropped like beyond [`LOG_LINES_PER_CALL`].
pub const LOG_BYTES_PER_CALL: usize = 64 * 1024;

/// Most distinct refused requests (authority and reason) a call remembers, and warns about
/// once each.
const MAX_DENIED_HOSTS: usize = 8;

/// Longest refused request (`authority (reason)`) kept, in bytes.
pub(crate) const MAX_DENIED_HOST_BYTES: usize = 256;

/// The `T` of every `Store<T>`: one per hook call.
pub(crate) struct HostState {
    pub(crate) wasi: WasiCtx,
    pub(crate) http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    pub(crate) policy: HttpPolicy,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) log_budget: LogBudget,
    pub(crate) identity: Arc<CallIdentity>,
    pub(crate) hook: &'static str,
    pub(crate) digest: Digest,
    /// What `secrets.get` answers; also redacted from guest log lines.
    pub(crate) secrets: HookSecrets,
}

impl HostState {
    pub(crate) fn new(
        identity: Arc<CallIdentity>,
        hook: &'static str,
        digest: Digest,
        options: &CallOptions,
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
        let outgoing = Outgoing::new(
            options.egress(),
            options.limits,
            options
                .connection_limit
                .as_ref()
                .map(crate::egress::ConnectionLimit::semaphore),
            tokio::time::Instant::now() + options.deadline,
            denied.clone(),
            identity.clone(),
            hook,
            options.secrets.clone(),
        );
        HostState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            policy: HttpPolicy {
                outgoing: Arc::new(outgoing),
                denied,
            },
            limiter: MemoryLimiter {
                limit: memory_limit,
                refused: None,
            },
            log_budget: LogBudget::default(),
            identity,
            hook,
            digest,
            secrets: options.secrets.clone(),
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

impl secrets::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.secrets.get(&name).map(ToString::to_string)
    }
}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        const TARGET: &str = "hoist::plugin";
        let enabled = match level {
            log::Level::Trace => tracing::enabled!(target: TARGET, tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(target: TARGET, tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(target: TARGET, tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(target: TARGET, tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(target: TARGET, tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        if self.log_budget.is_spent() {
            // Cheap: a flooding guest costs a length and two additions per line from here on.
            self.log_budget.drop_line(message.len());
            return;
        }
        let message_len = message.len();
        let message = loggable_text(&self.secrets.redact(&message), MAX_LOG_LINE_BYTES);
        if !self.log_budget.admit(message.len()) {
            self.log_budget.drop_line(message_len);
            return;
        }
        let id = &self.identity;
        let digest = self.digest.short();
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

/// What a call has logged so far, against [`LOG_LINES_PER_CALL`] and [`LOG_BYTES_PER_CALL`].
///
/// The first line that does not fit spends the budget: it and every line after it are
/// dropped and counted, so the log keeps a prefix of what the guest wrote, not a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogBudget {
    /// Records written.
    lines: usize,
    /// Bytes of messages written (escaped and cut, as written).
    bytes: usize,
    /// Lines dropped.
    dropped_lines: u64,
    /// Bytes of the dropped lines, as the guest sent them.
    dropped_bytes: u64,
}

impl LogBudget {
    /// Whether a line was dropped (then every further line is dropped too).
    fn is_spent(&self) -> bool {
        self.dropped_lines > 0
    }

    /// Take a line of `len` bytes from the budget, if it fits.
    fn admit(&mut self, len: usize) -> bool {
        if self.is_spent()
            || self.lines >= LOG_LINES_PER_CALL
            || self.bytes.saturating_add(len) > LOG_BYTES_PER_CALL
        {
            return false;
        }
        self.lines += 1;
        self.bytes += len;
        true
    }

    /// Count a dropped line of `len` bytes.
    fn drop_line(&mut self, len: usize) {
        self.dropped_lines = self.dropped_lines.saturating_add(1);
        self.dropped_bytes = self
            .dropped_bytes
            .saturating_add(u64::try_from(len).unwrap_or(u64::MAX));
    }

    /// At the end of a call: one warning if lines were dropped.
    pub(crate) fn report(&self, identity: &CallIdentity, hook: &str, digest: &Digest) {
        if !self.is_spent() {
            return;
        }
        tracing::warn!(
            target: "hoist::plugin",
            namespace = %identity.namespace,
            scaler = %identity.scaler,
            hook,
            operation = %identity.operation,
            attempt = identity.attempt,
            plugin = digest.short(),
            logged_lines = self.lines,
            logged_bytes = self.bytes,
            dropped_lines = self.dropped_lines,
            dropped_bytes = self.dropped_bytes,
            "plugin log budget spent: dropped {} more lines ({} bytes) after {} lines ({} bytes); \
             a call may log {LOG_LINES_PER_CALL} lines and {LOG_BYTES_PER_CALL} bytes",
            self.dropped_lines,
            self.dropped_bytes,
            self.lines,
            self.bytes,
        );
    }
}

/// Sends the guest's outgoing requests through [`Outgoing`] (never wasmtime-wasi-http's
/// default sender).
pub(crate) struct HttpPolicy {
    outgoing: Arc<Outgoing>,
    /// Requests refused during this call, `authority (reason)`.
    pub(crate) denied: Arc<Mutex<Vec<String>>>,
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
        let outgoing = self.outgoing.clone();
        Box::new(outgoing.send(request, options))
    }
}

/// Remember a refused request (`authority (reason)`, cut to [`MAX_DENIED_HOST_BYTES`])
/// unless it is known or [`MAX_DENIED_HOSTS`] are; whether it was new.
pub(crate) fn record_denied(denied: &mut Vec<String>, authority: &str) -> bool {
    let authority = bounded_text(authority, MAX_DENIED_HOST_BYTES);
    if denied.len() >= MAX_DENIED_HOSTS || denied.contains(&authority) {
        return false;
    }
    denied.push(authority);
    true
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
/// drops the rest (a guest writing more is not an error). Nothing else is kept: the buffer
/// never grows beyond `capacity`, however much the guest writes.
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
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use tokio::io::AsyncWrite;

    use super::{
        CapturedOutput, LOG_BYTES_PER_CALL, LOG_LINES_PER_CALL, LogBudget, MAX_DENIED_HOSTS,
        guest_failure_text, record_denied,
    };

    #[test]
    fn the_log_budget_stops_at_its_line_limit_and_counts_the_rest() {
        let mut budget = LogBudget::default();
        for _ in 0..LOG_LINES_PER_CALL {
            assert!(budget.admit(10));
        }
        assert!(!budget.is_spent());
        assert!(!budget.admit(10));
        budget.drop_line(10);
        budget.drop_line(7);
        assert!(budget.is_spent());
        assert_eq!(budget.lines, LOG_LINES_PER_CALL);
        assert_eq!(budget.bytes, LOG_LINES_PER_CALL * 10);
        assert_eq!((budget.dropped_lines, budget.dropped_bytes), (2, 17));
    }

    #[test]
    fn the_log_budget_stops_at_its_byte_limit_and_keeps_a_prefix() {
        let mut budget = LogBudget::default();
        assert!(budget.admit(LOG_BYTES_PER_CALL - 100));
        assert!(budget.admit(100));
        // Full: a one-byte line no longer fits.
        assert!(!budget.admit(1));
        budget.drop_line(1);
        // Once a line was dropped, later lines are dropped too, however small.
        assert!(!budget.admit(0));
        assert_eq!(budget.lines, 2);
        assert_eq!(budget.bytes, LOG_BYTES_PER_CALL);
    }

    #[test]
    fn refused_hosts_are_remembered_once_each_and_bounded() {
        let mut denied = Vec::new();
        assert!(record_denied(&mut denied, "10.0.0.1:80"));
        assert!(!record_denied(&mut denied, "10.0.0.1:80"));
        for i in 2..100 {
            record_denied(&mut denied, &format!("10.0.0.{i}:80"));
        }
        assert_eq!(denied.len(), MAX_DENIED_HOSTS);
        let long = format!("{}.example:80", "a".repeat(10_000));
        let mut denied = Vec::new();
        assert!(record_denied(&mut denied, &long));
        assert!(
            denied[0].len() <= super::MAX_DENIED_HOST_BYTES,
            "{}",
            denied[0].len()
        );
    }

    #[test]
    fn captured_stderr_keeps_only_its_capacity() {
        let out = CapturedOutput::new(16);
        let mut writer = out.clone();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..1000 {
            let chunk = [b'x'; 1024];
            match Pin::new(&mut writer).poll_write(&mut cx, &chunk) {
                Poll::Ready(Ok(n)) => assert_eq!(n, chunk.len(), "writes never fail"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(out.contents(), "x".repeat(16));
    }

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
