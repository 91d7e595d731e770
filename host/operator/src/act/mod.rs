//! Act: the only code that writes to the cluster for a Scaler, in the order the protocol
//! needs (see [`hoist_decide::Plan`]):
//!
//! 1. hoist's finalizer, when the plan adds it (before anything the operation causes);
//! 2. the status (server-side apply as `hoist`, guarded by the resourceVersion of the copy
//!    the plan was decided on, so a plan decided on a stale copy writes nothing at all);
//! 3. the target's `/scale`, which only a plan whose status records Scaling asks for;
//! 4. the Scaler's own `spec.replicas` when it is absent (the workload's count, guarded by
//!    the resourceVersion), so that HPAs and KEDA can read the Scaler's `/scale`;
//! 5. the leaving marks of an ended operation's pods (best effort);
//! 6. the retry annotation's removal, then the finalizer's removal;
//! 7. events (best effort).
//!
//! One more write happens inside a reconcile, before a hook call rather than after the
//! decision: [`Actor::mark_leaving`], the marks of the Deployment/ReplicaSet pods a pre-scale
//! call is about to drain. They must be on the pods before the call (a re-run of the call
//! chooses the marked pods again, so a drained pod is never swapped for one that stays), and
//! the hook step asks act for them.
//!
//! Each write first checks the [`Fence`], and each write to the Scaler records the object the
//! API server returned ([`LatestScalers`]), so the next reconcile continues from it even if the
//! watch has not delivered it yet. The autoscaling modes' writes ([`owned`]: the HPA or
//! ScaledObject hoist owns for a Scaler, the builtin autoscaler's desired count) are act's
//! too; the mode step asks for them before decide runs, since their outcome is part of the
//! status decide writes.

pub mod owned;

use std::sync::Arc;

use hoist_api::{FIELD_MANAGER, FINALIZER, FINALIZER_MANAGER, RETRY_ANNOTATION, Scaler, Stage};
use hoist_decide::{EventKind, FinalizerChange, Plan, bounded};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::error::OperatorError;
use crate::events::Publisher;
use crate::fault;
use crate::fence::Fence;
use crate::latest::LatestScalers;
use crate::metrics::{Metrics, StageLabels, TransitionLabels};
use crate::target::Targets;

/// Longest note of an Event hoist publishes (the API server allows 1 KiB).
const EVENT_NOTE_MAX: usize = 1000;

/// Field manager of the `spec.replicas` hoist writes once, when it is absent.
const SEED_FIELD_MANAGER: &str = "hoist-adoption";

/// What act needs.
#[derive(Clone)]
pub struct Actor {
    pub client: kube::Client,
    pub targets: Targets,
    pub recorder: Publisher,
    pub metrics: Arc<Metrics>,
    pub fence: Fence,
    pub latest: Arc<LatestScalers>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").finish_non_exhaustive()
    }
}

