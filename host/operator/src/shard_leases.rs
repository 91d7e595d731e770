//! Sharding, the effectful part: a watch of the Leases in the lease namespace, one task per
//! shard Lease that competes for it and renews it (kube-lease-manager), a member Lease that says
//! this replica is alive (the replicas spread the shards evenly over the live members), and
//! [`Ownership`]: the shards this replica may act on, now.
//!
//! A shard counts as owned only while three things agree: the shard's task holds the Lease
//! (kube-lease-manager says so), the watched Lease names this replica and was renewed less than
//! `duration - margin` ago by this replica's own clock, and no replica configured with another
//! shard count holds a Lease ([`crate::shard::Census`]). The second closes the fence before
//! the Lease expires for the others when renewals stop reaching the API server (a restart, a
//! partition): by then this replica's writes fail anyway, but its hook calls would not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

use crate::error::OperatorError;
use crate::metrics::Metrics;
use crate::shard::{self, Approach, Census, Pace};

/// Seconds a shard Lease is valid after its last renewal.
const LEASE_SECONDS: u64 = 15;
/// Seconds before expiry its holder renews it.
const GRACE_SECONDS: u64 = 5;
/// How long before expiry a holder stops acting when its renewals do not land (less than the
/// grace, so a renewal that lands in time never closes the fence).
const MARGIN: Duration = Duration::from_secs(2);
/// How often a replica looks at the Leases it does not hold, and recomputes what it owns.
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// How long one attempt to take a free Lease may take before it is given up.
const TAKE_WITHIN: Duration = Duration::from_secs(5);
/// Lease timing of the shard decisions.
const PACE: Pace = Pace {
    lease: Duration::from_secs(LEASE_SECONDS),
    settle: Duration::from_secs(2),
};
/// Longest wait for a shard's reconciles in flight before its Lease is handed over anyway (a
/// hook call ends at its own deadline well before this).
const HAND_OVER_WITHIN: Duration = Duration::from_mins(15);
/// A member Lease not renewed for this long belongs to a replica that is gone: it is deleted.
const DEPARTED_AFTER: Duration = Duration::from_mins(10);

/// Where the shard Leases are and who this replica is.
#[derive(Clone)]
pub struct ShardSettings {
    pub client: Client,
    pub namespace: String,
    /// `--lease-name`: the shard Leases are `<base>-shard-<i>-of-<count>`.
    pub base: String,
    pub count: u32,
    pub identity: String,
}

impl std::fmt::Debug for ShardSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSettings")
            .field("namespace", &self.namespace)
            .field("base", &self.base)
            .field("count", &self.count)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// The shards this replica may act on. Cheap to clone; every check reads the current Leases.
#[derive(Clone)]
pub struct Ownership {
    base: Arc<str>,
    namespace: Arc<str>,
    identity: Arc<str>,
    count: u32,
    leases: Store<Lease>,
    /// What the shard tasks hold, by shard.
    held: watch::Receiver<Vec<bool>>,
    /// Shards being handed over: no new reconcile starts on them, and the Lease is released
    /// once those in flight have ended.
    handing_over: Arc<[AtomicBool]>,
    /// Reconciles running, by shard.
    in_flight: Arc<[AtomicUsize]>,
}

