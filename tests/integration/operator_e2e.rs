//! End to end: the real `hoist run` binary against the real control plane (tests/cluster),
//! with hook peers that are real HTTP servers on the pods' loopback IPs.
//!
//! Each test works in a namespace of its own and starts its own operator with
//! `--namespace <that namespace>`, so tests run in parallel over one cluster without one
//! test's operator touching another test's Scalers (and a test can kill its operator).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use hoist_api::{Scaler, Stage};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_configmap, apply_plugin_configmap, install_scaler_crd,
    install_widget_crd, plugin_path, widget_resource,
};
use hoist_tests::scenario::{
    LONG, create_statefulset, is_idle_at, record, set_desired, sts_ref, wait_statefulset_ready,
};
use hoist_tests::trino::{TrinoWorker, pod_ips, start_workers};
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Kit
// ---------------------------------------------------------------------------------------

/// A namespace with the CRD installed and an operator watching only it.
struct Env {
    ns: TestNamespace,
    op: Operator,
}

fn plugin_cache() -> PathBuf {
    // One cache per test process: plugins are compiled once and shared (writes are atomic).
    Cluster::shared()
        .dir()
        .join(format!("plugin-cache-e2e-{}", std::process::id()))
}

fn scoped_options(ns: &str) -> OperatorOptions {
    OperatorOptions {
        plugin_cache_dir: Some(plugin_cache()),
        extra_args: vec!["--namespace".into(), ns.into()],
        ..OperatorOptions::default()
    }
}

async fn start_operator(ns: &str) -> Operator {
    Operator::start(Cluster::shared(), &scoped_options(ns))
        .await
        .expect("hoist run starts")
}

async fn env(prefix: &str) -> Env {
    let cluster = Cluster::shared();
    let ns = cluster.namespace(prefix).await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let op = start_operator(&ns.name).await;
    Env { ns, op }
}

fn trino_hooks(config_map: &str, port: u16) -> Value {
    json!({"plugin": {"configMap": config_map}, "config": {"port": port, "pollIntervalMs": 300}})
}

async fn create_scaler(
    ns: &TestNamespace,
    name: &str,
    target: Value,
    hooks: Option<Value>,
    extra: Value,
) {
    let mut spec = json!({"targetRef": target, "minReplicas": 1, "maxReplicas": 10});
    if let Some(h) = hooks {
        spec["hooks"] = h;
    }
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    ns.api::<Scaler>()
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
}

async fn wait_scaler(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    check: impl Fn(&Scaler) -> bool,
) -> Scaler {
    let api = ns.api::<Scaler>();
    let check = &check;
    wait::for_value(LONG, &format!("Scaler {name}: {what}"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            Ok(check(&s).then_some(s))
        }
    })
    .await
    .unwrap()
}

/// The stages of one operation from Idle back to Idle, as a watch on the Scaler sees them.
const WHOLE_OPERATION: [Option<Stage>; 5] = [
    Some(Stage::Idle),
    Some(Stage::PreScaling),
    Some(Stage::Scaling),
    Some(Stage::PostScaling),
    Some(Stage::Idle),
];

fn stage(s: &Scaler) -> Option<Stage> {
    s.status.as_ref().map(|st| st.stage)
}

fn op_id(s: &Scaler) -> Option<String> {
    s.status
        .as_ref()
        .and_then(|st| st.operation.as_ref())
        .map(|o| o.id.clone())
}

async fn wait_idle_at(ns: &TestNamespace, name: &str, replicas: i32) -> Scaler {
    wait_scaler(ns, name, &format!("Idle at {replicas}"), |s| {
        is_idle_at(s, replicas)
    })
    .await
}

async fn sts_spec_replicas(ns: &TestNamespace, name: &str) -> Option<i32> {
    ns.api::<StatefulSet>()
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
}

/// The Events about Scaler `scaler`.
async fn scaler_events(ns: &TestNamespace, scaler: &str) -> Vec<Event> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some("Scaler")
                && e.involved_object.name.as_deref() == Some(scaler)
        })
        .collect()
}

/// Reasons of the Events about a Scaler, oldest first.
async fn event_reasons(ns: &TestNamespace, scaler: &str) -> Vec<String> {
    let mut events = scaler_events(ns, scaler).await;
    events.sort_by_key(|e| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    });
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

fn assert_in_order(haystack: &[String], needles: &[&str]) {
    let mut at = 0;
    for n in needles {
        match haystack[at..].iter().position(|h| h == n) {
            Some(i) => at += i + 1,
            None => panic!("event {n} missing or out of order in {haystack:?}"),
        }
    }
}

