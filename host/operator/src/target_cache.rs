//! What the target watches ([`crate::target_watch`]) last saw of every target object: its
//! scale, readiness and uid, kept small ([`TargetScale`], not the object). Observing a target
//! reads it here instead of asking the API server; [`crate::target::Targets`] asks the API
//! server only when the cache cannot answer:
//!
//! - the object's kind is not watched (yet), or its watch has not listed once;
//! - the object is not in the cache (created a moment ago, or gone: a GET tells which);
//! - its `/scale` cannot be derived from the object (a kind whose scale paths hoist could not
//!   read, see [`ScalePaths`]);
//! - hoist itself wrote another count to it less than [`WRITE_SEEN_WITHIN`] ago and the watch
//!   has not shown that write yet (so a decision never rests on a count older than hoist's own
//!   write).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hoist_decide::TargetScale;

use crate::target_watch::TargetKind;

/// How long hoist's own `/scale` write keeps the cache from answering for that object until
/// the watch shows it. The watch normally delivers it within milliseconds; after this, the
/// cache answers again (someone else may have changed the count since).
pub const WRITE_SEEN_WITHIN: Duration = Duration::from_secs(10);

/// One target object: its kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TargetKey {
    pub kind: TargetKind,
    pub namespace: String,
    pub name: String,
}

/// What a watch knows of one object: its scale when the kind's scale can be read from the
/// object, `None` otherwise.
pub type Cached = Option<TargetScale>;

/// The answer of [`TargetCache::get`].
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The watch's view, current as far as hoist knows.
    Found(TargetScale),
    /// Ask the API server (the reason is for logs and tests).
    Ask(&'static str),
}

#[derive(Debug, Default)]
struct Kind {
    /// The watch has listed once: an object missing here was missing from the list too.
    listed: bool,
    objects: HashMap<(String, String), Cached>,
}

/// Shared between the watches (writers) and the reconciles (readers).
#[derive(Debug, Default)]
pub struct TargetCache {
    kinds: RwLock<HashMap<TargetKind, Kind>>,
    written: Mutex<HashMap<TargetKey, (i32, Instant)>>,
}

impl TargetCache {
    /// What the cache knows of `key`.
    pub fn get(&self, key: &TargetKey) -> Lookup {
        let kinds = self.kinds.read().unwrap_or_else(PoisonError::into_inner);
        let Some(kind) = kinds.get(&key.kind) else {
            return Lookup::Ask("its kind is not watched");
        };
        if !kind.listed {
            return Lookup::Ask("its kind's watch has not listed yet");
        }
        let Some(cached) = kind.objects.get(&(key.namespace.clone(), key.name.clone())) else {
            return Lookup::Ask("not in the watch's cache");
        };
        let Some(scale) = cached.clone() else {
            return Lookup::Ask("its scale cannot be read from the object");
        };
        drop(kinds);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((replicas, at)) = written.get(key).copied() {
            if scale.spec_replicas == replicas || at.elapsed() >= WRITE_SEEN_WITHIN {
                written.remove(key);
            } else {
                return Lookup::Ask("the watch has not shown hoist's own write yet");
            }
        }
        Lookup::Found(scale)
    }