/// A reconcile of one shard's Scaler, running; counted until dropped.
#[derive(Debug)]
pub struct InFlight {
    in_flight: Arc<[AtomicUsize]>,
    shard: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(n) = self.in_flight.get(self.shard) {
            n.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl std::fmt::Debug for Ownership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ownership")
            .field("count", &self.count)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Ownership {
    /// The number of shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The shard of the Scaler with this uid.
    pub fn shard_of(&self, uid: &str) -> u32 {
        shard::shard_of(uid, self.count)
    }

    /// Which shards this replica may act on at `now` (none while a replica with another shard
    /// count holds a Lease: the reason is the `Err`).
    pub fn owned(&self, now: SystemTime) -> Result<Vec<bool>, String> {
        if let Some(other) = self.other_count_live(now) {
            return Err(format!(
                "a replica with another shard count holds Lease {other}; this replica runs with {} shards and acts on none until it is gone",
                self.count
            ));
        }
        Ok((0..self.count).map(|i| self.holds(i, now)).collect())
    }

    /// Whether this replica may act on shard `shard` now.
    pub fn owns_shard(&self, shard: u32) -> bool {
        let now = SystemTime::now();
        self.other_count_live(now).is_none() && self.holds(shard, now)
    }

    /// A live Lease of another shard count (or of the single leader), if any.
    fn other_count_live(&self, now: SystemTime) -> Option<String> {
        Census {
            base: &self.base,
            count: self.count,
            identity: &self.identity,
        }
        .other_count_live(self.leases.state().iter().map(AsRef::as_ref), now)
    }

    /// Its task holds shard `shard`, it is not being handed over, and its Lease was renewed
    /// in time.
    fn holds(&self, shard: u32, now: SystemTime) -> bool {
        self.held
            .borrow()
            .get(shard as usize)
            .copied()
            .unwrap_or(false)
            && !self.is_handing_over(shard)
            && self.renewed_in_time(shard, now)
    }

    /// Counts a reconcile of a Scaler of `shard` until the guard is dropped: a shard is handed
    /// over only once none is running (so that two replicas never call a Scaler's hook at once).
    pub fn enter(&self, shard: u32) -> InFlight {
        if let Some(n) = self.in_flight.get(shard as usize) {
            n.fetch_add(1, Ordering::AcqRel);
        }
        InFlight {
            in_flight: self.in_flight.clone(),
            shard: shard as usize,
        }
    }

    fn in_flight(&self, shard: u32) -> usize {
        self.in_flight
            .get(shard as usize)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    fn is_handing_over(&self, shard: u32) -> bool {
        self.handing_over
            .get(shard as usize)
            .is_some_and(|h| h.load(Ordering::Acquire))
    }

    fn set_handing_over(&self, shard: u32, on: bool) {
        if let Some(h) = self.handing_over.get(shard as usize) {
            h.store(on, Ordering::Release);
        }
    }

    /// How many shards each live replica should hold, and how many this one holds.
    fn held_and_fair(&self, now: SystemTime) -> (u32, u32) {
        let held =
            u32::try_from(self.held.borrow().iter().filter(|h| **h).count()).unwrap_or(u32::MAX);
        let members = shard::live_members(
            &self.base,
            self.leases.state().iter().map(AsRef::as_ref),
            now,
        );
        (held, shard::fair_share(self.count, members))
    }

    fn renewed_in_time(&self, index: u32, now: SystemTime) -> bool {
        self.lease(index)
            .is_some_and(|l| shard::fresh_holder(&l, now, MARGIN) == Some(&*self.identity))
    }

    fn lease(&self, index: u32) -> Option<Arc<Lease>> {
        self.leases.get(
            &ObjectRef::new(&shard::lease_name(&self.base, index, self.count))
                .within(&self.namespace),
        )
    }
}

/// The running shard tasks; [`ShardLeases::release`] gives every held Lease up.
#[derive(Debug)]
pub struct ShardLeases {
    pub ownership: Ownership,
    /// The owned set, recomputed every second and on every change: a shard that becomes owned
    /// (taken, or renewed in time again) reconciles its Scalers.
    pub owned: watch::Receiver<Vec<bool>>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Dropping the receiver makes the member task release the member Lease and end.
    member: (
        watch::Receiver<bool>,
        tokio::task::JoinHandle<Result<LeaseManager, kube_lease_manager::LeaseManagerError>>,
    ),
}

impl ShardLeases {
    /// Creates the shard Leases that do not exist yet, starts the Lease watch and one task per
    /// shard.
    pub async fn start(
        settings: ShardSettings,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OperatorError> {
        let ShardSettings {
            client,
            namespace,
            base,
            count,
            identity,
        } = settings;
        let (leases, writer) = reflector::store::<Lease>();
        let (listed_tx, listed) = watch::channel(false);
        let lease_watch = reflector(
            writer,
            watcher(
                Api::<Lease>::namespaced(client.clone(), &namespace),
                watcher::Config::default(),
            )
            .inspect(move |e| {
                if matches!(e, Ok(watcher::Event::InitDone)) {
                    listed_tx.send_replace(true);
                }
            }),
        )
        .default_backoff()
        .applied_objects();
        let mut tasks = vec![tokio::spawn(async move {
            let mut events = std::pin::pin!(lease_watch);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "watching the shard Leases");
                }
            }
        })];

        let (held_tx, held) = watch::channel(vec![false; count as usize]);
        let ownership = Ownership {
            base: base.clone().into(),
            namespace: namespace.clone().into(),
            identity: identity.clone().into(),
            count,
            leases,
            held,
            handing_over: (0..count).map(|_| AtomicBool::new(false)).collect(),
            in_flight: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        };
        let member_lease = shard::member_lease_name(&base, &identity);
        let member = lease_manager(&client, &namespace, &member_lease, &identity)
            .await?
            .watch()
            .await;
        let (stop, stopped) = watch::channel(false);
        let last_release = Arc::new(std::sync::Mutex::new(None));
        let preferred = shard::preferred_shard(&identity, count);
        let taking = Arc::new(tokio::sync::Mutex::new(()));
        for index in 0..count {
            let lease = shard::lease_name(&base, index, count);
            let manager = lease_manager(&client, &namespace, &lease, &identity).await?;
            let task = ShardTask {
                index,
                lease,
                preferred: index == preferred,
                manager,
                ownership: ownership.clone(),
                held: held_tx.clone(),
                taking: taking.clone(),
                last_release: last_release.clone(),
                listed: listed.clone(),
                stopped: stopped.clone(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        let (owned_tx, owned) = watch::channel(vec![false; count as usize]);
        tasks.push(tokio::spawn(publish_owned(
            ownership.clone(),
            owned_tx,
            metrics,
            stopped.clone(),
        )));
        tasks.push(tokio::spawn(delete_departed_members(
            Api::namespaced(client, &namespace),
            ownership.clone(),
            stopped,
        )));
        tracing::info!(count, %identity, preferred, "competing for shard Leases");
        Ok(Self {
            ownership,
            owned,
            stop,
            tasks,
            member,
        })
    }

    /// Stops competing and gives every held Lease up, so that other replicas take the shards
    /// at once (after the controller has stopped: nothing acts on them any more).
    pub async fn release(self) {
        self.stop.send_replace(true);
        let mut tasks = self.tasks.into_iter();
        // The first task is the Lease watch: it never ends by itself.
        if let Some(watch) = tasks.next() {
            watch.abort();
        }
        for task in tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "a shard task failed");
            }
        }
        let (alive, member) = self.member;
        drop(alive);
        match member.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the member Lease"),
            Err(e) => tracing::warn!(error = %e, "the member Lease task failed"),
        }
    }
}

