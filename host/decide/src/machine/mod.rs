//! The scaling state machine: `Idle → PreScaling → Scaling → PostScaling → Idle`, and `Failed`.
//!
//! See the crate documentation for the protocol; the rules are listed on [`decide`] and each has
//! a table-driven test in `tests.rs`.
// Stage and policy names (PreScaling, FailOpen, ...) are words of the specification in these docs.
#![allow(clippy::doc_markdown)]

mod types;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use std::time::Duration;

use hoist_api::conditions::{self, ConditionUpdate};
use hoist_api::{
    Failure, FailurePolicy, OnFailure, Operation, PluginStatus, RETRY_ANNOTATION, ScalerSpec,
    ScalerStatus, Stage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub use types::*;

/// How often a Scaling stage checks the target (besides the target watch).
pub const SCALING_POLL: Duration = Duration::from_secs(5);
/// How often to look again while the plugin is loading.
pub const PLUGIN_LOADING_POLL: Duration = Duration::from_secs(10);
/// How often to look again while the target cannot be read.
pub const TARGET_UNAVAILABLE_POLL: Duration = Duration::from_secs(30);
/// Shortest delay honoured for a hook's `retry_after`.
pub const MIN_HOOK_RETRY: Duration = Duration::from_secs(1);

/// Compute the plan for one observation. Pure and deterministic.
///
/// Rules (each has a test in `machine/tests.rs`):
/// - **Adoption**: a Scaler without status (or one that never saw its target) records the
///   target's current replicas and selector; nothing is scaled in that step.
/// - **Idle**: when the clamped desired count (spec.replicas, or the target's own count when
///   absent) differs from the target's, an operation starts with `to` frozen: with a plugin, it
///   enters PreScaling; without, PreScaling passes at once, the plan writes `to` and enters
///   Scaling. No operation starts while the spec is invalid, the target unreadable, the plugin
///   loading/invalid/rejecting its config (FailClose), the direction paused, or the Scaler paused.
///   Before a plugin and config pair is used, `validate-config` is called once.
/// - **PreScaling**: call `pre-scale`; Done → write the frozen `to`, enter Scaling; InProgress →
///   keep its state, call again after its delay (never past the deadline); Failed or stage
///   deadline → FailClose: Failed (then `on-failure`); FailOpen: Warning event, enter Scaling.
/// - **Scaling**: the target runs `to` (spec, status and ready counts, observed generation
///   current) → PostScaling (without a plugin: straight to Idle). Stage deadline → Failed. If
///   the target's spec drifted from `to`, `to` is written again.
/// - **PostScaling**: call `post-scale`; Done → Idle, and a pending desired count starts the next
///   operation in the same plan; failures as in PreScaling.
/// - A desired count that changes during an operation is recorded as `pendingReplicas`, never
///   applied to the operation in flight.
/// - **Failed**: `on-failure` is called once (best effort; its failure is recorded in
///   `failure.onFailure` and a Warning event). Then Failed stays until the `hoist.dev/retry:
///   "true"` annotation (removed by the plan) or the retry policy's backoff allows another
///   attempt; a retry restarts from the current desired count with `attempt + 1`.
/// - **paused**: nothing moves: no hook call, no target write, no stage change; stage deadlines
///   are shifted by the time spent paused.
pub fn decide(obs: &Observation) -> Plan {
    let mut m = Machine::new(obs);
    m.run();
    m.finish()
}

/// Why no operation starts while Idle; feeds the Ready condition.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Blocked {
    InvalidSpec,
    TargetUnavailable,
    Hooks(String),
    DirectionPaused(&'static str),
}

/// The hooks gate for a new operation.
enum HooksGate {
    /// Use this plugin digest (`None`: no hooks).
    Use(Option<String>),
    /// Cannot start: reason.
    Blocked(String),
    /// A hook request was emitted (phase 1); stop.
    Requested,
}

struct Machine<'a> {
    obs: &'a Observation,
    spec: &'a ScalerSpec,
    generation: Option<i64>,
    now: jiff::Timestamp,
    now_time: Time,
    old: Option<ScalerStatus>,
    st: ScalerStatus,
    hook_result: Option<HookResult>,
    plan: Plan,
    violations: Vec<hoist_api::SpecViolation>,
    blocked: Option<Blocked>,
    /// HooksReady as computed by the hooks gate (status, reason, message).
    hooks_condition: Option<(bool, String, String)>,
    /// A hook request was emitted: the plan carries nothing else.
    requested: bool,
}

