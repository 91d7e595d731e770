//! The Scaler as hoist last wrote it, until the watch delivers that version.
//!
//! A reconcile may start before the watch has delivered hoist's own last write (the target's
//! event can arrive first, or the watch re-lists after an API-server restart). Deciding on the
//! older copy would repeat a stage that already ended. Every write records the object the API
//! server returned, and which resourceVersions it superseded; a reconcile whose cached copy
//! carries a superseded resourceVersion continues on the written object instead. Nothing is
//! compared by order: a cached copy with any other resourceVersion is the watch's newer news.
//!
//! It also counts status-write conflicts per Scaler, so a conflict that repeats backs off.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hoist_api::Scaler;
use kube::ResourceExt;

/// How many superseded resourceVersions are remembered per Scaler (a reconcile writes at most
/// a handful of times before the watch catches up).
const SUPERSEDED: usize = 16;

#[derive(Debug)]
struct Written {
    superseded: VecDeque<String>,
    latest: Arc<Scaler>,
}

/// hoist's own writes the watch may not have delivered yet, and conflict counts.
#[derive(Debug, Default)]
pub struct LatestScalers {
    written: Mutex<HashMap<String, Written>>,
    conflicts: Mutex<HashMap<String, u32>>,
}

fn key(scaler: &Scaler) -> String {
    scaler.uid().unwrap_or_else(|| {
        format!(
            "{}/{}",
            scaler.namespace().unwrap_or_default(),
            scaler.name_any()
        )
    })
}

impl LatestScalers {
    /// The copy to decide on: what hoist wrote, while the cached copy predates it; else the
    /// cached copy (and what hoist wrote is forgotten).
    pub fn current(&self, cached: Arc<Scaler>) -> Arc<Scaler> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let key = key(&cached);
        let Some(entry) = written.get(&key) else {
            return cached;
        };
        let rv = cached.resource_version();
        if rv.as_ref().is_some_and(|rv| entry.superseded.contains(rv)) {
            return entry.latest.clone();
        }
        written.remove(&key);
        cached
    }

    /// Records that a write turned `before` into `after` (the API server's answer).
    pub fn wrote(&self, before: &Scaler, mut after: Scaler) {
        crate::controller::trim_cached(&mut after);
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = written.entry(key(before)).or_insert_with(|| Written {
            superseded: VecDeque::new(),
            latest: Arc::new(after.clone()),
        });
        if let Some(rv) = before.resource_version() {
            if entry.superseded.len() == SUPERSEDED {
                entry.superseded.pop_front();
            }
            entry.superseded.push_back(rv);
        }
        entry.latest = Arc::new(after);
    }

    /// A status write conflicted; `current` is the API server's version, read after it. Returns
    /// how long to wait before the next reconcile: at once the first time (the current version
    /// is known now), then doubling from 200 ms up to 10 s while conflicts repeat.
    pub fn conflicted(&self, stale: &Scaler, current: Option<Scaler>) -> Duration {
        if let Some(current) = current {
            self.wrote(stale, current);
        }
        let mut conflicts = self
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = conflicts.entry(key(stale)).or_default();
        *n = n.saturating_add(1);
        backoff(*n)
    }

    /// The conflict delay for a Scaler whose last reconcile failed with one.
    pub fn conflict_delay(&self, scaler: &Scaler) -> Duration {
        let conflicts = self
            .conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        backoff(conflicts.get(&key(scaler)).copied().unwrap_or(1))
    }

    /// A reconcile of `scaler` succeeded: its conflicts are over.
    pub fn settled(&self, scaler: &Scaler) {
        self.conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&key(scaler));
    }

    /// Forget Scalers that no longer exist.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| live.contains(k));
        self.conflicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| live.contains(k));
    }
}

fn backoff(conflicts: u32) -> Duration {
    if conflicts <= 1 {
        return Duration::ZERO;
    }
    let exp = (conflicts - 2).min(6);
    Duration::from_millis(200 * (1 << exp)).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaler(rv: &str, stage: hoist_api::Stage) -> Scaler {
        let mut s = Scaler::new("s", hoist_api::ScalerSpec::default());
        s.metadata.uid = Some("u1".into());
        s.metadata.namespace = Some("ns".into());
        s.metadata.resource_version = Some(rv.into());
        s.status = Some(hoist_api::ScalerStatus {
            stage,
            ..Default::default()
        });
        s
    }

    fn stage(s: &Scaler) -> hoist_api::Stage {
        s.status.as_ref().unwrap().stage
    }

    #[test]
    fn a_stale_cache_yields_what_hoist_wrote_until_the_watch_catches_up() {
        use hoist_api::Stage::{PreScaling, Scaling};
        let latest = LatestScalers::default();
        let v1 = scaler("1", PreScaling);
        latest.wrote(&v1, scaler("2", Scaling));
        // The watch still has version 1: decide on version 2.
        assert_eq!(stage(&latest.current(Arc::new(v1.clone()))), Scaling);
        // A second write on top (version 2 → 3): version 1 and 2 are both stale now.
        latest.wrote(&scaler("2", Scaling), scaler("3", Scaling));
        assert_eq!(
            latest.current(Arc::new(v1)).resource_version().as_deref(),
            Some("3")
        );
        // The watch delivers version 3 (or anything newer): the cache wins, the entry goes.
        let v3 = Arc::new(scaler("3", Scaling));
        assert!(Arc::ptr_eq(&latest.current(v3.clone()), &v3));
        let v1_again = Arc::new(scaler("1", PreScaling));
        assert!(
            Arc::ptr_eq(&latest.current(v1_again.clone()), &v1_again),
            "forgotten"
        );
    }

    #[test]
    fn repeated_conflicts_back_off() {
        let latest = LatestScalers::default();
        let s = scaler("1", hoist_api::Stage::Idle);
        let delays: Vec<_> = (0..9)
            .map(|_| latest.conflicted(&s, None).as_millis())
            .collect();
        assert_eq!(delays, [0, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]);
        latest.settled(&s);
        assert_eq!(latest.conflicted(&s, None), Duration::ZERO);
    }
}
