//! Runs hoist hook plugins — WebAssembly components of the `hoist:hooks` WIT package — in
//! wasmtime.
//!
//! - [`Sandbox::new`]: one engine per process (async calls, epoch interruption driven by a
//!   ticker thread, pooling allocator), cheap to clone, `Send + Sync`.
//! - [`Sandbox::load`]: content-addressed by sha256, verified (a component, of our world, of
//!   a supported WIT version), deduplicated in memory, and precompiled artifacts cached on
//!   disk keyed by digest and the engine's compatibility hash, so a restart does not compile.
//!   [`Sandbox::load_cached`] loads (and verifies) a plugin from that cache by digest alone,
//!   for an operation that outlived the bytes it started with.
//! - [`HookRunner`] (implemented by [`Sandbox`]): the typed interface the operator calls.
//!   Every call gets a fresh store with a memory cap, a deadline that bounds guest code and
//!   host calls alike, no filesystem, no environment, no sockets, and outgoing HTTP sent by
//!   the host itself ([`Egress`]: the Scaler's allow-list, the admin's [`NetworkGrant`],
//!   [`ForbiddenAddrs`], canonical spellings only, one resolution, [`TlsSettings`], bounded by
//!   [`EgressLimits`] and an optional shared [`ConnectionLimit`]); [`HookSecrets`] are handed
//!   to the plugin and redacted from what it logs and returns. Guest logs go to `tracing` with the call's identity,
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
mod config;
mod context;
mod egress;
mod error;
mod host;
mod outgoing;
mod plugin;
mod runner;
mod sandbox;
mod secrets;
mod text;
mod tls;

pub use allow::AllowList;
pub use cache::private_cache_dir;
pub use call::{CallIdentity, CallOptions};
pub use config::SandboxConfig;
pub use context::{
    FailedStage, FailureInfo, HookContext, HookErrorKind, HookOutcome, PodInfo, TargetRef,
};
pub use egress::{
    ConnectionLimit, Egress, EgressLimits, ForbiddenAddrs, Host, INVALID_HOST, NON_CANONICAL,
    NOT_ALLOWED, NOT_GRANTED, NetworkGrant, Refusal, Target, USERINFO,
};
pub use error::SandboxError;
pub use hoist_types::{Digest, Direction, Hook};
pub use host::{LOG_BYTES_PER_CALL, LOG_LINES_PER_CALL, MAX_LOG_LINE_BYTES};
/// The CIDR type of [`NetworkGrant`] and [`ForbiddenAddrs`].
pub use ipnet::IpNet;
pub use plugin::{LoadSource, Plugin};
pub use runner::{BoxFuture, HookRunner};
/// The rustls crate this sandbox's TLS settings are of ([`CallOptions::tls`]).
pub use rustls;
pub use sandbox::{LoadStats, Sandbox};
pub use secrets::{HookSecrets, REDACTED};
pub use text::{MAX_MESSAGE_BYTES, bounded_text, loggable_text};
pub use tls::TlsSettings;

/// The `hoist:hooks` WIT package version this host implements. Plugins built for any
/// `0.1.x` load: wasmtime matches their imports and exports semver-compatibly (a 0.1.0
/// plugin simply does not import what 0.1.1 added).
pub const WIT_VERSION: &str = "0.1.1";
/// Whether this host runs plugins built for `hoist:hooks@version`: any `0.1.x` (no
/// pre-release), the versions wasmtime links semver-compatibly with [`WIT_VERSION`].
pub fn supports_wit_version(version: &str) -> bool {
    let mut parts = version.split('.');
    let number = |p: Option<&str>| {
        p.filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u64>().ok())
    };
    matches!(
        (
            number(parts.next()),
            number(parts.next()),
            number(parts.next()),
            parts.next()
        ),
        (Some(0), Some(1), Some(_), None)
    )
}

/// The interface plugins export, without version.
pub const HOOKS_INTERFACE: &str = "hoist:hooks/hooks";