impl<'a> Machine<'a> {
    fn new(obs: &'a Observation) -> Self {
        // Status times are stored with second precision; work in whole seconds so a status that
        // went through the API server yields the same plan as the one in memory.
        let now = jiff::Timestamp::from_second(obs.now.as_second()).unwrap_or(obs.now);
        let spec = &obs.scaler.spec;
        Self {
            obs,
            spec,
            generation: obs.scaler.metadata.generation,
            now,
            now_time: Time(now),
            old: obs.scaler.status.clone(),
            st: obs.scaler.status.clone().unwrap_or_default(),
            hook_result: obs.hook_result.clone(),
            plan: Plan::default(),
            violations: spec.validate(),
            blocked: None,
            hooks_condition: None,
            requested: false,
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
                TargetObservation::Unavailable { .. } => {
                    self.blocked = Some(Blocked::TargetUnavailable);
                    self.plan.requeue_after = Some(TARGET_UNAVAILABLE_POLL);
                }
            }
            self.hooks_condition = Some(self.passive_hooks_condition());
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
                op.stage_started_at = Time(add(op.stage_started_at.0, paused_for));
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

        match self.st.stage {
            Stage::Idle => self.idle(1, None),
            Stage::PreScaling => self.hook_stage(Hook::PreScale),
            Stage::Scaling => self.scaling(),
            Stage::PostScaling => self.hook_stage(Hook::PostScale),
            Stage::Failed => self.failed(retry_requested),
        }
        if self.hooks_condition.is_none() {
            self.hooks_condition = Some(self.passive_hooks_condition());
        }
    }

    // ----- stages -----

    /// Idle: start an operation when desired ≠ current. `attempt` and `reuse_id` carry a retry.
    fn idle(&mut self, attempt: u32, reuse_id: Option<(String, i32, i32)>) {
        self.st.stage = Stage::Idle;
        self.st.operation = None;
        self.st.failure = None;
        if !self.violations.is_empty() {
            self.blocked = Some(Blocked::InvalidSpec);
            return;
        }
        let TargetObservation::Found(target) = &self.obs.target else {
            self.blocked = Some(Blocked::TargetUnavailable);
            self.plan.requeue_after = Some(TARGET_UNAVAILABLE_POLL);
            return;
        };
        let current = target.spec_replicas;
        let digest = match self.hooks_gate() {
            HooksGate::Use(digest) => digest,
            HooksGate::Requested => return,
            HooksGate::Blocked(reason) => {
                // Only blocks when there is something to do; the condition says why either way.
                if self.desired() != Some(current) {
                    self.blocked = Some(Blocked::Hooks(reason));
                }
                return;
            }
        };
        let Some(to) = self.desired() else { return };
        if to == current {
            return;
        }
        let direction = Direction::of(current, to);
        if direction == Direction::Up && self.spec.pause_scale_out {
            self.blocked = Some(Blocked::DirectionPaused("pauseScaleOut"));
            return;
        }
        if direction == Direction::Down && self.spec.pause_scale_in {
            self.blocked = Some(Blocked::DirectionPaused("pauseScaleIn"));
            return;
        }
        let (id, attempt) = match reuse_id {
            Some((id, from, old_to)) if from == current && old_to == to => (id, attempt),
            _ => (format!("{}-{current}-{to}", self.now.as_second()), 1),
        };
        let op = Operation {
            id,
            from: current,
            to,
            started_at: self.now_time.clone(),
            stage_started_at: self.now_time.clone(),
            plugin_digest: digest.clone(),
            hook_state: None,
            hook_message: None,
            attempt,
        };
        let attempt_note = if attempt > 1 {
            format!(", attempt {attempt}")
        } else {
            String::new()
        };
        self.st.operation = Some(op);
        if digest.is_some() {
            self.st.stage = Stage::PreScaling;
            self.event(
                EventKind::Normal,
                "OperationStarted",
                format!("scaling {current} → {to}: calling pre-scale{attempt_note}"),
            );
            self.plan.requeue_after = Some(Duration::ZERO);
        } else {
            self.event(
                EventKind::Normal,
                "OperationStarted",
                format!("scaling {current} → {to} (no hooks){attempt_note}"),
            );
            self.enter_scaling();
        }
    }

