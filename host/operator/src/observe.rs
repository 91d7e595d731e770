//! Observe: read everything the state machine depends on for one Scaler.

use hoist_api::Scaler;
use hoist_decide::{Observation, PluginAvailability, TargetObservation};
use kube::ResourceExt;

use crate::plugins::PluginRegistry;
use crate::policy::{Admission, Policies};
use crate::target::Targets;

/// Reads the target's /scale, readiness and uid, and the plugin's availability (a loaded plugin
/// the cluster policies do not admit is `NotAdmitted`). Never fails: a target that cannot be
/// read is an observation too (`Missing` or `Unavailable`). Rival Scalers come from the
/// controller's store ([`crate::controller`]).
pub async fn observe(
    scaler: &Scaler,
    targets: &Targets,
    plugins: &PluginRegistry,
    policies: &Policies,
) -> Observation {
    let namespace = scaler.namespace().unwrap_or_default();
    let target_ref = &scaler.spec.target_ref;
    let target = match targets.observe(&namespace, target_ref).await {
        Ok(Some(scale)) => TargetObservation::Found(scale),
        Ok(None) => TargetObservation::Missing {
            reason: format!(
                "target {} not found in namespace {namespace}",
                target_ref.short()
            ),
        },
        Err(e) => TargetObservation::Unavailable {
            reason: e.to_string(),
        },
    };
    let plugin = match &scaler.spec.hooks {
        None => PluginAvailability::NotConfigured,
        Some(hooks) => match plugins.availability(&namespace, &hooks.plugin, policies) {
            PluginAvailability::Ready { digest } => match policies.admission(&namespace, &digest) {
                Admission::Admitted { .. } => PluginAvailability::Ready { digest },
                Admission::Refused(reason) => PluginAvailability::NotAdmitted { reason },
                Admission::NotListedYet => PluginAvailability::Loading,
            },
            other => other,
        },
    };
    Observation {
        scaler: scaler.clone(),
        target,
        plugin,
        conflict: None,
        now: jiff::Timestamp::now(),
    }
}

/// The label selector of the target's pods: as observed now, or, when the target cannot be
/// read (it is gone), as the status last recorded it.
pub fn pod_selector(observation: &Observation) -> Option<String> {
    observation
        .target
        .found()
        .and_then(|t| t.selector.clone())
        .or_else(|| {
            observation
                .scaler
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
        })
}
