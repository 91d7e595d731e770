//! Write hoist hook plugins in Rust.
//!
//! A plugin is a type implementing [`Hook`] plus one [`export_hook!`] line; build it with
//! `cargo build --target wasm32-wasip2 --release` as a `cdylib` and it is a component of the
//! `hoist:hooks/hook` world (see `wit/` at the repository root).
//!
//! ```ignore
//! use hoist_sdk::{Hook, HookError, Outcome, ScaleContext};
//!
//! struct MyHook;
//!
//! impl Hook for MyHook {
//!     fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
//!         hoist_sdk::log::info(&format!("{} pods leave", ctx.pods_removed.len()));
//!         Ok(Outcome::Done("nothing to do".into()))
//!     }
//! }
//!
//! hoist_sdk::export_hook!(MyHook);
//! ```
//!
//! Helpers: [`http`] (blocking HTTP over `wasi:http`, only to hosts the Scaler allows),
//! [`config::parse`] (the plugin's JSON config, with errors naming the field), [`log`],
//! [`secret`] (credentials the operator hands the call).

pub mod config;
pub mod http;

/// Bindings generated from the `hoist:hooks/hook` world (and the `wasi:*` interfaces it
/// imports). Plugins normally use the re-exports at the crate root instead.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unsafe_code,
    clippy::pedantic,
    clippy::all
)]
pub mod bindings {
    wit_bindgen::generate!({
        // A copy of the repository's wit/ (crds/check keeps it equal), so the crate builds
        // wherever it is: a path or git dependency, or a vendored copy.
        path: "wit",
        world: "hoist:hooks/hook",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_hook_world",
        default_bindings_module: "hoist_sdk::bindings",
    });
}

pub use bindings::hoist::hooks::types::{
    Direction, Failure, HookError, Outcome, Pod, Progress, ScaleContext, Stage, TargetRef,
};

/// The version of the `hoist:hooks` WIT package this SDK builds plugins for. A plugin built
/// with it needs an operator of `hoist:hooks@0.1.1` or later 0.1.x (it imports `secrets`).
pub const WIT_VERSION: &str = "0.1.1";

/// The secret handed to this call under `name` (the Scaler's hook configuration says which
/// Kubernetes Secret keys are handed, and under which names). `None` when there is none.
///
/// Never log a secret or put it in a message: the host replaces values it finds verbatim in
/// log lines and messages by `[redacted]`, but only verbatim ones.
pub fn secret(name: &str) -> Option<String> {
    bindings::hoist::hooks::secrets::get(name)
}

/// A hook plugin: implement the hooks you need; the others have sensible defaults.
///
/// Hooks are called at least once per stage and must be idempotent: a call may be repeated
/// after an operator restart. Use [`ScaleContext::saved_state`] and `attempt` to resume.
pub trait Hook {
    /// Before the replica count changes. Default: done at once.
    fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let _ = ctx;
        Ok(Outcome::Done("no pre-scale work".to_string()))
    }

    /// After the new replica count is ready. Default: done at once.
    fn post_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let _ = ctx;
        Ok(Outcome::Done("no post-scale work".to_string()))
    }

    /// After an operation failed, best effort: undo what `pre_scale` started. Default: nothing.
    fn on_failure(ctx: &ScaleContext, failure: &Failure) -> Result<(), HookError> {
        let _ = (ctx, failure);
        Ok(())
    }

    /// Check a configuration before any scaling starts. Default: it must be JSON.
    fn validate_config(config: &str) -> Result<(), String> {
        serde_json::from_str::<serde_json::Value>(config)
            .map(|_| ())
            .map_err(|err| format!("config is not JSON: {err}"))
    }
}

/// Export a [`Hook`] implementation as the plugin's `hoist:hooks/hooks` interface.
///
/// Use it exactly once per plugin crate, at the crate root: `hoist_sdk::export_hook!(MyHook);`
#[macro_export]
macro_rules! export_hook {
    ($hook:ty) => {
        const _: () = {
            struct __HoistHookExport;

            impl $crate::bindings::exports::hoist::hooks::hooks::Guest for __HoistHookExport {
                fn pre_scale(
                    ctx: $crate::ScaleContext,
                ) -> ::core::result::Result<$crate::Outcome, $crate::HookError> {
                    <$hook as $crate::Hook>::pre_scale(&ctx)
                }
                fn post_scale(
                    ctx: $crate::ScaleContext,
                ) -> ::core::result::Result<$crate::Outcome, $crate::HookError> {
                    <$hook as $crate::Hook>::post_scale(&ctx)
                }
                fn on_failure(
                    ctx: $crate::ScaleContext,
                    failure: $crate::Failure,
                ) -> ::core::result::Result<(), $crate::HookError> {
                    <$hook as $crate::Hook>::on_failure(&ctx, &failure)
                }
                fn validate_config(
                    config: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$hook as $crate::Hook>::validate_config(&config)
                }
            }

            $crate::bindings::__export_hook_world!(__HoistHookExport with_types_in $crate::bindings);
        };
    };
}

/// Logging into the operator's logs; the host adds the call's identity to every line.
pub mod log {
    use crate::bindings::hoist::hooks::log::{Level, log};

    /// Diagnostics for plugin authors.
    pub fn debug(message: &str) {
        log(Level::Debug, message);
    }
    /// Normal progress.
    pub fn info(message: &str) {
        log(Level::Info, message);
    }
    /// Something unexpected that the hook handled.
    pub fn warn(message: &str) {
        log(Level::Warn, message);
    }
    /// Something failed.
    pub fn error(message: &str) {
        log(Level::Error, message);
    }
}

impl ScaleContext {
    /// The pod with ordinal 0 among all current pods, if any (for example the node a
    /// clustered product is managed through while others leave).
    pub fn first_ordinal_pod(&self) -> Option<&Pod> {
        self.all_pods.iter().find(|p| p.ordinal == Some(0))
    }

    /// Whether this operation removes replicas.
    pub fn is_scale_down(&self) -> bool {
        matches!(self.direction, Direction::Down)
    }
}

impl Outcome {
    /// An in-progress outcome.
    pub fn in_progress(
        state: impl Into<String>,
        retry_after_ms: u64,
        message: impl Into<String>,
    ) -> Self {
        Outcome::InProgress(Progress {
            state: state.into(),
            retry_after_ms,
            message: message.into(),
        })
    }
}

impl From<http::HttpError> for HookError {
    fn from(err: http::HttpError) -> Self {
        HookError::Remote(err.to_string())
    }
}
