//! Rust mirrors of the WIT types the operator builds and reads (`wit/types.wit`), with serde
//! so that `hoist plugin run --context CTX.json` can read them.

use std::fmt;
use std::time::Duration;

use hoist_types::Direction;
use serde::{Deserialize, Serialize};

use crate::bindings::types as wit;

/// One pod of the scaled workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodInfo {
    /// Pod name (or the future name of a pod still to be created).
    pub name: String,
    /// `StatefulSet` ordinal, when the workload has stable ordinals.
    #[serde(default)]
    pub ordinal: Option<u32>,
    /// Pod IP, when assigned.
    #[serde(default)]
    pub ip: Option<String>,
    /// Whether the pod is Ready.
    #[serde(default)]
    pub ready: bool,
}

/// The scaled workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// For example `apps/v1`.
    pub api_version: String,
    /// For example `StatefulSet`.
    pub kind: String,
    /// Name in the Scaler's namespace.
    pub name: String,
}

/// What a hook is told about the operation (`scale-context` in WIT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookContext {
    /// Namespace of the Scaler.
    pub namespace: String,
    /// Name of the Scaler.
    pub scaler: String,
    /// The workload.
    pub target: TargetRef,
    /// Stable id of the operation.
    pub operation_id: String,
    /// Replicas when the operation started.
    pub from_replicas: u32,
    /// Replicas the operation moves to.
    pub to_replicas: u32,
    /// Up or down.
    pub direction: Direction,
    /// Pods that will be removed.
    #[serde(default)]
    pub pods_removed: Vec<PodInfo>,
    /// Pods that will be added.
    #[serde(default)]
    pub pods_added: Vec<PodInfo>,
    /// All current pods.
    #[serde(default)]
    pub all_pods: Vec<PodInfo>,
    /// The plugin config as JSON text.
    #[serde(default = "empty_config")]
    pub config: String,
    /// State saved by the previous in-progress outcome of this stage.
    #[serde(default)]
    pub saved_state: Option<String>,
    /// Call number in this stage, from 1.
    #[serde(default = "one")]
    pub attempt: u32,
    /// Time spent in the stage before this call.
    #[serde(default, with = "millis")]
    pub elapsed_in_stage: Duration,
}

fn empty_config() -> String {
    "{}".to_string()
}

fn one() -> u32 {
    1
}

/// `Duration` as integer milliseconds (`elapsedInStage: 1500`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The stage in which an operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FailedStage {
    /// Before or during pre-scale.
    PreScaling,
    /// While waiting for the workload.
    Scaling,
    /// During post-scale.
    PostScaling,
}

/// Why an operation failed (the `failure` argument of `on-failure`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailureInfo {
    /// Stage that failed.
    pub stage: FailedStage,
    /// hoist's short reason.
    pub reason: String,
}

/// What `pre-scale` / `post-scale` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum HookOutcome {
    /// Finished.
    Done {
        /// Human message.
        message: String,
    },
    /// Call again after `retry_after`, handing back `state`.
    InProgress {
        /// Opaque state to store and hand back.
        state: String,
        /// Delay before the next call.
        #[serde(with = "millis", rename = "retryAfterMs")]
        retry_after: Duration,
        /// Human message.
        message: String,
    },
}

/// The category of an error a hook returned (`hook-error` in WIT).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HookErrorKind {
    /// The plugin config is unusable.
    InvalidConfig,
    /// A remote system failed or refused.
    Remote,
    /// Anything else.
    Other,
}

impl fmt::Display for HookErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HookErrorKind::InvalidConfig => "invalid config",
            HookErrorKind::Remote => "remote error",
            HookErrorKind::Other => "error",
        })
    }
}

impl From<&PodInfo> for wit::Pod {
    fn from(p: &PodInfo) -> Self {
        wit::Pod {
            name: p.name.clone(),
            ordinal: p.ordinal,
            ip: p.ip.clone(),
            ready: p.ready,
        }
    }
}

impl From<&HookContext> for wit::ScaleContext {
    fn from(c: &HookContext) -> Self {
        wit::ScaleContext {
            namespace: c.namespace.clone(),
            scaler: c.scaler.clone(),
            target: wit::TargetRef {
                api_version: c.target.api_version.clone(),
                kind: c.target.kind.clone(),
                name: c.target.name.clone(),
            },
            operation_id: c.operation_id.clone(),
            from_replicas: c.from_replicas,
            to_replicas: c.to_replicas,
            direction: match c.direction {
                Direction::Up => wit::Direction::Up,
                Direction::Down => wit::Direction::Down,
            },
            pods_removed: c.pods_removed.iter().map(Into::into).collect(),
            pods_added: c.pods_added.iter().map(Into::into).collect(),
            all_pods: c.all_pods.iter().map(Into::into).collect(),
            config: c.config.clone(),
            saved_state: c.saved_state.clone(),
            attempt: c.attempt,
            elapsed_in_stage_ms: u64::try_from(c.elapsed_in_stage.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl From<&FailureInfo> for wit::Failure {
    fn from(f: &FailureInfo) -> Self {
        wit::Failure {
            stage: match f.stage {
                FailedStage::PreScaling => wit::Stage::PreScaling,
                FailedStage::Scaling => wit::Stage::Scaling,
                FailedStage::PostScaling => wit::Stage::PostScaling,
            },
            reason: f.reason.clone(),
        }
    }
}

pub(crate) fn split_hook_error(e: wit::HookError) -> (HookErrorKind, String) {
    match e {
        wit::HookError::InvalidConfig(m) => (HookErrorKind::InvalidConfig, m),
        wit::HookError::Remote(m) => (HookErrorKind::Remote, m),
        wit::HookError::Other(m) => (HookErrorKind::Other, m),
    }
}
