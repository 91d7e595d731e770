//! What [`crate::decide`] reads ([`Observation`]) and what it returns ([`Plan`]).
#![allow(clippy::doc_markdown)] // Kubernetes kinds and stage names are words in these docs.

use std::time::Duration;

use hoist_api::{Scaler, ScalerStatus, Stage};
pub use hoist_types::{Digest, Direction, Hook};

/// A snapshot of everything the state machine depends on. Nothing else is read: the same
/// observation always gives the same plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The Scaler as read from the API server: spec, status, `metadata.generation` and
    /// annotations (`hoist.dev/retry`).
    pub scaler: Scaler,
    /// The target's /scale (and readiness), or why it could not be read.
    pub target: TargetObservation,
    /// The plugin named by `spec.hooks`, as the sandbox currently has it.
    pub plugin: PluginAvailability,
    /// Other Scalers of the namespace that target the same workload, if any.
    pub conflict: Option<TargetConflict>,
    /// The current time.
    pub now: jiff::Timestamp,
}

/// Something else that sets the replicas of this Scaler's workload.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rival {
    /// Another Scaler of the namespace with the same `targetRef`.
    Scaler(String),
    /// A HorizontalPodAutoscaler aimed at the workload itself (a user's own, or the one KEDA
    /// made for a ScaledObject, named here when its label says so).
    Hpa {
        name: String,
        scaled_object: Option<String>,
    },
}

impl std::fmt::Display for Rival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scaler(name) => write!(f, "Scaler {name}"),
            Self::Hpa {
                name,
                scaled_object: None,
            } => write!(f, "HorizontalPodAutoscaler {name}"),
            Self::Hpa {
                name,
                scaled_object: Some(so),
            } => write!(
                f,
                "HorizontalPodAutoscaler {name} (of KEDA ScaledObject {so})"
            ),
        }
    }
}

/// Others set the replicas of this Scaler's workload: only the oldest of them all acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetConflict {
    /// The others, in a stable order.
    pub others: Vec<Rival>,
    /// The oldest (the name breaks a tie), when it is not this Scaler: this Scaler starts
    /// nothing while it is there.
    pub acting: Option<Rival>,
}

/// The target as observed through its /scale subresource and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetObservation {
    /// The target was read.
    Found(TargetScale),
    /// The API server says the target does not exist.
    Missing {
        /// Human-readable reason, used in conditions and events.
        reason: String,
    },
    /// The target has no /scale, or could not be read; `reason` says which.
    Unavailable {
        /// Human-readable reason, used in conditions and events.
        reason: String,
    },
}

impl TargetObservation {
    /// The target's scale, when it was read.
    pub fn found(&self) -> Option<&TargetScale> {
        match self {
            Self::Found(t) => Some(t),
            Self::Missing { .. } | Self::Unavailable { .. } => None,
        }
    }
}

/// The target's replica counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetScale {
    /// `spec.replicas` from its /scale.
    pub spec_replicas: i32,
    /// `status.replicas` from its /scale.
    pub status_replicas: i32,
    /// Ready replicas where the kind reports them (`status.readyReplicas` of Deployments,
    /// StatefulSets, ReplicaSets); `None` when unknown (then `status_replicas` counts).
    pub ready_replicas: Option<i32>,
    /// Whether the target's controller has observed its latest spec
    /// (`status.observedGeneration >= metadata.generation`; true for kinds that do not report it).
    pub observed_generation_current: bool,
    /// The /scale `status.selector` (label selector of its pods, as a string).
    pub selector: Option<String>,
    /// The target's `metadata.uid`: an operation belongs to the object it started on.
    pub uid: Option<String>,
}

/// The state of the plugin `spec.hooks.plugin` names, as the sandbox has it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginAvailability {
    /// `spec.hooks` is absent.
    NotConfigured,
    /// Loaded and verified.
    Ready {
        /// The plugin's digest.
        digest: Digest,
    },
    /// Being fetched, compiled or verified.
    Loading,
    /// Missing, corrupt, the wrong world, or not matching the sha256 pin.
    Invalid {
        /// Why, for the HooksReady condition.
        reason: String,
    },
    /// Loaded, but no cluster-admin HookPolicy that applies to the namespace admits it: it
    /// never runs, whatever the failure policy (failOpen skips a broken plugin, not a refused
    /// one: an admin's refusal is not the plugin failing).
    NotAdmitted {
        /// Which policies refused it and why, for the HooksReady condition.
        reason: String,
    },
}

