//! One decision ("tick") of hoist's builtin autoscaler, pure.
//!
//! The operator reads every metric source, then calls [`tick`] with the readings, the Scaler's
//! spec and the per-Scaler [`Memory`] it keeps **in its own process memory** (not in the
//! Scaler's status): the algorithm's windows, the last good value of every metric and when the
//! last tick ran. After an operator restart the memory starts empty and is rebuilt from new
//! readings; the algorithms guard that (KPA starts in panic mode, as Knative's, and the HPA
//! formula waits a full scale-down window before the first scale-down), so a restart never
//! shrinks a workload.
//!
//! Rules, in order:
//!
//! 1. A metric whose source failed keeps its last good value for `max_hold`
//!    ([`MetricFreshness`]); when any metric has no usable value (never read, or held too
//!    long), the tick changes nothing — it never scales to zero or to the minimum because a
//!    source is down. `MetricsAvailable` says which metric and why.
//! 2. `spec.paused`: the algorithm does not run and nothing is written.
//! 3. The algorithm (KPA, APA or the HPA formula, from `spec.autoscaling.builtin`) recommends a
//!    count within the Scaler's bounds; with several metrics the largest recommendation wins.
//! 4. Scale to zero (only with `minReplicas: 0`) happens after zero was recommended
//!    continuously for `scaleToZeroGracePeriod` (KPA applies its own grace; for APA and HPA this
//!    module keeps one replica meanwhile). From zero, any metric above zero asks for at least one
//!    replica.
//! 5. `pauseScaleIn` / `pauseScaleOut`: a lower / higher count is not written.
//! 6. The count is written (to the Scaler's /scale) only when it differs from `spec.replicas`.

use std::fmt::Write as _;
use std::time::Duration;

use hoist_api::ScalerSpec;
use hoist_api::autoscaling::{
    Algorithm as AlgorithmName, BuiltinAutoscaling, HpaScalingPolicyType, HpaScalingRules,
    HpaSelectPolicy,
};
use hoist_api::conditions::{AUTOSCALER_ACTIVE, ConditionUpdate, METRICS_AVAILABLE};

use crate::autoscale::{
    Algorithm, AlgorithmState, ApaParams, Autoscaler, Bounds, Decision, HoldReason, HpaParams,
    HpaPolicy, HpaPolicyKind, HpaRules, KpaParams, Limit, Metric, MetricFreshness, MetricInput,
    SelectPolicy, Timestamp,
};

/// What the operator remembers for one Scaler between ticks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    /// Fingerprint of the `builtin` member the memory belongs to; a change starts afresh.
    spec_key: String,
    /// The algorithm's state.
    algorithm: AlgorithmState,
    /// Per metric: the last good value and when it was read.
    last_good: Vec<Option<(Timestamp, Metric)>>,
    /// When the last tick ran.
    last_tick: Option<Timestamp>,
    /// Since when the recommendation has been zero (APA/HPA scale-to-zero grace).
    zero_since: Option<Timestamp>,
    /// The report of the last tick (kept for the conditions between ticks).
    last_report: Option<BuiltinReport>,
}

impl Memory {
    /// How long until the next tick is due (`None`: due now).
    pub fn due_in(&self, builtin: &BuiltinAutoscaling, now: Timestamp) -> Option<Duration> {
        let interval = builtin.effective_decision_interval().get();
        let last = self.last_tick?;
        let next = last.saturating_add(interval);
        (next > now).then(|| next.since(now))
    }

    /// The last tick's report, if a tick ran since the operator started.
    pub fn last_report(&self) -> Option<&BuiltinReport> {
        self.last_report.as_ref()
    }
}

/// One metric source's answer at this tick: the metric, or why the source failed.
pub type Reading = Result<Metric, String>;

/// Everything a tick reads.
#[derive(Clone, Debug)]
pub struct TickInput<'a> {
    /// The Scaler's spec (bounds, pauses).
    pub spec: &'a ScalerSpec,
    /// `spec.autoscaling.builtin`.
    pub builtin: &'a BuiltinAutoscaling,
    /// The time of the tick.
    pub now: Timestamp,
    /// The count the autoscaler sees: the Scaler's `spec.replicas` (its /scale), or the
    /// target's count when unset.
    pub current_replicas: i32,
    /// Ready pods of the target.
    pub ready_replicas: i32,
    /// One reading per `builtin.metrics`, in order.
    pub readings: &'a [Reading],
    /// How long a failed source's last value may be used.
    pub max_hold: Duration,
}