    /// PreScaling and PostScaling: call the stage's hook until it is done.
    fn hook_stage(&mut self, hook: Hook) {
        let stage = self.st.stage;
        let Some(op) = self.st.operation.clone() else {
            self.repair("no operation recorded");
            return;
        };
        let Some(digest) = op.plugin_digest.clone() else {
            // An operation without a plugin never waits in a hook stage.
            self.pass_hook_stage(hook, None);
            return;
        };
        let timeout = self.stage_timeout(stage);
        let deadline = add(op.stage_started_at.0, timeout);
        let Some(result) = self.hook_result.take() else {
            self.ask_or_time_out(hook, &op, digest, deadline, timeout);
            return;
        };
        match result {
            HookResult::Done { message } => self.pass_hook_stage(hook, message),
            HookResult::InProgress {
                state,
                retry_after,
                message,
            } => {
                if let Some(op) = &mut self.st.operation {
                    op.hook_state = Some(state);
                    op.hook_message = message;
                }
                let left = remaining(self.now, deadline);
                self.plan.requeue_after = Some(retry_after.max(MIN_HOOK_RETRY).min(left));
            }
            HookResult::Failed { reason } => {
                let code = if hook == Hook::PreScale {
                    "PreScaleFailed"
                } else {
                    "PostScaleFailed"
                };
                self.hook_failed(hook, code, format!("{} failed: {reason}", hook_name(hook)));
            }
        }
    }

    /// Phase 1 of a hook stage: fail on the stage deadline, or ask for the hook.
    fn ask_or_time_out(
        &mut self,
        hook: Hook,
        op: &Operation,
        digest: String,
        deadline: jiff::Timestamp,
        timeout: Duration,
    ) {
        let stage = self.st.stage;
        if self.now >= deadline {
            let message = format!(
                "{} did not finish within the {} deadline of {stage}",
                hook_name(hook),
                hoist_api::Duration::from(timeout)
            );
            self.hook_failed(hook, "StageTimeout", message);
        } else {
            let call_timeout = self.call_timeout().min(remaining(self.now, deadline));
            self.request(HookCall {
                hook,
                plugin_digest: digest,
                timeout: call_timeout,
                operation: Some(HookOperation {
                    id: op.id.clone(),
                    from: op.from,
                    to: op.to,
                    direction: Direction::of(op.from, op.to),
                    attempt: op.attempt,
                    saved_state: op.hook_state.clone(),
                    elapsed_in_stage: elapsed(self.now, op.stage_started_at.0),
                }),
                failure: None,
            });
        }
    }

    /// The stage's hook is done (or skipped): move on.
    fn pass_hook_stage(&mut self, hook: Hook, message: Option<String>) {
        if let Some(op) = &mut self.st.operation {
            op.hook_state = None;
            op.hook_message = message;
        }
        if hook == Hook::PreScale {
            self.enter_scaling();
        } else {
            self.finish_operation();
        }
    }

    /// Write the frozen `to` and wait for the target.
    fn enter_scaling(&mut self) {
        let Some(op) = &mut self.st.operation else {
            return;
        };
        op.stage_started_at = self.now_time.clone();
        op.hook_state = None;
        let to = op.to;
        self.st.stage = Stage::Scaling;
        self.st.last_scale_time = Some(self.now_time.clone());
        self.plan.scale_target = Some(to);
        self.event(
            EventKind::Normal,
            "Scaling",
            format!("writing {to} replicas to {}", self.spec.target_ref),
        );
        self.plan.requeue_after = Some(SCALING_POLL.min(self.stage_timeout(Stage::Scaling)));
    }

