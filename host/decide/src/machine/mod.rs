//! The scaling state machine: `Idle → PreScaling → Scaling → PostScaling → Idle`, and `Failed`.
//!
//! See the crate documentation for the protocol; the rules are listed on [`decide`] and each has
//! a table-driven test in `tests.rs`.
// Stage and policy names (PreScaling, FailOpen, ...) are words of the specification in these docs.
#![allow(clippy::doc_markdown)]

mod gate;
mod stages;
mod status_conditions;
mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use hoist_api::conditions::{self, ConditionUpdate};
use hoist_api::{
    FINALIZER, Failure, FailurePolicy, OnFailure, Operation, OperationTarget, PluginStatus,
    RETRY_ANNOTATION, ScalerSpec, ScalerStatus, Stage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

pub use types::*;

/// How often a Scaling stage checks the target (besides the target watch).
pub const SCALING_POLL: Duration = Duration::from_secs(5);
/// How often to look again while the plugin is loading.
pub const PLUGIN_LOADING_POLL: Duration = Duration::from_secs(10);
/// How often to look again while the target cannot be read.
pub const TARGET_UNAVAILABLE_POLL: Duration = Duration::from_secs(30);
/// How often a Scaler that yields to an older one on the same workload looks again.
pub const CONFLICT_POLL: Duration = Duration::from_secs(10);
/// Least time a hook call gets: with less of its stage left, the stage times out instead.
pub const MIN_HOOK_CALL: Duration = Duration::from_secs(1);
/// Shortest delay honoured for a hook's `retry_after`.
pub const MIN_HOOK_RETRY: Duration = Duration::from_secs(1);

/// Decide what to do for one observation. Pure and deterministic.
///
/// Rules (each has a test in `machine/tests.rs`):
/// - **Adoption**: a Scaler without status (or one that never saw its target) records the
///   target's current replicas and selector; nothing is scaled in that step.
/// - **Idle**: when the clamped desired count (spec.replicas, or the target's own count when
///   absent) differs from the target's, an operation starts with `to` frozen and the target's
///   identity (apiVersion, kind, name, uid) recorded: with a plugin, it enters PreScaling (and
///   hoist's finalizer is added first); without, PreScaling passes at once and the plan records
///   Scaling, then writes `to`. No operation starts while the spec is invalid, the target
///   unreadable, the plugin loading/invalid/rejecting its config (FailClose), the direction
///   paused, or the Scaler paused. Before a plugin and config pair is used, `validate-config`
///   is called once.
/// - **Intent before effect**: a plan that writes the target also writes the status that
///   records the Scaling stage of the same operation, and the operator writes that status
///   first. So a `/scale` write never happens for an operation whose status says PreScaling.
/// - **PreScaling**: call `pre-scale` when it is due; Done → enter Scaling (status, then `to`);
///   InProgress → keep its state, store when the next call is due (its delay, never past the
///   deadline) and call no earlier, whatever triggers a reconcile; Failed or stage deadline →
///   FailClose: Failed (then `on-failure`); FailOpen: Warning event, enter Scaling. If the
///   target already runs the frozen `to`, pre-scale is never called again (the leaving pods are
///   gone or going): the operation enters Scaling.
/// - **Scaling**: the target runs `to` (spec, status and ready counts, observed generation
///   current) → PostScaling (without a plugin: straight to Idle). Stage deadline → Failed. If
///   the target's spec drifted from `to`, `to` is written again.
/// - **PostScaling**: call `post-scale`; Done → Idle, and a pending desired count starts the next
///   operation in the same plan; failures as in PreScaling.
/// - **One workload**: while an operation is in flight, a `spec.targetRef` that names another
///   workload fails it (`TargetChanged`), a target that is gone fails it (`TargetGone`), and
///   one with another uid (deleted and created again) fails it (`TargetReplaced`); nothing is
///   written to any target.
/// - A desired count that changes during an operation is recorded as `pendingReplicas`, never
///   applied to the operation in flight.
/// - **Failed**: `on-failure` is called once (best effort; its failure is recorded in
///   `failure.onFailure` and a Warning event), then the operation's leaving-pod marks are
///   released. Failed stays until the `hoist.dev/retry: "true"` annotation (removed by the
///   plan) or the retry policy's backoff allows another attempt. A retry of an operation that
///   failed before its target was written starts again from the current desired count with
///   `attempt + 1`; one that failed after (Scaling or PostScaling) resumes at Scaling with
///   `attempt + 1`, so post-scale runs for every operation that changed the workload.
/// - **Deleted** (hoist's finalizer held): an operation in flight fails (`ScalerDeleted`),
///   `on-failure` undoes it, the marks are released, then the finalizer is removed.
/// - **paused**: nothing moves: no hook call, no target write, no stage change; stage deadlines
///   are shifted by the time spent paused.
/// - Every string a plugin supplies is bounded ([`MAX_PLUGIN_TEXT`]) before it reaches the
///   status or an event.
pub fn decide(obs: &Observation) -> Decision {
    let mut m = Machine::new(obs, None);
    m.run();
    m.finish()
}

/// Phase 2: the plan for the same observation after the hook that [`decide`] asked for
/// returned `result`. Its type has no room for another hook request.
pub fn decide_after(obs: &Observation, result: HookResult) -> Plan {
    let mut m = Machine::new(obs, Some(result));
    m.run();
    match m.finish() {
        Decision::Act(plan) => plan,
        // The machine consumes the result before it could ask again; should a future rule
        // break that, nothing is written and the next round asks afresh.
        Decision::Call(_) => Plan {
            requeue_after: Some(Duration::ZERO),
            ..Plan::default()
        },
    }
}

/// Longest plugin-supplied text kept in the status or an event (messages, reasons,
/// validate-config verdicts); longer text is cut and says so.
pub const MAX_PLUGIN_TEXT: usize = 1024;

/// `text` cut to at most `max` bytes (at a char boundary), with a note of what was cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [cut: {} bytes more]", &text[..end], text.len() - end)
}

