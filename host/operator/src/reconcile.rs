//! One reconcile of one Scaler, as named steps: snapshot → autoscaling mode → decide (pure) →
//! the hook the decision asks for → decide again with its result → act.
//!
//! Snapshot and autoscaling mode do not fail: what they cannot read becomes part of the
//! observation (`Unavailable`) or a condition, and decide answers it. Two steps can fail, each
//! with its own [`ReconcileError`] variant: the hook step, when the API server or the lease
//! stops it before the call (listing or marking the pods), and act, when one of its writes
//! fails (the writes before it stand, none after it is made). Either is retried; the metrics
//! label comes from the error ([`ReconcileError::result_label`]), and every exit path is timed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hoist_api::Scaler;
use hoist_decide::{Decision, decide, decide_after};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;

use crate::act::Actor;
use crate::autoscaling::Autoscalers;
use crate::error::OperatorError;
use crate::fault;
use crate::hook_call::HookEnv;
use crate::http_server::Progress;
use crate::latest::LatestScalers;
use crate::metrics::{Metrics, ResultLabels};
use crate::observe::{observe, pod_selector};
use crate::rivals::target_conflict;
use crate::target_index::{TargetIndexes, TargetKey};

/// Why a reconcile stopped before its end, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The hook step could not make its call: reading the operation's pods or target, marking
    /// the leaving pods, or the lease, failed first. The hook was not called.
    #[error("Scaler {scaler}: before calling {hook}: {source}")]
    CallHook {
        scaler: String,
        hook: &'static str,
        #[source]
        source: OperatorError,
    },
    /// One of act's writes failed.
    #[error("Scaler {scaler}: {source}")]
    Act {
        scaler: String,
        #[source]
        source: OperatorError,
    },
}

impl ReconcileError {
    fn source_error(&self) -> &OperatorError {
        match self {
            Self::CallHook { source, .. } | Self::Act { source, .. } => source,
        }
    }

    /// The status write (or the seeding of `spec.replicas`) was refused because the Scaler
    /// changed underneath (409).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Act {
                source: OperatorError::WriteStatus { source: kube::Error::Api(s), .. }
                    | OperatorError::SeedReplicas { source: kube::Error::Api(s), .. },
                ..
            } if s.code == 409
        )
    }

    /// This replica lost the lease (the leader's, or the Scaler's shard's): nothing more may
    /// be written.
    pub fn is_not_leader(&self) -> bool {
        matches!(
            self.source_error(),
            OperatorError::NotLeader { .. } | OperatorError::NotShardOwner { .. }
        )
    }

    /// The `result` label of `hoist_reconciles_total` for a reconcile that failed with this.
    pub fn result_label(&self) -> &'static str {
        if self.is_conflict() {
            "conflict"
        } else if self.is_not_leader() {
            "not_leader"
        } else {
            match self {
                Self::CallHook { .. } => "hook_error",
                Self::Act { .. } => "act_error",
            }
        }
    }
}

/// Shared state of every reconcile.
#[derive(Debug)]
pub struct Context {
    pub hooks: HookEnv,
    pub actor: Actor,
    pub metrics: Arc<Metrics>,
    /// The autoscaling modes (owned HPA/ScaledObject, builtin autoscaler).
    pub autoscalers: Autoscalers,
    /// hoist's own Scaler writes the watch may not have delivered yet; conflict counts.
    pub latest: Arc<LatestScalers>,
    /// When a reconcile last finished (for `/healthz`).
    pub progress: Arc<Progress>,
    /// Every Scaler, as the controller's watch has them (set when the controller starts).
    pub scalers: std::sync::OnceLock<Store<Scaler>>,
    /// Every HorizontalPodAutoscaler of the watched namespaces (set when the controller starts).
    pub hpas: std::sync::OnceLock<Store<HorizontalPodAutoscaler>>,
    /// The Scalers and HPAs of those stores by the workload they aim at.
    pub by_target: TargetIndexes,
}

