//! Table tests of the conditions, their merge into the plan, and the builtin tick.

use std::time::Duration;

use hoist_api::autoscaling::{
    Algorithm as AlgorithmName, ApaTuning, Autoscaling, BuiltinAutoscaling, BuiltinMetric,
    HpaTuning, PrometheusMetric,
};
use hoist_api::conditions::{self, ConditionUpdate};
use hoist_api::{Scaler, ScalerSpec, ScalerStatus, Stage, TargetRef};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::builtin::{Memory, Reading, TickDecision, TickInput, tick};
use super::*;
use crate::autoscale::{Limit, Metric, Timestamp};

fn spec() -> ScalerSpec {
    ScalerSpec {
        target_ref: TargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
        },
        max_replicas: Some(10),
        ..ScalerSpec::default()
    }
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_unix_secs(secs)
}

fn types(updates: &[ConditionUpdate]) -> Vec<(&str, bool, &str)> {
    updates
        .iter()
        .map(|u| (u.type_, u.status, u.reason.as_str()))
        .collect()
}

type Want = Vec<(&'static str, bool, &'static str)>;

#[test]
fn conditions_per_mode() {
    let s = spec();
    let served = KedaCrd::Served;
    let absent = KedaCrd::NotServed {
        reason: "Missing Api Group: keda.sh".into(),
    };
    let unknown = KedaCrd::Unknown {
        reason: "connection refused".into(),
    };
    let cases: Vec<(ModeReport, Want)> = vec![
        (ModeReport::NoAutoscaler, vec![]),
        (
            ModeReport::Hpa(Ok("web".into())),
            vec![("AutoscalerActive", true, "HorizontalPodAutoscalerApplied")],
        ),
        (
            ModeReport::Hpa(Err("forbidden".into())),
            vec![(
                "AutoscalerActive",
                false,
                "HorizontalPodAutoscalerApplyFailed",
            )],
        ),
        (
            ModeReport::Keda {
                crd: served.clone(),
                applied: Some(Ok("web".into())),
            },
            vec![
                ("AutoscalerActive", true, "ScaledObjectApplied"),
                ("KEDAAvailable", true, "CRDServed"),
            ],
        ),
        (
            ModeReport::Keda {
                crd: served,
                applied: Some(Err("invalid".into())),
            },
            vec![
                ("AutoscalerActive", false, "ScaledObjectApplyFailed"),
                ("KEDAAvailable", true, "CRDServed"),
            ],
        ),
        (
            ModeReport::Keda {
                crd: absent,
                applied: None,
            },
            vec![
                ("AutoscalerActive", false, "KEDAUnavailable"),
                ("KEDAAvailable", false, "CRDNotServed"),
            ],
        ),
        (
            ModeReport::Keda {
                crd: unknown,
                applied: None,
            },
            vec![
                ("AutoscalerActive", false, "KEDAUnavailable"),
                ("KEDAAvailable", false, "DiscoveryFailed"),
            ],
        ),
        (
            ModeReport::BuiltinStarting,
            vec![
                ("AutoscalerActive", true, "Starting"),
                ("MetricsAvailable", false, "NoMetricYet"),
            ],
        ),
    ];
    for (report, want) in cases {
        assert_eq!(types(&super::conditions(&report, &s)), want, "{report:?}");
    }
    let mut paused = spec();
    paused.paused = true;
    let c = super::conditions(&ModeReport::Hpa(Ok("web".into())), &paused);
    assert!(c[0].message.contains("paused"), "{}", c[0].message);
}

fn cond(type_: &str, status: &str, reason: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        observed_generation: Some(1),
        last_transition_time: Time(jiff::Timestamp::from_second(100).unwrap()),
    }
}

fn scaler_with(conds: Vec<Condition>) -> Scaler {
    let mut s = Scaler::new("web", spec());
    s.metadata.generation = Some(1);
    s.status = Some(ScalerStatus {
        stage: Stage::Idle,
        conditions: conds,
        ..ScalerStatus::default()
    });
    s
}

