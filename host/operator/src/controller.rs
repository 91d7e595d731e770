//! The Scaler controller: runs [`reconcile`](crate::reconcile::reconcile) for each Scaler.
//! Watches Scalers, the workloads they target (StatefulSets, Deployments, ReplicaSets here;
//! other kinds through [`crate::target_watch`]) and the plugin ConfigMaps, mapping changes
//! back to the Scalers that use them.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use hoist_api::HookPolicy;
use hoist_api::Scaler;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;

use crate::events::Publisher;
use crate::metrics::Metrics;
use crate::plugins::{LoadFinished, OciSources, PLUGIN_LABEL, PluginRegistry, SourceKey};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::target_index::{ByTarget, TargetKey};
use hoist_api::PluginLocation;

/// Scalers whose `spec.hooks.plugin` is `source`.
fn scalers_using(store: &Store<Scaler>, source: &SourceKey) -> Vec<Arc<Scaler>> {
    scalers_in_namespace_where(store, source.namespace(), |plugin| {
        SourceKey::new(source.namespace(), plugin) == *source
    })
}

/// Scalers in `namespace` whose plugin is in ConfigMap `name` (any key).
fn scalers_using_config_map(
    store: &Store<Scaler>,
    namespace: &str,
    name: &str,
) -> Vec<Arc<Scaler>> {
    scalers_in_namespace_where(
        store,
        namespace,
        |plugin| matches!(plugin.location(), PluginLocation::ConfigMap { name: n, .. } if n == name),
    )
}

fn scalers_in_namespace_where(
    store: &Store<Scaler>,
    namespace: &str,
    uses: impl Fn(&hoist_api::PluginRef) -> bool,
) -> Vec<Arc<Scaler>> {
    store
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
        .filter(|s| s.spec.hooks.as_ref().is_some_and(|h| uses(&h.plugin)))
        .collect()
}

fn channel_stream<T: Send + 'static>(
    rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// The watch of objects hoist owns (its label), e.g. the HPAs of `hpa` mode.
fn owned_objects() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={}",
        hoist_api::MANAGED_BY_LABEL,
        hoist_api::MANAGED_BY
    ))
}

/// Everything the controller is built from.
pub struct Parts {
    pub client: Client,
    pub context: Arc<Context>,
    pub configmaps: reflector::store::Writer<ConfigMap>,
    pub loads: mpsc::UnboundedReceiver<LoadFinished>,
    pub recorder: Publisher,
    pub concurrency: u16,
    /// Watch only this namespace (`hoist run --namespace`); `None` watches all.
    pub namespace: Option<String>,
    /// Reconcile requests from the autoscaling modes (owned ScaledObject changes).
    pub autoscaling_triggers: mpsc::UnboundedReceiver<ObjectRef<Scaler>>,
    /// Watch the HPAs hoist owns (`hoist run --hpa-mode`).
    pub watch_hpas: bool,
    /// Told once every store the reconcile reads (Scalers, plugin ConfigMaps, HPAs,
    /// `HookPolicies`, Namespaces) has listed its objects: until then the replica is not ready.
    pub caches_synced: tokio::sync::oneshot::Sender<()>,
    /// The cluster's `HookPolicies` and Namespaces (always cluster-wide: policies are
    /// cluster-scoped and select namespaces by their labels), and their listed signals.
    pub policy_watch: PolicyWatch,
    /// `hoist run --shards N`: the shards this replica owns, as they change.
    pub owned_shards: Option<tokio::sync::watch::Receiver<Vec<bool>>>,
}

/// The writers and listed signals of the stores [`crate::policy::Policies`] reads.
pub struct PolicyWatch {
    pub policies: reflector::store::Writer<HookPolicy>,
    pub namespaces: reflector::store::Writer<Namespace>,
    pub listed: [tokio::sync::watch::Sender<bool>; 2],
}

impl std::fmt::Debug for PolicyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyWatch").finish_non_exhaustive()
    }
}

/// The policy stores: the [`crate::policy::Policies`] the reconcile reads, and the
/// [`PolicyWatch`] the controller fills them with.
pub fn policy_stores() -> (crate::policy::Policies, PolicyWatch) {
    let (policies, policy_writer) = reflector::store::<HookPolicy>();
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let (policies_listed, policies_rx) = tokio::sync::watch::channel(false);
    let (namespaces_listed, namespaces_rx) = tokio::sync::watch::channel(false);
    (
        crate::policy::Policies::new(policies, namespaces, [policies_rx, namespaces_rx]),
        PolicyWatch {
            policies: policy_writer,
            namespaces: namespace_writer,
            listed: [policies_listed, namespaces_listed],
        },
    )
}

