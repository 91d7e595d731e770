//! The autoscaling modes (`spec.autoscaling`), operator side: each reconcile of a Scaler runs
//! its mode's step before the state machine and reports what it found as a
//! [`ModeReport`]; the pure `hoist_decide::modes::conditions` turns that into the
//! `AutoscalerActive` / `KEDAAvailable` / `MetricsAvailable` conditions, which act writes with
//! the state machine's status (one writer of `status.conditions`).
//!
//! - `fixed`, `external`, none: no autoscaler; objects hoist owned for another mode are deleted.
//! - `hpa` ([`hpa`]): an owned `autoscaling/v2` HPA targeting the Scaler.
//! - `keda` ([`keda`]): an owned `keda.sh/v1alpha1` ScaledObject targeting the Scaler; without
//!   KEDA, `KEDAAvailable=False` and `spec.replicas` applies as set.
//! - `builtin` ([`builtin`]): hoist's own autoscaler writes the Scaler's /scale on a tick.
//!
//! Every write of a mode (an owned object applied or deleted, the builtin autoscaler's desired
//! count) goes through act ([`crate::act::Actor`]), fenced like the state machine's writes.
//!
//! Owned objects carry a controller owner reference (the garbage collector removes them with
//! the Scaler) and the `hoist.dev/scaler` label; when the mode changes they are found by label
//! and owner uid and deleted, so a lost name never leaves one behind.

pub mod builtin;
pub mod hpa;
pub mod keda;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use hoist_api::{AutoscalingMode, Scaler};
use hoist_decide::modes::ModeReport;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;

use crate::act::Actor;
use crate::target::Targets;
use hoist_decide::Observation;

/// What the mode step of one reconcile found.
#[derive(Debug)]
pub struct ModeStep {
    pub report: ModeReport,
    /// Look again at the latest after this long (builtin ticks, KEDA re-discovery).
    pub requeue: Option<Duration>,
    /// The builtin autoscaler wrote the Scaler's `spec.replicas`: the Scaler changed, so the
    /// state machine waits for the watch to bring the new version.
    pub wrote_replicas: bool,
}

/// Which owned-object modes this operator serves (`hoist run --hpa-mode/--keda-mode`): each
/// needs RBAC for its kind, which a cluster admin may withhold.
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    pub hpa: bool,
    pub keda: bool,
}

/// What an `hpa`-mode Scaler reports when this operator does not serve HPAs.
const HPA_MODE_OFF: &str = "hpa mode is off in this operator (hoist run --hpa-mode=false, the \
                            chart's rbac.hpa=false): no HorizontalPodAutoscaler is created";

/// The operator's autoscaling state (shared by every reconcile).
pub struct Autoscalers {
    hpa_mode: bool,
    keda: keda::Keda,
    builtin: builtin::Builtin,
    /// Per Scaler uid: the mode for which objects of the other modes are known to be gone.
    cleaned: Mutex<HashMap<String, &'static str>>,
}

impl std::fmt::Debug for Autoscalers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Autoscalers").finish_non_exhaustive()
    }
}

/// `namespace/name` of a Scaler, for messages.
pub fn who(scaler: &Scaler) -> String {
    format!(
        "{}/{}",
        scaler.namespace().unwrap_or_default(),
        scaler.name_any()
    )
}

