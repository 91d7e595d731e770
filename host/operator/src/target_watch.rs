//! Watches of the target kinds Scalers use beyond the three the controller watches itself
//! (`StatefulSet`, `Deployment`, `ReplicaSet`): any kind with a `/scale` subresource, usually
//! a CRD's. The kinds are found at run time in the Scalers' `targetRef`s, resolved through API
//! discovery and watched as metadata only (nothing of the objects is kept): a change of a
//! target reconciles the Scalers that name it at once, instead of at their next poll
//! ([`hoist_decide::machine::SCALING_POLL`]).
//!
//! A kind the API server does not serve, or that hoist may not list and watch (RBAC: the
//! chart's `rbac.extraTargetRules`), stays polled, is logged once, and is tried again a minute
//! later. Kinds come from tenants' Scalers, so at most [`MAX_WATCHED_KINDS`] are tracked, and
//! the watch of a kind no Scaler targets any more is stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hoist_api::Scaler;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, PartialObjectMeta};
use kube::discovery::{self, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics::{KindLabels, Metrics};

/// How often the kinds the Scalers target are looked at again.
const RESCAN: Duration = Duration::from_secs(2);
/// How long until a kind that could not be watched is tried again.
const RETRY: Duration = Duration::from_mins(1);
/// Most kinds tracked at once (watched, or waiting to be tried again).
pub const MAX_WATCHED_KINDS: usize = 32;

/// The kinds the controller watches with typed watches.
const BUILT_IN: [(&str, &str); 3] = [
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
];

/// A target kind as Scalers name it (`targetRef.apiVersion`, `targetRef.kind`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKind {
    pub api_version: String,
    pub kind: String,
}

impl TargetKind {
    /// The group, version and kind; `None` when `apiVersion` is neither `VERSION` nor
    /// `GROUP/VERSION`, or the kind is empty.
    pub fn gvk(&self) -> Option<GroupVersionKind> {
        let (group, version) = self
            .api_version
            .split_once('/')
            .unwrap_or(("", self.api_version.as_str()));
        if version.is_empty() || version.contains('/') || self.kind.is_empty() {
            return None;
        }
        Some(GroupVersionKind::gvk(group, version, &self.kind))
    }

    fn is_built_in(&self) -> bool {
        BUILT_IN
            .iter()
            .any(|(v, k)| self.api_version == *v && self.kind == *k)
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.api_version, self.kind)
    }
}

/// The kinds beyond the built-in ones that `scalers` target.
pub fn custom_kinds<'a>(scalers: impl IntoIterator<Item = &'a Scaler>) -> BTreeSet<TargetKind> {
    scalers
        .into_iter()
        .map(|s| TargetKind {
            api_version: s.spec.target_ref.api_version.clone(),
            kind: s.spec.target_ref.kind.clone(),
        })
        .filter(|k| !k.is_built_in())
        .collect()
}

/// What became of a kind.
#[derive(Debug)]
enum KindWatch {
    Watching(AbortHandle),
    Unavailable { retry_at: Instant },
}

/// Keeps a metadata watch on every kind beyond the built-in ones that a Scaler of `scalers`
/// targets, sending the Scalers naming a changed object on `trigger`.
pub fn spawn(
    client: Client,
    namespace: Option<String>,
    scalers: Store<Scaler>,
    trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
    metrics: Arc<Metrics>,
) {
    tokio::spawn(async move {
        let mut kinds: BTreeMap<TargetKind, KindWatch> = BTreeMap::new();
        let mut said_too_many = false;
        let mut tick = tokio::time::interval(RESCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let wanted = custom_kinds(scalers.state().iter().map(AsRef::as_ref));
            kinds.retain(|kind, watch| {
                let keep = wanted.contains(kind);
                if !keep && let KindWatch::Watching(task) = watch {
                    task.abort();
                    tracing::info!(%kind, "no Scaler targets this kind any more; stopped watching it");
                }
                keep
            });
            for kind in wanted {
                let due = match kinds.get(&kind) {
                    Some(KindWatch::Watching(_)) => false,
                    Some(KindWatch::Unavailable { retry_at }) => Instant::now() >= *retry_at,
                    None if kinds.len() >= MAX_WATCHED_KINDS => {
                        if !said_too_many {
                            tracing::warn!(%kind, max = MAX_WATCHED_KINDS, "Scalers target more kinds than hoist watches; the others are polled");
                            said_too_many = true;
                        }
                        false
                    }
                    None => true,
                };
                if !due {
                    continue;
                }
                let watch = match start(
                    &client,
                    namespace.as_deref(),
                    &kind,
                    &scalers,
                    &trigger,
                    &metrics,
                )
                .await
                {
                    Ok(task) => {
                        tracing::info!(%kind, "watching a kind Scalers target");
                        KindWatch::Watching(task)
                    }
                    Err(reason) => {
                        // Logged at the first failure only; the retries stay quiet.
                        if !kinds.contains_key(&kind) {
                            tracing::warn!(%kind, %reason, "cannot watch a kind Scalers target; they are polled instead");
                        }
                        KindWatch::Unavailable {
                            retry_at: Instant::now() + RETRY,
                        }
                    }
                };
                kinds.insert(kind, watch);
            }
            let watching = kinds
                .values()
                .filter(|w| matches!(w, KindWatch::Watching(_)))
                .count();
            metrics
                .watched_target_kinds
                .set(i64::try_from(watching).unwrap_or(i64::MAX));
        }
    });
}