/// Watches `HookPolicies` and Namespaces into the policy stores. A policy that appears, changes
/// or goes reconciles every Scaler (policies change rarely and may select any namespace); a
/// namespace whose labels change reconciles its Scalers.
fn spawn_policy_watch(
    client: &Client,
    watch: PolicyWatch,
    scalers: Store<Scaler>,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
) -> [Listed; 2] {
    let PolicyWatch {
        policies,
        namespaces,
        listed: [policies_listed, namespaces_listed],
    } = watch;
    let listed = [policies_listed.subscribe(), namespaces_listed.subscribe()];
    let policy_events = reflector(
        policies,
        watcher(
            Api::<HookPolicy>::all(client.clone()),
            watcher::Config::default(),
        )
        .inspect(mark_listed(policies_listed)),
    )
    .default_backoff()
    .touched_objects();
    let all_scalers = scalers.clone();
    let policy_trigger = trigger.clone();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(policy_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(policy) => {
                    for problem in policy.spec.problems() {
                        tracing::warn!(policy = %policy.name_any(), %problem, "HookPolicy has a problem; an unreadable namespaceSelector selects nothing");
                    }
                    for s in all_scalers.state() {
                        let _ = policy_trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching HookPolicies"),
            }
        }
    });
    let namespace_events = reflector(
        namespaces,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(|n| n.managed_fields_mut().clear())
        .inspect(mark_listed(namespaces_listed)),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(namespace_events);
        while let Some(event) = events.next().await {
            match event {
                Ok(ns) => {
                    let name = ns.name_any();
                    for s in scalers
                        .state()
                        .iter()
                        .filter(|s| s.metadata.namespace.as_deref() == Some(name.as_str()))
                    {
                        let _ = trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching Namespaces"),
            }
        }
    });
    listed
}

/// An API over one namespace, or over all of them.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// How often per-Scaler memory of deleted Scalers is dropped.
const PRUNE_INTERVAL: Duration = Duration::from_mins(1);

/// Deleted Scalers are not reconciled again: every [`PRUNE_INTERVAL`], drop what the
/// autoscalers keep for Scalers that are gone from the store (once it has listed them all).
fn spawn_pruner(store: Store<Scaler>, context: Arc<Context>, mut listed: Listed) {
    tokio::spawn(async move {
        if listed.wait_for(|l| *l).await.is_err() {
            return;
        }
        let mut every = tokio::time::interval(PRUNE_INTERVAL);
        loop {
            every.tick().await;
            let live = store
                .state()
                .iter()
                .filter_map(|s| s.uid())
                .collect::<std::collections::HashSet<_>>();
            context.autoscalers.retain_scalers(&live);
            context.latest.retain(&live);
            context.hooks.plugins.retain(&store.state());
        }
    });
}

/// Whether a watch has listed every object once (its first `InitDone`). The caches say so
/// themselves (`Store::wait_until_ready`), but kube-runtime 5's store keeps one waker for all
/// its waiters: with the controller, the pruner and the readiness signal all waiting on the
/// Scaler store, all but the last to poll could sleep forever (a leader in a pod stayed unready).
/// A watch channel wakes every receiver.
pub type Listed = tokio::sync::watch::Receiver<bool>;

/// Marks `listed` at the watch's first `InitDone` (for `.inspect` on a watcher stream).
fn mark_listed<K>(
    listed: tokio::sync::watch::Sender<bool>,
) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            listed.send_replace(true);
        }
    }
}

