//! The real KEDA drives a Scaler: KEDA's own operator (`keda-operator` v2.20, built from its
//! Go module by `tests/cluster/keda-build`, run against the test control plane) picks up the
//! ScaledObject hoist owns for a `keda`-mode Scaler, activates the Scaler from 0 through its
//! `/scale` while a cron trigger's window is open, and deactivates it to 0 after the cooldown
//! once the window is closed; each time hoist's state machine moves the StatefulSet, and on the
//! way down the trino-drain hook drains the leaving worker before the StatefulSet shrinks.
//!
//! KEDA's metrics adapter is not run, so the HPA KEDA creates has no external metrics (its
//! events say so); activation and deactivation are the operator's own `/scale` writes, which
//! is the path that scales to and from zero.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

#[path = "autoscaling_kit.rs"]
mod kit;

use std::net::IpAddr;

use hoist_api::Scaler;
use hoist_tests::keda::{KedaOperator, install_crds, scaled_objects};
use hoist_tests::operator::{apply_plugin_configmap, plugin_path};
use hoist_tests::scenario::record;
use hoist_tests::trino::TrinoWorker;
use hoist_tests::{Cluster, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt;
use kube::api::{DynamicObject, ListParams};
use serde_json::{Value, json};

use kit::{LONG, apply_scaler, create_statefulset, idle_at, patch_spec};

/// A cron trigger whose window, in UTC minutes of the hour, opens `from` minutes from now and
/// closes `to` minutes from now (negative: in the past).
fn cron_trigger(from: i64, to: i64) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let minute = i64::try_from(now / 60).unwrap();
    let at = |offset: i64| (minute + offset).rem_euclid(60);
    json!({"type": "cron", "metadata": {
        "timezone": "UTC",
        "start": format!("{} * * * *", at(from)),
        "end": format!("{} * * * *", at(to)),
        "desiredReplicas": "1"
    }})
}

fn keda_spec(trigger: &Value) -> Value {
    json!({"pollingInterval": 1, "cooldownPeriod": 3, "triggers": [trigger]})
}

/// Who last wrote the Scaler's `spec.replicas` through `/scale`.
fn scale_writer(s: &Scaler) -> Option<String> {
    s.managed_fields()
        .iter()
        .filter(|m| m.subresource.as_deref() == Some("scale"))
        .find(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
        .and_then(|m| m.manager.clone())
}

/// `Reason: message` of the Events about the object `kind`/`name`, oldest first.
async fn events_about(ns: &hoist_tests::TestNamespace, kind: &str, name: &str) -> Vec<String> {
    let mut events: Vec<Event> = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.involved_object.kind.as_deref() == Some(kind))
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect();
    events.sort_by_key(|e| e.metadata.creation_timestamp.clone());
    events
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.as_deref().unwrap_or_default(),
                e.message.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_keda_activates_and_deactivates_a_scaler_through_the_state_machine() {
    let env = kit::env("keda-real").await;
    let ns = &env.ns;
    install_crds(&ns.client).await.unwrap();
    let keda = KedaOperator::start(Cluster::shared(), &ns.name).unwrap();
    apply_plugin_configmap(ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();

    // From zero: the window is open, so KEDA activates the Scaler (0 → 1).
    create_statefulset(ns, "web", 0).await.unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "replicas": 0, "minReplicas": 0, "maxReplicas": 3,
            "autoscaling": {"keda": keda_spec(&cron_trigger(-1, 30))}
        }),
    )
    .await;
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        panic!(
            "{what}: {e}\nkeda-operator log (tail):\n{}\nhoist log:\n{}",
            keda.log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n"),
            env.op.log()
        )
    };
    let scalers = ns.api::<Scaler>();
    let activated = wait::for_value(LONG, "KEDA activates the Scaler: Idle at 1", || {
        let scalers = scalers.clone();
        async move {
            let s = scalers.get("web").await?;
            Ok(idle_at(&s, 1).then_some(s))
        }
    })
    .await
    .unwrap_or_else(|e| fail("activation", &e));
    assert_eq!(
        scale_writer(&activated).as_deref(),
        Some("keda-operator"),
        "KEDA's operator wrote the Scaler's /scale"
    );
    kit::wait_statefulset_ready(ns, "web", 1).await.unwrap();

    // The ScaledObject hoist owns is the one KEDA works from: Ready and Active.
    let so_api = scaled_objects(&ns.client, &ns.name);
    let condition = |so: &DynamicObject, type_: &str| -> Option<String> {
        so.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == type_)
            .and_then(|c| c["status"].as_str().map(str::to_owned))
    };
    let so = wait::for_value(LONG, "the ScaledObject Ready and Active", || {
        let so_api = so_api.clone();
        async move {
            let so = so_api.get("web").await?;
            let ready = condition(&so, "Ready").as_deref() == Some("True")
                && condition(&so, "Active").as_deref() == Some("True");
            Ok(ready.then_some(so))
        }
    })
    .await
    .unwrap_or_else(|e| fail("ScaledObject status", &e));
    assert_eq!(
        so.labels().get("hoist.dev/scaler").map(String::as_str),
        Some("web")
    );

    // A worker at the pod's IP, and trino-drain for the way down.
    let pod = ns.api::<Pod>().get("web-0").await.unwrap();
    let ip: IpAddr = pod
        .status
        .and_then(|s| s.pod_ip)
        .expect("web-0 has an IP")
        .parse()
        .unwrap();
    let worker = TrinoWorker::start(ip, 0, 2).await.unwrap();
    patch_spec(
        ns,
        "web",
        json!({"hooks": {"plugin": {"configMap": "trino-drain"},
            "config": {"port": worker.addr().port(), "pollIntervalMs": 300}}}),
    )
    .await;
    let sts = record(ns.api::<StatefulSet>(), "web", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    // The window closes: after the cooldown KEDA deactivates the Scaler (1 → 0).
    patch_spec(
        ns,
        "web",
        json!({"autoscaling": {"keda": keda_spec(&cron_trigger(20, 40))}}),
    )
    .await;
    let deactivated = wait::for_value(LONG, "KEDA deactivates the Scaler: Idle at 0", || {
        let scalers = scalers.clone();
        async move {
            let s = scalers.get("web").await?;
            Ok(idle_at(&s, 0).then_some(s))
        }
    })
    .await
    .unwrap_or_else(|e| fail("deactivation", &e));
    // KEDA writes 0 through /scale, where a zero count is omitted from the request
    // (`replicas,omitempty`): no field ownership is recorded, so KEDA's Event tells it.
    assert_eq!(deactivated.spec.replicas, Some(0));
    let keda_events = events_about(ns, "ScaledObject", "web").await;
    assert!(
        keda_events.iter().any(|e| e
            .starts_with("KEDAScaleTargetDeactivated: Deactivated hoist.dev/v1alpha1.Scaler")
            && e.ends_with("from 1 to 0")),
        "{keda_events:#?}"
    );

    // The leaving worker was drained before the StatefulSet went to 0.
    let drained = worker.drained_at().expect("worker web-0 drained");
    let shrunk = sts
        .entries()
        .into_iter()
        .find(|(_, r)| *r == Some(0))
        .map(|(at, _)| at)
        .expect("the StatefulSet went to 0");
    assert!(drained < shrunk, "drained before the StatefulSet shrank");
    let events = events_about(ns, "Scaler", "web").await;
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("OperationStarted: scaling 1 → 0: calling pre-scale")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("OperationSucceeded: scaled 1 → 0")),
        "{events:#?}"
    );
    drop(keda);
}
