//! The real KEDA drives Scalers written as the README writes them (no `spec.replicas`): KEDA
//! v2.20 as a cluster admin installs it (`tests/cluster/keda`: `keda-operator` and
//! `keda-adapter` built from KEDA's Go module, the adapter registered as the external metrics
//! API) against the test control plane.
//!
//! - Activation: KEDA's operator picks up the ScaledObject hoist owns for a `keda`-mode Scaler,
//!   activates the Scaler from 0 through its `/scale` while a cron trigger's window is open,
//!   and deactivates it to 0 after the cooldown once the window is closed.
//! - Metrics: a Prometheus trigger (Debian's Prometheus scraping a gauge the test sets) scales
//!   a Scaler 1 → 3 → 1 through the HPA KEDA creates, which reads the adapter's external
//!   metric; and a plain `hpa`-mode Scaler scales 1 → 3 → 1 from the same kind of external
//!   metric (KEDA's `s0-prometheus` of a ScaledObject of another workload).
//!
//! Every change moves the StatefulSet through hoist's state machine, and on each way down the
//! trino-drain hook drains the leaving workers (fake workers at the pods' IPs) before the
//! StatefulSet shrinks.
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
use hoist_tests::keda::{Keda, scaled_objects};
use hoist_tests::operator::{apply_plugin_configmap, plugin_path};
use hoist_tests::prometheus::{DEMAND_QUERY, Prometheus};
use hoist_tests::scenario::record;
use hoist_tests::trino::{TrinoWorker, pod_ips, start_workers};
use hoist_tests::{Cluster, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
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
    let keda = Keda::in_cluster(Cluster::shared()).unwrap();
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
            "minReplicas": 0, "maxReplicas": 3,
            "autoscaling": {"keda": keda_spec(&cron_trigger(-1, 30))}
        }),
    )
    .await;
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        panic!(
            "{what}: {e}\n{}\nhoist log:\n{}",
            keda.log_tail(),
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
}

/// Demand that asks for 3 replicas at a threshold (average value per replica) of 5.
const DEMAND_FOR_3: f64 = 12.0;

/// The Prometheus trigger both metric tests use: one replica per 5 of demand.
fn prometheus_trigger(prom: &Prometheus) -> Value {
    json!({"type": "prometheus", "metadata": {
        "serverAddress": prom.address(), "query": DEMAND_QUERY, "threshold": "5"}})
}

/// Sets the demand and waits until Prometheus answers it.
async fn demand(prom: &Prometheus, value: f64) {
    prom.set_value(value);
    prom.wait_for(DEMAND_QUERY, value).await.unwrap();
}