/// The worst metric's freshness at a tick.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricsHealth {
    /// Every source answered.
    Fresh,
    /// Metric `index` failed (`error`); its value from `since` is used until `until`.
    Held {
        /// Position in `builtin.metrics`.
        index: usize,
        /// The source's error.
        error: String,
        /// When the held value was read.
        since: Timestamp,
        /// When holding ends.
        until: Timestamp,
    },
    /// Metric `index` has no usable value (never read, or held longer than allowed): nothing is
    /// decided, replicas are kept.
    Unavailable {
        /// Position in `builtin.metrics`.
        index: usize,
        /// The source's error.
        error: String,
        /// [`MetricFreshness::reason`] (`MetricUnavailable` or `NoMetricYet`).
        reason: &'static str,
    },
}

/// What a tick decided.
#[derive(Clone, Debug, PartialEq)]
pub enum TickDecision {
    /// `spec.paused`: nothing decided.
    Paused,
    /// Nothing decided (metrics unavailable, or the algorithm held).
    Held(HoldReason),
    /// The algorithm recommended `replicas` (what the metrics asked for: `desired`).
    Recommended {
        /// The recommendation after windows, rates, bounds and the zero rules.
        replicas: i32,
        /// What the metrics alone asked for.
        desired: i32,
        /// What held `replicas` from `desired`.
        limited_by: Option<Limit>,
        /// `pauseScaleIn` or `pauseScaleOut` when that kept it from being written.
        blocked_by: Option<&'static str>,
        /// KPA decided in panic mode (never for APA and HPA).
        panicking: bool,
    },
}

/// The outcome of a tick, for the conditions.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltinReport {
    /// Metrics freshness.
    pub metrics: MetricsHealth,
    /// The decision.
    pub decision: TickDecision,
}

/// What the operator must do after a tick.
#[derive(Clone, Debug, PartialEq)]
pub struct TickOutcome {
    /// Write this count to the Scaler's /scale (`spec.replicas`).
    pub write: Option<i32>,
    /// For the conditions.
    pub report: BuiltinReport,
}

/// The algorithm `builtin` names, with its tuning applied to the upstream defaults.
pub fn algorithm(builtin: &BuiltinAutoscaling) -> Algorithm {
    let secs = |d: Option<hoist_api::Duration>, default: Duration| {
        d.map_or(default, hoist_api::Duration::get)
    };
    match builtin.algorithm {
        AlgorithmName::Kpa => {
            let t = builtin.kpa.clone().unwrap_or_default();
            let d = KpaParams::default();
            Algorithm::Kpa(KpaParams {
                stable_window: secs(t.stable_window, d.stable_window),
                panic_window_percentage: t
                    .panic_window_percentage
                    .unwrap_or(d.panic_window_percentage),
                panic_threshold: t
                    .panic_threshold_percentage
                    .map_or(d.panic_threshold, |p| p / 100.0),
                max_scale_up_rate: t.max_scale_up_rate.unwrap_or(d.max_scale_up_rate),
                max_scale_down_rate: t.max_scale_down_rate.unwrap_or(d.max_scale_down_rate),
                target_utilization: t.target_utilization.unwrap_or(d.target_utilization),
                scale_to_zero_grace: builtin.effective_scale_to_zero_grace_period().get(),
            })
        }
        AlgorithmName::Apa => {
            let t = builtin.apa.clone().unwrap_or_default();
            let d = ApaParams::default();
            Algorithm::Apa(ApaParams {
                up_tolerance: t.up_fluctuation_tolerance.unwrap_or(d.up_tolerance),
                down_tolerance: t.down_fluctuation_tolerance.unwrap_or(d.down_tolerance),
                max_scale_up_rate: t.max_scale_up_rate.unwrap_or(d.max_scale_up_rate),
                max_scale_down_rate: t.max_scale_down_rate.unwrap_or(d.max_scale_down_rate),
                scale_up_stabilization: secs(t.scale_up_cooldown, d.scale_up_stabilization),
                scale_down_stabilization: secs(t.scale_down_cooldown, d.scale_down_stabilization),
                metric_window: secs(t.metric_window, d.metric_window),
            })
        }
        AlgorithmName::Hpa => {
            let t = builtin.hpa.clone().unwrap_or_default();
            let d = HpaParams::default();
            Algorithm::Hpa(HpaParams {
                tolerance: t.tolerance.unwrap_or(d.tolerance),
                scale_up: hpa_rules(t.scale_up.as_ref(), t.scale_up_stabilization, d.scale_up),
                scale_down: hpa_rules(
                    t.scale_down.as_ref(),
                    t.scale_down_stabilization,
                    d.scale_down,
                ),
            })
        }
    }
}

