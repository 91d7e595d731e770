//! `AIBrix`'s APA (Application Pod Autoscaler), as in aibrix `pkg/controller/podautoscaler`.
//!
//! Per metric, with `current` the target's replicas and `r = perPodValue / target` (the per-pod
//! value now, or its average over `metric_window` when one is set; `AIBrix` averages over 180 s):
//!
//! - `r > 1 + up_tolerance` → `ceil(current × r)`, capped at `ceil(max_scale_up_rate × current)`;
//! - `r < 1 − down_tolerance` → `ceil(current × r)`, floored at
//!   `floor(current / max_scale_down_rate)`;
//! - otherwise keep `current`.
//!
//! The largest over metrics wins. Then a stabilization window as the HPA's: a scale-down
//! keeps the highest recommendation of the last `scale_down_stabilization` (300 s), so the count
//! drops only once every recommendation of that window is lower; scale-up uses the lowest
//! recommendation of `scale_up_stabilization` (0 s: immediate). A fresh state is seeded with the
//! current count, so its first scale-down comes a full window later.
//!
//! From zero replicas any demand asks for one (activation); without demand it stays at zero.
//!
//! The scale-down window ("cooldown") keeps the highest recommendation of the window, as the HPA
//! does. `AIBrix`'s controller takes the *lowest* of its scale-down window (and the highest of its
//! scale-up window), which scales down at once to the deepest dip of the window instead of
//! waiting; hoist deliberately keeps the stabilizing meaning its own comment describes ("similar
//! to K8s HPA behavior").

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Autoscaler, Decision, HoldReason, Limit, MetricInput, Recommendation, RecommendationHistory,
    Timestamp, ceil_replicas, floor_replicas,
};

/// APA parameters. Defaults are `AIBrix`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApaParams {
    /// Scale up only when the per-pod value exceeds the target by more than this fraction.
    /// Default 0.1. Finite, ≥ 0.
    pub up_tolerance: f64,
    /// Scale down only when the per-pod value is below the target by more than this fraction.
    /// Default 0.1. In [0, 1).
    pub down_tolerance: f64,
    /// At most this multiple of the current replicas per decision. Default 2. Finite, ≥ 1.
    pub max_scale_up_rate: f64,
    /// At least the current replicas divided by this per decision. Default 2. Finite, ≥ 1.
    pub max_scale_down_rate: f64,
    /// Scale-up stabilization window (lowest recommendation kept). Default 0 s.
    pub scale_up_stabilization: Duration,
    /// Scale-down stabilization window, the "cooldown" (highest recommendation kept).
    /// Default 300 s.
    pub scale_down_stabilization: Duration,
    /// Decide on the average per-pod value of the decisions within this window (the current
    /// one included). Default 0 s: the current value alone.
    pub metric_window: Duration,
}

impl Default for ApaParams {
    fn default() -> Self {
        Self {
            up_tolerance: 0.1,
            down_tolerance: 0.1,
            max_scale_up_rate: 2.0,
            max_scale_down_rate: 2.0,
            scale_up_stabilization: Duration::ZERO,
            scale_down_stabilization: Duration::from_mins(5),
            metric_window: Duration::ZERO,
        }
    }
}

impl ApaParams {
    fn check(&self) -> Result<(), HoldReason> {
        let fails = |ok: bool, name| {
            if ok {
                Ok(())
            } else {
                Err(HoldReason::InvalidParameter(name))
            }
        };
        fails(
            self.up_tolerance.is_finite() && self.up_tolerance >= 0.0,
            "upTolerance",
        )?;
        fails((0.0..1.0).contains(&self.down_tolerance), "downTolerance")?;
        fails(
            self.max_scale_up_rate.is_finite() && self.max_scale_up_rate >= 1.0,
            "maxScaleUpRate",
        )?;
        fails(
            self.max_scale_down_rate.is_finite() && self.max_scale_down_rate >= 1.0,
            "maxScaleDownRate",
        )
    }

    /// One metric's proposal for `current` replicas at ratio `r`, with the cap that applied.
    fn propose(&self, current: i32, r: f64) -> (i32, Option<Limit>) {
        let c = f64::from(current);
        if r > 1.0 + self.up_tolerance {
            let want = ceil_replicas(c * r);
            let cap = ceil_replicas(self.max_scale_up_rate * c);
            if want > cap {
                (cap, Some(Limit::ScaleUpRate))
            } else {
                (want, None)
            }
        } else if r < 1.0 - self.down_tolerance {
            let want = ceil_replicas(c * r);
            let floor = floor_replicas(c / self.max_scale_down_rate);
            if want < floor {
                (floor, Some(Limit::ScaleDownRate))
            } else {
                (want, None)
            }
        } else {
            (current, None)
        }
    }
}

