//! The workload a Scaler drives: any resource with a `/scale` subresource, found through
//! discovery. Reads its scale and readiness, lists its pods, writes its replicas.

use std::collections::HashMap;
use std::sync::Arc;

use hoist_api::{LEAVING_ANNOTATION, POD_DELETION_COST, TargetRef};
use hoist_decide::TargetScale;
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::core::Selector;
use kube::discovery::{self, Scope};
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::RwLock;

use crate::error::OperatorError;
use crate::target_cache::{Lookup, TargetCache, TargetKey};
use crate::target_watch::TargetKind;

/// The group, version and kind `spec.targetRef` names.
fn gvk_of(target: &TargetRef) -> GroupVersionKind {
    let (group, version) = match target.api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), target.api_version.clone()),
    };
    GroupVersionKind {
        group,
        version,
        kind: target.kind.clone(),
    }
}

/// The cache's key of the object `target` names in `namespace`.
fn key_of(namespace: &str, target: &TargetRef) -> TargetKey {
    TargetKey {
        kind: TargetKind {
            api_version: target.api_version.clone(),
            kind: target.kind.clone(),
        },
        namespace: namespace.to_owned(),
        name: target.name.clone(),
    }
}

/// Resolves target kinds through discovery (cached per GVK) and talks to them.
#[derive(Clone)]
pub struct Targets {
    client: Client,
    resources: Arc<RwLock<HashMap<GroupVersionKind, ApiResource>>>,
    cache: Arc<TargetCache>,
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Targets").finish_non_exhaustive()
    }
}

impl Targets {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            resources: Arc::default(),
            cache: Arc::default(),
        }
    }

    /// The cache the target watches fill ([`crate::target_watch`]).
    pub fn cache(&self) -> Arc<TargetCache> {
        self.cache.clone()
    }

    async fn api(
        &self,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<Api<DynamicObject>, OperatorError> {
        let gvk = gvk_of(target);
        if let Some(ar) = self.resources.read().await.get(&gvk) {
            return Ok(Api::namespaced_with(self.client.clone(), namespace, ar));
        }
        let (ar, caps) = discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| OperatorError::DiscoverTarget {
                target: format!("{} {}", target.api_version, target.kind),
                source,
            })?;
        if caps.scope != Scope::Namespaced {
            return Err(OperatorError::TargetNotScalable {
                target: target.short(),
                reason: "it is cluster-scoped; a Scaler targets a namespaced workload".into(),
            });
        }
        if !caps
            .subresources
            .iter()
            // Discovery names a subresource by its own plural ("scale").
            .any(|(sub, _)| sub.plural == "scale")
        {
            return Err(OperatorError::TargetNotScalable {
                target: target.short(),
                reason: format!("{} has no /scale subresource", ar.plural),
            });
        }
        self.resources.write().await.insert(gvk, ar.clone());
        Ok(Api::namespaced_with(self.client.clone(), namespace, &ar))
    }

    /// The target's `/scale`, readiness and uid, from the watches' cache when it can answer
    /// ([`TargetCache::get`]), else from the API server. `Ok(None)` when it does not exist.
    pub async fn observe(
        &self,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<Option<TargetScale>, OperatorError> {
        match self.cache.get(&key_of(namespace, target)) {
            Lookup::Found(scale) => Ok(Some(scale)),
            Lookup::Ask(reason) => {
                tracing::trace!(target = %target.short(), reason, "reading the target from the API server");
                self.read(namespace, target).await
            }
        }
    }

    /// [`Targets::observe`] from the API server.
    async fn read(
        &self,
        namespace: &str,
        target: &TargetRef,
    ) -> Result<Option<TargetScale>, OperatorError> {
        let api = self.api(namespace, target).await?;
        let Some(object) =
            api.get_opt(&target.name)
                .await
                .map_err(|source| OperatorError::ReadTarget {
                    target: target.short(),
                    source,
                })?
        else {
            return Ok(None);
        };
        // apps/v1 workloads carry everything their /scale reports; other kinds need /scale.
        let scale =
            match scale_of_apps_object(&object) {
                Some(scale) => scale,
                None => api.get_scale(&target.name).await.map_err(|source| {
                    OperatorError::ReadTarget {
                        target: target.short(),
                        source,
                    }
                })?,
            };
        Ok(Some(state_of(&object, &scale)))
    }

    /// Writes the target's replicas through its `/scale` subresource.
    pub async fn write_replicas(
        &self,
        namespace: &str,
        target: &TargetRef,
        replicas: i32,
    ) -> Result<(), OperatorError> {
        let api = self.api(namespace, target).await?;
        api.patch_scale(
            &target.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .map_err(|source| OperatorError::WriteScale {
            target: target.short(),
            source,
        })?;
        self.cache.wrote(key_of(namespace, target), replicas);
        Ok(())
    }

    /// The target's pods, by the selector its `/scale` reports, including those being deleted
    /// (a scale-down's leaving pods stay in its hook context until they are gone).
    pub async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>, OperatorError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .map_err(|source| OperatorError::ListPods {
                namespace: namespace.to_string(),
                source,
            })?;
        Ok(list.items)
    }

    /// Marks the pods an operation chose to remove, so that a Deployment/ReplicaSet removes
    /// exactly those on scale-down (`controller.kubernetes.io/pod-deletion-cost`, lowest goes
    /// first) and later calls of the same operation choose them again (`hoist.dev/leaving`).
    pub async fn mark_leaving(
        &self,
        namespace: &str,
        pod_names: &[String],
        operation_id: &str,
    ) -> Result<(), OperatorError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"metadata": {"annotations": {
            POD_DELETION_COST: "-2147483647",
            LEAVING_ANNOTATION: operation_id,
        }}});
        for name in pod_names {
            pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|source| OperatorError::MarkPod {
                    pod: name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Removes the marks of an ended operation from the pods (of `selector`) that still carry
    /// them, so the ReplicaSet controller does not later prefer an undrained pod. Returns how
    /// many pods were unmarked.
    pub async fn release_leaving(
        &self,
        namespace: &str,
        selector: &str,
        operation_id: &str,
    ) -> Result<usize, OperatorError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let marked: Vec<String> = self
            .pods(namespace, selector)
            .await?
            .into_iter()
            .filter(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(LEAVING_ANNOTATION))
                        .is_some_and(|v| v == operation_id)
            })
            .filter_map(|p| p.metadata.name)
            .collect();
        let patch = json!({"metadata": {"annotations": {
            POD_DELETION_COST: null,
            LEAVING_ANNOTATION: null,
        }}});
        for name in &marked {
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Deleted meanwhile: nothing left to release.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => {
                    return Err(OperatorError::ReleasePod {
                        pod: name.clone(),
                        source,
                    });
                }
            }
        }
        Ok(marked.len())
    }
}