/// Sum of the samples of `family` whose label set contains every `labels` pair.
fn metric(text: &str, family: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r),
                None => (name_labels, ""),
            };
            if name != family {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn plugin_digest_hex(ns: &TestNamespace, config_map: &str) -> String {
    ns.api::<ConfigMap>()
        .get(config_map)
        .await
        .unwrap()
        .annotations()
        .get("hoist.dev/plugin-sha256")
        .cloned()
        .expect("hoist plugin pack annotates the digest")
}

fn op_digest(s: &Scaler) -> Option<String> {
    s.status
        .as_ref()
        .and_then(|st| st.operation.as_ref())
        .and_then(|o| o.plugin_digest.clone())
}

fn hook_in_progress(s: &Scaler) -> bool {
    stage(s) == Some(Stage::PreScaling)
        && s.status
            .as_ref()
            .and_then(|st| st.operation.as_ref())
            .is_some_and(|o| o.hook_state.is_some())
}

/// A StatefulSet of `n` with trino-drain workers on every pod, a Scaler over it (Idle at n).
struct TrinoSetup {
    workers: BTreeMap<u32, TrinoWorker>,
    port: u16,
}

async fn trino_setup(e: &Env, name: &str, n: i32, polls_to_drain: u32) -> TrinoSetup {
    apply_plugin_configmap(&e.ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();
    create_statefulset(&e.ns, name, n).await.unwrap();
    let ips = pod_ips(&e.ns, name).await.unwrap();
    let ordinals: Vec<u32> = ips.keys().copied().collect();
    let (port, workers) = start_workers(&ips, &ordinals, polls_to_drain)
        .await
        .unwrap();
    create_scaler(
        &e.ns,
        name,
        sts_ref(name),
        Some(trino_hooks("trino-drain", port)),
        json!({}),
    )
    .await;
    wait_idle_at(&e.ns, name, n).await;
    TrinoSetup { workers, port }
}

fn states(w: &TrinoWorker) -> Vec<String> {
    w.history().into_iter().map(|t| t.state).collect()
}

// ---------------------------------------------------------------------------------------
// 1. Scale down through trino-drain
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_drains_leaving_workers_before_the_statefulset_shrinks() {
    let e = env("e2e-down").await;
    let t = trino_setup(&e, "trino", 3, 3).await;
    let stages = record(e.ns.api::<Scaler>(), "trino", stage).await;
    let spec = record(e.ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    set_desired(&e.ns, "trino", 1).await.unwrap();
    wait_idle_at(&e.ns, "trino", 1).await;
    wait_statefulset_ready(&e.ns, "trino", 1).await.unwrap();

    assert_eq!(
        stages.values(),
        WHOLE_OPERATION,
        "operator log:\n{}",
        e.op.log()
    );
    assert_in_order(
        &event_reasons(&e.ns, "trino").await,
        &[
            "Adopted",
            "OperationStarted",
            "Scaling",
            "Scaled",
            "OperationSucceeded",
        ],
    );
    // The StatefulSet's spec went 3 → 1 once, after both leaving workers reported DRAINED.
    let changes = spec.entries();
    assert_eq!(
        changes.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        vec![Some(3), Some(1)]
    );
    let shrunk_at = changes[1].0;
    for o in [1, 2] {
        let drained = t.workers[&o]
            .drained_at()
            .unwrap_or_else(|| panic!("worker {o} never drained: {:?}", t.workers[&o].history()));
        assert!(
            drained < shrunk_at,
            "worker {o} drained after the StatefulSet shrank"
        );
    }
    assert_eq!(
        states(&t.workers[&0]),
        vec!["ACTIVE"],
        "the staying worker is untouched"
    );
}

// ---------------------------------------------------------------------------------------
// 2. Scale up with a hook that only works on scale-down
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_passes_through_a_scale_down_only_hook() {
    let e = env("e2e-up").await;
    let t = trino_setup(&e, "trino", 1, 3).await;
    let stages = record(e.ns.api::<Scaler>(), "trino", stage).await;
    set_desired(&e.ns, "trino", 3).await.unwrap();
    wait_idle_at(&e.ns, "trino", 3).await;
    wait_statefulset_ready(&e.ns, "trino", 3).await.unwrap();
    assert_eq!(stages.values(), WHOLE_OPERATION);
    assert_eq!(states(&t.workers[&0]), vec!["ACTIVE"]);
    assert_eq!(t.port, t.workers[&0].addr().port());
}

// ---------------------------------------------------------------------------------------
// 3. A failing hook: Failed with the reason, on-failure ran, retry completes; telemetry
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_hook_runs_on_failure_and_retry_completes() {
    let mut e = env("e2e-fail").await;
    apply_plugin_configmap(&e.ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();
    create_statefulset(&e.ns, "trino", 3).await.unwrap();
    let ips = pod_ips(&e.ns, "trino").await.unwrap();
    // No worker answers at trino-1's IP: draining it fails after trino-2 (pods-removed is
    // highest ordinal first) was asked to drain.
    let (port, mut workers) = start_workers(&ips, &[0, 2], 2).await.unwrap();
    create_scaler(
        &e.ns,
        "trino",
        sts_ref("trino"),
        Some(trino_hooks("trino-drain", port)),
        json!({}),
    )
    .await;
    wait_idle_at(&e.ns, "trino", 3).await;

    set_desired(&e.ns, "trino", 1).await.unwrap();
    let failed = wait_scaler(&e.ns, "trino", "Failed with on-failure run", |s| {
        stage(s) == Some(Stage::Failed)
            && s.status
                .as_ref()
                .and_then(|st| st.failure.as_ref())
                .is_some_and(|f| f.on_failure != hoist_api::OnFailure::Pending)
    })
    .await;
    let failure = failed.status.unwrap().failure.unwrap();
    assert_eq!(failure.stage, Stage::PreScaling);
    assert!(
        failure.message.contains(&ips[&1].to_string()),
        "status.failure names the unreachable worker: {failure:?}"
    );
    // on-failure put the worker that had been asked to drain back to ACTIVE.
    assert_eq!(
        states(&workers[&2]),
        vec!["ACTIVE", "DRAINING", "ACTIVE"],
        "operator log:\n{}",
        e.op.log()
    );
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(3));
    assert!(
        event_reasons(&e.ns, "trino")
            .await
            .iter()
            .any(|r| r == "OperationFailed")
    );

    // Make the cause go away, then ask for a retry.
    let w1 = TrinoWorker::start(ips[&1], port, 2).await.unwrap();
    workers.insert(1, w1);
    e.ns.api::<Scaler>()
        .patch(
            "trino",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"hoist.dev/retry": "true"}}})),
        )
        .await
        .unwrap();
    let done = wait_idle_at(&e.ns, "trino", 1).await;
    assert!(
        !done.annotations().contains_key("hoist.dev/retry"),
        "the operator removes the retry annotation"
    );
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(1));
    assert!(workers[&1].drained_at().is_some() && workers[&2].drained_at().is_some());

    // Telemetry after this run: every family the issue lists, populated.
    assert_eq!(e.op.get("/healthz").await.unwrap().0, 200);
    assert_eq!(
        e.op.get("/readyz").await.unwrap(),
        (200, "leading; caches synced".into())
    );
    let m = e.op.metrics().await.unwrap();
    assert!(
        metric(&m, "hoist_reconciles_total", &[("result", "ok")]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "hoist_stage_transitions_total",
            &[("from", "PreScaling"), ("to", "Failed")]
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "hoist_stage_transitions_total",
            &[("from", "PostScaling"), ("to", "Idle")]
        ) >= 1.0,
        "{m}"
    );
    for outcome in ["failed", "in_progress", "done"] {
        assert!(
            metric(
                &m,
                "hoist_hook_calls_total",
                &[("hook", "pre-scale"), ("outcome", outcome)]
            ) >= 1.0,
            "pre-scale {outcome}: {m}"
        );
    }
    assert!(
        metric(&m, "hoist_hook_calls_total", &[("hook", "on-failure")]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(
            &m,
            "hoist_hook_duration_seconds_count",
            &[("hook", "pre-scale")]
        ) >= 3.0,
        "{m}"
    );
    assert!(m.contains("hoist_hook_duration_seconds_bucket{"), "{m}");
    assert!(
        metric(&m, "hoist_plugin_loads_total", &[("result", "ok")]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "hoist_failures_total", &[("stage", "PreScaling")]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "hoist_kube_requests_total", &[("method", "PATCH")]) >= 1.0,
        "{m}"
    );

    // Graceful shutdown.
    assert_eq!(
        e.op.terminate(Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
}

// ---------------------------------------------------------------------------------------
// 4. A desired change during PreScaling is kept as pendingReplicas and served afterwards
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_change_during_prescaling_is_pending_then_served() {
    let e = env("e2e-pending").await;
    let t = trino_setup(&e, "trino", 3, 8).await;
    let ops = record(e.ns.api::<Scaler>(), "trino", |s: &Scaler| {
        let st = s.status.clone().unwrap_or_default();
        (
            st.stage,
            st.operation.map(|o| (o.id, o.to)),
            st.pending_replicas,
        )
    })
    .await;
    let spec = record(e.ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    set_desired(&e.ns, "trino", 1).await.unwrap();
    let first = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    let first_id = op_id(&first).unwrap();
    set_desired(&e.ns, "trino", 2).await.unwrap();
    let pending = wait_scaler(&e.ns, "trino", "pendingReplicas 2", |s| {
        s.status.as_ref().and_then(|st| st.pending_replicas) == Some(2)
    })
    .await;
    let op = pending.status.unwrap().operation.unwrap();
    assert_eq!(
        (op.id.as_str(), op.to),
        (first_id.as_str(), 1),
        "the in-flight operation is unchanged"
    );

    wait_idle_at(&e.ns, "trino", 2).await;
    wait_statefulset_ready(&e.ns, "trino", 2).await.unwrap();
    for (_, op, _) in ops.values() {
        if let Some((id, to)) = op
            && id == first_id
        {
            assert_eq!(to, 1, "operation {id} kept its frozen `to`");
        }
    }
    assert!(
        ops.values().iter().any(|(_, op, _)| op
            .as_ref()
            .is_some_and(|(id, to)| *id != first_id && *to == 2)),
        "the pending count was served by a second operation: {:?}",
        ops.values()
    );
    assert_eq!(
        spec.values(),
        vec![Some(3), Some(1), Some(2)],
        "served after the first operation finished"
    );
    assert!(t.workers[&1].drained_at().is_some() && t.workers[&2].drained_at().is_some());
}

// ---------------------------------------------------------------------------------------
// 5. The operator killed mid-operation: a new process resumes the same operation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_prescaling_a_new_operator_resumes_the_same_operation() {
    let mut e = env("e2e-kill-pre").await;
    let t = trino_setup(&e, "trino", 3, 10).await;
    let ids = record(e.ns.api::<Scaler>(), "trino", op_id).await;
    let spec = record(e.ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    set_desired(&e.ns, "trino", 1).await.unwrap();
    let s = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    let id = op_id(&s).unwrap();
    e.op.kill_hard().unwrap();
    assert_eq!(t.workers[&1].state(), "DRAINING");
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(3));

    let op2 = start_operator(&e.ns.name).await;
    wait_idle_at(&e.ns, "trino", 1).await;
    let seen: Vec<String> = ids.values().into_iter().flatten().collect();
    assert!(
        seen.iter().all(|i| *i == id),
        "one operation throughout: {seen:?}\nnew operator log:\n{}",
        op2.log()
    );
    let changes = spec.entries();
    assert_eq!(
        changes.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        vec![Some(3), Some(1)]
    );
    for o in [1, 2] {
        let drained = t.workers[&o].drained_at().expect("drained");
        assert!(
            drained < changes[1].0,
            "the StatefulSet shrank before worker {o} drained"
        );
    }
}

async fn set_widget_status(api: &Api<DynamicObject>, name: &str, replicas: i64) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": replicas}})),
    )
    .await
    .unwrap();
}

