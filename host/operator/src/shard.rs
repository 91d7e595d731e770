//! Sharding, the pure part: which shard a Scaler belongs to, what the shard Leases are called,
//! and what a replica may do given the Leases it sees.
//!
//! With `hoist run --shards N` (N > 1) every replica is active. Scaler `s` belongs to shard
//! `jump(sha256(s.uid), N)`; shard `i` is owned by whoever holds Lease
//! `<lease-name>-shard-<i>-of-<N>`. A replica acts on a Scaler only while it holds that Lease
//! and has renewed it recently by its own clock ([`fresh_holder`]), and while no replica
//! configured with another shard count holds a Lease of its own: two counts would place one
//! Scaler in two shards ([`Census::other_count_live`]).

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use sha2::{Digest, Sha256};

/// The shard (`0..count`) of the Scaler with this uid.
///
/// Jump consistent hashing (Lamping and Veach, 2014) of the first 8 bytes of the uid's
/// SHA-256: stable across builds and platforms (unlike `std`'s hasher), and when the count
/// grows from N to N+1 a Scaler either stays in its shard or moves to the new one.
pub fn shard_of(uid: &str, count: u32) -> u32 {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    jump(u64::from_be_bytes(first), count)
}

/// Jump consistent hash of `key` into `buckets` buckets (0 or 1 bucket: bucket 0).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "the algorithm's floating-point step: j < 2^32 (bounded by buckets), key >> 33 < 2^31"
)]
fn jump(mut key: u64, buckets: u32) -> u32 {
    let mut bucket: u64 = 0;
    let mut next: u64 = 0;
    while next < u64::from(buckets) {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as u64;
    }
    bucket as u32
}

/// The Lease of shard `index` when there are `count` shards.
pub fn lease_name(base: &str, index: u32, count: u32) -> String {
    format!("{base}-shard-{index}-of-{count}")
}

/// `(index, count)` of a shard Lease of `base`, `None` for any other name.
pub fn parse_lease_name(base: &str, name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(base)?.strip_prefix("-shard-")?;
    let (index, count) = rest.split_once("-of-")?;
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (index < count).then_some((index, count))
}

/// The shard a replica tries first: spreads replicas that start together over the shards.
pub fn preferred_shard(identity: &str, count: u32) -> u32 {
    shard_of(identity, count)
}

/// Who holds `lease` and until when it may act on it: the holder's last renewal plus the
/// duration, less `margin`. The holder renews `grace` seconds before expiry; the margin (less
/// than the grace) stops a holder whose renewals fail before anyone else may take the Lease.
pub fn fresh_holder(lease: &Lease, now: SystemTime, margin: Duration) -> Option<&str> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?;
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let renewed = SystemTime::from(renewed.0);
    let until = renewed.checked_add(duration)?.checked_sub(margin)?;
    (now < until).then_some(holder)
}

/// Whether anyone may take `lease` now: nobody holds it, or its holder let it expire.
pub fn is_free(lease: Option<&Lease>, now: SystemTime) -> bool {
    lease.is_none_or(|l| fresh_holder(l, now, Duration::ZERO).is_none())
}

/// What the shard Leases of one namespace say, for one replica.
#[derive(Debug, Clone, Copy)]
pub struct Census<'a> {
    /// The `--lease-name` every shard Lease starts with.
    pub base: &'a str,
    /// This replica's shard count.
    pub count: u32,
    /// This replica's identity.
    pub identity: &'a str,
}

impl Census<'_> {
    /// A live holder of a Lease that says another shard count (or of the single leader Lease,
    /// `--shards 1`), if any: while one exists this replica must not act at all.
    pub fn other_count_live<'l>(
        &self,
        leases: impl IntoIterator<Item = &'l Lease>,
        now: SystemTime,
    ) -> Option<String> {
        leases.into_iter().find_map(|lease| {
            let name = lease.metadata.name.as_deref()?;
            let other = if name == self.base {
                true
            } else {
                matches!(parse_lease_name(self.base, name), Some((_, c)) if c != self.count)
            };
            let holder = fresh_holder(lease, now, Duration::ZERO)?;
            (other && holder != self.identity).then(|| format!("{name} (held by {holder})"))
        })
    }
}

/// The Lease that says replica `identity` is alive (it holds and renews it): the replicas
/// count themselves by these, as kube-apiservers do by their identity Leases.
pub fn member_lease_name(base: &str, identity: &str) -> String {
    format!("{base}-member-{identity}")
}

/// Whether `name` is a member Lease of `base`.
pub fn is_member_lease(base: &str, name: &str) -> bool {
    name.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("-member-"))
        .is_some_and(|identity| !identity.is_empty())
}

/// The replicas alive now (at least this one): the member Leases renewed in time.
pub fn live_members<'l>(
    base: &str,
    leases: impl IntoIterator<Item = &'l Lease>,
    now: SystemTime,
) -> u32 {
    let live = leases
        .into_iter()
        .filter(|l| {
            l.metadata
                .name
                .as_deref()
                .is_some_and(|n| is_member_lease(base, n))
        })
        .filter(|l| fresh_holder(l, now, Duration::ZERO).is_some())
        .count();
    u32::try_from(live).unwrap_or(u32::MAX).max(1)
}