    fn scaling(&mut self) {
        let Some(op) = self.st.operation.clone() else {
            self.repair("no operation recorded");
            return;
        };
        let deadline = add(op.stage_started_at.0, self.stage_timeout(Stage::Scaling));
        let progress = match &self.obs.target {
            TargetObservation::Found(t) => {
                let ready = t.ready_replicas.unwrap_or(t.status_replicas);
                if t.observed_generation_current
                    && t.spec_replicas == op.to
                    && t.status_replicas == op.to
                    && ready == op.to
                {
                    self.event(
                        EventKind::Normal,
                        "Scaled",
                        format!("{} runs {} ready replicas", self.spec.target_ref, op.to),
                    );
                    if op.plugin_digest.is_some() {
                        if let Some(op) = &mut self.st.operation {
                            op.stage_started_at = self.now_time.clone();
                            op.hook_state = None;
                        }
                        self.st.stage = Stage::PostScaling;
                        self.plan.requeue_after = Some(Duration::ZERO);
                    } else {
                        self.finish_operation();
                    }
                    return;
                }
                if t.spec_replicas != op.to && self.now < deadline {
                    // Lost write (a restart between the /scale write and the status write) or
                    // someone else wrote the target: the operation's `to` stands.
                    self.plan.scale_target = Some(op.to);
                }
                format!(
                    "spec {}, status {}, ready {ready}, generation observed: {}",
                    t.spec_replicas, t.status_replicas, t.observed_generation_current
                )
            }
            TargetObservation::Unavailable { reason } => format!("target unavailable: {reason}"),
        };
        if self.now >= deadline {
            let limit = hoist_api::Duration::from(self.stage_timeout(Stage::Scaling));
            self.fail(
                Stage::Scaling,
                "ScalingTimeout",
                format!(
                    "{} did not run {} ready replicas within {limit} ({progress})",
                    self.spec.target_ref, op.to
                ),
            );
        } else {
            self.plan.requeue_after = Some(SCALING_POLL.min(remaining(self.now, deadline)));
        }
    }

    /// The operation succeeded: back to Idle, and start the next one if desired moved on.
    fn finish_operation(&mut self) {
        if let Some(op) = &self.st.operation {
            let message = format!("scaled {} → {}", op.from, op.to);
            self.event(EventKind::Normal, "OperationSucceeded", message);
        }
        self.st.pending_replicas = None;
        self.plan.requeue_after = None;
        self.idle(1, None);
    }

    fn failed(&mut self, retry_requested: bool) {
        let Some(mut failure) = self.st.failure.clone() else {
            self.repair("Failed without a recorded failure");
            return;
        };
        if failure.on_failure == OnFailure::Pending {
            let digest = self
                .st
                .operation
                .as_ref()
                .and_then(|op| op.plugin_digest.clone());
            let Some(digest) = digest else {
                failure.on_failure = OnFailure::Skipped;
                self.st.failure = Some(failure);
                return self.failed(retry_requested);
            };
            let Some(result) = self.hook_result.take() else {
                let op = self.st.operation.clone();
                self.request(HookCall {
                    hook: Hook::OnFailure,
                    plugin_digest: digest,
                    timeout: self.call_timeout(),
                    operation: op.map(|op| HookOperation {
                        id: op.id,
                        from: op.from,
                        to: op.to,
                        direction: Direction::of(op.from, op.to),
                        attempt: op.attempt,
                        saved_state: op.hook_state,
                        elapsed_in_stage: elapsed(self.now, op.stage_started_at.0),
                    }),
                    failure: Some(HookFailure {
                        stage: failure.stage,
                        reason: failure.reason.clone(),
                        message: failure.message.clone(),
                    }),
                });
                return;
            };
            match result {
                HookResult::Done { message } | HookResult::InProgress { message, .. } => {
                    failure.on_failure = OnFailure::Done;
                    failure.on_failure_message = message;
                    self.event(
                        EventKind::Normal,
                        "OnFailureDone",
                        "on-failure hook finished".to_owned(),
                    );
                }
                HookResult::Failed { reason } => {
                    self.event(
                        EventKind::Warning,
                        "OnFailureFailed",
                        format!("on-failure hook failed: {reason}"),
                    );
                    failure.on_failure = OnFailure::Failed;
                    failure.on_failure_message = Some(reason);
                }
            }
            self.st.failure = Some(failure.clone());
        }

        let attempt = self.st.operation.as_ref().map_or(1, |op| op.attempt);
        let reuse = self
            .st
            .operation
            .as_ref()
            .map(|op| (op.id.clone(), op.from, op.to));
        if retry_requested {
            self.plan.remove_retry_annotation = true;
            self.event(
                EventKind::Normal,
                "RetryRequested",
                format!(
                    "{RETRY_ANNOTATION}=true: retrying (attempt {})",
                    attempt + 1
                ),
            );
            self.retry(attempt + 1, reuse);
            return;
        }
        if let Some(policy) = self.spec.retry_policy
            && attempt < policy.max_attempts
        {
            let wait = policy.backoff.unwrap_or_default().delay(attempt).get();
            let at = add(failure.at.0, wait);
            if self.now >= at {
                self.event(
                    EventKind::Normal,
                    "RetryScheduled",
                    format!(
                        "retry policy: attempt {} of {}",
                        attempt + 1,
                        policy.max_attempts
                    ),
                );
                self.retry(attempt + 1, reuse);
            } else {
                self.plan.requeue_after = Some(remaining(self.now, at));
            }
        }
    }

