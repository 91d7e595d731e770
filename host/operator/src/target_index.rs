//! Which objects aim at a workload: an index by target (namespace, kind, name) of the Scalers
//! and of the `HorizontalPodAutoscalers`, kept from their watches' events. A target's watch
//! event and a reconcile's conflict check look up the few objects of one target here instead
//! of scanning every Scaler (at 10,000 Scalers, a scan per event and per reconcile was most of
//! the operator's CPU in a mass change).
//!
//! The index holds references only; the objects stay in the watches' stores. It is updated
//! just before the store (from the same event), so a reference may name an object the store
//! does not have yet or any more: readers look the object up and skip it then.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use hoist_api::Scaler;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// A workload as its Scalers and HPAs name it; the API version is left out (an HPA may omit
/// it), and readers compare it on the objects they find.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub namespace: String,
    pub kind: String,
    pub name: String,
}

impl TargetKey {
    /// The target of `scaler`.
    pub fn of_scaler(scaler: &Scaler) -> Option<Self> {
        let t = &scaler.spec.target_ref;
        Some(Self {
            namespace: scaler.metadata.namespace.clone()?,
            kind: t.kind.clone(),
            name: t.name.clone(),
        })
    }

    /// The target of `hpa`.
    pub fn of_hpa(hpa: &HorizontalPodAutoscaler) -> Option<Self> {
        let r = &hpa.spec.as_ref()?.scale_target_ref;
        Some(Self {
            namespace: hpa.metadata.namespace.clone()?,
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
    }
}

/// Both directions: the objects of each target, and the target of each object (to move an
/// object whose target changed).
struct Maps<K: Resource<DynamicType = ()>> {
    by_target: HashMap<TargetKey, HashSet<ObjectRef<K>>>,
    target_of: HashMap<ObjectRef<K>, TargetKey>,
}

impl<K: Resource<DynamicType = ()>> Default for Maps<K> {
    fn default() -> Self {
        Self {
            by_target: HashMap::new(),
            target_of: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Maps<K> {
    fn insert(&mut self, object: ObjectRef<K>, key: Option<TargetKey>) {
        self.remove(&object);
        if let Some(key) = key {
            self.by_target
                .entry(key.clone())
                .or_default()
                .insert(object.clone());
            self.target_of.insert(object, key);
        }
    }

    fn remove(&mut self, object: &ObjectRef<K>) {
        if let Some(old) = self.target_of.remove(object)
            && let Some(refs) = self.by_target.get_mut(&old)
        {
            refs.remove(object);
            if refs.is_empty() {
                self.by_target.remove(&old);
            }
        }
    }
}

struct Index<K: Resource<DynamicType = ()>> {
    current: Maps<K>,
    /// A relist in progress: the new maps, which replace the current ones when complete.
    relisting: Option<Maps<K>>,
}

impl<K: Resource<DynamicType = ()>> Default for Index<K> {
    fn default() -> Self {
        Self {
            current: Maps::default(),
            relisting: None,
        }
    }
}

/// The index of one kind, shared by its watch (the writer) and its readers.
pub struct ByTarget<K: Resource<DynamicType = ()>> {
    index: Arc<Mutex<Index<K>>>,
    key: fn(&K) -> Option<TargetKey>,
}

impl<K: Resource<DynamicType = ()>> Clone for ByTarget<K> {
    fn clone(&self) -> Self {
        Self {
            index: self.index.clone(),
            key: self.key,
        }
    }
}

impl<K: Resource<DynamicType = ()>> std::fmt::Debug for ByTarget<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByTarget").finish_non_exhaustive()
    }
}

impl<K> ByTarget<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn new(key: fn(&K) -> Option<TargetKey>) -> Self {
        Self {
            index: Arc::new(Mutex::new(Index::default())),
            key,
        }
    }

    /// Follows one event of the kind's watch (for `.inspect` on the watcher stream).
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => index.relisting = Some(Maps::default()),
            watcher::Event::InitApply(object) => {
                if let Some(maps) = index.relisting.as_mut() {
                    maps.insert(ObjectRef::from_obj(object), (self.key)(object));
                }
            }
            watcher::Event::InitDone => {
                if let Some(maps) = index.relisting.take() {
                    index.current = maps;
                }
            }
            watcher::Event::Apply(object) => {
                index
                    .current
                    .insert(ObjectRef::from_obj(object), (self.key)(object));
            }
            watcher::Event::Delete(object) => {
                index.current.remove(&ObjectRef::from_obj(object));
            }
        }
    }

    /// The objects of `store` that aim at `target`.
    pub fn aiming_at(&self, target: &TargetKey, store: &Store<K>) -> Vec<Arc<K>> {
        self.refs(target)
            .iter()
            .filter_map(|r| store.get(r))
            .collect()
    }

    /// References to the objects that aim at `target`, by name.
    pub fn refs(&self, target: &TargetKey) -> Vec<ObjectRef<K>> {
        let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let mut refs: Vec<ObjectRef<K>> = index
            .current
            .by_target
            .get(target)
            .map(|refs| refs.iter().cloned().collect())
            .unwrap_or_default();
        drop(index);
        refs.sort_by(|a, b| a.name.cmp(&b.name));
        refs
    }
}

/// The Scalers and the HPAs by target.
#[derive(Debug, Clone)]
pub struct TargetIndexes {
    pub scalers: ByTarget<Scaler>,
    pub hpas: ByTarget<HorizontalPodAutoscaler>,
}

impl Default for TargetIndexes {
    fn default() -> Self {
        Self {
            scalers: ByTarget::new(TargetKey::of_scaler),
            hpas: ByTarget::new(TargetKey::of_hpa),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use serde_json::json;

    fn scaler(name: &str, target: &str) -> Scaler {
        serde_json::from_value(json!({
            "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": target}},
        }))
        .unwrap()
    }

    fn key(name: &str) -> TargetKey {
        TargetKey {
            namespace: "ns".into(),
            kind: "StatefulSet".into(),
            name: name.into(),
        }
    }

    fn names(index: &ByTarget<Scaler>, target: &str) -> Vec<String> {
        index
            .refs(&key(target))
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn follows_applies_retargets_and_deletes() {
        let index = TargetIndexes::default().scalers;
        index.apply(&watcher::Event::Apply(scaler("a", "web")));
        index.apply(&watcher::Event::Apply(scaler("b", "web")));
        index.apply(&watcher::Event::Apply(scaler("c", "db")));
        assert_eq!(names(&index, "web"), ["a", "b"]);
        index.apply(&watcher::Event::Apply(scaler("b", "db")));
        assert_eq!(names(&index, "web"), ["a"]);
        assert_eq!(names(&index, "db"), ["b", "c"]);
        index.apply(&watcher::Event::Delete(scaler("a", "web")));
        assert!(names(&index, "web").is_empty());
        assert!(
            !index
                .index
                .lock()
                .unwrap()
                .current
                .by_target
                .contains_key(&key("web"))
        );
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let index = TargetIndexes::default().scalers;
        index.apply(&watcher::Event::Apply(scaler("gone", "web")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(scaler("new", "web")));
        assert_eq!(
            names(&index, "web"),
            ["gone"],
            "the old index until InitDone"
        );
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "web"), ["new"]);
    }

    #[test]
    fn hpas_are_found_by_the_workload_they_scale() {
        let index = TargetIndexes::default().hpas;
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "web"}, "maxReplicas": 3}
        }))
        .unwrap();
        index.apply(&watcher::Event::Apply(hpa));
        assert_eq!(index.refs(&key("web")).len(), 1);
        assert!(index.refs(&key("db")).is_empty());
    }
}
