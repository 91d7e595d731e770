//! `spec.autoscaling`: who decides `spec.replicas`.
//!
//! A union in the Kubernetes style: an object with one optional member per mode, and a CEL rule
//! that exactly one is set. (An externally tagged Rust enum would produce a `oneOf` schema, whose
//! apiserver message — "must validate one and only one schema" — names no mode.) Use
//! [`Autoscaling::mode`] to get the set member as a Rust enum.
//!
//! Whatever the mode, `spec.minReplicas`/`spec.maxReplicas` clamp the value hoist acts on.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Who decides `spec.replicas`. Set exactly one member; absent means `fixed`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.fixed) ? 1 : 0) + (has(self.hpa) ? 1 : 0) + (has(self.keda) ? 1 : 0) + (has(self.builtin) ? 1 : 0) + (has(self.external) ? 1 : 0) == 1",
        "message": "autoscaling must set exactly one of fixed, hpa, keda, builtin or external"
    }
]))]
pub struct Autoscaling {
    /// `spec.replicas` is set by hand and changes only when a person changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed: Option<Fixed>,
    /// hoist owns a HorizontalPodAutoscaler whose scaleTargetRef is this Scaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaAutoscaling>,
    /// hoist owns a KEDA ScaledObject whose scaleTargetRef is this Scaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaAutoscaling>,
    /// hoist computes `spec.replicas` itself (KPA, APA or the HPA formula).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<BuiltinAutoscaling>,
    /// Someone else (an HPA or ScaledObject you manage, a script) writes `spec.replicas`,
    /// usually through the /scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<External>,
}

/// The set member of [`Autoscaling`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AutoscalingMode<'a> {
    /// See [`Autoscaling::fixed`].
    Fixed,
    /// See [`Autoscaling::hpa`].
    Hpa(&'a HpaAutoscaling),
    /// See [`Autoscaling::keda`].
    Keda(&'a KedaAutoscaling),
    /// See [`Autoscaling::builtin`].
    Builtin(&'a BuiltinAutoscaling),
    /// See [`Autoscaling::external`].
    External,
}

impl AutoscalingMode<'_> {
    /// The mode's field name, as written in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fixed => "fixed",
            Self::Hpa(_) => "hpa",
            Self::Keda(_) => "keda",
            Self::Builtin(_) => "builtin",
            Self::External => "external",
        }
    }
}

impl Autoscaling {
    /// The modes that are set, in declaration order.
    pub fn modes(&self) -> Vec<AutoscalingMode<'_>> {
        let mut modes = Vec::with_capacity(1);
        if self.fixed.is_some() {
            modes.push(AutoscalingMode::Fixed);
        }
        if let Some(hpa) = &self.hpa {
            modes.push(AutoscalingMode::Hpa(hpa));
        }
        if let Some(keda) = &self.keda {
            modes.push(AutoscalingMode::Keda(keda));
        }
        if let Some(builtin) = &self.builtin {
            modes.push(AutoscalingMode::Builtin(builtin));
        }
        if self.external.is_some() {
            modes.push(AutoscalingMode::External);
        }
        modes
    }

    /// The single set mode, or `None` when zero or several are set (an invalid spec; see
    /// [`crate::ScalerSpec::validate`]).
    pub fn mode(&self) -> Option<AutoscalingMode<'_>> {
        match self.modes().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }
}

/// Marker for `fixed: {}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Fixed {}

/// Marker for `external: {}`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct External {}

/// An HPA owned by hoist, targeting this Scaler; min/max come from the Scaler's bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaAutoscaling {
    /// The HPA's metrics (autoscaling/v2 MetricSpec). Empty means the HPA default (80 % CPU).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub metrics: Vec<MetricSpec>,
    /// The HPA's scaling behavior (stabilization windows and rate policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// A KEDA ScaledObject owned by hoist, targeting this Scaler. Field names and units are KEDA's
/// (integer seconds), so values copy across; min/max come from the Scaler's bounds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaAutoscaling {
    /// Seconds between trigger checks (KEDA default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub polling_interval: Option<i32>,
    /// Seconds after the last active trigger before scaling to zero (KEDA default 300; only
    /// governs the step to 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub cooldown_period: Option<i32>,
    /// Seconds after creation before the first scale to zero (KEDA default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub initial_cooldown_period: Option<i32>,
    /// Replicas while no trigger is active; KEDA only supports 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == 0", "message": "keda.idleReplicaCount: KEDA only supports 0"}
    ]))]
    pub idle_replica_count: Option<i32>,
    /// What KEDA does when a trigger's metric source keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<KedaFallback>,
    /// KEDA's advanced settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advanced: Option<KedaAdvanced>,
    /// The triggers (scalers) KEDA evaluates; at least one.
    #[schemars(length(min = 1, max = 32))]
    pub triggers: Vec<KedaTrigger>,
}