impl Actor {
    /// Applies `plan`, decided on `scaler`.
    pub async fn act(&self, scaler: &Scaler, plan: &Plan) -> Result<(), OperatorError> {
        let namespace = scaler.namespace().unwrap_or_default();
        let name = scaler.name_any();
        let who = format!("{namespace}/{name}");
        let api: Api<Scaler> = Api::namespaced(self.client.clone(), &namespace);
        let mut current = scaler.clone();

        if plan.finalizer == Some(FinalizerChange::Add) {
            self.fence.check(scaler, "adding the finalizer")?;
            current = self.set_finalizer(&api, &current, true).await?;
        }

        if let Some(status) = &plan.status {
            self.fence.check(scaler, "writing the status")?;
            current = self.write_status(&api, &current, status).await?;
        }

        if let Some(replicas) = plan.scale_target {
            fault::abort_point(fault::AFTER_STATUS_BEFORE_SCALE);
            self.fence.check(scaler, "writing the target's /scale")?;
            // The operation's own target: decide only asks while it is still the spec's.
            let target = current
                .status
                .as_ref()
                .and_then(|s| s.operation.as_ref())
                .and_then(|op| op.target.as_ref())
                .map_or_else(
                    || scaler.spec.target_ref.clone(),
                    hoist_api::OperationTarget::target_ref,
                );
            self.targets
                .write_replicas(&namespace, &target, replicas)
                .await?;
            self.metrics.scale_writes.inc();
            tracing::info!(scaler = %who, target = %target.short(), replicas, "wrote target replicas");
        }

        if let Some(replicas) = plan.seed_replicas {
            self.fence.check(scaler, "seeding spec.replicas")?;
            current = self.seed_replicas(&api, &current, replicas).await?;
        }

        if let Some(operation) = &plan.release_leaving {
            self.release_leaving(&current, operation).await?;
        }

        if plan.remove_retry_annotation {
            self.fence.check(scaler, "removing the retry annotation")?;
            let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: null}}});
            let after = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| OperatorError::PatchScaler {
                    scaler: who.clone(),
                    source,
                })?;
            self.latest.wrote(&current, after.clone());
            current = after;
        }

        if plan.finalizer == Some(FinalizerChange::Remove) {
            self.fence.check(scaler, "removing the finalizer")?;
            self.set_finalizer(&api, &current, false).await?;
        }

        self.publish(scaler, plan).await;
        Ok(())
    }

    /// Server-side applies the status, guarded by `current`'s resourceVersion. On a conflict,
    /// reads the API server's version so the next reconcile continues from it.
    async fn write_status(
        &self,
        api: &Api<Scaler>,
        current: &Scaler,
        status: &hoist_api::ScalerStatus,
    ) -> Result<Scaler, OperatorError> {
        let name = current.name_any();
        let who = format!("{}/{name}", current.namespace().unwrap_or_default());
        let patch = json!({
            "apiVersion": Scaler::api_version(&()),
            "kind": Scaler::kind(&()),
            "metadata": {"name": name, "resourceVersion": current.resource_version()},
            "status": status,
        });
        let written = api
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await;
        let after = match written {
            Ok(after) => after,
            Err(source) => {
                if matches!(&source, kube::Error::Api(s) if s.code == 409) {
                    let fresh = api.get_opt(&name).await.ok().flatten();
                    self.latest.conflicted(current, fresh);
                }
                return Err(OperatorError::WriteStatus {
                    scaler: who,
                    source,
                });
            }
        };
        self.latest.wrote(current, after.clone());
        self.count_transition(current, status);
        Ok(after)
    }

    /// Writes the workload's count to the Scaler's absent `spec.replicas` (a merge patch
    /// guarded by `current`'s resourceVersion: if anyone wrote the Scaler since, the write
    /// conflicts and the next reconcile decides again from what they wrote).
    async fn seed_replicas(
        &self,
        api: &Api<Scaler>,
        current: &Scaler,
        replicas: i32,
    ) -> Result<Scaler, OperatorError> {
        let name = current.name_any();
        let patch = json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {"replicas": replicas},
        });
        let params = PatchParams {
            field_manager: Some(SEED_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let after = api
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|source| OperatorError::SeedReplicas {
                scaler: format!("{}/{name}", current.namespace().unwrap_or_default()),
                source,
            })?;
        tracing::info!(scaler = %name, namespace = %current.namespace().unwrap_or_default(), replicas, "seeded spec.replicas with the workload's count");
        self.latest.wrote(current, after.clone());
        Ok(after)
    }

    fn count_transition(&self, before: &Scaler, status: &hoist_api::ScalerStatus) {
        let old = before.status.as_ref().map(|s| s.stage).unwrap_or_default();
        if old == status.stage {
            return;
        }
        tracing::info!(scaler = %before.name_any(), namespace = %before.namespace().unwrap_or_default(), from = %old, to = %status.stage, "stage");
        self.metrics
            .stage_transitions
            .get_or_create(&TransitionLabels {
                from: old.to_string(),
                to: status.stage.to_string(),
            })
            .inc();
        if status.stage == Stage::Failed {
            let stage = status.failure.as_ref().map_or(old, |f| f.stage);
            self.metrics
                .failures
                .get_or_create(&StageLabels {
                    stage: stage.to_string(),
                })
                .inc();
        }
    }

    /// Adds or removes hoist's finalizer: a server-side apply of `metadata.finalizers` alone,
    /// under its own field manager, so other finalizers are never touched.
    async fn set_finalizer(
        &self,
        api: &Api<Scaler>,
        current: &Scaler,
        held: bool,
    ) -> Result<Scaler, OperatorError> {
        let name = current.name_any();
        let finalizers: Vec<&str> = if held { vec![FINALIZER] } else { Vec::new() };
        let patch = json!({
            "apiVersion": Scaler::api_version(&()),
            "kind": Scaler::kind(&()),
            "metadata": {"name": name, "finalizers": finalizers},
        });
        let after = api
            .patch(
                &name,
                &PatchParams::apply(FINALIZER_MANAGER),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| OperatorError::PatchFinalizer {
                scaler: format!("{}/{name}", current.namespace().unwrap_or_default()),
                source,
            })?;
        tracing::debug!(scaler = %name, held, "finalizer");
        self.latest.wrote(current, after.clone());
        Ok(after)
    }

    /// Marks the pods a pre-scale call of `operation` is about to drain (lowest deletion cost,
    /// and the operation's id), before the call.
    pub async fn mark_leaving(
        &self,
        scaler: &Scaler,
        pods: &[String],
        operation: &str,
    ) -> Result<(), OperatorError> {
        if pods.is_empty() {
            return Ok(());
        }
        self.fence.check(scaler, "marking pods")?;
        let namespace = scaler.namespace().unwrap_or_default();
        self.targets
            .mark_leaving(&namespace, pods, operation)
            .await?;
        tracing::info!(scaler = %scaler.name_any(), operation, ?pods, "marked the leaving pods");
        Ok(())
    }

    /// Removes an ended operation's pod marks (Deployments and ReplicaSets mark pods). Best
    /// effort: the status has moved on, so a failure is logged and published, not retried.
    async fn release_leaving(&self, scaler: &Scaler, operation: &str) -> Result<(), OperatorError> {
        let target = &scaler.spec.target_ref;
        if !target.honours_deletion_cost() {
            return Ok(());
        }
        let Some(selector) = scaler.status.as_ref().and_then(|s| s.selector.clone()) else {
            return Ok(());
        };
        self.fence.check(scaler, "removing pod marks")?;
        let namespace = scaler.namespace().unwrap_or_default();
        match self
            .targets
            .release_leaving(&namespace, &selector, operation)
            .await
        {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(scaler = %scaler.name_any(), operation, pods = n, "removed the leaving marks of pods that stay");
            }
            Err(e) => {
                tracing::warn!(scaler = %scaler.name_any(), operation, error = %e, "removing leaving marks failed");
                let ev = Event {
                    type_: EventType::Warning,
                    reason: "ReleaseMarksFailed".into(),
                    note: Some(bounded(&e.to_string(), EVENT_NOTE_MAX)),
                    action: "Scale".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&ev, &scaler.object_ref(&())).await {
                    tracing::warn!(error = %e, "publishing an event failed");
                }
            }
        }
        Ok(())
    }

    /// Events are best effort: a failure to publish one never fails the reconcile.
    async fn publish(&self, scaler: &Scaler, plan: &Plan) {
        let reference = scaler.object_ref(&());
        for event in &plan.events {
            let ev = Event {
                type_: match event.kind {
                    EventKind::Normal => EventType::Normal,
                    EventKind::Warning => EventType::Warning,
                },
                reason: event.reason.clone(),
                note: Some(bounded(&event.message, EVENT_NOTE_MAX)),
                action: "Scale".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                tracing::warn!(scaler = %scaler.name_any(), reason = %event.reason, error = %e, "publishing an event failed");
            }
        }
    }
}