/// The most shards one replica should hold: the shards spread evenly over the live replicas.
pub fn fair_share(count: u32, members: u32) -> u32 {
    count.div_ceil(members.max(1))
}

/// Timing of [`approach`] and [`should_release`].
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// How long a shard Lease is valid after a renewal.
    pub lease: Duration,
    /// How long a free shard waits, per shard held, for replicas holding fewer (and for
    /// every replica's preferred shard to go first).
    pub settle: Duration,
}

/// What a replica does next about one shard Lease it does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approach {
    /// Try to take it now.
    Take,
    /// Look again later.
    Wait,
}

/// Whether to try for a shard this replica does not hold, which has been free for `free_for`.
///
/// - The Lease names this replica (it took it, or took it before a restart): take it.
/// - Someone else holds it: wait.
/// - It is this replica's preferred shard: take it.
/// - Below its fair share: take it after `settle` per shard held (plus one), so that the
///   replicas holding fewest, and the one preferring it, go first.
/// - At or above its fair share: take it only when nobody else did for a Lease duration per
///   shard held (the member count may be stale; a shard must not stay without an owner).
pub fn approach(
    lease: Option<&Lease>,
    identity: &str,
    now: SystemTime,
    preferred: bool,
    (held, fair): (u32, u32),
    free_for: Duration,
    pace: Pace,
) -> Approach {
    let holder = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.holder_identity.as_deref());
    if holder == Some(identity) {
        return Approach::Take;
    }
    if !is_free(lease, now) {
        return Approach::Wait;
    }
    let wait = if preferred {
        Duration::ZERO
    } else if held < fair {
        pace.settle.saturating_mul(held + 1)
    } else {
        pace.lease.saturating_mul(held.max(1))
    };
    if free_for >= wait {
        Approach::Take
    } else {
        Approach::Wait
    }
}

