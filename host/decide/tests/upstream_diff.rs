//! Differential test: hoist's builtin HPA and KPA against the upstream code, tick by tick.
//!
//! Many metric traces (steady, ramps, spikes, drops to zero, noise, square waves), generated
//! deterministically with a variety of windows, policies, tolerances and panic settings, are
//! replayed through `hoist simulate`'s engine ([`replay`]: the tick the operator runs, a closed
//! loop with a ready delay) and through the upstream harness (`tests/upstream`: the Kubernetes
//! HPA controller's behavior code, v1.34.4, and Knative's autoscaler, v0.42.2, in the same
//! closed loop). The replica count after every tick must agree, except where a named, documented
//! deliberate difference ([`DELIBERATE`]) explains it.
//!
//! The harness is found through `HOIST_UPSTREAM_HARNESS` (`tests/run` builds it with
//! `tests/upstream/build` and sets it). Without it the test fails under `CI=true` and is skipped
//! otherwise:
//!
//! ```sh
//! HOIST_UPSTREAM_HARNESS="$(tests/upstream/build)" cargo test -p hoist-decide --test upstream_diff -- --nocapture
//! ```
//!
//! The last line it prints: ticks compared, agreed, and documented differences.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "tests: small generated numbers"
)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use hoist_api::ScalerSpec;
use hoist_api::autoscaling::{
    Algorithm, BuiltinAutoscaling, HpaScalingPolicy, HpaScalingPolicyType, HpaScalingRules,
    HpaSelectPolicy, HpaTuning, KpaTuning,
};
use hoist_decide::modes::replay::{MetricKind, Row, Setup, replay};
use serde_json::{Value, json};

/// Traces per algorithm.
const CASES_PER_ALGORITHM: u64 = 240;

/// A difference from upstream that is deliberate: it is explained here and in the README's
/// builtin autoscaling section, and `applies` recognises the ticks it explains.
struct Deliberate {
    name: &'static str,
    why: &'static str,
    applies: fn(&Case, usize) -> bool,
}

/// The deliberate differences the generated traces can show. None of the generated traces
/// reaches them today: they are listed so that a disagreement is either one of these or a
/// failure. (Scale to zero, missing samples and the APA's window are not exercised here: the
/// traces keep `minReplicas` ≥ 1 and every sample present, and the APA has no harness.)
const DELIBERATE: &[Deliberate] = &[];

/// A generated trace with its Scaler.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    algorithm: Algorithm,
    interval_secs: u64,
    initial: i32,
    min: i32,
    max: i32,
    ready_delay_secs: u64,
    target: f64,
    values: Vec<f64>,
    hpa: Option<HpaTuning>,
    hpa_tolerance: f64,
    kpa: Option<KpaTuning>,
}

/// splitmix64: a small deterministic generator, so every run replays the same traces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::try_from(self.below(items.len() as u64)).unwrap()]
    }

    /// A multiple of 0.25 in `[0, hi]` (exact in binary, so both sides see the same number).
    fn quarter(&mut self, hi: f64) -> f64 {
        let steps = (hi * 4.0) as u64;
        (self.below(steps + 1) as f64) / 4.0
    }
}

/// A metric trace of `ticks` values around `level`, in one of the shapes.
fn trace(rng: &mut Rng, ticks: usize, level: f64) -> (String, Vec<f64>) {
    let quarter = |v: f64| (v * 4.0).round().max(0.0) / 4.0;
    let shape = rng.below(7);
    let t_change = 5 + usize::try_from(rng.below(ticks as u64 / 2)).unwrap();
    let high = level * rng.pick(&[2.0, 3.0, 5.0, 10.0]);
    let values: Vec<f64> = match shape {
        0 => vec![quarter(level); ticks],
        1 => (0..ticks)
            .map(|i| quarter(level + (high - level) * i as f64 / ticks as f64))
            .collect(),
        2 => (0..ticks)
            .map(|i| quarter(high - (high - level) * i as f64 / ticks as f64))
            .collect(),
        3 => {
            let width = 1 + usize::try_from(rng.below(8)).unwrap();
            (0..ticks)
                .map(|i| {
                    if (t_change..t_change + width).contains(&i) {
                        quarter(high)
                    } else {
                        quarter(level)
                    }
                })
                .collect()
        }
        4 => (0..ticks)
            .map(|i| if i < t_change { quarter(high) } else { 0.0 })
            .collect(),
        5 => {
            let mut v = level;
            (0..ticks)
                .map(|_| {
                    v = (v + rng.quarter(level) - level / 2.0).max(0.0);
                    quarter(v)
                })
                .collect()
        }
        _ => {
            let period = 2 + usize::try_from(rng.below(20)).unwrap();
            (0..ticks)
                .map(|i| {
                    if (i / period) % 2 == 0 {
                        quarter(level)
                    } else {
                        quarter(high)
                    }
                })
                .collect()
        }
    };
    let names = [
        "steady",
        "ramp-up",
        "ramp-down",
        "spike",
        "to-zero",
        "noise",
        "square",
    ];
    (names[usize::try_from(shape).unwrap()].to_owned(), values)
}

