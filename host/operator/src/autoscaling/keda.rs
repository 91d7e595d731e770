//! `keda` mode: find out whether KEDA is installed (discovery, re-checked on a timer so KEDA
//! installed later is picked up without a restart), the ScaledObject hoist owns (built by
//! `hoist_decide::modes::keda` as plain JSON), applied and deleted through act,
//! and watch hoist's `ScaledObject`s once the CRD is served.
//!
//! "KEDA absent" is decided by discovery: the API group `keda.sh` or the kind `ScaledObject` is
//! not served (a no-match), never by a 404 on a ScaledObject (that only means the object is not
//! there yet).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hoist_api::autoscaling::KedaAutoscaling;
use hoist_api::{MANAGED_BY, MANAGED_BY_LABEL, SCALER_LABEL, Scaler};
use hoist_decide::modes::keda::{GROUP, KIND, VERSION};
use hoist_decide::modes::{self, KedaCrd};
use kube::api::{ApiResource, DynamicObject};
use kube::discovery::{self, Scope};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use crate::act::Actor;
use crate::error::OperatorError;

/// How long a discovery answer is trusted when KEDA was absent (or discovery failed).
pub const RECHECK_ABSENT: Duration = Duration::from_secs(10);
/// How long a discovery answer is trusted when KEDA was there.
pub const RECHECK_PRESENT: Duration = Duration::from_mins(1);

/// The discovery cache and the ScaledObject watch.
pub struct Keda {
    client: Client,
    namespace: Option<String>,
    cache: Mutex<Option<(Instant, KedaCrd, Option<ApiResource>)>>,
    watching: Mutex<bool>,
    triggers: mpsc::UnboundedSender<ObjectRef<Scaler>>,
    /// `hoist run --keda-mode`: when off, KEDA counts as absent and is never asked about.
    enabled: bool,
}

impl std::fmt::Debug for Keda {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keda").finish_non_exhaustive()
    }
}

impl Keda {
    pub fn new(
        client: Client,
        namespace: Option<String>,
        triggers: mpsc::UnboundedSender<ObjectRef<Scaler>>,
        enabled: bool,
    ) -> Self {
        Self {
            client,
            namespace,
            cache: Mutex::new(None),
            watching: Mutex::new(false),
            triggers,
            enabled,
        }
    }

    /// Whether the ScaledObject CRD is served (cached; see [`RECHECK_ABSENT`]).
    pub async fn crd(&self) -> (KedaCrd, Option<ApiResource>) {
        if !self.enabled {
            let reason = "keda mode is off in this operator (hoist run --keda-mode=false, the \
                          chart's rbac.keda=false)";
            return (
                KedaCrd::NotServed {
                    reason: reason.into(),
                },
                None,
            );
        }
        if let Ok(cache) = self.cache.lock()
            && let Some((at, crd, ar)) = cache.as_ref()
        {
            let ttl = if *crd == KedaCrd::Served {
                RECHECK_PRESENT
            } else {
                RECHECK_ABSENT
            };
            if at.elapsed() < ttl {
                return (crd.clone(), ar.clone());
            }
        }
        let (crd, ar) = discover(&self.client).await;
        if let Ok(mut cache) = self.cache.lock() {
            *cache = Some((Instant::now(), crd.clone(), ar.clone()));
        }
        if let Some(ar) = &ar {
            self.start_watch(ar);
        }
        (crd, ar)
    }

    /// Forget the discovery answer (e.g. the CRD went away under an apply).
    pub fn invalidate(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            *cache = None;
        }
    }

    /// Watch hoist's `ScaledObject`s (once): a change, e.g. someone editing or deleting one,
    /// reconciles its Scaler, which applies it again.
    fn start_watch(&self, ar: &ApiResource) {
        let Ok(mut watching) = self.watching.lock() else {
            return;
        };
        if *watching {
            return;
        }
        *watching = true;
        let api: Api<DynamicObject> = match &self.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        let triggers = self.triggers.clone();
        let config = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
        tokio::spawn(async move {
            let stream = watcher(api, config).default_backoff().touched_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(obj) => {
                        if let (Some(ns), Some(scaler)) =
                            (obj.namespace(), obj.labels().get(SCALER_LABEL))
                        {
                            let _ = triggers.send(ObjectRef::new(scaler).within(&ns));
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "watching ScaledObjects"),
                }
            }
        });
    }
}

/// Asks discovery whether `keda.sh/v1alpha1 ScaledObject` is served.
async fn discover(client: &Client) -> (KedaCrd, Option<ApiResource>) {
    match discovery::group(client, GROUP).await {
        Ok(group) => {
            let found = group
                .versioned_resources(VERSION)
                .into_iter()
                .find(|(ar, caps)| ar.kind == KIND && caps.scope == Scope::Namespaced);
            match found {
                Some((ar, _)) => (KedaCrd::Served, Some(ar)),
                None => (
                    KedaCrd::NotServed {
                        reason: format!("API group {GROUP} serves no {VERSION} {KIND}"),
                    },
                    None,
                ),
            }
        }
        Err(kube::Error::Discovery(e)) => (
            KedaCrd::NotServed {
                reason: format!("discovery: {e}"),
            },
            None,
        ),
        Err(e) => (
            KedaCrd::Unknown {
                reason: e.to_string(),
            },
            None,
        ),
    }
}

/// Applies the owned ScaledObject (through act); returns its name.
pub async fn apply(
    actor: &Actor,
    ar: &ApiResource,
    scaler: &Scaler,
    keda: &KedaAutoscaling,
) -> Result<String, OperatorError> {
    let build_failed = |reason: String| OperatorError::BuildOwned {
        scaler: super::who(scaler),
        reason,
    };
    let object =
        modes::keda::scaled_object(scaler, keda).map_err(|e| build_failed(e.to_string()))?;
    let object: DynamicObject =
        serde_json::from_value(object).map_err(|e| build_failed(e.to_string()))?;
    let api: Api<DynamicObject> = Api::namespaced_with(
        actor.client.clone(),
        &scaler.namespace().unwrap_or_default(),
        ar,
    );
    actor.apply_owned(&api, KIND, scaler, &object).await
}

/// Deletes every ScaledObject hoist owns for `scaler` (by label and owner uid).
pub async fn delete_owned(
    actor: &Actor,
    ar: &ApiResource,
    scaler: &Scaler,
) -> Result<usize, OperatorError> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        actor.client.clone(),
        &scaler.namespace().unwrap_or_default(),
        ar,
    );
    actor.delete_owned(&api, KIND, scaler).await
}
