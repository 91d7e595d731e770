//! Knative's KPA (Knative Pod Autoscaler), as in knative/serving `pkg/autoscaler/scaling`.
//!
//! Each decision records the current sample of every metric — the *total* across pods, e.g.
//! total in-flight requests — and averages the samples of the stable window (60 s) and of the
//! panic window (10 % of it, 6 s), truncated to 6 decimals as Knative's buckets do. (Knative
//! scrapes every second into 1 s buckets and counts a second without a sample as zero; hoist
//! samples once per decision and averages the samples it has.) Then, per metric, with `target = target_per_pod ×
//! target_utilization` and `ready = max(ready pods, 1)`:
//!
//! - `dspc = ceil(stableAverage / target)`, `dppc = ceil(panicAverage / target)` (Knative
//!   divides the windowed total, so the answer grows with load, not with the pod count);
//! - both clamped to `[floor(ready / max_scale_down_rate), ceil(max_scale_up_rate × ready)]`;
//! - the largest over metrics wins.
//!
//! Panic mode starts when `dppc / ready ≥ panic_threshold`; while it lasts the count only rises
//! (the highest count seen in panic is kept). As in Knative, every decision that is still over
//! the threshold renews the panic, and panic ends only at a decision under the threshold that
//! comes strictly more than a stable window after the panic was last renewed.
//!
//! Zero: scaling from N to 0 happens only after zero has been asked for continuously for the
//! scale-to-zero grace period (30 s); meanwhile one replica is kept. From 0, any demand asks for
//! at least one replica (activation).
//!
//! A fresh state (no decision yet, e.g. after the state was lost) starts in panic mode holding
//! the ready pods when more than one is ready, as Knative's autoscaler starts: adopting a running
//! workload never shrinks it on the first, one-sample average, and it scales down only once a
//! stable window has passed without a decision over the panic threshold.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Autoscaler, Decision, HoldReason, Limit, MetricInput, Recommendation, Timestamp, ceil_replicas,
};

/// KPA parameters. Defaults are Knative's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KpaParams {
    /// Stable window: samples averaged for the normal decision. Default 60 s. > 0.
    pub stable_window: Duration,
    /// Panic window as a percentage of the stable window. Default 10 (%), i.e. 6 s. In (0, 100].
    pub panic_window_percentage: f64,
    /// Panic when the panic-window pod count reaches this multiple of the ready pods.
    /// Default 2.0 (Knative's 200 %). Finite, > 0.
    pub panic_threshold: f64,
    /// At most this multiple of the ready pods per decision. Default 1000. Finite, ≥ 1.
    pub max_scale_up_rate: f64,
    /// At least ready pods divided by this per decision. Default 2. Finite, ≥ 1.
    pub max_scale_down_rate: f64,
    /// Fraction of the per-pod target to aim at. Default 0.7. In (0, 1].
    pub target_utilization: f64,
    /// How long zero must be asked for before scaling to zero. Default 30 s.
    pub scale_to_zero_grace: Duration,
}

impl Default for KpaParams {
    fn default() -> Self {
        Self {
            stable_window: Duration::from_mins(1),
            panic_window_percentage: 10.0,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            target_utilization: 0.7,
            scale_to_zero_grace: Duration::from_secs(30),
        }
    }
}

impl KpaParams {
    /// The panic window: `panic_window_percentage` of the stable window (at least 1 ms).
    pub fn panic_window(&self) -> Duration {
        self.stable_window
            .mul_f64(self.panic_window_percentage / 100.0)
            .max(Duration::from_millis(1))
    }

