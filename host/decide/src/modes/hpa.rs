//! The HorizontalPodAutoscaler hoist owns in `hpa` mode.
//!
//! Its `scaleTargetRef` is the Scaler itself (`hoist.dev/v1alpha1 Scaler`), so the HPA reads
//! the Scaler's /scale (`spec.replicas`, `status.replicas`, `status.selector` — the target's pod
//! selector, which lets it count pods) and writes `spec.replicas` there; every change then goes
//! through the state machine and its hooks. `minReplicas`/`maxReplicas` come from the Scaler's
//! bounds; `metrics` and `behavior` from `spec.autoscaling.hpa`.
//!
//! - `minReplicas: 0` is raised to 1 on the HPA: upstream HPAs accept 0 only behind the
//!   `HPAScaleToZero` feature gate (scale to zero needs `keda` or `builtin`).
//! - Pauses: an HPA has no pause switch, but a direction whose `selectPolicy` is `Disabled` is
//!   never recommended. So `pauseScaleIn` disables `behavior.scaleDown`, `pauseScaleOut`
//!   disables `behavior.scaleUp`, and `paused` disables both; the user's other behavior fields
//!   are kept. The HPA then stops moving `spec.replicas` instead of piling up a change the state
//!   machine would apply the moment the pause ends.

use hoist_api::Scaler;
use hoist_api::autoscaling::HpaAutoscaling;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
};

use super::{ModeError, owned_metadata};

/// `selectPolicy` value that turns a direction off.
pub const DISABLED: &str = "Disabled";

/// The HPA for `scaler` in `hpa` mode (`hpa` is its `spec.autoscaling.hpa`).
pub fn horizontal_pod_autoscaler(
    scaler: &Scaler,
    hpa: &HpaAutoscaling,
) -> Result<HorizontalPodAutoscaler, ModeError> {
    let metadata = owned_metadata(scaler, "HorizontalPodAutoscaler")?;
    let spec = &scaler.spec;
    let max = spec.effective_max_replicas();
    let min = spec.effective_min_replicas().clamp(1, max.max(1));
    let mut behavior = hpa.behavior.clone();
    let (stop_down, stop_up) = (
        spec.paused || spec.pause_scale_in,
        spec.paused || spec.pause_scale_out,
    );
    if stop_down || stop_up {
        let b = behavior.get_or_insert_with(HorizontalPodAutoscalerBehavior::default);
        if stop_down {
            disable(&mut b.scale_down);
        }
        if stop_up {
            disable(&mut b.scale_up);
        }
    }
    Ok(HorizontalPodAutoscaler {
        metadata,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(format!("{}/{}", hoist_api::GROUP, hoist_api::VERSION)),
                kind: "Scaler".to_owned(),
                name: scaler.metadata.name.clone().unwrap_or_default(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: (!hpa.metrics.is_empty()).then(|| hpa.metrics.clone()),
            behavior,
        }),
        status: None,
    })
}

fn disable(rules: &mut Option<HPAScalingRules>) {
    rules
        .get_or_insert_with(HPAScalingRules::default)
        .select_policy = Some(DISABLED.to_owned());
}