/// The outcome of one hook call, as the operator reports it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookResult {
    /// The hook finished its work.
    Done {
        /// What the plugin reported.
        message: Option<String>,
    },
    /// The hook needs to be called again later.
    InProgress {
        /// Opaque state the plugin wants back on its next call.
        state: String,
        /// When to call again (clamped to at least one second and to the stage deadline).
        retry_after: Duration,
        /// What the plugin reported.
        message: Option<String>,
    },
    /// The hook returned an error, trapped, ran out of time or memory, or could not be run
    /// (e.g. the operation's plugin digest is no longer loaded, or not a digest at all).
    Failed {
        /// Why.
        reason: String,
    },
}

/// A hook the operator must call before acting (phase 1 of the protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookCall {
    /// Which export.
    pub hook: Hook,
    /// The plugin to call: for an operation in flight, the digest it started with (not
    /// necessarily the ConfigMap's current one).
    pub plugin_digest: Digest,
    /// Deadline of this call: `spec.hooks.callTimeout`, never past the stage deadline.
    pub timeout: Duration,
    /// The operation the hook is about; `None` for `ValidateConfig`.
    pub operation: Option<HookOperation>,
    /// For `OnFailure`: what failed.
    pub failure: Option<HookFailure>,
}

/// The operation context handed to a hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOperation {
    /// `status.operation.id`.
    pub id: String,
    /// The target's count when the operation started.
    pub from: i32,
    /// The frozen target count.
    pub to: i32,
    /// Up or down.
    pub direction: Direction,
    /// The workload the operation was started for (not necessarily today's
    /// `spec.targetRef`: a hook that undoes an operation talks about the operation's target).
    pub target: hoist_api::TargetRef,
    /// Attempt number of the operation (1 first; retries of a failed operation increase it).
    pub attempt: u32,
    /// Calls of this hook in this stage of the operation, this one included (1 first): the
    /// hook's `attempt` in the WIT contract.
    pub call: u32,
    /// State the plugin saved in its previous call of this stage.
    pub saved_state: Option<String>,
    /// Time already spent in the current stage.
    pub elapsed_in_stage: Duration,
}

/// What failed, for `on-failure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookFailure {
    /// The stage that failed.
    pub stage: Stage,
    /// Machine-readable reason (the short form handed to `on-failure`).
    pub reason: String,
    /// Details.
    pub message: String,
}

/// What [`crate::decide`] says for an observation: act on a plan, or first call a hook and
/// then ask [`crate::decide_after`] with its result (which can only return a plan).
#[derive(Clone, Debug, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one Decision per reconcile, consumed at once and never stored"
)]
pub enum Decision {
    /// Apply this plan.
    Act(Plan),
    /// Call this hook; nothing is written before its result is known.
    Call(HookCall),
}

/// A change of hoist's finalizer on the Scaler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    /// Add it before the operation's first effect (the status write that starts it).
    Add,
    /// Remove it after everything else in the plan (the operation ended or was undone).
    Remove,
}

/// Kubernetes event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Informational.
    Normal,
    /// Something needs attention.
    Warning,
}

/// An event to publish on the Scaler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Normal or Warning.
    pub kind: EventKind,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

/// What to write. The operator applies it in this order, each step only after the one before
/// succeeded: `finalizer` (when adding), `status` (the intent), `scale_target` (the effect the
/// status already records), `seed_replicas`, `release_leaving`, `remove_retry_annotation`,
/// `finalizer` (when removing), `events`, then requeues.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Add or remove hoist's finalizer.
    pub finalizer: Option<FinalizerChange>,
    /// The complete new status, when it differs from the observed one (write it to /status,
    /// with the observed resourceVersion so a concurrent change causes a conflict and a retry).
    pub status: Option<ScalerStatus>,
    /// Write this count to the target's /scale: always the operation's frozen `to`, and only
    /// in a plan whose status (written first) records the Scaling stage of that operation.
    pub scale_target: Option<i32>,
    /// Write this count to the Scaler's own `spec.replicas`, which is absent: the workload's
    /// count, so that the Scaler's `/scale` answers (the API server refuses a GET of `/scale`
    /// while `spec.replicas` does not exist, and an HPA or KEDA reads it before writing).
    /// Guarded by the resourceVersion, so it never overwrites a count someone just wrote.
    pub seed_replicas: Option<i32>,
    /// The operation (by id) that ended: remove its leaving marks from the target's pods.
    pub release_leaving: Option<String>,
    /// Remove the `hoist.dev/retry` annotation from the Scaler.
    pub remove_retry_annotation: bool,
    /// Events to publish.
    pub events: Vec<Event>,
    /// Reconcile again after this long (in addition to watch events); `None`: wait for a
    /// change.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// Whether the plan writes anything to the cluster (status, /scale, annotation, events).
    pub fn has_writes(&self) -> bool {
        self.status.is_some()
            || self.finalizer.is_some()
            || self.release_leaving.is_some()
            || self.scale_target.is_some()
            || self.seed_replicas.is_some()
            || self.remove_retry_annotation
            || !self.events.is_empty()
    }
}
