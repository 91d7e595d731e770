//! The Kubernetes HPA formula with `behavior`, as in kubernetes `pkg/controller/podautoscaler`.
//!
//! Per metric: `ratio = perPodValue / target` (for a total, the total over `current` replicas,
//! as the HPA's External metric with an `AverageValue` target, which then asks for
//! `ceil(total / target)`); within the tolerance band
//! `[1 − scaleDown tolerance, 1 + scaleUp tolerance]` (edges included, as the HPA's
//! `Tolerances.isWithin`) keep `current`, otherwise `ceil(current × ratio)`. The largest over
//! metrics wins. Then, as the HPA does:
//!
//! 1. stabilization: the result lies between the lowest recommendation of the scale-up window
//!    and the highest of the scale-down window, as near to `current` as they allow;
//! 2. rate policies: for the direction of change, each policy (`Pods n` or `Percent n` per
//!    `period`) proposes a limit from the replica count at the start of its period (current minus
//!    the changes observed during the period); `selectPolicy` `Max` takes the policy allowing the
//!    largest change, `Min` the smallest, `Disabled` forbids that direction;
//! 3. the Scaler's bounds.
//!
//! Changes of the target's replica count are observed from `current_replicas` between calls
//! (whoever made them), so a change that is still being carried out by the state machine is not
//! counted twice. A change to the count this autoscaler recommended is dated at the decision that
//! recommended it, as the HPA records a scale event when it rescales; any other change is dated
//! when it is observed. A fresh state is seeded with the current count, so its first scale-down
//! comes a full stabilization window later. From zero replicas any demand asks for one
//! (activation).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    Autoscaler, Decision, HoldReason, Limit, MetricInput, MetricValue, Recommendation,
    RecommendationHistory, Timestamp, ceil_replicas, floor_replicas,
};

/// HPA parameters. Defaults are the HPA's (`autoscaling/v2` behavior defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HpaParams {
    /// No change while `|ratio − 1| ≤ tolerance`. Default 0.1. Finite, ≥ 0.
    pub tolerance: f64,
    /// Scale-up behavior. Default: no stabilization; max(4 pods, 100 %) per 15 s.
    pub scale_up: HpaRules,
    /// Scale-down behavior. Default: 300 s stabilization; 100 % per 15 s.
    pub scale_down: HpaRules,
}

impl Default for HpaParams {
    fn default() -> Self {
        Self {
            tolerance: 0.1,
            scale_up: HpaRules::default_scale_up(),
            scale_down: HpaRules::default_scale_down(),
        }
    }
}

/// One direction's behavior (`HPAScalingRules`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaRules {
    /// Stabilization window: for scale-up the lowest, for scale-down the highest recommendation
    /// within it is used.
    pub stabilization_window: Duration,
    /// How the policies combine.
    pub select_policy: SelectPolicy,
    /// Rate policies; none means no rate limit in this direction.
    pub policies: Vec<HpaPolicy>,
    /// This direction's tolerance (the HPA's `behavior.scaleUp/scaleDown.tolerance`); `None`
    /// uses [`HpaParams::tolerance`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
}

impl HpaRules {
    /// The HPA's scale-up default: no stabilization; the larger of 4 pods and 100 % per 15 s.
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window: Duration::ZERO,
            select_policy: SelectPolicy::Max,
            policies: vec![
                HpaPolicy {
                    kind: HpaPolicyKind::Pods,
                    value: 4,
                    period: Duration::from_secs(15),
                },
                HpaPolicy {
                    kind: HpaPolicyKind::Percent,
                    value: 100,
                    period: Duration::from_secs(15),
                },
            ],
            tolerance: None,
        }
    }

    /// The HPA's scale-down default: 300 s stabilization; 100 % per 15 s.
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window: Duration::from_mins(5),
            select_policy: SelectPolicy::Max,
            policies: vec![HpaPolicy {
                kind: HpaPolicyKind::Percent,
                value: 100,
                period: Duration::from_secs(15),
            }],
            tolerance: None,
        }
    }

    fn longest_period(&self) -> Duration {
        self.policies
            .iter()
            .map(|p| p.period)
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

/// How several policies of one direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelectPolicy {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// A rate policy (`HPAScalingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaPolicy {
    /// Pods or Percent.
    #[serde(rename = "type")]
    pub kind: HpaPolicyKind,
    /// Pods, or percent of the replicas at the start of the period. > 0.
    pub value: i32,
    /// The period the change is allowed over. > 0 (the HPA allows up to 1800 s).
    pub period: Duration,
}

