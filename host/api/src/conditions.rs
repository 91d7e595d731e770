//! Status conditions of a Scaler and helpers to keep them (Kubernetes `metav1.Condition`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The Scaler runs the count it was asked for, and nothing is in flight or failed.
pub const READY: &str = "Ready";
/// An operation is in flight (False: idle, paused or failed; the reason says which).
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// The hook plugin is loaded, verified and accepted the configuration (or none is configured).
pub const HOOKS_READY: &str = "HooksReady";
/// hoist can read and write the target's /scale and no failed operation blocks it.
pub const ABLE_TO_SCALE: &str = "AbleToScale";
/// The workload's count is within `minReplicas`..`maxReplicas` (False: it is not, and hoist
/// left it as it was: adoption changes nothing, and the bounds apply to the next change of the
/// asked count).
pub const WITHIN_BOUNDS: &str = "WithinBounds";
/// The spec is valid (False: the message names the field).
pub const VALID_SPEC: &str = "ValidSpec";
/// Another Scaler targets the same workload (True: the message names them all and the one that
/// acts, the oldest; the others start no operation until only one is left).
pub const TARGET_CONFLICT: &str = "TargetConflict";

/// The autoscaler `spec.autoscaling` names (the owned HPA or ScaledObject, or hoist's builtin
/// autoscaler) is in place and deciding `spec.replicas` (False: the reason says why not; absent
/// for `fixed` and `external`).
pub const AUTOSCALER_ACTIVE: &str = "AutoscalerActive";
/// `keda` mode only: the KEDA CRDs are served (False: hoist falls back to `spec.replicas` as
/// set until they are).
pub const KEDA_AVAILABLE: &str = "KEDAAvailable";
/// `builtin` mode only: every metric source answered at the last decision (False: a value is
/// held or replicas are kept; the reason says which).
pub const METRICS_AVAILABLE: &str = "MetricsAvailable";

/// The conditions the autoscaling modes own (written with the state machine's status, never by
/// a second writer).
pub const AUTOSCALING: [&str; 3] = [AUTOSCALER_ACTIVE, KEDA_AVAILABLE, METRICS_AVAILABLE];

/// All condition types a Scaler carries, in the order they are written.
pub const ALL: [&str; 10] = [
    READY,
    SCALING_ACTIVE,
    HOOKS_READY,
    ABLE_TO_SCALE,
    WITHIN_BOUNDS,
    VALID_SPEC,
    TARGET_CONFLICT,
    AUTOSCALER_ACTIVE,
    KEDA_AVAILABLE,
    METRICS_AVAILABLE,
];

/// The desired state of one condition, without the bookkeeping fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate {
    /// One of the constants of this module.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl ConditionUpdate {
    /// A condition with the given status.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// `"True"` or `"False"`.
pub fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The condition of type `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of type `type_` is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Set a condition, keeping `lastTransitionTime` when the status does not change (so writing
/// the same conditions twice yields identical objects and no status churn).
pub fn set(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = status_str(update.status);
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == update.type_) {
        if existing.status != status {
            existing.last_transition_time = now.clone();
            status.clone_into(&mut existing.status);
        }
        existing.reason = update.reason;
        existing.message = update.message;
        existing.observed_generation = observed_generation;
    } else {
        conditions.push(Condition {
            type_: update.type_.to_owned(),
            status: status.to_owned(),
            reason: update.reason,
            message: update.message,
            observed_generation,
            last_transition_time: now.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn set_adds_then_updates_keeping_transition_time_when_status_unchanged() {
        let mut conds = Vec::new();
        set(
            &mut conds,
            ConditionUpdate::new(READY, true, "Idle", "ok"),
            Some(1),
            &time(10),
        );
        assert_eq!(conds.len(), 1);
        assert!(is_true(&conds, READY));

        set(
            &mut conds,
            ConditionUpdate::new(READY, true, "Idle", "still ok"),
            Some(2),
            &time(20),
        );
        let c = find(&conds, READY).unwrap();
        assert_eq!(
            c.last_transition_time,
            time(10),
            "same status keeps the transition time"
        );
        assert_eq!(c.message, "still ok");
        assert_eq!(c.observed_generation, Some(2));

        set(
            &mut conds,
            ConditionUpdate::new(READY, false, "Scaling", "moving"),
            Some(2),
            &time(30),
        );
        let c = find(&conds, READY).unwrap();
        assert_eq!(
            c.last_transition_time,
            time(30),
            "a status change moves the transition time"
        );
        assert_eq!(c.status, "False");
        assert!(!is_true(&conds, READY));
        assert!(!is_true(&conds, VALID_SPEC), "absent is not true");
    }
}
