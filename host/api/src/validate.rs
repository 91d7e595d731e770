//! Semantic validation of a [`ScalerSpec`], the Rust twin of the CRD's CEL rules.
//!
//! The API server enforces the CEL rules at admission; this check runs in the operator too,
//! because objects admitted before a CRD upgrade (or under a CRD installed without rules) still
//! reach it, and because a few checks (zero deadlines) have no CEL rule. Each violation names
//! the field with its path from the object root, so the ValidSpec condition says where to look.

use crate::autoscaling::{
    AutoscalingMode, BuiltinAutoscaling, HpaScalingRules, KedaAutoscaling, MetricTargetType,
};
use crate::duration::Duration;
use crate::scaler::ScalerSpec;

/// Why `minReplicas: 0` with only pods metrics is refused (CEL rule and [`ScalerSpec::validate`]).
pub const ZERO_NEEDS_PROMETHEUS: &str = "minReplicas 0 needs a prometheus metric: at zero replicas no pod serves a pods metric, so nothing would ever scale the workload up again; add a prometheus metric that sees demand while nothing runs (e.g. requests queued at the ingress or load balancer), or set minReplicas to 1 or more";

/// One problem with a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecViolation {
    /// Path of the offending field, e.g. `spec.hooks.plugin.sha256`.
    pub field: String,
    /// What is wrong, in words a user understands.
    pub message: String,
}