/// The annotation `kubectl apply` keeps the whole applied object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What hoist keeps of a Scaler for the life of the process: without managedFields and
/// `kubectl apply`'s copy of the object (never read here, and together often larger than the
/// rest of a Scaler).
pub(crate) fn trim_cached(scaler: &mut Scaler) {
    scaler.managed_fields_mut().clear();
    if let Some(annotations) = scaler.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The Scaler controller over its own watch. The store holds every Scaler for the life of
/// the process, trimmed ([`trim_cached`]) before it is stored.
fn scaler_controller(
    client: &Client,
    namespace: Option<&str>,
    by_target: ByTarget<Scaler>,
    listed: tokio::sync::watch::Sender<bool>,
) -> Controller<Scaler> {
    let (store, writer) = reflector::store::<Scaler>();
    let previous = store.clone();
    let watch = reflector(
        writer,
        watcher(
            scoped::<Scaler>(client, namespace),
            watcher::Config::default().any_semantic(),
        )
        .modify(trim_cached)
        .inspect(move |event| {
            if let Ok(event) = event {
                by_target.apply(event, &previous);
            }
        })
        .inspect(mark_listed(listed)),
    )
    .applied_objects();
    Controller::for_stream(watch, store)
}

/// Plugin ConfigMaps: keeps the registry's store; a change reconciles the Scalers using it.
fn spawn_plugin_watch(
    client: &Client,
    namespace: Option<&str>,
    configmaps: reflector::store::Writer<ConfigMap>,
    scalers: Store<Scaler>,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
    listed: tokio::sync::watch::Sender<bool>,
) {
    let cm_watch = reflector(
        configmaps,
        watcher(
            scoped::<ConfigMap>(client, namespace),
            watcher::Config::default().labels(PLUGIN_LABEL),
        )
        .inspect(mark_listed(listed)),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut cm_watch = std::pin::pin!(cm_watch);
        while let Some(event) = cm_watch.next().await {
            match event {
                Ok(cm) => {
                    let ns = cm.namespace().unwrap_or_default();
                    for s in scalers_using_config_map(&scalers, &ns, &cm.name_any()) {
                        let _ = trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching plugin ConfigMaps"),
            }
        }
    });
}

/// Watches every HorizontalPodAutoscaler of the watched namespaces into the store the conflict
/// check reads ([`crate::rivals`]); one that appears, changes or goes reconciles the Scalers of
/// the workload it aims at.
fn spawn_hpa_watch(
    client: &Client,
    namespace: Option<&str>,
    context: &Context,
    scalers: Store<Scaler>,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
    listed: tokio::sync::watch::Sender<bool>,
) {
    let (store, writer) = reflector::store::<HorizontalPodAutoscaler>();
    let _ = context.hpas.set(store.clone());
    let hpa_index = context.by_target.hpas.clone();
    let scaler_index = context.by_target.scalers.clone();
    let watch = reflector(
        writer,
        watcher(
            scoped::<HorizontalPodAutoscaler>(client, namespace),
            watcher::Config::default(),
        )
        .inspect(move |event| {
            if let Ok(event) = event {
                hpa_index.apply(event, &store);
            }
        })
        .inspect(mark_listed(listed)),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        let mut watch = std::pin::pin!(watch);
        while let Some(event) = watch.next().await {
            match event {
                Ok(hpa) => {
                    let Some(target) = TargetKey::of_hpa(&hpa) else {
                        continue;
                    };
                    for s in scaler_index.aiming_at(&target, &scalers) {
                        let _ = trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "watching HorizontalPodAutoscalers"),
            }
        }
    });
}

/// Sends on `synced` once the Scaler, plugin ConfigMap, HPA, `HookPolicy` and Namespace watches
/// have each listed their objects (a watch that never lists keeps the replica unready, which
/// is the point).
fn spawn_sync_signal(caches: [Listed; 5], synced: tokio::sync::oneshot::Sender<()>) {
    tokio::spawn(async move {
        for mut listed in caches {
            if listed.wait_for(|l| *l).await.is_err() {
                return;
            }
        }
        let _ = synced.send(());
    });
}

/// Shards this replica comes to own (taken, or renewed in time again after a lapse): reconcile
/// their Scalers, which were passed over while another replica (or nobody) owned them.
fn spawn_shard_gains(
    mut owned: tokio::sync::watch::Receiver<Vec<bool>>,
    store: Store<Scaler>,
    context: Arc<Context>,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
) {
    tokio::spawn(async move {
        let mut before = owned.borrow_and_update().clone();
        while owned.changed().await.is_ok() {
            let now = owned.borrow_and_update().clone();
            let gained: Vec<bool> = now
                .iter()
                .enumerate()
                .map(|(i, o)| *o && !before.get(i).copied().unwrap_or(false))
                .collect();
            if let crate::fence::Fence::Shards(ownership) = &context.actor.fence
                && gained.iter().any(|g| *g)
            {
                let mut count = 0usize;
                for s in store.state() {
                    let shard = ownership.shard_of(&s.uid().unwrap_or_default());
                    if gained.get(shard as usize).copied().unwrap_or(false) {
                        count += 1;
                        let _ = trigger.send(ObjectRef::from_obj(s.as_ref()));
                    }
                }
                tracing::info!(shards = ?now, scalers = count, "owned shards changed; reconciling their Scalers");
            }
            before = now;
        }
    });
}

/// Finished plugin loads: reconcile the Scalers of that source; tell them about rejects (the
/// Scalers this replica owns: with shards, the others' owners tell theirs).
fn spawn_load_reports(
    loads: mpsc::UnboundedReceiver<LoadFinished>,
    store: Store<Scaler>,
    context: Arc<Context>,
    recorder: Publisher,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
) {
    tokio::spawn(async move {
        let mut loads = std::pin::pin!(channel_stream(loads));
        while let Some(done) = loads.next().await {
            for s in scalers_using(&store, &done.source) {
                if let Some(reason) = &done.error
                    && context.actor.fence.owns(&s)
                {
                    let note = match &done.digest {
                        Some(digest) => {
                            format!("{}: plugin {digest} rejected: {reason}", done.source)
                        }
                        None => format!("{}: {reason}", done.source),
                    };
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "PluginRejected".into(),
                        note: Some(note),
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
        namespace,
        autoscaling_triggers,
        watch_hpas,
        caches_synced,
        policy_watch,
        owned_shards,
    } = parts;
    let namespace = namespace.as_deref();
    let (scalers_listed, scalers_listed_rx) = tokio::sync::watch::channel(false);
    let (configmaps_listed, configmaps_listed_rx) = tokio::sync::watch::channel(false);
    let (hpas_listed, hpas_listed_rx) = tokio::sync::watch::channel(false);
    let controller = scaler_controller(
        &client,
        namespace,
        context.by_target.scalers.clone(),
        scalers_listed,
    );
    let store = controller.store();
    let _ = context.scalers.set(store.clone());
    let (trigger, triggers) = mpsc::unbounded_channel::<ObjectRef<Scaler>>();

    spawn_plugin_watch(
        &client,
        namespace,
        configmaps,
        store.clone(),
        trigger.clone(),
        configmaps_listed,
    );
    spawn_hpa_watch(
        &client,
        namespace,
        &context,
        store.clone(),
        trigger.clone(),
        hpas_listed,
    );
    let [policies_listed_rx, namespaces_listed_rx] =
        spawn_policy_watch(&client, policy_watch, store.clone(), trigger.clone());
    spawn_sync_signal(
        [
            scalers_listed_rx.clone(),
            configmaps_listed_rx,
            hpas_listed_rx,
            policies_listed_rx,
            namespaces_listed_rx,
        ],
        caches_synced,
    );

    crate::target_watch::spawn(crate::target_watch::WatchParts {
        client: client.clone(),
        namespace: namespace.map(str::to_owned),
        scalers: store.clone(),
        by_target: context.by_target.scalers.clone(),
        trigger: trigger.clone(),
        metrics: context.metrics.clone(),
        cache: context.hooks.targets.cache(),
    });
    spawn_load_reports(
        loads,
        store.clone(),
        context.clone(),
        recorder,
        trigger.clone(),
    );
    if let Some(owned) = owned_shards {
        spawn_shard_gains(owned, store.clone(), context.clone(), trigger.clone());
    }
    spawn_pruner(store.clone(), context.clone(), scalers_listed_rx);

    // The targets' watches (crate::target_watch) reconcile the Scalers of a changed target.
    let mut controller =
        controller.with_config(ControllerConfig::default().concurrency(concurrency));
    if watch_hpas {
        // The HPAs hoist owns (hpa mode): an edit or deletion reconciles the owning Scaler.
        controller = controller.owns(
            scoped::<HorizontalPodAutoscaler>(&client, namespace),
            owned_objects(),
        );
    }
    controller
        .reconcile_on(channel_stream(triggers))
        .reconcile_on(channel_stream(autoscaling_triggers))
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
    oci: Option<OciSources>,
    metrics: Arc<Metrics>,
) -> (PluginRegistry, mpsc::UnboundedReceiver<LoadFinished>) {
    PluginRegistry::new(sandbox, store, oci, metrics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_cached_scaler_keeps_its_annotations_but_not_kubectl_s_copy() {
        let mut s: Scaler = serde_json::from_value(serde_json::json!({
            "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
            "metadata": {
                "name": "s", "namespace": "ns",
                "annotations": {LAST_APPLIED: "{\"big\": true}", "hoist.dev/retry": "1"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}]
            },
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}}
        }))
        .unwrap();
        trim_cached(&mut s);
        assert!(s.metadata.managed_fields.unwrap_or_default().is_empty());
        let annotations = s.metadata.annotations.unwrap();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["hoist.dev/retry"]);
    }
}