/// A Widget `w` (no controller: the test sets its status) at 2 replicas, and a Scaler `w`
/// over it with `hooks` and `extra` spec fields, Idle at 2.
async fn widget_at_2(e: &Env, hooks: Option<Value>, extra: Value) -> Api<DynamicObject> {
    install_widget_crd(&e.ns.client).await.unwrap();
    let ar = widget_resource();
    let widgets: Api<DynamicObject> = Api::namespaced_with(e.ns.client.clone(), &e.ns.name, &ar);
    let mut w = DynamicObject::new("w", &ar);
    w.data = json!({"spec": {"replicas": 2}});
    widgets.create(&PostParams::default(), &w).await.unwrap();
    set_widget_status(&widgets, "w", 2).await;
    create_scaler(
        &e.ns,
        "w",
        json!({"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget", "name": "w"}),
        hooks,
        extra,
    )
    .await;
    wait_idle_at(&e.ns, "w", 2).await;
    widgets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_in_scaling_a_new_operator_resumes_the_same_operation() {
    let mut e = env("e2e-kill-scaling").await;
    let widgets = widget_at_2(&e, None, json!({})).await;
    let ids = record(e.ns.api::<Scaler>(), "w", op_id).await;

    // The widget's "controller" (this test) has not caught up: Scaling waits.
    set_desired(&e.ns, "w", 4).await.unwrap();
    let s = wait_scaler(&e.ns, "w", "Scaling", |s| stage(s) == Some(Stage::Scaling)).await;
    let id = op_id(&s).unwrap();
    assert_eq!(
        widgets.get("w").await.unwrap().data["spec"]["replicas"],
        json!(4)
    );
    e.op.kill_hard().unwrap();

    let op2 = start_operator(&e.ns.name).await;
    // The new process has looked at the Scaler at least once and kept it in Scaling.
    wait::until(LONG, "the new operator reconciled", || {
        let op2 = &op2;
        async move { Ok(metric(&op2.metrics().await?, "hoist_reconciles_total", &[]) >= 1.0) }
    })
    .await
    .unwrap();
    let s = e.ns.api::<Scaler>().get("w").await.unwrap();
    assert_eq!(
        (stage(&s), op_id(&s)),
        (Some(Stage::Scaling), Some(id.clone()))
    );

    set_widget_status(&widgets, "w", 4).await;
    wait_idle_at(&e.ns, "w", 4).await;
    let seen: Vec<String> = ids.values().into_iter().flatten().collect();
    assert!(
        !seen.is_empty() && seen.iter().all(|i| *i == id),
        "one operation throughout: {seen:?}"
    );

    // The Widget kind is watched, found at run time from the Scaler's targetRef, not only
    // polled: the watch saw the Widget.
    wait::until(LONG, "the new operator watches Widgets", || {
        let op2 = &op2;
        async move {
            let m = op2.metrics().await?;
            Ok(
                (metric(&m, "hoist_watched_target_kinds", &[]) - 1.0).abs() < 0.5
                    && metric(
                        &m,
                        "hoist_target_watch_events_total",
                        &[("kind", "fixtures.hoist.dev/v1 Widget")],
                    ) >= 1.0,
            )
        }
    })
    .await
    .unwrap_or_else(|err| panic!("{err:#}\noperator log:\n{}", op2.log()));
    assert!(
        op2.log().contains("watching a kind Scalers target"),
        "{}",
        op2.log()
    );
}

// ---------------------------------------------------------------------------------------
// 6. Plugin hot swap during an operation
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_swap_mid_operation_keeps_the_old_digest_until_the_next_one() {
    let e = env("e2e-swap").await;
    let t = trino_setup(&e, "trino", 3, 10).await;
    let old = plugin_digest_hex(&e.ns, "trino-drain").await;
    let digests = record(e.ns.api::<Scaler>(), "trino", |s: &Scaler| {
        (op_id(s), op_digest(s))
    })
    .await;

    set_desired(&e.ns, "trino", 2).await.unwrap();
    let s = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    let first_id = op_id(&s).unwrap();
    // Swap the ConfigMap's plugin for another build (the noop fixture) while draining.
    apply_plugin_configmap(&e.ns, "trino-drain", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    let new = plugin_digest_hex(&e.ns, "trino-drain").await;
    assert_ne!(old, new);
    let now = e.ns.api::<Scaler>().get("trino").await.unwrap();
    assert_eq!(
        op_id(&now).as_deref(),
        Some(first_id.as_str()),
        "the swap landed while the operation was in flight"
    );

    wait_idle_at(&e.ns, "trino", 2).await;
    assert!(
        t.workers[&2].drained_at().is_some(),
        "the old plugin drained"
    );
    set_desired(&e.ns, "trino", 1).await.unwrap();
    wait_idle_at(&e.ns, "trino", 1).await;

    let seen = digests.values();
    for (id, digest) in &seen {
        let (Some(id), Some(digest)) = (id, digest) else {
            continue;
        };
        if *id == first_id {
            assert!(
                digest.ends_with(&old),
                "in-flight op on the old plugin: {seen:?}"
            );
        } else {
            assert!(
                digest.ends_with(&new),
                "the next op on the new plugin: {seen:?}"
            );
        }
    }
    assert!(
        seen.iter()
            .any(|(id, d)| id.as_ref().is_some_and(|i| *i != first_id) && d.is_some()),
        "a second operation was recorded: {seen:?}"
    );
    // The noop build does not drain: the second leaving worker was never asked.
    assert_eq!(states(&t.workers[&1]), vec!["ACTIVE"]);
}

// ---------------------------------------------------------------------------------------
// 7. A broken plugin affects only its own Scaler
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_plugin_blocks_only_its_own_scaler() {
    let e = env("e2e-broken").await;
    let garbage: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "broken", "labels": {"hoist.dev/plugin": "true"}},
        "binaryData": {"plugin.wasm": "bm90IGEgd2FzbSBjb21wb25lbnQgYXQgYWxs"}
    }))
    .unwrap();
    apply_configmap(&e.ns, "broken", &garbage).await.unwrap();
    apply_plugin_configmap(&e.ns, "noop", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    create_statefulset(&e.ns, "a", 2).await.unwrap();
    create_statefulset(&e.ns, "b", 2).await.unwrap();
    let hooks = |cm: &str| json!({"plugin": {"configMap": cm}});
    create_scaler(&e.ns, "bad", sts_ref("a"), Some(hooks("broken")), json!({})).await;
    create_scaler(&e.ns, "good", sts_ref("b"), Some(hooks("noop")), json!({})).await;

    let bad = wait_scaler(&e.ns, "bad", "HooksReady=False", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions.iter().any(|c| {
                c.type_ == "HooksReady" && c.status == "False" && c.reason == "PluginInvalid"
            })
        })
    })
    .await;
    let cond = bad
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "HooksReady")
        .unwrap();
    assert!(cond.message.contains("broken"), "{cond:?}");

    wait_idle_at(&e.ns, "good", 2).await;
    set_desired(&e.ns, "bad", 1).await.unwrap();
    set_desired(&e.ns, "good", 1).await.unwrap();
    wait_idle_at(&e.ns, "good", 1).await;
    wait_statefulset_ready(&e.ns, "b", 1).await.unwrap();
    let bad = e.ns.api::<Scaler>().get("bad").await.unwrap();
    assert_eq!(
        stage(&bad),
        Some(Stage::Idle),
        "no operation starts with a broken plugin"
    );
    assert_eq!(sts_spec_replicas(&e.ns, "a").await, Some(2));
}