    fn check(&self) -> Result<(), HoldReason> {
        let fails = |ok: bool, name| {
            if ok {
                Ok(())
            } else {
                Err(HoldReason::InvalidParameter(name))
            }
        };
        fails(
            self.stable_window >= Duration::from_millis(1),
            "stableWindow",
        )?;
        let pct = self.panic_window_percentage;
        fails(
            pct.is_finite() && pct > 0.0 && pct <= 100.0,
            "panicWindowPercentage",
        )?;
        fails(
            self.panic_threshold.is_finite() && self.panic_threshold > 0.0,
            "panicThreshold",
        )?;
        fails(
            self.max_scale_up_rate.is_finite() && self.max_scale_up_rate >= 1.0,
            "maxScaleUpRate",
        )?;
        fails(
            self.max_scale_down_rate.is_finite() && self.max_scale_down_rate >= 1.0,
            "maxScaleDownRate",
        )?;
        let u = self.target_utilization;
        fails(u.is_finite() && u > 0.0 && u <= 1.0, "targetUtilization")
    }
}

/// What the KPA remembers between decisions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KpaState {
    /// Samples of the stable window, one queue per metric (by position in the input).
    windows: Vec<VecDeque<Sample>>,
    /// When panic was entered or last renewed; `None` when not panicking.
    panic_since: Option<Timestamp>,
    /// The highest pod count decided while panicking.
    max_panic_pods: i32,
    /// Since when zero replicas have been asked for continuously.
    zero_since: Option<Timestamp>,
    /// Whether a decision was made: the first one starts in panic when more than one pod is
    /// ready.
    started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sample {
    at: Timestamp,
    total: f64,
}

impl KpaState {
    /// Whether the KPA is in panic mode.
    pub fn panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    fn last_time(&self) -> Option<Timestamp> {
        self.windows
            .iter()
            .filter_map(|w| w.back().map(|s| s.at))
            .max()
    }
}

/// Averages of the samples after `stable_cutoff` and after `panic_cutoff` (exclusive), newest
/// first; `None` when a window holds no sample.
fn window_averages(
    w: &VecDeque<Sample>,
    stable_cutoff: Timestamp,
    panic_cutoff: Timestamp,
) -> (f64, f64) {
    let (mut stable_sum, mut stable_n, mut panic_sum, mut panic_n) = (0.0, 0_u32, 0.0, 0_u32);
    for s in w.iter().rev() {
        if s.at <= stable_cutoff {
            break;
        }
        stable_sum += s.total;
        stable_n += 1;
        if s.at > panic_cutoff {
            panic_sum += s.total;
            panic_n += 1;
        }
    }
    // Truncated to 6 decimals, as Knative's `WindowAverage` (`roundToNDigits`).
    let avg = |sum: f64, n: u32| {
        if n == 0 {
            0.0
        } else {
            (sum / f64::from(n) * 1e6).floor() / 1e6
        }
    };
    (avg(stable_sum, stable_n), avg(panic_sum, panic_n))
}

impl Autoscaler for KpaParams {
    type State = KpaState;

