//! The `Scaler` custom resource (`hoist.dev/v1alpha1`, namespaced), its schema, its conditions,
//! and the annotation and label names hoist uses. No I/O.
//!
//! - [`Scaler`], [`ScalerSpec`], [`ScalerStatus`]: the resource. `/status` and `/scale`
//!   (`.spec.replicas`, `.status.replicas`, `.status.selector`) subresources, so an HPA or a KEDA
//!   ScaledObject can target a Scaler as it targets a Deployment.
//! - Validation in three layers: the OpenAPI schema (types, bounds, enums, patterns), CEL rules
//!   (`x-kubernetes-validations`, enforced by the API server at admission, messages written for
//!   users), and [`ScalerSpec::validate`] (the same rules in Rust, run by the operator; a
//!   violation names the field in the `ValidSpec` condition).
//! - Out-of-bounds `spec.replicas` is deliberately *not* rejected: HPAs and KEDA write /scale,
//!   and a refused write there leaves them retrying forever; hoist clamps instead
//!   ([`ScalerSpec::clamp`]).
//! - [`parse_scaler_json`] / [`parse_scaler_yaml`]: deserialise with errors that name the field
//!   path (`spec.autoscaling.hpa.metrics[0].type: ...`).
//! - [`crd_yaml`]: the CRD exactly as `hoist crds` prints it and `crds/scaler.yaml` holds.
#![forbid(unsafe_code)]
// Doc comments here are also the CRD's field descriptions (`kubectl explain scaler.spec`), where
// backticks around Kubernetes kinds and API names would show up literally.
#![allow(clippy::doc_markdown)]

pub mod autoscaling;
pub mod conditions;
pub mod duration;
pub mod hooks;
pub mod policy;
mod scaler;
mod validate;

pub use autoscaling::{Algorithm, Autoscaling, AutoscalingMode};
pub use duration::Duration;
pub use hooks::{
    Backoff, CaBundleRef, FailurePolicy, HookSecret, HookTls, Hooks, KeyRef, OciPluginRef,
    PluginLocation, PluginRef, RetryPolicy, StageTimeouts,
};
pub use policy::{AdmittedPlugin, EgressGrant, HookPolicy, HookPolicySpec};
pub use scaler::{
    DEFAULT_MIN_REPLICAS, Failure, OnFailure, Operation, OperationTarget, PluginStatus, Scaler,
    ScalerSpec, ScalerStatus, Stage, TargetRef,
};
pub use validate::SpecViolation;

/// The API group.
pub const GROUP: &str = "hoist.dev";
/// The API version of [`Scaler`].
pub const VERSION: &str = "v1alpha1";

/// Annotation on a Scaler: `"true"` asks hoist to retry a Failed operation; hoist removes it.
pub const RETRY_ANNOTATION: &str = "hoist.dev/retry";
/// Label hoist puts on objects it owns (the HPA or ScaledObject of a Scaler): the Scaler's name.
pub const SCALER_LABEL: &str = "hoist.dev/scaler";
/// `app.kubernetes.io/managed-by` value on objects hoist owns.
pub const MANAGED_BY: &str = "hoist";
/// The standard managed-by label key.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Field manager name for server-side apply.
pub const FIELD_MANAGER: &str = "hoist";
/// Finalizer hoist holds on a Scaler while an operation with hooks is in flight (or its
/// `on-failure` is still due), so that deleting the Scaler first undoes the operation.
pub const FINALIZER: &str = "hoist.dev/operation";
/// Field manager of the finalizer (server-side apply of `metadata.finalizers` alone).
pub const FINALIZER_MANAGER: &str = "hoist-finalizer";
/// Annotation on the pods a Deployment/ReplicaSet scale-down chose to remove: the id of the
/// operation that chose them. Removed (with the deletion cost) when the operation ends.
pub const LEAVING_ANNOTATION: &str = "hoist.dev/leaving";
/// The annotation the ReplicaSet controller ranks pods by when it scales down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Errors of this crate, one variant per failing operation.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Parsing a Scaler from JSON failed; `path` is the field (e.g. `spec.autoscaling`).
    #[error("parsing Scaler JSON at {path}: {message}")]
    ParseJson {
        /// Path of the field that failed (`.` when the document itself is malformed).
        path: String,
        /// The deserialiser's message.
        message: String,
    },
    /// Parsing a Scaler from YAML failed; `path` is the field.
    #[error("parsing Scaler YAML at {path}: {message}")]
    ParseYaml {
        /// Path of the field that failed.
        path: String,
        /// The deserialiser's message.
        message: String,
    },
    /// Rendering the CRD as YAML failed.
    #[error("rendering the Scaler CRD as YAML: {0}")]
    RenderCrd(#[source] serde_yaml::Error),
}

/// Parse a Scaler from JSON; an error names the path of the offending field.
pub fn parse_scaler_json(text: &str) -> Result<Scaler, ApiError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| ApiError::ParseJson {
        path: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// Parse a Scaler from YAML; an error names the path of the offending field.
pub fn parse_scaler_yaml(text: &str) -> Result<Scaler, ApiError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| ApiError::ParseYaml {
        path: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// Parse a Scaler from a JSON value (e.g. a `DynamicObject`'s data); an error names the path.
pub fn parse_scaler_value(value: serde_json::Value) -> Result<Scaler, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|err| ApiError::ParseJson {
        path: err.path().to_string(),
        message: err.into_inner().to_string(),
    })
}

/// The CustomResourceDefinitions hoist serves.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt;
    vec![Scaler::crd(), HookPolicy::crd()]
}

/// The CRDs as one YAML stream (documents separated by `---`), exactly what `hoist crds`
/// prints and `crds/scaler.yaml` holds.
pub fn crd_yaml() -> Result<String, ApiError> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).map_err(ApiError::RenderCrd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