#[test]
fn merge_writes_only_changes_and_removes_stale_autoscaling_conditions() {
    let now = jiff::Timestamp::from_second(200).unwrap();
    let ready = cond("Ready", "True", "Idle");
    let keda_ok = ConditionUpdate::new(conditions::KEDA_AVAILABLE, true, "CRDServed", "");

    // Unchanged conditions and no status in the plan: nothing is written.
    let s = scaler_with(vec![
        ready.clone(),
        cond("KEDAAvailable", "True", "CRDServed"),
    ]);
    let mut plan = Plan::default();
    merge_conditions(&mut plan, &s, std::slice::from_ref(&keda_ok), now);
    assert_eq!(plan.status, None);

    // A new condition: the observed status is written with it, the machine's kept.
    let s = scaler_with(vec![ready.clone()]);
    let mut plan = Plan::default();
    merge_conditions(&mut plan, &s, std::slice::from_ref(&keda_ok), now);
    let st = plan.status.expect("a status write");
    assert_eq!(
        st.conditions
            .iter()
            .map(|c| c.type_.as_str())
            .collect::<Vec<_>>(),
        ["Ready", "KEDAAvailable"]
    );

    // A mode switch to fixed: the autoscaling conditions go, the machine's stay.
    let s = scaler_with(vec![
        ready.clone(),
        cond("AutoscalerActive", "True", "ScaledObjectApplied"),
        cond("KEDAAvailable", "True", "CRDServed"),
    ]);
    let mut plan = Plan::default();
    merge_conditions(&mut plan, &s, &[], now);
    assert_eq!(plan.status.unwrap().conditions, vec![ready.clone()]);

    // The machine's own status write carries the autoscaling conditions too.
    let s = scaler_with(vec![ready.clone()]);
    let mut machine_status = s.status.clone().unwrap();
    machine_status.stage = Stage::Scaling;
    let mut plan = Plan {
        status: Some(machine_status),
        ..Plan::default()
    };
    merge_conditions(&mut plan, &s, &[keda_ok], now);
    let st = plan.status.unwrap();
    assert_eq!(st.stage, Stage::Scaling);
    assert!(conditions::is_true(&st.conditions, "KEDAAvailable"));

    // No status at all and nothing to say: no write.
    let mut s = Scaler::new("web", spec());
    s.status = None;
    let mut plan = Plan::default();
    merge_conditions(&mut plan, &s, &[], now);
    assert_eq!(plan.status, None);
}

fn builtin(algorithm: AlgorithmName, metrics: usize) -> BuiltinAutoscaling {
    BuiltinAutoscaling {
        algorithm,
        metrics: vec![
            BuiltinMetric {
                prometheus: Some(PrometheusMetric {
                    address: "http://127.0.0.1:9090".into(),
                    query: "q".into(),
                    target: 10.0,
                }),
                pods: None,
            };
            metrics
        ],
        scale_to_zero_grace_period: Some(hoist_api::Duration::from_secs(10)),
        decision_interval: Some(hoist_api::Duration::from_secs(1)),
        kpa: None,
        apa: (algorithm == AlgorithmName::Apa).then(|| ApaTuning {
            scale_down_cooldown: Some(hoist_api::Duration::from_secs(5)),
            ..ApaTuning::default()
        }),
        hpa: (algorithm == AlgorithmName::Hpa).then(|| HpaTuning {
            scale_down_stabilization: Some(hoist_api::Duration::from_secs(5)),
            ..HpaTuning::default()
        }),
    }
}

struct Run {
    spec: ScalerSpec,
    builtin: BuiltinAutoscaling,
    memory: Memory,
    current: i32,
}

impl Run {
    fn new(algorithm: AlgorithmName, metrics: usize, tweak: impl Fn(&mut ScalerSpec)) -> Self {
        let b = builtin(algorithm, metrics);
        let mut spec = spec();
        spec.autoscaling = Some(Autoscaling {
            builtin: Some(b.clone()),
            ..Autoscaling::default()
        });
        tweak(&mut spec);
        Self {
            spec,
            builtin: b,
            memory: Memory::default(),
            current: 2,
        }
    }