/// Why no operation starts while Idle; feeds the Ready condition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Blocked {
    InvalidSpec,
    /// Another, older Scaler or HPA drives the same workload.
    Conflict(Rival),
    TargetUnavailable,
    Hooks(String),
    DirectionPaused(&'static str),
}

/// The hooks gate for a new operation.
enum HooksGate {
    /// Use this plugin (`None`: no hooks).
    Use(Option<Digest>),
    /// Cannot start: reason.
    Blocked(String),
    /// A hook request was emitted (phase 1); stop.
    Requested,
}

struct Machine<'a> {
    obs: &'a Observation,
    spec: &'a ScalerSpec,
    generation: Option<i64>,
    /// Now, in whole seconds: status times (`Time`) are stored with second precision, so a
    /// status that went through the API server yields the same plan as the one in memory.
    now: jiff::Timestamp,
    now_time: Time,
    /// Now, in whole microseconds, for `MicroTime` fields.
    now_micro: MicroTime,
    old: Option<ScalerStatus>,
    st: ScalerStatus,
    hook_result: Option<HookResult>,
    plan: Plan,
    violations: Vec<hoist_api::SpecViolation>,
    blocked: Option<Blocked>,
    /// HooksReady as computed by the hooks gate (status, reason, message).
    hooks_condition: Option<(bool, String, String)>,
    /// A hook request was emitted: the plan carries nothing else.
    requested: Option<HookCall>,
}

impl<'a> Machine<'a> {
    fn new(obs: &'a Observation, hook_result: Option<HookResult>) -> Self {
        let now = jiff::Timestamp::from_second(obs.now.as_second()).unwrap_or(obs.now);
        let micros = obs.now.as_microsecond();
        let now_micro = jiff::Timestamp::from_microsecond(micros).unwrap_or(now);
        let spec = &obs.scaler.spec;
        Self {
            obs,
            spec,
            generation: obs.scaler.metadata.generation,
            now,
            now_time: Time(now),
            now_micro: MicroTime(now_micro),
            old: obs.scaler.status.clone(),
            st: obs.scaler.status.clone().unwrap_or_default(),
            hook_result,
            plan: Plan::default(),
            violations: spec.validate(),
            blocked: None,
            hooks_condition: None,
            requested: None,
        }
    }