/// KEDA's `fallback`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaFallback {
    /// Consecutive failures before the fallback applies.
    #[schemars(range(min = 1))]
    pub failure_threshold: i32,
    /// Replicas to run while falling back.
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// How the fallback count relates to the current count (KEDA default `static`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<KedaFallbackBehavior>,
}

/// KEDA's `fallback.behavior`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum KedaFallbackBehavior {
    /// Always `fallback.replicas`.
    Static,
    /// Keep the current count.
    CurrentReplicas,
    /// The larger of the current count and `fallback.replicas`.
    CurrentReplicasIfHigher,
    /// The smaller of the current count and `fallback.replicas`.
    CurrentReplicasIfLower,
}

/// KEDA's `advanced`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaAdvanced {
    /// Restore the target's original count when the ScaledObject is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_to_original_replica_count: Option<bool>,
    /// The HPA KEDA creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizontal_pod_autoscaler_config: Option<KedaHpaConfig>,
    /// A formula combining the triggers' metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling_modifiers: Option<KedaScalingModifiers>,
}

/// KEDA's `advanced.horizontalPodAutoscalerConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaHpaConfig {
    /// Name of the HPA KEDA creates (KEDA default `keda-hpa-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
    /// The HPA's scaling behavior.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

/// KEDA's `advanced.scalingModifiers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaScalingModifiers {
    /// Expression over trigger names, e.g. `(trig_one + trig_two) / 2`.
    #[schemars(length(min = 1, max = 1024))]
    pub formula: String,
    /// Target value of the composed metric.
    #[schemars(length(min = 1, max = 64))]
    pub target: String,
    /// Activation target of the composed metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub activation_target: Option<String>,
    /// How the composed metric is compared with the target: `AverageValue` or `Value` (KEDA
    /// refuses `Utilization` for a composed metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self != 'Utilization'", "message": "keda.advanced.scalingModifiers.metricType: KEDA accepts only AverageValue or Value for a composed metric"}
    ]))]
    pub metric_type: Option<MetricTargetType>,
}

/// How a metric value is compared with its target (HPA's MetricTargetType, as KEDA uses it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MetricTargetType {
    /// Per-pod average of the value.
    AverageValue,
    /// The value as is.
    Value,
    /// Percentage of the pods' resource requests.
    Utilization,
}

/// One KEDA trigger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaTrigger {
    /// The KEDA scaler type, e.g. `prometheus`, `kafka`, `cron`.
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 63))]
    pub type_: String,
    /// Name of the trigger, used by `scalingModifiers.formula`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub name: Option<String>,
    /// The scaler's settings, as strings (KEDA's format).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// A KEDA TriggerAuthentication or ClusterTriggerAuthentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_ref: Option<KedaAuthenticationRef>,
    /// How the trigger's metric is compared with its target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_type: Option<MetricTargetType>,
}

/// KEDA's `authenticationRef`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaAuthenticationRef {
    /// Name of the (Cluster)TriggerAuthentication.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `TriggerAuthentication` (default) or `ClusterTriggerAuthentication`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<KedaAuthenticationKind>,
}

/// Kind of a KEDA authentication object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum KedaAuthenticationKind {
    /// Namespaced.
    TriggerAuthentication,
    /// Cluster-scoped.
    ClusterTriggerAuthentication,
}

/// hoist's own autoscaler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.kpa) || self.algorithm == 'kpa'", "message": "builtin.kpa tunes the kpa algorithm; set algorithm: kpa or remove it"},
    {"rule": "!has(self.apa) || self.algorithm == 'apa'", "message": "builtin.apa tunes the apa algorithm; set algorithm: apa or remove it"},
    {"rule": "!has(self.hpa) || self.algorithm == 'hpa'", "message": "builtin.hpa tunes the hpa algorithm; set algorithm: hpa or remove it"}
]))]
pub struct BuiltinAutoscaling {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Where the metric comes from; with several, the largest recommendation wins.
    #[schemars(length(min = 1, max = 8))]
    pub metrics: Vec<BuiltinMetric>,
    /// How long the metric must stay at zero demand before scaling to zero (default 30s; only
    /// used when `minReplicas` is 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero_grace_period: Option<Duration>,
    /// How often a recommendation is computed (default: kpa 2s, apa 15s, hpa 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_interval: Option<Duration>,
    /// Knative KPA tuning (only with `algorithm: kpa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kpa: Option<KpaTuning>,
    /// AIBrix APA tuning (only with `algorithm: apa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apa: Option<ApaTuning>,
    /// HPA formula tuning (only with `algorithm: hpa`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaTuning>,
}