    #[allow(clippy::similar_names)] // dspc and dppc are Knative's names.
    fn recommend(&self, state: &mut KpaState, now: Timestamp, input: &MetricInput<'_>) -> Decision {
        if let Err(hold) = self.check().and_then(|()| input.check()) {
            return Decision::Hold(hold);
        }
        if state.last_time().is_some_and(|t| t > now) || state.panic_since.is_some_and(|t| t > now)
        {
            return Decision::Hold(HoldReason::TimeWentBackwards);
        }

        // A fresh state starts in panic, holding the ready pods, when more than one is ready
        // (Knative's `newAutoscaler`).
        if !state.started {
            state.started = true;
            if input.ready_replicas > 1 {
                state.panic_since = Some(now);
                state.max_panic_pods = input.ready_replicas;
            }
        }
        // Record this decision's samples; a change in the number of metrics starts afresh.
        if state.windows.len() != input.metrics.len() {
            state.windows = vec![VecDeque::new(); input.metrics.len()];
        }
        let stable_cutoff = now.saturating_sub(self.stable_window);
        let panic_cutoff = now.saturating_sub(self.panic_window());
        for (w, m) in state.windows.iter_mut().zip(input.metrics) {
            while w.front().is_some_and(|s| s.at <= stable_cutoff) {
                w.pop_front();
            }
            w.push_back(Sample {
                at: now,
                total: m.total_over(input.ready_replicas),
            });
        }

        let ready = f64::from(input.ready_replicas.max(1));
        let max_up = (self.max_scale_up_rate * ready).ceil();
        let max_down = (ready / self.max_scale_down_rate).floor();
        let (mut dspc, mut dppc) = (0.0_f64, 0.0_f64);
        for (w, m) in state.windows.iter().zip(input.metrics) {
            let target = m.target_per_pod * self.target_utilization;
            let (stable, panic) = window_averages(w, stable_cutoff, panic_cutoff);
            dspc = dspc.max((stable / target).ceil());
            dppc = dppc.max((panic / target).ceil());
        }
        let stable_pods = ceil_replicas(dspc.max(max_down).min(max_up));
        let panic_pods = ceil_replicas(dppc.max(max_down).min(max_up));

        // Panic mode, as Knative: enter or renew when over the threshold; leave when under it
        // and strictly more than a stable window has passed since the last renewal.
        let over_threshold = dppc / ready >= self.panic_threshold;
        if over_threshold {
            state.panic_since = Some(now);
        } else if state
            .panic_since
            .is_some_and(|since| now.since(since) > self.stable_window)
        {
            state.panic_since = None;
            state.max_panic_pods = 0;
        }

        // What the metrics ask for: the stable count, or the larger of both counts in panic.
        let desired = ceil_replicas(if state.panic_since.is_some() {
            dspc.max(dppc)
        } else {
            dspc
        });
        let mut limited_by = None;
        let mut pods = stable_pods;
        let current = input.current_replicas;
        if state.panic_since.is_some() {
            pods = pods.max(panic_pods);
            // In panic the count never falls: keep the highest decided since panic began.
            if pods < state.max_panic_pods {
                limited_by = Some(Limit::Panic);
            }
            state.max_panic_pods = state.max_panic_pods.max(pods);
            pods = state.max_panic_pods;
        }
        if limited_by.is_none() && pods != desired {
            limited_by = Some(if pods > desired {
                Limit::ScaleDownRate
            } else {
                Limit::ScaleUpRate
            });
        }

        // Scale to zero only after zero has been asked for through the grace period.
        if pods == 0 {
            let since = *state.zero_since.get_or_insert(now);
            if current > 0 && now.since(since) < self.scale_to_zero_grace {
                pods = 1;
                limited_by = Some(Limit::ScaleToZeroGrace);
            }
        } else {
            state.zero_since = None;
        }

        // Activation: from zero, any demand asks for a replica.
        if pods == 0 && input.has_demand() {
            pods = 1;
        }

        Recommendation::bounded(
            &input.bounds,
            pods,
            desired,
            limited_by,
            state.panic_since.is_some(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::many_single_char_names)] // p: params, s: state, r: recommendation, m: metrics, t: time
mod tests {
    use super::*;
    use crate::autoscale::{Bounds, Metric};

    const TARGET: f64 = 10.0; // per pod; × 0.7 utilization = 7 per pod

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs)
    }

    /// Feeds `total` every 2 s from `from` to `to` (inclusive) with `ready` pods and `current`
    /// replicas; returns the last decision.
    fn feed(
        p: &KpaParams,
        s: &mut KpaState,
        from: i64,
        to: i64,
        current: i32,
        ready: i32,
        total: f64,
    ) -> Recommendation {
        let metrics = [Metric::total(total, TARGET)];
        let mut last = None;
        let mut t = from;
        while t <= to {
            let input = MetricInput {
                current_replicas: current,
                ready_replicas: ready,
                bounds: Bounds::default(),
                metrics: &metrics,
            };
            match p.recommend(s, at(t), &input) {
                Decision::Scale(r) => last = Some(r),
                Decision::Hold(h) => panic!("hold at {t}: {h}"),
            }
            t += 2;
        }
        last.expect("at least one step")
    }

