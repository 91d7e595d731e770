//! Builtin autoscaling: hoist computes desired replicas itself.
//!
//! Three algorithms, all pure (no clock, no I/O, no async; the time is passed in):
//!
//! - [`KpaParams`]: Knative's KPA — stable and panic windows over the *total* metric across
//!   pods, panic mode that never scales down, rate limits, scale to zero after a grace period.
//! - [`ApaParams`]: `AIBrix`'s APA — per-pod value against a target with a tolerance band, rate
//!   caps per step, a scale-down stabilization window.
//! - [`HpaParams`]: the Kubernetes HPA formula with `behavior` (stabilization windows and
//!   Pods/Percent policies).
//!
//! Every algorithm implements [`Autoscaler`]: parameters are plain structs (their `Default` is
//! the upstream default), the state they carry between calls is a separate serialisable value
//! (`State`) that the operator keeps in memory or in the Scaler's status, and each call returns a
//! [`Decision`]: either a [`Recommendation`] already clamped to the Scaler's [`Bounds`], or a
//! [`HoldReason`] meaning "change nothing" (a NaN or negative metric, a bad parameter, time going
//! backwards). On a hold the state is left untouched.
//!
//! When a metric source fails, [`MetricFreshness::assess`] says whether the last known value may
//! still be used; when it may not, the controller holds the current replica count
//! ([`HoldReason::MetricUnavailable`]) instead of scaling to zero or to the minimum.

mod apa;
mod hpa;
mod kpa;
#[cfg(test)]
mod proptests;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use apa::{ApaParams, ApaState};
pub use hpa::{HpaParams, HpaPolicy, HpaPolicyKind, HpaRules, HpaState, SelectPolicy};
pub use kpa::{KpaParams, KpaState};

/// A point in time: milliseconds since the Unix epoch. The caller supplies it; nothing in this
/// module reads a clock.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// From whole seconds since the Unix epoch (saturating).
    pub const fn from_unix_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This time moved back by `d` (saturating).
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(millis(d)))
    }

    /// This time moved forward by `d` (saturating).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(millis(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero when `earlier` is later.
    pub fn since(self, earlier: Self) -> Duration {
        u64::try_from(self.0.saturating_sub(earlier.0))
            .map_or(Duration::ZERO, Duration::from_millis)
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Inclusive replica bounds (`spec.autoscaling` min/max). `min` may be 0 (scale to zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    /// Fewest replicas, ≥ 0.
    pub min: i32,
    /// Most replicas, ≥ `min`.
    pub max: i32,
}

impl Default for Bounds {
    /// `[0, i32::MAX]`: no bound.
    fn default() -> Self {
        Self {
            min: 0,
            max: i32::MAX,
        }
    }
}

impl Bounds {
    /// Bounds `[min, max]`.
    pub const fn new(min: i32, max: i32) -> Self {
        Self { min, max }
    }

    fn check(self) -> Result<(), HoldReason> {
        if self.min < 0 || self.max < self.min {
            return Err(HoldReason::InvalidBounds {
                min: self.min,
                max: self.max,
            });
        }
        Ok(())
    }

    /// `n` brought into `[min, max]`, with the bound that applied, if any.
    fn apply(self, n: i32) -> (i32, Option<Limit>) {
        if n < self.min {
            (self.min, Some(Limit::MinReplicas))
        } else if n > self.max {
            (self.max, Some(Limit::MaxReplicas))
        } else {
            (n, None)
        }
    }
}

/// One observed metric and its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// The observed value.
    pub value: MetricValue,
    /// The value one pod should carry (e.g. 10 concurrent requests, 0.8 cores). Finite, > 0.
    pub target_per_pod: f64,
}

impl Metric {
    /// A metric observed as a total across all pods.
    pub const fn total(total: f64, target_per_pod: f64) -> Self {
        Self {
            value: MetricValue::Total(total),
            target_per_pod,
        }
    }

    /// A metric observed as an average per pod.
    pub const fn per_pod(average: f64, target_per_pod: f64) -> Self {
        Self {
            value: MetricValue::PerPod(average),
            target_per_pod,
        }
    }