fn hpa_rules(rng: &mut Rng, up: bool) -> Option<HpaScalingRules> {
    if rng.below(4) == 0 {
        return None; // the HPA's defaults for the direction
    }
    let policy = |rng: &mut Rng| HpaScalingPolicy {
        type_: if rng.below(2) == 0 {
            HpaScalingPolicyType::Pods
        } else {
            HpaScalingPolicyType::Percent
        },
        value: 0,
        period_seconds: rng.pick(&[10, 15, 30, 60, 120]),
    };
    let policies = (rng.below(3) > 0).then(|| {
        (0..=rng.below(2))
            .map(|_| {
                let mut p = policy(rng);
                p.value = match p.type_ {
                    HpaScalingPolicyType::Pods => rng.pick(&[1, 2, 4, 5]),
                    HpaScalingPolicyType::Percent => rng.pick(&[10, 25, 50, 100, 200]),
                };
                p
            })
            .collect()
    });
    let windows: &[i32] = if up {
        &[0, 0, 15, 30, 60]
    } else {
        &[300, 0, 10, 60, 120]
    };
    Some(HpaScalingRules {
        stabilization_window_seconds: (rng.below(4) > 0).then(|| rng.pick(windows)),
        select_policy: (rng.below(2) == 0).then(|| {
            rng.pick(&[
                HpaSelectPolicy::Max,
                HpaSelectPolicy::Min,
                HpaSelectPolicy::Max,
                HpaSelectPolicy::Disabled,
            ])
        }),
        policies,
        tolerance: (rng.below(6) == 0).then(|| rng.pick(&[0.0, 0.25, 0.5])),
    })
}

fn hpa_case(rng: &mut Rng, index: u64) -> Case {
    let min = rng.pick(&[1, 1, 2]);
    let max = rng.pick(&[10, 50, 200]);
    let target = rng.pick(&[10.0, 50.0, 7.0]);
    let initial =
        min + i32::try_from(rng.below(u64::try_from(max.min(20) - min).unwrap() + 1)).unwrap();
    let level = target * f64::from(initial) * rng.pick(&[0.5, 1.0, 1.1]);
    let (shape, values) = trace(rng, 60, level);
    let hpa_tolerance = rng.pick(&[0.1, 0.1, 0.05, 0.0, 0.25]);
    Case {
        name: format!("hpa-{index}-{shape}"),
        algorithm: Algorithm::Hpa,
        interval_secs: rng.pick(&[15, 15, 10, 30]),
        initial,
        min,
        max,
        ready_delay_secs: rng.pick(&[0, 0, 20]),
        target,
        values,
        hpa: Some(HpaTuning {
            tolerance: Some(hpa_tolerance),
            scale_up_stabilization: None,
            scale_down_stabilization: None,
            scale_up: hpa_rules(rng, true),
            scale_down: hpa_rules(rng, false),
        }),
        hpa_tolerance,
        kpa: None,
    }
}