/// The Scaler `web` (on a 1-replica StatefulSet, already applied by the caller) is driven by
/// a metric path: demand for 3 takes it 1 → 3, no demand takes it back 3 → 1, and the way
/// down goes through trino-drain, which drains web-1 and web-2 before the StatefulSet shrinks.
async fn up_to_3_and_down_through_the_hook(
    env: &kit::Env,
    prom: &Prometheus,
    keda: &Keda,
    metric_writer: &str,
) {
    let ns = &env.ns;
    let scalers = ns.api::<Scaler>();
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        panic!(
            "{what}: {e}\n{}\nhoist log:\n{}\nPrometheus log:\n{}",
            keda.log_tail(),
            env.op.log(),
            prom.log()
        )
    };
    // Idle at n, with spec.replicas n (the seeded count, or the one the HPA wrote).
    let idle = |n: i32, what: &'static str| {
        let scalers = scalers.clone();
        wait::for_value(LONG, what, move || {
            let scalers = scalers.clone();
            async move {
                let s = scalers.get("web").await?;
                Ok((idle_at(&s, n) && s.spec.replicas == Some(n)).then_some(s))
            }
        })
    };
    idle(1, "adopted at 1 with spec.replicas seeded")
        .await
        .unwrap_or_else(|e| fail("adoption", &e));

    demand(prom, DEMAND_FOR_3).await;
    let up = idle(3, "the metric takes the Scaler to 3")
        .await
        .unwrap_or_else(|e| fail("scale up", &e));
    assert_eq!(
        scale_writer(&up).as_deref(),
        Some(metric_writer),
        "the HPA controller wrote the Scaler's /scale"
    );
    kit::wait_statefulset_ready(ns, "web", 3).await.unwrap();

    let ips = pod_ips(ns, "web").await.unwrap();
    let (port, workers) = start_workers(&ips, &[1, 2], 2).await.unwrap();
    patch_spec(
        ns,
        "web",
        json!({"hooks": {"plugin": {"configMap": "trino-drain"},
            "config": {"port": port, "pollIntervalMs": 300}}}),
    )
    .await;
    let sts = record(ns.api::<StatefulSet>(), "web", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    demand(prom, 0.0).await;
    idle(1, "no demand takes the Scaler back to 1")
        .await
        .unwrap_or_else(|e| fail("scale down", &e));
    let shrunk = sts
        .entries()
        .into_iter()
        .find(|(_, r)| *r == Some(1))
        .map(|(at, _)| at)
        .expect("the StatefulSet went to 1");
    for (ordinal, worker) in &workers {
        let drained = worker
            .drained_at()
            .unwrap_or_else(|| panic!("worker web-{ordinal} drained"));
        assert!(drained < shrunk, "web-{ordinal} drained before the shrink");
    }
    // Events are published after the status that says Idle: wait for the one that counts.
    let succeeded = wait::until(LONG, "the event OperationSucceeded 3 → 1", || async {
        Ok(events_about(ns, "Scaler", "web")
            .await
            .iter()
            .any(|e| e.starts_with("OperationSucceeded: scaled 3 → 1")))
    })
    .await;
    if let Err(e) = succeeded {
        panic!("{e}: {:#?}", events_about(ns, "Scaler", "web").await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_keda_scales_a_scaler_1_to_3_to_1_from_a_prometheus_trigger() {
    let kit::MetricsEnv { env, keda, prom } = kit::metrics_env("keda-prom").await;
    let ns = &env.ns;
    create_statefulset(ns, "web", 1).await.unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "minReplicas": 1, "maxReplicas": 4,
            "autoscaling": {"keda": {"pollingInterval": 1, "cooldownPeriod": 3,
                "triggers": [prometheus_trigger(&prom)]}}
        }),
    )
    .await;
    up_to_3_and_down_through_the_hook(&env, &prom, &keda, "kube-controller-manager").await;
    // The HPA KEDA made reads the adapter's external metric.
    let hpa = ns
        .api::<HorizontalPodAutoscaler>()
        .get("keda-hpa-web")
        .await
        .unwrap();
    let metric = hpa.spec.and_then(|s| s.metrics).unwrap_or_default();
    assert!(
        metric.iter().any(|m| m.type_ == "External"),
        "KEDA's HPA uses an external metric: {metric:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hpa_mode_scaler_scales_1_to_3_to_1_from_an_external_metric() {
    let kit::MetricsEnv { env, keda, prom } = kit::metrics_env("hpa-external").await;
    let ns = &env.ns;
    // A ScaledObject of another workload publishes the external metric `s0-prometheus`.
    create_statefulset(ns, "demand", 1).await.unwrap();
    let so: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "demand"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "demand"},
            "minReplicaCount": 1, "maxReplicaCount": 1, "pollingInterval": 1,
            "triggers": [prometheus_trigger(&prom)]}
    }))
    .unwrap();
    scaled_objects(&ns.client, &ns.name)
        .create(&kube::api::PostParams::default(), &so)
        .await
        .unwrap();

    create_statefulset(ns, "web", 1).await.unwrap();
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "minReplicas": 1, "maxReplicas": 4,
            "autoscaling": {"hpa": {"metrics": [{"type": "External", "external": {
                "metric": {"name": "s0-prometheus",
                    "selector": {"matchLabels": {"scaledobject.keda.sh/name": "demand"}}},
                "target": {"type": "AverageValue", "averageValue": "5"}}}]}}
        }),
    )
    .await;
    up_to_3_and_down_through_the_hook(&env, &prom, &keda, "kube-controller-manager").await;
}
