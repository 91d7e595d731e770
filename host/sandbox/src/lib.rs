//! Runs hoist hook plugins — WebAssembly components of the `hoist:hooks` WIT package — in
//! wasmtime.
//!
//! - [`Sandbox::new`]: one engine per process (async calls, epoch interruption driven by a
//!   ticker thread, pooling allocator), cheap to clone, `Send + Sync`.
//! - [`Sandbox::load`]: content-addressed by sha256, verified (a component, of our world, of
//!   a supported WIT version), deduplicated in memory, and precompiled artifacts cached on
//!   disk keyed by digest and the engine's compatibility hash, so a restart does not compile.
//!   Every function of the hooks export is type-checked against the contract at load. With
//!   [`CompileMode::Worker`], a component is compiled in a child process with CPU-time,
//!   address-space and wall-time limits ([`compile_worker`]), so a compile bomb is refused.
//!   [`Sandbox::load_cached`] loads (and verifies) a plugin from that cache by digest alone,
//!   for an operation that outlived the bytes it started with.
//! - [`HookRunner`] (implemented by [`Sandbox`]): the typed interface the operator calls.
//!   Every call gets a fresh store with a memory cap (over all its memories), a bounded
//!   resource table ([`MAX_RESOURCES_PER_CALL`]) and header size ([`MAX_FIELDS_BYTES`]), a
//!   deadline that bounds guest code, start functions and host calls alike, no filesystem, no environment, no sockets, and outgoing HTTP only to the
//!   hosts on the call's allow-list. Guest logs go to `tracing` with the call's identity,
//!   escaped to one line each, at most [`MAX_LOG_LINE_BYTES`] per line and
//!   [`LOG_LINES_PER_CALL`] lines / [`LOG_BYTES_PER_CALL`] bytes per call.
//! - Every text a plugin hands back in a call result (messages, error texts) is cut to
//!   [`MAX_MESSAGE_BYTES`] by [`bounded_text`], which says in the text what it cut.
//!
//! No Kubernetes types appear here: the operator maps its resources to [`HookContext`] and
//! [`CallOptions`].

mod allow;
mod bindings;
mod cache;
mod call;
mod compile;
pub mod compile_worker;
mod config;
mod context;
mod error;
mod exports;
mod host;
mod plugin;
mod runner;
mod sandbox;
mod text;

pub use allow::AllowList;
pub use cache::private_cache_dir;
pub use call::{CallIdentity, CallOptions};
pub use config::{CompileLimits, CompileMode, CompileWorker, SandboxConfig};
pub use context::{
    FailedStage, FailureInfo, HookContext, HookErrorKind, HookOutcome, PodInfo, TargetRef,
};
pub use error::SandboxError;
pub use hoist_types::{Digest, Direction, Hook};
pub use host::{
    LOG_BYTES_PER_CALL, LOG_LINES_PER_CALL, MAX_FIELDS_BYTES, MAX_LOG_LINE_BYTES,
    MAX_RESOURCES_PER_CALL,
};
pub use plugin::{LoadSource, Plugin};
pub use runner::{BoxFuture, HookRunner};
pub use sandbox::{LoadStats, Sandbox};
pub use text::{MAX_MESSAGE_BYTES, bounded_text, loggable_text};

/// The `hoist:hooks` WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";
/// The interface plugins export, without version.
pub const HOOKS_INTERFACE: &str = "hoist:hooks/hooks";
