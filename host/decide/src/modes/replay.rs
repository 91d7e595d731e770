//! Replays a metric trace through the builtin autoscaler, pure: the engine of `hoist simulate`.
//!
//! A decision every `decisionInterval` from the first row's time to the last's, each one the
//! same [`tick`] the operator runs (the algorithm, the bounds, the scale-to-zero grace, the
//! hold of a failed source's last value). The simulated workload is a list of replicas with the
//! time each becomes ready: replicas asked for become ready [`Setup::ready_delay`] later;
//! removed replicas go at once, not-yet-ready ones first (as a ReplicaSet removes them).

use std::time::Duration;

use hoist_api::ScalerSpec;
use hoist_api::autoscaling::{Autoscaling, BuiltinAutoscaling, BuiltinMetric, PrometheusMetric};

use super::builtin::{Memory, MetricsHealth, TickDecision, TickInput, tick};
use crate::autoscale::{Metric, Timestamp};

/// One trace row: the metric from `at_ms` until the next row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    /// Milliseconds from the trace's origin.
    pub at_ms: i64,
    /// The metric; `None`: the source is down from this time.
    pub value: Option<f64>,
}

/// What a trace's values are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricKind {
    /// The total demand across the target (what a Prometheus query returns).
    #[default]
    Total,
    /// An average per ready pod (what a pods metric gives).
    PerPod,
}

/// Everything a replay needs besides the trace.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The Scaler's spec: its bounds (`minReplicas`, `maxReplicas`). Pauses are not replayed.
    pub spec: ScalerSpec,
    /// `spec.autoscaling.builtin`: algorithm, tuning, decision interval, scale-to-zero grace.
    /// Its metrics are not read: the trace is the one metric.
    pub builtin: BuiltinAutoscaling,
    /// The value one replica should carry.
    pub target: f64,
    /// What the trace's values are.
    pub metric: MetricKind,
    /// Replicas at the start, all ready.
    pub initial: i32,
    /// How long a new replica takes to become ready.
    pub ready_delay: Duration,
    /// How long the last value is used while the source is down.
    pub max_hold: Duration,
}

impl Setup {
    /// Time between decisions: `builtin.decisionInterval`, or the algorithm's default.
    pub fn interval(&self) -> Duration {
        self.builtin.effective_decision_interval().get()
    }

    /// The spec and `builtin` the tick sees: the trace as the one metric (so `builtin` is a
    /// valid member), pauses off, `builtin` in the spec's `autoscaling`.
    fn tick_spec(&self) -> (ScalerSpec, BuiltinAutoscaling) {
        let mut builtin = self.builtin.clone();
        builtin.metrics = vec![BuiltinMetric {
            prometheus: Some(PrometheusMetric {
                address: "http://simulated".to_owned(),
                query: "trace".to_owned(),
                target: self.target,
            }),
            pods: None,
        }];
        let mut spec = self.spec.clone();
        spec.paused = false;
        spec.pause_scale_in = false;
        spec.pause_scale_out = false;
        spec.autoscaling = Some(Autoscaling {
            builtin: Some(builtin.clone()),
            ..Autoscaling::default()
        });
        (spec, builtin)
    }
}

/// The state of the simulated workload and autoscaler at one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds from the trace's origin.
    pub at_ms: i64,
    /// The metric at this time (`None`: the source is down).
    pub value: Option<f64>,
    /// The source is down and the decision used its last value.
    pub held_value: bool,
    /// What the metric alone asked for (`None` when the algorithm held).
    pub desired: Option<i32>,
    /// Replicas after this decision.
    pub replicas: i32,
    /// Ready replicas after this decision.
    pub ready: i32,
    /// KPA: panicking at this decision.
    pub panicking: bool,
    /// Whether this decision changed the replicas.
    pub changed: bool,
}

/// The replay: one sample per decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// The samples, in time order.
    pub samples: Vec<Sample>,
}

