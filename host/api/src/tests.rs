//! Tests of the resource: schema shape, CEL rules (evaluated client-side with kube-cel, the
//! evaluator kube's `cel` feature ships), Rust-side validation and error paths.

#![allow(clippy::needless_pass_by_value)] // test helpers read best taking values

use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::*;

fn crd_json() -> Value {
    serde_json::to_value(Scaler::crd()).unwrap()
}

fn schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// A minimal valid Scaler; tests patch `spec` into it.
fn scaler(spec: Value) -> Value {
    json!({
        "apiVersion": "hoist.dev/v1alpha1",
        "kind": "Scaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": spec,
    })
}

fn base_spec() -> Value {
    json!({"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}})
}

fn with(mut spec: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

/// Evaluate the CRD's CEL rules against an object; the messages of the failed rules.
fn cel_messages(object: &Value) -> Vec<String> {
    match kube::core::cel::Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn crd_identity_subresources_and_printer_columns() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "scalers.hoist.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "Scaler");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"],
        json!({"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"})
    );
    let columns: Vec<(&str, &str)> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["jsonPath"].as_str().unwrap()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Target", ".spec.targetRef.name"),
            ("Stage", ".status.stage"),
            ("Replicas", ".status.replicas"),
            ("Desired", ".spec.replicas"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn schema_is_structural_where_it_matters() {
    let s = schema();
    let spec = &s["properties"]["spec"]["properties"];
    let config = &spec["hooks"]["properties"]["config"];
    assert_eq!(config["type"], "object");
    assert_eq!(config["x-kubernetes-preserve-unknown-fields"], true);
    assert_eq!(
        s["properties"]["status"]["properties"]["stage"]["enum"],
        json!(["Idle", "PreScaling", "Scaling", "PostScaling", "Failed"])
    );
    assert_eq!(
        spec["hooks"]["properties"]["failurePolicy"]["enum"],
        json!(["FailClose", "FailOpen"])
    );
    assert_eq!(
        spec["stageTimeouts"]["properties"]["scaling"]["pattern"],
        duration::DURATION_PATTERN
    );
    // Lists and strings that CEL rules read are bounded, so the API server's cost estimate is finite.
    assert_eq!(
        spec["hooks"]["properties"]["plugin"]["properties"]["sha256"]["maxLength"],
        64
    );
    assert!(spec["hooks"]["properties"]["allowedHosts"]["maxItems"].is_number());
    // No $ref survives: the API server does not resolve references.
    assert!(!serde_json::to_string(&s).unwrap().contains("$ref"));
}

#[test]
fn cel_rules_accept_valid_scalers() {
    let sha = "a".repeat(64);
    let valid = [
        base_spec(),
        with(
            base_spec(),
            json!({"replicas": 0, "minReplicas": 0, "maxReplicas": 3}),
        ),
        with(
            base_spec(),
            json!({"replicas": 50, "minReplicas": 1, "maxReplicas": 3}),
        ),
        with(base_spec(), json!({"autoscaling": {"fixed": {}}})),
        with(base_spec(), json!({"autoscaling": {"external": {}}})),
        with(
            base_spec(),
            json!({"maxReplicas": 10, "autoscaling": {"hpa": {"metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}}}),
        ),
        with(
            base_spec(),
            json!({"maxReplicas": 10, "autoscaling": {"keda": {"idleReplicaCount": 0, "triggers": [{"type": "cron", "metadata": {"timezone": "UTC"}}]}}}),
        ),
        with(
            base_spec(),
            json!({"maxReplicas": 10, "autoscaling": {"builtin": {"algorithm": "kpa", "kpa": {"stableWindow": "60s"}, "metrics": [{"prometheus": {"address": "http://p:9090", "query": "sum(x)", "target": 10.0}}]}}}),
        ),
        with(
            base_spec(),
            json!({"maxReplicas": 10, "autoscaling": {"builtin": {"algorithm": "hpa", "hpa": {"tolerance": 0.05, "scaleUpStabilization": "30s", "scaleUp": {"selectPolicy": "Min", "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}, {"type": "Percent", "value": 50, "periodSeconds": 60}], "tolerance": 0.2}, "scaleDown": {"stabilizationWindowSeconds": 600, "selectPolicy": "Disabled"}}, "metrics": [{"prometheus": {"address": "http://p:9090", "query": "sum(x)", "target": 10.0}}]}}}),
        ),
        with(
            base_spec(),
            json!({"maxReplicas": 10, "autoscaling": {"builtin": {"algorithm": "apa", "apa": {"maxScaleUpRate": 3.0, "maxScaleDownRate": 1.5, "metricWindow": "180s"}, "metrics": [{"prometheus": {"address": "http://p:9090", "query": "sum(x)", "target": 10.0}}]}}}),
        ),
        with(
            base_spec(),
            json!({"hooks": {"plugin": {"configMap": "drain", "sha256": sha}, "config": {"any": ["json", 1]}, "failurePolicy": "FailOpen"}}),
        ),
        with(
            base_spec(),
            json!({"retryPolicy": {"maxAttempts": 3, "backoff": {"initial": "30s", "max": "10m"}}}),
        ),
    ];
    for spec in valid {
        let object = scaler(spec.clone());
        assert_eq!(cel_messages(&object), Vec::<String>::new(), "{spec}");
        let parsed = parse_scaler_value(object).unwrap();
        assert_eq!(parsed.spec.validate(), Vec::new(), "{spec}");
    }
}

/// Each CEL rule with an invalid example: (what, spec, expected words in the API server's
/// message, the field the Rust-side check names).
#[test]
#[allow(clippy::too_many_lines, reason = "a table: one row per CEL rule")]
fn cel_rules_reject_invalid_scalers_with_readable_messages() {
    let cases = [
        (
            "min > max",
            with(base_spec(), json!({"minReplicas": 5, "maxReplicas": 2})),
            "minReplicas must be less than or equal to maxReplicas",
            "spec.minReplicas",
        ),
        (
            "two modes",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"fixed": {}, "hpa": {}}}),
            ),
            "autoscaling must set exactly one of fixed, hpa, keda, builtin or external",
            "spec.autoscaling",
        ),
        (
            "no mode",
            with(base_spec(), json!({"autoscaling": {}})),
            "exactly one of",
            "spec.autoscaling",
        ),
        (
            "hpa without max",
            with(base_spec(), json!({"autoscaling": {"hpa": {}}})),
            "maxReplicas is required when autoscaling is hpa, keda or builtin",
            "spec.maxReplicas",
        ),
        (
            "short sha",
            with(
                base_spec(),
                json!({"hooks": {"plugin": {"configMap": "c", "sha256": "abc"}}}),
            ),
            "sha256 must be 64 lowercase hexadecimal characters",
            "spec.hooks.plugin.sha256",
        ),
        (
            "uppercase sha",
            with(
                base_spec(),
                json!({"hooks": {"plugin": {"configMap": "c", "sha256": "A".repeat(64)}}}),
            ),
            "sha256 must be 64 lowercase hexadecimal characters",
            "spec.hooks.plugin.sha256",
        ),
        (
            "idle replicas",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"keda": {"idleReplicaCount": 1, "triggers": [{"type": "cron"}]}}}),
            ),
            "KEDA only supports 0",
            "spec.autoscaling.keda.idleReplicaCount",
        ),
        (
            "composed metric as utilization",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"keda": {"triggers": [{"type": "cron"}], "advanced": {"scalingModifiers": {"formula": "a + b", "target": "10", "metricType": "Utilization"}}}}}),
            ),
            "KEDA accepts only AverageValue or Value",
            "spec.autoscaling.keda.advanced.scalingModifiers.metricType",
        ),
        (
            "kpa tuning with apa",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"builtin": {"algorithm": "apa", "kpa": {}, "metrics": [{"pods": {"port": 9090, "metricName": "q", "target": 1.0}}]}}}),
            ),
            "builtin.kpa tunes the kpa algorithm",
            "spec.autoscaling.builtin.kpa",
        ),
        (
            "metric with two sources",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"builtin": {"algorithm": "hpa", "metrics": [{"pods": {"port": 1, "metricName": "q", "target": 1.0}, "prometheus": {"address": "a", "query": "q", "target": 1.0}}]}}}),
            ),
            "exactly one of prometheus or pods",
            "spec.autoscaling.builtin.metrics[0]",
        ),
        (
            "scale to zero with only a pods metric",
            with(
                base_spec(),
                json!({"minReplicas": 0, "maxReplicas": 5, "autoscaling": {"builtin": {"algorithm": "kpa", "metrics": [{"pods": {"port": 9090, "metricName": "q", "target": 1.0}}]}}}),
            ),
            "minReplicas 0 needs a prometheus metric",
            "spec.autoscaling.builtin.metrics",
        ),
        (
            "a stabilization window set twice",
            with(
                base_spec(),
                json!({"maxReplicas": 5, "autoscaling": {"builtin": {"algorithm": "hpa", "hpa": {"scaleDownStabilization": "60s", "scaleDown": {"stabilizationWindowSeconds": 60}}, "metrics": [{"prometheus": {"address": "a", "query": "q", "target": 1.0}}]}}}),
            ),
            "set scaleDownStabilization or scaleDown.stabilizationWindowSeconds, not both",
            "spec.autoscaling.builtin.hpa.scaleDown.stabilizationWindowSeconds",
        ),
        (
            "backoff inverted",
            with(
                base_spec(),
                json!({"retryPolicy": {"maxAttempts": 2, "backoff": {"initial": "10m", "max": "30s"}}}),
            ),
            "backoff.initial must not exceed retryPolicy.backoff.max",
            "spec.retryPolicy.backoff.initial",
        ),
    ];
    for (what, spec, message, field) in cases {
        let messages = cel_messages(&scaler(spec.clone()));
        assert!(
            messages.iter().any(|m| m.contains(message)),
            "{what}: CEL said {messages:?}, wanted {message:?}"
        );
        // The same object, parsed and checked in Rust, names the field.
        let parsed = parse_scaler_value(scaler(spec)).unwrap();
        let violations = parsed.spec.validate();
        assert!(
            violations.iter().any(|v| v.field == field),
            "{what}: Rust said {violations:?}, wanted field {field}"
        );
    }
}