/// Whether to give a held shard up so that a replica holding fewer takes it: while holding more
/// than the fair share, one non-preferred shard per Lease duration.
pub fn should_release(
    preferred: bool,
    (held, fair): (u32, u32),
    since_last_release: Duration,
    pace: Pace,
) -> bool {
    !preferred && held > fair && since_last_release >= pace.lease
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    use super::*;

    const TEST_PACE: Pace = Pace {
        lease: Duration::from_secs(15),
        settle: Duration::from_secs(2),
    };

    fn lease(name: &str, holder: Option<&str>, renewed: SystemTime) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                renew_time: Some(MicroTime(renewed.try_into().unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn every_uid_lands_in_range_and_the_shards_are_even() {
        for count in [1, 2, 3, 7, 16] {
            let mut sizes = vec![0u32; count as usize];
            for i in 0..6000 {
                let s = shard_of(&format!("6f1c-{i}"), count);
                assert!(s < count);
                sizes[s as usize] += 1;
            }
            let even = 6000 / count;
            for size in sizes {
                assert!(
                    size.abs_diff(even) < even / 5,
                    "{count} shards: {size} vs {even}"
                );
            }
        }
        assert_eq!(shard_of("any", 0), 0);
    }

    #[test]
    fn growing_the_count_moves_a_scaler_only_into_the_new_shard() {
        for i in 0..2000 {
            let uid = format!("b7e2-{i}");
            for count in 1..12 {
                let before = shard_of(&uid, count);
                let after = shard_of(&uid, count + 1);
                assert!(
                    after == before || after == count,
                    "{uid}: {before} -> {after}"
                );
            }
        }
    }

    #[test]
    fn the_shard_of_a_uid_never_changes_between_builds() {
        // Replicas of different builds must agree: these values are fixed by SHA-256 and the
        // algorithm, not by anything the toolchain chooses (a separate Python rendering of the
        // paper's algorithm over hashlib's SHA-256 gives the same).
        let got: Vec<u32> = ["a", "b", "c", "0e6a1f52-7d1c-4f0b-9a57-3c2d9b0c1e11"]
            .iter()
            .map(|u| shard_of(u, 5))
            .collect();
        assert_eq!(got, vec![1, 3, 1, 0]);
    }

    #[test]
    fn lease_names_round_trip_and_other_names_are_not_shards() {
        assert_eq!(lease_name("hoist", 2, 3), "hoist-shard-2-of-3");
        assert_eq!(
            parse_lease_name("hoist", "hoist-shard-2-of-3"),
            Some((2, 3))
        );
        for other in [
            "hoist",
            "hoist-shard-3-of-3",
            "hoist-shard-x-of-3",
            "other-shard-0-of-3",
            "hoist-shard-0",
        ] {
            assert_eq!(parse_lease_name("hoist", other), None, "{other}");
        }
    }

    #[test]
    fn a_holder_stops_before_its_lease_expires_for_others() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let l = lease("x", Some("a"), t0);
        let margin = Duration::from_secs(2);
        assert_eq!(
            fresh_holder(&l, t0 + Duration::from_secs(12), margin),
            Some("a")
        );
        assert_eq!(fresh_holder(&l, t0 + Duration::from_secs(13), margin), None);
        assert!(!is_free(Some(&l), t0 + Duration::from_secs(14)));
        assert!(is_free(Some(&l), t0 + Duration::from_secs(15)));
        assert!(is_free(None, t0));
        assert!(is_free(Some(&lease("x", Some(""), t0)), t0));
        assert!(is_free(Some(&lease("x", None, t0)), t0));
    }

    #[test]
    fn a_live_lease_of_another_shard_count_stops_everything() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let census = Census {
            base: "hoist",
            count: 3,
            identity: "me",
        };
        let same = lease("hoist-shard-0-of-3", Some("b"), t0);
        let other = lease("hoist-shard-1-of-4", Some("c"), t0);
        let single = lease("hoist", Some("d"), t0);
        let unrelated = lease("kube-scheduler", Some("e"), t0);
        assert_eq!(census.other_count_live([&same, &unrelated], t0), None);
        assert_eq!(
            census.other_count_live([&same, &other], t0).as_deref(),
            Some("hoist-shard-1-of-4 (held by c)")
        );
        assert!(census.other_count_live([&single], t0).is_some());
        let later = t0 + Duration::from_secs(16);
        assert_eq!(
            census.other_count_live([&other, &single], later),
            None,
            "expired"
        );
    }

    #[test]
    fn free_shards_go_first_to_replicas_holding_fewer() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let held_by_b = lease("s", Some("b"), t0);
        let mine = lease("s", Some("me"), t0);
        let expired = lease("s", Some("b"), t0 - Duration::from_secs(30));
        let at = |l: Option<&Lease>, preferred, held_fair, free_secs| {
            approach(
                l,
                "me",
                t0,
                preferred,
                held_fair,
                Duration::from_secs(free_secs),
                TEST_PACE,
            )
        };
        let rows = [
            (
                at(Some(&mine), false, (3, 1), 0),
                Approach::Take,
                "named after me",
            ),
            (
                at(Some(&held_by_b), true, (0, 1), 99),
                Approach::Wait,
                "held by b",
            ),
            (at(None, true, (2, 1), 0), Approach::Take, "preferred, free"),
            (
                at(None, false, (0, 1), 0),
                Approach::Wait,
                "the preferred go first",
            ),
            (at(None, false, (0, 1), 2), Approach::Take, "holding none"),
            (
                at(None, false, (1, 2), 2),
                Approach::Wait,
                "below share, holding one",
            ),
            (
                at(None, false, (1, 2), 4),
                Approach::Take,
                "below share, after those with none",
            ),
            (
                at(Some(&expired), false, (1, 1), 4),
                Approach::Wait,
                "at share, just expired",
            ),
            (
                at(Some(&expired), false, (1, 1), 15),
                Approach::Take,
                "at share, nobody took it",
            ),
            (
                at(None, false, (2, 1), 15),
                Approach::Wait,
                "above share, 15 s",
            ),
            (
                at(None, false, (2, 1), 30),
                Approach::Take,
                "above share, 30 s",
            ),
        ];
        for (got, want, case) in rows {
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn replicas_above_their_share_give_one_shard_up_at_a_time() {
        assert_eq!(fair_share(3, 1), 3);
        assert_eq!(fair_share(3, 2), 2);
        assert_eq!(fair_share(3, 3), 1);
        assert_eq!(fair_share(3, 5), 1);
        assert_eq!(fair_share(3, 0), 3);
        let long = Duration::from_mins(1);
        assert!(should_release(false, (3, 1), long, TEST_PACE));
        assert!(
            !should_release(true, (3, 1), long, TEST_PACE),
            "never the preferred"
        );
        assert!(!should_release(false, (1, 1), long, TEST_PACE), "at share");
        assert!(
            !should_release(false, (3, 1), Duration::from_secs(5), TEST_PACE),
            "one per lease"
        );
    }

    #[test]
    fn live_members_are_the_member_leases_renewed_in_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_hours(500_000);
        let a = lease(&member_lease_name("hoist", "a"), Some("a"), t0);
        let b = lease(&member_lease_name("hoist", "b"), Some("b"), t0);
        let gone = lease(
            &member_lease_name("hoist", "c"),
            Some("c"),
            t0 - Duration::from_mins(1),
        );
        let shard = lease("hoist-shard-0-of-3", Some("a"), t0);
        let other = lease("other-member-x", Some("x"), t0);
        assert_eq!(
            live_members("hoist", [&a, &b, &gone, &shard, &other], t0),
            2
        );
        assert_eq!(live_members("hoist", [], t0), 1, "at least this one");
        assert!(!is_member_lease("hoist", "hoist-member-"));
    }
}
