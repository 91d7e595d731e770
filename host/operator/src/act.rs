//! Act: the only code that writes to the cluster for a Scaler, in the order the state
//! machine's protocol requires: target /scale, then status (server-side apply as `hoist`,
//! guarded by the observed resourceVersion), then the retry annotation, then events.

use std::sync::Arc;

use hoist_api::{FIELD_MANAGER, RETRY_ANNOTATION, Scaler, Stage};
use hoist_decide::{EventKind, Plan};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::error::OperatorError;
use crate::events::Publisher;
use crate::metrics::{Metrics, StageLabels, TransitionLabels};
use crate::target::{TargetRef, Targets};

/// What act needs.
#[derive(Clone)]
pub struct Actor {
    pub client: kube::Client,
    pub targets: Targets,
    pub recorder: Publisher,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor").finish_non_exhaustive()
    }
}

impl Actor {
    pub async fn act(&self, scaler: &Scaler, plan: &Plan) -> Result<(), OperatorError> {
        let namespace = scaler.namespace().unwrap_or_default();
        let name = scaler.name_any();
        let who = format!("{namespace}/{name}");
        let api: Api<Scaler> = Api::namespaced(self.client.clone(), &namespace);

        if let Some(replicas) = plan.scale_target {
            let target = TargetRef::from(&scaler.spec.target_ref);
            self.targets
                .write_replicas(&namespace, &target, replicas)
                .await?;
            self.metrics.scale_writes.inc();
            tracing::info!(scaler = %who, target = %target.display(), replicas, "wrote target replicas");
        }

        if let Some(status) = &plan.status {
            let patch = json!({
                "apiVersion": Scaler::api_version(&()),
                "kind": Scaler::kind(&()),
                "metadata": {"name": name, "resourceVersion": scaler.resource_version()},
                "status": status,
            });
            api.patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| OperatorError::WriteStatus {
                scaler: who.clone(),
                source,
            })?;
            let old = scaler.status.as_ref().map(|s| s.stage).unwrap_or_default();
            if old != status.stage {
                tracing::info!(scaler = %who, from = %old, to = %status.stage, "stage");
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
        }

        if plan.remove_retry_annotation {
            let patch = json!({"metadata": {"annotations": {RETRY_ANNOTATION: null}}});
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| OperatorError::PatchScaler {
                    scaler: who.clone(),
                    source,
                })?;
        }

        let reference = scaler.object_ref(&());
        for event in &plan.events {
            let ev = Event {
                type_: match event.kind {
                    EventKind::Normal => EventType::Normal,
                    EventKind::Warning => EventType::Warning,
                },
                reason: event.reason.clone(),
                note: Some(truncate(&event.message, 1000)),
                action: "Scale".into(),
                secondary: None,
            };
            // Events are best effort: a failure to publish one never fails the reconcile.
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                tracing::warn!(scaler = %who, reason = %event.reason, error = %e, "publishing an event failed");
            }
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
