//! The `Scaler` custom resource: spec and status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::autoscaling::Autoscaling;
use crate::hooks::{Hooks, RetryPolicy, StageTimeouts};

/// The default `spec.minReplicas` (as for an HPA): scaling to zero must be asked for.
pub const DEFAULT_MIN_REPLICAS: i32 = 1;

/// A safe, programmable gate between the desired replica count of a workload and the count it
/// runs. Whoever decides the count (a person, an HPA, KEDA, hoist's autoscalers) writes
/// `spec.replicas` (directly or through /scale); hoist moves the target there through
/// PreScaling → Scaling → PostScaling, calling the hook plugin before and after.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hoist.dev",
    version = "v1alpha1",
    kind = "Scaler",
    plural = "scalers",
    singular = "scaler",
    shortname = "hsc",
    category = "hoist",
    namespaced,
    status = "ScalerStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A Scaler gates every replica change of one workload through pre- and post-scale hooks.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.targetRef.name","description":"The workload this Scaler drives"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.stage","description":"Stage of the scaling state machine"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas","description":"Replicas the target runs"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".spec.replicas","description":"Replicas asked for (before min/max clamping)"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
        "message": "minReplicas must be less than or equal to maxReplicas",
        "fieldPath": ".minReplicas"
    },
    {
        "rule": "!has(self.autoscaling) || !(has(self.autoscaling.hpa) || has(self.autoscaling.keda) || has(self.autoscaling.builtin)) || has(self.maxReplicas)",
        "message": "maxReplicas is required when autoscaling is hpa, keda or builtin",
        "fieldPath": ".maxReplicas"
    },
    {
        "rule": "!has(self.autoscaling) || !has(self.autoscaling.builtin) || !has(self.minReplicas) || self.minReplicas > 0 || self.autoscaling.builtin.metrics.exists(m, has(m.prometheus))",
        "message": crate::validate::ZERO_NEEDS_PROMETHEUS,
        "fieldPath": ".autoscaling.builtin.metrics"
    }
]))]
pub struct ScalerSpec {
    /// The workload to scale: anything with a /scale subresource in the Scaler's namespace.
    pub target_ref: TargetRef,
    /// The desired count. Values outside `[minReplicas, maxReplicas]` are accepted (an HPA or a
    /// person writing /scale is never refused) and clamped by hoist. Absent: hoist keeps the
    /// target's current count (clamped), so adopting a running workload never resizes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Lower bound of the count hoist applies (default 1; 0 allows scaling to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    /// Upper bound of the count hoist applies (no bound when absent; required by the hpa, keda
    /// and builtin modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// Who decides `replicas` (absent: fixed, i.e. whoever edits the Scaler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// The hook plugin called around every change (absent: no hooks, changes pass straight).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// Per-stage deadlines of an operation (each defaults to 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_timeouts: Option<StageTimeouts>,
    /// Automatic retries of a Failed operation (absent: Failed waits for the `hoist.dev/retry`
    /// annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Freeze the Scaler where it is: no new operation, no hook call, no write to the target, no
    /// stage change. Stage deadlines do not run while paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Start no operation that removes replicas (one in flight finishes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_scale_in: bool,
    /// Start no operation that adds replicas (one in flight finishes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_scale_out: bool,
}

impl ScalerSpec {
    /// `minReplicas` in effect.
    pub fn effective_min_replicas(&self) -> i32 {
        self.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS)
    }

    /// `maxReplicas` in effect (`i32::MAX` when unbounded).
    pub fn effective_max_replicas(&self) -> i32 {
        self.max_replicas.unwrap_or(i32::MAX)
    }

    /// `value` clamped to the bounds. When the bounds are inverted (an invalid spec that slipped
    /// past admission), the upper bound wins, so the result never exceeds `maxReplicas`.
    pub fn clamp(&self, value: i32) -> i32 {
        value
            .max(self.effective_min_replicas())
            .min(self.effective_max_replicas())
            .max(0)
    }

    /// Stage deadlines in effect.
    pub fn effective_stage_timeouts(&self) -> StageTimeouts {
        self.stage_timeouts.unwrap_or_default()
    }
}

/// A reference to a workload with a /scale subresource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target, e.g. `apps/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// Kind of the target, e.g. `StatefulSet`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the target, in the Scaler's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl TargetRef {
    /// Whether pods of this kind have stable ordinals (apps/v1 StatefulSet).
    pub fn is_stateful_set(&self) -> bool {
        self.kind == "StatefulSet" && self.api_version == "apps/v1"
    }

    /// Whether the controller of this kind honours `controller.kubernetes.io/pod-deletion-cost`
    /// (apps/v1 Deployment and ReplicaSet).
    pub fn honours_deletion_cost(&self) -> bool {
        self.api_version == "apps/v1" && (self.kind == "Deployment" || self.kind == "ReplicaSet")
    }

    /// `Kind/name`, for short messages.
    pub fn short(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

impl std::fmt::Display for TargetRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} {}", self.api_version, self.kind, self.name)
    }
}

