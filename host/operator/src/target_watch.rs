//! Watches of every target kind Scalers use: the three apps/v1 kinds always, and any other
//! kind with a `/scale` subresource (usually a CRD's) while a Scaler targets it. The kinds
//! beyond the three are found at run time in the Scalers' `targetRef`s and resolved through
//! API discovery. Each watch keeps a small view of every object ([`crate::target_cache`]:
//! scale, readiness, uid; not the object) that observing reads instead of the API server, and
//! a change of that view reconciles the Scalers that name the object at once.
//!
//! For a kind beyond apps/v1 the view needs the kind's scale paths, read from its
//! `CustomResourceDefinition` (RBAC: `get` on `customresourcedefinitions`, in the chart).
//! Without them the watch still reconciles on every change, and observing asks `/scale`.
//!
//! A kind the API server does not serve, or that hoist may not list and watch (RBAC: the
//! chart's `rbac.extraTargetRules`), stays polled, is logged once, and is tried again a minute
//! later. Kinds come from tenants' Scalers, so at most [`MAX_WATCHED_KINDS`] are tracked, and
//! the watch of a kind no Scaler targets any more is stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hoist_api::Scaler;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::discovery::{self, Scope};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics::{KindLabels, Metrics};
use crate::target::{ScalePaths, cached_state};
use crate::target_cache::{Cached, TargetCache};
use crate::target_index::{ByTarget, TargetKey};

/// How often the kinds the Scalers target are looked at again.
const RESCAN: Duration = Duration::from_secs(2);
/// How long until a kind that could not be watched is tried again.
const RETRY: Duration = Duration::from_mins(1);
/// Most kinds tracked at once (watched, or waiting to be tried again).
pub const MAX_WATCHED_KINDS: usize = 32;

/// The kinds watched whether or not a Scaler targets them.
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

    fn built_in() -> impl Iterator<Item = Self> {
        BUILT_IN.iter().map(|(v, k)| Self {
            api_version: (*v).to_owned(),
            kind: (*k).to_owned(),
        })
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

/// What a kind's watch needs.
#[derive(Clone)]
pub struct WatchParts {
    pub client: Client,
    /// Watch only this namespace (`hoist run --namespace`); `None` watches all.
    pub namespace: Option<String>,
    pub scalers: Store<Scaler>,
    /// The Scalers by target, kept from the Scaler watch.
    pub by_target: ByTarget<Scaler>,
    pub trigger: mpsc::UnboundedSender<ObjectRef<Scaler>>,
    pub metrics: Arc<Metrics>,
    pub cache: Arc<TargetCache>,
}

impl fmt::Debug for WatchParts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchParts")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Keeps a watch on the built-in kinds and on every other kind a Scaler of `parts.scalers`
/// targets, filling `parts.cache` and sending the Scalers naming a changed object on
/// `parts.trigger`.
pub fn spawn(parts: WatchParts) {
    tokio::spawn(async move {
        let mut kinds: BTreeMap<TargetKind, KindWatch> = BTreeMap::new();
        let mut said_too_many = false;
        let mut tick = tokio::time::interval(RESCAN);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let custom = custom_kinds(parts.scalers.state().iter().map(AsRef::as_ref));
            kinds.retain(|kind, watch| {
                let keep = kind.is_built_in() || custom.contains(kind);
                if !keep && let KindWatch::Watching(task) = watch {
                    task.abort();
                    parts.cache.forget(kind);
                    tracing::info!(%kind, "no Scaler targets this kind any more; stopped watching it");
                }
                keep
            });
            let custom_tracked = kinds.keys().filter(|k| !k.is_built_in()).count();
            let wanted = TargetKind::built_in().chain(custom);
            for kind in wanted {
                let due = match kinds.get(&kind) {
                    Some(KindWatch::Watching(_)) => false,
                    Some(KindWatch::Unavailable { retry_at }) => Instant::now() >= *retry_at,
                    None if !kind.is_built_in() && custom_tracked >= MAX_WATCHED_KINDS => {
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
                let watch = match start(&parts, &kind).await {
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
                .iter()
                .filter(|(k, w)| !k.is_built_in() && matches!(w, KindWatch::Watching(_)))
                .count();
            parts
                .metrics
                .watched_target_kinds
                .set(i64::try_from(watching).unwrap_or(i64::MAX));
        }
    });
}

/// Resolves `kind`, checks that it may be listed, and starts its watch.
async fn start(parts: &WatchParts, kind: &TargetKind) -> Result<AbortHandle, String> {
    let gvk = kind
        .gvk()
        .ok_or_else(|| "the apiVersion is neither VERSION nor GROUP/VERSION".to_owned())?;
    let (resource, capabilities) = discovery::pinned_kind(&parts.client, &gvk)
        .await
        .map_err(|e| format!("API discovery: {e}"))?;
    if !matches!(capabilities.scope, Scope::Namespaced) {
        return Err("the kind is cluster-scoped; a Scaler targets objects of its namespace".into());
    }
    let api: Api<DynamicObject> = match parts.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(parts.client.clone(), ns, &resource),
        None => Api::all_with(parts.client.clone(), &resource),
    };
    // A watch hoist may not make would only retry quietly: ask once, and say why.
    api.list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(|e| format!("listing {}: {e}", resource.plural))?;
    let paths = if kind.is_built_in() {
        None
    } else {
        scale_paths(&parts.client, &resource, kind).await
    };
    let events = parts
        .metrics
        .target_watch_events
        .get_or_create(&KindLabels {
            kind: kind.to_string(),
        })
        .clone();
    let parts = parts.clone();
    let kind = kind.clone();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listing: HashMap<(String, String), Cached> = HashMap::new();
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "watching a kind Scalers target");
                    continue;
                }
            };
            let Some((ns, name)) =
                remember(&parts.cache, &kind, paths.as_ref(), &mut listing, event)
            else {
                continue;
            };
            events.inc();
            for scaler in targeting(&parts.by_target, &parts.scalers, &kind, ns, name) {
                let _ = parts.trigger.send(scaler);
            }
        }
    });
    Ok(task.abort_handle())
}

