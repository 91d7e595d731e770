//! The operator when the control plane itself misbehaves: the API server killed and started
//! again (same flags) during Scaling, the API server and etcd stopped (SIGSTOP) and continued
//! during PreScaling. Each test asserts that the operation finishes once the control plane is
//! back, which workers were drained against what was written to the workload, and that status
//! conflicts did not repeat (they back off, and the reconcile continues on the API server's
//! version instead of a stale cache).
//!
//! These tests disturb the cluster every test of this binary shares: they take
//! [`faults::exclusive`] and live in a binary of their own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

use std::time::Duration;

use hoist_api::{Scaler, Stage};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, install_scaler_crd, install_widget_crd,
    plugin_path, widget_resource,
};
use hoist_tests::scenario::{LONG, create_statefulset, is_idle_at, record, set_desired, sts_ref};
use hoist_tests::trino::{pod_ips, start_workers};
use hoist_tests::{Cluster, TestNamespace, faults, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn start(prefix: &str) -> (TestNamespace, Operator) {
    let cluster = Cluster::shared();
    // The test before may have just brought the control plane back.
    faults::wait_recovered(cluster).await.unwrap();
    let ns = cluster.namespace(prefix).await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let op = Operator::start(
        cluster,
        &OperatorOptions {
            extra_args: vec!["--namespace".into(), ns.name.clone()],
            ..OperatorOptions::default()
        },
    )
    .await
    .unwrap();
    (ns, op)
}

async fn scaler(ns: &TestNamespace, name: &str, target: Value, hooks: Value, extra: Value) {
    let mut spec =
        json!({"targetRef": target, "minReplicas": 1, "maxReplicas": 10, "hooks": hooks});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let s: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    ns.api::<Scaler>()
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn wait_for(ns: &TestNamespace, name: &str, what: &str, f: impl Fn(&Scaler) -> bool) {
    let api = ns.api::<Scaler>();
    let f = &f;
    wait::until(LONG, &format!("Scaler {name}: {what}"), || {
        let api = api.clone();
        async move { Ok(api.get(name).await.is_ok_and(|s| f(&s))) }
    })
    .await
    .unwrap();
}

fn stage(s: &Scaler) -> Option<Stage> {
    s.status.as_ref().map(|st| st.stage)
}

fn in_progress(s: &Scaler) -> bool {
    stage(s) == Some(Stage::PreScaling)
        && s.status
            .as_ref()
            .and_then(|st| st.operation.as_ref())
            .is_some_and(|o| o.hook_state.is_some())
}

/// `hoist_reconciles_total{result="conflict"}` of the operator.
async fn conflicts(op: &Operator) -> f64 {
    op.metrics()
        .await
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("hoist_reconciles_total{") && l.contains("result=\"conflict\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_killed_and_restarted_during_scaling() {
    let _only = faults::exclusive().await;
    let cluster = Cluster::shared();
    let (ns, op) = start("fault-restart").await;
    install_widget_crd(&ns.client).await.unwrap();
    apply_plugin_configmap(&ns, "noop", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    let ar = widget_resource();
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let mut w = DynamicObject::new("w", &ar);
    w.data = json!({"spec": {"replicas": 2}});
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let set_status = |n: i64| {
        let widgets = widgets.clone();
        async move {
            widgets
                .patch_status(
                    "w",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"replicas": n}})),
                )
                .await
                .unwrap();
        }
    };
    set_status(2).await;
    scaler(
        &ns,
        "w",
        json!({"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget", "name": "w"}),
        json!({"plugin": {"configMap": "noop"}}),
        json!({}),
    )
    .await;
    wait_for(&ns, "w", "Idle at 2", |s| is_idle_at(s, 2)).await;

    set_desired(&ns, "w", 4).await.unwrap();
    wait_for(&ns, "w", "Scaling", |s| stage(s) == Some(Stage::Scaling)).await;
    faults::kill_and_restart(cluster, "kube-apiserver")
        .await
        .unwrap();
    faults::wait_api_ready(&ns.client).await.unwrap();
    // The widget's "controller" catches up only now, after the restart.
    set_status(4).await;
    wait_for(&ns, "w", "Idle at 4 after the restart", |s| {
        is_idle_at(s, 4)
    })
    .await;
    let n = conflicts(&op).await;
    assert!(
        n <= 5.0,
        "{n} status conflicts after the restart (they must not repeat); log:\n{}",
        op.log()
    );
}

