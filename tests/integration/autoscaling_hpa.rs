//! `hpa` mode on the real control plane: hoist owns an `autoscaling/v2` HPA whose
//! scaleTargetRef is the Scaler; the real HPA controller (kube-controller-manager's
//! horizontal-pod-autoscaler-controller, 2 s sync) writes the Scaler's /scale and the state
//! machine moves the StatefulSet; pauses become Disabled select policies; a mode change deletes
//! the HPA.
//!
//! The Scalers here are written as the README writes them, without `spec.replicas`: hoist seeds
//! it with the workload's count at adoption, so the Scaler's /scale answers the HPA controller.
//! This test's HPA has a CPU metric and the cluster no resource metrics API, so what the real
//! controller does here is enforce its bounds: a Scaler whose `spec.replicas` is above the
//! HPA's `maxReplicas` is written down to it through /scale ("Current number of replicas above
//! Spec.MaxReplicas"). The metric-driven path (an external metric from KEDA's adapter) is
//! `keda_operator.rs`'s.
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
use hoist_tests::wait;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use serde_json::json;

use kit::{LONG, apply_scaler, create_statefulset, env, has_condition, idle_at, patch_spec};

#[tokio::test]
async fn owned_hpa_targets_the_scaler_and_the_real_hpa_controller_writes_its_scale() {
    let env = env("as-hpa").await;
    let ns = &env.ns;
    create_statefulset(ns, "web", 2).await.unwrap();
    let metrics = json!([{
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}
    }]);
    let behavior = json!({"scaleDown": {
        "stabilizationWindowSeconds": 30,
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]
    }});
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "minReplicas": 2, "maxReplicas": 4,
            "autoscaling": {"hpa": {"metrics": metrics, "behavior": behavior}}
        }),
    )
    .await;

    // The owned HPA, every field mapped.
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    let hpa = wait::for_value(LONG, "the owned HPA", || {
        let hpas = hpas.clone();
        async move { Ok(hpas.get_opt("web").await?) }
    })
    .await
    .unwrap();
    let scaler = ns.api::<Scaler>().get("web").await.unwrap();
    let owner = &hpa.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Scaler", "web", Some(true))
    );
    assert_eq!(Some(owner.uid.clone()), scaler.uid());
    assert_eq!(hpa.labels()["hoist.dev/scaler"], "web");
    let spec = hpa.spec.clone().unwrap();
    assert_eq!(
        spec.scale_target_ref.api_version.as_deref(),
        Some("hoist.dev/v1alpha1")
    );
    assert_eq!(
        (
            spec.scale_target_ref.kind.as_str(),
            spec.scale_target_ref.name.as_str()
        ),
        ("Scaler", "web")
    );
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 4));
    assert_eq!(serde_json::to_value(&spec.metrics).unwrap(), metrics);
    let b = spec.behavior.unwrap().scale_down.unwrap();
    assert_eq!(b.stabilization_window_seconds, Some(30));
    assert_eq!(b.policies.unwrap()[0].value, 1);
    kit::wait_scaler(&env, "web", "AutoscalerActive=True", |s| {
        has_condition(
            s,
            AUTOSCALER_ACTIVE,
            "True",
            "HorizontalPodAutoscalerApplied",
        )
    })
    .await;

    // The real HPA controller: a desired count above maxReplicas is written down to 4 through
    // the Scaler's /scale (hoist writes spec.replicas only once, at adoption), and the state machine
    // moves the StatefulSet there.
    patch_spec(ns, "web", json!({"replicas": 7})).await;
    let s = kit::wait_scaler(&env, "web", "the HPA wrote spec.replicas 4", |s| {
        s.spec.replicas == Some(4)
    })
    .await;
    let writer = s
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| {
            m.subresource.as_deref() == Some("scale")
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.to_string().contains("f:replicas"))
        })
        .map(|m| m.manager.unwrap_or_default());
    assert_eq!(
        writer.as_deref(),
        Some("kube-controller-manager"),
        "the /scale writer"
    );
    kit::wait_scaler(&env, "web", "idle at 4", |s| idle_at(s, 4)).await;
    kit::wait_statefulset_ready(ns, "web", 4).await.unwrap();
    // The controller writes the HPA's status after the /scale write it reports.
    wait::until(LONG, "the HPA's status says 4", || {
        let hpas = hpas.clone();
        async move {
            let hpa = hpas.get("web").await?;
            Ok(hpa.status.map(|s| s.desired_replicas) == Some(4))
        }
    })
    .await
    .unwrap();

    // Pauses: the HPA stops recommending that direction.
    patch_spec(ns, "web", json!({"pauseScaleIn": true})).await;
    wait::until(LONG, "scaleDown disabled on the HPA", || {
        let hpas = hpas.clone();
        async move {
            let h = hpas.get("web").await?;
            let b = h.spec.and_then(|s| s.behavior).unwrap_or_default();
            Ok(
                b.scale_down.and_then(|d| d.select_policy).as_deref() == Some("Disabled")
                    && b.scale_up.and_then(|u| u.select_policy).as_deref() != Some("Disabled"),
            )
        }
    })
    .await
    .unwrap();
    patch_spec(ns, "web", json!({"pauseScaleIn": null})).await;
    wait::until(LONG, "scaleDown enabled again, user's window kept", || {
        let hpas = hpas.clone();
        async move {
            let h = hpas.get("web").await?;
            let d = h
                .spec
                .and_then(|s| s.behavior)
                .and_then(|b| b.scale_down)
                .unwrap_or_default();
            Ok(d.select_policy.as_deref() != Some("Disabled")
                && d.stabilization_window_seconds == Some(30))
        }
    })
    .await
    .unwrap();

    // Mode change: the HPA goes, the condition too.
    kit::switch_to_fixed_and_wait_gone(&env, "web", "hpa", &hpas, &[AUTOSCALER_ACTIVE]).await;
}