    /// A state that has seen `total` steadily for a full stable window with `pods` pods.
    fn settled(p: &KpaParams, pods: i32, total: f64) -> KpaState {
        let mut s = KpaState::default();
        feed(p, &mut s, 0, 60, pods, pods, total);
        s
    }

    #[test]
    fn defaults_are_knatives() {
        let p = KpaParams::default();
        assert_eq!(p.stable_window, Duration::from_mins(1));
        assert_eq!(p.panic_window(), Duration::from_secs(6));
        assert!((p.panic_threshold - 2.0).abs() < f64::EPSILON);
        assert!((p.max_scale_up_rate - 1000.0).abs() < f64::EPSILON);
        assert!((p.max_scale_down_rate - 2.0).abs() < f64::EPSILON);
        assert!((p.target_utilization - 0.7).abs() < f64::EPSILON);
        assert_eq!(p.scale_to_zero_grace, Duration::from_secs(30));
    }

    /// Steady load: `ceil(total / (target × utilization))`, independent of the pod count.
    #[test]
    fn stable_desired_is_total_over_target() {
        let p = KpaParams::default();
        // (pods now, steady total, expected replicas)
        let table = [
            (1, 7.0, 1),
            (2, 14.0, 2),
            (3, 14.0, 2), // scale-down by one: within the rate limit floor(3/2) = 1
            (4, 21.0, 3),
            (5, 35.1, 6),
            (10, 70.0, 10),
            (10, 49.0, 7),
            (8, 28.0, 4), // exactly the scale-down floor floor(8/2)
        ];
        for (pods, total, want) in table {
            let mut s = settled(&p, pods, total);
            let r = feed(&p, &mut s, 62, 62, pods, pods, total);
            assert_eq!(r.replicas, want, "pods {pods} total {total}");
            assert!(!r.panicking, "pods {pods} total {total}");
        }
    }

    /// Rate limits: at most `ceil(1000 × ready)` up, at least `floor(ready / 2)` down.
    #[test]
    fn rate_limits_both_directions() {
        let p = KpaParams {
            max_scale_up_rate: 3.0,
            ..KpaParams::default()
        };
        // (pods, old steady total, new total, expected, limit)
        let table = [
            // down: 10 pods, load vanishes → floor(10/2) = 5
            (10, 70.0, 0.0, 5, Some(Limit::ScaleDownRate)),
            // down: 9 pods → floor(4.5) = 4
            (9, 63.0, 0.0, 4, Some(Limit::ScaleDownRate)),
            // up with rate 3: 2 pods, load ×100 → ceil(3 × 2) = 6
            (2, 14.0, 1400.0, 6, Some(Limit::ScaleUpRate)),
        ];
        for (pods, old, new, want, limit) in table {
            let mut s = settled(&p, pods, old);
            // Long enough at the new load that both windows hold only the new value.
            let r = feed(&p, &mut s, 62, 122, pods, pods, new);
            assert_eq!(
                (r.replicas, r.limited_by),
                (want, limit),
                "pods {pods} {old} → {new}"
            );
        }
        // Default up rate 1000: a 1-pod service can go to 1000 at once.
        let p = KpaParams::default();
        let mut s = settled(&p, 1, 7.0);
        let r = feed(&p, &mut s, 62, 122, 1, 1, 7.0 * 5000.0);
        assert_eq!((r.replicas, r.limited_by), (1000, Some(Limit::ScaleUpRate)));
    }

    /// Panic entry: the 6 s window reaches twice the ready pods.
    #[test]
    fn panic_entry_at_threshold() {
        let p = KpaParams::default();
        // (ready pods, burst total, panics?, replicas)
        let table = [
            (4, 49.0, false, 5), // dppc 7 / 4 = 1.75 < 2: no panic; stable (27×28 + 3×49) / 30 / 7 → 5
            (4, 56.0, true, 8),  // dppc 8 / 4 = 2.0: panic, scale to the panic count 8
            (4, 140.0, true, 20), // dppc 20
            (1, 14.0, true, 2),  // dppc 2 / 1
        ];
        for (pods, burst, panics, want) in table {
            let mut s = settled(&p, pods, 7.0 * f64::from(pods));
            // Three samples fill the 6 s panic window (t = 62, 64, 66).
            let r = feed(&p, &mut s, 62, 66, pods, pods, burst);
            assert_eq!(
                (r.panicking, r.replicas),
                (panics, want),
                "pods {pods} burst {burst}"
            );
        }
    }

