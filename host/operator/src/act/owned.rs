//! Act's writes for the autoscaling modes: the objects hoist owns for a Scaler (its HPA or
//! ScaledObject: server-side applied, deleted when the mode changes) and the builtin
//! autoscaler's desired count (the Scaler's `/scale`). Each is fenced like every other write.

use hoist_api::Scaler;
use hoist_decide::modes::{OWNED_FIELD_MANAGER, owned_by, owned_selector};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};

use super::Actor;
use crate::error::OperatorError;

/// The field manager of the builtin autoscaler's writes to a Scaler's `/scale`.
pub const SCALE_FIELD_MANAGER: &str = "hoist-autoscaler";

/// `namespace/name` of a Scaler, for messages.
fn who(scaler: &Scaler) -> String {
    format!(
        "{}/{}",
        scaler.namespace().unwrap_or_default(),
        scaler.name_any()
    )
}

impl Actor {
    /// Server-side applies `object`, which hoist owns for `scaler`; returns its name. Refuses
    /// to take over an object of that name hoist does not own (a user's own HPA or
    /// ScaledObject): applying would seize it, and a later mode change would delete it.
    pub async fn apply_owned<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        scaler: &Scaler,
        object: &K,
    ) -> Result<String, OperatorError>
    where
        K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let name = object.name_any();
        let apply_failed = |source| OperatorError::ApplyOwned {
            kind,
            scaler: who(scaler),
            source,
        };
        let existing = api.get_opt(&name).await.map_err(apply_failed)?;
        let uid = scaler.uid().unwrap_or_default();
        if let Some(o) = existing
            && !owned_by(o.meta().owner_references.as_deref(), &uid)
        {
            return Err(OperatorError::OwnedByOther {
                kind,
                name,
                scaler: who(scaler),
            });
        }
        self.fence.check(scaler, "applying an owned object")?;
        api.patch(
            &name,
            &PatchParams::apply(OWNED_FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(apply_failed)?;
        Ok(name)
    }

    /// Deletes every object in `api` that hoist owns for `scaler`: found by the owned label
    /// and the Scaler's uid in its owner references, whatever its name (a lost name never
    /// leaves one behind). Returns how many were deleted; one already gone counts as deleted
    /// by someone else.
    pub async fn delete_owned<K>(
        &self,
        api: &Api<K>,
        kind: &'static str,
        scaler: &Scaler,
    ) -> Result<usize, OperatorError>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let uid = scaler.uid().unwrap_or_default();
        let delete_failed = |source| OperatorError::DeleteOwned {
            kind,
            scaler: who(scaler),
            source,
        };
        let list = api
            .list(&ListParams::default().labels(&owned_selector(&scaler.name_any())))
            .await
            .map_err(delete_failed)?;
        let mut deleted = 0;
        for obj in list
            .items
            .iter()
            .filter(|o| owned_by(o.meta().owner_references.as_deref(), &uid))
        {
            self.fence.check(scaler, "deleting an owned object")?;
            match api.delete(&obj.name_any(), &DeleteParams::default()).await {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(delete_failed(e)),
            }
        }
        Ok(deleted)
    }

    /// The builtin autoscaler's decision: writes the Scaler's `spec.replicas` through its
    /// `/scale` (as an HPA would). False (logged) when it was not written.
    pub async fn write_desired(&self, scaler: &Scaler, replicas: i32) -> bool {
        if let Err(e) = self.fence.check(scaler, "writing the desired count") {
            tracing::warn!(scaler = %who(scaler), error = %e, "builtin autoscaler did not write");
            return false;
        }
        let api: Api<Scaler> =
            Api::namespaced(self.client.clone(), &scaler.namespace().unwrap_or_default());
        let patch = serde_json::json!({"spec": {"replicas": replicas}});
        let params = PatchParams {
            field_manager: Some(SCALE_FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch_scale(&scaler.name_any(), &params, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(scaler = %who(scaler), replicas, "builtin autoscaler wrote spec.replicas");
                true
            }
            Err(e) => {
                tracing::warn!(scaler = %who(scaler), replicas, error = %e, "builtin autoscaler could not write /scale");
                false
            }
        }
    }
}