/// Resolves `kind`, checks that it may be listed, and starts its metadata watch.
async fn start(
    client: &Client,
    namespace: Option<&str>,
    kind: &TargetKind,
    scalers: &Store<Scaler>,
    trigger: &mpsc::UnboundedSender<ObjectRef<Scaler>>,
    metrics: &Arc<Metrics>,
) -> Result<AbortHandle, String> {
    let gvk = kind
        .gvk()
        .ok_or_else(|| "the apiVersion is neither VERSION nor GROUP/VERSION".to_owned())?;
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| format!("API discovery: {e}"))?;
    if !matches!(capabilities.scope, Scope::Namespaced) {
        return Err("the kind is cluster-scoped; a Scaler targets objects of its namespace".into());
    }
    // Metadata only: nothing but the names and versions of the objects comes over the wire.
    let api: Api<PartialObjectMeta<DynamicObject>> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    // A watch hoist may not make would only retry quietly: ask once, and say why.
    api.list(&ListParams::default().limit(1))
        .await
        .map_err(|e| format!("listing {}: {e}", resource.plural))?;
    let kind = kind.clone();
    let scalers = scalers.clone();
    let trigger = trigger.clone();
    let events = metrics.target_watch_events.get_or_create(&KindLabels {
        kind: kind.to_string(),
    });
    let events = events.clone();
    let task = tokio::spawn(async move {
        let changes = watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects();
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Ok(object) => {
                    let Some(ns) = object.namespace() else {
                        continue;
                    };
                    events.inc();
                    for scaler in targeting(&scalers, &kind, &ns, &object.name_any()) {
                        let _ = trigger.send(scaler);
                    }
                }
                Err(e) => tracing::warn!(%kind, error = %e, "watching a kind Scalers target"),
            }
        }
    });
    Ok(task.abort_handle())
}

/// The Scalers of namespace `ns` whose target is `kind` `name`.
fn targeting(
    scalers: &Store<Scaler>,
    kind: &TargetKind,
    ns: &str,
    name: &str,
) -> Vec<ObjectRef<Scaler>> {
    scalers
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
        .filter(|s| {
            let t = &s.spec.target_ref;
            t.name == name && t.kind == kind.kind && t.api_version == kind.api_version
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(api_version: &str, kind: &str) -> TargetKind {
        TargetKind {
            api_version: api_version.into(),
            kind: kind.into(),
        }
    }

    #[test]
    fn api_versions_resolve_to_group_version_kind() {
        for (api_version, k, want) in [
            (
                "fixtures.hoist.dev/v1",
                "Widget",
                Some(("fixtures.hoist.dev", "v1")),
            ),
            ("v1", "ReplicationController", Some(("", "v1"))),
            ("a/b/c", "X", None),
            ("example.com/", "X", None),
            ("", "X", None),
            ("example.com/v1", "", None),
        ] {
            let got = kind(api_version, k).gvk();
            assert_eq!(
                got.as_ref().map(|g| (g.group.as_str(), g.version.as_str())),
                want,
                "{api_version} {k}"
            );
            if let Some(g) = got {
                assert_eq!(g.kind, k);
            }
        }
    }

    #[test]
    fn only_kinds_beyond_the_built_in_ones_are_watched_here() {
        let scaler = |api_version: &str, k: &str| -> Scaler {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                "metadata": {"name": "s", "namespace": "ns"},
                "spec": {"targetRef": {"apiVersion": api_version, "kind": k, "name": "t"}}
            }))
            .unwrap()
        };
        let scalers = vec![
            scaler("apps/v1", "StatefulSet"),
            scaler("apps/v1", "Deployment"),
            scaler("apps/v1", "ReplicaSet"),
            scaler("fixtures.hoist.dev/v1", "Widget"),
            scaler("fixtures.hoist.dev/v1", "Widget"),
            scaler("v1", "ReplicationController"),
            // Another version of a built-in kind is not the typed watch's.
            scaler("apps/v1beta1", "StatefulSet"),
        ];
        let kinds: Vec<String> = custom_kinds(&scalers)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            kinds,
            [
                "apps/v1beta1 StatefulSet",
                "fixtures.hoist.dev/v1 Widget",
                "v1 ReplicationController"
            ]
        );
    }
}
