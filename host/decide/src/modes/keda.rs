//! The KEDA ScaledObject hoist owns in `keda` mode, as unstructured JSON (no KEDA crate).
//!
//! Its `scaleTargetRef` is the Scaler itself, so KEDA (and the HPA KEDA creates) write the
//! Scaler's /scale and every change goes through the state machine. Field names and units are
//! KEDA's (`spec.autoscaling.keda` copies them); `minReplicaCount`/`maxReplicaCount` come from
//! the Scaler's bounds.
//!
//! The object is server-side applied with hoist's field manager: hoist owns only the fields it
//! sets here, so the labels, annotations and status KEDA (or a person) adds stay. A field hoist
//! stops setting (e.g. the paused annotation after `spec.paused` is cleared) is removed by the
//! next apply, unless another manager also set it.
//!
//! Pauses map to KEDA's annotations: `spec.paused` → `autoscaling.keda.sh/paused: "true"`,
//! `pauseScaleIn` → `autoscaling.keda.sh/paused-scale-in: "true"`, `pauseScaleOut` →
//! `autoscaling.keda.sh/paused-scale-out: "true"`.

use hoist_api::Scaler;
use hoist_api::autoscaling::{KedaAutoscaling, KedaTrigger};
use serde_json::{Map, Value, json};

use super::{ModeError, owned_metadata};

/// KEDA's API group.
pub const GROUP: &str = "keda.sh";
/// The ScaledObject's version.
pub const VERSION: &str = "v1alpha1";
/// The kind.
pub const KIND: &str = "ScaledObject";
/// The resource (plural).
pub const PLURAL: &str = "scaledobjects";
/// KEDA's pause annotation.
pub const PAUSED: &str = "autoscaling.keda.sh/paused";
/// KEDA's scale-in pause annotation.
pub const PAUSED_SCALE_IN: &str = "autoscaling.keda.sh/paused-scale-in";
/// KEDA's scale-out pause annotation.
pub const PAUSED_SCALE_OUT: &str = "autoscaling.keda.sh/paused-scale-out";

/// The ScaledObject for `scaler` in `keda` mode (`keda` is its `spec.autoscaling.keda`).
pub fn scaled_object(scaler: &Scaler, keda: &KedaAutoscaling) -> Result<Value, ModeError> {
    let meta = owned_metadata(scaler, KIND)?;
    let spec = &scaler.spec;
    let mut annotations = Map::new();
    for (set, key) in [
        (spec.paused, PAUSED),
        (spec.pause_scale_in, PAUSED_SCALE_IN),
        (spec.pause_scale_out, PAUSED_SCALE_OUT),
    ] {
        if set {
            annotations.insert(key.to_owned(), json!("true"));
        }
    }
    let mut metadata = json!({
        "name": meta.name,
        "namespace": meta.namespace,
        "labels": meta.labels,
        "ownerReferences": meta.owner_references,
    });
    if !annotations.is_empty() {
        metadata["annotations"] = Value::Object(annotations);
    }

    let mut s = Map::new();
    s.insert(
        "scaleTargetRef".into(),
        json!({
            "apiVersion": format!("{}/{}", hoist_api::GROUP, hoist_api::VERSION),
            "kind": "Scaler",
            "name": meta.name,
        }),
    );
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            s.insert(key.to_owned(), v);
        }
    };
    put("pollingInterval", keda.polling_interval.map(Value::from));
    put("cooldownPeriod", keda.cooldown_period.map(Value::from));
    put(
        "initialCooldownPeriod",
        keda.initial_cooldown_period.map(Value::from),
    );
    put("idleReplicaCount", keda.idle_replica_count.map(Value::from));
    put(
        "minReplicaCount",
        Some(spec.effective_min_replicas().into()),
    );
    put("maxReplicaCount", spec.max_replicas.map(Value::from));
    put(
        "fallback",
        keda.fallback.as_ref().map(|f| {
            let mut v = json!({"failureThreshold": f.failure_threshold, "replicas": f.replicas});
            if let Some(b) = f.behavior {
                v["behavior"] = json!(b);
            }
            v
        }),
    );
    put(
        "advanced",
        keda.advanced.as_ref().map(|a| {
            let mut v = Map::new();
            if let Some(r) = a.restore_to_original_replica_count {
                v.insert("restoreToOriginalReplicaCount".into(), r.into());
            }
            if let Some(h) = &a.horizontal_pod_autoscaler_config {
                let mut hv = Map::new();
                if let Some(n) = &h.name {
                    hv.insert("name".into(), n.clone().into());
                }
                if let Some(b) = &h.behavior {
                    hv.insert("behavior".into(), json!(b));
                }
                v.insert("horizontalPodAutoscalerConfig".into(), Value::Object(hv));
            }
            if let Some(m) = &a.scaling_modifiers {
                let mut mv = json!({"formula": m.formula, "target": m.target});
                if let Some(t) = &m.activation_target {
                    mv["activationTarget"] = t.clone().into();
                }
                if let Some(t) = m.metric_type {
                    mv["metricType"] = json!(t);
                }
                v.insert("scalingModifiers".into(), mv);
            }
            Value::Object(v)
        }),
    );
    put(
        "triggers",
        Some(Value::Array(keda.triggers.iter().map(trigger).collect())),
    );
    Ok(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": KIND,
        "metadata": metadata,
        "spec": s,
    }))
}