// ---------------------------------------------------------------------------------------
// 8. Adoption changes nothing
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_a_running_statefulset_changes_nothing() {
    let e = env("e2e-adopt").await;
    create_statefulset(&e.ns, "five", 5).await.unwrap();
    let before = e.ns.api::<StatefulSet>().get("five").await.unwrap();
    create_scaler(&e.ns, "five", sts_ref("five"), None, json!({})).await;
    wait_idle_at(&e.ns, "five", 5).await;
    // Let it reconcile the adopted Scaler again (adoption requeues at once).
    wait::until(LONG, "two reconciles", || {
        let op = &e.op;
        async move { Ok(metric(&op.metrics().await?, "hoist_reconciles_total", &[]) >= 2.0) }
    })
    .await
    .unwrap();
    let after = e.ns.api::<StatefulSet>().get("five").await.unwrap();
    assert_eq!(after.metadata.generation, before.metadata.generation);
    assert_eq!(after.spec, before.spec);
    let m = e.op.metrics().await.unwrap();
    assert!(metric(&m, "hoist_scale_writes_total", &[]) < 0.5, "{m}");
    let s = e.ns.api::<Scaler>().get("five").await.unwrap();
    assert_eq!(
        s.spec.replicas,
        Some(5),
        "the Scaler's spec.replicas is seeded with the workload's count"
    );
    assert!(
        s.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("hoist-adoption")),
        "seeded by hoist's adoption field manager"
    );
}

// ---------------------------------------------------------------------------------------
// Leader election: two operators, one acts
// ---------------------------------------------------------------------------------------

async fn is_leader(op: &Operator) -> bool {
    op.metrics()
        .await
        .is_ok_and(|m| metric(&m, "hoist_leader", &[]) >= 1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_only_one_operator_acts() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("e2e-leader").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let opts = |id: &str| OperatorOptions {
        leader_elect: true,
        lease_name: Some("hoist-e2e".into()),
        lease_namespace: Some(ns.name.clone()),
        identity: Some(id.into()),
        ..scoped_options(&ns.name)
    };
    let mut a = Operator::start(cluster, &opts("a")).await.unwrap();
    wait::until(LONG, "a leads", || async { Ok(is_leader(&a).await) })
        .await
        .unwrap();
    let b = Operator::start(cluster, &opts("b")).await.unwrap();

    create_statefulset(&ns, "web", 2).await.unwrap();
    create_scaler(&ns, "web", sts_ref("web"), None, json!({})).await;
    wait_idle_at(&ns, "web", 2).await;
    set_desired(&ns, "web", 1).await.unwrap();
    wait_idle_at(&ns, "web", 1).await;
    assert!(!is_leader(&b).await);
    // Both are ready: the standby to take over, the leader with its caches synced.
    assert_eq!(b.get("/readyz").await.unwrap(), (200, "standby".into()));
    assert_eq!(
        a.get("/readyz").await.unwrap(),
        (200, "leading; caches synced".into())
    );
    assert!(a.log().contains("wrote target replicas"));
    assert!(
        !b.log().contains("wrote target replicas") && !b.log().contains("stage"),
        "the standby acted:\n{}",
        b.log()
    );

    // The leader dies without releasing the lease: the standby takes over once it expires.
    a.kill_hard().unwrap();
    wait::until(LONG, "b leads", || async { Ok(is_leader(&b).await) })
        .await
        .unwrap();
    set_desired(&ns, "web", 2).await.unwrap();
    wait_idle_at(&ns, "web", 2).await;
    assert!(b.log().contains("wrote target replicas"));
}

// ---------------------------------------------------------------------------------------
// Deployment: the pods the hook prepared are the ones removed
// ---------------------------------------------------------------------------------------

/// A Deployment `trino` of 4 pods, a fake Trino worker on each pod's IP (by pod name), and a
/// trino-drain Scaler over it with `extra` spec fields. Returns the pod API and the workers.
async fn deployment_with_workers(
    e: &Env,
    polls_to_drain: u32,
    extra: Value,
) -> (Api<Pod>, BTreeMap<String, TrinoWorker>) {
    apply_plugin_configmap(&e.ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "trino"},
        "spec": {
            "replicas": 4,
            "selector": {"matchLabels": {"app": "trino"}},
            "template": {
                "metadata": {"labels": {"app": "trino"}},
                "spec": {"containers": [{"name": "worker", "image": "trinodb/trino"}]}
            }
        }
    }))
    .unwrap();
    e.ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
    let pods = e.ns.api::<Pod>();
    let by_name: BTreeMap<String, IpAddr> =
        wait::for_value(LONG, "4 running pods with IPs", || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=trino"))
                    .await?;
                let ips: BTreeMap<String, IpAddr> = list
                    .items
                    .iter()
                    .filter_map(|p| {
                        Some((
                            p.name_any(),
                            p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?,
                        ))
                    })
                    .collect();
                Ok((ips.len() == 4 && list.items.len() == 4).then_some(ips))
            }
        })
        .await
        .unwrap();
    let mut port = 0;
    let mut workers = BTreeMap::new();
    for (name, ip) in &by_name {
        let w = TrinoWorker::start(*ip, port, polls_to_drain).await.unwrap();
        port = w.addr().port();
        workers.insert(name.clone(), w);
    }
    create_scaler(
        &e.ns,
        "trino",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "trino"}),
        Some(trino_hooks("trino-drain", port)),
        extra,
    )
    .await;
    (pods, workers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_scale_down_removes_the_pods_the_hook_drained() {
    let e = env("e2e-deploy").await;
    let (pods, workers) = deployment_with_workers(&e, 2, json!({})).await;
    wait_idle_at(&e.ns, "trino", 4).await;
    set_desired(&e.ns, "trino", 2).await.unwrap();
    wait_idle_at(&e.ns, "trino", 2).await;

    let drained: Vec<&String> = workers
        .iter()
        .filter(|(_, w)| w.drained_at().is_some())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(drained.len(), 2, "two workers drained: {workers:?}");
    let remaining: Vec<String> = wait::for_value(LONG, "2 pods left", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=trino"))
                .await?;
            let live: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(ResourceExt::name_any)
                .collect();
            Ok((list.items.len() == 2).then_some(live))
        }
    })
    .await
    .unwrap();
    for name in drained {
        assert!(
            !remaining.contains(name),
            "drained pod {name} was kept; remaining {remaining:?}"
        );
    }
    for name in &remaining {
        assert_eq!(states(&workers[name]), vec!["ACTIVE"], "{name} untouched");
    }
}