impl BuiltinAutoscaling {
    /// The decision interval in effect.
    pub fn effective_decision_interval(&self) -> Duration {
        self.decision_interval.unwrap_or(match self.algorithm {
            Algorithm::Kpa => Duration::from_secs(2),
            Algorithm::Apa | Algorithm::Hpa => Duration::from_secs(15),
        })
    }

    /// The scale-to-zero grace period in effect.
    pub fn effective_scale_to_zero_grace_period(&self) -> Duration {
        self.scale_to_zero_grace_period
            .unwrap_or(Duration::from_secs(30))
    }
}

/// A builtin autoscaling algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Knative's KPA: stable and panic windows over the total demand.
    Kpa,
    /// AIBrix's APA: fluctuation tolerances around a per-pod target.
    Apa,
    /// The HPA formula `ceil(current × metric / target)`.
    Hpa,
}

/// One metric source of the builtin autoscaler: set exactly one member.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.prometheus) ? 1 : 0) + (has(self.pods) ? 1 : 0) == 1", "message": "each builtin metric sets exactly one of prometheus or pods"}
]))]
pub struct BuiltinMetric {
    /// A Prometheus instant query returning the total demand (one sample).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    /// A metric scraped from each ready pod's metrics endpoint (Prometheus text format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsMetric>,
}

/// A Prometheus query.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusMetric {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1, max = 2048))]
    pub address: String,
    /// A PromQL instant query returning one sample.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,
    /// Target value per replica.
    #[schemars(range(min = 0.0))]
    pub target: f64,
}

/// A metric read from every ready pod's own endpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsMetric {
    /// Container port of the metrics endpoint.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path of the endpoint (default `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// Name of the metric (a gauge or counter) in the Prometheus text format.
    #[schemars(length(min = 1, max = 253))]
    pub metric_name: String,
    /// Target value per pod.
    #[schemars(range(min = 0.0))]
    pub target: f64,
}

/// Knative KPA tuning; every field defaults to Knative's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KpaTuning {
    /// Stable window (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window: Option<Duration>,
    /// Panic window as a percentage of the stable window (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub panic_window_percentage: Option<f64>,
    /// Panic when the panic-window demand reaches this percentage of ready capacity (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 110.0, max = 1000.0))]
    pub panic_threshold_percentage: Option<f64>,
    /// Largest scale-up factor per decision (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_scale_up_rate: Option<f64>,
    /// Largest scale-down factor per decision (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0))]
    pub max_scale_down_rate: Option<f64>,
    /// Fraction of the target to aim for (default 0.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01, max = 1.0))]
    pub target_utilization: Option<f64>,
}

impl KpaTuning {
    /// Knative's defaults.
    pub const DEFAULT_STABLE_WINDOW: Duration = Duration::from_secs(60);
    /// Knative's default panic window, percent of the stable window.
    pub const DEFAULT_PANIC_WINDOW_PERCENTAGE: f64 = 10.0;
    /// Knative's default panic threshold, percent.
    pub const DEFAULT_PANIC_THRESHOLD_PERCENTAGE: f64 = 200.0;
    /// Knative's default maximum scale-up rate.
    pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 1000.0;
    /// Knative's default maximum scale-down rate.
    pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
    /// Knative's default target utilization.
    pub const DEFAULT_TARGET_UTILIZATION: f64 = 0.7;
}

/// AIBrix APA tuning; every field defaults to AIBrix's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApaTuning {
    /// Scale up only when value/target exceeds 1 + this (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub up_fluctuation_tolerance: Option<f64>,
    /// Scale down only when value/target is below 1 − this (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub down_fluctuation_tolerance: Option<f64>,
    /// Scale-up cooldown (default 0s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_cooldown: Option<Duration>,
    /// Scale-down cooldown: the highest recommendation of this window is used, so the count
    /// drops only once every recommendation of the window is lower (default 300s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_cooldown: Option<Duration>,
    /// At most this multiple of the current replicas per decision (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_scale_up_rate: Option<f64>,
    /// At least the current replicas divided by this per decision (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub max_scale_down_rate: Option<f64>,
    /// Decide on the average per-pod value of this window instead of the current one (default
    /// 0s: the current value; AIBrix averages over 180s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric_window: Option<Duration>,
}