impl Autoscalers {
    /// The autoscalers and the receiving end of their reconcile triggers (owned ScaledObject
    /// changes), for the controller to merge into its own triggers.
    pub fn new(
        client: Client,
        namespace: Option<String>,
        modes: Modes,
        access: Option<crate::hook_access::HookAccess>,
    ) -> (Self, mpsc::UnboundedReceiver<ObjectRef<Scaler>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                keda: keda::Keda::new(client, namespace, tx, modes.keda),
                hpa_mode: modes.hpa,
                builtin: builtin::Builtin::new(access),
                cleaned: Mutex::new(HashMap::new()),
            },
            rx,
        )
    }

    /// Drops what is kept for Scalers that no longer exist (uids not in `live`): the builtin
    /// autoscaler's memory and the clean-up bookkeeping. Deleted Scalers are never
    /// reconciled again, so without this their entries would stay for the process's life.
    pub fn retain_scalers(&self, live: &HashSet<String>) {
        if let Ok(mut c) = self.cleaned.lock() {
            c.retain(|uid, _| live.contains(uid));
        }
        self.builtin.retain(live);
    }

    /// Runs the Scaler's mode step.
    pub async fn step(
        &self,
        scaler: &Scaler,
        observed: &Observation,
        targets: &Targets,
        actor: &Actor,
    ) -> ModeStep {
        let mode = scaler
            .spec
            .autoscaling
            .as_ref()
            .map_or(Some(AutoscalingMode::Fixed), hoist_api::Autoscaling::mode);
        let Some(mode) = mode else {
            // Zero or several members: the state machine reports the invalid spec.
            return ModeStep {
                report: ModeReport::NoAutoscaler,
                requeue: None,
                wrote_replicas: false,
            };
        };
        let uid = scaler.uid().unwrap_or_default();
        if !matches!(mode, AutoscalingMode::Builtin(_)) {
            self.builtin.forget(&uid);
        }
        self.clean_up(scaler, mode, actor).await;
        let who = who(scaler);
        match mode {
            AutoscalingMode::Fixed | AutoscalingMode::External => ModeStep {
                report: ModeReport::NoAutoscaler,
                requeue: None,
                wrote_replicas: false,
            },
            AutoscalingMode::Hpa(_) if !self.hpa_mode => ModeStep {
                report: ModeReport::Hpa(Err(HPA_MODE_OFF.into())),
                requeue: None,
                wrote_replicas: false,
            },
            AutoscalingMode::Hpa(h) => {
                let applied = hpa::apply(actor, scaler, h).await.map_err(|e| {
                    tracing::warn!(scaler = %who, error = %e, "applying the HPA failed");
                    e.to_string()
                });
                let requeue = applied.is_err().then_some(Duration::from_secs(10));
                ModeStep {
                    report: ModeReport::Hpa(applied),
                    requeue,
                    wrote_replicas: false,
                }
            }
            AutoscalingMode::Keda(k) => {
                let (crd, ar) = self.keda.crd().await;
                let applied = match &ar {
                    Some(ar) => Some(keda::apply(actor, ar, scaler, k).await.map_err(|e| {
                        if let crate::error::OperatorError::ApplyOwned {
                            source: kube::Error::Api(s),
                            ..
                        } = &e
                            && s.code == 404
                        {
                            // The CRD went away since discovery: ask again next time.
                            self.keda.invalidate();
                        }
                        tracing::warn!(scaler = %who, error = %e, "applying the ScaledObject failed");
                        e.to_string()
                    })),
                    None => None,
                };
                let requeue = match (&ar, &applied) {
                    (None, _) => Some(keda::RECHECK_ABSENT),
                    (_, Some(Err(_))) => Some(Duration::from_secs(10)),
                    _ => None,
                };
                ModeStep {
                    report: ModeReport::Keda { crd, applied },
                    requeue,
                    wrote_replicas: false,
                }
            }
            AutoscalingMode::Builtin(b) => {
                let step = self.builtin.step(actor, targets, scaler, b, observed).await;
                ModeStep {
                    report: step.report,
                    requeue: Some(step.requeue),
                    wrote_replicas: step.wrote,
                }
            }
        }
    }

    /// Deletes the objects hoist owns for modes other than `mode` (once per mode change).
    async fn clean_up(&self, scaler: &Scaler, mode: AutoscalingMode<'_>, actor: &Actor) {
        let uid = scaler.uid().unwrap_or_default();
        let name = mode.name();
        if self
            .cleaned
            .lock()
            .is_ok_and(|c| c.get(&uid).is_some_and(|m| *m == name))
        {
            return;
        }
        let who = who(scaler);
        let mut done = true;
        if self.hpa_mode && !matches!(mode, AutoscalingMode::Hpa(_)) {
            match hpa::delete_owned(actor, scaler).await {
                Ok(n) if n > 0 => {
                    tracing::info!(scaler = %who, "deleted the HPA of the previous mode");
                }
                Ok(_) => {}
                Err(e) => {
                    done = false;
                    tracing::warn!(scaler = %who, error = %e, "deleting the HPA of the previous mode failed");
                }
            }
        }
        if !matches!(mode, AutoscalingMode::Keda(_)) {
            match self.keda.crd().await {
                (_, Some(ar)) => match keda::delete_owned(actor, &ar, scaler).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(scaler = %who, "deleted the ScaledObject of the previous mode");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        done = false;
                        tracing::warn!(scaler = %who, error = %e, "deleting the ScaledObject of the previous mode failed");
                    }
                },
                (hoist_decide::modes::KedaCrd::NotServed { .. }, None) => {}
                (_, None) => done = false,
            }
        }
        if done && let Ok(mut c) = self.cleaned.lock() {
            c.insert(uid, name);
        }
    }
}