/// The unit of a policy's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HpaPolicyKind {
    /// A number of pods.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

impl HpaParams {
    fn check(&self) -> Result<(), HoldReason> {
        let usable = |t: f64| t.is_finite() && t >= 0.0;
        if !usable(self.tolerance) {
            return Err(HoldReason::InvalidParameter("tolerance"));
        }
        if !self.scale_up.tolerance.is_none_or(usable) {
            return Err(HoldReason::InvalidParameter("scaleUp.tolerance"));
        }
        if !self.scale_down.tolerance.is_none_or(usable) {
            return Err(HoldReason::InvalidParameter("scaleDown.tolerance"));
        }
        for (rules, name) in [
            (&self.scale_up, "scaleUp.policies"),
            (&self.scale_down, "scaleDown.policies"),
        ] {
            if rules
                .policies
                .iter()
                .any(|p| p.value <= 0 || p.period.is_zero())
            {
                return Err(HoldReason::InvalidParameter(name));
            }
        }
        Ok(())
    }

    /// Whether `ratio` lies in the tolerance band, edges included (the HPA's
    /// `Tolerances.isWithin`): no change is made for it.
    fn within_tolerance(&self, ratio: f64) -> bool {
        let down = self.scale_down.tolerance.unwrap_or(self.tolerance);
        let up = self.scale_up.tolerance.unwrap_or(self.tolerance);
        1.0 - down <= ratio && ratio <= 1.0 + up
    }
}

/// What the HPA remembers: recent recommendations and the observed scale events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HpaState {
    history: RecommendationHistory,
    /// Replicas added: (when, how many).
    scale_up_events: Vec<(Timestamp, i32)>,
    /// Replicas removed: (when, how many).
    scale_down_events: Vec<(Timestamp, i32)>,
    /// The replica count seen at the last decision.
    last_replicas: Option<i32>,
    /// The time of the last decision.
    last_time: Option<Timestamp>,
    /// The count the last decision recommended, and when: a change to it is dated then.
    last_recommendation: Option<(Timestamp, i32)>,
}

impl HpaState {
    /// Replicas added (`up`) or removed (`!up`) within `period` before `now`.
    fn changed_within(&self, now: Timestamp, period: Duration, up: bool) -> i32 {
        let cutoff = now.saturating_sub(period);
        let events = if up {
            &self.scale_up_events
        } else {
            &self.scale_down_events
        };
        events
            .iter()
            .filter(|(at, _)| *at > cutoff)
            .fold(0_i32, |sum, (_, change)| sum.saturating_add(*change))
    }

    /// Records a change of `change` replicas at `at`, as the HPA's `storeScaleEvent`: the
    /// direction keeps its events in a list where the last one older than the direction's
    /// longest policy period is overwritten, else the event is appended. So a scale-down older
    /// than the scale-down policies' period can be forgotten while a scale-up policy's longer
    /// period would still count it, as in the HPA.
    fn store_event(&mut self, at: Timestamp, change: i32, params: &HpaParams) {
        let (events, rules) = if change > 0 {
            (&mut self.scale_up_events, &params.scale_up)
        } else {
            (&mut self.scale_down_events, &params.scale_down)
        };
        let outdated_before = at.saturating_sub(rules.longest_period());
        let event = (at, change.saturating_abs());
        match events.iter().rposition(|(t, _)| *t < outdated_before) {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }
}

/// The most replicas the scale-up policies allow.
fn scale_up_limit(state: &HpaState, now: Timestamp, current: i32, rules: &HpaRules) -> i32 {
    let select: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => std::cmp::max,
        SelectPolicy::Min => std::cmp::min,
    };
    let limit = rules.policies.iter().map(|p| {
        let start = period_start(state, now, current, p.period);
        match p.kind {
            HpaPolicyKind::Pods => start.saturating_add(p.value),
            HpaPolicyKind::Percent => {
                ceil_replicas(f64::from(start) * (1.0 + f64::from(p.value) / 100.0))
            }
        }
    });
    limit.reduce(select).unwrap_or(i32::MAX)
}