/// One direction of `builtin.hpa` over the HPA's default for it: each absent field takes the
/// default, as the API server defaults an HPA's `behavior`. `shorthand` is
/// `scaleUpStabilization` / `scaleDownStabilization`.
fn hpa_rules(
    rules: Option<&HpaScalingRules>,
    shorthand: Option<hoist_api::Duration>,
    default: HpaRules,
) -> HpaRules {
    let window = rules
        .and_then(|r| r.stabilization_window_seconds)
        .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        .or(shorthand.map(hoist_api::Duration::get))
        .unwrap_or(default.stabilization_window);
    let Some(rules) = rules else {
        return HpaRules {
            stabilization_window: window,
            ..default
        };
    };
    HpaRules {
        stabilization_window: window,
        select_policy: match rules.select_policy {
            None => default.select_policy,
            Some(HpaSelectPolicy::Max) => SelectPolicy::Max,
            Some(HpaSelectPolicy::Min) => SelectPolicy::Min,
            Some(HpaSelectPolicy::Disabled) => SelectPolicy::Disabled,
        },
        policies: rules.policies.as_ref().map_or(default.policies, |ps| {
            ps.iter()
                .map(|p| HpaPolicy {
                    kind: match p.type_ {
                        HpaScalingPolicyType::Pods => HpaPolicyKind::Pods,
                        HpaScalingPolicyType::Percent => HpaPolicyKind::Percent,
                    },
                    value: p.value,
                    period: Duration::from_secs(u64::try_from(p.period_seconds).unwrap_or(0)),
                })
                .collect()
        }),
        tolerance: rules.tolerance.or(default.tolerance),
    }
}

/// One tick. Updates `memory` and says what to write.
pub fn tick(memory: &mut Memory, input: &TickInput<'_>) -> TickOutcome {
    let key = serde_json::to_string(input.builtin).unwrap_or_default();
    if memory.spec_key != key || memory.last_good.len() != input.readings.len() {
        *memory = Memory {
            spec_key: key,
            last_good: vec![None; input.readings.len()],
            ..Memory::default()
        };
    }
    let now = input.now;
    memory.last_tick = Some(now);

    // 1. Freshness: record good values, hold failed ones for a bounded time.
    let (metrics, health) = assess(memory, input);
    let finish = |memory: &mut Memory, write, decision| {
        let report = BuiltinReport {
            metrics: health.clone(),
            decision,
        };
        memory.last_report = Some(report.clone());
        TickOutcome { write, report }
    };
    if matches!(health, MetricsHealth::Unavailable { .. }) {
        return finish(
            memory,
            None,
            TickDecision::Held(HoldReason::MetricUnavailable),
        );
    }

    // 2. Paused: decide nothing.
    if input.spec.paused {
        return finish(memory, None, TickDecision::Paused);
    }

    // 3. The algorithm.
    let current = input.current_replicas.max(0);
    let bounds = Bounds::new(
        input.spec.effective_min_replicas().max(0),
        input.spec.effective_max_replicas(),
    );
    let algorithm = algorithm(input.builtin);
    let decision = algorithm.recommend(
        &mut memory.algorithm,
        now,
        &MetricInput {
            current_replicas: current,
            ready_replicas: input.ready_replicas.max(0),
            bounds,
            metrics: &metrics,
        },
    );
    let rec = match decision {
        Decision::Hold(h) => return finish(memory, None, TickDecision::Held(h)),
        Decision::Scale(r) => r,
    };

    // 4. Zero: grace before reaching it (APA/HPA), activation from it.
    let mut replicas = rec.replicas;
    let mut limited_by = rec.limited_by;
    if replicas == 0 {
        let since = *memory.zero_since.get_or_insert(now);
        let grace = input.builtin.effective_scale_to_zero_grace_period().get();
        if !matches!(algorithm, Algorithm::Kpa(_)) && current > 0 && now.since(since) < grace {
            replicas = 1.min(bounds.max);
            limited_by = Some(Limit::ScaleToZeroGrace);
        }
    } else {
        memory.zero_since = None;
    }
    let demand = metrics.iter().any(|m| match m.value {
        crate::autoscale::MetricValue::Total(v) | crate::autoscale::MetricValue::PerPod(v) => {
            v > 0.0
        }
    });
    if current == 0 && replicas == 0 && demand {
        replicas = 1.min(bounds.max);
    }

    // 5. Direction pauses; 6. write only a change.
    let blocked_by = if replicas < current && input.spec.pause_scale_in {
        Some("pauseScaleIn")
    } else if replicas > current && input.spec.pause_scale_out {
        Some("pauseScaleOut")
    } else {
        None
    };
    let write = (blocked_by.is_none() && replicas != input.current_replicas).then_some(replicas);
    finish(
        memory,
        write,
        TickDecision::Recommended {
            replicas,
            desired: rec.desired,
            limited_by,
            blocked_by,
            panicking: rec.panicking,
        },
    )
}