    /// hoist wrote `replicas` to `key`'s `/scale`.
    pub fn wrote(&self, key: TargetKey, replicas: i32) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, (replicas, Instant::now()));
    }

    /// The watch of `kind` (re)starts listing: until [`TargetCache::listed`], it does not
    /// answer for this kind.
    pub fn listing(&self, kind: &TargetKind) {
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        kinds.entry(kind.clone()).or_default().listed = false;
    }

    /// The watch of `kind` listed these objects: they replace what the cache had.
    pub fn listed(&self, kind: &TargetKind, objects: HashMap<(String, String), Cached>) {
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        kinds.insert(
            kind.clone(),
            Kind {
                listed: true,
                objects,
            },
        );
    }

    /// An object of `kind` was added or changed.
    pub fn applied(&self, kind: &TargetKind, namespace: String, name: String, cached: Cached) {
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        kinds
            .entry(kind.clone())
            .or_default()
            .objects
            .insert((namespace, name), cached);
    }

    /// An object of `kind` was deleted.
    pub fn deleted(&self, kind: &TargetKind, namespace: &str, name: &str) {
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = kinds.get_mut(kind) {
            k.objects.remove(&(namespace.to_owned(), name.to_owned()));
        }
    }

    /// Whether the cache holds exactly `state` for the object (a `None` state, a view that
    /// cannot be kept, is never unchanged: any change of such an object may matter).
    pub fn unchanged(
        &self,
        kind: &TargetKind,
        namespace: &str,
        name: &str,
        state: Option<&TargetScale>,
    ) -> bool {
        let Some(state) = state else {
            return false;
        };
        let kinds = self.kinds.read().unwrap_or_else(PoisonError::into_inner);
        kinds
            .get(kind)
            .and_then(|k| k.objects.get(&(namespace.to_owned(), name.to_owned())))
            .is_some_and(|cached| cached.as_ref() == Some(state))
    }

    /// The watch of `kind` stopped: forget the kind.
    pub fn forget(&self, kind: &TargetKind) {
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        kinds.remove(kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind() -> TargetKind {
        TargetKind {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
        }
    }

    fn key(name: &str) -> TargetKey {
        TargetKey {
            kind: kind(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn scale(spec: i32) -> TargetScale {
        TargetScale {
            spec_replicas: spec,
            status_replicas: spec,
            ready_replicas: Some(spec),
            observed_generation_current: true,
            selector: Some("app=web".into()),
            uid: Some("u".into()),
        }
    }

    #[test]
    fn answers_only_after_the_kind_listed() {
        let cache = TargetCache::default();
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("its kind is not watched")
        );
        cache.listing(&kind());
        cache.applied(&kind(), "ns".into(), "web".into(), Some(scale(2)));
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("its kind's watch has not listed yet")
        );
        cache.listed(
            &kind(),
            HashMap::from([(("ns".into(), "web".into()), Some(scale(2)))]),
        );
        assert_eq!(cache.get(&key("web")), Lookup::Found(scale(2)));
        assert_eq!(
            cache.get(&key("db")),
            Lookup::Ask("not in the watch's cache")
        );
        // A relist (after a lost watch) stops answers until it finishes.
        cache.listing(&kind());
        assert!(matches!(cache.get(&key("web")), Lookup::Ask(_)));
    }

    #[test]
    fn a_kind_whose_scale_is_unreadable_asks() {
        let cache = TargetCache::default();
        cache.listed(
            &kind(),
            HashMap::from([(("ns".into(), "web".into()), None)]),
        );
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("its scale cannot be read from the object")
        );
    }

    #[test]
    fn hoists_own_write_is_awaited_then_forgotten() {
        let cache = TargetCache::default();
        cache.listed(
            &kind(),
            HashMap::from([(("ns".into(), "web".into()), Some(scale(2)))]),
        );
        cache.wrote(key("web"), 3);
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("the watch has not shown hoist's own write yet")
        );
        cache.applied(&kind(), "ns".into(), "web".into(), Some(scale(3)));
        assert_eq!(cache.get(&key("web")), Lookup::Found(scale(3)));
        // Seen once: a later change by someone else is the cache's answer again.
        cache.applied(&kind(), "ns".into(), "web".into(), Some(scale(5)));
        assert_eq!(cache.get(&key("web")), Lookup::Found(scale(5)));
    }

    #[test]
    fn only_a_changed_view_is_a_change() {
        let cache = TargetCache::default();
        cache.listed(
            &kind(),
            HashMap::from([(("ns".into(), "web".into()), Some(scale(2)))]),
        );
        assert!(cache.unchanged(&kind(), "ns", "web", Some(&scale(2))));
        assert!(!cache.unchanged(&kind(), "ns", "web", Some(&scale(3))));
        assert!(!cache.unchanged(&kind(), "ns", "db", Some(&scale(2))));
        assert!(!cache.unchanged(&kind(), "ns", "web", None));
    }

    #[test]
    fn deleted_objects_and_forgotten_kinds_ask() {
        let cache = TargetCache::default();
        cache.listed(
            &kind(),
            HashMap::from([(("ns".into(), "web".into()), Some(scale(2)))]),
        );
        cache.deleted(&kind(), "ns", "web");
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("not in the watch's cache")
        );
        cache.forget(&kind());
        assert_eq!(
            cache.get(&key("web")),
            Lookup::Ask("its kind is not watched")
        );
    }
}