/// A StatefulSet `trino` of 3 with a fake Trino worker on each pod (draining after
/// `polls_to_drain` polls) and a trino-drain Scaler over it, Idle at 3; and a recording of the
/// StatefulSet's `spec.replicas` from then on.
async fn trino_of_3(
    ns: &TestNamespace,
    polls_to_drain: u32,
) -> (
    std::collections::BTreeMap<u32, hoist_tests::trino::TrinoWorker>,
    hoist_tests::scenario::Recording<Option<i32>>,
) {
    apply_plugin_configmap(ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();
    create_statefulset(ns, "trino", 3).await.unwrap();
    let ips = pod_ips(ns, "trino").await.unwrap();
    let (port, workers) = start_workers(&ips, &[0, 1, 2], polls_to_drain)
        .await
        .unwrap();
    scaler(
        ns,
        "trino",
        sts_ref("trino"),
        json!({"plugin": {"configMap": "trino-drain"}, "config": {"port": port, "pollIntervalMs": 300}}),
        json!({}),
    )
    .await;
    wait_for(ns, "trino", "Idle at 3", |s| is_idle_at(s, 3)).await;
    let spec = record(ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;
    (workers, spec)
}

/// A 3 → 1 scale-down through trino-drain while `process` is stopped for a while during
/// PreScaling: the leaving workers, and only they, drain before the StatefulSet shrinks.
async fn pause_during_prescaling(prefix: &str, process: &str) {
    let _only = faults::exclusive().await;
    let cluster = Cluster::shared();
    let (ns, op) = start(prefix).await;
    let (workers, spec) = trino_of_3(&ns, 4).await;

    set_desired(&ns, "trino", 1).await.unwrap();
    wait_for(&ns, "trino", "pre-scale in progress", in_progress).await;
    let paused = faults::pause(cluster, process).unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    paused.resume().unwrap();
    faults::wait_api_ready(&ns.client).await.unwrap();

    wait_for(&ns, "trino", "Idle at 1", |s| is_idle_at(s, 1)).await;
    let changes = spec.entries();
    assert_eq!(
        changes.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        vec![Some(3), Some(1)],
        "log:\n{}",
        op.log()
    );
    for o in [1, 2] {
        let drained = workers[&o].drained_at().expect("drained");
        assert!(
            drained < changes[1].0,
            "the StatefulSet shrank before worker {o} drained"
        );
    }
    assert_eq!(
        workers[&0]
            .history()
            .into_iter()
            .map(|t| t.state)
            .collect::<Vec<_>>(),
        vec!["ACTIVE"],
        "the worker that stays was never asked to drain"
    );
    let n = conflicts(&op).await;
    assert!(n <= 5.0, "{n} status conflicts; log:\n{}", op.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_stopped_during_prescaling() {
    pause_during_prescaling("fault-api-stop", "kube-apiserver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_stopped_during_prescaling() {
    pause_during_prescaling("fault-etcd-stop", "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_stopped_during_scaling() {
    let _only = faults::exclusive().await;
    let cluster = Cluster::shared();
    let (ns, op) = start("fault-api-stop-scaling").await;
    let (workers, spec) = trino_of_3(&ns, 2).await;
    set_desired(&ns, "trino", 1).await.unwrap();
    wait_for(&ns, "trino", "Scaling or later", |s| {
        matches!(stage(s), Some(Stage::Scaling | Stage::PostScaling)) || is_idle_at(s, 1)
    })
    .await;
    let paused = faults::pause(cluster, "kube-apiserver").unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    paused.resume().unwrap();
    faults::wait_api_ready(&ns.client).await.unwrap();
    wait_for(&ns, "trino", "Idle at 1", |s| is_idle_at(s, 1)).await;
    assert_eq!(spec.values(), vec![Some(3), Some(1)], "log:\n{}", op.log());
    for o in [1, 2] {
        assert!(workers[&o].drained_at().is_some(), "worker {o} drained");
    }
    let n = conflicts(&op).await;
    assert!(n <= 5.0, "{n} status conflicts; log:\n{}", op.log());
}