#[test]
fn out_of_bounds_replicas_are_admitted_and_clamped() {
    // An HPA writing /scale out of bounds must not be refused (it would retry forever); hoist clamps.
    let spec = with(
        base_spec(),
        json!({"replicas": 100, "minReplicas": 2, "maxReplicas": 5}),
    );
    assert!(cel_messages(&scaler(spec.clone())).is_empty());
    let parsed = parse_scaler_value(scaler(spec)).unwrap();
    let cases = [(100, 5), (0, 2), (3, 3), (-1, 2)];
    for (asked, clamped) in cases {
        assert_eq!(parsed.spec.clamp(asked), clamped, "{asked}");
    }
    let zero_ok = ScalerSpec {
        min_replicas: Some(0),
        ..ScalerSpec::default()
    };
    assert_eq!(zero_ok.clamp(0), 0, "minReplicas 0 allows scale to zero");
    assert_eq!(
        ScalerSpec::default().clamp(0),
        1,
        "default minReplicas is 1"
    );
    assert_eq!(
        ScalerSpec::default().clamp(i32::MAX),
        i32::MAX,
        "no maxReplicas, no upper bound"
    );
    let inverted = ScalerSpec {
        min_replicas: Some(5),
        max_replicas: Some(2),
        ..ScalerSpec::default()
    };
    assert_eq!(
        inverted.clamp(9),
        2,
        "inverted bounds: the upper bound wins"
    );
}

