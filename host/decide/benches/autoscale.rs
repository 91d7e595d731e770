//! Decision cost per call of the builtin autoscalers, with realistic window contents: a decision
//! every 2 s (Knative's tick), so the KPA's 60 s stable window holds 30 samples per metric and the
//! APA's 300 s scale-down window holds 150 recommendations. Goal: ≤ 10 µs per decision.
//!
//! Run: `cargo bench -p hoist-decide --bench autoscale`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hoist_decide::autoscale::{
    ApaParams, Autoscaler, Bounds, HpaParams, KpaParams, Metric, MetricInput, Timestamp,
};

const STEP_MS: i64 = 2_000;

/// A load that wanders around a level, so windows hold varied values.
fn load(i: i64) -> f64 {
    let phase = f64::from(i32::try_from(i % 97).unwrap_or(0));
    100.0 + 30.0 * (phase / 97.0 * std::f64::consts::TAU).sin()
}

fn input(metrics: &[Metric]) -> MetricInput<'_> {
    MetricInput {
        current_replicas: 15,
        ready_replicas: 15,
        bounds: Bounds::new(0, 100),
        metrics,
    }
}

/// Warms `state` with `n` decisions and returns the next step index.
fn warm<A: Autoscaler>(a: &A, state: &mut A::State, n: i64, metrics: usize) -> i64 {
    for i in 0..n {
        let m = vec![Metric::total(load(i), 10.0); metrics];
        a.recommend(state, Timestamp::from_unix_millis(i * STEP_MS), &input(&m));
    }
    n
}

fn bench<A: Autoscaler>(c: &mut Criterion, name: &str, a: &A, warm_steps: i64, metrics: usize) {
    let mut state = A::State::default();
    let mut i = warm(a, &mut state, warm_steps, metrics);
    let mut m = vec![Metric::total(0.0, 10.0); metrics];
    c.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            for x in &mut m {
                *x = Metric::total(load(i), 10.0);
            }
            black_box(a.recommend(
                &mut state,
                Timestamp::from_unix_millis(i * STEP_MS),
                black_box(&input(&m)),
            ))
        });
    });
}

fn benches(c: &mut Criterion) {
    // KPA: 60 s stable window at 2 s → 30 samples per metric.
    bench(
        c,
        "kpa/1-metric/60s-window-2s",
        &KpaParams::default(),
        60,
        1,
    );
    bench(
        c,
        "kpa/3-metrics/60s-window-2s",
        &KpaParams::default(),
        60,
        3,
    );
    // APA: 300 s scale-down window at 2 s → 150 recommendations.
    bench(
        c,
        "apa/1-metric/300s-window-2s",
        &ApaParams::default(),
        200,
        1,
    );
    bench(
        c,
        "apa/3-metrics/300s-window-2s",
        &ApaParams::default(),
        200,
        3,
    );
    // HPA: 300 s window at 2 s, events over 15 s periods.
    bench(
        c,
        "hpa/1-metric/300s-window-2s",
        &HpaParams::default(),
        200,
        1,
    );
}

criterion_group!(autoscale, benches);
criterion_main!(autoscale);