fn int_at(value: &serde_json::Value, pointer: &str) -> Option<i64> {
    value.pointer(pointer).and_then(serde_json::Value::as_i64)
}

/// Derives the observed state from the target object and its `/scale`.
pub fn state_of(object: &DynamicObject, scale: &Scale) -> TargetScale {
    let spec_replicas = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let status_replicas = scale.status.as_ref().map_or(0, |s| s.replicas);
    let ready_replicas =
        match int_at(&object.data, "/status/readyReplicas").and_then(|v| i32::try_from(v).ok()) {
            Some(ready) => Some(ready),
            None if is_apps(object) => Some(0),
            None => None,
        };
    let generation = object.metadata.generation;
    let observed = int_at(&object.data, "/status/observedGeneration");
    let generation_observed = match (generation, observed) {
        (Some(g), Some(o)) => o >= g,
        // Kinds without observedGeneration (or generation): trust the scale status.
        (_, None) | (None, Some(_)) => true,
    };
    TargetScale {
        spec_replicas,
        status_replicas,
        ready_replicas,
        observed_generation_current: generation_observed,
        selector: scale.status.as_ref().and_then(|s| s.selector.clone()),
        uid: object.metadata.uid.clone(),
    }
}

/// The `/scale` of an apps/v1 StatefulSet, Deployment or ReplicaSet, read from the object
/// itself as the API server derives it (spec.replicas, status.replicas, spec.selector), which
/// saves a request per observation. `None` for other kinds, or when the object lacks a field
/// the derivation needs (then `/scale` is asked).
pub fn scale_of_apps_object(object: &DynamicObject) -> Option<Scale> {
    let kind = object.types.as_ref().map(|t| t.kind.as_str());
    if !is_apps(object) || !matches!(kind, Some("StatefulSet" | "Deployment" | "ReplicaSet")) {
        return None;
    }
    let spec_replicas = i32::try_from(int_at(&object.data, "/spec/replicas")?).ok()?;
    let status_replicas = int_at(&object.data, "/status/replicas")
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0);
    let label_selector: LabelSelector =
        serde_json::from_value(object.data.pointer("/spec/selector")?.clone()).ok()?;
    let selector = Selector::try_from(label_selector).ok()?.to_string();
    Some(Scale {
        spec: Some(ScaleSpec {
            replicas: Some(spec_replicas),
        }),
        status: Some(ScaleStatus {
            replicas: status_replicas,
            selector: Some(selector),
        }),
        ..Scale::default()
    })
}