    fn retry(&mut self, attempt: u32, reuse: Option<(String, i32, i32)>) {
        self.st.pending_replicas = None;
        self.plan.requeue_after = None;
        self.idle(attempt, reuse);
    }

    // ----- failures -----

    /// A hook failed or its stage timed out: apply the failure policy.
    fn hook_failed(&mut self, hook: Hook, reason: &str, message: String) {
        let policy = self
            .spec
            .hooks
            .as_ref()
            .map_or(FailurePolicy::FailClose, |h| h.failure_policy);
        if policy == FailurePolicy::FailOpen {
            self.event(
                EventKind::Warning,
                "HookFailedOpen",
                format!(
                    "{message}; failurePolicy FailOpen: continuing without {}",
                    hook_name(hook)
                ),
            );
            self.pass_hook_stage(hook, Some(message));
        } else {
            self.fail(self.st.stage, reason, message);
        }
    }

    /// Enter Failed.
    fn fail(&mut self, stage: Stage, reason: &str, message: String) {
        let has_plugin = self
            .st
            .operation
            .as_ref()
            .is_some_and(|op| op.plugin_digest.is_some());
        self.event(
            EventKind::Warning,
            "OperationFailed",
            format!("{stage}: {message}"),
        );
        self.st.stage = Stage::Failed;
        self.st.failure = Some(Failure {
            stage,
            reason: reason.to_owned(),
            message,
            at: self.now_time.clone(),
            on_failure: if has_plugin {
                OnFailure::Pending
            } else {
                OnFailure::Skipped
            },
            on_failure_message: None,
        });
        // on-failure is called in the next round, after Failed is written.
        self.plan.requeue_after = if has_plugin {
            Some(Duration::ZERO)
        } else {
            None
        };
        if !has_plugin && let Some(policy) = self.spec.retry_policy {
            let attempt = self.st.operation.as_ref().map_or(1, |op| op.attempt);
            if attempt < policy.max_attempts {
                self.plan.requeue_after =
                    Some(policy.backoff.unwrap_or_default().delay(attempt).get());
            }
        }
    }

    /// The status is inconsistent (edited by hand, or by a newer/older hoist): go Idle loudly.
    fn repair(&mut self, what: &str) {
        self.event(
            EventKind::Warning,
            "StatusRepaired",
            format!("stage {} but {what}; returning to Idle", self.st.stage),
        );
        self.idle(1, None);
    }

    // ----- hooks gate -----