/// Puts what `event` shows into `cache` (a (re)list gathers in `listing` and replaces the
/// kind's objects when done). Returns the object whose Scalers are to be reconciled: one whose
/// view changed, or whose view cannot be kept (then any change may matter).
fn remember(
    cache: &TargetCache,
    kind: &TargetKind,
    paths: Option<&ScalePaths>,
    listing: &mut HashMap<(String, String), Cached>,
    event: watcher::Event<DynamicObject>,
) -> Option<(String, String)> {
    match event {
        watcher::Event::Init => {
            cache.listing(kind);
            listing.clear();
            None
        }
        watcher::Event::InitDone => {
            cache.listed(kind, std::mem::take(listing));
            None
        }
        watcher::Event::InitApply(object) => {
            let (ns, name) = (object.namespace()?, object.name_any());
            let state = cached_state(&object, paths);
            let news = !cache.unchanged(kind, &ns, &name, state.as_ref());
            listing.insert((ns.clone(), name.clone()), state);
            news.then_some((ns, name))
        }
        watcher::Event::Apply(object) => {
            let (ns, name) = (object.namespace()?, object.name_any());
            let state = cached_state(&object, paths);
            let news = !cache.unchanged(kind, &ns, &name, state.as_ref());
            cache.applied(kind, ns.clone(), name.clone(), state);
            news.then_some((ns, name))
        }
        watcher::Event::Delete(object) => {
            let (ns, name) = (object.namespace()?, object.name_any());
            cache.deleted(kind, &ns, &name);
            Some((ns, name))
        }
    }
}

/// The scale paths of a custom kind, from its `CustomResourceDefinition`; `None` (logged)
/// when hoist may not read it, or the kind is not a CRD's (an aggregated API's).
async fn scale_paths(
    client: &Client,
    resource: &ApiResource,
    kind: &TargetKind,
) -> Option<ScalePaths> {
    let name = format!("{}.{}", resource.plural, resource.group);
    match Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(&name)
        .await
    {
        Ok(Some(crd)) => {
            let paths = ScalePaths::of_crd(&crd, &resource.version);
            if paths.is_none() {
                tracing::info!(%kind, crd = %name, "the CRD gives no plain scale paths; observing asks /scale");
            }
            paths
        }
        Ok(None) => {
            tracing::info!(%kind, "not a CRD's kind; observing asks /scale");
            None
        }
        Err(e) => {
            tracing::info!(%kind, crd = %name, error = %e, "cannot read the kind's CRD; observing asks /scale");
            None
        }
    }
}

/// The Scalers of namespace `ns` whose target is `kind` `name` (looked up by target, not
/// scanned).
fn targeting(
    by_target: &ByTarget<Scaler>,
    scalers: &Store<Scaler>,
    kind: &TargetKind,
    namespace: String,
    name: String,
) -> Vec<ObjectRef<Scaler>> {
    let key = TargetKey {
        namespace,
        kind: kind.kind.clone(),
        name,
    };
    by_target
        .aiming_at(&key, scalers)
        .iter()
        .filter(|s| s.spec.target_ref.api_version == kind.api_version)
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