fn trigger(t: &KedaTrigger) -> Value {
    // `metadata` is required by KEDA's schema, even when empty.
    let mut v = json!({"type": t.type_, "metadata": t.metadata});
    if let Some(n) = &t.name {
        v["name"] = n.clone().into();
    }
    if let Some(a) = &t.authentication_ref {
        v["authenticationRef"] = json!({"name": a.name});
        if let Some(k) = a.kind {
            v["authenticationRef"]["kind"] = json!(k);
        }
    }
    if let Some(m) = t.metric_type {
        v["metricType"] = json!(m);
    }
    v
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hoist_api::autoscaling::{
        Autoscaling, KedaAdvanced, KedaAuthenticationKind, KedaAuthenticationRef, KedaFallback,
        KedaFallbackBehavior, KedaHpaConfig, KedaScalingModifiers, MetricTargetType,
    };
    use hoist_api::{ScalerSpec, TargetRef};
    use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// A `keda` member with every field set.
    pub(crate) fn full() -> KedaAutoscaling {
        KedaAutoscaling {
            polling_interval: Some(5),
            cooldown_period: Some(60),
            initial_cooldown_period: Some(10),
            idle_replica_count: Some(0),
            fallback: Some(KedaFallback {
                failure_threshold: 3,
                replicas: 2,
                behavior: Some(KedaFallbackBehavior::CurrentReplicasIfHigher),
            }),
            advanced: Some(KedaAdvanced {
                restore_to_original_replica_count: Some(true),
                horizontal_pod_autoscaler_config: Some(KedaHpaConfig {
                    name: Some("web-hpa".into()),
                    behavior: Some(HorizontalPodAutoscalerBehavior {
                        scale_down: Some(HPAScalingRules {
                            stabilization_window_seconds: Some(20),
                            ..HPAScalingRules::default()
                        }),
                        scale_up: None,
                    }),
                }),
                scaling_modifiers: Some(KedaScalingModifiers {
                    formula: "(a + b) / 2".into(),
                    target: "5".into(),
                    activation_target: Some("1".into()),
                    metric_type: Some(MetricTargetType::AverageValue),
                }),
            }),
            triggers: vec![
                KedaTrigger {
                    type_: "prometheus".into(),
                    name: Some("a".into()),
                    metadata: BTreeMap::from([
                        ("serverAddress".into(), "http://prom:9090".into()),
                        ("query".into(), "sum(up)".into()),
                        ("threshold".into(), "5".into()),
                    ]),
                    authentication_ref: Some(KedaAuthenticationRef {
                        name: "prom-auth".into(),
                        kind: Some(KedaAuthenticationKind::ClusterTriggerAuthentication),
                    }),
                    metric_type: Some(MetricTargetType::Value),
                },
                KedaTrigger {
                    type_: "cron".into(),
                    name: Some("b".into()),
                    ..KedaTrigger::default()
                },
            ],
        }
    }

    fn scaler(keda: &KedaAutoscaling, tweak: impl Fn(&mut ScalerSpec)) -> Scaler {
        let mut spec = ScalerSpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
            },
            min_replicas: Some(0),
            max_replicas: Some(9),
            autoscaling: Some(Autoscaling {
                keda: Some(keda.clone()),
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
        s
    }

    #[test]
    fn every_field_is_mapped() {
        let keda = full();
        let got = scaled_object(&scaler(&keda, |_| {}), &keda).unwrap();
        let want = json!({
            "apiVersion": "keda.sh/v1alpha1",
            "kind": "ScaledObject",
            "metadata": {
                "name": "web",
                "namespace": "ns",
                "labels": {"hoist.dev/scaler": "web", "app.kubernetes.io/managed-by": "hoist"},
                "ownerReferences": [{
                    "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "name": "web",
                    "uid": "uid-1", "controller": true
                }]
            },
            "spec": {
                "scaleTargetRef": {"apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "name": "web"},
                "pollingInterval": 5,
                "cooldownPeriod": 60,
                "initialCooldownPeriod": 10,
                "idleReplicaCount": 0,
                "minReplicaCount": 0,
                "maxReplicaCount": 9,
                "fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "currentReplicasIfHigher"},
                "advanced": {
                    "restoreToOriginalReplicaCount": true,
                    "horizontalPodAutoscalerConfig": {
                        "name": "web-hpa",
                        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}
                    },
                    "scalingModifiers": {
                        "formula": "(a + b) / 2", "target": "5", "activationTarget": "1",
                        "metricType": "AverageValue"
                    }
                },
                "triggers": [
                    {
                        "type": "prometheus", "name": "a",
                        "metadata": {"serverAddress": "http://prom:9090", "query": "sum(up)", "threshold": "5"},
                        "authenticationRef": {"name": "prom-auth", "kind": "ClusterTriggerAuthentication"},
                        "metricType": "Value"
                    },
                    {"type": "cron", "name": "b", "metadata": {}}
                ]
            }
        });
        assert_eq!(got, want);
    }

    #[test]
    fn minimal_member_sets_only_required_fields_and_pauses_map_to_annotations() {
        let keda = KedaAutoscaling {
            triggers: vec![KedaTrigger {
                type_: "cpu".into(),
                ..KedaTrigger::default()
            }],
            ..KedaAutoscaling::default()
        };
        // (paused, in, out) -> annotations
        let cases: [(bool, bool, bool, Option<Value>); 4] = [
            (false, false, false, None),
            (true, false, false, Some(json!({PAUSED: "true"}))),
            (false, true, false, Some(json!({PAUSED_SCALE_IN: "true"}))),
            (
                false,
                true,
                true,
                Some(json!({PAUSED_SCALE_IN: "true", PAUSED_SCALE_OUT: "true"})),
            ),
        ];
        for (paused, pin, pout, want) in cases {
            let s = scaler(&keda, |spec| {
                spec.paused = paused;
                spec.pause_scale_in = pin;
                spec.pause_scale_out = pout;
                spec.min_replicas = None;
            });
            let got = scaled_object(&s, &keda).unwrap();
            assert_eq!(got["metadata"].get("annotations").cloned(), want);
            let mut keys: Vec<&String> = got["spec"].as_object().unwrap().keys().collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "maxReplicaCount",
                    "minReplicaCount",
                    "scaleTargetRef",
                    "triggers"
                ]
            );
            assert_eq!(got["spec"]["minReplicaCount"], 1, "hoist's default minimum");
            assert_eq!(
                got["spec"]["triggers"],
                json!([{"type": "cpu", "metadata": {}}])
            );
        }
    }
}