    /// One tick; applies the write like the operator (the Scaler's spec.replicas follows).
    fn tick(&mut self, now: i64, readings: &[Reading]) -> super::builtin::TickOutcome {
        let out = tick(
            &mut self.memory,
            &TickInput {
                spec: &self.spec,
                builtin: &self.builtin,
                now: t(now),
                current_replicas: self.current,
                ready_replicas: self.current,
                readings,
                max_hold: Duration::from_secs(30),
            },
        );
        if let Some(n) = out.write {
            self.current = n;
        }
        out
    }
}

#[allow(clippy::unnecessary_wraps)] // a Reading is what the tick takes
fn total(v: f64) -> Reading {
    Ok(Metric::total(v, 10.0))
}

#[test]
fn hpa_formula_scales_up_then_down_after_the_window() {
    let mut r = Run::new(AlgorithmName::Hpa, 1, |_| {});
    // 2 pods carry 60 (target 10 each): 6.
    assert_eq!(r.tick(0, &[total(60.0)]).write, Some(6));
    // Demand falls: the 5 s scale-down window keeps 6 for a while, then 2.
    assert_eq!(r.tick(1, &[total(20.0)]).write, None);
    let mut wrote = None;
    for s in 2..20 {
        if let Some(n) = r.tick(s, &[total(20.0)]).write {
            wrote = Some((s, n));
            break;
        }
    }
    let (at, n) = wrote.expect("scaled down after the window");
    assert!(at >= 5, "not before the stabilization window: {at}");
    assert!(n < 6, "{n}");
}

#[test]
fn the_tick_says_when_kpa_panics() {
    // KPA aims for 10 × 0.7 = 7 per pod: 1 pod carrying 7 is on target. (One pod: with more
    // ready, a fresh KPA starts in panic, as Knative's.)
    let mut r = Run::new(AlgorithmName::Kpa, 1, |_| {});
    r.current = 1;
    let calm = r.tick(0, &[total(7.0)]);
    assert!(
        matches!(
            calm.report.decision,
            TickDecision::Recommended {
                panicking: false,
                ..
            }
        ),
        "{calm:?}"
    );
    // A burst asks for at least twice the ready pods: panic.
    let burst = r.tick(1, &[total(70.0)]);
    assert!(
        matches!(
            burst.report.decision,
            TickDecision::Recommended {
                panicking: true,
                ..
            }
        ),
        "{burst:?}"
    );
}

#[test]
fn largest_metric_wins() {
    let mut r = Run::new(AlgorithmName::Hpa, 2, |_| {});
    // 2 pods: 20 in total is on target, 50 asks for 5.
    let out = r.tick(0, &[total(20.0), total(50.0)]);
    assert_eq!(out.write, Some(5));
    let out = r.tick(1, &[total(50.0), total(20.0)]);
    assert_eq!(out.write, None, "5 pods carry 50");
}

#[test]
fn failed_source_holds_the_last_value_then_keeps_replicas() {
    let mut r = Run::new(AlgorithmName::Hpa, 1, |_| {});
    assert_eq!(r.tick(0, &[total(60.0)]).write, Some(6));
    // Source down: the last value (60) is held: no scale-down to min, condition says so.
    let out = r.tick(5, &[Err("connection refused".into())]);
    assert_eq!(out.write, None);
    assert!(matches!(
        out.report.metrics,
        MetricsHealth::Held { index: 0, .. }
    ));
    let c = builtin::conditions(&out.report);
    assert_eq!(
        types(&c)[1],
        ("MetricsAvailable", false, "LastKnownValueHeld")
    );
    assert!(
        c[1].message.contains("connection refused"),
        "{}",
        c[1].message
    );
    // The same situation one tick later gives the same message (no status churn).
    let again = builtin::conditions(&r.tick(6, &[Err("connection refused".into())]).report);
    assert_eq!(c, again);
    // After max_hold (30 s): nothing is decided, replicas stay.
    let out = r.tick(40, &[Err("connection refused".into())]);
    assert_eq!(out.write, None);
    assert_eq!(
        out.report.decision,
        TickDecision::Held(crate::autoscale::HoldReason::MetricUnavailable)
    );
    assert_eq!(
        types(&builtin::conditions(&out.report))[1].2,
        "MetricUnavailable"
    );
    assert_eq!(r.current, 6);
    // Never read at all: held, nothing written.
    let mut fresh = Run::new(AlgorithmName::Kpa, 1, |_| {});
    let out = fresh.tick(0, &[Err("no route".into())]);
    assert_eq!(out.write, None);
    assert!(matches!(
        out.report.metrics,
        MetricsHealth::Unavailable {
            reason: "NoMetricYet",
            ..
        }
    ));
}