/// The fewest replicas the scale-down policies allow.
fn scale_down_limit(state: &HpaState, now: Timestamp, current: i32, rules: &HpaRules) -> i32 {
    // For scale-down the largest change is the smallest count.
    let select: fn(i32, i32) -> i32 = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => std::cmp::min,
        SelectPolicy::Min => std::cmp::max,
    };
    let limit = rules.policies.iter().map(|p| {
        let start = period_start(state, now, current, p.period);
        match p.kind {
            HpaPolicyKind::Pods => start.saturating_sub(p.value).max(0),
            HpaPolicyKind::Percent => {
                floor_replicas(f64::from(start) * (1.0 - f64::from(p.value) / 100.0))
            }
        }
    });
    limit.reduce(select).unwrap_or(0)
}

/// The replica count at the start of a policy period: current minus what was added plus what
/// was removed within it.
fn period_start(state: &HpaState, now: Timestamp, current: i32, period: Duration) -> i32 {
    current
        .saturating_sub(state.changed_within(now, period, true))
        .saturating_add(state.changed_within(now, period, false))
        .max(0)
}

impl Autoscaler for HpaParams {
    type State = HpaState;

    fn recommend(&self, state: &mut HpaState, now: Timestamp, input: &MetricInput<'_>) -> Decision {
        if let Err(hold) = self.check().and_then(|()| input.check()) {
            return Decision::Hold(hold);
        }
        if state.last_time.is_some_and(|t| t > now) {
            return Decision::Hold(HoldReason::TimeWentBackwards);
        }
        let current = input.current_replicas;

        // Observe the scale event since the last decision. A change to what the last decision
        // recommended happened at that decision (the HPA dates its scale events when it
        // rescales); any other change is dated now.
        if let Some(last) = state.last_replicas
            && last != current
        {
            let at = match state.last_recommendation {
                Some((at, replicas)) if replicas == current => at,
                _ => now,
            };
            state.store_event(at, current.saturating_sub(last), self);
        }
        state.last_replicas = Some(current);
        state.last_time = Some(now);

        let desired = if current == 0 {
            i32::from(input.has_demand())
        } else {
            input
                .metrics
                .iter()
                .map(|m| match m.value {
                    // As the HPA's External metric with an AverageValue target: the total over
                    // the current replicas against the target, and `ceil(total / target)`.
                    MetricValue::Total(total) => {
                        let ratio = total / (m.target_per_pod * f64::from(current));
                        if self.within_tolerance(ratio) {
                            current
                        } else {
                            ceil_replicas(total / m.target_per_pod)
                        }
                    }
                    // As the HPA's Pods metric: the average over the ready pods.
                    MetricValue::PerPod(average) => {
                        let ratio = average / m.target_per_pod;
                        if self.within_tolerance(ratio) {
                            current
                        } else {
                            ceil_replicas(f64::from(current) * ratio)
                        }
                    }
                })
                .max()
                .unwrap_or(current)
        };

        let stabilized = state.history.stabilize(
            now,
            current,
            desired,
            self.scale_up.stabilization_window,
            self.scale_down.stabilization_window,
        );
        let mut limited_by = (stabilized != desired).then_some(Limit::Stabilization);

        let mut replicas = stabilized;
        if stabilized > current {
            let limit = scale_up_limit(state, now, current, &self.scale_up).max(current);
            if stabilized > limit {
                replicas = limit;
                limited_by = Some(Limit::ScaleUpRate);
            }
        } else if stabilized < current {
            let limit = scale_down_limit(state, now, current, &self.scale_down).min(current);
            if stabilized < limit {
                replicas = limit;
                limited_by = Some(Limit::ScaleDownRate);
            }
        }

        let decision = Recommendation::bounded(&input.bounds, replicas, desired, limited_by, false);
        state.last_recommendation = decision.replicas().map(|r| (now, r));
        decision
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

    fn pods(value: i32, secs: u64) -> HpaPolicy {
        HpaPolicy {
            kind: HpaPolicyKind::Pods,
            value,
            period: Duration::from_secs(secs),
        }
    }

    fn percent(value: i32, secs: u64) -> HpaPolicy {
        HpaPolicy {
            kind: HpaPolicyKind::Percent,
            value,
            period: Duration::from_secs(secs),
        }
    }

    /// No windows, no policies: the formula alone.
    fn formula_only() -> HpaParams {
        let free = HpaRules {
            stabilization_window: Duration::ZERO,
            select_policy: SelectPolicy::Max,
            policies: vec![],
            tolerance: None,
        };
        HpaParams {
            tolerance: 0.1,
            scale_up: free.clone(),
            scale_down: free,
        }
    }

    fn decide(
        p: &HpaParams,
        s: &mut HpaState,
        t: i64,
        current: i32,
        per_pod: f64,
    ) -> Recommendation {
        let m = [Metric::per_pod(per_pod, 10.0)];
        match p.recommend(s, at(t), &input(current, &m)) {
            Decision::Scale(r) => r,
            Decision::Hold(h) => panic!("hold: {h}"),
        }
    }

    /// `desired = ceil(current × value / target)`, skipped within the tolerance.
    #[test]
    fn formula_and_tolerance() {
        let p = formula_only();
        // (current, per-pod value with target 10, expected)
        let table = [
            (4, 10.0, 4),
            (4, 10.9, 4), // ratio 1.09: within tolerance
            (4, 9.1, 4),  // ratio 0.91: within tolerance
            (4, 11.0, 4), // ratio 1.1: on the band's edge, within (the HPA's isWithin)
            (4, 9.0, 4),  // ratio 0.9: on the lower edge, within
            (4, 11.2, 5), // ceil(4.48)
            (4, 8.8, 4),  // ceil(3.52) = 4: outside tolerance but rounds back
            (4, 5.0, 2),
            (4, 0.0, 0),
            (3, 25.0, 8), // ceil(7.5)
            (10, 13.0, 13),
        ];
        for (current, value, want) in table {
            let mut s = HpaState::default();
            assert_eq!(
                decide(&p, &mut s, 0, current, value).replicas,
                want,
                "current {current} value {value}"
            );
        }
    }

    #[test]
    fn defaults_are_the_hpas() {
        let p = HpaParams::default();
        assert!((p.tolerance - 0.1).abs() < f64::EPSILON);
        assert_eq!(p.scale_up.stabilization_window, Duration::ZERO);
        assert_eq!(p.scale_up.policies, vec![pods(4, 15), percent(100, 15)]);
        assert_eq!(p.scale_down.stabilization_window, Duration::from_mins(5));
        assert_eq!(p.scale_down.policies, vec![percent(100, 15)]);
    }

    /// Default scale-up: the larger of +4 pods and +100 % per 15 s.
    #[test]
    fn default_scale_up_policy() {
        let p = HpaParams::default();
        // (current, per-pod value, expected, limited)
        let table = [
            (1, 100.0, 5, true),   // 10× wanted; max(1 + 4, 2) = 5
            (2, 100.0, 6, true),   // max(6, 4) = 6
            (4, 100.0, 8, true),   // max(8, 8)
            (10, 100.0, 20, true), // max(14, 20)
            (10, 15.0, 15, false), // within the limit
        ];
        for (current, value, want, limited) in table {
            let mut s = HpaState::default();
            let r = decide(&p, &mut s, 0, current, value);
            assert_eq!(r.replicas, want, "current {current}");
            assert_eq!(
                r.limited_by == Some(Limit::ScaleUpRate),
                limited,
                "current {current}"
            );
        }
    }

    /// Pods vs Percent policies and selectPolicy Max / Min / Disabled.
    #[test]
    fn policies_and_select() {
        // (policies, select, current, per-pod value, expected)
        let table = [
            (vec![pods(2, 60)], SelectPolicy::Max, 10, 100.0, 12),
            (vec![percent(50, 60)], SelectPolicy::Max, 10, 100.0, 15),
            (vec![percent(10, 60)], SelectPolicy::Max, 3, 100.0, 4), // ceil(3.3): always at least +1
            (
                vec![pods(2, 60), percent(50, 60)],
                SelectPolicy::Max,
                10,
                100.0,
                15,
            ),
            (
                vec![pods(2, 60), percent(50, 60)],
                SelectPolicy::Min,
                10,
                100.0,
                12,
            ),
            (
                vec![pods(2, 60), percent(50, 60)],
                SelectPolicy::Disabled,
                10,
                100.0,
                10,
            ),
        ];
        for (policies, select, current, value, want) in table {
            let rules = HpaRules {
                stabilization_window: Duration::ZERO,
                select_policy: select,
                policies,
                tolerance: None,
            };
            let p = HpaParams {
                scale_up: rules.clone(),
                ..formula_only()
            };
            let mut s = HpaState::default();
            assert_eq!(
                decide(&p, &mut s, 0, current, value).replicas,
                want,
                "up {rules:?}"
            );

            // The same rules for scale-down, load falling to nothing.
            let p = HpaParams {
                scale_down: rules.clone(),
                ..formula_only()
            };
            let mut s = HpaState::default();
            let want_down = match (rules.select_policy, rules.policies.len()) {
                (SelectPolicy::Disabled, _) => current,
                (_, 1) if rules.policies[0].kind == HpaPolicyKind::Pods => current - 2,
                (_, 1) => floor_replicas(
                    f64::from(current) * (1.0 - f64::from(rules.policies[0].value) / 100.0),
                ),
                (SelectPolicy::Max, _) => 5, // −50 % is the larger change
                (SelectPolicy::Min, _) => 8, // −2 pods is the smaller change
            };
            assert_eq!(
                decide(&p, &mut s, 0, current, 0.0).replicas,
                want_down,
                "down {rules:?}"
            );
        }
    }

    /// 55 % against a 50 % target is a ratio of exactly 1.1: no change, as the HPA.
    #[test]
    fn the_tolerance_band_includes_its_edges() {
        let p = formula_only();
        let m = [Metric::per_pod(55.0, 50.0)];
        let mut s = HpaState::default();
        assert_eq!(
            p.recommend(&mut s, at(0), &input(4, &m)).replicas(),
            Some(4)
        );
        // Per-direction tolerances (the HPA's behavior.scaleUp/scaleDown.tolerance).
        let mut p = formula_only();
        p.scale_up.tolerance = Some(0.5);
        p.scale_down.tolerance = Some(0.0);
        // (per-pod value with target 10, expected)
        for (value, want) in [(15.0, 4), (15.5, 7), (9.9, 4), (10.0, 4)] {
            let m = [Metric::per_pod(value, 10.0)];
            let mut s = HpaState::default();
            assert_eq!(
                p.recommend(&mut s, at(0), &input(4, &m)).replicas(),
                Some(want),
                "value {value}"
            );
        }
    }

    /// A change this autoscaler made counts against the policies from the decision that made
    /// it, as the HPA's scale events: with the default behavior the count doubles every 15 s.
    #[test]
    fn default_scale_up_doubles_every_period() {
        let p = HpaParams::default();
        let mut s = HpaState::default();
        let mut current = 1;
        // (time, expected): max(+4, +100 %) per 15 s.
        for (t, want) in [(0, 5), (15, 10), (30, 20), (45, 40), (60, 80)] {
            let r = decide(&p, &mut s, t, current, 1000.0);
            assert_eq!(r.replicas, want, "t {t}");
            current = r.replicas;
        }
    }

    /// As the HPA's scale events: a direction overwrites its last event older than its own
    /// longest policy period, so scale-downs older than the scale-down period may no longer count
    /// against a longer scale-up period.
    #[test]
    fn old_scale_downs_are_overwritten_as_the_hpas() {
        let p = HpaParams {
            scale_up: HpaRules {
                policies: vec![pods(5, 60)],
                ..formula_only().scale_up
            },
            scale_down: HpaRules {
                policies: vec![pods(1, 10)],
                ..formula_only().scale_down
            },
            ..formula_only()
        };
        let mut s = HpaState::default();
        let mut current = 30;
        // (time, expected): a total of 200 asks for 20; one pod less per 10 s.
        for (t, want) in [(0, 29), (10, 28), (20, 27), (30, 26)] {
            let m = [Metric::total(200.0, 10.0)];
            current = p
                .recommend(&mut s, at(t), &input(current, &m))
                .replicas()
                .unwrap();
            assert_eq!(current, want, "t {t}");
        }
        // At t = 40 only the removals of t = 20 and 30 are kept (each store overwrote the last
        // one older than the 10 s scale-down period): the 60 s scale-up period started at
        // 26 + 2, so at most 28 + 5 (not 30 + 5, counting all four).
        let m = [Metric::total(440.0, 10.0)];
        assert_eq!(
            p.recommend(&mut s, at(40), &input(current, &m)).replicas(),
            Some(33)
        );
    }

    /// Observed changes count against a policy's period.
    #[test]
    fn policy_periods_count_observed_changes() {
        let up = HpaRules {
            stabilization_window: Duration::ZERO,
            select_policy: SelectPolicy::Max,
            policies: vec![pods(4, 60)],
            tolerance: None,
        };
        let p = HpaParams {
            scale_up: up,
            ..formula_only()
        };
        let mut s = HpaState::default();
        assert_eq!(decide(&p, &mut s, 0, 2, 100.0).replicas, 6);
        // Still 2 at t = 15 (the change was not applied): the limit stays 6, not 10.
        assert_eq!(decide(&p, &mut s, 15, 2, 100.0).replicas, 6);
        // Now 6: the 4 added count from t = 15, the decision that recommended 6, until they
        // leave the 60 s period.
        assert_eq!(decide(&p, &mut s, 30, 6, 100.0).replicas, 6);
        assert_eq!(decide(&p, &mut s, 60, 6, 100.0).replicas, 6);
        assert_eq!(decide(&p, &mut s, 75, 6, 100.0).replicas, 10);
        // A change nobody here recommended (a person scaled 10 → 3) is dated when observed: the
        // period started at 3 + 3 removed = 6, so at most 6 + 4.
        assert_eq!(decide(&p, &mut s, 90, 3, 100.0).replicas, 10);
        // The 7 added are dated t = 90, when 10 was recommended: still 10 at t = 105.
        assert_eq!(decide(&p, &mut s, 105, 10, 100.0).replicas, 10);
    }

    /// Default scale-down: held for 300 s, then applied (100 % per 15 s allows all of it).
    #[test]
    fn scale_down_stabilization_window() {
        let p = HpaParams::default();
        let mut s = HpaState::default();
        assert_eq!(decide(&p, &mut s, 0, 10, 10.0).replicas, 10);
        // (time, expected, limit)
        let table = [
            (15, 10, Some(Limit::Stabilization)),
            (150, 10, Some(Limit::Stabilization)),
            (285, 10, Some(Limit::Stabilization)),
            (300, 3, None),
        ];
        for (t, want, limit) in table {
            let r = decide(&p, &mut s, t, 10, 2.5); // wants ceil(2.5) = 3
            assert_eq!((r.replicas, r.limited_by), (want, limit), "t {t}");
        }
    }

    /// Scale-up stabilization: the lowest recommendation of the window.
    #[test]
    fn scale_up_stabilization_window() {
        let up = HpaRules {
            stabilization_window: Duration::from_mins(1),
            ..HpaRules::default_scale_up()
        };
        let p = HpaParams {
            scale_up: up,
            ..HpaParams::default()
        };
        let mut s = HpaState::default();
        assert_eq!(decide(&p, &mut s, 0, 4, 10.0).replicas, 4);
        assert_eq!(decide(&p, &mut s, 15, 4, 20.0).replicas, 4);
        assert_eq!(decide(&p, &mut s, 45, 4, 20.0).replicas, 4);
        assert_eq!(decide(&p, &mut s, 60, 4, 20.0).replicas, 8);
    }

    /// Several metrics: the largest wins; activation from zero; bounds clamp.
    #[test]
    fn several_metrics_activation_and_bounds() {
        let p = formula_only();
        let mut s = HpaState::default();
        let m = [
            Metric::per_pod(5.0, 10.0),
            Metric::per_pod(30.0, 10.0),
            Metric::total(40.0, 10.0),
        ];
        assert_eq!(
            p.recommend(&mut s, at(0), &input(4, &m)).replicas(),
            Some(12)
        );

        for (value, want) in [(0.0, 0), (3.0, 1)] {
            let mut s = HpaState::default();
            let m = [Metric::total(value, 10.0)];
            assert_eq!(
                p.recommend(&mut s, at(0), &input(0, &m)).replicas(),
                Some(want)
            );
        }

        let mut s = HpaState::default();
        let m = [Metric::per_pod(100.0, 10.0)];
        let i = MetricInput {
            bounds: Bounds::new(1, 7),
            ..input(4, &m)
        };
        let Decision::Scale(r) = p.recommend(&mut s, at(0), &i) else {
            panic!("hold")
        };
        assert_eq!((r.replicas, r.limited_by), (7, Some(Limit::MaxReplicas)));
    }

    /// NaN holds; state untouched.
    #[test]
    fn nan_holds() {
        let p = HpaParams::default();
        let mut s = HpaState::default();
        decide(&p, &mut s, 0, 4, 10.0);
        let s0 = s.clone();
        let m = [Metric::per_pod(f64::NAN, 10.0)];
        assert!(matches!(
            p.recommend(&mut s, at(15), &input(4, &m)),
            Decision::Hold(_)
        ));
        assert_eq!(s, s0);
    }
}