/// An operator without RBAC for HPAs or `ScaledObject`s (the chart's `rbac.hpa=false`,
/// `rbac.keda=false`) runs with those modes off: their Scalers say so in a condition, keep
/// `spec.replicas`, and nothing is created or watched.
#[tokio::test]
async fn modes_switched_off_say_so_and_create_nothing() {
    let env = kit::env_with("as-off", &["--hpa-mode=false", "--keda-mode=false"]).await;
    let ns = &env.ns;
    create_statefulset(ns, "web", 2).await.unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "replicas": 3, "minReplicas": 1, "maxReplicas": 4,
            "autoscaling": {"hpa": {}}
        }),
    )
    .await;
    let s = kit::wait_scaler(&env, "web", "AutoscalerActive=False, idle at 3", |s| {
        kit::condition(s, AUTOSCALER_ACTIVE).is_some_and(|(st, _)| st == "False") && idle_at(s, 3)
    })
    .await;
    let message = kit::condition_message(&s, AUTOSCALER_ACTIVE);
    assert!(message.contains("hpa mode is off"), "{message}");
    assert!(
        ns.api::<HorizontalPodAutoscaler>()
            .get_opt("web")
            .await
            .unwrap()
            .is_none(),
        "no HPA is created"
    );

    patch_spec(ns, "web", json!({"autoscaling": {"hpa": null, "keda": {
        "triggers": [{"type": "cron", "metadata": {
            "timezone": "UTC", "start": "0 8 * * *", "end": "0 18 * * *", "desiredReplicas": "4"}}]
    }}}))
    .await;
    let s = kit::wait_scaler(&env, "web", "KEDAAvailable=False", |s| {
        has_condition(s, KEDA_AVAILABLE, "False", "CRDNotServed") && idle_at(s, 3)
    })
    .await;
    let message = kit::condition_message(&s, KEDA_AVAILABLE);
    assert!(message.contains("keda mode is off"), "{message}");
    let log = env.op.log();
    assert!(
        !log.contains("forbidden") && !log.contains("WARN"),
        "nothing failed:\n{log}"
    );
}

#[tokio::test]
async fn a_user_s_hpa_of_the_same_name_is_never_taken_over() {
    let env = env("as-hpa-foreign").await;
    let ns = &env.ns;
    create_statefulset(ns, "web", 2).await.unwrap();
    // The user's own HPA, named like the one hoist would own, aimed at the workload itself.
    let theirs: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"},
            "minReplicas": 1, "maxReplicas": 7,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80}}}]
        }
    }))
    .unwrap();
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    hpas.create(&kube::api::PostParams::default(), &theirs)
        .await
        .unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "minReplicas": 2, "maxReplicas": 4,
            "autoscaling": {"hpa": {}}
        }),
    )
    .await;
    let s = kit::wait_scaler(&env, "web", "AutoscalerActive=False, not taken over", |s| {
        has_condition(
            s,
            AUTOSCALER_ACTIVE,
            "False",
            "HorizontalPodAutoscalerApplyFailed",
        ) && kit::condition_message(s, AUTOSCALER_ACTIVE).contains("not owned by this Scaler")
    })
    .await;
    let message = kit::condition_message(&s, AUTOSCALER_ACTIVE);
    assert!(message.contains("not owned by this Scaler"), "{message}");
    let hpa = hpas.get("web").await.unwrap();
    assert!(
        hpa.owner_references().is_empty(),
        "no owner reference added"
    );
    let spec = hpa.spec.unwrap();
    assert_eq!(
        (spec.max_replicas, spec.scale_target_ref.kind.as_str()),
        (7, "StatefulSet"),
        "the user's HPA is unchanged"
    );
    // Switching to fixed deletes only what hoist owns: the user's HPA stays.
    patch_spec(
        ns,
        "web",
        json!({"autoscaling": {"hpa": null, "fixed": {}}}),
    )
    .await;
    kit::wait_scaler(&env, "web", "fixed mode", |s| {
        kit::condition(s, AUTOSCALER_ACTIVE).is_none()
    })
    .await;
    assert!(hpas.get_opt("web").await.unwrap().is_some());
}