fn kpa_case(rng: &mut Rng, index: u64) -> Case {
    // (stable window s, panic window %): panic windows of whole seconds, as Knative rounds them.
    let (stable, panic_pct) = rng.pick(&[
        (60, 10.0),
        (60, 10.0),
        (30, 20.0),
        (20, 10.0),
        (120, 5.0),
        (60, 50.0),
        (10, 100.0),
    ]);
    let min = rng.pick(&[1, 1, 2]);
    let max = rng.pick(&[10, 50, 500]);
    let target = rng.pick(&[10.0, 100.0, 4.0]);
    let initial =
        min + i32::try_from(rng.below(u64::try_from(max.min(12) - min).unwrap() + 1)).unwrap();
    let utilization = rng.pick(&[0.7, 1.0, 0.5]);
    let level = target * utilization * f64::from(initial) * rng.pick(&[0.5, 1.0, 1.5]);
    let (shape, values) = trace(rng, 150, level);
    Case {
        name: format!("kpa-{index}-{shape}"),
        algorithm: Algorithm::Kpa,
        interval_secs: 2,
        initial,
        min,
        max,
        ready_delay_secs: rng.pick(&[0, 2, 4, 10]),
        target,
        values,
        hpa: None,
        hpa_tolerance: 0.0,
        kpa: Some(KpaTuning {
            stable_window: Some(hoist_api::Duration::from_secs(stable)),
            panic_window_percentage: Some(panic_pct),
            panic_threshold_percentage: Some(rng.pick(&[200.0, 150.0, 300.0])),
            max_scale_up_rate: Some(rng.pick(&[1000.0, 2.0, 1.5])),
            max_scale_down_rate: Some(rng.pick(&[2.0, 1.5, 4.0])),
            target_utilization: Some(utilization),
        }),
    }
}

fn builtin(case: &Case) -> BuiltinAutoscaling {
    BuiltinAutoscaling {
        algorithm: case.algorithm,
        metrics: Vec::new(),
        scale_to_zero_grace_period: None,
        decision_interval: Some(hoist_api::Duration::from_secs(case.interval_secs)),
        kpa: case.kpa.clone(),
        apa: None,
        hpa: case.hpa.clone(),
    }
}

/// hoist's replica count after every tick.
fn hoist_replicas(case: &Case) -> Vec<i32> {
    let setup = Setup {
        spec: ScalerSpec {
            min_replicas: Some(case.min),
            max_replicas: Some(case.max),
            ..ScalerSpec::default()
        },
        builtin: builtin(case),
        target: case.target,
        metric: MetricKind::Total,
        initial: case.initial,
        ready_delay: Duration::from_secs(case.ready_delay_secs),
        max_hold: Duration::from_mins(5),
    };
    let interval_ms = i64::try_from(case.interval_secs * 1000).unwrap();
    let rows: Vec<Row> = (0_i64..)
        .zip(&case.values)
        .map(|(i, &v)| Row {
            at_ms: i * interval_ms,
            value: Some(v),
        })
        .collect();
    replay(&setup, &rows)
        .samples
        .iter()
        .map(|s| s.replicas)
        .collect()
}

/// The HPA's behavior for the harness, with the API server's defaults filled in (as hoist's
/// `builtin::algorithm` fills them).
fn hpa_behavior(case: &Case) -> Value {
    let hoist_decide::autoscale::Algorithm::Hpa(p) =
        hoist_decide::modes::builtin::algorithm(&builtin(case))
    else {
        panic!("not an hpa case")
    };
    let rules = |r: &hoist_decide::autoscale::HpaRules| {
        let mut v = json!({
            "stabilizationWindowSeconds": r.stabilization_window.as_secs(),
            "selectPolicy": format!("{:?}", r.select_policy),
            "policies": r.policies.iter().map(|p| json!({
                "type": format!("{:?}", p.kind),
                "value": p.value,
                "periodSeconds": p.period.as_secs(),
            })).collect::<Vec<_>>(),
        });
        if let Some(t) = r.tolerance {
            v["tolerance"] = json!(t.to_string());
        }
        v
    };
    json!({"scaleUp": rules(&p.scale_up), "scaleDown": rules(&p.scale_down)})
}