/// Where a custom kind keeps what its `/scale` reports: its CRD's `subresources.scale`
/// (`specReplicasPath`, `statusReplicasPath`, `labelSelectorPath`), as JSON pointers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    spec_replicas: String,
    status_replicas: String,
    label_selector: Option<String>,
}

impl ScalePaths {
    /// The paths of `version` of `crd`; `None` when that version has no `/scale` or a path is
    /// not a plain dotted path (the API server accepts only those).
    pub fn of_crd(crd: &CustomResourceDefinition, version: &str) -> Option<Self> {
        let scale = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)?
            .subresources
            .as_ref()?
            .scale
            .as_ref()?;
        Some(Self {
            spec_replicas: json_pointer(&scale.spec_replicas_path)?,
            status_replicas: json_pointer(&scale.status_replicas_path)?,
            label_selector: match &scale.label_selector_path {
                Some(path) => Some(json_pointer(path)?),
                None => None,
            },
        })
    }

    /// The `/scale` the API server derives from `object` with these paths; `None` when the
    /// object has no count at the spec path (the API server answers an error then).
    pub fn scale_of(&self, object: &DynamicObject) -> Option<Scale> {
        let spec_replicas = i32::try_from(int_at(&object.data, &self.spec_replicas)?).ok()?;
        let status_replicas = int_at(&object.data, &self.status_replicas)
            .and_then(|v| i32::try_from(v).ok())
            .unwrap_or(0);
        let selector = self
            .label_selector
            .as_ref()
            .and_then(|p| object.data.pointer(p))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        Some(Scale {
            spec: Some(ScaleSpec {
                replicas: Some(spec_replicas),
            }),
            status: Some(ScaleStatus {
                replicas: status_replicas,
                selector,
            }),
            ..Scale::default()
        })
    }
}

