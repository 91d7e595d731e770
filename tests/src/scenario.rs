//! Building blocks of the operator scenarios: a StatefulSet kwok runs, a Scaler's desired
//! count written as an HPA writes it, and what "Idle at N" means. Shared by the end-to-end,
//! autoscaling and chart tests and the benches.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use hoist_api::{Scaler, Stage};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use serde_json::{Value, json};

use crate::{TestNamespace, wait};

/// Bound of every wait in a scenario (generous: 2 cores, several tests at once).
pub const LONG: Duration = Duration::from_mins(2);

/// `spec.targetRef` for the StatefulSet `name`.
pub fn sts_ref(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name})
}

/// Creates a StatefulSet of `replicas` pods labelled `app=<name>` (kwok makes them Running and
/// Ready with IPs from 127.1.0.0/16, ordinals in parallel) and waits until all are ready.
pub async fn create_statefulset(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker"}]}
            }
        }
    }))
    .context("building the StatefulSet")?;
    ns.api::<StatefulSet>()
        .create(&PostParams::default(), &sts)
        .await
        .with_context(|| format!("creating StatefulSet {}/{name}", ns.name))?;
    wait_statefulset_ready(ns, name, replicas).await
}

/// Waits until the StatefulSet asks for and runs `replicas` ready pods.
pub async fn wait_statefulset_ready(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    let api = ns.api::<StatefulSet>();
    wait::until(
        LONG,
        &format!("StatefulSet {name} ready at {replicas}"),
        || {
            let api = api.clone();
            let name = name.to_string();
            async move {
                let s = api.get(&name).await?;
                let st = s.status.unwrap_or_default();
                Ok(s.spec.and_then(|s| s.replicas) == Some(replicas)
                    && st.replicas == replicas
                    && st.ready_replicas.unwrap_or(0) == replicas)
            }
        },
    )
    .await
}

/// Writes the Scaler's desired count through its `/scale` subresource, as an HPA or KEDA does.
pub async fn set_desired(ns: &TestNamespace, name: &str, replicas: i32) -> Result<()> {
    ns.api::<Scaler>()
        .patch_scale(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .with_context(|| format!("writing /scale of Scaler {}/{name}", ns.name))?;
    Ok(())
}

/// Idle, running `replicas`, with no operation recorded.
pub fn is_idle_at(s: &Scaler, replicas: i32) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.stage == Stage::Idle && st.replicas == Some(replicas) && st.operation.is_none()
    })
}

/// Records every distinct value `f` yields for one object, with when a watch saw it.
#[derive(Debug)]
pub struct Recording<T> {
    seen: Arc<Mutex<Vec<(Instant, T)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone> Recording<T> {
    /// The distinct values, oldest first.
    pub fn values(&self) -> Vec<T> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The distinct values with when each was seen.
    pub fn entries(&self) -> Vec<(Instant, T)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<T> Drop for Recording<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts recording what `f` yields for the object `name` of `api`; returns once the watch
/// has seen it the first time.
pub async fn record<K, T, F>(api: Api<K>, name: &str, f: F) -> Recording<T>
where
    K: Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Clone + Eq + std::hash::Hash,
    T: PartialEq + Clone + Send + 'static,
    F: Fn(&K) -> T + Send + 'static,
{
    let seen: Arc<Mutex<Vec<(Instant, T)>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let sink = seen.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let task = tokio::spawn(async move {
        let mut ready = Some(ready_tx);
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff().touched_objects());
        while let Some(item) = stream.next().await {
            let Ok(obj) = item else { continue };
            let value = f(&obj);
            let mut seen = sink.lock().unwrap_or_else(PoisonError::into_inner);
            if seen.last().is_none_or(|(_, last)| *last != value) {
                seen.push((Instant::now(), value));
            }
            drop(seen);
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    });
    // Wait for the first observation so nothing after this call is missed.
    let _ = tokio::time::timeout(LONG, ready_rx).await;
    Recording { seen, task }
}