    fn run(&mut self) {
        let retry_requested = self.retry_annotation();
        if let TargetObservation::Found(t) = &self.obs.target {
            self.st.replicas = Some(t.status_replicas);
            if t.selector.is_some() {
                self.st.selector.clone_from(&t.selector);
            }
        }

        // Adoption: the first sight of the target records its count and scales nothing.
        let never_adopted = self.old.as_ref().is_none_or(|s| {
            s.replicas.is_none() && s.stage == Stage::Idle && s.operation.is_none()
        });
        if never_adopted {
            match &self.obs.target {
                TargetObservation::Found(t) => {
                    self.event(
                        EventKind::Normal,
                        "Adopted",
                        format!(
                            "adopted {} at {} replicas",
                            self.spec.target_ref, t.spec_replicas
                        ),
                    );
                    self.plan.requeue_after = Some(Duration::ZERO);
                }
                TargetObservation::Missing { .. } | TargetObservation::Unavailable { .. } => {
                    self.blocked = Some(Blocked::TargetUnavailable);
                    self.plan.requeue_after = Some(TARGET_UNAVAILABLE_POLL);
                }
            }
            self.hooks_condition = Some(self.passive_hooks_condition());
            return;
        }

        if self.deleting() {
            self.being_deleted();
            if self.hooks_condition.is_none() {
                self.hooks_condition = Some(self.passive_hooks_condition());
            }
            return;
        }

        if self.spec.paused {
            if self.st.paused_since.is_none() {
                self.st.paused_since = Some(self.now_time.clone());
                self.event(
                    EventKind::Normal,
                    "Paused",
                    format!("paused in stage {}", self.st.stage),
                );
            }
            self.hooks_condition = Some(self.passive_hooks_condition());
            return;
        }
        if let Some(since) = self.st.paused_since.take() {
            let paused_for = elapsed(self.now, since.0);
            if let Some(op) = &mut self.st.operation {
                op.stage_started_at = MicroTime(add(op.stage_started_at.0, paused_for));
                op.next_hook_call_at = op
                    .next_hook_call_at
                    .take()
                    .map(|at| Time(add(at.0, paused_for)));
            }
            self.event(
                EventKind::Normal,
                "Resumed",
                format!(
                    "resumed in stage {} after {}s paused",
                    self.st.stage,
                    paused_for.as_secs()
                ),
            );
        }

        if retry_requested && self.st.stage != Stage::Failed {
            self.plan.remove_retry_annotation = true;
            self.event(
                EventKind::Normal,
                "RetryIgnored",
                format!("{RETRY_ANNOTATION} only applies to a Failed Scaler; removed it"),
            );
        }

        if self.st.stage.in_flight() && self.target_left() {
            // `target_left` failed the operation: nothing else happens in this round.
        } else {
            match self.st.stage {
                Stage::Idle => self.idle(1, None),
                Stage::PreScaling => self.hook_stage(Hook::PreScale),
                Stage::Scaling => self.scaling(),
                Stage::PostScaling => self.hook_stage(Hook::PostScale),
                Stage::Failed => self.failed(retry_requested),
            }
        }
        if self.hooks_condition.is_none() {
            self.hooks_condition = Some(self.passive_hooks_condition());
        }
    }

    // ----- helpers -----