fn harness_input(cases: &[Case]) -> Value {
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            let mut v = json!({
                "name": c.name,
                "algorithm": if c.algorithm == Algorithm::Hpa { "hpa" } else { "kpa" },
                "intervalSeconds": c.interval_secs,
                "initial": c.initial,
                "min": c.min,
                "max": c.max,
                "readyDelaySeconds": c.ready_delay_secs,
                "target": c.target,
                "values": c.values,
            });
            if c.hpa.is_some() {
                v["hpa"] = json!({"tolerance": c.hpa_tolerance, "behavior": hpa_behavior(c)});
            }
            if let Some(k) = &c.kpa {
                v["kpa"] = json!({
                    "stableWindowSeconds": k.stable_window.unwrap().get().as_secs(),
                    "panicWindowPercentage": k.panic_window_percentage,
                    "panicThreshold": k.panic_threshold_percentage.unwrap() / 100.0,
                    "maxScaleUpRate": k.max_scale_up_rate,
                    "maxScaleDownRate": k.max_scale_down_rate,
                    "targetUtilization": k.target_utilization,
                });
            }
            v
        })
        .collect();
    json!({ "cases": cases })
}

/// Runs the harness over `cases`: the replica count after every tick, per case.
fn upstream_replicas(harness: &str, cases: &[Case]) -> Vec<Vec<i32>> {
    let mut child = Command::new(harness)
        .arg("-test.run=^TestHarness$")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting the upstream harness {harness}: {e}"));
    let input = serde_json::to_vec(&harness_input(cases)).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the upstream harness failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), cases.len(), "one result per case:\n{stdout}");
    cases
        .iter()
        .zip(results)
        .map(|(c, r)| {
            assert_eq!(r["name"], c.name.as_str());
            assert!(r["error"].is_null(), "{}: {}", c.name, r["error"]);
            serde_json::from_value(r["replicas"].clone()).unwrap()
        })
        .collect()
}

fn cases() -> Vec<Case> {
    let mut rng = Rng(0x686f_6973_7431);
    let mut cases: Vec<Case> = (0..CASES_PER_ALGORITHM)
        .map(|i| hpa_case(&mut rng, i))
        .collect();
    cases.extend((0..CASES_PER_ALGORITHM).map(|i| kpa_case(&mut rng, i)));
    cases
}

#[test]
fn builtin_autoscalers_agree_with_upstream() {
    let Some(harness) = std::env::var("HOIST_UPSTREAM_HARNESS")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "HOIST_UPSTREAM_HARNESS is not set: CI must run the differential test (tests/run sets it from tests/upstream/build)"
        );
        let _ = writeln!(
            std::io::stderr(),
            "upstream diff skipped: set HOIST_UPSTREAM_HARNESS=\"$(tests/upstream/build)\" to compare with upstream"
        );
        return;
    };
    assert!(
        std::path::Path::new(&harness).is_file(),
        "HOIST_UPSTREAM_HARNESS={harness} is not a file"
    );
    let cases = cases();
    let upstream = upstream_replicas(&harness, &cases);
    let (mut compared, mut agreed, mut documented) = (0_usize, 0_usize, 0_usize);
    let mut failures = Vec::new();
    for (case, theirs) in cases.iter().zip(upstream) {
        let ours = hoist_replicas(case);
        assert_eq!(ours.len(), theirs.len(), "{}: ticks", case.name);
        for (tick, (o, t)) in ours.iter().zip(&theirs).enumerate() {
            compared += 1;
            if o == t {
                agreed += 1;
            } else if let Some(d) = DELIBERATE.iter().find(|d| (d.applies)(case, tick)) {
                documented += 1;
                let _ = (d.name, d.why);
            } else {
                failures.push(format!(
                    "{} tick {tick} (t = {} s): hoist {o}, upstream {t}\n  values {:?}\n  hoist    {:?}\n  upstream {:?}\n  {case:?}",
                    case.name,
                    tick as u64 * case.interval_secs,
                    &case.values[..=tick],
                    &ours[..=tick],
                    &theirs[..=tick],
                ));
                break; // the loops diverge after the first difference
            }
        }
    }
    let summary = format!(
        "upstream diff: {compared} ticks compared, {agreed} agreed, {documented} documented differences"
    );
    assert!(
        failures.is_empty(),
        "{} of {} traces disagree with upstream (first difference of each):\n{}\n{summary}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // Written to the stderr handle, not through eprintln!, so the test harness does not
    // capture it: the line shows in every run's log.
    let _ = writeln!(std::io::stderr(), "{summary}");
}
