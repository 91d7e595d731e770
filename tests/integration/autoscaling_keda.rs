//! `keda` mode on the real control plane with KEDA's own CRDs (from its Go module,
//! `github.com/kedacore/keda/v2` `config/crd/bases`, fetched by `tests/cluster/keda-crds`):
//!
//! - without the CRDs: `KEDAAvailable=False` (discovery says the group is not served) and
//!   `spec.replicas` applies as set;
//! - CRDs installed later: picked up without restarting the operator; the ScaledObject hoist
//!   writes (every field set) is the one expected, and every variant passes KEDA's schema under
//!   `fieldValidation=Strict`;
//! - KEDA's own label, annotation and status writes survive hoist's next apply;
//! - a /scale write as KEDA's HPA makes runs the state machine;
//! - mode change and Scaler deletion remove the ScaledObject.
//!
//! Here KEDA's writes are made by this test with KEDA's field manager; `keda_operator.rs` runs
//! the real KEDA operator against a Scaler.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

#[path = "autoscaling_kit.rs"]
mod kit;

use hoist_api::Scaler;
use hoist_api::conditions::{AUTOSCALER_ACTIVE, KEDA_AVAILABLE};
use hoist_tests::keda::scaled_objects;
use hoist_tests::wait;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, Patch, PatchParams, ValidationDirective};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use kit::{LONG, apply_scaler, create_statefulset, env, has_condition, patch_spec};

/// KEDA's CRDs, as `tests/cluster/keda-crds` fetched them.
fn keda_crds() -> Vec<CustomResourceDefinition> {
    let dir = hoist_tests::keda::crd_dir().unwrap().display().to_string();
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            crds.push(serde_yaml::from_str(&text).unwrap());
        }
    }
    assert!(crds.len() >= 4, "KEDA's CRDs in {dir}");
    crds
}

async fn keda_served(client: &Client) -> bool {
    kube::discovery::group(client, "keda.sh")
        .await
        .is_ok_and(|g| {
            g.versioned_resources("v1alpha1")
                .iter()
                .any(|(ar, _)| ar.kind == "ScaledObject")
        })
}

/// The `keda` member with every field set (KEDA's field names).
fn keda_full() -> Value {
    json!({
        "pollingInterval": 5, "cooldownPeriod": 60, "initialCooldownPeriod": 10,
        "idleReplicaCount": 0,
        "fallback": {"failureThreshold": 3, "replicas": 2, "behavior": "currentReplicasIfHigher"},
        "advanced": {
            "restoreToOriginalReplicaCount": true,
            "horizontalPodAutoscalerConfig": {
                "name": "web-keda-hpa",
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 20}}
            },
            "scalingModifiers": {"formula": "(a + b) / 2", "target": "5", "activationTarget": "1", "metricType": "AverageValue"}
        },
        "triggers": [
            {"type": "prometheus", "name": "a",
             "metadata": {"serverAddress": "http://127.0.0.1:9090", "query": "sum(up)", "threshold": "5"},
             "authenticationRef": {"name": "prom-auth", "kind": "ClusterTriggerAuthentication"},
             "metricType": "Value"},
            {"type": "cron", "name": "b",
             "metadata": {"timezone": "Etc/UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "3"}}
        ]
    })
}