#[test]
fn rust_only_checks_name_the_field() {
    let cases = [
        (
            json!({"stageTimeouts": {"scaling": "0s"}}),
            "spec.stageTimeouts.scaling",
        ),
        (
            json!({"hooks": {"plugin": {"configMap": "c"}, "callTimeout": "0s"}}),
            "spec.hooks.callTimeout",
        ),
        (
            json!({"hooks": {"plugin": {"configMap": ""}}}),
            "spec.hooks.plugin.configMap",
        ),
        (json!({"hooks": {"plugin": {}}}), "spec.hooks.plugin"),
        (
            json!({"hooks": {"plugin": {"configMap": "c", "oci": {"reference": "r.example/a@sha256:x"}}}}),
            "spec.hooks.plugin",
        ),
        (
            json!({"hooks": {"plugin": {"oci": {"reference": "r.example/hook:v1"}}}}),
            "spec.hooks.plugin.oci.reference",
        ),
        (
            json!({"hooks": {"plugin": {"oci": {"reference": "https://r.example/hook@sha256:00"}}}}),
            "spec.hooks.plugin.oci.reference",
        ),
        (
            json!({"hooks": {"plugin": {"oci": {"reference": "hook@sha256:00"}}}}),
            "spec.hooks.plugin.oci.reference",
        ),
        (
            json!({"hooks": {"plugin": {"oci": {"reference": format!("r.example/hook@sha256:{}", "0".repeat(64))}, "key": "k"}}}),
            "spec.hooks.plugin.key",
        ),
        (
            json!({"retryPolicy": {"maxAttempts": 0}}),
            "spec.retryPolicy.maxAttempts",
        ),
        (
            json!({"maxReplicas": 5, "autoscaling": {"keda": {"triggers": []}}}),
            "spec.autoscaling.keda.triggers",
        ),
    ];
    for (patch, field) in cases {
        let parsed = parse_scaler_value(scaler(with(base_spec(), patch.clone()))).unwrap();
        let violations = parsed.spec.validate();
        assert_eq!(
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            [field],
            "{patch}"
        );
        assert!(violations[0].to_string().starts_with(field));
    }
}