impl std::fmt::Display for SpecViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl ScalerSpec {
    /// All violations of the spec's rules; empty when the spec is valid.
    pub fn validate(&self) -> Vec<SpecViolation> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| {
            out.push(SpecViolation {
                field: field.to_owned(),
                message,
            });
        };
        for (field, value) in [
            ("spec.targetRef.apiVersion", &self.target_ref.api_version),
            ("spec.targetRef.kind", &self.target_ref.kind),
            ("spec.targetRef.name", &self.target_ref.name),
        ] {
            if value.is_empty() {
                bad(field, "must not be empty".into());
            }
        }
        for (field, value) in [
            ("spec.replicas", self.replicas),
            ("spec.minReplicas", self.min_replicas),
        ] {
            if value.is_some_and(|v| v < 0) {
                bad(field, "must not be negative".into());
            }
        }
        if let Some(max) = self.max_replicas {
            if max < 1 {
                bad("spec.maxReplicas", "must be at least 1".into());
            }
            if self.effective_min_replicas() > max {
                bad(
                    "spec.minReplicas",
                    format!(
                        "must be less than or equal to maxReplicas ({} > {max})",
                        self.effective_min_replicas()
                    ),
                );
            }
        }
        self.validate_autoscaling(&mut bad);
        self.validate_hooks_and_timeouts(&mut bad);
        out
    }

    fn validate_autoscaling(&self, bad: &mut impl FnMut(&str, String)) {
        if let Some(autoscaling) = &self.autoscaling {
            match autoscaling.modes().as_slice() {
                [mode] => {
                    let needs_max = matches!(
                        mode,
                        AutoscalingMode::Hpa(_)
                            | AutoscalingMode::Keda(_)
                            | AutoscalingMode::Builtin(_)
                    );
                    if needs_max && self.max_replicas.is_none() {
                        bad(
                            "spec.maxReplicas",
                            format!("is required when autoscaling is {}", mode.name()),
                        );
                    }
                    if let AutoscalingMode::Keda(keda) = mode {
                        validate_keda(keda, bad);
                    }
                    if let AutoscalingMode::Builtin(builtin) = mode {
                        if builtin.metrics.is_empty() {
                            bad(
                                "spec.autoscaling.builtin.metrics",
                                "needs at least one metric".into(),
                            );
                        }
                        for (i, metric) in builtin.metrics.iter().enumerate() {
                            if usize::from(metric.prometheus.is_some())
                                + usize::from(metric.pods.is_some())
                                != 1
                            {
                                bad(
                                    &format!("spec.autoscaling.builtin.metrics[{i}]"),
                                    "must set exactly one of prometheus or pods".into(),
                                );
                            }
                        }
                        if self.effective_min_replicas() == 0
                            && !builtin.metrics.iter().any(|m| m.prometheus.is_some())
                        {
                            bad(
                                "spec.autoscaling.builtin.metrics",
                                ZERO_NEEDS_PROMETHEUS.into(),
                            );
                        }
                        let algorithm = builtin.algorithm;
                        for (name, set, wanted) in [
                            (
                                "kpa",
                                builtin.kpa.is_some(),
                                crate::autoscaling::Algorithm::Kpa,
                            ),
                            (
                                "apa",
                                builtin.apa.is_some(),
                                crate::autoscaling::Algorithm::Apa,
                            ),
                            (
                                "hpa",
                                builtin.hpa.is_some(),
                                crate::autoscaling::Algorithm::Hpa,
                            ),
                        ] {
                            if set && algorithm != wanted {
                                bad(
                                    &format!("spec.autoscaling.builtin.{name}"),
                                    format!(
                                        "tunes the {name} algorithm, but algorithm is {algorithm:?}"
                                    ),
                                );
                            }
                        }
                        validate_builtin_tuning(builtin, bad);
                    }
                }
                [] => bad(
                    "spec.autoscaling",
                    "must set exactly one of fixed, hpa, keda, builtin or external (none is set)"
                        .into(),
                ),
                several => {
                    let names: Vec<&str> = several.iter().map(|m| m.name()).collect();
                    bad(
                        "spec.autoscaling",
                        format!(
                            "must set exactly one of fixed, hpa, keda, builtin or external ({} are set)",
                            names.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn validate_hooks_and_timeouts(&self, bad: &mut impl FnMut(&str, String)) {
        if let Some(hooks) = &self.hooks {
            validate_plugin_ref(&hooks.plugin, bad);
            if let Some(pin) = &hooks.plugin.sha256
                && !(pin.len() == 64
                    && pin
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                bad(
                    "spec.hooks.plugin.sha256",
                    "must be 64 lowercase hexadecimal characters (the output of sha256sum)".into(),
                );
            }
            if hooks.call_timeout.is_some_and(Duration::is_zero) {
                bad("spec.hooks.callTimeout", "must be longer than 0s".into());
            }
            if let Some(config) = &hooks.config
                && !config.is_object()
            {
                bad("spec.hooks.config", "must be a JSON object".into());
            }
            validate_hook_secrets(hooks, bad);
        }
        if let Some(timeouts) = &self.stage_timeouts {
            for (field, value) in [
                ("spec.stageTimeouts.preScaling", timeouts.pre_scaling),
                ("spec.stageTimeouts.scaling", timeouts.scaling),
                ("spec.stageTimeouts.postScaling", timeouts.post_scaling),
            ] {
                if value.is_some_and(Duration::is_zero) {
                    bad(field, "must be longer than 0s".into());
                }
            }
        }
        if let Some(retry) = &self.retry_policy {
            if retry.max_attempts == 0 {
                bad("spec.retryPolicy.maxAttempts", "must be at least 1".into());
            }
            if let Some(backoff) = &retry.backoff
                && let (Some(initial), Some(max)) = (backoff.initial, backoff.max)
                && initial > max
            {
                bad(
                    "spec.retryPolicy.backoff.initial",
                    format!("must not exceed retryPolicy.backoff.max ({initial} > {max})"),
                );
            }
        }
    }
}

/// `spec.hooks.secrets` and `spec.hooks.tls`: bounded, names usable, no name twice.
fn validate_plugin_ref(plugin: &crate::PluginRef, bad: &mut impl FnMut(&str, String)) {
    match (&plugin.config_map, &plugin.oci) {
        (Some(_), Some(_)) | (None, None) => bad(
            "spec.hooks.plugin",
            "needs exactly one of configMap and oci".into(),
        ),
        (Some(name), None) if name.is_empty() => {
            bad("spec.hooks.plugin.configMap", "must not be empty".into());
        }
        (None, Some(oci)) => {
            if plugin.key.is_some() {
                bad(
                    "spec.hooks.plugin.key",
                    "names a ConfigMap key; an OCI plugin has none".into(),
                );
            }
            if let Err(reason) = check_oci_reference(&oci.reference, plugin.sha256.is_some()) {
                bad("spec.hooks.plugin.oci.reference", reason);
            }
        }
        (Some(_), None) => {}
    }
}

/// The shape of an OCI reference `REGISTRY/REPOSITORY(:TAG)(@sha256:HEX)`: a registry host
/// (no scheme), a repository, and a digest pin unless `pinned_elsewhere`.
fn check_oci_reference(reference: &str, pinned_elsewhere: bool) -> Result<(), String> {
    if reference.contains("://") {
        return Err(format!(
            "{reference:?} has a scheme; write REGISTRY/REPOSITORY@sha256:DIGEST (always HTTPS)"
        ));
    }
    let (name, digest) = match reference.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (reference, None),
    };
    let Some((registry, repository)) = name.split_once('/') else {
        return Err(format!(
            "{reference:?} names no registry; write REGISTRY/REPOSITORY@sha256:DIGEST"
        ));
    };
    if registry.is_empty() || repository.is_empty() {
        return Err(format!(
            "{reference:?} needs a registry and a repository, as in registry.example/team/hook@sha256:DIGEST"
        ));
    }
    match digest {
        Some(d) => {
            let hex = d.strip_prefix("sha256:").unwrap_or_default();
            if !(hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                return Err(format!(
                    "the digest of {reference:?} must be sha256: and 64 lowercase hexadecimal characters"
                ));
            }
        }
        None if !pinned_elsewhere => {
            return Err(format!(
                "{reference:?} names a tag, which can move: pin it with @sha256:DIGEST (as `hoist plugin push` prints) or with spec.hooks.plugin.sha256"
            ));
        }
        None => {}
    }
    Ok(())
}

fn validate_hook_secrets(hooks: &crate::Hooks, bad: &mut impl FnMut(&str, String)) {
    use crate::hooks::MAX_HOOK_SECRETS;
    if hooks.secrets.len() > MAX_HOOK_SECRETS {
        bad(
            "spec.hooks.secrets",
            format!(
                "{} entries, at most {MAX_HOOK_SECRETS}",
                hooks.secrets.len()
            ),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, secret) in hooks.secrets.iter().enumerate() {
        let name_ok = !secret.name.is_empty()
            && secret.name.len() <= 63
            && secret
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !name_ok {
            bad(
                &format!("spec.hooks.secrets[{i}].name"),
                "1 to 63 letters, digits, '_', '.' or '-'".into(),
            );
        }
        if !seen.insert(secret.name.as_str()) {
            bad(
                &format!("spec.hooks.secrets[{i}].name"),
                format!("{:?} is listed twice", secret.name),
            );
        }
        if secret.secret_key_ref.name.is_empty() || secret.secret_key_ref.key.is_empty() {
            bad(
                &format!("spec.hooks.secrets[{i}].secretKeyRef"),
                "name and key must not be empty".into(),
            );
        }
    }
    if let Some(ca) = hooks.tls.as_ref().and_then(|t| t.ca_bundle.as_ref())
        && ca.config_map_key_ref.is_some() == ca.secret_key_ref.is_some()
    {
        bad(
            "spec.hooks.tls.caBundle",
            "needs exactly one of configMapKeyRef and secretKeyRef".into(),
        );
    }
}

/// The checks of `spec.autoscaling.keda` that its schema cannot express alone.
fn validate_keda(keda: &KedaAutoscaling, bad: &mut impl FnMut(&str, String)) {
    if keda.triggers.is_empty() {
        bad(
            "spec.autoscaling.keda.triggers",
            "needs at least one trigger".into(),
        );
    }
    if keda.idle_replica_count.is_some_and(|n| n != 0) {
        bad(
            "spec.autoscaling.keda.idleReplicaCount",
            "KEDA only supports 0".into(),
        );
    }
    let composed = keda
        .advanced
        .as_ref()
        .and_then(|a| a.scaling_modifiers.as_ref())
        .and_then(|m| m.metric_type);
    if composed == Some(MetricTargetType::Utilization) {
        bad(
            "spec.autoscaling.keda.advanced.scalingModifiers.metricType",
            "KEDA accepts only AverageValue or Value for a composed metric".into(),
        );
    }
}

/// The ranges of `spec.autoscaling.builtin.apa` and `.hpa` (the schema's, for objects admitted
/// without it) and what the schema cannot say: a window set twice.
fn validate_builtin_tuning(builtin: &BuiltinAutoscaling, bad: &mut impl FnMut(&str, String)) {
    let in_range = |v: Option<f64>, lo: f64, hi: f64| v.is_none_or(|v| (lo..=hi).contains(&v));
    if let Some(apa) = &builtin.apa {
        let field = |name: &str| format!("spec.autoscaling.builtin.apa.{name}");
        for (name, value, lo, hi) in [
            (
                "upFluctuationTolerance",
                apa.up_fluctuation_tolerance,
                0.0,
                10.0,
            ),
            (
                "downFluctuationTolerance",
                apa.down_fluctuation_tolerance,
                0.0,
                1.0,
            ),
            ("maxScaleUpRate", apa.max_scale_up_rate, 1.0, 1000.0),
            ("maxScaleDownRate", apa.max_scale_down_rate, 1.0, 1000.0),
        ] {
            if !in_range(value, lo, hi) {
                bad(&field(name), format!("must be between {lo} and {hi}"));
            }
        }
        if apa.down_fluctuation_tolerance == Some(1.0) {
            bad(
                &field("downFluctuationTolerance"),
                "must be less than 1 (1 would never scale down)".into(),
            );
        }
    }
    let Some(hpa) = &builtin.hpa else { return };
    if !in_range(hpa.tolerance, 0.0, 1.0) {
        bad(
            "spec.autoscaling.builtin.hpa.tolerance",
            "must be between 0 and 1".into(),
        );
    }
    for (direction, rules, shorthand) in [
        (
            "scaleUp",
            &hpa.scale_up,
            hpa.scale_up_stabilization.is_some(),
        ),
        (
            "scaleDown",
            &hpa.scale_down,
            hpa.scale_down_stabilization.is_some(),
        ),
    ] {
        if let Some(rules) = rules {
            validate_hpa_rules(direction, rules, shorthand, bad);
        }
    }
}

/// One direction of `spec.autoscaling.builtin.hpa`: ranges as the HPA's own validation.
fn validate_hpa_rules(
    direction: &str,
    rules: &HpaScalingRules,
    shorthand_set: bool,
    bad: &mut impl FnMut(&str, String),
) {
    let field = |name: &str| format!("spec.autoscaling.builtin.hpa.{direction}.{name}");
    if let Some(window) = rules.stabilization_window_seconds {
        if !(0..=3600).contains(&window) {
            bad(
                &field("stabilizationWindowSeconds"),
                format!("must be between 0 and 3600 (is {window})"),
            );
        }
        if shorthand_set {
            bad(
                &field("stabilizationWindowSeconds"),
                format!("set this or hpa.{direction}Stabilization, not both"),
            );
        }
    }
    if rules.tolerance.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        bad(&field("tolerance"), "must be between 0 and 1".into());
    }
    if let Some(policies) = &rules.policies {
        if policies.is_empty() || policies.len() > 10 {
            bad(
                &field("policies"),
                format!("must hold 1 to 10 policies (holds {})", policies.len()),
            );
        }
        for (i, policy) in policies.iter().enumerate() {
            if policy.value < 1 {
                bad(
                    &field(&format!("policies[{i}].value")),
                    format!("must be greater than 0 (is {})", policy.value),
                );
            }
            if !(1..=1800).contains(&policy.period_seconds) {
                bad(
                    &field(&format!("policies[{i}].periodSeconds")),
                    format!("must be between 1 and 1800 (is {})", policy.period_seconds),
                );
            }
        }
    }
}
