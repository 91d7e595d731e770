//! `hpa` mode: server-side apply the HorizontalPodAutoscaler hoist owns (built by
//! `hoist_decide::modes::hpa`), and delete it when the mode changes.

use hoist_api::Scaler;
use hoist_api::autoscaling::HpaAutoscaling;
use hoist_decide::modes::{self, OWNED_FIELD_MANAGER};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::error::OperatorError;

/// Applies the owned HPA; returns its name.
pub async fn apply(
    client: &Client,
    scaler: &Scaler,
    hpa: &HpaAutoscaling,
) -> Result<String, OperatorError> {
    let who = super::who(scaler);
    let object = modes::hpa::horizontal_pod_autoscaler(scaler, hpa).map_err(|e| {
        OperatorError::BuildOwned {
            scaler: who.clone(),
            reason: e.to_string(),
        }
    })?;
    let name = object.name_any();
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &scaler.namespace().unwrap_or_default());
    super::refuse_foreign(&api, "HorizontalPodAutoscaler", &name, scaler).await?;
    api.patch(
        &name,
        &PatchParams::apply(OWNED_FIELD_MANAGER).force(),
        &Patch::Apply(&object),
    )
    .await
    .map_err(|source| OperatorError::ApplyOwned {
        kind: "HorizontalPodAutoscaler",
        scaler: who,
        source,
    })?;
    Ok(name)
}

/// Deletes every HPA hoist owns for `scaler` (found by label and owner uid, whatever its name).
pub async fn delete_owned(client: &Client, scaler: &Scaler) -> Result<usize, OperatorError> {
    let api: Api<HorizontalPodAutoscaler> =
        Api::namespaced(client.clone(), &scaler.namespace().unwrap_or_default());
    super::delete_owned(&api, "HorizontalPodAutoscaler", scaler).await
}