    /// The total across `pods` pods (a per-pod average is multiplied by `pods`).
    fn total_over(&self, pods: i32) -> f64 {
        match self.value {
            MetricValue::Total(t) => t,
            MetricValue::PerPod(a) => a * f64::from(pods.max(0)),
        }
    }

    /// The average per pod over `pods` pods (a total is divided by `max(pods, 1)`).
    fn per_pod_over(&self, pods: i32) -> f64 {
        match self.value {
            MetricValue::Total(t) => t / f64::from(pods.max(1)),
            MetricValue::PerPod(a) => a,
        }
    }

    fn raw(&self) -> f64 {
        match self.value {
            MetricValue::Total(v) | MetricValue::PerPod(v) => v,
        }
    }
}

/// How a metric value was observed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MetricValue {
    /// Summed across the target's ready pods (e.g. `sum(rate(requests[1m]))`). The KPA wants
    /// this; the APA and HPA divide it by the ready pod count.
    Total(f64),
    /// Averaged per ready pod. The KPA multiplies it by the ready pod count.
    PerPod(f64),
}

/// What an algorithm sees at one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricInput<'a> {
    /// Replicas the target is scaled to now (its /scale `spec.replicas`), ≥ 0.
    pub current_replicas: i32,
    /// Pods of the target that are ready, ≥ 0.
    pub ready_replicas: i32,
    /// The Scaler's bounds; every recommendation lies within them.
    pub bounds: Bounds,
    /// One or more metrics; the largest recommendation wins.
    pub metrics: &'a [Metric],
}

impl MetricInput<'_> {
    /// Checks the input; a hold reason when a decision must not be made from it.
    fn check(&self) -> Result<(), HoldReason> {
        if self.current_replicas < 0 || self.ready_replicas < 0 {
            return Err(HoldReason::InvalidReplicas {
                current: self.current_replicas,
                ready: self.ready_replicas,
            });
        }
        self.bounds.check()?;
        if self.metrics.is_empty() {
            return Err(HoldReason::NoMetrics);
        }
        for (index, m) in self.metrics.iter().enumerate() {
            let v = m.raw();
            if !v.is_finite() || v < 0.0 {
                return Err(HoldReason::InvalidMetric { index, value: v });
            }
            if !m.target_per_pod.is_finite() || m.target_per_pod <= 0.0 {
                return Err(HoldReason::InvalidTarget {
                    index,
                    target: m.target_per_pod,
                });
            }
        }
        Ok(())
    }

    /// Whether any metric shows demand (a value above zero).
    fn has_demand(&self) -> bool {
        self.metrics.iter().any(|m| m.raw() > 0.0)
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Scale to (or stay at) `Recommendation::replicas`.
    Scale(Recommendation),
    /// Change nothing: keep the current replica count. The reason belongs in a condition.
    Hold(HoldReason),
}

impl Decision {
    /// The recommended replica count, or `None` for a hold.
    pub fn replicas(&self) -> Option<i32> {
        match self {
            Self::Scale(r) => Some(r.replicas),
            Self::Hold(_) => None,
        }
    }
}

/// A replica count recommended by an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The replicas to run: within the bounds, after windows and rate limits.
    pub replicas: i32,
    /// What the metrics alone asked for (largest over metrics), before windows, rate limits and
    /// bounds.
    pub desired: i32,
    /// What kept `replicas` from `desired`, if anything (the last limit applied).
    pub limited_by: Option<Limit>,
    /// KPA only: the algorithm is in panic mode (it does not scale down).
    pub panicking: bool,
}

impl Recommendation {
    /// The final step every algorithm shares: clamp `replicas` to `bounds` and build the
    /// decision; a bound that bites is the limit reported, else `limited_by`.
    pub fn bounded(
        bounds: &Bounds,
        replicas: i32,
        desired: i32,
        limited_by: Option<Limit>,
        panicking: bool,
    ) -> Decision {
        let (replicas, bound) = bounds.apply(replicas);
        Decision::Scale(Recommendation {
            replicas,
            desired,
            limited_by: bound.or(limited_by),
            panicking,
        })
    }
}

