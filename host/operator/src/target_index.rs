//! Which objects aim at a workload: an index by target (namespace, kind, name) of the Scalers
//! and of the `HorizontalPodAutoscalers`, kept from their watches' events. A target's watch
//! event and a reconcile's conflict check look up the few objects of one target here instead
//! of scanning every Scaler (at 10,000 Scalers, a scan per event and per reconcile).
//!
//! The index is small: per object, its `namespace/name` once, filed under a 64-bit hash of its
//! target. Readers look the objects up in the watch's store and keep those whose target is the
//! one asked for (which also drops a hash collision, or an object the store no longer has).
//! It follows each event just before the store does, so the store still holds an object's
//! previous version, whose target tells where to unfile it from.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use hoist_api::Scaler;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

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

    fn filed_under(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// `namespace/name` of the objects filed under each target hash.
type Filed = HashMap<u64, Vec<Box<str>>>;

fn id<K: Resource>(object: &K) -> Box<str> {
    format!(
        "{}/{}",
        object.meta().namespace.as_deref().unwrap_or_default(),
        object.meta().name.as_deref().unwrap_or_default()
    )
    .into_boxed_str()
}

fn file(filed: &mut Filed, target: &TargetKey, id: Box<str>) {
    let ids = filed.entry(target.filed_under()).or_default();
    if !ids.contains(&id) {
        ids.push(id);
    }
}

fn unfile(filed: &mut Filed, target: &TargetKey, id: &str) {
    let under = target.filed_under();
    if let Some(ids) = filed.get_mut(&under) {
        ids.retain(|i| &**i != id);
        if ids.is_empty() {
            filed.remove(&under);
        }
    }
}

#[derive(Default)]
struct Index {
    current: Filed,
    /// A relist in progress: the new index, which replaces the current one when complete.
    relisting: Option<Filed>,
}

/// The index of one kind, shared by its watch (the writer) and its readers.
pub struct ByTarget<K: Resource<DynamicType = ()>> {
    index: Arc<Mutex<Index>>,
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

    /// Follows one event of the kind's watch (for `.inspect` on the watcher stream, upstream of
    /// the reflector that writes `store`: the store still has the object's previous version).
    pub fn apply(&self, event: &watcher::Event<K>, store: &Store<K>) {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            watcher::Event::Init => index.relisting = Some(Filed::new()),
            watcher::Event::InitApply(object) => {
                if let (Some(filed), Some(target)) = (index.relisting.as_mut(), (self.key)(object))
                {
                    file(filed, &target, id(object));
                }
            }
            watcher::Event::InitDone => {
                if let Some(filed) = index.relisting.take() {
                    index.current = filed;
                }
            }
            watcher::Event::Apply(object) => {
                let target = (self.key)(object);
                let before = store
                    .get(&ObjectRef::from_obj(object))
                    .and_then(|previous| (self.key)(&previous));
                if let Some(before) = before.filter(|b| Some(b) != target.as_ref()) {
                    unfile(&mut index.current, &before, &id(object));
                }
                if let Some(target) = target {
                    file(&mut index.current, &target, id(object));
                }
            }
            watcher::Event::Delete(object) => {
                let this = id(object);
                let before = store
                    .get(&ObjectRef::from_obj(object))
                    .and_then(|previous| (self.key)(&previous));
                for target in [(self.key)(object), before].into_iter().flatten() {
                    unfile(&mut index.current, &target, &this);
                }
            }
        }
    }

    /// The objects of `store` that aim at `target`.
    pub fn aiming_at(&self, target: &TargetKey, store: &Store<K>) -> Vec<Arc<K>> {
        let ids: Vec<Box<str>> = {
            let index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
            index
                .current
                .get(&target.filed_under())
                .cloned()
                .unwrap_or_default()
        };
        let mut found: Vec<Arc<K>> = ids
            .iter()
            .filter_map(|id| {
                let (namespace, name) = id.split_once('/')?;
                store.get(&ObjectRef::new(name).within(namespace))
            })
            .filter(|o| (self.key)(o).as_ref() == Some(target))
            .collect();
        found.sort_by_key(|o| o.name_any());
        found
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
    #![allow(clippy::unwrap_used, clippy::needless_pass_by_value, reason = "tests")]

    use kube::runtime::reflector::store::Writer;

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

    /// An index and the store it reads, fed as the controller feeds them: index, then store.
    struct Watched {
        index: ByTarget<Scaler>,
        store: Store<Scaler>,
        writer: Writer<Scaler>,
    }

    impl Watched {
        fn new() -> Self {
            let (store, writer) = kube::runtime::reflector::store();
            Self {
                index: TargetIndexes::default().scalers,
                store,
                writer,
            }
        }

        fn event(&mut self, event: watcher::Event<Scaler>) {
            self.index.apply(&event, &self.store);
            self.writer.apply_watcher_event(&event);
        }

        fn names(&self, target: &str) -> Vec<String> {
            self.index
                .aiming_at(&key(target), &self.store)
                .iter()
                .map(|s| s.name_any())
                .collect()
        }

        fn filed(&self) -> usize {
            let index = self.index.index.lock().unwrap();
            index.current.values().map(Vec::len).sum()
        }
    }

    #[test]
    fn follows_applies_retargets_and_deletes() {
        let mut w = Watched::new();
        w.event(watcher::Event::Apply(scaler("b", "web")));
        w.event(watcher::Event::Apply(scaler("a", "web")));
        w.event(watcher::Event::Apply(scaler("c", "db")));
        assert_eq!(w.names("web"), ["a", "b"]);
        w.event(watcher::Event::Apply(scaler("b", "db")));
        assert_eq!(w.names("web"), ["a"]);
        assert_eq!(w.names("db"), ["b", "c"]);
        w.event(watcher::Event::Apply(scaler("b", "db")));
        assert_eq!(w.filed(), 3, "filed once however often applied");
        w.event(watcher::Event::Delete(scaler("a", "web")));
        assert!(w.names("web").is_empty());
        assert_eq!(w.filed(), 2, "nothing left behind");
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let mut w = Watched::new();
        w.event(watcher::Event::Apply(scaler("gone", "web")));
        w.event(watcher::Event::Init);
        w.event(watcher::Event::InitApply(scaler("new", "web")));
        assert_eq!(w.names("web"), ["gone"], "the old index until InitDone");
        w.event(watcher::Event::InitDone);
        assert_eq!(w.names("web"), ["new"]);
        assert_eq!(w.filed(), 1);
    }

    #[test]
    fn hpas_are_found_by_the_workload_they_scale() {
        let index = TargetIndexes::default().hpas;
        let (store, mut writer) = kube::runtime::reflector::store();
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "web"}, "maxReplicas": 3}
        }))
        .unwrap();
        let event = watcher::Event::Apply(hpa);
        index.apply(&event, &store);
        writer.apply_watcher_event(&event);
        assert_eq!(index.aiming_at(&key("web"), &store).len(), 1);
        assert!(index.aiming_at(&key("db"), &store).is_empty());
    }
}
