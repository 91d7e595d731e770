//! The stages of an operation: Idle, PreScaling, Scaling, PostScaling, Failed, and what a
//! failure, a retry, a target that left and a deleted Scaler do to them.
// Stage and policy names (PreScaling, FailOpen, ...) are words of the specification in these docs.
#![allow(clippy::doc_markdown)]

use std::time::Duration;

use super::{
    Blocked, CONFLICT_POLL, Direction, EventKind, Failure, FailurePolicy, Hook, HookCall,
    HookFailure, HookResult, HooksGate, MAX_PLUGIN_TEXT, MIN_HOOK_CALL, MIN_HOOK_RETRY, Machine,
    OnFailure, Operation, OperationTarget, RETRY_ANNOTATION, SCALING_POLL, Stage,
    TARGET_UNAVAILABLE_POLL, TargetObservation, Time, add, bounded, operation_digest, remaining,
};

/// A failed operation a retry may continue: its id, its change, and whether its target was
/// written (it failed in Scaling or PostScaling).
pub(super) struct Retry {
    pub(super) id: String,
    pub(super) from: i32,
    pub(super) to: i32,
    pub(super) target: Option<OperationTarget>,
    pub(super) target_written: bool,
}

impl Machine<'_> {
    /// Idle: start an operation when desired ≠ current. `attempt` and `retry` carry a retry.
    pub(super) fn idle(&mut self, attempt: u32, retry: Option<&Retry>) {
        self.st.stage = Stage::Idle;
        self.st.operation = None;
        self.st.failure = None;
        if !self.violations.is_empty() {
            self.blocked = Some(Blocked::InvalidSpec);
            return;
        }
        let Some(target) = self.obs.target.found() else {
            self.blocked = Some(Blocked::TargetUnavailable);
            self.plan.requeue_after = Some(TARGET_UNAVAILABLE_POLL);
            return;
        };
        let current = target.spec_replicas;
        if let Some(acting) = self.obs.conflict.as_ref().and_then(|c| c.acting.as_ref()) {
            // Two autoscalers on one workload would fight: a newer Scaler does nothing, and
            // looks again (nothing else tells it when the other one goes).
            self.blocked = Some(Blocked::Conflict(acting.clone()));
            self.plan.requeue_after = Some(CONFLICT_POLL);
            return;
        }
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
        let target = self.operation_target();
        let (id, attempt) = match retry {
            Some(r) if r.from == current && r.to == to && r.target.as_ref() == Some(&target) => {
                (r.id.clone(), attempt)
            }
            _ => (self.new_operation_id(current, to), 1),
        };
        let op = Operation {
            id,
            from: current,
            to,
            target: Some(target),
            started_at: self.now_time.clone(),
            stage_started_at: self.now_micro.clone(),
            plugin_digest: digest.as_ref().map(ToString::to_string),
            hook_state: None,
            hook_message: None,
            hook_calls: 0,
            next_hook_call_at: None,
            target_writes: 0,
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
            // Without hooks the operation is one stage: its start says what is written, and
            // no separate Scaling event follows.
            self.event(
                EventKind::Normal,
                "OperationStarted",
                format!(
                    "scaling {current} → {to} (no hooks){attempt_note}: writing {to} replicas to {}",
                    self.spec.target_ref
                ),
            );
            self.enter_scaling();
        }
    }

    /// PreScaling and PostScaling: call the stage's hook, when due, until it is done.
    pub(super) fn hook_stage(&mut self, hook: Hook) {
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
        if hook == Hook::PreScale && self.target_already_written(&op) {
            // The target runs the frozen `to` already: its leaving pods are gone or going, so
            // a pre-scale call now could only choose pods that stay. Never call it again.
            self.event(
                EventKind::Warning,
                "PreScaleSkipped",
                format!(
                    "{} already runs {} replicas (written by hoist before this status was seen, or by someone else); pre-scale is not called once the target was written",
                    self.spec.target_ref, op.to
                ),
            );
            self.enter_scaling();
            return;
        }
        let timeout = self.stage_timeout(stage);
        let deadline = add(op.stage_started_at.0, timeout);
        let Some(result) = self.hook_result.take() else {
            self.ask_or_time_out(hook, &op, &digest, deadline, timeout);
            return;
        };
        match result {
            HookResult::Done { message } => self.pass_hook_stage(hook, message),
            HookResult::InProgress {
                state,
                retry_after,
                message,
            } => {
                let wait = retry_after.max(MIN_HOOK_RETRY);
                // Due in whole seconds (status times have second precision), never past the
                // deadline (which then fails the stage at once).
                let due = add(self.now, ceil_secs(wait)).min(deadline);
                if let Some(op) = &mut self.st.operation {
                    op.hook_state = Some(state);
                    op.hook_message = message.map(|m| bounded(&m, MAX_PLUGIN_TEXT));
                    op.hook_calls = op.hook_calls.saturating_add(1);
                    op.next_hook_call_at = Some(Time(due));
                }
                self.plan.requeue_after = Some(remaining(self.now, due));
            }
            HookResult::Failed { reason } => self.hook_call_failed(hook, &reason),
        }
    }

    /// A call of the stage's hook failed (`reason`): the failure policy decides what follows.
    fn hook_call_failed(&mut self, hook: Hook, reason: &str) {
        let code = if hook == Hook::PreScale {
            "PreScaleFailed"
        } else {
            "PostScaleFailed"
        };
        let reason = bounded(reason, MAX_PLUGIN_TEXT);
        self.hook_failed(hook, code, format!("{hook} failed: {reason}"));
    }

    /// Whether the target already runs the operation's `to` in its spec (so the /scale write
    /// of this operation happened, or someone else made it).
    fn target_already_written(&self, op: &Operation) -> bool {
        op.from != op.to
            && self
                .obs
                .target
                .found()
                .is_some_and(|t| t.spec_replicas == op.to)
    }

    /// Phase 1 of a hook stage: fail on the stage deadline, wait until the call is due, or ask
    /// for the hook of the operation's plugin (`digest`, as its status records it).
    fn ask_or_time_out(
        &mut self,
        hook: Hook,
        op: &Operation,
        digest: &str,
        deadline: jiff::Timestamp,
        timeout: Duration,
    ) {
        let stage = self.st.stage;
        // A call needs at least MIN_HOOK_CALL of the stage left: a shorter one could only
        // fail on its own deadline, reported as the hook's failure instead of the stage's.
        if remaining(self.now, deadline) < MIN_HOOK_CALL {
            let message = format!(
                "{hook} did not finish within the {} deadline of {stage}",
                hoist_api::Duration::from(timeout)
            );
            self.hook_failed(hook, "StageTimeout", message);
            return;
        }
        if let Some(due) = &op.next_hook_call_at
            && self.now < due.0
        {
            // Called too early (a watch event, our own status write): not before it is due.
            self.plan.requeue_after = Some(remaining(self.now, due.0));
            return;
        }
        let digest = match operation_digest(digest) {
            Ok(digest) => digest,
            // No plugin has this digest: the call fails as a call of a plugin not loaded does.
            Err(reason) => {
                self.hook_call_failed(hook, &format!("PluginNotLoaded: {reason}"));
                return;
            }
        };
        let call_timeout = self.call_timeout().min(remaining(self.now, deadline));
        let operation = self.hook_operation(op, op.hook_calls.saturating_add(1));
        self.request(HookCall {
            hook,
            plugin_digest: digest,
            timeout: call_timeout,
            operation: Some(operation),
            failure: None,
        });
    }

    /// The stage's hook is done (or skipped): move on.
    fn pass_hook_stage(&mut self, hook: Hook, message: Option<String>) {
        if let Some(op) = &mut self.st.operation {
            op.hook_state = None;
            op.hook_message = message.map(|m| bounded(&m, MAX_PLUGIN_TEXT));
        }
        if hook == Hook::PreScale {
            self.enter_scaling();
        } else {
            self.finish_operation();
        }
    }

    /// A new stage of the operation in flight starts now: its hook has not been called yet.
    fn start_stage(&mut self, stage: Stage) {
        let now = self.now_micro.clone();
        if let Some(op) = &mut self.st.operation {
            op.stage_started_at = now;
            op.hook_state = None;
            op.hook_calls = 0;
            op.next_hook_call_at = None;
        }
        self.st.stage = stage;
    }

    /// Record Scaling (the intent) and write the frozen `to` (the effect; the operator writes
    /// the status first).
    fn enter_scaling(&mut self) {
        let Some(to) = self.st.operation.as_ref().map(|op| op.to) else {
            return;
        };
        self.start_stage(Stage::Scaling);
        self.st.last_scale_time = Some(self.now_time.clone());
        self.write_target(to);
        let hooked = self
            .st
            .operation
            .as_ref()
            .is_some_and(|op| op.plugin_digest.is_some());
        if hooked {
            self.event(
                EventKind::Normal,
                "Scaling",
                format!("writing {to} replicas to {}", self.spec.target_ref),
            );
        }
        self.plan.requeue_after = Some(SCALING_POLL.min(self.stage_timeout(Stage::Scaling)));
    }

    /// Write `to` to the target, recorded in the status first (the counter changes, so the
    /// status write that carries the resourceVersion guard always happens before it).
    fn write_target(&mut self, to: i32) {
        if let Some(op) = &mut self.st.operation {
            op.target_writes = op.target_writes.saturating_add(1);
        }
        self.plan.scale_target = Some(to);
    }

    pub(super) fn scaling(&mut self) {
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
                    let runs = format!("{} runs {} ready replicas", self.spec.target_ref, op.to);
                    if op.plugin_digest.is_some() {
                        self.event(EventKind::Normal, "Scaled", runs);
                        self.start_stage(Stage::PostScaling);
                        self.plan.requeue_after = Some(Duration::ZERO);
                    } else {
                        // Without hooks, the end of the operation says it (one event, not two).
                        self.finish_operation_saying(Some(&runs));
                    }
                    return;
                }
                if t.spec_replicas != op.to && self.now < deadline {
                    // Lost write (a restart between the status write and the /scale write) or
                    // someone else wrote the target: the operation's `to` stands.
                    self.write_target(op.to);
                }
                format!(
                    "spec {}, status {}, ready {ready}, generation observed: {}",
                    t.spec_replicas, t.status_replicas, t.observed_generation_current
                )
            }
            TargetObservation::Missing { reason } | TargetObservation::Unavailable { reason } => {
                format!("target unavailable: {reason}")
            }
        };
        if self.now >= deadline {
            let limit = hoist_api::Duration::from(self.stage_timeout(Stage::Scaling));
            self.plan.scale_target = None;
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
        self.finish_operation_saying(None);
    }

    /// [`Self::finish_operation`], its event adding `detail`.
    fn finish_operation_saying(&mut self, detail: Option<&str>) {
        if let Some(op) = self.st.operation.clone() {
            let message = match detail {
                Some(detail) => format!("scaled {} → {}: {detail}", op.from, op.to),
                None => format!("scaled {} → {}", op.from, op.to),
            };
            self.event(EventKind::Normal, "OperationSucceeded", message);
            self.release_leaving_of(&op);
        }
        self.st.pending_replicas = None;
        self.plan.requeue_after = None;
        self.idle(1, None);
    }

    /// A scale-down with a plugin may have marked pods as leaving: the operator removes the
    /// marks once the operation has ended.
    fn release_leaving_of(&mut self, op: &Operation) {
        if op.plugin_digest.is_some() && op.to < op.from {
            self.plan.release_leaving = Some(op.id.clone());
        }
    }

    /// `on-failure` of a Failed operation: request it, or record what it returned. Returns
    /// whether it is settled (called, skipped, or recorded in this plan).
    fn settle_on_failure(&mut self) -> bool {
        let Some(mut failure) = self.st.failure.clone() else {
            return true;
        };
        if failure.on_failure != OnFailure::Pending {
            return true;
        }
        let op = self.st.operation.clone();
        let Some(digest) = op.as_ref().and_then(|op| op.plugin_digest.clone()) else {
            failure.on_failure = OnFailure::Skipped;
            self.st.failure = Some(failure);
            return true;
        };
        let result = match (self.hook_result.take(), operation_digest(&digest)) {
            (Some(result), _) => result,
            (None, Ok(digest)) => {
                let operation = op.as_ref().map(|op| self.hook_operation(op, 1));
                self.request(HookCall {
                    hook: Hook::OnFailure,
                    plugin_digest: digest,
                    timeout: self.call_timeout(),
                    operation,
                    failure: Some(HookFailure {
                        stage: failure.stage,
                        reason: failure.reason.clone(),
                        message: failure.message.clone(),
                    }),
                });
                return false;
            }
            // No plugin has this digest: the call fails as a call of a plugin not loaded does.
            (None, Err(reason)) => HookResult::Failed {
                reason: format!("PluginNotLoaded: {reason}"),
            },
        };
        match result {
            HookResult::Done { message } | HookResult::InProgress { message, .. } => {
                failure.on_failure = OnFailure::Done;
                failure.on_failure_message = message.map(|m| bounded(&m, MAX_PLUGIN_TEXT));
                self.event(
                    EventKind::Normal,
                    "OnFailureDone",
                    "on-failure hook finished".to_owned(),
                );
            }
            HookResult::Failed { reason } => {
                let reason = bounded(&reason, MAX_PLUGIN_TEXT);
                self.event(
                    EventKind::Warning,
                    "OnFailureFailed",
                    format!("on-failure hook failed: {reason}"),
                );
                failure.on_failure = OnFailure::Failed;
                failure.on_failure_message = Some(reason);
            }
        }
        self.st.failure = Some(failure);
        if let Some(op) = &op {
            self.release_leaving_of(op);
        }
        true
    }

    pub(super) fn failed(&mut self, retry_requested: bool) {
        let Some(failure) = self.st.failure.clone() else {
            self.repair("Failed without a recorded failure");
            return;
        };
        if !self.settle_on_failure() {
            return;
        }
        let attempt = self.st.operation.as_ref().map_or(1, |op| op.attempt);
        let retry = self.st.operation.as_ref().map(|op| Retry {
            id: op.id.clone(),
            from: op.from,
            to: op.to,
            target: op.target.clone(),
            target_written: matches!(failure.stage, Stage::Scaling | Stage::PostScaling),
        });
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
            self.retry(attempt + 1, retry.as_ref());
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
                self.retry(attempt + 1, retry.as_ref());
            } else {
                self.plan.requeue_after = Some(remaining(self.now, at));
            }
        }
    }

    /// Another attempt. An operation whose target was already written resumes at Scaling (so
    /// its post-scale runs), as long as it is still the same workload; any other starts again
    /// from Idle.
    fn retry(&mut self, attempt: u32, retry: Option<&Retry>) {
        self.st.pending_replicas = None;
        self.plan.requeue_after = None;
        if let Some(r) = retry
            && r.target_written
            && r.target.as_ref() == Some(&self.operation_target())
            && let Some(op) = &mut self.st.operation
        {
            op.attempt = attempt;
            self.st.failure = None;
            self.event(
                EventKind::Normal,
                "OperationResumed",
                format!(
                    "resuming {} → {} at Scaling (attempt {attempt}); its target was written",
                    r.from, r.to
                ),
            );
            self.enter_scaling();
            return;
        }
        self.idle(attempt, retry);
    }

    /// The Scaler is being deleted while hoist holds its finalizer: undo the operation in flight
    /// (fail it, call `on-failure`, release its marks); the finalizer goes once nothing is left
    /// to undo ([`Machine::finalizer_change`]).
    pub(super) fn being_deleted(&mut self) {
        match self.st.stage {
            stage if stage.in_flight() => {
                let message = "the Scaler is being deleted during the operation; undoing it before the finalizer is removed".to_owned();
                self.plan.scale_target = None;
                self.fail(stage, "ScalerDeleted", message);
            }
            Stage::Failed => {
                self.settle_on_failure();
            }
            _ => {}
        }
    }

    /// While an operation is in flight, the target must still be the workload it started on.
    /// If it is not, the operation fails (and nothing is written to any target). Returns
    /// whether it failed.
    pub(super) fn target_left(&mut self) -> bool {
        let stage = self.st.stage;
        let Some(recorded) = self.st.operation.as_ref().map(|op| op.target.clone()) else {
            return false;
        };
        let Some(recorded) = recorded else {
            // A status from before hoist recorded the target: adopt the current one.
            let target = self.operation_target();
            if let Some(op) = self.st.operation.as_mut() {
                op.target = Some(target);
            }
            return false;
        };
        let found = self.obs.target.found();
        let (reason, message) = if !recorded.is(&self.spec.target_ref) {
            (
                "TargetChanged",
                format!(
                    "spec.targetRef changed to {} during the operation, which was started for {}; nothing is written to either",
                    self.spec.target_ref, recorded
                ),
            )
        } else if let TargetObservation::Missing { reason } = &self.obs.target {
            (
                "TargetGone",
                format!("{recorded} is gone ({reason}); the operation cannot continue"),
            )
        } else if let (Some(t), Some(uid)) = (found, &recorded.uid)
            && t.uid.as_ref().is_some_and(|now| now != uid)
        {
            (
                "TargetReplaced",
                format!(
                    "{} was deleted and created again (uid {} now, {uid} when the operation started); the new workload is left alone",
                    recorded.target_ref(),
                    t.uid.as_deref().unwrap_or_default()
                ),
            )
        } else {
            return false;
        };
        self.plan.scale_target = None;
        self.fail(stage, reason, message);
        true
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
                format!("{message}; failurePolicy FailOpen: continuing without {hook}"),
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
        if let Some(op) = &mut self.st.operation {
            op.hook_calls = 0;
            op.next_hook_call_at = None;
        }
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
}

/// `d` rounded up to whole seconds.
fn ceil_secs(d: Duration) -> Duration {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    Duration::from_secs(secs)
}