    /// In panic the count never falls, and panic lasts until a decision under the threshold comes
    /// a full stable window after the last one over it.
    #[test]
    fn panic_holds_then_exits_after_a_stable_window() {
        let p = KpaParams::default();
        let mut s = settled(&p, 4, 28.0);
        // Burst at t = 62..66: panic to 20 pods.
        let r = feed(&p, &mut s, 62, 66, 4, 4, 140.0);
        assert!(r.panicking);
        assert_eq!(r.replicas, 20);
        // Now 20 pods are ready and the load drops back: the panic window falls under the
        // threshold at once, but the count stays at 20 (never scale down in panic)…
        let r = feed(&p, &mut s, 68, 126, 20, 20, 28.0);
        assert!(
            r.panicking,
            "still within a stable window of the last renewal (t = 66), its end included"
        );
        assert_eq!((r.replicas, r.limited_by), (20, Some(Limit::Panic)));
        // …and at t = 128 (strictly more than 60 s after the last over-threshold decision) panic
        // ends: the stable decision applies, limited to halving per step.
        let r = feed(&p, &mut s, 128, 128, 20, 20, 28.0);
        assert!(!r.panicking);
        assert_eq!(r.replicas, 10);
    }

    /// Renewal: a burst that stays over the threshold keeps the panic alive past one window.
    #[test]
    fn panic_renews_while_over_threshold() {
        let p = KpaParams::default();
        let mut s = settled(&p, 2, 14.0);
        let r = feed(&p, &mut s, 62, 62, 2, 2, 70.0);
        assert!(r.panicking);
        // Pods stay at 2 ready (not yet started): still over the threshold for 100 s.
        let r = feed(&p, &mut s, 64, 162, 2, 2, 70.0);
        assert!(r.panicking);
        // Load gone from t = 164; the 6 s panic window still averages over the threshold at
        // t = 164 and 166 (70, 70, 0 → 7 pods; 70, 0, 0 → 4 pods = 2 × 2), so the last renewal is
        // t = 166 and panic ends at t = 228, the first decision strictly more than 60 s later.
        let r = feed(&p, &mut s, 164, 226, 2, 2, 0.0);
        assert!(r.panicking);
        let r = feed(&p, &mut s, 228, 228, 2, 2, 0.0);
        assert!(!r.panicking);
    }

    /// Panic never lowers the count even when the panic-window count drops.
    #[test]
    fn panic_keeps_the_highest_count() {
        let p = KpaParams::default();
        let mut s = settled(&p, 2, 14.0);
        let mut last = 0;
        for (t, total) in [(62, 140.0), (64, 70.0), (66, 35.0), (68, 140.0), (70, 14.0)] {
            let r = feed(&p, &mut s, t, t, 2, 2, total);
            assert!(r.panicking);
            assert!(r.replicas >= last, "t {t}: {} < {last}", r.replicas);
            last = r.replicas;
        }
    }