/// Replays `trace` (rows in increasing time) through the tick the operator runs; no samples
/// for an empty trace.
pub fn replay(setup: &Setup, trace: &[Row]) -> Replay {
    let (Some(first), Some(last)) = (trace.first(), trace.last()) else {
        return Replay {
            samples: Vec::new(),
        };
    };
    let (spec, builtin) = setup.tick_spec();
    let interval_ms = i64::try_from(setup.interval().as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let delay_ms = i64::try_from(setup.ready_delay.as_millis()).unwrap_or(i64::MAX);
    // Every replica's ready time; the workload's count is the length.
    let mut pods: Vec<i64> = vec![first.at_ms; usize::try_from(setup.initial).unwrap_or(0)];
    let mut memory = Memory::default();
    let mut samples = Vec::new();
    let mut row = 0usize;
    let mut now = first.at_ms;
    while now <= last.at_ms {
        while row + 1 < trace.len() && trace[row + 1].at_ms <= now {
            row += 1;
        }
        let value = trace[row].value;
        let ready = count_ready(&pods, now);
        let current = i32::try_from(pods.len()).unwrap_or(i32::MAX);
        let metric = value.map(|v| match setup.metric {
            MetricKind::Total => Metric::total(v, setup.target),
            MetricKind::PerPod => Metric::per_pod(v, setup.target),
        });
        let readings = [metric.ok_or_else(|| "the trace has no value (source down)".to_owned())];
        let outcome = tick(
            &mut memory,
            &TickInput {
                spec: &spec,
                builtin: &builtin,
                now: Timestamp::from_unix_millis(now),
                current_replicas: current,
                ready_replicas: ready,
                readings: &readings,
                max_hold: setup.max_hold,
            },
        );
        // The tick says whether it decided on a held value, and whether the algorithm panicked.
        let held_value = matches!(outcome.report.metrics, MetricsHealth::Held { .. });
        let (desired, panicking) = match outcome.report.decision {
            TickDecision::Recommended {
                desired, panicking, ..
            } => (Some(desired), panicking),
            TickDecision::Held(_) | TickDecision::Paused => (None, false),
        };
        let changed = if let Some(n) = outcome.write {
            let n = usize::try_from(n.max(0)).unwrap_or(0);
            if n > pods.len() {
                pods.resize(n, now.saturating_add(delay_ms));
            } else {
                // Not-yet-ready replicas go first, as a ReplicaSet removes them first.
                pods.sort_unstable();
                pods.truncate(n);
            }
            true
        } else {
            false
        };
        samples.push(Sample {
            at_ms: now,
            value,
            held_value,
            desired,
            replicas: i32::try_from(pods.len()).unwrap_or(i32::MAX),
            ready: count_ready(&pods, now),
            panicking,
            changed,
        });
        now = now.saturating_add(interval_ms);
    }
    Replay { samples }
}

/// Replicas ready at `now`, of those with the given ready times.
fn count_ready(pods: &[i64], now: i64) -> i32 {
    i32::try_from(pods.iter().filter(|&&at| at <= now).count()).unwrap_or(i32::MAX)
}

/// Figures of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Decisions made.
    pub decisions: usize,
    /// Decisions that raised the replicas.
    pub scale_ups: usize,
    /// Decisions that lowered the replicas.
    pub scale_downs: usize,
    /// Fewest replicas after any decision.
    pub min_replicas: i32,
    /// Most replicas after any decision.
    pub max_replicas: i32,
    /// Replicas at the end.
    pub final_replicas: i32,
    /// Decisions taken in panic mode (kpa).
    pub panic_decisions: usize,
    /// Decisions made on a held value (the source down).
    pub held_value_decisions: usize,
    /// Decisions not made: no usable value (the source down longer than the hold).
    pub no_value_decisions: usize,
}

