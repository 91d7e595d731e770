//! `hpa` mode: the HorizontalPodAutoscaler hoist owns (built by `hoist_decide::modes::hpa`),
//! applied through act, and deleted through act when the mode changes.

use hoist_api::Scaler;
use hoist_api::autoscaling::HpaAutoscaling;
use hoist_decide::modes;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, ResourceExt};

use crate::act::Actor;
use crate::error::OperatorError;

/// Applies the owned HPA (through act); returns its name.
pub async fn apply(
    actor: &Actor,
    scaler: &Scaler,
    hpa: &HpaAutoscaling,
) -> Result<String, OperatorError> {
    let object = modes::hpa::horizontal_pod_autoscaler(scaler, hpa).map_err(|e| {
        OperatorError::BuildOwned {
            scaler: super::who(scaler),
            reason: e.to_string(),
        }
    })?;
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(
        actor.client.clone(),
        &scaler.namespace().unwrap_or_default(),
    );
    actor
        .apply_owned(&api, "HorizontalPodAutoscaler", scaler, &object)
        .await
}

/// Deletes every HPA hoist owns for `scaler` (found by label and owner uid, whatever its name).
pub async fn delete_owned(actor: &Actor, scaler: &Scaler) -> Result<usize, OperatorError> {
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(
        actor.client.clone(),
        &scaler.namespace().unwrap_or_default(),
    );
    actor
        .delete_owned(&api, "HorizontalPodAutoscaler", scaler)
        .await
}
