//! Pure decisions: the scaling state machine ([`decide`]) and the autoscaling algorithms
//! ([`autoscale`]). No async, no client, no wasm, no clock: time is an input.
//!
//! # The state machine
//!
//! `Idle → PreScaling → Scaling → PostScaling → Idle`, and `Failed`. [`decide`] maps an
//! [`Observation`] (the Scaler with its status and annotations, the target's /scale, the plugin's
//! availability, the result of a hook call if one was made, and the time) to a [`Plan`] (the new
//! status, a hook to call, a /scale write, whether to remove `hoist.dev/retry`, events, when to
//! look again). Everything needed to resume lives in the status it writes, so an operator killed
//! at any point continues the same operation: hooks are called at least once, with the attempt
//! number and the state they saved.
//!
//! # The two-phase protocol (how the operator calls it)
//!
//! ```text
//! plan = decide(obs)                                 // phase 1, obs.hook_result = None
//! if let Some(call) = plan.hook {                    // a hook plan carries nothing else
//!     let result = run_hook(call)                    // sandbox; errors, traps, timeouts -> Failed
//!     plan = decide(Observation { hook_result: Some(result), ..obs })   // phase 2, same snapshot
//!     // phase 2 never asks for another hook
//! }
//! act(plan):  1. plan.scale_target  -> PATCH target /scale   (frozen `to`, idempotent)
//!             2. plan.status        -> replace /status (with the observed resourceVersion)
//!             3. plan.remove_retry_annotation -> patch metadata.annotations
//!             4. plan.events        -> publish
//!             5. plan.requeue_after -> requeue (watch events also trigger a reconcile)
//! ```
//!
//! - A plan with `hook: Some(..)` has no status, no /scale write, no events and no requeue:
//!   nothing is written before the hook's outcome is known. Phase 2 re-derives the same request
//!   from the same observation and applies the result to it.
//! - The /scale write comes before the status write: a crash between the two leaves the status
//!   in `PreScaling`, and the next round calls `pre-scale` again (at least once) and rewrites the
//!   same `to`. In the other order a crash would leave Scaling recorded with the target
//!   untouched. (Scaling also rewrites `to` when it sees the target's spec differ.)
//! - A stage change that needs a hook is written first, and the hook is asked for in the next
//!   round (`requeue_after = 0`): entering `PreScaling`, entering `PostScaling`, entering `Failed`
//!   (then `on-failure`). So a hook never runs for an operation the status does not record.
//! - If the status write conflicts, drop the plan and reconcile again: the next observation
//!   yields the same request (the hook may run twice; hooks are at least once by contract).
//!
//! # Deadlines
//!
//! Every in-flight stage has a deadline (`spec.stageTimeouts`, 10m by default). A plan for an
//! in-flight, unpaused stage always has `requeue_after` no later than that deadline, and hook
//! calls get `timeout = min(callTimeout, time left in the stage)`.
#![forbid(unsafe_code)]

pub mod autoscale;
mod machine;
pub mod modes;

pub use machine::{
    Direction, Event, EventKind, Hook, HookCall, HookFailure, HookOperation, HookResult,
    MIN_HOOK_RETRY, Observation, PLUGIN_LOADING_POLL, Plan, PluginAvailability, SCALING_POLL,
    TARGET_UNAVAILABLE_POLL, TargetObservation, TargetScale, config_hash, decide,
};