    /// Decide which plugin a new operation uses, calling validate-config when needed.
    fn hooks_gate(&mut self) -> HooksGate {
        let Some(hooks) = &self.spec.hooks else {
            self.hooks_condition =
                Some((true, "NoHooks".into(), "no hook plugin configured".into()));
            return HooksGate::Use(None);
        };
        let fail_open = hooks.failure_policy == FailurePolicy::FailOpen;
        let (digest, verdict) = match &self.obs.plugin {
            PluginAvailability::NotConfigured | PluginAvailability::Loading => {
                let message = format!("loading plugin from ConfigMap {}", hooks.plugin.config_map);
                self.hooks_condition = Some((false, "PluginLoading".into(), message.clone()));
                self.plan.requeue_after = Some(PLUGIN_LOADING_POLL);
                return HooksGate::Blocked(message);
            }
            PluginAvailability::Invalid { reason } => {
                let message = format!(
                    "plugin from ConfigMap {} is invalid: {reason}",
                    hooks.plugin.config_map
                );
                self.hooks_condition = Some((false, "PluginInvalid".into(), message.clone()));
                return self.unusable_hooks(fail_open, message);
            }
            PluginAvailability::Ready { digest } => {
                let verdict = match self.plugin_verdict(digest, config_hash(hooks.config.as_ref()))
                {
                    Ok(verdict) => verdict,
                    Err(gate) => return gate,
                };
                (digest.clone(), verdict)
            }
        };
        if verdict.0 {
            self.hooks_condition = Some((
                true,
                "PluginReady".into(),
                format!(
                    "plugin {} loaded and accepted the configuration",
                    short(&digest)
                ),
            ));
            HooksGate::Use(Some(digest))
        } else {
            let message = format!(
                "plugin {} rejected the configuration: {}",
                short(&digest),
                verdict.1.unwrap_or_default()
            );
            self.hooks_condition = Some((false, "ConfigRejected".into(), message.clone()));
            self.unusable_hooks(fail_open, message)
        }
    }

    /// What validate-config said (or says now, in phase 2) about this plugin and config;
    /// `Err` when the gate must stop here (a request was made, or validation must wait).
    fn plugin_verdict(
        &mut self,
        digest: &String,
        hash: String,
    ) -> Result<(bool, Option<String>), HooksGate> {
        let known = self
            .st
            .plugin
            .as_ref()
            .filter(|p| p.digest == *digest && p.config_hash == hash)
            .map(|p| (p.accepted, p.message.clone()));
        let verdict = if let Some(known) = known {
            known
        } else if !self.plan.has_writes()
            && !self.requested
            && let Some(result) = self.hook_result.take()
        {
            let verdict = match result {
                HookResult::Done { message } => (true, message),
                HookResult::Failed { reason } => (false, Some(reason)),
                HookResult::InProgress { retry_after, .. } => {
                    // validate-config has no in-progress form; ask again later.
                    self.hooks_condition = Some((
                        false,
                        "ValidatingConfig".into(),
                        "validate-config asked to be called again".into(),
                    ));
                    self.plan.requeue_after = Some(retry_after.max(MIN_HOOK_RETRY));
                    return Err(HooksGate::Blocked(
                        "validating the plugin configuration".into(),
                    ));
                }
            };
            self.st.plugin = Some(PluginStatus {
                digest: digest.clone(),
                config_hash: hash,
                accepted: verdict.0,
                message: verdict.1.clone(),
            });
            if verdict.0 {
                self.event(
                    EventKind::Normal,
                    "ConfigAccepted",
                    format!("plugin {} accepted the configuration", short(digest)),
                );
            } else {
                self.event(
                    EventKind::Warning,
                    "ConfigRejected",
                    format!(
                        "plugin {} rejected the configuration: {}",
                        short(digest),
                        verdict.1.clone().unwrap_or_default()
                    ),
                );
            }
            verdict
        } else if self.plan.has_writes() {
            // A hook cannot be asked for in a plan that writes; validate next round.
            self.hooks_condition = Some((
                false,
                "ValidatingConfig".into(),
                "validating the plugin configuration".into(),
            ));
            self.plan.requeue_after = Some(Duration::ZERO);
            return Err(HooksGate::Blocked(
                "validating the plugin configuration".into(),
            ));
        } else {
            self.request(HookCall {
                hook: Hook::ValidateConfig,
                plugin_digest: digest.clone(),
                timeout: self.call_timeout(),
                operation: None,
                failure: None,
            });
            return Err(HooksGate::Requested);
        };
        Ok(verdict)
    }

