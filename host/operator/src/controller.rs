//! The Scaler controller: for each Scaler, observe → decide (pure) → run the hook the plan
//! asks for → decide again with its result → act. Watches Scalers, the workloads they target
//! (StatefulSets, Deployments, ReplicaSets; other kinds are polled through requeues) and the
//! plugin ConfigMaps, mapping changes back to the Scalers that use them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use hoist_api::Scaler;
use hoist_decide::{HookResult, Observation, decide};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::act::Actor;
use crate::error::OperatorError;
use crate::hook_call::HookEnv;
use crate::metrics::{Metrics, ResultLabels};
use crate::observe::observe;
use crate::plugins::{LoadFinished, PLUGIN_LABEL, PluginRegistry};

/// Shared state of every reconcile.
#[derive(Debug)]
pub struct Context {
    pub hooks: HookEnv,
    pub actor: Actor,
    pub metrics: Arc<Metrics>,
}

/// One reconcile of one Scaler.
pub async fn reconcile(scaler: Arc<Scaler>, ctx: Arc<Context>) -> Result<Action, OperatorError> {
    let started = Instant::now();
    let observed = observe(&scaler, &ctx.hooks.targets, &ctx.hooks.plugins).await;
    let mut plan = decide(&observed.observation);
    if let Some(call) = plan.hook.clone() {
        let result = match &scaler.spec.hooks {
            Some(hooks) => {
                ctx.hooks
                    .run(&scaler, hooks, &call, observed.selector.as_deref())
                    .await
            }
            None => HookResult::Failed {
                reason: "spec.hooks was removed while the operation needed a hook".into(),
            },
        };
        let second = Observation {
            hook_result: Some(result),
            ..observed.observation
        };
        plan = decide(&second);
        if plan.hook.is_some() {
            // The protocol says phase 2 never asks for another hook; never loop on it.
            tracing::error!(scaler = %scaler.name_any(), "the state machine asked for a second hook in one reconcile");
            plan.hook = None;
        }
    }
    ctx.actor.act(&scaler, &plan).await?;
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result: "ok" })
        .inc();
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// What happens after a failed reconcile: a status-write conflict retries at once (a newer
/// observation exists), anything else after a short backoff.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime's Controller::run requires"
)]
pub fn error_policy(scaler: Arc<Scaler>, error: &OperatorError, ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, OperatorError::WriteStatus { source: kube::Error::Api(s), .. } if s.code == 409);
    let result = if conflict { "conflict" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels { result })
        .inc();
    if conflict {
        tracing::debug!(scaler = %scaler.name_any(), "status changed underneath; reconciling again");
        Action::requeue(Duration::from_millis(200))
    } else {
        tracing::warn!(scaler = %scaler.name_any(), error = %error, "reconcile failed");
        Action::requeue(Duration::from_secs(5))
    }
}

/// Maps a workload event to the Scalers in its namespace that target it.
fn scalers_targeting<K: Resource<DynamicType = ()>>(
    store: Store<Scaler>,
) -> impl Fn(K) -> Vec<ObjectRef<Scaler>> + Send + Sync + 'static {
    move |obj: K| {
        let (Some(ns), name) = (
            obj.meta().namespace.clone(),
            obj.meta().name.clone().unwrap_or_default(),
        ) else {
            return Vec::new();
        };
        let kind = K::kind(&());
        let api_version = K::api_version(&());
        store
            .state()
            .iter()
            .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
            .filter(|s| {
                let t = &s.spec.target_ref;
                t.name == name && t.kind == kind && t.api_version == api_version
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect()
    }
}

/// Scalers in `namespace` whose `spec.hooks.plugin.configMap` is `config_map`.
fn scalers_using(store: &Store<Scaler>, namespace: &str, config_map: &str) -> Vec<Arc<Scaler>> {
    store
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| {
            s.spec
                .hooks
                .as_ref()
                .is_some_and(|h| h.plugin.config_map == config_map)
        })
        .collect()
}

fn channel_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Everything the controller is built from.
pub struct Parts {
    pub client: Client,
    pub context: Arc<Context>,
    pub configmaps: reflector::store::Writer<ConfigMap>,
    pub loads: mpsc::UnboundedReceiver<LoadFinished>,
    pub recorder: Recorder,
    pub concurrency: u16,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(parts: Parts, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let Parts {
        client,
        context,
        configmaps,
        loads,
        recorder,
        concurrency,
    } = parts;
    let controller = Controller::new(
        Api::<Scaler>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    );
    let store = controller.store();
    let (trigger, triggers) = mpsc::unbounded_channel::<ObjectRef<Scaler>>();

    // Plugin ConfigMaps: keep a store for the registry; a change reconciles their Scalers.
    let cm_watch = reflector(
        configmaps,
        watcher(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(PLUGIN_LABEL),
        ),
    )
    .default_backoff()
    .applied_objects();
    let cm_store = store.clone();
    let cm_trigger = trigger.clone();
    tokio::spawn(async move {
        let mut cm_watch = std::pin::pin!(cm_watch);
        while let Some(event) = cm_watch.next().await {
            match event {
                Ok(cm) => {
                    let ns = cm.namespace().unwrap_or_default();
                    for s in scalers_using(&cm_store, &ns, &cm.name_any()) {
                        let _ = cm_trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching plugin ConfigMaps"),
            }
        }
    });

    // Finished plugin loads: reconcile the Scalers of that source; tell them about rejects.
    let load_store = store.clone();
    tokio::spawn(async move {
        let mut loads = std::pin::pin!(channel_stream(loads));
        while let Some(done) = loads.next().await {
            for s in scalers_using(&load_store, &done.source.namespace, &done.source.config_map) {
                if let Some(reason) = &done.error {
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "PluginRejected".into(),
                        note: Some(format!(
                            "{}: plugin {} rejected: {reason}",
                            done.source, done.digest
                        )),
                        action: "LoadPlugin".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &s.object_ref(&())).await {
                        tracing::warn!(error = %e, "publishing PluginRejected failed");
                    }
                }
                let _ = trigger.send(ObjectRef::from_obj(s.as_ref()));
            }
        }
    });

    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .watches(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
            scalers_targeting(store.clone()),
        )
        .watches(
            Api::<Deployment>::all(client.clone()),
            watcher::Config::default(),
            scalers_targeting(store.clone()),
        )
        .watches(
            Api::<ReplicaSet>::all(client.clone()),
            watcher::Config::default(),
            scalers_targeting(store.clone()),
        )
        .reconcile_on(channel_stream(triggers))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}

/// Builds the plugin registry's ConfigMap store (reader and writer).
pub fn plugin_store() -> (Store<ConfigMap>, reflector::store::Writer<ConfigMap>) {
    reflector::store()
}

/// The plugin registry over that store.
pub fn plugin_registry(
    sandbox: hoist_sandbox::Sandbox,
    store: Store<ConfigMap>,
    metrics: Arc<Metrics>,
) -> (PluginRegistry, mpsc::UnboundedReceiver<LoadFinished>) {
    PluginRegistry::new(sandbox, store, metrics)
}