// ---------------------------------------------------------------------------------------
// 10. Reconcile v2: faults around the protocol (each asserts which pods were drained
//     against what was written to the workload)
// ---------------------------------------------------------------------------------------

fn failure_reason(s: &Scaler) -> Option<String> {
    s.status
        .as_ref()
        .and_then(|st| st.failure.as_ref())
        .map(|f| f.reason.clone())
}

fn on_failure_settled(s: &Scaler) -> bool {
    s.status
        .as_ref()
        .and_then(|st| st.failure.as_ref())
        .is_some_and(|f| f.on_failure != hoist_api::OnFailure::Pending)
}

/// `states` of a worker, from the first DRAINING on (what the operation did to it).
fn drained_then(w: &TrinoWorker) -> Vec<String> {
    let s = states(w);
    let from = s.iter().position(|x| x == "DRAINING").unwrap_or(s.len());
    s[from..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_scaler_mid_operation_undoes_the_drain_then_lets_go() {
    let e = env("e2e-delete").await;
    // The drain never finishes: the operation is in PreScaling when the Scaler is deleted.
    let t = trino_setup(&e, "trino", 3, 100_000).await;
    set_desired(&e.ns, "trino", 1).await.unwrap();
    let s = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    assert!(
        s.finalizers().iter().any(|f| f == hoist_api::FINALIZER),
        "the finalizer is held while the operation is in flight: {:?}",
        s.finalizers()
    );
    assert_eq!(t.workers[&2].state(), "DRAINING");

    e.ns.api::<Scaler>()
        .delete("trino", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let api = e.ns.api::<Scaler>();
    wait::until(LONG, "the deleted Scaler to be gone", || {
        let api = api.clone();
        async move { Ok(api.get_opt("trino").await?.is_none()) }
    })
    .await
    .unwrap();
    for o in [1, 2] {
        assert_eq!(
            drained_then(&t.workers[&o]),
            vec!["DRAINING", "ACTIVE"],
            "on-failure put worker {o} back before the finalizer went; log:\n{}",
            e.op.log()
        );
    }
    assert_eq!(t.workers[&0].state(), "ACTIVE");
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(3));
    let reasons = event_reasons(&e.ns, "trino").await;
    assert_in_order(&reasons, &["OperationFailed", "OnFailureDone"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_recreated_mid_operation_fails_it_and_the_new_one_is_left_alone() {
    let e = env("e2e-recreate").await;
    let _t = trino_setup(&e, "trino", 3, 100_000).await;
    set_desired(&e.ns, "trino", 1).await.unwrap();
    wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;

    let sets = e.ns.api::<StatefulSet>();
    let old_uid = sets.get("trino").await.unwrap().uid();
    sets.delete("trino", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait::until(LONG, "the old StatefulSet to be gone", || {
        let sets = sets.clone();
        async move { Ok(sets.get_opt("trino").await?.is_none()) }
    })
    .await
    .unwrap();
    create_statefulset(&e.ns, "trino", 3).await.unwrap();
    assert_ne!(sets.get("trino").await.unwrap().uid(), old_uid);

    let failed = wait_scaler(&e.ns, "trino", "Failed, on-failure settled", |s| {
        stage(s) == Some(Stage::Failed) && on_failure_settled(s)
    })
    .await;
    let reason = failure_reason(&failed).unwrap();
    assert!(
        reason == "TargetReplaced" || reason == "TargetGone",
        "{reason}: {:?}",
        failed.status
    );
    // Give a wrong write every chance to happen, then check none did.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(3));
    assert!(
        !e.op.log().contains("wrote target replicas"),
        "{}",
        e.op.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_ref_edited_mid_operation_fails_it_and_scales_neither() {
    let e = env("e2e-retarget").await;
    let t = trino_setup(&e, "trino", 3, 100_000).await;
    create_statefulset(&e.ns, "other", 2).await.unwrap();
    set_desired(&e.ns, "trino", 1).await.unwrap();
    wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;

    e.ns.api::<Scaler>()
        .patch(
            "trino",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"targetRef": {"name": "other"}}})),
        )
        .await
        .unwrap();
    let failed = wait_scaler(&e.ns, "trino", "Failed, on-failure settled", |s| {
        stage(s) == Some(Stage::Failed) && on_failure_settled(s)
    })
    .await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("TargetChanged"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sts_spec_replicas(&e.ns, "trino").await, Some(3));
    assert_eq!(sts_spec_replicas(&e.ns, "other").await, Some(2));
    // on-failure undid the drain of the operation's own workers.
    for o in [1, 2] {
        assert_eq!(drained_then(&t.workers[&o]), vec!["DRAINING", "ACTIVE"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_the_status_write_and_the_scale_write_resumes_without_draining_again() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("e2e-abort").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let mut options = scoped_options(&ns.name);
    options.env.push((
        "HOIST_TEST_ABORT_AT".into(),
        "after-status-before-scale".into(),
    ));
    let op = Operator::start(cluster, &options).await.unwrap();
    let mut e = Env { ns, op };
    let t = trino_setup(&e, "trino", 3, 2).await;
    let spec = record(e.ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    set_desired(&e.ns, "trino", 1).await.unwrap();
    wait::until(LONG, "the operator to abort at the named point", || {
        let running = e.op.running();
        async move { Ok(!running) }
    })
    .await
    .unwrap();
    let s = e.ns.api::<Scaler>().get("trino").await.unwrap();
    assert_eq!(stage(&s), Some(Stage::Scaling), "the intent was recorded");
    assert_eq!(
        sts_spec_replicas(&e.ns, "trino").await,
        Some(3),
        "the effect was not"
    );
    let drained: Vec<Vec<String>> = [1, 2].iter().map(|o| states(&t.workers[o])).collect();

    let op2 = start_operator(&e.ns.name).await;
    wait_idle_at(&e.ns, "trino", 1).await;
    assert_eq!(
        spec.values(),
        vec![Some(3), Some(1)],
        "the new operator wrote the recorded to; log:\n{}",
        op2.log()
    );
    for (i, o) in [1u32, 2].iter().enumerate() {
        assert_eq!(
            states(&t.workers[o]),
            drained[i],
            "worker {o} was not asked again after the target was written"
        );
    }
    assert_eq!(
        states(&t.workers[&0]),
        vec!["ACTIVE"],
        "the worker that stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_progress_hook_is_called_when_due_not_on_every_event() {
    let e = env("e2e-pace").await;
    // Each pre-scale call polls both leaving workers once; they report DRAINED on the 6th.
    let _t = trino_setup(&e, "trino", 3, 6).await;
    set_desired(&e.ns, "trino", 1).await.unwrap();
    let s = wait_idle_at(&e.ns, "trino", 1).await;
    assert!(s.status.is_some());
    let text = e.op.metrics().await.unwrap();
    let calls = metric(&text, "hoist_hook_calls_total", &[("hook", "pre-scale")]);
    // trino-drain asks to be called again after 300 ms (hoist waits at least 1 s): about 7
    // calls are due. Without the due time, our own status writes re-triggered it at once.
    assert!(
        (6.0..=10.0).contains(&calls),
        "pre-scale was called {calls} times for ~7 due calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_s_huge_text_is_cut_before_it_reaches_the_status() {
    let e = env("e2e-huge").await;
    apply_plugin_configmap(&e.ns, "huge", &plugin_path("fixture-huge-message").unwrap())
        .await
        .unwrap();
    create_statefulset(&e.ns, "web", 2).await.unwrap();
    create_scaler(
        &e.ns,
        "web",
        sts_ref("web"),
        Some(json!({"plugin": {"configMap": "huge"}})),
        json!({}),
    )
    .await;
    // validate-config answers with a 10 MiB error: the status write still succeeds, cut.
    let s = wait_scaler(&e.ns, "web", "HooksReady says why", |s| {
        s.status.as_ref().is_some_and(|st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "HooksReady" && c.reason == "ConfigRejected")
        })
    })
    .await;
    let st = s.status.unwrap();
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "HooksReady")
        .unwrap();
    assert!(c.message.len() < 4096, "{} bytes", c.message.len());
    assert!(c.message.contains("[cut: "), "{}", c.message);
    let verdict = st.plugin.unwrap().message.unwrap();
    assert!(verdict.len() <= 2048, "{} bytes", verdict.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_scaling_timeout_resumes_and_runs_post_scale() {
    let e = env("e2e-resume").await;
    apply_plugin_configmap(&e.ns, "noop", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    let widgets = widget_at_2(
        &e,
        Some(json!({"plugin": {"configMap": "noop"}})),
        json!({"stageTimeouts": {"scaling": "3s"}}),
    )
    .await;

    // The widget never catches up: Scaling times out after its target was written.
    set_desired(&e.ns, "w", 3).await.unwrap();
    let failed = wait_scaler(&e.ns, "w", "Failed after ScalingTimeout", |s| {
        stage(s) == Some(Stage::Failed) && on_failure_settled(s)
    })
    .await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("ScalingTimeout"));
    let id = op_id(&failed).unwrap();

    set_widget_status(&widgets, "w", 3).await;
    e.ns.api::<Scaler>()
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"hoist.dev/retry": "true"}}})),
        )
        .await
        .unwrap();
    let done = wait_idle_at(&e.ns, "w", 3).await;
    assert!(done.status.unwrap().operation.is_none());
    let reasons = event_reasons(&e.ns, "w").await;
    assert_in_order(
        &reasons,
        &[
            "OperationFailed",
            "RetryRequested",
            "OperationResumed",
            "Scaled",
            "OperationSucceeded",
        ],
    );
    let text = e.op.metrics().await.unwrap();
    assert!(
        metric(&text, "hoist_hook_calls_total", &[("hook", "post-scale")]) >= 1.0,
        "post-scale ran for the operation {id} that changed the workload"
    );
}

/// Waits until Scaler `name` reports `TargetConflict=True`; returns that condition.
async fn wait_target_conflict(
    ns: &TestNamespace,
    name: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let s = wait_scaler(ns, name, "TargetConflict=True", |s| {
        s.status.as_ref().is_some_and(|st| {
            hoist_api::conditions::is_true(&st.conditions, hoist_api::conditions::TARGET_CONFLICT)
        })
    })
    .await;
    hoist_api::conditions::find(
        &s.status.unwrap_or_default().conditions,
        hoist_api::conditions::TARGET_CONFLICT,
    )
    .cloned()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_scalers_on_one_workload_only_the_oldest_acts() {
    let e = env("e2e-two").await;
    create_statefulset(&e.ns, "web", 3).await.unwrap();
    create_scaler(&e.ns, "first", sts_ref("web"), None, json!({})).await;
    wait_idle_at(&e.ns, "first", 3).await;
    create_scaler(
        &e.ns,
        "second",
        sts_ref("web"),
        None,
        json!({"replicas": 1}),
    )
    .await;
    let c = wait_target_conflict(&e.ns, "second").await;
    assert!(
        c.message.contains("only the oldest, Scaler first, acts"),
        "{}",
        c.message
    );
    // The older one says so too (on its next reconcile: nudge it with a change that asks for
    // nothing; its spec.replicas already holds the adopted 3, so writing 3 would not be one).
    e.ns.api::<Scaler>()
        .patch(
            "first",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"nudge": "1"}}})),
        )
        .await
        .unwrap();
    wait_target_conflict(&e.ns, "first").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sts_spec_replicas(&e.ns, "web").await,
        Some(3),
        "the newer one did nothing"
    );

    // Once the older one is gone, the newer one acts.
    e.ns.api::<Scaler>()
        .delete("first", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait_idle_at(&e.ns, "second", 1).await;
    assert_eq!(sts_spec_replicas(&e.ns, "web").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_s_hpa_on_the_workload_itself_holds_a_newer_scaler_until_it_is_gone() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let e = env("e2e-rival").await;
    create_statefulset(&e.ns, "web", 3).await.unwrap();
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "mine"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"},
                 "minReplicas": 3, "maxReplicas": 3},
    }))
    .unwrap();
    let hpas = e.ns.api::<HorizontalPodAutoscaler>();
    hpas.create(&kube::api::PostParams::default(), &hpa)
        .await
        .unwrap();
    // Creation times have a one-second resolution: make the Scaler clearly newer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    create_scaler(&e.ns, "web", sts_ref("web"), None, json!({"replicas": 1})).await;
    let c = wait_target_conflict(&e.ns, "web").await;
    assert_eq!(c.reason, "OtherAutoscaler", "{}", c.message);
    assert!(
        c.message.contains("HorizontalPodAutoscaler mine"),
        "{}",
        c.message
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sts_spec_replicas(&e.ns, "web").await,
        Some(3),
        "the Scaler started nothing against the older HPA"
    );

    // The HPA goes (its watch reconciles the Scaler): the Scaler acts.
    hpas.delete("mine", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait_idle_at(&e.ns, "web", 1).await;
    assert_eq!(sts_spec_replicas(&e.ns, "web").await, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deployment_scale_down_leaves_no_pod_marked() {
    let e = env("e2e-marks").await;
    // The drain never finishes, and PreScaling has 4 s: the operation fails after pre-scale
    // marked the two pods it chose.
    let (pods, workers) =
        deployment_with_workers(&e, 100_000, json!({"stageTimeouts": {"preScaling": "4s"}})).await;
    wait_idle_at(&e.ns, "trino", 4).await;
    set_desired(&e.ns, "trino", 2).await.unwrap();
    let marked = |p: &Pod| p.annotations().contains_key(hoist_api::LEAVING_ANNOTATION);
    let chosen: Vec<String> = wait::for_value(LONG, "two pods marked as leaving", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=trino"))
                .await?;
            let chosen: Vec<String> = list
                .items
                .iter()
                .filter(|p| marked(p))
                .map(ResourceExt::name_any)
                .collect();
            Ok((chosen.len() == 2).then_some(chosen))
        }
    })
    .await
    .unwrap();
    let failed = wait_scaler(&e.ns, "trino", "Failed, on-failure settled", |s| {
        stage(s) == Some(Stage::Failed) && on_failure_settled(s)
    })
    .await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("StageTimeout"));
    // act releases the marks right after the status write that settles on-failure.
    let unmarked = wait::until(Duration::from_secs(30), "no pod marked any more", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=trino"))
                .await?;
            Ok(list.items.iter().all(|p| {
                let a = p.annotations();
                !a.contains_key(hoist_api::LEAVING_ANNOTATION)
                    && !a.contains_key(hoist_api::POD_DELETION_COST)
            }))
        }
    })
    .await;
    assert!(unmarked.is_ok(), "{unmarked:?}; log:\n{}", e.op.log());
    let list = pods
        .list(&ListParams::default().labels("app=trino"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 4, "nothing was removed");
    for name in &chosen {
        assert_eq!(
            drained_then(&workers[name]),
            vec!["DRAINING", "ACTIVE"],
            "{name}"
        );
    }
    let deployments = e.ns.api::<Deployment>();
    assert_eq!(
        deployments
            .get("trino")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas),
        Some(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_and_a_restart_mid_operation_keep_its_plugin_from_the_cache() {
    let mut e = env("e2e-swap-restart").await;
    let t = trino_setup(&e, "trino", 3, 12).await;
    let old = plugin_digest_hex(&e.ns, "trino-drain").await;
    set_desired(&e.ns, "trino", 1).await.unwrap();
    let s = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    let id = op_id(&s).unwrap();
    // Swap the ConfigMap to another build, and restart the operator: the new process has
    // only the new bytes, and the old digest in its precompile cache.
    apply_plugin_configmap(&e.ns, "trino-drain", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    e.op.kill_hard().unwrap();
    let op2 = start_operator(&e.ns.name).await;
    let done = wait_idle_at(&e.ns, "trino", 1).await;
    assert!(
        !event_reasons(&e.ns, "trino")
            .await
            .iter()
            .any(|r| r == "OperationFailed"),
        "no PluginNotLoaded failure; log:\n{}",
        op2.log()
    );
    for o in [1, 2] {
        assert!(
            t.workers[&o].drained_at().is_some(),
            "worker {o} drained by the old plugin (operation {id}, digest {old})"
        );
    }
    assert!(
        op2.log()
            .contains("loaded the operation's plugin from the precompile cache"),
        "{}",
        op2.log()
    );
    assert!(done.status.unwrap().operation.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_mid_operation_stops_and_the_next_one_finishes() {
    use k8s_openapi::api::coordination::v1::Lease;
    let cluster = Cluster::shared();
    let ns = cluster.namespace("e2e-fenced").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let name = ns.name.clone();
    let opts = |id: &str| OperatorOptions {
        leader_elect: true,
        lease_name: Some("hoist-fenced".into()),
        lease_namespace: Some(name.clone()),
        identity: Some(id.into()),
        ..scoped_options(&name)
    };
    let mut a = Operator::start(cluster, &opts("a")).await.unwrap();
    wait::until(LONG, "a leads", || async { Ok(is_leader(&a).await) })
        .await
        .unwrap();
    let e = Env {
        ns,
        op: Operator::start(cluster, &opts("b")).await.unwrap(),
    };
    // The drain takes about 15 pre-scale calls: the operation is in flight when a loses.
    let t = trino_setup(&e, "trino", 3, 15).await;
    let spec = record(e.ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;
    set_desired(&e.ns, "trino", 1).await.unwrap();
    let s = wait_scaler(&e.ns, "trino", "pre-scale in progress", hook_in_progress).await;
    let id = op_id(&s).unwrap();

    // Someone else takes the Lease (as a replica whose clock or network misled it would).
    let leases = e.ns.api::<Lease>();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    );
    leases
        .patch(
            "hoist-fenced",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "hoist-fenced"},
                "spec": {"holderIdentity": "intruder", "renewTime": now,
                         "acquireTime": now, "leaseDurationSeconds": 15}
            })),
        )
        .await
        .unwrap();
    wait::until(LONG, "a to notice and stop", || {
        let running = a.running();
        async move { Ok(!running) }
    })
    .await
    .unwrap();
    let a_log = a.log();
    let lost_at = a_log
        .find("lost the leader lease")
        .unwrap_or_else(|| panic!("a says it lost the lease:\n{a_log}"));
    assert!(
        !a_log[lost_at..].contains("wrote target replicas"),
        "a wrote after losing the lease:\n{a_log}"
    );

    // The intruder never renews: b takes over once the Lease expires, and finishes the same
    // operation.
    wait::until(LONG, "b leads", || async { Ok(is_leader(&e.op).await) })
        .await
        .unwrap();
    let done = wait_idle_at(&e.ns, "trino", 1).await;
    assert!(done.status.is_some());
    assert_eq!(
        spec.values(),
        vec![Some(3), Some(1)],
        "one write, by one replica"
    );
    for o in [1, 2] {
        assert!(t.workers[&o].drained_at().is_some(), "worker {o} drained");
    }
    assert_eq!(states(&t.workers[&0]), vec!["ACTIVE"]);
    let b_log = e.op.log();
    assert!(
        b_log.contains("wrote target replicas"),
        "b finished {id}:\n{b_log}"
    );
}

// ---------------------------------------------------------------------------------------
// Shards: several active replicas, each acting on the Scalers of the shard Leases it holds
// ---------------------------------------------------------------------------------------

/// Who holds each shard Lease `<base>-shard-<i>-of-<count>` (`None`: nobody).
async fn shard_holders(ns: &TestNamespace, base: &str, count: u32) -> Vec<Option<String>> {
    use k8s_openapi::api::coordination::v1::Lease;
    let leases = ns.api::<Lease>();
    let mut holders = Vec::new();
    for i in 0..count {
        let lease = leases
            .get_opt(&format!("{base}-shard-{i}-of-{count}"))
            .await
            .unwrap();
        holders.push(
            lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()),
        );
    }
    holders
}