/// What the APA remembers between decisions: its recent recommendations and, with a metric
/// window, the recent per-pod values of every metric.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApaState {
    history: RecommendationHistory,
    /// Per metric (by position): (when, per-pod value) within the metric window.
    windows: Vec<VecDeque<(Timestamp, f64)>>,
}

impl ApaState {
    /// Records the per-pod values of this decision and returns their window averages.
    fn averaged(&mut self, now: Timestamp, window: Duration, values: &[f64]) -> Vec<f64> {
        if window.is_zero() {
            self.windows.clear();
            return values.to_vec();
        }
        if self.windows.len() != values.len() {
            self.windows = vec![VecDeque::new(); values.len()];
        }
        let cutoff = now.saturating_sub(window);
        self.windows
            .iter_mut()
            .zip(values)
            .map(|(w, &v)| {
                while w.front().is_some_and(|(at, _)| *at <= cutoff) {
                    w.pop_front();
                }
                w.push_back((now, v));
                let n = u32::try_from(w.len()).unwrap_or(u32::MAX);
                w.iter().map(|(_, v)| v).sum::<f64>() / f64::from(n)
            })
            .collect()
    }
}

impl Autoscaler for ApaParams {
    type State = ApaState;

    fn recommend(&self, state: &mut ApaState, now: Timestamp, input: &MetricInput<'_>) -> Decision {
        if let Err(hold) = self.check().and_then(|()| input.check()) {
            return Decision::Hold(hold);
        }
        if state.history.last_time().is_some_and(|t| t > now) {
            return Decision::Hold(HoldReason::TimeWentBackwards);
        }
        let current = input.current_replicas;

        let per_pod: Vec<f64> = input
            .metrics
            .iter()
            .map(|m| m.per_pod_over(input.ready_replicas))
            .collect();
        let per_pod = state.averaged(now, self.metric_window, &per_pod);
        let (desired, mut limited_by) = if current == 0 {
            (i32::from(input.has_demand()), None)
        } else {
            input
                .metrics
                .iter()
                .zip(per_pod)
                .map(|(m, v)| self.propose(current, v / m.target_per_pod))
                .max_by_key(|&(n, _)| n)
                .unwrap_or((current, None))
        };

        let stabilized = state.history.stabilize(
            now,
            current,
            desired,
            self.scale_up_stabilization,
            self.scale_down_stabilization,
        );
        if stabilized != desired {
            limited_by = Some(Limit::Stabilization);
        }
        Recommendation::bounded(&input.bounds, stabilized, desired, limited_by, false)
    }
}