    fn unusable_hooks(&mut self, fail_open: bool, message: String) -> HooksGate {
        if fail_open {
            let to = self.desired();
            let current = match &self.obs.target {
                TargetObservation::Found(t) => Some(t.spec_replicas),
                TargetObservation::Unavailable { .. } => None,
            };
            if to.is_some() && to != current {
                self.event(
                    EventKind::Warning,
                    "HooksSkipped",
                    format!("{message}; failurePolicy FailOpen: scaling without hooks"),
                );
            }
            HooksGate::Use(None)
        } else {
            HooksGate::Blocked(message)
        }
    }

    /// HooksReady when the gate was not evaluated (an operation in flight, paused, adoption).
    fn passive_hooks_condition(&self) -> (bool, String, String) {
        let Some(hooks) = &self.spec.hooks else {
            return (true, "NoHooks".into(), "no hook plugin configured".into());
        };
        match &self.obs.plugin {
            PluginAvailability::NotConfigured | PluginAvailability::Loading => (
                false,
                "PluginLoading".into(),
                format!("loading plugin from ConfigMap {}", hooks.plugin.config_map),
            ),
            PluginAvailability::Invalid { reason } => (
                false,
                "PluginInvalid".into(),
                format!(
                    "plugin from ConfigMap {} is invalid: {reason}",
                    hooks.plugin.config_map
                ),
            ),
            PluginAvailability::Ready { digest } => {
                let hash = config_hash(hooks.config.as_ref());
                match self
                    .st
                    .plugin
                    .as_ref()
                    .filter(|p| p.digest == *digest && p.config_hash == hash)
                {
                    Some(p) if p.accepted => (
                        true,
                        "PluginReady".into(),
                        format!(
                            "plugin {} loaded and accepted the configuration",
                            short(digest)
                        ),
                    ),
                    Some(p) => (
                        false,
                        "ConfigRejected".into(),
                        format!(
                            "plugin {} rejected the configuration: {}",
                            short(digest),
                            p.message.clone().unwrap_or_default()
                        ),
                    ),
                    None => (
                        false,
                        "ValidatingConfig".into(),
                        format!(
                            "plugin {} loaded; configuration not validated yet",
                            short(digest)
                        ),
                    ),
                }
            }
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
    fn desired(&self) -> Option<i32> {
        let asked = self.spec.replicas.or(match &self.obs.target {
            TargetObservation::Found(t) => Some(t.spec_replicas),
            TargetObservation::Unavailable { .. } => None,
        })?;
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
        self.plan.hook = Some(call);
        self.requested = true;
    }

    fn finish(mut self) -> Plan {
        if self.requested {
            // Phase 1: the hook request alone; nothing is written before its result is known.
            return Plan {
                hook: self.plan.hook,
                ..Plan::default()
            };
        }
        // Pending desired count during an operation (or a failure).
        self.st.pending_replicas = match (&self.st.operation, self.st.stage) {
            (Some(op), stage) if stage != Stage::Idle => self.desired().filter(|d| *d != op.to),
            _ => None,
        };
        self.set_conditions();
        self.st.observed_generation = self.generation;
        if self.old.as_ref() != Some(&self.st) {
            self.plan.status = Some(self.st);
        }
        self.plan
    }

    fn set_conditions(&mut self) {
        let updates = [
            self.valid_spec_condition(),
            self.hooks_ready_condition(),
            self.able_to_scale_condition(),
            self.scaling_active_condition(),
            self.ready_condition(),
        ];
        let mut conds = std::mem::take(&mut self.st.conditions);
        for update in updates {
            conditions::set(&mut conds, update, self.generation, &self.now_time);
        }
        // Keep a stable order (the order of conditions::ALL) so equal states compare equal.
        conds.sort_by_key(|c| {
            conditions::ALL
                .iter()
                .position(|t| *t == c.type_)
                .unwrap_or(usize::MAX)
        });
        self.st.conditions = conds;
    }

    fn valid_spec_condition(&self) -> ConditionUpdate {
        if self.violations.is_empty() {
            return ConditionUpdate::new(
                conditions::VALID_SPEC,
                true,
                "Valid",
                "the spec is valid",
            );
        }
        let message = self
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ConditionUpdate::new(conditions::VALID_SPEC, false, "InvalidSpec", message)
    }

    fn hooks_ready_condition(&self) -> ConditionUpdate {
        let (ok, reason, message) = self
            .hooks_condition
            .clone()
            .unwrap_or_else(|| self.passive_hooks_condition());
        ConditionUpdate::new(conditions::HOOKS_READY, ok, reason, message)
    }

    fn able_to_scale_condition(&self) -> ConditionUpdate {
        match (&self.obs.target, self.st.stage) {
            (TargetObservation::Unavailable { reason }, _) => ConditionUpdate::new(
                conditions::ABLE_TO_SCALE,
                false,
                "TargetUnavailable",
                reason.clone(),
            ),
            (_, Stage::Failed) => {
                let message = self
                    .st
                    .failure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.reason, f.message))
                    .unwrap_or_default();
                ConditionUpdate::new(
                    conditions::ABLE_TO_SCALE,
                    false,
                    "OperationFailed",
                    format!("{message} (set annotation {RETRY_ANNOTATION}=true to retry)"),
                )
            }
            _ => ConditionUpdate::new(
                conditions::ABLE_TO_SCALE,
                true,
                "TargetReachable",
                format!("{} can be scaled", self.spec.target_ref),
            ),
        }
    }