impl ApaTuning {
    /// AIBrix's default up tolerance.
    pub const DEFAULT_UP_FLUCTUATION_TOLERANCE: f64 = 0.1;
    /// AIBrix's default down tolerance.
    pub const DEFAULT_DOWN_FLUCTUATION_TOLERANCE: f64 = 0.1;
    /// AIBrix's default scale-up cooldown.
    pub const DEFAULT_SCALE_UP_COOLDOWN: Duration = Duration::from_secs(0);
    /// AIBrix's default scale-down cooldown.
    pub const DEFAULT_SCALE_DOWN_COOLDOWN: Duration = Duration::from_secs(300);
    /// AIBrix's default maximum scale-up rate.
    pub const DEFAULT_MAX_SCALE_UP_RATE: f64 = 2.0;
    /// AIBrix's default maximum scale-down rate.
    pub const DEFAULT_MAX_SCALE_DOWN_RATE: f64 = 2.0;
    /// hoist's default metric window: the current value (AIBrix averages over 180s).
    pub const DEFAULT_METRIC_WINDOW: Duration = Duration::from_secs(0);
}

/// HPA formula tuning; every field defaults to the HPA controller's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.scaleUpStabilization) || !has(self.scaleUp) || !has(self.scaleUp.stabilizationWindowSeconds)", "message": "builtin.hpa: set scaleUpStabilization or scaleUp.stabilizationWindowSeconds, not both"},
    {"rule": "!has(self.scaleDownStabilization) || !has(self.scaleDown) || !has(self.scaleDown.stabilizationWindowSeconds)", "message": "builtin.hpa: set scaleDownStabilization or scaleDown.stabilizationWindowSeconds, not both"}
]))]
pub struct HpaTuning {
    /// No change while metric/target lies within [1 − this, 1 + this], edges included
    /// (default 0.1). `scaleUp.tolerance` / `scaleDown.tolerance` override one side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: Option<f64>,
    /// Scale-up stabilization window (default 0s); the same as
    /// `scaleUp.stabilizationWindowSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_stabilization: Option<Duration>,
    /// Scale-down stabilization window (default 300s); the same as
    /// `scaleDown.stabilizationWindowSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_stabilization: Option<Duration>,
    /// Scale-up behavior, as the HPA's `behavior.scaleUp` (default: no stabilization, the
    /// larger of 4 pods and 100 % per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<HpaScalingRules>,
    /// Scale-down behavior, as the HPA's `behavior.scaleDown` (default: 300 s stabilization,
    /// 100 % per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<HpaScalingRules>,
}

/// One direction of the HPA's behavior (`HPAScalingRules`); an absent field takes the HPA's
/// default for that direction.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaScalingRules {
    /// For scale-up the lowest, for scale-down the highest recommendation of this many past
    /// seconds is used (default: scale-up 0, scale-down 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// How the policies combine (default `Max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<HpaSelectPolicy>,
    /// Rate policies (default: scale-up Pods 4 and Percent 100 per 15 s, scale-down Percent
    /// 100 per 15 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10))]
    pub policies: Option<Vec<HpaScalingPolicy>>,
    /// This direction's tolerance (default: `hpa.tolerance`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub tolerance: Option<f64>,
}

/// How the policies of one direction combine (the HPA's `selectPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HpaSelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No change in this direction.
    Disabled,
}

/// One rate policy (`HPAScalingPolicy`): at most `value` pods, or `value` percent of the
/// replicas at the start of the period, per `periodSeconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HpaScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub type_: HpaScalingPolicyType,
    /// Pods, or percent; greater than 0.
    #[schemars(range(min = 1))]
    pub value: i32,
    /// The period the change is allowed over, 1 to 1800 seconds.
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// The unit of an [`HpaScalingPolicy`]'s value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HpaScalingPolicyType {
    /// A number of pods.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

impl HpaTuning {
    /// The HPA controller's default tolerance.
    pub const DEFAULT_TOLERANCE: f64 = 0.1;
    /// The HPA controller's default scale-up stabilization.
    pub const DEFAULT_SCALE_UP_STABILIZATION: Duration = Duration::from_secs(0);
    /// The HPA controller's default scale-down stabilization.
    pub const DEFAULT_SCALE_DOWN_STABILIZATION: Duration = Duration::from_secs(300);
}