/// `.spec.replicas` → `/spec/replicas`; `None` for anything but a plain dotted path.
fn json_pointer(path: &str) -> Option<String> {
    let rest = path.strip_prefix('.')?;
    let parts: Vec<&str> = rest.split('.').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.contains(['[', ']', '*', '~', '/', '\\', '"', '\'']))
    {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// What the target cache keeps of `object`: its observed state, when its `/scale` can be
/// derived from it (apps/v1 kinds, or a kind whose [`ScalePaths`] are known).
pub fn cached_state(object: &DynamicObject, paths: Option<&ScalePaths>) -> Option<TargetScale> {
    let scale = scale_of_apps_object(object).or_else(|| paths?.scale_of(object))?;
    Some(state_of(object, &scale))
}

fn is_apps(object: &DynamicObject) -> bool {
    object
        .types
        .as_ref()
        .is_some_and(|t| t.api_version == "apps/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn scale(spec: i32, status: i32) -> Scale {
        Scale {
            spec: Some(ScaleSpec {
                replicas: Some(spec),
            }),
            status: Some(ScaleStatus {
                replicas: status,
                selector: Some("app=x".into()),
            }),
            ..Scale::default()
        }
    }

    #[test]
    fn statefulset_readiness_and_generation() {
        let o = object(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s", "generation": 3},
            "status": {"replicas": 3, "readyReplicas": 2, "observedGeneration": 2}}));
        let s = state_of(&o, &scale(3, 3));
        assert_eq!(s.ready_replicas, Some(2));
        assert!(
            !s.observed_generation_current,
            "observedGeneration 2 < generation 3"
        );
        assert_eq!(s.selector.as_deref(), Some("app=x"));
    }

    #[test]
    fn apps_kind_without_ready_replicas_has_none_ready() {
        // apps/v1 omits readyReplicas when it is zero.
        let o = object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "generation": 1},
            "status": {"replicas": 2, "observedGeneration": 1}}));
        let s = state_of(&o, &scale(2, 2));
        assert_eq!(s.ready_replicas, Some(0));
        assert!(s.observed_generation_current);
    }

    #[test]
    fn custom_kind_trusts_scale_status() {
        let o = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t", "generation": 4}, "status": {"replicas": 4}}));
        let s = state_of(&o, &scale(4, 4));
        assert_eq!(s.ready_replicas, None);
        assert!(s.observed_generation_current);
    }

    #[test]
    fn apps_objects_carry_their_scale() {
        let o = object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 3, "selector": {
                "matchLabels": {"app": "web", "tier": "front"},
                "matchExpressions": [
                    {"key": "track", "operator": "In", "values": ["stable", "canary"]},
                    {"key": "legacy", "operator": "DoesNotExist"}
                ]}},
            "status": {"replicas": 2}}));
        let scale = scale_of_apps_object(&o).unwrap();
        assert_eq!(scale.spec.unwrap().replicas, Some(3));
        let status = scale.status.unwrap();
        assert_eq!(status.replicas, 2);
        let selector = status.selector.unwrap();
        for part in ["app=web", "tier=front", "track in (", "!legacy"] {
            assert!(selector.contains(part), "{part} in {selector}");
        }
        // A new object has no status yet: 0 replicas reported.
        let fresh = object(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "s"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "s"}}}}));
        let status = scale_of_apps_object(&fresh).unwrap().status.unwrap();
        assert_eq!(
            (status.replicas, status.selector.as_deref()),
            (0, Some("app=s"))
        );
    }

    #[test]
    fn other_kinds_and_odd_apps_objects_ask_scale() {
        let custom = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "t"}}}}));
        assert!(scale_of_apps_object(&custom).is_none());
        let daemon = object(json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}}}}));
        assert!(scale_of_apps_object(&daemon).is_none());
        let no_selector = object(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"replicas": 1}}));
        assert!(scale_of_apps_object(&no_selector).is_none());
    }

    #[test]
    fn a_custom_kinds_scale_comes_from_its_crd_paths() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "things.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"scale": {"specReplicasPath": ".spec.size",
                        "statusReplicasPath": ".status.members.count",
                        "labelSelectorPath": ".status.selector"}}},
                    {"name": "v0", "served": true, "storage": false},
                    {"name": "v2", "served": true, "storage": false,
                     "subresources": {"scale": {"specReplicasPath": ".spec.sizes[0]",
                        "statusReplicasPath": ".status.replicas"}}}
                ]}
        }))
        .unwrap();
        let paths = ScalePaths::of_crd(&crd, "v1").unwrap();
        let thing = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t", "uid": "u1"},
            "spec": {"size": 3}, "status": {"members": {"count": 2}, "selector": "app=t"}}));
        let state = cached_state(&thing, Some(&paths)).unwrap();
        assert_eq!((state.spec_replicas, state.status_replicas), (3, 2));
        assert_eq!(state.selector.as_deref(), Some("app=t"));
        assert_eq!(state.uid.as_deref(), Some("u1"));
        // No status yet: 0 replicas, as the API server reports.
        let fresh = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t"}, "spec": {"size": 1}}));
        assert_eq!(
            cached_state(&fresh, Some(&paths)).unwrap().status_replicas,
            0
        );
        // No count at the spec path: the API server errs, the cache cannot answer.
        let empty = object(json!({"apiVersion": "example.com/v1", "kind": "Thing",
            "metadata": {"name": "t"}, "spec": {}}));
        assert!(cached_state(&empty, Some(&paths)).is_none());
        // Without paths a custom kind cannot be derived; versions without /scale or with array
        // paths give none.
        assert!(cached_state(&thing, None).is_none());
        assert!(ScalePaths::of_crd(&crd, "v0").is_none());
        assert!(ScalePaths::of_crd(&crd, "v2").is_none());
        assert!(ScalePaths::of_crd(&crd, "v9").is_none());
    }

    #[test]
    fn core_group_api_version_parses() {
        let t = TargetRef {
            api_version: "v1".into(),
            kind: "ReplicationController".into(),
            name: "r".into(),
        };
        assert_eq!(gvk_of(&t).group, "");
        let t = TargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "s".into(),
        };
        assert_eq!(gvk_of(&t).group, "apps");
        assert!(t.is_stateful_set());
    }
}
