//! The one error type of this crate: each variant names the operation that failed.

use std::path::PathBuf;
use std::time::Duration;

use crate::context::HookErrorKind;

/// Everything that can go wrong loading a plugin or calling one of its hooks.
///
/// [`SandboxError::reason`] gives a short, stable `CamelCase` reason for a Kubernetes
/// condition or event; `Display` gives the full human explanation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// Creating the wasmtime engine from the sandbox configuration failed.
    #[error("cannot create the wasmtime engine: {0}")]
    EngineSetup(String),

    /// Creating or checking the precompiled-artifact cache directory failed.
    #[error("cannot use plugin cache directory {path}: {reason}")]
    CacheDir { path: PathBuf, reason: String },

    /// Loading: the bytes are not WebAssembly at all.
    #[error("not a WebAssembly binary: {0}")]
    LoadNotWasm(String),

    /// Loading: the bytes are a core WebAssembly module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the plugin for \
         wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    LoadCoreModule,

    /// Loading: the component does not compile (malformed or uses unsupported features).
    #[error("the component is invalid: {0}")]
    LoadCompile(String),

    /// Loading: the component does not export `hoist:hooks/hooks` at all.
    #[error(
        "the component is not a hoist hook plugin: it does not export `hoist:hooks/hooks` \
         (it exports: {exports})"
    )]
    LoadWrongWorld { exports: String },

    /// Loading: the component exports `hoist:hooks/hooks` of a WIT version this host does not
    /// implement.
    #[error(
        "the plugin was built for hoist:hooks@{found}, this operator implements \
         hoist:hooks@{supported}: rebuild it with a matching SDK"
    )]
    LoadWitVersion { found: String, supported: String },

    /// Loading: exports `hoist:hooks/hooks` but its functions do not have our signatures.
    #[error("the plugin's hoist:hooks/hooks export does not match the contract: {0}")]
    LoadExportMismatch(String),

    /// Loading: the component imports something the sandbox does not provide.
    #[error("the plugin imports something the sandbox does not provide: {0}")]
    LoadLink(String),

    /// A digest was given for a plugin that is not loaded.
    #[error("no plugin with digest {0} is loaded")]
    PluginNotLoaded(String),

    /// Instantiating the plugin for a call failed (out of instance slots, for example).
    #[error("cannot instantiate the plugin: {0}")]
    Instantiate(String),

    /// The hook ran and returned an error (its text cut to [`crate::MAX_MESSAGE_BYTES`]).
    #[error("{hook} failed: {kind}: {message}")]
    HookFailed {
        hook: &'static str,
        kind: HookErrorKind,
        message: String,
    },

    /// `validate-config` rejected the configuration (its text cut to
    /// [`crate::MAX_MESSAGE_BYTES`]).
    #[error("the plugin rejected its configuration: {0}")]
    ConfigRejected(String),

    /// The hook trapped (a panic, an `unreachable`, an out-of-bounds access...).
    #[error("{hook} trapped: {message}")]
    HookTrapped { hook: &'static str, message: String },

    /// The hook did not finish within its deadline (guest code or a host call).
    #[error("{hook} exceeded its deadline of {deadline:?}")]
    HookDeadline {
        hook: &'static str,
        deadline: Duration,
    },

    /// The hook tried to grow its memory beyond the limit.
    #[error(
        "{hook} exceeded its memory limit of {limit_bytes} bytes (asked for {requested_bytes})"
    )]
    HookMemoryLimit {
        hook: &'static str,
        limit_bytes: u64,
        requested_bytes: u64,
    },

    /// The hook failed after the sandbox refused an outgoing request: a host not on the
    /// Scaler's allow-list, not granted by the cluster policy, a forbidden address, a
    /// non-canonical spelling. `hosts` lists the refused requests as `authority (reason)`,
    /// at most 8 of at most 256 bytes each, joined by `, `.
    #[error("{hook} failed after the sandbox refused an outgoing request ({hosts}): {message}")]
    HookRequestDenied {
        hook: &'static str,
        hosts: String,
        message: String,
    },

    /// TLS settings (CA bundle, client certificate or key) cannot be used; the text names
    /// what is wrong and never quotes the PEM.
    #[error("cannot use the TLS settings: {0}")]
    TlsSetup(String),

    /// The hook's result could not be used (for example an in-progress state that is too big).
    #[error("{hook} returned an unusable result: {message}")]
    HookResult { hook: &'static str, message: String },
}

impl SandboxError {
    /// A short, stable reason (for conditions, events and metrics labels).
    pub fn reason(&self) -> &'static str {
        match self {
            SandboxError::EngineSetup(_) => "EngineSetup",
            SandboxError::CacheDir { .. } => "CacheDir",
            SandboxError::LoadNotWasm(_) => "PluginNotWasm",
            SandboxError::LoadCoreModule => "PluginCoreModule",
            SandboxError::LoadCompile(_) => "PluginInvalid",
            SandboxError::LoadWrongWorld { .. } => "PluginWrongWorld",
            SandboxError::LoadWitVersion { .. } => "PluginWitVersion",
            SandboxError::LoadExportMismatch(_) => "PluginExportMismatch",
            SandboxError::LoadLink(_) => "PluginImports",
            SandboxError::PluginNotLoaded(_) => "PluginNotLoaded",
            SandboxError::Instantiate(_) => "PluginInstantiate",
            SandboxError::HookFailed { .. } => "HookFailed",
            SandboxError::ConfigRejected(_) => "ConfigRejected",
            SandboxError::HookTrapped { .. } => "HookTrapped",
            SandboxError::HookDeadline { .. } => "HookDeadlineExceeded",
            SandboxError::HookMemoryLimit { .. } => "HookMemoryLimit",
            SandboxError::HookRequestDenied { .. } => "HookRequestDenied",
            SandboxError::HookResult { .. } => "HookResult",
            SandboxError::TlsSetup(_) => "TlsSetup",
        }
    }

    /// Whether the error is about the plugin itself (so every Scaler using it is affected),
    /// rather than one call.
    pub fn is_load_error(&self) -> bool {
        matches!(
            self,
            SandboxError::LoadNotWasm(_)
                | SandboxError::LoadCoreModule
                | SandboxError::LoadCompile(_)
                | SandboxError::LoadWrongWorld { .. }
                | SandboxError::LoadWitVersion { .. }
                | SandboxError::LoadExportMismatch(_)
                | SandboxError::LoadLink(_)
        )
    }
}