    fn operation_text(&self) -> String {
        self.st
            .operation
            .as_ref()
            .map(|op| format!("{} → {} (attempt {})", op.from, op.to, op.attempt))
            .unwrap_or_default()
    }

    fn scaling_active_condition(&self) -> ConditionUpdate {
        let (active, reason, message) = match self.st.stage {
            _ if self.spec.paused => (
                false,
                "Paused",
                format!("paused in stage {}", self.st.stage),
            ),
            Stage::Idle => (false, "Idle", "no operation in flight".to_owned()),
            Stage::Failed => (
                false,
                "Failed",
                format!("operation {} failed", self.operation_text()),
            ),
            stage => (
                true,
                stage.as_str(),
                format!("scaling {}", self.operation_text()),
            ),
        };
        ConditionUpdate::new(conditions::SCALING_ACTIVE, active, reason, message)
    }

    fn ready_condition(&self) -> ConditionUpdate {
        let current = match &self.obs.target {
            TargetObservation::Found(t) => Some(t.spec_replicas),
            TargetObservation::Unavailable { .. } => None,
        };
        let (ready, reason, message) = match (&self.blocked, self.st.stage) {
            _ if self.spec.paused => (false, "Paused", "spec.paused is set".to_owned()),
            (Some(Blocked::InvalidSpec), _) => (
                false,
                "InvalidSpec",
                "the spec is invalid; see ValidSpec".to_owned(),
            ),
            (Some(Blocked::TargetUnavailable), _) => (
                false,
                "TargetUnavailable",
                "the target cannot be read; see AbleToScale".to_owned(),
            ),
            (Some(Blocked::Hooks(message)), _) => (false, "HooksNotReady", message.clone()),
            (Some(Blocked::DirectionPaused(field)), _) => (
                false,
                "DirectionPaused",
                format!("{field} holds the change back"),
            ),
            (None, Stage::Idle) if self.desired() == current => (
                true,
                "Idle",
                format!("running {} replicas as asked", current.unwrap_or_default()),
            ),
            (None, Stage::Idle) => (false, "Pending", "a change is waiting".to_owned()),
            (None, Stage::Failed) => (
                false,
                "Failed",
                "the last operation failed; see AbleToScale".to_owned(),
            ),
            (None, stage) => (
                false,
                stage.as_str(),
                format!("scaling {}", self.operation_text()),
            ),
        };
        ConditionUpdate::new(conditions::READY, ready, reason, message)
    }
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::PreScale => "pre-scale",
        Hook::PostScale => "post-scale",
        Hook::OnFailure => "on-failure",
        Hook::ValidateConfig => "validate-config",
    }
}

fn short(digest: &str) -> String {
    format!("sha256:{}", digest.get(..12).unwrap_or(digest))
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