/// Records good readings and says which values may be used (held for at most `max_hold`).
fn assess(memory: &mut Memory, input: &TickInput<'_>) -> (Vec<Metric>, MetricsHealth) {
    let now = input.now;
    let mut metrics = Vec::with_capacity(input.readings.len());
    let mut health = MetricsHealth::Fresh;
    for (index, reading) in input.readings.iter().enumerate() {
        let slot = &mut memory.last_good[index];
        if let Ok(m) = reading {
            *slot = Some((now, *m));
        }
        let freshness =
            MetricFreshness::assess(reading.is_ok(), slot.map(|(t, _)| t), now, input.max_hold);
        let error = reading.as_ref().err().cloned().unwrap_or_default();
        match (freshness, *slot) {
            (MetricFreshness::Fresh, Some((_, m))) => metrics.push(m),
            (MetricFreshness::Held { .. }, Some((since, m))) => {
                metrics.push(m);
                if health == MetricsHealth::Fresh {
                    health = MetricsHealth::Held {
                        index,
                        error,
                        since,
                        until: since.saturating_add(input.max_hold),
                    };
                }
            }
            (f, _) => {
                if !matches!(health, MetricsHealth::Unavailable { .. }) {
                    health = MetricsHealth::Unavailable {
                        index,
                        error,
                        reason: f.reason(),
                    };
                }
            }
        }
    }
    (metrics, health)
}

fn at(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.unix_millis()).map_or_else(
        |_| format!("{}ms", t.unix_millis()),
        |t| {
            // Whole seconds: the message stays the same between ticks.
            jiff::Timestamp::from_second(t.as_second())
                .unwrap_or(t)
                .to_string()
        },
    )
}

/// `AutoscalerActive` and `MetricsAvailable` for a builtin tick's report.
pub fn conditions(report: &BuiltinReport) -> Vec<ConditionUpdate> {
    let metrics = match &report.metrics {
        MetricsHealth::Fresh => ConditionUpdate::new(
            METRICS_AVAILABLE,
            true,
            "MetricAvailable",
            "every metric source answered",
        ),
        MetricsHealth::Held {
            index,
            error,
            since,
            until,
        } => ConditionUpdate::new(
            METRICS_AVAILABLE,
            false,
            "LastKnownValueHeld",
            format!(
                "metrics[{index}] failed: {error}; using its last known value (read at {}) until {}",
                at(*since),
                at(*until)
            ),
        ),
        MetricsHealth::Unavailable {
            index,
            error,
            reason,
        } => ConditionUpdate::new(
            METRICS_AVAILABLE,
            false,
            *reason,
            format!(
                "metrics[{index}] has no usable value ({error}); spec.replicas is kept as it is"
            ),
        ),
    };
    let active = match &report.decision {
        TickDecision::Paused => ConditionUpdate::new(
            AUTOSCALER_ACTIVE,
            false,
            "Paused",
            "spec.paused: the builtin autoscaler does not write spec.replicas",
        ),
        TickDecision::Held(h) => {
            ConditionUpdate::new(AUTOSCALER_ACTIVE, false, h.reason(), h.to_string())
        }
        TickDecision::Recommended {
            replicas,
            desired,
            limited_by,
            blocked_by,
            ..
        } => {
            let mut msg = format!("recommends {replicas} replicas (the metrics ask for {desired}");
            if let Some(l) = limited_by {
                let _ = write!(msg, ", limited by {l:?}");
            }
            msg.push(')');
            if let Some(b) = blocked_by {
                let _ = write!(msg, "; not written: {b}");
            }
            ConditionUpdate::new(AUTOSCALER_ACTIVE, true, "Recommending", msg)
        }
    };
    vec![active, metrics]
}
