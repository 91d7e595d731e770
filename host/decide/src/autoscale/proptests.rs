//! Properties every algorithm keeps, over random sequences of inputs.

use proptest::prelude::*;

use super::{
    Algorithm, AlgorithmState, ApaParams, Autoscaler, Bounds, Decision, HpaParams, KpaParams,
    Metric, MetricInput, Timestamp,
};

/// One decision's input: seconds since the previous decision, current, ready, metric value.
#[derive(Debug, Clone, Copy)]
struct Step {
    dt: i64,
    current: i32,
    ready: i32,
    value: f64,
    total: bool,
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0..500.0_f64,
        1 => Just(0.0),
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-1.0), Just(1e300)],
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (0_i64..20, 0_i32..60, 0_i32..60, value(), any::<bool>()).prop_map(
        |(dt, current, ready, value, total)| Step {
            dt,
            current,
            ready: ready.min(current),
            value,
            total,
        },
    )
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..120)
}

fn bounds() -> impl Strategy<Value = Bounds> {
    (0_i32..5, 0_i32..80).prop_map(|(min, span)| Bounds::new(min, min + span))
}

fn algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Kpa(KpaParams::default())),
        Just(Algorithm::Apa(ApaParams::default())),
        Just(Algorithm::Hpa(HpaParams::default())),
    ]
}

/// Runs `steps` through `a` from `state`, returning every decision.
fn run<A: Autoscaler>(
    a: &A,
    state: &mut A::State,
    bounds: Bounds,
    steps: &[Step],
) -> Vec<Decision> {
    let mut t = 1_000_000;
    steps
        .iter()
        .map(|s| {
            t += s.dt;
            let m = if s.total {
                Metric::total(s.value, 10.0)
            } else {
                Metric::per_pod(s.value, 10.0)
            };
            let metrics = [m];
            let input = MetricInput {
                current_replicas: s.current,
                ready_replicas: s.ready,
                bounds,
                metrics: &metrics,
            };
            a.recommend(state, Timestamp::from_unix_secs(t), &input)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every recommendation lies within the bounds, and an unusable metric never yields one.
    #[test]
    fn within_bounds_and_nan_never_recommends(a in algorithm(), b in bounds(), steps in steps()) {
        let mut state = AlgorithmState::default();
        let decisions = run(&a, &mut state, b, &steps);
        for (d, s) in decisions.iter().zip(&steps) {
            match d {
                Decision::Scale(r) => {
                    prop_assert!(r.replicas >= b.min && r.replicas <= b.max, "{r:?} outside {b:?}");
                    prop_assert!(s.value.is_finite() && s.value >= 0.0, "recommended from {}", s.value);
                }
                Decision::Hold(_) => prop_assert!(!(s.value.is_finite() && s.value >= 0.0)),
            }
        }
    }

    /// Same inputs, same outputs; and a state saved to JSON midway continues identically.
    #[test]
    fn deterministic_and_resumable(a in algorithm(), b in bounds(), steps in steps(), cut in 0_usize..120) {
        // Compared through Debug: a hold carries the NaN that caused it, and NaN ≠ NaN.
        let same = |x: &[Decision], y: &[Decision]| format!("{x:?}") == format!("{y:?}");
        let mut s1 = AlgorithmState::default();
        let mut s2 = AlgorithmState::default();
        prop_assert!(same(&run(&a, &mut s1, b, &steps), &run(&a, &mut s2, b, &steps)));

        let cut = cut.min(steps.len());
        let mut s3 = AlgorithmState::default();
        let mut first = run(&a, &mut s3, b, &steps[..cut]);
        let json = serde_json::to_string(&s3).expect("serialise");
        let mut s4: AlgorithmState = serde_json::from_str(&json).expect("deserialise");
        // Continue from the same clock: shift the remaining steps' times by the elapsed part.
        let elapsed: i64 = steps[..cut].iter().map(|s| s.dt).sum();
        let mut rest = steps[cut..].to_vec();
        if let Some(s) = rest.first_mut() {
            s.dt += elapsed;
        }
        first.extend(run(&a, &mut s4, b, &rest));
        prop_assert!(same(&first, &run(&a, &mut AlgorithmState::default(), b, &steps)));
    }

    /// KPA: between two decisions in panic the count never falls.
    #[test]
    fn kpa_in_panic_never_decreases(b in bounds(), steps in steps()) {
        let mut state = super::KpaState::default();
        let decisions = run(&KpaParams::default(), &mut state, b, &steps);
        let mut previous: Option<i32> = None;
        for d in decisions {
            match d {
                Decision::Scale(r) if r.panicking => {
                    if let Some(p) = previous {
                        prop_assert!(r.replicas >= p, "{} after {p} in panic", r.replicas);
                    }
                    previous = Some(r.replicas);
                }
                Decision::Scale(_) => previous = None,
                Decision::Hold(_) => {}
            }
        }
    }

    /// APA: never more than doubles the current count in one step (the bounds' minimum and
    /// activation from zero to one aside).
    #[test]
    fn apa_at_most_doubles(b in bounds(), steps in steps()) {
        let mut state = super::ApaState::default();
        let decisions = run(&ApaParams::default(), &mut state, b, &steps);
        for (d, s) in decisions.iter().zip(&steps) {
            if let Decision::Scale(r) = d {
                let cap = (2 * s.current).max(1).max(b.min);
                prop_assert!(r.replicas <= cap, "{} from {}", r.replicas, s.current);
            }
        }
    }
}