#[cfg(test)]
mod tests {
    use hoist_api::autoscaling::Autoscaling;
    use hoist_api::{ScalerSpec, TargetRef};
    use k8s_openapi::api::autoscaling::v2::{
        HPAScalingPolicy, MetricSpec, MetricTarget, ResourceMetricSource,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn metric() -> MetricSpec {
        MetricSpec {
            type_: "Resource".into(),
            resource: Some(ResourceMetricSource {
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(60),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        }
    }

    fn behavior() -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: Some(30),
                policies: Some(vec![HPAScalingPolicy {
                    type_: "Pods".into(),
                    value: 1,
                    period_seconds: 15,
                }]),
                ..HPAScalingRules::default()
            }),
            scale_up: None,
        }
    }

    fn scaler(
        min: Option<i32>,
        max: i32,
        tweak: impl Fn(&mut ScalerSpec),
    ) -> (Scaler, HpaAutoscaling) {
        let hpa = HpaAutoscaling {
            metrics: vec![metric()],
            behavior: Some(behavior()),
        };
        let mut spec = ScalerSpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
            },
            min_replicas: min,
            max_replicas: Some(max),
            autoscaling: Some(Autoscaling {
                hpa: Some(hpa.clone()),
                ..Autoscaling::default()
            }),
            ..ScalerSpec::default()
        };
        tweak(&mut spec);
        let mut s = Scaler::new("web", spec);
        s.metadata = ObjectMeta {
            name: Some("web".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            ..ObjectMeta::default()
        };
        (s, hpa)
    }

    #[test]
    fn every_field_is_mapped() {
        let (s, hpa) = scaler(Some(2), 7, |_| {});
        let h = horizontal_pod_autoscaler(&s, &hpa).unwrap();
        assert_eq!(h.metadata.name.as_deref(), Some("web"));
        assert_eq!(h.metadata.namespace.as_deref(), Some("ns"));
        let labels = h.metadata.labels.unwrap();
        assert_eq!(labels["hoist.dev/scaler"], "web");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "hoist");
        let owner = &h.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str(),
                owner.controller
            ),
            ("hoist.dev/v1alpha1", "Scaler", "web", "uid-1", Some(true))
        );
        let spec = h.spec.unwrap();
        assert_eq!(
            spec.scale_target_ref.api_version.as_deref(),
            Some("hoist.dev/v1alpha1")
        );
        assert_eq!(spec.scale_target_ref.kind, "Scaler");
        assert_eq!(spec.scale_target_ref.name, "web");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 7));
        assert_eq!(spec.metrics, Some(vec![metric()]));
        assert_eq!(spec.behavior, Some(behavior()));
    }

    #[test]
    fn bounds_and_pauses() {
        // (min, paused, pause in, pause out) -> (HPA min, scaleDown policy, scaleUp policy)
        let disabled = Some(DISABLED.to_owned());
        let cases = [
            (None, false, false, false, 1, None, None),
            (Some(0), false, false, false, 1, None, None),
            (Some(3), false, true, false, 3, disabled.clone(), None),
            (Some(3), false, false, true, 3, None, disabled.clone()),
            (
                Some(3),
                true,
                false,
                false,
                3,
                disabled.clone(),
                disabled.clone(),
            ),
        ];
        for (min, paused, pin, pout, want_min, want_down, want_up) in cases {
            let (s, hpa) = scaler(min, 5, |spec| {
                spec.paused = paused;
                spec.pause_scale_in = pin;
                spec.pause_scale_out = pout;
            });
            let spec = horizontal_pod_autoscaler(&s, &hpa).unwrap().spec.unwrap();
            assert_eq!(spec.min_replicas, Some(want_min), "{min:?}");
            let b = spec.behavior.unwrap();
            let down = b.scale_down.unwrap();
            assert_eq!(down.select_policy, want_down, "{paused} {pin} {pout}");
            assert_eq!(
                down.stabilization_window_seconds,
                Some(30),
                "user fields kept"
            );
            assert_eq!(b.scale_up.and_then(|u| u.select_policy), want_up);
        }
    }

    #[test]
    fn no_metrics_leaves_the_hpa_default_and_missing_uid_is_an_error() {
        let (s, mut hpa) = scaler(None, 3, |_| {});
        hpa.metrics.clear();
        hpa.behavior = None;
        let spec = horizontal_pod_autoscaler(&s, &hpa).unwrap().spec.unwrap();
        assert_eq!(spec.metrics, None);
        assert_eq!(spec.behavior, None);

        let (mut s, hpa) = scaler(None, 3, |_| {});
        s.metadata.uid = None;
        let err = horizontal_pod_autoscaler(&s, &hpa).unwrap_err();
        assert!(
            err.to_string().contains("ns/web") && err.to_string().contains("uid"),
            "{err}"
        );
    }
}