    fn retry_annotation(&self) -> bool {
        self.obs
            .scaler
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RETRY_ANNOTATION))
            .is_some_and(|v| v == "true")
    }

    /// The clamped desired count: spec.replicas, or the target's count when absent.
    /// The count to run: `spec.replicas` (the workload's own count while it is absent),
    /// clamped to the bounds. A count equal to the workload's is kept as it is even out of
    /// bounds: adoption changes nothing, and neither does a change of the bounds alone; the
    /// bounds apply to the next change of the asked count (WithinBounds says so meanwhile).
    fn desired(&self) -> Option<i32> {
        let current = self.obs.target.found().map(|t| t.spec_replicas);
        let asked = self.spec.replicas.or(current)?;
        if Some(asked) == current {
            return Some(asked);
        }
        Some(self.spec.clamp(asked))
    }

    fn stage_timeout(&self, stage: Stage) -> Duration {
        let t = self.spec.effective_stage_timeouts();
        match stage {
            Stage::PreScaling => t.pre_scaling(),
            Stage::PostScaling => t.post_scaling(),
            Stage::Idle | Stage::Scaling | Stage::Failed => t.scaling(),
        }
        .get()
    }

    fn call_timeout(&self) -> Duration {
        self.spec
            .hooks
            .as_ref()
            .map_or(
                hoist_api::hooks::DEFAULT_CALL_TIMEOUT,
                hoist_api::Hooks::effective_call_timeout,
            )
            .get()
    }

    fn event(&mut self, kind: EventKind, reason: &str, message: String) {
        self.plan.events.push(Event {
            kind,
            reason: reason.to_owned(),
            message,
        });
    }

    fn request(&mut self, call: HookCall) {
        self.requested = Some(call);
    }

    fn finish(mut self) -> Decision {
        if let Some(call) = self.requested.take() {
            // Phase 1: the hook request alone; nothing is written before its result is known.
            return Decision::Call(call);
        }
        // Pending desired count during an operation (or a failure).
        self.st.pending_replicas = match (&self.st.operation, self.st.stage) {
            (Some(op), stage) if stage != Stage::Idle => self.desired().filter(|d| *d != op.to),
            _ => None,
        };
        self.set_conditions();
        self.plan.seed_replicas = self.seed_replicas();
        self.st.observed_generation = self.generation;
        self.plan.finalizer = self.finalizer_change();
        if self.old.as_ref() != Some(&self.st) {
            self.plan.status = Some(self.st);
        }
        Decision::Act(self.plan)
    }

    /// `spec.replicas` is absent (a new Scaler, or someone removed it) and nothing is in
    /// flight: write the workload's count there, which changes nothing (an absent count
    /// already means the workload's), so that the Scaler's `/scale` answers.
    fn seed_replicas(&self) -> Option<i32> {
        if self.spec.replicas.is_some() || self.st.stage != Stage::Idle || self.deleting() {
            return None;
        }
        self.obs.target.found().map(|t| t.spec_replicas)
    }

    /// hoist holds its finalizer exactly while the status records an operation with a plugin
    /// that has something to undo: in flight, or Failed with `on-failure` still due. It is
    /// never added to a Scaler being deleted (the API server refuses that).
    fn finalizer_change(&self) -> Option<FinalizerChange> {
        let needed = self.st.operation.as_ref().is_some_and(|op| {
            op.plugin_digest.is_some()
                && (self.st.stage.in_flight()
                    || (self.st.stage == Stage::Failed
                        && self
                            .st
                            .failure
                            .as_ref()
                            .is_some_and(|f| f.on_failure == OnFailure::Pending)))
        });
        match (needed, self.holds_finalizer()) {
            (true, false) if !self.deleting() => Some(FinalizerChange::Add),
            (false, true) => Some(FinalizerChange::Remove),
            _ => None,
        }
    }

    fn holds_finalizer(&self) -> bool {
        self.obs
            .scaler
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == FINALIZER))
    }

    fn deleting(&self) -> bool {
        self.obs.scaler.metadata.deletion_timestamp.is_some()
    }

    /// The operation's target as observed now, for a new operation.
    fn operation_target(&self) -> OperationTarget {
        let t = &self.spec.target_ref;
        OperationTarget {
            api_version: t.api_version.clone(),
            kind: t.kind.clone(),
            name: t.name.clone(),
            uid: self.obs.target.found().and_then(|t| t.uid.clone()),
        }
    }

    /// A fresh operation id, unique across Scalers: the Scaler's uid (its first 8 characters),
    /// the time, and the change.
    fn new_operation_id(&self, from: i32, to: i32) -> String {
        let uid = self.obs.scaler.metadata.uid.as_deref().unwrap_or("");
        let uid: String = uid.chars().filter(|c| *c != '-').take(8).collect();
        let uid = if uid.is_empty() { "local".into() } else { uid };
        format!("{uid}-{}-{from}-{to}", self.now.as_second())
    }

    /// The hook context of the operation in flight, for a call of `hook`.
    fn hook_operation(&self, op: &Operation, call: u32) -> HookOperation {
        HookOperation {
            id: op.id.clone(),
            from: op.from,
            to: op.to,
            direction: Direction::of(op.from, op.to),
            target: op
                .target
                .as_ref()
                .map_or_else(|| self.spec.target_ref.clone(), OperationTarget::target_ref),
            attempt: op.attempt,
            call,
            saved_state: op.hook_state.clone(),
            elapsed_in_stage: elapsed(self.obs.now, op.stage_started_at.0),
        }
    }
}

fn short(digest: &Digest) -> String {
    format!("sha256:{}", digest.short())
}

/// Where an operation's plugin digest is read from (untrusted text: it may have been edited).
const PLUGIN_DIGEST_FIELD: &str = "status.operation.pluginDigest";

/// The digest an operation recorded, read from its status.
fn operation_digest(text: &str) -> Result<Digest, String> {
    Digest::parse(text).map_err(|e| e.in_field(PLUGIN_DIGEST_FIELD).to_string())
}

/// `ts + d`, saturating.
fn add(ts: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    ts.checked_add(d).unwrap_or(jiff::Timestamp::MAX)
}

/// Time from `earlier` to `now`; zero if `earlier` is in the future.
fn elapsed(now: jiff::Timestamp, earlier: jiff::Timestamp) -> Duration {
    Duration::try_from(now.duration_since(earlier)).unwrap_or(Duration::ZERO)
}

/// Time from `now` to `deadline`; zero when past.
fn remaining(now: jiff::Timestamp, deadline: jiff::Timestamp) -> Duration {
    elapsed(deadline, now)
}

/// A stable fingerprint of `spec.hooks.config` (FNV-1a 64 of its JSON), to tell whether
/// validate-config has seen this configuration.
pub fn config_hash(config: Option<&serde_json::Value>) -> String {
    let text = config.map(serde_json::Value::to_string).unwrap_or_default();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}
