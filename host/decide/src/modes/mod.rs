//! The operator side of `spec.autoscaling`, pure: what hoist writes for each mode and which
//! conditions it reports.
//!
//! - [`hpa::horizontal_pod_autoscaler`]: the `autoscaling/v2` HorizontalPodAutoscaler hoist owns
//!   in `hpa` mode, targeting the Scaler itself.
//! - [`keda::scaled_object`]: the `keda.sh/v1alpha1` ScaledObject hoist owns in `keda` mode, as
//!   plain JSON (KEDA is never a build dependency).
//! - [`builtin::tick`]: one decision of hoist's own autoscaler from the metric readings.
//! - [`replay::replay`]: a metric trace replayed through that tick (`hoist simulate`).
//! - [`conditions`] and [`merge_conditions`]: the autoscaling conditions (`AutoscalerActive`,
//!   `KEDAAvailable`, `MetricsAvailable`) and how they join the status the state machine writes,
//!   so `status.conditions` keeps a single writer.
#![allow(clippy::doc_markdown)] // Kubernetes kinds are words in these docs.

pub mod builtin;
pub mod hpa;
pub mod keda;
pub mod replay;

use hoist_api::conditions::{self, ConditionUpdate};
use hoist_api::{FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL, SCALER_LABEL, Scaler, ScalerSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};

use crate::Plan;
pub use builtin::{BuiltinReport, MetricsHealth, TickDecision};

/// Field manager hoist applies its owned HPAs and ScaledObjects with (the same as the status).
pub const OWNED_FIELD_MANAGER: &str = FIELD_MANAGER;

/// Building an owned object failed: the Scaler lacks what an owner reference needs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModeError {
    /// The Scaler has no name, namespace or uid (it was not read from the API server).
    #[error("building the {kind} for Scaler {scaler}: the Scaler has no metadata.{field}")]
    BuildOwnedObject {
        /// `HorizontalPodAutoscaler` or `ScaledObject`.
        kind: &'static str,
        /// `namespace/name` as far as known.
        scaler: String,
        /// The missing field.
        field: &'static str,
    },
}

/// The metadata of an object hoist owns for `scaler`: same name and namespace, the
/// `hoist.dev/scaler` and managed-by labels, and a controller owner reference to the Scaler (so
/// the garbage collector deletes it with the Scaler).
pub fn owned_metadata(scaler: &Scaler, kind: &'static str) -> Result<ObjectMeta, ModeError> {
    let who = format!(
        "{}/{}",
        scaler.metadata.namespace.as_deref().unwrap_or("?"),
        scaler.metadata.name.as_deref().unwrap_or("?")
    );
    let missing = |field| ModeError::BuildOwnedObject {
        kind,
        scaler: who.clone(),
        field,
    };
    let name = scaler
        .metadata
        .name
        .clone()
        .ok_or_else(|| missing("name"))?;
    let namespace = scaler
        .metadata
        .namespace
        .clone()
        .ok_or_else(|| missing("namespace"))?;
    let uid = scaler.metadata.uid.clone().ok_or_else(|| missing("uid"))?;
    Ok(ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace),
        labels: Some(owned_labels(&name)),
        owner_references: Some(vec![OwnerReference {
            api_version: format!("{}/{}", hoist_api::GROUP, hoist_api::VERSION),
            kind: "Scaler".to_owned(),
            name,
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        }]),
        ..ObjectMeta::default()
    })
}

/// The labels hoist puts on the objects it owns for the Scaler `name`.
pub fn owned_labels(name: &str) -> std::collections::BTreeMap<String, String> {
    [
        (SCALER_LABEL.to_owned(), name.to_owned()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]
    .into()
}

/// The label selector that finds every object hoist owns for the Scaler `name`, even when the
/// Scaler's status no longer names it.
pub fn owned_selector(name: &str) -> String {
    format!("{SCALER_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}")
}

/// Whether `owners` holds a controller reference to the Scaler with `uid`.
pub fn owned_by(owners: Option<&[OwnerReference]>, uid: &str) -> bool {
    owners.is_some_and(|os| {
        os.iter()
            .any(|o| o.kind == "Scaler" && o.uid == uid && o.controller == Some(true))
    })
}

/// Whether the KEDA CRDs are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KedaCrd {
    /// `keda.sh/v1alpha1 ScaledObject` is served.
    Served,
    /// Discovery answered and the group or kind is absent (`reason` says which).
    NotServed {
        /// The discovery answer.
        reason: String,
    },
    /// Discovery itself failed (network, permissions): whether KEDA is there is unknown.
    Unknown {
        /// The error.
        reason: String,
    },
}

/// What the mode step of one reconcile found and did; the input of [`conditions`].
#[derive(Clone, Debug, PartialEq)]
pub enum ModeReport {
    /// `fixed`, `external` or no `spec.autoscaling`: hoist runs no autoscaler.
    NoAutoscaler,
    /// `hpa`: the outcome of applying the owned HPA (`Ok(name)` or the error).
    Hpa(Result<String, String>),
    /// `keda`: whether the CRDs are served and, when they are, the outcome of the apply.
    Keda {
        /// Discovery's answer.
        crd: KedaCrd,
        /// `Ok(name)` or the error; `None` when nothing was applied (CRDs absent).
        applied: Option<Result<String, String>>,
    },
    /// `builtin`: the last decision (this tick's or, between ticks, the previous one).
    Builtin(BuiltinReport),
    /// `builtin` before its first decision after a (re)start.
    BuiltinStarting,
}