/// What held a recommendation back from what the metrics asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Limit {
    /// A stabilization window kept an earlier, higher (scale-down) or lower (scale-up)
    /// recommendation.
    Stabilization,
    /// The scale-up rate limit or policy.
    ScaleUpRate,
    /// The scale-down rate limit or policy.
    ScaleDownRate,
    /// KPA panic mode: no scale-down while panicking.
    Panic,
    /// KPA: zero was asked for, but the scale-to-zero grace period has not passed.
    ScaleToZeroGrace,
    /// The Scaler's minimum.
    MinReplicas,
    /// The Scaler's maximum.
    MaxReplicas,
}

/// Why no recommendation was made. The controller keeps the current replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HoldReason {
    /// The input held no metric.
    NoMetrics,
    /// A metric value was NaN, infinite or negative.
    InvalidMetric {
        /// Position in [`MetricInput::metrics`].
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A target was NaN, infinite, zero or negative.
    InvalidTarget {
        /// Position in [`MetricInput::metrics`].
        index: usize,
        /// The offending target.
        target: f64,
    },
    /// A replica count was negative.
    InvalidReplicas {
        /// The current replicas given.
        current: i32,
        /// The ready replicas given.
        ready: i32,
    },
    /// `min < 0` or `max < min`.
    InvalidBounds {
        /// The minimum given.
        min: i32,
        /// The maximum given.
        max: i32,
    },
    /// A parameter is out of its range; names the parameter.
    InvalidParameter(&'static str),
    /// `now` is earlier than a time already recorded in the state.
    TimeWentBackwards,
    /// The metric source failed for longer than values may be held
    /// (see [`MetricFreshness`]); for the controller's use.
    MetricUnavailable,
}

impl HoldReason {
    /// A CamelCase reason for a Kubernetes condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoMetrics => "NoMetrics",
            Self::InvalidMetric { .. } => "InvalidMetric",
            Self::InvalidTarget { .. } => "InvalidTarget",
            Self::InvalidReplicas { .. } => "InvalidReplicas",
            Self::InvalidBounds { .. } => "InvalidBounds",
            Self::InvalidParameter(_) => "InvalidParameter",
            Self::TimeWentBackwards => "TimeWentBackwards",
            Self::MetricUnavailable => "MetricUnavailable",
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoMetrics => write!(f, "no metric to decide from; replicas held"),
            Self::InvalidMetric { index, value } => {
                write!(
                    f,
                    "metric {index} has the unusable value {value}; replicas held"
                )
            }
            Self::InvalidTarget { index, target } => {
                write!(
                    f,
                    "metric {index} has the unusable target {target}; replicas held"
                )
            }
            Self::InvalidReplicas { current, ready } => {
                write!(
                    f,
                    "negative replica count (current {current}, ready {ready}); replicas held"
                )
            }
            Self::InvalidBounds { min, max } => {
                write!(f, "invalid bounds min {min} max {max}; replicas held")
            }
            Self::InvalidParameter(name) => {
                write!(f, "parameter {name} is out of range; replicas held")
            }
            Self::TimeWentBackwards => write!(f, "time went backwards; replicas held"),
            Self::MetricUnavailable => {
                write!(
                    f,
                    "metric source unavailable and no recent value; replicas held"
                )
            }
        }
    }
}

/// An autoscaling algorithm: parameters (`self`) plus state carried between calls.
pub trait Autoscaler {
    /// What the algorithm remembers between decisions. Serialisable so the operator can keep it
    /// across restarts; `Default` is a fresh start.
    type State: Clone + Default + fmt::Debug + PartialEq + Serialize + DeserializeOwned;

    /// One decision at time `now` from `input`. Calls must come with non-decreasing `now`.
    /// On [`Decision::Hold`] `state` is unchanged.
    fn recommend(
        &self,
        state: &mut Self::State,
        now: Timestamp,
        input: &MetricInput<'_>,
    ) -> Decision;
}

/// Any of the builtin algorithms, for the operator to hold one value per Scaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Algorithm {
    /// Knative KPA.
    Kpa(KpaParams),
    /// `AIBrix` APA.
    Apa(ApaParams),
    /// Kubernetes HPA formula with behavior.
    Hpa(HpaParams),
}

/// The state of whichever algorithm runs; switching algorithms starts from a fresh state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "camelCase")]
pub enum AlgorithmState {
    /// Nothing recorded yet.
    #[default]
    Empty,
    /// KPA state.
    Kpa(KpaState),
    /// APA state.
    Apa(ApaState),
    /// HPA state.
    Hpa(HpaState),
}