/// Stage of the scaling state machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Stage {
    /// No operation in flight.
    #[default]
    Idle,
    /// Calling `pre-scale` until it reports done.
    PreScaling,
    /// The target has been written; waiting until it runs the new count.
    Scaling,
    /// Calling `post-scale` until it reports done.
    PostScaling,
    /// The operation failed; waits for `hoist.dev/retry=true` or the retry policy.
    Failed,
}

impl Stage {
    /// The stage's name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::PreScaling => "PreScaling",
            Self::Scaling => "Scaling",
            Self::PostScaling => "PostScaling",
            Self::Failed => "Failed",
        }
    }

    /// Whether an operation is in flight (PreScaling, Scaling or PostScaling).
    pub fn in_flight(self) -> bool {
        matches!(self, Self::PreScaling | Self::Scaling | Self::PostScaling)
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of a Scaler: everything needed to resume an operation after a restart.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalerStatus {
    /// Replicas the target reports (its `status.replicas`); the /scale status of this Scaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Label selector of the target's pods, as a string; lets an HPA count pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Stage of the state machine.
    #[serde(default)]
    pub stage: Stage,
    /// The operation in flight (or the one that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// Why the last operation failed, while in Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// A desired count that arrived during an operation; served when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_replicas: Option<i32>,
    /// Which plugin and configuration `validate-config` has checked, and its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginStatus>,
    /// When `spec.paused` was first seen (stage deadlines are shifted by the paused time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<Time>,
    /// Ready, ScalingActive, HooksReady, AbleToScale, ValidSpec, and for the autoscaling modes
    /// AutoscalerActive, KEDAAvailable, MetricsAvailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When hoist last wrote the target's replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
}

/// One scaling operation, frozen when it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Identifier, stable across retries of the same change; hooks may use it as an
    /// idempotency key.
    pub id: String,
    /// The target's count when the operation started.
    pub from: i32,
    /// The count the operation moves to (frozen; later changes go to `pendingReplicas`).
    pub to: i32,
    /// The workload the operation was started for, with its uid: the operation never writes
    /// to another one (a changed `spec.targetRef`, or a target deleted and created again under
    /// the same name, fails it). Absent only in statuses written before hoist recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<OperationTarget>,
    /// When the operation (this attempt) started.
    pub started_at: Time,
    /// When the current stage started (microseconds, so hooks see the elapsed time in ms).
    pub stage_started_at: MicroTime,
    /// sha256 of the plugin the operation uses for all its hooks; absent without hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_digest: Option<String>,
    /// State the plugin asked to keep between calls of the current stage (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_state: Option<String>,
    /// The last message a hook reported (bounded; a longer one is cut, and says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_message: Option<String>,
    /// How often the current stage's hook has been called (its `attempt` is this plus one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hook_calls: u32,
    /// When the current stage's hook is due again after it answered `in-progress`: no call
    /// happens before, whatever triggers a reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hook_call_at: Option<Time>,
    /// How often hoist wrote `to` to the target for this operation. Every write is recorded
    /// here first (a status write guarded by the resourceVersion), so a reconcile on a stale
    /// copy of the Scaler never reaches the target.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub target_writes: u32,
    /// Attempt number, 1 for the first; retries of a failed operation increase it.
    pub attempt: u32,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if signature"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The workload an operation belongs to: `spec.targetRef` when it started, and the uid the
/// target had then.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationTarget {
    /// API version of the target.
    pub api_version: String,
    /// Kind of the target.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// `metadata.uid` of the target when the operation started (absent for kinds whose
    /// object could not be read by uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl OperationTarget {
    /// Whether `spec.targetRef` still names this workload.
    pub fn is(&self, target: &TargetRef) -> bool {
        self.api_version == target.api_version
            && self.kind == target.kind
            && self.name == target.name
    }

    /// The reference part, as `spec.targetRef` has it.
    pub fn target_ref(&self) -> TargetRef {
        TargetRef {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
        }
    }
}

impl std::fmt::Display for OperationTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.target_ref())?;
        if let Some(uid) = &self.uid {
            write!(f, " (uid {uid})")?;
        }
        Ok(())
    }
}

/// Why an operation failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// The stage that failed.
    pub stage: Stage,
    /// Machine-readable reason, e.g. `PreScaleFailed`, `StageTimeout`.
    pub reason: String,
    /// Human-readable details.
    pub message: String,
    /// When the operation failed.
    pub at: Time,
    /// Progress of the best-effort `on-failure` call.
    pub on_failure: OnFailure,
    /// What `on-failure` reported, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure_message: Option<String>,
}

/// Progress of the `on-failure` hook of a failed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnFailure {
    /// Not called yet.
    Pending,
    /// Called and reported success.
    Done,
    /// Called and failed (recorded, not retried).
    Failed,
    /// Not called: the operation had no plugin.
    Skipped,
}

/// What `validate-config` said about a plugin and configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// sha256 of the plugin that was asked.
    pub digest: String,
    /// Fingerprint of the `spec.hooks.config` it was asked about.
    pub config_hash: String,
    /// Whether the plugin accepted the configuration.
    pub accepted: bool,
    /// The plugin's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