/// The builtin tuning's ranges: the schema refuses them at admission, and the Rust check (for
/// objects admitted without the schema) names the field.
#[test]
fn builtin_tuning_out_of_range_names_the_field() {
    let builtin = |algorithm: &str, tuning: Value| {
        let mut b = json!({"algorithm": algorithm, "metrics": [{"prometheus": {"address": "a", "query": "q", "target": 1.0}}]});
        b[algorithm] = tuning;
        with(
            base_spec(),
            json!({"maxReplicas": 5, "autoscaling": {"builtin": b}}),
        )
    };
    let policy =
        |value: i32, period: i32| json!({"type": "Pods", "value": value, "periodSeconds": period});
    let cases = [
        (
            builtin("hpa", json!({"scaleUp": {"policies": [policy(0, 15)]}})),
            "spec.autoscaling.builtin.hpa.scaleUp.policies[0].value",
        ),
        (
            builtin(
                "hpa",
                json!({"scaleDown": {"policies": [policy(1, 15), policy(1, 1801)]}}),
            ),
            "spec.autoscaling.builtin.hpa.scaleDown.policies[1].periodSeconds",
        ),
        (
            builtin("hpa", json!({"scaleDown": {"policies": []}})),
            "spec.autoscaling.builtin.hpa.scaleDown.policies",
        ),
        (
            builtin(
                "hpa",
                json!({"scaleUp": {"stabilizationWindowSeconds": 3601}}),
            ),
            "spec.autoscaling.builtin.hpa.scaleUp.stabilizationWindowSeconds",
        ),
        (
            builtin("hpa", json!({"scaleUp": {"tolerance": 1.5}})),
            "spec.autoscaling.builtin.hpa.scaleUp.tolerance",
        ),
        (
            builtin("apa", json!({"maxScaleUpRate": 0.5})),
            "spec.autoscaling.builtin.apa.maxScaleUpRate",
        ),
        (
            builtin("apa", json!({"downFluctuationTolerance": 1.0})),
            "spec.autoscaling.builtin.apa.downFluctuationTolerance",
        ),
    ];
    for (spec, field) in cases {
        let parsed = parse_scaler_value(scaler(spec.clone())).unwrap();
        let violations = parsed.spec.validate();
        assert_eq!(
            violations
                .iter()
                .map(|v| v.field.as_str())
                .collect::<Vec<_>>(),
            [field],
            "{spec}"
        );
    }
    // The schema holds the same ranges and the HPA's names and enums.
    let hpa = &schema()["properties"]["spec"]["properties"]["autoscaling"]["properties"]["builtin"]
        ["properties"]["hpa"]["properties"];
    let rules = &hpa["scaleUp"]["properties"];
    assert_eq!(rules["stabilizationWindowSeconds"]["maximum"], 3600.0);
    assert_eq!(
        rules["selectPolicy"]["enum"],
        json!(["Max", "Min", "Disabled"])
    );
    let policy = &rules["policies"]["items"]["properties"];
    assert_eq!(policy["type"]["enum"], json!(["Pods", "Percent"]));
    assert_eq!(policy["periodSeconds"]["maximum"], 1800.0);
    assert_eq!(policy["value"]["minimum"], 1.0);
}