impl Autoscaler for Algorithm {
    type State = AlgorithmState;

    fn recommend(
        &self,
        state: &mut AlgorithmState,
        now: Timestamp,
        input: &MetricInput<'_>,
    ) -> Decision {
        // A state of another algorithm (or none) is replaced by a fresh one, but only once the
        // fresh one produced a recommendation: a hold leaves the state as it was.
        match self {
            Self::Kpa(p) => {
                if let AlgorithmState::Kpa(s) = state {
                    return p.recommend(s, now, input);
                }
                let mut s = KpaState::default();
                let d = p.recommend(&mut s, now, input);
                if matches!(d, Decision::Scale(_)) {
                    *state = AlgorithmState::Kpa(s);
                }
                d
            }
            Self::Apa(p) => {
                if let AlgorithmState::Apa(s) = state {
                    return p.recommend(s, now, input);
                }
                let mut s = ApaState::default();
                let d = p.recommend(&mut s, now, input);
                if matches!(d, Decision::Scale(_)) {
                    *state = AlgorithmState::Apa(s);
                }
                d
            }
            Self::Hpa(p) => {
                if let AlgorithmState::Hpa(s) = state {
                    return p.recommend(s, now, input);
                }
                let mut s = HpaState::default();
                let d = p.recommend(&mut s, now, input);
                if matches!(d, Decision::Scale(_)) {
                    *state = AlgorithmState::Hpa(s);
                }
                d
            }
        }
    }
}

/// Whether the last value of a metric source may still be used.
///
/// KEDA users' complaint: when the metric source is down, KEDA scales to zero. hoist instead
/// keeps the last known value for up to `max_hold`, then holds the replica count where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricFreshness {
    /// The source answered this time.
    Fresh,
    /// The source failed; the last value (this old) is still used.
    Held {
        /// Age of the last good value.
        age: Duration,
    },
    /// The source failed for longer than `max_hold`; the value is not used and replicas are held.
    Expired {
        /// Age of the last good value.
        age: Duration,
    },
    /// The source never answered; replicas are held.
    Missing,
}

/// How long a metric value may be held after its source fails, when nothing else is said.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_mins(5);

impl MetricFreshness {
    /// Classifies a source: `source_ok` is whether this poll succeeded, `last_success` when it last
    /// did (if ever), `max_hold` how long a value may be used after the source starts failing.
    pub fn assess(
        source_ok: bool,
        last_success: Option<Timestamp>,
        now: Timestamp,
        max_hold: Duration,
    ) -> Self {
        match (source_ok, last_success) {
            (true, _) => Self::Fresh,
            (false, None) => Self::Missing,
            (false, Some(at)) => {
                let age = now.since(at);
                if age <= max_hold {
                    Self::Held { age }
                } else {
                    Self::Expired { age }
                }
            }
        }
    }

    /// Whether the (last) value may be fed to an algorithm. When not, hold the replicas.
    pub fn usable(&self) -> bool {
        matches!(self, Self::Fresh | Self::Held { .. })
    }

    /// A CamelCase reason for a condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Fresh => "MetricAvailable",
            Self::Held { .. } => "LastKnownValueHeld",
            Self::Expired { .. } => "MetricUnavailable",
            Self::Missing => "NoMetricYet",
        }
    }

    /// A human message for a condition.
    pub fn message(&self) -> String {
        match self {
            Self::Fresh => "the metric source answered".to_owned(),
            Self::Held { age } => format!(
                "the metric source is failing; using the last known value from {}s ago",
                age.as_secs()
            ),
            Self::Expired { age } => format!(
                "the metric source has failed for {}s, longer than values are held; replicas are kept as they are",
                age.as_secs()
            ),
            Self::Missing => {
                "the metric source has not answered yet; replicas are kept as they are".to_owned()
            }
        }
    }
}

/// `x` rounded towards +∞ as a replica count, saturating into `[0, i32::MAX]`; NaN → 0
/// (callers never pass NaN: inputs are checked first).
fn ceil_replicas(x: f64) -> i32 {
    to_replicas(x.ceil())
}