/// Recomputes the owned set every [`LOOK_EVERY`] (a Lease not renewed in time stops counting
/// without any event) and publishes changes; `hoist_shards_held` follows it.
async fn publish_owned(
    ownership: Ownership,
    owned_tx: watch::Sender<Vec<bool>>,
    metrics: Arc<Metrics>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut said_other_count = false;
    loop {
        let owned = match ownership.owned(SystemTime::now()) {
            Ok(owned) => {
                said_other_count = false;
                owned
            }
            Err(why) => {
                if !said_other_count {
                    tracing::error!("{why}");
                    said_other_count = true;
                }
                vec![false; ownership.count as usize]
            }
        };
        metrics
            .shards_held
            .set(i64::try_from(owned.iter().filter(|o| **o).count()).unwrap_or(i64::MAX));
        owned_tx.send_if_modified(|current| {
            let changed = *current != owned;
            *current = owned;
            changed
        });
        tokio::select! {
            () = until_stopped(&mut stopped) => {
                owned_tx.send_replace(vec![false; ownership.count as usize]);
                metrics.shards_held.set(0);
                return;
            }
            () = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// A manager of Lease `name` (created if missing) for `identity`.
async fn lease_manager(
    client: &Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<LeaseManager, OperatorError> {
    LeaseManagerBuilder::new(client.clone(), name)
        .with_namespace(namespace)
        .with_parameters(
            LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS)
                .with_field_manager(format!("hoist-{identity}")),
        )
        .build()
        .await
        .map_err(|source| OperatorError::ShardLease {
            lease: name.to_owned(),
            source,
        })
}

/// Deletes, every minute, the member Leases of replicas gone for [`DEPARTED_AFTER`] (pods of
/// a Deployment have new names each time: their Leases would pile up).
async fn delete_departed_members(
    leases: Api<Lease>,
    ownership: Ownership,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = until_stopped(&mut stopped) => return,
            () = tokio::time::sleep(Duration::from_mins(1)) => {}
        }
        let now = SystemTime::now();
        let Some(long_ago) = now.checked_sub(DEPARTED_AFTER) else {
            continue;
        };
        for lease in ownership.leases.state() {
            let Some(name) = lease.metadata.name.as_deref() else {
                continue;
            };
            if shard::is_member_lease(&ownership.base, name)
                && shard::is_free(Some(&lease), long_ago)
            {
                match leases
                    .delete(name, &kube::api::DeleteParams::default())
                    .await
                {
                    Ok(_) => tracing::info!(
                        lease = name,
                        "deleted the member Lease of a replica gone for 10 minutes"
                    ),
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                    Err(e) => {
                        tracing::warn!(lease = name, error = %e, "deleting a departed member Lease");
                    }
                }
            }
        }
    }
}

/// Resolves once this replica stops.
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Why a replica stopped holding a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldEnd {
    /// This replica stops: release the Lease.
    Stopped,
    /// Another replica holds it now.
    Lost,
    /// Released for a replica holding fewer.
    GaveUp,
}

/// Competes for one shard Lease, holds and renews it, and competes again when it is lost.
struct ShardTask {
    index: u32,
    lease: String,
    preferred: bool,
    manager: LeaseManager,
    ownership: Ownership,
    held: watch::Sender<Vec<bool>>,
    /// One shard task of this replica takes a Lease at a time: the count of shards held, which
    /// decides whether to take another, is then current for each.
    taking: Arc<tokio::sync::Mutex<()>>,
    /// When this replica last gave a shard up (one per Lease duration).
    last_release: Arc<std::sync::Mutex<Option<Instant>>>,
    listed: watch::Receiver<bool>,
    stopped: watch::Receiver<bool>,
}

impl ShardTask {
    async fn run(mut self) {
        if self.listed.wait_for(|l| *l).await.is_err() {
            return;
        }
        loop {
            if !self.take().await {
                return;
            }
            tracing::info!(shard = self.index, lease = %self.lease, "holding shard");
            let end = self.hold().await;
            if end == HoldEnd::Stopped
                && let Err(e) = self.manager.release().await
            {
                tracing::warn!(lease = %self.lease, error = %e, "releasing a shard Lease");
            }
            match end {
                HoldEnd::Stopped => return,
                HoldEnd::Lost => {
                    tracing::warn!(shard = self.index, lease = %self.lease, "lost the shard to another replica");
                }
                HoldEnd::GaveUp => {
                    tracing::info!(shard = self.index, lease = %self.lease, "gave the shard up: this replica holds more than its share");
                }
            }
        }
    }

    /// Waits until it took the Lease and counts it as held (`true`), or was told to stop
    /// (`false`).
    async fn take(&mut self) -> bool {
        let mut free_since: Option<Instant> = None;
        loop {
            if *self.stopped.borrow() {
                return false;
            }
            let taking = self.taking.clone();
            let turn = taking.lock().await;
            let now = SystemTime::now();
            let lease = self.ownership.lease(self.index);
            if self.ownership.other_count_live(now).is_some() {
                free_since = None;
            } else {
                if shard::is_free(lease.as_deref(), now) {
                    free_since.get_or_insert_with(Instant::now);
                } else {
                    free_since = None;
                }
                let step = shard::approach(
                    lease.as_deref(),
                    &self.ownership.identity,
                    now,
                    self.preferred,
                    self.ownership.held_and_fair(now),
                    free_since.map_or(Duration::ZERO, |t| t.elapsed()),
                    PACE,
                );
                if step == Approach::Take {
                    // Someone else may take it first: then `changed` would wait for that
                    // holder's Lease to expire; give the attempt up instead and look again.
                    match tokio::time::timeout(TAKE_WITHIN, self.manager.changed()).await {
                        Ok(Ok(true)) => {
                            self.wait_until_seen().await;
                            self.set_held(true);
                            drop(turn);
                            return true;
                        }
                        Ok(Ok(false)) | Err(_) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(lease = %self.lease, error = %e, "taking a shard Lease");
                        }
                    }
                }
            }
            drop(turn);
            tokio::select! {
                () = until_stopped(&mut self.stopped) => return false,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// After taking the Lease: waits (a little) until the watch shows it, so that the shard's
    /// Scalers, reconciled once it counts as owned, find the fence open.
    async fn wait_until_seen(&self) {
        let deadline = Instant::now() + TAKE_WITHIN;
        while Instant::now() < deadline
            && !self
                .ownership
                .renewed_in_time(self.index, SystemTime::now())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Renews the Lease until it is lost, this replica stops, or it holds more than its share.
    /// A shard given up is first handed over: no new reconcile starts on it, the Lease is
    /// renewed until those in flight have ended, then released (one shard per Lease duration).
    async fn hold(&mut self) -> HoldEnd {
        let mut handing_over: Option<Instant> = None;
        let end = loop {
            tokio::select! {
                () = until_stopped(&mut self.stopped) => break HoldEnd::Stopped,
                changed = self.manager.changed() => match changed {
                    Ok(false) => break HoldEnd::Lost,
                    Ok(true) => {}
                    Err(e) => {
                        // The API server did not answer: keep trying; the Lease stops counting
                        // as owned once it was not renewed in time.
                        tracing::warn!(lease = %self.lease, error = %e, "renewing a shard Lease");
                        tokio::time::sleep(LOOK_EVERY).await;
                    }
                },
                () = tokio::time::sleep(LOOK_EVERY) => {
                    if let Some(since) = handing_over {
                        let running = self.ownership.in_flight(self.index);
                        if running == 0 || since.elapsed() >= HAND_OVER_WITHIN {
                            if let Err(e) = self.manager.release().await {
                                tracing::warn!(lease = %self.lease, error = %e, "giving a shard Lease up");
                            }
                            self.stamp_release();
                            break HoldEnd::GaveUp;
                        }
                    } else if self.over_share().await {
                        tracing::info!(shard = self.index, running = self.ownership.in_flight(self.index), "handing the shard over: this replica holds more than its share; waiting for its reconciles in flight");
                        self.ownership.set_handing_over(self.index, true);
                        self.stamp_release();
                        handing_over = Some(Instant::now());
                    }
                }
            }
        };
        self.set_held(false);
        self.ownership.set_handing_over(self.index, false);
        end
    }

    /// Whether this shard is to be given up now (see [`shard::should_release`]).
    async fn over_share(&self) -> bool {
        let _turn = self.taking.lock().await;
        let since = self
            .last_release
            .lock()
            .map_or(None, |t| *t)
            .map_or(Duration::MAX, |t| t.elapsed());
        let share = self.ownership.held_and_fair(SystemTime::now());
        shard::should_release(self.preferred, share, since, PACE)
    }

    fn stamp_release(&self) {
        if let Ok(mut t) = self.last_release.lock() {
            *t = Some(Instant::now());
        }
    }

    fn set_held(&self, held: bool) {
        self.held.send_modify(|h| {
            if let Some(slot) = h.get_mut(self.index as usize) {
                *slot = held;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    fn lease(name: &str, holder: &str, renewed: SystemTime) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ops".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                renew_time: Some(MicroTime(renewed.try_into().unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    fn ownership(leases: &[Lease], held: Vec<bool>) -> (Ownership, watch::Sender<Vec<bool>>) {
        let (store, mut writer) = reflector::store::<Lease>();
        for l in leases {
            writer.apply_watcher_event(&watcher::Event::Apply(l.clone()));
        }
        let count = u32::try_from(held.len()).unwrap();
        let (tx, held) = watch::channel(held);
        let o = Ownership {
            base: "hoist".into(),
            namespace: "ops".into(),
            identity: "me".into(),
            count,
            leases: store,
            held,
            handing_over: (0..count).map(|_| AtomicBool::new(false)).collect(),
            in_flight: (0..count).map(|_| AtomicUsize::new(0)).collect(),
        };
        (o, tx)
    }

    #[test]
    fn a_shard_is_owned_while_held_renewed_in_time_and_not_handed_over() {
        let now = SystemTime::now();
        let (o, held) = ownership(
            &[
                lease("hoist-shard-0-of-2", "me", now),
                lease("hoist-shard-1-of-2", "me", now - Duration::from_secs(14)),
            ],
            vec![true, true],
        );
        assert_eq!(
            o.owned(now).unwrap(),
            vec![true, false],
            "shard 1 renewed too long ago"
        );
        o.set_handing_over(0, true);
        assert!(
            !o.owns_shard(0),
            "no new reconcile on a shard being handed over"
        );
        o.set_handing_over(0, false);
        held.send_replace(vec![false, true]);
        assert!(!o.owns_shard(0), "the shard task let it go");
    }

    #[test]
    fn reconciles_in_flight_are_counted_per_shard_until_they_end() {
        let (o, _held) = ownership(&[], vec![false, false]);
        let a = o.enter(1);
        let b = o.enter(1);
        assert_eq!((o.in_flight(0), o.in_flight(1)), (0, 2));
        drop(a);
        assert_eq!(o.in_flight(1), 1);
        drop(b);
        assert_eq!(o.in_flight(1), 0);
    }

    #[test]
    fn a_live_lease_of_another_count_stops_every_shard() {
        let now = SystemTime::now();
        let (o, _held) = ownership(
            &[
                lease("hoist-shard-0-of-2", "me", now),
                lease("hoist-shard-0-of-3", "other", now),
            ],
            vec![true, false],
        );
        let err = o.owned(now).unwrap_err();
        assert!(err.contains("hoist-shard-0-of-3 (held by other)"), "{err}");
        assert!(!o.owns_shard(0));
    }
}