#[cfg(test)]
#[allow(clippy::many_single_char_names)] // p: params, s: state, r: recommendation, m: metrics, t: time
mod tests {
    use super::*;
    use crate::autoscale::{Bounds, Metric};

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_secs(secs)
    }

    fn input(current: i32, metrics: &[Metric]) -> MetricInput<'_> {
        MetricInput {
            current_replicas: current,
            ready_replicas: current,
            bounds: Bounds::default(),
            metrics,
        }
    }

    /// Without stabilization, to see the formula alone.
    fn formula_only() -> ApaParams {
        ApaParams {
            scale_down_stabilization: Duration::ZERO,
            ..ApaParams::default()
        }
    }

    #[test]
    fn defaults_are_aibrixs() {
        let p = ApaParams::default();
        assert!((p.up_tolerance - 0.1).abs() < f64::EPSILON);
        assert!((p.down_tolerance - 0.1).abs() < f64::EPSILON);
        assert!((p.max_scale_up_rate - 2.0).abs() < f64::EPSILON);
        assert!((p.max_scale_down_rate - 2.0).abs() < f64::EPSILON);
        assert_eq!(p.scale_up_stabilization, Duration::ZERO);
        assert_eq!(p.scale_down_stabilization, Duration::from_mins(5));
    }

    /// The formula: tolerance band, `ceil(current × r)`, doubling cap and halving floor.
    #[test]
    fn formula_band_caps_and_floors() {
        let p = formula_only();
        // (current, per-pod value with target 10, expected, limit)
        let table = [
            (4, 10.0, 4, None),                     // r = 1: keep
            (4, 11.0, 4, None),                     // r = 1.1: at the edge of the band, keep
            (4, 11.5, 5, None),                     // r = 1.15: ceil(4.6)
            (4, 9.0, 4, None),                      // r = 0.9: edge of the band, keep
            (4, 8.5, 4, None),                      // r = 0.85: ceil(3.4) = 4
            (4, 7.0, 3, None),                      // r = 0.7: ceil(2.8)
            (4, 15.0, 6, None),                     // r = 1.5
            (4, 30.0, 8, Some(Limit::ScaleUpRate)), // r = 3: capped at ceil(2 × 4)
            (3, 100.0, 6, Some(Limit::ScaleUpRate)),
            (10, 1.0, 5, Some(Limit::ScaleDownRate)), // r = 0.1: floored at floor(10 / 2)
            (9, 0.0, 4, Some(Limit::ScaleDownRate)),  // floor(4.5)
            (1, 0.0, 0, None),                        // floor(0.5) = 0: 1 → 0 allowed when min is 0
        ];
        for (current, per_pod, want, limit) in table {
            let mut s = ApaState::default();
            let m = [Metric::per_pod(per_pod, 10.0)];
            let Decision::Scale(r) = p.recommend(&mut s, at(0), &input(current, &m)) else {
                panic!("hold")
            };
            assert_eq!(
                (r.replicas, r.limited_by),
                (want, limit),
                "current {current} value {per_pod}"
            );
        }
    }

    /// A total is divided by the ready pods.
    #[test]
    fn total_is_averaged_over_ready_pods() {
        let p = formula_only();
        let mut s = ApaState::default();
        let m = [Metric::total(60.0, 10.0)]; // 4 pods → 15 per pod → r = 1.5
        assert_eq!(
            p.recommend(&mut s, at(0), &input(4, &m)).replicas(),
            Some(6)
        );
    }

    /// Scale-down stabilization: the highest recommendation of the last 300 s is kept;
    /// scale-up is immediate.
    #[test]
    fn scale_down_waits_for_the_window_scale_up_does_not() {
        let p = ApaParams::default();
        let mut s = ApaState::default();
        let high = [Metric::per_pod(10.0, 10.0)];
        let low = [Metric::per_pod(5.0, 10.0)];
        // t = 0: 8 replicas at target.
        assert_eq!(
            p.recommend(&mut s, at(0), &input(8, &high)).replicas(),
            Some(8)
        );
        // Load halves from t = 30: the formula wants 4, the window keeps 8 until t = 300.
        // (time, expected)
        let table = [(30, 8), (150, 8), (298, 8), (300, 4)];
        for (t, want) in table {
            let d = p.recommend(&mut s, at(t), &input(8, &low));
            assert_eq!(d.replicas(), Some(want), "t {t}");
            if want == 8 {
                assert!(
                    matches!(d, Decision::Scale(r) if r.limited_by == Some(Limit::Stabilization))
                );
            }
        }
        // Scale-up right after: no window.
        let up = [Metric::per_pod(20.0, 10.0)];
        assert_eq!(
            p.recommend(&mut s, at(302), &input(4, &up)).replicas(),
            Some(8)
        );
    }

    /// A high recommendation in the middle of the window restarts the wait.
    #[test]
    fn a_spike_inside_the_window_extends_the_hold() {
        let p = ApaParams::default();
        let mut s = ApaState::default();
        let at_target = [Metric::per_pod(10.0, 10.0)];
        let low = [Metric::per_pod(5.0, 10.0)];
        p.recommend(&mut s, at(0), &input(8, &at_target));
        p.recommend(&mut s, at(100), &input(8, &low));
        p.recommend(&mut s, at(200), &input(8, &at_target)); // recommends 8 again
        assert_eq!(
            p.recommend(&mut s, at(300), &input(8, &low)).replicas(),
            Some(8)
        );
        assert_eq!(
            p.recommend(&mut s, at(498), &input(8, &low)).replicas(),
            Some(8)
        );
        assert_eq!(
            p.recommend(&mut s, at(500), &input(8, &low)).replicas(),
            Some(4)
        );
    }

    /// The scale-down window keeps its *highest* recommendation, as the HPA does, not its lowest:
    /// `AIBrix`'s controller code (`stabilizeRecommendation`) takes the minimum of the window on
    /// a scale-down, which would drop the count to the deepest dip of the last 300 s at once —
    /// the opposite of a cooldown. hoist keeps the HPA's meaning (see the module doc).
    #[test]
    fn a_dip_inside_the_window_does_not_pull_the_count_down_to_it() {
        let p = ApaParams::default();
        let mut s = ApaState::default();
        let at_target = [Metric::per_pod(10.0, 10.0)];
        let dip = [Metric::per_pod(5.0, 10.0)]; // ceil(8 × 0.5) = 4
        let lower = [Metric::per_pod(7.5, 10.0)]; // ceil(8 × 0.75) = 6
        p.recommend(&mut s, at(0), &input(8, &at_target));
        p.recommend(&mut s, at(100), &input(8, &dip));
        p.recommend(&mut s, at(200), &input(8, &lower));
        // At 350 s the window (50 s, 350 s] holds 4, 6 and 6: the highest, 6 — not the dip's 4.
        let d = p.recommend(&mut s, at(350), &input(8, &lower));
        assert_eq!(d.replicas(), Some(6));
    }

    /// With a metric window the decision follows the window's average per-pod value.
    #[test]
    fn a_metric_window_averages_the_per_pod_values() {
        let p = ApaParams {
            metric_window: Duration::from_secs(30),
            ..formula_only()
        };
        let mut s = ApaState::default();
        // (time, per-pod value, expected): target 10, 4 replicas.
        let table = [
            (0, 10.0, 4),  // average 10: keep
            (10, 30.0, 8), // average 20: r = 2 → 8
            (20, 10.0, 7), // average 16.67: ceil(4 × 1.667) = 7
        ];
        for (t, v, want) in table {
            let m = [Metric::per_pod(v, 10.0)];
            let got = p.recommend(&mut s, at(t), &input(4, &m)).replicas();
            assert_eq!(got, Some(want), "t {t}");
        }
        // t = 40: the samples of t = 0 and 10 left the 30 s window: (10 + 10) / 2 → keep.
        let m = [Metric::per_pod(10.0, 10.0)];
        assert_eq!(
            p.recommend(&mut s, at(40), &input(4, &m)).replicas(),
            Some(4)
        );
    }

    /// Several metrics: the largest recommendation wins.
    #[test]
    fn several_metrics_take_the_largest() {
        let p = formula_only();
        let mut s = ApaState::default();
        let m = [
            Metric::per_pod(5.0, 10.0),
            Metric::per_pod(15.0, 10.0),
            Metric::per_pod(10.0, 10.0),
        ];
        assert_eq!(
            p.recommend(&mut s, at(0), &input(4, &m)).replicas(),
            Some(6)
        );
    }

    /// From zero: any demand → 1, none → 0.
    #[test]
    fn activation_from_zero() {
        let p = ApaParams::default();
        for (value, want) in [(0.0, 0), (0.5, 1), (1000.0, 1)] {
            let mut s = ApaState::default();
            let m = [Metric::total(value, 10.0)];
            assert_eq!(
                p.recommend(&mut s, at(0), &input(0, &m)).replicas(),
                Some(want),
                "value {value}"
            );
        }
    }

    /// Bounds clamp.
    #[test]
    fn bounds_clamp() {
        let p = formula_only();
        let table = [
            (Bounds::new(2, 5), 4, 30.0, 5, Limit::MaxReplicas),
            (Bounds::new(3, 5), 4, 1.0, 3, Limit::MinReplicas),
        ];
        for (bounds, current, value, want, limit) in table {
            let mut s = ApaState::default();
            let m = [Metric::per_pod(value, 10.0)];
            let i = MetricInput {
                bounds,
                ..input(current, &m)
            };
            let Decision::Scale(r) = p.recommend(&mut s, at(0), &i) else {
                panic!("hold")
            };
            assert_eq!((r.replicas, r.limited_by), (want, Some(limit)));
        }
    }

    /// NaN and friends hold, leaving the state alone.
    #[test]
    fn invalid_input_holds() {
        let p = ApaParams::default();
        let mut s = ApaState::default();
        p.recommend(&mut s, at(0), &input(4, &[Metric::per_pod(10.0, 10.0)]));
        let s0 = s.clone();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5] {
            let d = p.recommend(&mut s, at(10), &input(4, &[Metric::per_pod(v, 10.0)]));
            assert!(
                matches!(
                    d,
                    Decision::Hold(HoldReason::InvalidMetric { index: 0, .. })
                ),
                "{v}"
            );
        }
        let d = p.recommend(&mut s, at(10), &input(4, &[]));
        assert_eq!(d, Decision::Hold(HoldReason::NoMetrics));
        let bad = ApaParams {
            down_tolerance: 1.0,
            ..ApaParams::default()
        };
        let d = bad.recommend(&mut s, at(10), &input(4, &[Metric::per_pod(1.0, 10.0)]));
        assert_eq!(
            d,
            Decision::Hold(HoldReason::InvalidParameter("downTolerance"))
        );
        assert_eq!(s, s0);
    }
}