/// `x` rounded towards −∞ as a replica count, saturating into `[0, i32::MAX]`; NaN → 0.
fn floor_replicas(x: f64) -> i32 {
    to_replicas(x.floor())
}

#[allow(clippy::cast_possible_truncation)] // clamped into i32's range first; NaN handled.
fn to_replicas(x: f64) -> i32 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(i32::MAX) {
        i32::MAX
    } else {
        x as i32
    }
}

/// Past recommendations for stabilization windows, as the HPA keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecommendationHistory {
    entries: VecDeque<Stamped>,
    /// Whether the history was seeded with the count of the first decision. As the HPA's
    /// `recordInitialRecommendation`, only a fresh history is seeded: one that emptied because
    /// its windows are shorter than the time between decisions (or after a pause) is not.
    #[serde(default)]
    seeded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Stamped {
    at: Timestamp,
    replicas: i32,
}

impl RecommendationHistory {
    fn last_time(&self) -> Option<Timestamp> {
        self.entries.back().map(|e| e.at)
    }

    /// The HPA's stabilization: the result lies between the lowest recommendation of the
    /// scale-up window and the highest of the scale-down window (both including `desired`), as
    /// near to `current` as that allows. Records `desired`.
    ///
    /// A fresh history is seeded with `current` at `now`, so a fresh autoscaler (or one whose
    /// state was lost) waits a full scale-down window before its first scale-down. Entries older
    /// than both windows are forgotten; a history they leave empty is not seeded again.
    fn stabilize(
        &mut self,
        now: Timestamp,
        current: i32,
        desired: i32,
        up: Duration,
        down: Duration,
    ) -> i32 {
        if !self.seeded {
            self.seeded = true;
            self.entries.push_back(Stamped {
                at: now,
                replicas: current,
            });
        }
        let keep_from = now.saturating_sub(up.max(down));
        while self.entries.front().is_some_and(|e| e.at < keep_from) {
            self.entries.pop_front();
        }
        let up_cutoff = now.saturating_sub(up);
        let down_cutoff = now.saturating_sub(down);
        let mut up_rec = desired;
        let mut down_rec = desired;
        for e in &self.entries {
            if e.at > up_cutoff {
                up_rec = up_rec.min(e.replicas);
            }
            if e.at > down_cutoff {
                down_rec = down_rec.max(e.replicas);
            }
        }
        self.entries.push_back(Stamped {
            at: now,
            replicas: desired,
        });
        current.max(up_rec).min(down_rec)
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;

    /// (time s, current, desired, expected) at each decision.
    type Steps = &'static [(i64, i32, i32, i32)];

    /// Windows shorter than the time between decisions (or a pause longer than them) empty the
    /// history; it is not seeded with the current count again, so the recommendation follows
    /// the metrics (as the HPA's, which seeds only a fresh autoscaler).
    #[test]
    fn an_emptied_history_is_not_seeded_again() {
        let secs = |s| Timestamp::from_unix_secs(s);
        // (up window s, down window s, [(time s, current, desired, expected)])
        let table: [(u64, u64, Steps); 3] = [
            // Both windows shorter than the 15 s between decisions: every change goes through.
            (
                0,
                10,
                &[
                    (0, 10, 10, 10),
                    (15, 10, 4, 4),
                    (30, 4, 8, 8),
                    (45, 8, 2, 2),
                ],
            ),
            // Down window 20 s: the seed (t = 0) and the 10 of t = 15 hold until they leave it.
            (
                0,
                20,
                &[
                    (0, 10, 10, 10),
                    (15, 10, 4, 10),
                    (30, 10, 4, 4),
                    (45, 4, 2, 4),
                ],
            ),
            // A pause of 600 s, longer than the 300 s window: the old entries are gone and the
            // first decision after it scales down.
            (0, 300, &[(0, 10, 10, 10), (600, 10, 3, 3)]),
        ];
        for (up, down, steps) in table {
            let mut h = RecommendationHistory::default();
            for &(t, current, desired, want) in steps {
                let got = h.stabilize(
                    secs(t),
                    current,
                    desired,
                    Duration::from_secs(up),
                    Duration::from_secs(down),
                );
                assert_eq!(got, want, "windows {up}/{down} at t {t}");
            }
        }
    }
}