#[tokio::test]
async fn scaled_object_with_and_without_keda() {
    let env = env("as-keda").await;
    let ns = &env.ns;
    let client = ns.client.clone();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let keda = keda_crds();

    // Start without KEDA (a reused cluster may have it from an earlier run).
    for crd in &keda {
        let _ = crds.delete(&crd.name_any(), &DeleteParams::default()).await;
    }
    wait::until(LONG, "keda.sh not served", || {
        let client = client.clone();
        async move { Ok(!keda_served(&client).await) }
    })
    .await
    .unwrap();

    create_statefulset(ns, "web", 2).await.unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "replicas": 3, "minReplicas": 0, "maxReplicas": 6,
            "autoscaling": {"keda": keda_full()}
        }),
    )
    .await;
    // Fallback: KEDAAvailable=False, spec.replicas (3) is applied as set.
    let s = kit::wait_scaler(&env, "web", "KEDAAvailable=False and idle at 3", |s| {
        has_condition(s, KEDA_AVAILABLE, "False", "CRDNotServed")
            && has_condition(s, AUTOSCALER_ACTIVE, "False", "KEDAUnavailable")
            && kit::idle_at(s, 3)
    })
    .await;
    assert!(
        kit::condition_message(&s, KEDA_AVAILABLE).contains("keda.sh"),
        "{}",
        kit::condition_message(&s, KEDA_AVAILABLE)
    );
    kit::wait_statefulset_ready(ns, "web", 3).await.unwrap();

    // KEDA installed later: picked up by the same operator process.
    let pid = env.op.pid();
    for crd in &keda {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply(kit::MANAGER).force(),
            &Patch::Apply(crd),
        )
        .await
        .unwrap();
    }
    wait::until(LONG, "keda.sh served", || {
        let client = client.clone();
        async move { Ok(keda_served(&client).await) }
    })
    .await
    .unwrap();
    let scaler = kit::wait_scaler(
        &env,
        "web",
        "KEDAAvailable=True, ScaledObject applied",
        |s| {
            has_condition(s, KEDA_AVAILABLE, "True", "CRDServed")
                && has_condition(s, AUTOSCALER_ACTIVE, "True", "ScaledObjectApplied")
        },
    )
    .await;
    assert_eq!(env.op.pid(), pid, "no restart");

    // The object hoist wrote: GVK, owner, labels, every field.
    let sos = scaled_objects(&client, &ns.name);
    let so = sos.get("web").await.unwrap();
    let types = so.types.clone().unwrap();
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("keda.sh/v1alpha1", "ScaledObject")
    );
    let owner = &so.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Scaler", scaler.uid().unwrap().as_str(), Some(true))
    );
    assert_eq!(so.labels()["hoist.dev/scaler"], "web");
    let spec = &so.data["spec"];
    assert_eq!(
        spec["scaleTargetRef"],
        json!({"apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "name": "web"})
    );
    assert_eq!(
        (
            spec["minReplicaCount"].clone(),
            spec["maxReplicaCount"].clone()
        ),
        (json!(0), json!(6))
    );
    let full = keda_full();
    for key in [
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "advanced",
        "triggers",
    ] {
        assert_eq!(spec[key], full[key], "spec.{key}");
    }
    assert_eq!(spec["fallback"], full["fallback"]);

    // Every variant hoist writes passes KEDA's schema with strict field validation (dry run,
    // so the operator's object is untouched).
    let strict = PatchParams {
        dry_run: true,
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::apply("schema-check").force()
    };
    let minimal = json!({"triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}]});
    for (paused, pin, pout, member) in [
        (false, false, false, keda_full()),
        (true, false, false, minimal.clone()),
        (false, true, true, minimal.clone()),
    ] {
        let mut s: Scaler = scaler.clone();
        s.spec.paused = paused;
        s.spec.pause_scale_in = pin;
        s.spec.pause_scale_out = pout;
        let member = serde_json::from_value(member).unwrap();
        let object = hoist_decide::modes::keda::scaled_object(&s, &member).unwrap();
        sos.patch("web", &strict, &Patch::Apply(&object))
            .await
            .unwrap_or_else(|e| panic!("KEDA's schema rejects {object}: {e}"));
    }

    // KEDA's own writes (label, annotation, status) survive hoist's next apply.
    let keda_pp = PatchParams {
        field_manager: Some("keda".into()),
        ..PatchParams::default()
    };
    sos.patch(
        "web",
        &keda_pp,
        &Patch::Merge(json!({"metadata": {
            "labels": {"scaledobject.keda.sh/name": "web"},
            "annotations": {"keda.sh/from-keda": "yes"}
        }})),
    )
    .await
    .unwrap();
    sos.patch_status(
        "web",
        &keda_pp,
        &Patch::Merge(json!({"status": {
            "hpaName": "keda-hpa-web",
            "conditions": [{"type": "Ready", "status": "True", "reason": "ScaledObjectReady", "message": "ok"}]
        }})),
    )
    .await
    .unwrap();
    patch_spec(ns, "web", json!({"pauseScaleIn": true})).await;
    let so = wait::for_value(LONG, "hoist applied the paused-scale-in annotation", || {
        let sos = sos.clone();
        async move {
            let so = sos.get("web").await?;
            Ok(so
                .annotations()
                .contains_key("autoscaling.keda.sh/paused-scale-in")
                .then_some(so))
        }
    })
    .await
    .unwrap();
    assert_eq!(so.labels()["scaledobject.keda.sh/name"], "web");
    assert_eq!(so.annotations()["keda.sh/from-keda"], "yes");
    assert_eq!(so.data["status"]["hpaName"], "keda-hpa-web");
    patch_spec(ns, "web", json!({"pauseScaleIn": null})).await;
    let so = wait::for_value(LONG, "the paused-scale-in annotation removed", || {
        let sos = sos.clone();
        async move {
            let so = sos.get("web").await?;
            Ok((!so
                .annotations()
                .contains_key("autoscaling.keda.sh/paused-scale-in"))
            .then_some(so))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        so.annotations()["keda.sh/from-keda"],
        "yes",
        "KEDA's annotation kept"
    );
    assert_eq!(
        so.labels()["scaledobject.keda.sh/name"],
        "web",
        "KEDA's label kept"
    );

    // A /scale write as KEDA's HPA makes it: the state machine moves the target.
    kit::set_desired(ns, "web", 5).await.unwrap();
    kit::wait_scaler(&env, "web", "idle at 5", |s| kit::idle_at(s, 5)).await;
    kit::wait_statefulset_ready(ns, "web", 5).await.unwrap();
    // ... and from zero and back (KEDA's 0 ↔ 1 activation writes /scale the same way).
    kit::set_desired(ns, "web", 0).await.unwrap();
    kit::wait_scaler(&env, "web", "idle at 0", |s| kit::idle_at(s, 0)).await;
    kit::set_desired(ns, "web", 1).await.unwrap();
    kit::wait_scaler(&env, "web", "idle at 1", |s| kit::idle_at(s, 1)).await;

    // A hand deletion of the ScaledObject is repaired (the watch reconciles the Scaler).
    sos.delete("web", &DeleteParams::default()).await.unwrap();
    wait::until(LONG, "the ScaledObject re-applied", || {
        let sos = sos.clone();
        async move {
            Ok(sos
                .get_opt("web")
                .await?
                .is_some_and(|o| o.metadata.deletion_timestamp.is_none()))
        }
    })
    .await
    .unwrap();

    // Mode change: the ScaledObject goes, and so do the KEDA conditions.
    kit::switch_to_fixed_and_wait_gone(
        &env,
        "web",
        "keda",
        &sos,
        &[KEDA_AVAILABLE, AUTOSCALER_ACTIVE],
    )
    .await;

    // Scaler deletion: the garbage collector removes the ScaledObject (owner reference).
    apply_scaler(
        ns,
        "other",
        json!({
            "targetRef": kit::sts_ref("ghost"), "maxReplicas": 6,
            "autoscaling": {"keda": {"triggers": [{"type": "cpu", "metadata": {"value": "50"}}]}}
        }),
    )
    .await;
    wait::until(LONG, "the second ScaledObject", || {
        let sos = sos.clone();
        async move { Ok(sos.get_opt("other").await?.is_some()) }
    })
    .await
    .unwrap();
    ns.api::<Scaler>()
        .delete("other", &DeleteParams::default())
        .await
        .unwrap();
    wait::until(LONG, "the ScaledObject collected with its Scaler", || {
        let sos = sos.clone();
        async move { Ok(sos.get_opt("other").await?.is_none()) }
    })
    .await
    .unwrap();
}
