//! The Scaler CRD from crds/ on the real API server: it installs, a valid Scaler is
//! accepted (and its /scale subresource works), and each CEL rule rejects its invalid
//! example with the message a user reads.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use hoist_api::Scaler;
use hoist_tests::{Cluster, TestNamespace};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn scaler(name: &str, spec: &Value) -> Value {
    json!({"apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": name}, "spec": spec})
}

fn target() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "trino"})
}

async fn create(ns: &TestNamespace, object: &Value) -> Result<Scaler, kube::Error> {
    let api: Api<Scaler> = ns.api();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(object.clone()).unwrap(),
    )
    .await
}

#[tokio::test]
async fn scaler_crd_installs_and_enforces_its_rules() {
    let ns = Cluster::shared().namespace("crd-scaler").await.unwrap();
    hoist_tests::operator::install_scaler_crd(&ns.client)
        .await
        .expect("the API server accepts the Scaler CRD (its CEL rules compile within cost limits)");

    // A valid Scaler is accepted and served with its /scale subresource.
    let valid = scaler(
        "ok",
        &json!({"targetRef": target(), "replicas": 3, "minReplicas": 1, "maxReplicas": 5,
               "autoscaling": {"fixed": {}},
               "hooks": {"plugin": {"configMap": "trino-drain", "sha256": "a".repeat(64)},
                         "config": {"port": 8080, "nested": {"any": ["json"]}}}}),
    );
    let created = create(&ns, &valid)
        .await
        .expect("a valid Scaler is accepted");
    assert_eq!(created.spec.replicas, Some(3));
    let api: Api<Scaler> = ns.api();
    api.patch_scale(
        "ok",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .expect("writing /scale as an HPA does");
    assert_eq!(api.get("ok").await.unwrap().spec.replicas, Some(4));

    // Each rule, with an invalid example and the words its message must contain.
    let cases = [
        (
            "min-over-max",
            json!({"targetRef": target(), "minReplicas": 5, "maxReplicas": 2}),
            "minReplicas must be less than or equal to maxReplicas",
        ),
        (
            "two-modes",
            json!({"targetRef": target(), "maxReplicas": 5, "autoscaling": {"fixed": {}, "external": {}}}),
            "autoscaling must set exactly one of fixed, hpa, keda, builtin or external",
        ),
        (
            "hpa-without-max",
            json!({"targetRef": target(), "autoscaling": {"hpa": {}}}),
            "maxReplicas is required when autoscaling is hpa, keda or builtin",
        ),
        (
            "bad-pin",
            json!({"targetRef": target(), "hooks": {"plugin": {"configMap": "p", "sha256": "not-a-digest"}}}),
            "hooks.plugin.sha256 must be 64 lowercase hexadecimal characters",
        ),
        (
            "negative-replicas",
            json!({"targetRef": target(), "replicas": -1}),
            "spec.replicas",
        ),
    ];
    for (name, spec, message) in cases {
        let err = create(&ns, &scaler(name, &spec)).await.expect_err(name);
        match err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(message),
                    "{name}: {:?} does not say {message:?}",
                    status.message
                );
            }
            other => panic!("{name}: expected 422 Invalid, got {other:?}"),
        }
    }
}