#[test]
fn pauses() {
    // (paused, in, out, demand) -> write
    let cases = [
        (true, false, false, 60.0, None),
        (false, false, true, 60.0, None),
        (false, true, false, 60.0, Some(6)),
        (false, false, false, 60.0, Some(6)),
    ];
    for (paused, pin, pout, demand, want) in cases {
        let mut r = Run::new(AlgorithmName::Hpa, 1, |s| {
            s.paused = paused;
            s.pause_scale_in = pin;
            s.pause_scale_out = pout;
        });
        let out = r.tick(0, &[total(demand)]);
        assert_eq!(out.write, want, "{paused} {pin} {pout}");
        if paused {
            assert_eq!(out.report.decision, TickDecision::Paused);
        }
    }
    // pauseScaleIn keeps a higher count.
    let mut r = Run::new(AlgorithmName::Hpa, 1, |s| s.pause_scale_in = true);
    r.current = 8;
    for s in 0..20 {
        assert_eq!(r.tick(s, &[total(10.0)]).write, None);
    }
    let out = r.tick(21, &[total(10.0)]);
    assert!(matches!(
        out.report.decision,
        TickDecision::Recommended {
            blocked_by: Some("pauseScaleIn"),
            ..
        }
    ));
}

#[test]
fn scale_to_zero_after_grace_and_back() {
    for algorithm in [AlgorithmName::Kpa, AlgorithmName::Hpa, AlgorithmName::Apa] {
        let mut r = Run::new(algorithm, 1, |s| s.min_replicas = Some(0));
        r.current = 1;
        let mut zero_at = None;
        for s in 0..200 {
            r.tick(s, &[total(0.0)]);
            if r.current == 0 {
                zero_at = Some(s);
                break;
            }
        }
        let at = zero_at.unwrap_or_else(|| panic!("{algorithm:?} reached zero"));
        assert!(
            at >= 10,
            "{algorithm:?} went to zero before the grace period: {at}"
        );
        // From zero, any demand asks for at least one.
        let out = r.tick(300, &[total(3.0)]);
        assert!(out.write.is_some_and(|n| n >= 1), "{algorithm:?}: {out:?}");
        // minReplicas 1: never zero.
        let mut r = Run::new(algorithm, 1, |_| {});
        for s in 0..200 {
            r.tick(s, &[total(0.0)]);
            assert!(r.current >= 1);
        }
    }
}

#[test]
fn ticks_are_due_at_the_decision_interval_and_spec_changes_reset() {
    let mut r = Run::new(AlgorithmName::Hpa, 1, |_| {});
    assert_eq!(r.memory.due_in(&r.builtin, t(0)), None);
    r.tick(0, &[total(20.0)]);
    assert_eq!(
        r.memory
            .due_in(&r.builtin, Timestamp::from_unix_millis(400)),
        Some(Duration::from_millis(600))
    );
    assert_eq!(r.memory.due_in(&r.builtin, t(1)), None);
    assert!(r.memory.last_report().is_some());
    r.builtin.decision_interval = Some(hoist_api::Duration::from_secs(2));
    r.tick(1, &[total(20.0)]);
    assert_eq!(
        r.memory.due_in(&r.builtin, t(2)),
        Some(Duration::from_secs(1))
    );
    let _ = Limit::MinReplicas;
}
