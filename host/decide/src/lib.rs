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
//! match decide(obs) {                                // phase 1
//!     Decision::Act(plan) => act(plan),
//!     Decision::Call(call) => {                      // nothing is written before the result
//!         let result = run_hook(call)                // sandbox; errors, traps, timeouts -> Failed
//!         act(decide_after(obs, result))             // phase 2, same snapshot: a Plan, no hook
//!     }
//! }
//! act(plan):  1. plan.finalizer (Add)   -> before anything the operation causes
//!             2. plan.status            -> /status, guarded by the observed resourceVersion
//!             3. plan.scale_target      -> PATCH target /scale (frozen `to`, idempotent)
//!             4. plan.seed_replicas     -> the Scaler's absent spec.replicas (its /scale)
//!             5. plan.release_leaving   -> remove the ended operation's pod marks
//!             6. plan.remove_retry_annotation, plan.finalizer (Remove), plan.events
//!             7. plan.requeue_after     -> requeue (watch events also trigger a reconcile)
//! ```
//!
//! - Intent before effect: the status that records Scaling (with the frozen `to` and the
//!   target's identity) is written before the `/scale` write it causes. A crash or a conflict
//!   between the two leaves Scaling recorded with the target untouched, and Scaling writes `to`
//!   again when the target's spec differs. The other order would leave PreScaling recorded after
//!   the target shrank, and a second pre-scale call could then choose pods that stay.
//! - A stage change that needs a hook is written first, and the hook is asked for in the next
//!   round (`requeue_after = 0`): entering `PreScaling`, entering `PostScaling`, entering `Failed`
//!   (then `on-failure`). So a hook never runs for an operation the status does not record.
//! - If the status write conflicts, drop the plan and reconcile again: the next observation
//!   yields the same request (the hook may run twice; hooks are at least once by contract).

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
    CONFLICT_POLL, Decision, Digest, Direction, Event, EventKind, FinalizerChange, Hook, HookCall,
    HookFailure, HookOperation, HookResult, MAX_PLUGIN_TEXT, MIN_HOOK_CALL, MIN_HOOK_RETRY,
    Observation, PLUGIN_LOADING_POLL, Plan, PluginAvailability, Rival, SCALING_POLL,
    TARGET_UNAVAILABLE_POLL, TargetConflict, TargetObservation, TargetScale, bounded, config_hash,
    decide, decide_after,
};