    /// Zero only after the grace period of asking for zero; one replica is kept meanwhile.
    #[test]
    fn scale_to_zero_after_grace_period() {
        let p = KpaParams::default();
        let mut s = settled(&p, 1, 7.0);
        // Load stops at t = 62. The stable window holds the last demand (t = 60) until t = 118.
        let r = feed(&p, &mut s, 62, 118, 1, 1, 0.0);
        assert_eq!((r.replicas, r.limited_by), (1, None));
        // From t = 120 zero is asked for; grace runs until t = 150.
        // (time, expected replicas, limit)
        let table = [
            (120, 1, Some(Limit::ScaleToZeroGrace)),
            (140, 1, Some(Limit::ScaleToZeroGrace)),
            (148, 1, Some(Limit::ScaleToZeroGrace)),
            (150, 0, None),
            (160, 0, None),
        ];
        let mut t = 120;
        for (until, want, limit) in table {
            let r = feed(&p, &mut s, t, until, 1, 1, 0.0);
            assert_eq!((r.replicas, r.limited_by), (want, limit), "t {until}");
            t = until + 2;
        }
    }

    /// Demand during the grace period cancels it.
    #[test]
    fn demand_resets_the_grace_period() {
        let p = KpaParams::default();
        let mut s = settled(&p, 1, 7.0);
        // Load stops at t = 62; zero is asked for from t = 120 (the stable window's last demand
        // leaves it), in grace until t = 150.
        let r = feed(&p, &mut s, 62, 140, 1, 1, 0.0);
        assert_eq!(r.limited_by, Some(Limit::ScaleToZeroGrace));
        let r = feed(&p, &mut s, 142, 142, 1, 1, 3.0);
        assert_eq!(r.replicas, 1);
        // The sample of t = 142 leaves the stable window at t = 202: zero asked for again from
        // then, grace until t = 232.
        let r = feed(&p, &mut s, 144, 230, 1, 1, 0.0);
        assert_eq!(
            (r.replicas, r.limited_by),
            (1, Some(Limit::ScaleToZeroGrace))
        );
        let r = feed(&p, &mut s, 232, 232, 1, 1, 0.0);
        assert_eq!(r.replicas, 0);
    }

    /// Activation: from zero, any demand asks for at least one replica; none stays at zero.
    #[test]
    fn activation_from_zero() {
        let p = KpaParams::default();
        // (first total after idling, expected replicas): the panic window (3 samples) decides
        // the first step; 42 / 3 samples = 14 → 2 pods, which is also a panic from 1 (virtual) pod.
        let table = [(0.0, 0), (0.001, 1), (7.0, 1), (14.0, 1), (42.0, 2)];
        for (total, want) in table {
            let mut s = settled(&p, 0, 0.0);
            let r = feed(&p, &mut s, 62, 62, 0, 0, total);
            assert_eq!(r.replicas, want, "total {total}");
        }
        // A fresh state at zero with no demand stays at zero (no grace-period replica).
        let mut s = KpaState::default();
        assert_eq!(feed(&p, &mut s, 0, 0, 0, 0, 0.0).replicas, 0);
    }

    /// A fresh state starts in panic holding the ready pods when more than one is ready (as
    /// Knative's autoscaler starts), so it scales down only after a stable window; with one
    /// ready pod or none it starts calm.
    #[test]
    fn a_fresh_state_starts_in_panic() {
        let p = KpaParams::default();
        let mut s = KpaState::default();
        let r = feed(&p, &mut s, 0, 0, 10, 10, 0.0);
        assert!(r.panicking);
        let r = feed(&p, &mut s, 2, 60, 10, 10, 0.0);
        assert_eq!((r.replicas, r.limited_by), (10, Some(Limit::Panic)));
        let r = feed(&p, &mut s, 62, 62, 10, 10, 0.0);
        assert_eq!((r.replicas, r.panicking), (5, false));

        // In that first panic the panic window scales up at once.
        let mut s = KpaState::default();
        let r = feed(&p, &mut s, 0, 0, 2, 2, 70.0);
        assert_eq!((r.replicas, r.panicking), (10, true));

        let mut s = KpaState::default();
        let r = feed(&p, &mut s, 0, 0, 1, 1, 7.0);
        assert!(!r.panicking);
    }