/// The Events about Scaler `scaler` with `reason`, counting repeats a recorder folded into one.
async fn events_with_reason(ns: &TestNamespace, scaler: &str, reason: &str) -> Vec<Event> {
    scaler_events(ns, scaler)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn times_reported(events: &[Event]) -> i32 {
    events
        .iter()
        .map(|e| {
            e.series
                .as_ref()
                .map_or(e.count.unwrap_or(1).max(1), |s| s.count.unwrap_or(1).max(1))
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sharded_replicas_one_killed_mid_operation_every_operation_completes_once() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("e2e-shards").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let name = ns.name.clone();
    let opts = |id: &str| {
        let mut o = scoped_options(&name);
        o.leader_elect = true;
        o.lease_name = Some("hoist-sharded".into());
        o.lease_namespace = Some(name.clone());
        o.identity = Some(id.into());
        o.extra_args.extend(["--shards".into(), "3".into()]);
        o
    };
    let mut replicas = BTreeMap::new();
    for id in ["a", "b", "c"] {
        replicas.insert(
            id.to_owned(),
            Operator::start(cluster, &opts(id)).await.unwrap(),
        );
    }
    // Each replica takes one shard: one holding none takes a free Lease at once, one holding
    // some waits a Lease duration per shard it holds.
    let holders = wait::for_value(LONG, "each replica to hold one shard", || {
        let ns = &ns;
        async move {
            let h = shard_holders(ns, "hoist-sharded", 3).await;
            let mut ids: Vec<String> = h.iter().flatten().cloned().collect();
            ids.sort();
            Ok((ids == ["a", "b", "c"]).then_some(h))
        }
    })
    .await
    .unwrap();
    let e = Env {
        ns,
        op: replicas.remove("a").unwrap(),
    };
    let mut others = replicas;

    // Four Trino StatefulSets of 3, each drained by its Scaler's hook before it shrinks; the
    // drain takes about 20 polls (6 s), so operations are in flight when a replica dies.
    let names = ["t0", "t1", "t2", "t3"];
    let mut setups = BTreeMap::new();
    let mut specs = BTreeMap::new();
    let mut operations = BTreeMap::new();
    for n in names {
        setups.insert(n, trino_setup(&e, n, 3, 20).await);
        specs.insert(
            n,
            record(e.ns.api::<StatefulSet>(), n, |s: &StatefulSet| {
                s.spec.as_ref().and_then(|s| s.replicas)
            })
            .await,
        );
        operations.insert(n, record(e.ns.api::<Scaler>(), n, op_id).await);
    }
    for n in names {
        set_desired(&e.ns, n, 1).await.unwrap();
    }

    // The replica driving t0 (it reports t0's Events) dies without releasing its shard.
    let s = wait_scaler(&e.ns, "t0", "pre-scale in progress", hook_in_progress).await;
    let id = op_id(&s).unwrap();
    let started = events_with_reason(&e.ns, "t0", "OperationStarted").await;
    let victim = started
        .iter()
        .find_map(|ev| ev.reporting_instance.clone())
        .expect("t0's OperationStarted names its replica");
    let victim_shard = holders
        .iter()
        .position(|h| h.as_deref() == Some(victim.as_str()))
        .unwrap();
    let mut e = e;
    if victim == "a" {
        e.op.kill_hard().unwrap();
    } else {
        others.get_mut(&victim).unwrap().kill_hard().unwrap();
    }

    // A surviving replica takes the dead one's shard once its Lease expires and finishes what
    // was in flight; every Scaler ends at 1, each StatefulSet written once.
    for n in names {
        wait_idle_at(&e.ns, n, 1).await;
    }
    let now = shard_holders(&e.ns, "hoist-sharded", 3).await;
    let heir = now[victim_shard]
        .clone()
        .expect("the dead replica's shard is held");
    assert_ne!(heir, victim, "shard {victim_shard} moved: {now:?}");
    let mut logs = vec![(String::from("a"), e.op.log())];
    logs.extend(others.iter().map(|(k, o)| (k.clone(), o.log())));
    for n in names {
        let setup = &setups[n];
        assert_eq!(
            specs[n].values(),
            vec![Some(3), Some(1)],
            "{n}: one write, by one replica"
        );
        for o in [1, 2] {
            assert!(
                setup.workers[&o].drained_at().is_some(),
                "{n}: worker {o} drained"
            );
        }
        assert_eq!(
            states(&setup.workers[&0]),
            vec!["ACTIVE"],
            "{n}: worker 0 stays"
        );
        let seen: Vec<String> = operations[n].values().into_iter().flatten().collect();
        let first = seen.first().cloned().unwrap();
        assert!(
            seen.iter().all(|i| *i == first),
            "{n}: one operation: {seen:?}"
        );
        // The Event follows the status write that made the Scaler Idle.
        let done = wait::for_value(LONG, &format!("{n}: OperationSucceeded"), || {
            let ns = &e.ns;
            async move {
                let done = events_with_reason(ns, n, "OperationSucceeded").await;
                Ok((times_reported(&done) > 0).then_some(done))
            }
        })
        .await
        .unwrap();
        assert_eq!(times_reported(&done), 1, "{n}: completed once: {done:?}");
        let writers: Vec<&str> = logs
            .iter()
            .filter(|(_, log)| {
                log.lines()
                    .any(|l| l.contains("wrote target replicas") && l.contains(&format!("/{n} ")))
            })
            .map(|(who, _)| who.as_str())
            .collect();
        assert_eq!(writers.len(), 1, "{n}: written by one replica: {writers:?}");
    }
    let resumed: Vec<String> = operations["t0"].values().into_iter().flatten().collect();
    assert!(
        resumed.iter().all(|i| *i == id),
        "t0 resumed {id}: {resumed:?}"
    );
    let heir_log = &logs.iter().find(|(who, _)| *who == heir).unwrap().1;
    assert!(
        heir_log.contains("holding shard") && heir_log.contains("owned shards changed"),
        "{heir} took the shard:\n{heir_log}"
    );

    // A new replica joins: the heir, holding two shards, gives one up to it, and the next
    // operations complete wherever their shard now is.
    let joined = Operator::start(cluster, &opts("d")).await.unwrap();
    wait::until(
        LONG,
        "the three live replicas to hold one shard each",
        || {
            let ns = &e.ns;
            async move {
                let mut ids: Vec<String> = shard_holders(ns, "hoist-sharded", 3)
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
                ids.sort();
                ids.dedup();
                Ok(ids.len() == 3 && ids.iter().any(|i| i == "d"))
            }
        },
    )
    .await
    .unwrap();
    for n in names {
        set_desired(&e.ns, n, 2).await.unwrap();
    }
    for n in names {
        wait_idle_at(&e.ns, n, 2).await;
        assert_eq!(specs[n].values(), vec![Some(3), Some(1), Some(2)], "{n}");
    }
    let d_log = joined.log();
    assert!(d_log.contains("holding shard"), "d holds a shard:\n{d_log}");
}
