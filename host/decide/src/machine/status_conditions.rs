//! The conditions every status carries: ValidSpec, HooksReady, AbleToScale, ScalingActive,
//! Ready, and WithinBounds once the target was read.
#![allow(clippy::doc_markdown)]

use super::{
    Blocked, ConditionUpdate, Machine, RETRY_ANNOTATION, Rival, Stage, TargetObservation,
    conditions,
};

impl Machine<'_> {
    pub(super) fn set_conditions(&mut self) {
        let updates = [
            self.valid_spec_condition(),
            self.target_conflict_condition(),
            self.hooks_ready_condition(),
            self.able_to_scale_condition(),
            self.scaling_active_condition(),
            self.ready_condition(),
        ];
        let mut conds = std::mem::take(&mut self.st.conditions);
        for update in updates.into_iter().chain(self.within_bounds_condition()) {
            conditions::set(&mut conds, update, self.generation, &self.now_time);
        }
        // Keep a stable order (the order of conditions::ALL) so equal states compare equal.
        conds.sort_by_key(|c| {
            conditions::ALL
                .iter()
                .position(|t| *t == c.type_)
                .unwrap_or(usize::MAX)
        });
        self.st.conditions = conds;
    }

    pub(super) fn valid_spec_condition(&self) -> ConditionUpdate {
        if self.violations.is_empty() {
            return ConditionUpdate::new(
                conditions::VALID_SPEC,
                true,
                "Valid",
                "the spec is valid",
            );
        }
        let message = self
            .violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ConditionUpdate::new(conditions::VALID_SPEC, false, "InvalidSpec", message)
    }

    pub(super) fn target_conflict_condition(&self) -> ConditionUpdate {
        match &self.obs.conflict {
            None => ConditionUpdate::new(
                conditions::TARGET_CONFLICT,
                false,
                "NoConflict",
                format!(
                    "no other Scaler or HorizontalPodAutoscaler targets {}",
                    self.spec.target_ref
                ),
            ),
            Some(c) => {
                let others: Vec<String> = c.others.iter().map(ToString::to_string).collect();
                let acting = c
                    .acting
                    .as_ref()
                    .map_or_else(|| "this Scaler".to_owned(), ToString::to_string);
                let only_scalers = c.others.iter().all(|r| matches!(r, Rival::Scaler(_)));
                let (reason, advice) = if only_scalers {
                    (
                        "SeveralScalers",
                        "the newer Scalers start nothing until one is left",
                    )
                } else {
                    (
                        "OtherAutoscaler",
                        "hoist cannot stop an HPA that writes the workload itself: delete it, or aim it at this Scaler (scaleTargetRef kind Scaler), so that every change passes the hooks",
                    )
                };
                ConditionUpdate::new(
                    conditions::TARGET_CONFLICT,
                    true,
                    reason,
                    format!(
                        "{} also set the replicas of {}; only the oldest, {acting}, acts; {advice}",
                        others.join(", "),
                        self.spec.target_ref,
                    ),
                )
            }
        }
    }

    pub(super) fn hooks_ready_condition(&self) -> ConditionUpdate {
        let (ok, reason, message) = self
            .hooks_condition
            .clone()
            .unwrap_or_else(|| self.passive_hooks_condition());
        ConditionUpdate::new(conditions::HOOKS_READY, ok, reason, message)
    }

    pub(super) fn able_to_scale_condition(&self) -> ConditionUpdate {
        match (&self.obs.target, self.st.stage) {
            (TargetObservation::Unavailable { reason }, _) => ConditionUpdate::new(
                conditions::ABLE_TO_SCALE,
                false,
                "TargetUnavailable",
                reason.clone(),
            ),
            (TargetObservation::Missing { reason }, _) => ConditionUpdate::new(
                conditions::ABLE_TO_SCALE,
                false,
                "TargetNotFound",
                reason.clone(),
            ),
            (_, Stage::Failed) => {
                let message = self
                    .st
                    .failure
                    .as_ref()
                    .map(|f| format!("{}: {}", f.reason, f.message))
                    .unwrap_or_default();
                ConditionUpdate::new(
                    conditions::ABLE_TO_SCALE,
                    false,
                    "OperationFailed",
                    format!("{message} (set annotation {RETRY_ANNOTATION}=true to retry)"),
                )
            }
            _ => ConditionUpdate::new(
                conditions::ABLE_TO_SCALE,
                true,
                "TargetReachable",
                format!("{} can be scaled", self.spec.target_ref),
            ),
        }
    }

    /// Whether the workload's count is within the bounds; kept as it was while the target
    /// cannot be read.
    pub(super) fn within_bounds_condition(&self) -> Option<ConditionUpdate> {
        let current = self.obs.target.found()?.spec_replicas;
        let (min, max) = (
            self.spec.effective_min_replicas(),
            self.spec.effective_max_replicas(),
        );
        let update = if current < min {
            ConditionUpdate::new(
                conditions::WITHIN_BOUNDS,
                false,
                "BelowMinReplicas",
                format!(
                    "the workload runs {current} replicas, below minReplicas {min}; hoist leaves it so until the asked count next changes, then applies the bounds"
                ),
            )
        } else if current > max {
            ConditionUpdate::new(
                conditions::WITHIN_BOUNDS,
                false,
                "AboveMaxReplicas",
                format!(
                    "the workload runs {current} replicas, above maxReplicas {max}; hoist leaves it so until the asked count next changes, then applies the bounds"
                ),
            )
        } else {
            ConditionUpdate::new(
                conditions::WITHIN_BOUNDS,
                true,
                "WithinBounds",
                format!("{current} replicas, within minReplicas {min} and maxReplicas {max}"),
            )
        };
        Some(update)
    }

    pub(super) fn operation_text(&self) -> String {
        self.st
            .operation
            .as_ref()
            .map(|op| format!("{} → {} (attempt {})", op.from, op.to, op.attempt))
            .unwrap_or_default()
    }

    pub(super) fn scaling_active_condition(&self) -> ConditionUpdate {
        let (active, reason, message) = match self.st.stage {
            _ if self.spec.paused => (
                false,
                "Paused",
                format!("paused in stage {}", self.st.stage),
            ),
            Stage::Idle => (false, "Idle", "no operation in flight".to_owned()),
            Stage::Failed => (
                false,
                "Failed",
                format!("operation {} failed", self.operation_text()),
            ),
            stage => (
                true,
                stage.as_str(),
                format!("scaling {}", self.operation_text()),
            ),
        };
        ConditionUpdate::new(conditions::SCALING_ACTIVE, active, reason, message)
    }

    pub(super) fn ready_condition(&self) -> ConditionUpdate {
        let current = self.obs.target.found().map(|t| t.spec_replicas);
        let (ready, reason, message) = match (&self.blocked, self.st.stage) {
            _ if self.spec.paused => (false, "Paused", "spec.paused is set".to_owned()),
            (Some(Blocked::InvalidSpec), _) => (
                false,
                "InvalidSpec",
                "the spec is invalid; see ValidSpec".to_owned(),
            ),
            (Some(Blocked::Conflict(acting)), _) => (
                false,
                "TargetConflict",
                format!("{acting} drives the same workload; see TargetConflict"),
            ),
            (Some(Blocked::TargetUnavailable), _) => (
                false,
                "TargetUnavailable",
                "the target cannot be read; see AbleToScale".to_owned(),
            ),
            (Some(Blocked::Hooks(message)), _) => (false, "HooksNotReady", message.clone()),
            (Some(Blocked::DirectionPaused(field)), _) => (
                false,
                "DirectionPaused",
                format!("{field} holds the change back"),
            ),
            (None, Stage::Idle) if self.desired() == current => (
                true,
                "Idle",
                format!("running {} replicas as asked", current.unwrap_or_default()),
            ),
            (None, Stage::Idle) => (false, "Pending", "a change is waiting".to_owned()),
            (None, Stage::Failed) => (
                false,
                "Failed",
                "the last operation failed; see AbleToScale".to_owned(),
            ),
            (None, stage) => (
                false,
                stage.as_str(),
                format!("scaling {}", self.operation_text()),
            ),
        };
        ConditionUpdate::new(conditions::READY, ready, reason, message)
    }
}