/// One reconcile of one Scaler, timed and counted on every exit path.
pub async fn reconcile(cached: Arc<Scaler>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    // Another replica's shard: nothing to do here, not even reading. The shard's Scalers are
    // reconciled again when this replica takes it. Counted first, so that a shard being handed
    // over is released only after this reconcile (which the fence then stops) has ended.
    let _in_flight = ctx.actor.fence.enter(&cached);
    if !ctx.actor.fence.owns(&cached) {
        ctx.metrics
            .reconciles
            .get_or_create(&ResultLabels {
                result: "other_shard",
            })
            .inc();
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.progress.begin();
    let result = reconcile_steps(cached, &ctx).await;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels {
            result: match &result {
                Ok(_) => "ok",
                Err(e) => e.result_label(),
            },
        })
        .inc();
    ctx.progress.reconciled();
    result
}

/// The steps: snapshot → autoscaling mode → decide → hook → decide → act.
async fn reconcile_steps(cached: Arc<Scaler>, ctx: &Context) -> Result<Action, ReconcileError> {
    // Snapshot: the cached Scaler, or what hoist wrote if the watch has not delivered it yet.
    let scaler = ctx.latest.current(cached);
    let mut observation = observe(
        &scaler,
        &ctx.hooks.targets,
        &ctx.hooks.plugins,
        ctx.hooks.access.policies(),
    )
    .await;
    observation.conflict = TargetKey::of_scaler(&scaler).and_then(|target| {
        target_conflict(
            &ctx.scalers
                .get()
                .map(|s| ctx.by_target.scalers.aiming_at(&target, s))
                .unwrap_or_default(),
            &ctx.hpas
                .get()
                .map(|h| ctx.by_target.hpas.aiming_at(&target, h))
                .unwrap_or_default(),
            &scaler,
        )
    });

    // The autoscaling mode first: it may write spec.replicas (builtin), which the state machine
    // then sees in the next reconcile (the watch brings the new version).
    let mode = ctx
        .autoscalers
        .step(&scaler, &observation, &ctx.hooks.targets, &ctx.actor)
        .await;
    if mode.wrote_replicas {
        return Ok(Action::requeue(
            mode.requeue.unwrap_or(Duration::from_secs(1)),
        ));
    }

    let mut plan = match decide(&observation) {
        Decision::Act(plan) => plan,
        Decision::Call(call) => {
            let selector = pod_selector(&observation);
            let result = ctx
                .hooks
                .run(&scaler, &call, selector.as_deref(), &ctx.actor)
                .await
                .map_err(|source| ReconcileError::CallHook {
                    scaler: who(&scaler),
                    hook: call.hook.as_str(),
                    source,
                })?;
            fault::abort_point(fault::AFTER_HOOK_CALL);
            decide_after(&observation, result)
        }
    };

    // The autoscaling conditions join the status the state machine writes (one writer).
    let updates = hoist_decide::modes::conditions(&mode.report, &scaler.spec);
    hoist_decide::modes::merge_conditions(&mut plan, &scaler, &updates, observation.now);
    ctx.actor
        .act(&scaler, &plan)
        .await
        .map_err(|source| ReconcileError::Act {
            scaler: who(&scaler),
            source,
        })?;
    ctx.latest.settled(&scaler);

    let requeue = match (plan.requeue_after, mode.requeue) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// What happens after a failed reconcile: a status-write conflict retries at once the first
/// time (the API server's version is known now) and backs off while conflicts repeat; a lost
/// lease stops; anything else retries after a short backoff.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's Controller::run requires"
)]
pub fn error_policy(scaler: Arc<Scaler>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    if error.is_conflict() {
        let delay = ctx.latest.conflict_delay(&scaler);
        tracing::debug!(scaler = %scaler.name_any(), ?delay, "status changed underneath; reconciling again");
        return Action::requeue(delay);
    }
    if error.is_not_leader() {
        tracing::warn!(scaler = %scaler.name_any(), error = %error, "stopped: not the leader");
        return Action::await_change();
    }
    match error {
        ReconcileError::CallHook { .. } | ReconcileError::Act { .. } => {
            tracing::warn!(scaler = %scaler.name_any(), error = %error, "reconcile failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// `namespace/name` of a Scaler, for errors.
fn who(scaler: &Scaler) -> String {
    format!(
        "{}/{}",
        scaler.namespace().unwrap_or_default(),
        scaler.name_any()
    )
}
