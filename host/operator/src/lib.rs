//! The hoist operator as a library: the reconcile (snapshot → autoscaling mode → decide →
//! hook → decide → act) and everything it is built from, so the glue is testable below the
//! end-to-end level. The `hoist` binary (`main.rs`) only parses its command line and calls
//! [`cli`].
//!
//! - [`controller`]: the Scaler controller: its watches and what maps them to Scalers.
//! - [`reconcile`]: one reconcile of one Scaler, step by step, and its error.
//! - [`observe`]: read the target and the plugin for one Scaler.
//! - [`hook_call`]: build a hook's context from the cluster and call it in the sandbox.
//! - [`leaving_pods`]: which pods an operation removes and adds (the hook context's pods).
//! - [`act`]: the only writer for a Scaler, in the protocol's order, fenced by [`fence`].
//! - [`latest`]: hoist's own writes the watch has not delivered yet; conflict backoff.
//! - [`autoscaling`], [`metric_source`]: the autoscaling modes and their metric sources.
//! - [`plugins`], [`plugin_configmap`], [`plugin_oci`]: plugin sources (ConfigMaps, OCI
//!   registries) → verified plugins, hot swap.
//! - [`target`]: any workload with `/scale`, its pods and their marks.
//! - [`target_watch`], [`target_cache`]: watches of every kind Scalers target, and the small
//!   view of each target they keep, which observing reads instead of the API server.
#![forbid(unsafe_code)]

/// The git revision hoist was built from: `deploy/image` sets `HOIST_GIT_REVISION` for the
/// build; a plain `cargo build` does not know it.
pub const REVISION: &str = match option_env!("HOIST_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

pub mod act;
pub mod autoscaling;
pub mod cli;
pub mod controller;
pub mod error;
pub mod events;
pub mod fault;
pub mod fence;
pub mod hook_access;
pub mod hook_call;
pub mod http_server;
pub mod latest;
pub mod leader;
pub mod leaving_pods;
pub mod metric_source;
pub mod metrics;
pub mod observe;
pub mod plugin_configmap;
pub mod plugin_oci;
pub mod plugins;
pub mod policy;
pub mod reconcile;
pub mod rivals;
pub mod shard;
pub mod shard_leases;
pub mod target;
pub mod target_cache;
pub mod target_index;
pub mod target_watch;