#[test]
fn deserialisation_errors_name_the_field_path() {
    let cases = [
        (
            json!({"autoscaling": {"hpa": {"metrics": [{"type": ["Resource"]}]}}}),
            "spec.autoscaling.hpa.metrics[0].type",
        ),
        (json!({"autoscaling": "hpa"}), "spec.autoscaling"),
        (
            json!({"autoscaling": {"builtin": {"algorithm": "magic", "metrics": []}}}),
            "spec.autoscaling.builtin.algorithm",
        ),
        (
            json!({"stageTimeouts": {"preScaling": "5 minutes"}}),
            "spec.stageTimeouts.preScaling",
        ),
        (
            json!({"hooks": {"plugin": {"configMap": "c"}, "failurePolicy": "Sometimes"}}),
            "spec.hooks.failurePolicy",
        ),
        (json!({"replicas": "three"}), "spec.replicas"),
    ];
    for (patch, path) in cases {
        let text = scaler(with(base_spec(), patch.clone())).to_string();
        let err = parse_scaler_json(&text).unwrap_err();
        assert!(
            matches!(&err, ApiError::ParseJson { path: p, .. } if p.starts_with(path)),
            "{patch}: {err}"
        );
        assert!(err.to_string().contains(path), "{err}");
    }
    let yaml = "apiVersion: hoist.dev/v1alpha1\nkind: Scaler\nmetadata: {name: a}\nspec:\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: a}\n  stageTimeouts: {scaling: 10x}\n";
    let err = parse_scaler_yaml(yaml).unwrap_err();
    assert!(
        err.to_string().contains("spec.stageTimeouts.scaling"),
        "{err}"
    );
    assert!(err.to_string().contains("\"10x\""), "{err}");
}

#[test]
fn status_round_trips_and_stage_is_flat() {
    let status = ScalerStatus {
        replicas: Some(3),
        selector: Some("app=web".into()),
        stage: Stage::PreScaling,
        operation: Some(Operation {
            id: "1700000000-3-5".into(),
            from: 3,
            to: 5,
            started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            ),
            target: Some(crate::OperationTarget {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
                uid: Some("0f0f0f0f-1111-2222-3333-444455556666".into()),
            }),
            stage_started_at: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::from_microsecond(1_700_000_001_250_000).unwrap(),
            ),
            plugin_digest: Some("d".repeat(64)),
            hook_state: Some("{\"step\":2}".into()),
            hook_message: None,
            hook_calls: 2,
            next_hook_call_at: None,
            target_writes: 0,
            attempt: 1,
        }),
        pending_replicas: Some(7),
        ..ScalerStatus::default()
    };
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(
        value["stage"], "PreScaling",
        "stage is a flat string, not nested"
    );
    assert_eq!(value["operation"]["startedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(
        value["operation"]["stageStartedAt"], "2023-11-14T22:13:21.250000Z",
        "the stage start keeps microseconds, so hooks see elapsed milliseconds"
    );
    assert_eq!(
        value["operation"]["target"]["uid"],
        "0f0f0f0f-1111-2222-3333-444455556666"
    );
    let back: ScalerStatus = serde_json::from_value(value).unwrap();
    assert_eq!(back, status);
}

#[test]
fn crd_yaml_is_one_document_per_crd() {
    let yaml = crd_yaml().unwrap();
    assert!(
        yaml.starts_with(
            "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n"
        )
    );
    assert_eq!(yaml.matches("\n---\n").count() + 1, crds().len());
}

#[test]
fn committed_crd_matches_the_types() {
    // The same check as crds/check, as a test, so `cargo test` alone catches drift.
    // HOIST_UPDATE_CRDS=1 rewrites the file instead (when the hoist binary cannot be built).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crds/scaler.yaml");
    let generated = crd_yaml().unwrap();
    if std::env::var_os("HOIST_UPDATE_CRDS").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap();
    assert!(
        committed == generated,
        "crds/scaler.yaml is stale: run `cargo run -q -p hoist-operator --bin hoist -- crds > crds/scaler.yaml`"
    );
}

#[test]
fn oci_plugins_pinned_by_manifest_or_component_digest_are_valid() {
    let digest = "0".repeat(64);
    for plugin in [
        json!({"oci": {"reference": format!("127.0.0.1:5000/hooks/drain@sha256:{digest}")}}),
        json!({"oci": {"reference": "r.example/hooks/drain:v1", "pullSecret": "pull"}, "sha256": digest}),
        json!({"oci": {"reference": format!("r.example/drain:v1@sha256:{digest}")}}),
    ] {
        let parsed = parse_scaler_value(scaler(with(
            base_spec(),
            json!({"hooks": {"plugin": plugin.clone()}}),
        )))
        .unwrap();
        assert_eq!(parsed.spec.validate(), vec![], "{plugin}");
    }
}