/// The autoscaling conditions for `report`. Types of [`conditions::AUTOSCALING`] not returned
/// are removed from the status by [`merge_conditions`]. Messages carry no clock-dependent
/// text, so an unchanged situation writes no status.
pub fn conditions(report: &ModeReport, spec: &ScalerSpec) -> Vec<ConditionUpdate> {
    use conditions::{AUTOSCALER_ACTIVE, KEDA_AVAILABLE, METRICS_AVAILABLE};
    let paused_note = pause_note(spec);
    match report {
        ModeReport::NoAutoscaler => Vec::new(),
        ModeReport::Hpa(Ok(name)) => vec![ConditionUpdate::new(
            AUTOSCALER_ACTIVE,
            true,
            "HorizontalPodAutoscalerApplied",
            format!("HorizontalPodAutoscaler {name} targets this Scaler{paused_note}"),
        )],
        ModeReport::Hpa(Err(e)) => vec![ConditionUpdate::new(
            AUTOSCALER_ACTIVE,
            false,
            "HorizontalPodAutoscalerApplyFailed",
            e.clone(),
        )],
        ModeReport::Keda { crd, applied } => {
            let available = match crd {
                KedaCrd::Served => ConditionUpdate::new(
                    KEDA_AVAILABLE,
                    true,
                    "CRDServed",
                    "keda.sh/v1alpha1 ScaledObject is served",
                ),
                KedaCrd::NotServed { reason } => ConditionUpdate::new(
                    KEDA_AVAILABLE,
                    false,
                    "CRDNotServed",
                    format!(
                        "KEDA is not installed ({reason}); spec.replicas is applied as set until it is"
                    ),
                ),
                KedaCrd::Unknown { reason } => ConditionUpdate::new(
                    KEDA_AVAILABLE,
                    false,
                    "DiscoveryFailed",
                    format!(
                        "cannot tell whether KEDA is installed: {reason}; spec.replicas is applied as set"
                    ),
                ),
            };
            let active = match (crd, applied) {
                (KedaCrd::Served, Some(Ok(name))) => ConditionUpdate::new(
                    AUTOSCALER_ACTIVE,
                    true,
                    "ScaledObjectApplied",
                    format!("ScaledObject {name} targets this Scaler{paused_note}"),
                ),
                (_, Some(Err(e))) => ConditionUpdate::new(
                    AUTOSCALER_ACTIVE,
                    false,
                    "ScaledObjectApplyFailed",
                    e.clone(),
                ),
                _ => ConditionUpdate::new(
                    AUTOSCALER_ACTIVE,
                    false,
                    "KEDAUnavailable",
                    "no ScaledObject without KEDA; falling back to spec.replicas as set",
                ),
            };
            vec![active, available]
        }
        ModeReport::BuiltinStarting => vec![
            ConditionUpdate::new(
                AUTOSCALER_ACTIVE,
                true,
                "Starting",
                "the builtin autoscaler has not decided yet since the operator started",
            ),
            ConditionUpdate::new(
                METRICS_AVAILABLE,
                false,
                "NoMetricYet",
                "no metric has been read yet",
            ),
        ],
        ModeReport::Builtin(report) => builtin::conditions(report),
    }
}

fn pause_note(spec: &ScalerSpec) -> &'static str {
    match (spec.paused, spec.pause_scale_in, spec.pause_scale_out) {
        (true, _, _) => " (paused: it recommends no change)",
        (false, true, true) => " (scale-in and scale-out paused)",
        (false, true, false) => " (scale-in paused)",
        (false, false, true) => " (scale-out paused)",
        (false, false, false) => "",
    }
}

/// Joins the autoscaling conditions into the status the plan writes, keeping one writer of
/// `status.conditions`. When the plan writes no status and the conditions changed, the plan
/// gets the observed status with the new conditions (an apply of the whole status, guarded by
/// the observed resourceVersion like any other). Autoscaling condition types not in `updates`
/// are removed (e.g. `KEDAAvailable` after a switch away from `keda`).
pub fn merge_conditions(
    plan: &mut Plan,
    scaler: &Scaler,
    updates: &[ConditionUpdate],
    now: jiff::Timestamp,
) {
    // Whole seconds, as the state machine stores times.
    let now = Time(jiff::Timestamp::from_second(now.as_second()).unwrap_or(now));
    let generation = scaler.metadata.generation;
    let base = plan
        .status
        .clone()
        .or_else(|| scaler.status.clone())
        .unwrap_or_default();
    let mut merged = base.clone();
    merged.conditions.retain(|c| {
        !conditions::AUTOSCALING.contains(&c.type_.as_str())
            || updates.iter().any(|u| u.type_ == c.type_)
    });
    for update in updates {
        conditions::set(&mut merged.conditions, update.clone(), generation, &now);
    }
    merged.conditions.sort_by_key(|c| {
        conditions::ALL
            .iter()
            .position(|t| *t == c.type_)
            .unwrap_or(usize::MAX)
    });
    if plan.status.is_some() || merged != base {
        plan.status = Some(merged);
    }
}

#[cfg(test)]
mod tests;