    /// Several metrics: the largest wins.
    #[test]
    fn several_metrics_take_the_largest() {
        let p = KpaParams::default();
        let mut s = KpaState::default();
        let metrics = [
            Metric::total(14.0, TARGET),
            Metric::total(35.0, TARGET),
            Metric::per_pod(1.0, 1.0),
        ];
        let input = MetricInput {
            current_replicas: 4,
            ready_replicas: 4,
            bounds: Bounds::default(),
            metrics: &metrics,
        };
        // 14 / 7 = 2; 35 / 7 = 5; 1 × 4 pods / 0.7 = 5.7 → 6.
        assert_eq!(p.recommend(&mut s, at(0), &input).replicas(), Some(6));
    }

    /// Bounds clamp every result, including zero.
    #[test]
    fn bounds_clamp() {
        let p = KpaParams::default();
        // (bounds, total, expected, limit)
        let table = [
            (Bounds::new(1, 10), 0.0, 1, Some(Limit::MinReplicas)),
            (Bounds::new(0, 10), 700.0, 10, Some(Limit::MaxReplicas)),
            (Bounds::new(3, 3), 70.0, 3, Some(Limit::MaxReplicas)),
        ];
        for (bounds, total, want, limit) in table {
            let mut s = KpaState::default();
            let metrics = [Metric::total(total, TARGET)];
            let input = MetricInput {
                current_replicas: 0,
                ready_replicas: 0,
                bounds,
                metrics: &metrics,
            };
            let Decision::Scale(r) = p.recommend(&mut s, at(0), &input) else {
                panic!("hold")
            };
            assert_eq!(
                (r.replicas, r.limited_by),
                (want, limit),
                "{bounds:?} {total}"
            );
        }
    }

    /// Unusable input holds and leaves the state as it was.
    #[test]
    fn invalid_input_holds() {
        let p = KpaParams::default();
        let s0 = settled(&p, 2, 14.0);
        let cases: [(Metric, &str); 5] = [
            (Metric::total(f64::NAN, TARGET), "InvalidMetric"),
            (Metric::total(f64::INFINITY, TARGET), "InvalidMetric"),
            (Metric::total(-1.0, TARGET), "InvalidMetric"),
            (Metric::total(1.0, 0.0), "InvalidTarget"),
            (Metric::total(1.0, f64::NAN), "InvalidTarget"),
        ];
        for (m, reason) in cases {
            let mut s = s0.clone();
            let metrics = [m];
            let input = MetricInput {
                current_replicas: 2,
                ready_replicas: 2,
                bounds: Bounds::default(),
                metrics: &metrics,
            };
            let d = p.recommend(&mut s, at(62), &input);
            assert!(
                matches!(d, Decision::Hold(h) if h.reason() == reason),
                "{m:?}: {d:?}"
            );
            assert_eq!(s, s0);
        }
        let mut s = s0.clone();
        let metrics = [Metric::total(1.0, TARGET)];
        let input = MetricInput {
            current_replicas: 2,
            ready_replicas: 2,
            bounds: Bounds::default(),
            metrics: &metrics,
        };
        assert_eq!(
            p.recommend(&mut s, at(10), &input),
            Decision::Hold(HoldReason::TimeWentBackwards)
        );
        let bad = KpaParams {
            target_utilization: f64::NAN,
            ..KpaParams::default()
        };
        assert_eq!(
            bad.recommend(&mut s, at(62), &input),
            Decision::Hold(HoldReason::InvalidParameter("targetUtilization"))
        );
        assert_eq!(s, s0);
    }

    /// The state survives a JSON round trip and continues identically.
    #[test]
    fn state_round_trips_through_json() {
        let p = KpaParams::default();
        let mut a = settled(&p, 4, 28.0);
        feed(&p, &mut a, 62, 64, 4, 4, 140.0);
        let mut b: KpaState =
            serde_json::from_str(&serde_json::to_string(&a).expect("ser")).expect("de");
        assert_eq!(a, b);
        let ra = feed(&p, &mut a, 66, 90, 20, 20, 30.0);
        let rb = feed(&p, &mut b, 66, 90, 20, 20, 30.0);
        assert_eq!(ra, rb);
    }
}