impl Replay {
    /// The figures of the replay of a workload that started at `initial` replicas.
    pub fn figures(&self, initial: i32) -> Figures {
        let mut f = Figures {
            decisions: self.samples.len(),
            scale_ups: 0,
            scale_downs: 0,
            min_replicas: i32::MAX,
            max_replicas: 0,
            final_replicas: initial,
            panic_decisions: 0,
            held_value_decisions: 0,
            no_value_decisions: 0,
        };
        let mut prev = initial;
        for s in &self.samples {
            if s.replicas > prev {
                f.scale_ups += 1;
            } else if s.replicas < prev {
                f.scale_downs += 1;
            }
            prev = s.replicas;
            f.min_replicas = f.min_replicas.min(s.replicas);
            f.max_replicas = f.max_replicas.max(s.replicas);
            f.final_replicas = s.replicas;
            f.panic_decisions += usize::from(s.panicking);
            f.held_value_decisions += usize::from(s.held_value);
            f.no_value_decisions += usize::from(s.desired.is_none());
        }
        if f.min_replicas == i32::MAX {
            f.min_replicas = initial;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use hoist_api::autoscaling::{Algorithm as AlgorithmName, ApaTuning, HpaTuning};

    use super::*;

    fn secs(s: u64) -> hoist_api::Duration {
        hoist_api::Duration::from_secs(s)
    }

    /// `algorithm` at its defaults, bounds 1..=100, target 10, one ready replica, values
    /// held for 5 minutes; then `f`.
    fn setup(algorithm: AlgorithmName, f: impl FnOnce(&mut Setup)) -> Setup {
        let mut s = Setup {
            spec: ScalerSpec {
                min_replicas: Some(1),
                max_replicas: Some(100),
                ..ScalerSpec::default()
            },
            builtin: BuiltinAutoscaling {
                algorithm,
                metrics: Vec::new(),
                scale_to_zero_grace_period: None,
                decision_interval: None,
                kpa: None,
                apa: None,
                hpa: None,
            },
            target: 10.0,
            metric: MetricKind::Total,
            initial: 1,
            ready_delay: Duration::ZERO,
            max_hold: Duration::from_mins(5),
        };
        f(&mut s);
        s
    }

    fn rows(points: &[(i64, Option<f64>)]) -> Vec<Row> {
        points
            .iter()
            .map(|&(s, value)| Row {
                at_ms: s * 1000,
                value,
            })
            .collect()
    }

    fn values(points: &[(i64, f64)]) -> Vec<Row> {
        rows(
            &points
                .iter()
                .map(|&(s, v)| (s, Some(v)))
                .collect::<Vec<_>>(),
        )
    }

    /// (time s, replicas, ready) at each decision.
    fn track(replay: &Replay) -> Vec<(i64, i32, i32)> {
        replay
            .samples
            .iter()
            .map(|s| (s.at_ms / 1000, s.replicas, s.ready))
            .collect()
    }

    #[test]
    fn replays_follow_the_algorithm_and_the_ready_delay() {
        struct Case {
            name: &'static str,
            setup: Setup,
            trace: Vec<Row>,
            want: Vec<(i64, i32, i32)>,
        }
        let cases = [
            Case {
                // HPA: a total of 40 is 4× the target of 1 replica: ceil(40 / 10) = 4 at once,
                // ready 20 s later. At 10 s the total over the 4 replicas is at the target (the
                // HPA divides an External metric by the replicas, not the ready pods).
                name: "hpa scales up, replicas ready after the delay",
                setup: setup(AlgorithmName::Hpa, |s| {
                    s.builtin.decision_interval = Some(secs(10));
                    s.ready_delay = Duration::from_secs(20);
                }),
                trace: values(&[(0, 40.0), (30, 40.0)]),
                want: vec![(0, 4, 1), (10, 4, 1), (20, 4, 4), (30, 4, 4)],
            },
            Case {
                // HPA: the 150 s scale-down window keeps the 4 of t=0 until it leaves the window at
                // 150 s: the first decision after that (200 s) scales down.
                name: "hpa scale-down waits for its window",
                setup: setup(AlgorithmName::Hpa, |s| {
                    s.initial = 4;
                    s.builtin.decision_interval = Some(secs(100));
                    s.builtin.hpa = Some(HpaTuning {
                        scale_down_stabilization: Some(secs(150)),
                        ..HpaTuning::default()
                    });
                }),
                trace: values(&[(0, 40.0), (100, 10.0), (400, 10.0)]),
                want: vec![
                    (0, 4, 4),
                    (100, 4, 4),
                    (200, 1, 1),
                    (300, 1, 1),
                    (400, 1, 1),
                ],
            },
            Case {
                // APA at min 0: zero is reached after the scale-to-zero grace (tick's rule);
                // demand brings one replica back.
                name: "apa to zero after the grace and back",
                setup: setup(AlgorithmName::Apa, |s| {
                    s.spec.min_replicas = Some(0);
                    s.builtin.decision_interval = Some(secs(10));
                    s.builtin.apa = Some(ApaTuning {
                        scale_down_cooldown: Some(secs(0)),
                        ..ApaTuning::default()
                    });
                    s.builtin.scale_to_zero_grace_period = Some(secs(20));
                }),
                trace: values(&[(0, 0.0), (40, 5.0), (50, 5.0)]),
                want: vec![
                    (0, 1, 1),
                    (10, 1, 1),
                    (20, 0, 0),
                    (30, 0, 0),
                    (40, 1, 1),
                    (50, 1, 1),
                ],
            },
        ];
        for case in cases {
            let replay = replay(&case.setup, &case.trace);
            assert_eq!(track(&replay), case.want, "{}", case.name);
        }
    }

    #[test]
    fn kpa_panics_on_a_burst_and_reports_it() {
        // Target 10 × 0.7 = 7 per pod. A burst of 70 against 1 ready pod: panic (10 pods
        // wanted ≥ 2 × 1 ready).
        let s = setup(AlgorithmName::Kpa, |s| {
            s.spec.max_replicas = Some(20);
            s.ready_delay = Duration::from_secs(4);
        });
        let replay = replay(&s, &values(&[(0, 7.0), (10, 70.0), (20, 70.0)]));
        let first_burst = replay.samples.iter().find(|x| x.at_ms == 10_000).unwrap();
        assert!(first_burst.panicking, "{first_burst:?}");
        assert_eq!(first_burst.ready, 1, "new replicas are not ready yet");
        // Once the panic window (6 s) holds only the burst: ceil(70 / 7) = 10, kept while
        // panicking.
        let late = replay.samples.iter().find(|x| x.at_ms == 20_000).unwrap();
        assert_eq!(
            (late.desired, late.replicas, late.ready),
            (Some(10), 10, 10)
        );
        let f = replay.figures(s.initial);
        assert_eq!(f.max_replicas, 10);
        assert!(f.panic_decisions > 0);
    }

    #[test]
    fn an_outage_holds_the_last_value_then_stops_deciding() {
        // HPA at target (40 over 4 pods of target 10); the source goes down at 10 s. The value
        // is held for max_hold (20 s: decisions at 10 s and 20 s), then no decision is made
        // and the replicas stay as they are — never scaled to zero or the minimum.
        let s = setup(AlgorithmName::Hpa, |s| {
            s.initial = 4;
            s.builtin.decision_interval = Some(secs(10));
            s.max_hold = Duration::from_secs(20);
        });
        let r = replay(&s, &rows(&[(0, Some(40.0)), (10, None), (40, None)]));
        let seen: Vec<(i64, bool, Option<i32>, i32)> = r
            .samples
            .iter()
            .map(|x| (x.at_ms / 1000, x.held_value, x.desired, x.replicas))
            .collect();
        assert_eq!(
            seen,
            [
                (0, false, Some(4), 4),
                (10, true, Some(4), 4),
                (20, true, Some(4), 4),
                (30, false, None, 4),
                (40, false, None, 4),
            ]
        );
        let f = r.figures(s.initial);
        assert_eq!((f.held_value_decisions, f.no_value_decisions), (2, 2));
    }

    #[test]
    fn an_empty_trace_has_no_samples() {
        let r = replay(&setup(AlgorithmName::Hpa, |_| {}), &[]);
        assert!(r.samples.is_empty());
        let f = r.figures(3);
        assert_eq!((f.decisions, f.min_replicas, f.final_replicas), (0, 3, 3));
    }
}
