//! Operator cost per object, hoist beside KEDA's operator (run by hand):
//!
//! ```sh
//! cargo build --release -p hoist-operator --bin hoist
//! HOIST_TEST_CLUSTER_DIR=... HOIST_BENCH_SIZES=1000,5000 cargo bench -p hoist-tests --bench keda_peer
//! ```
//!
//! For each size N, on one control plane and in one run: N StatefulSets (one kwok pod each).
//! First KEDA as `tests/cluster/keda` installs it (operator and metrics adapter), holding N
//! `ScaledObject`s with a cron trigger each (outside its window: the HPA KEDA creates keeps 1
//! replica); then, with the `ScaledObject`s and their HPAs gone, hoist holding N Scalers on the
//! same StatefulSets (fixed mode, each with a hook plugin from one shared `ConfigMap`).
//!
//! For each operator: resident memory after everything settled and a minute of idling, CPU
//! over that minute, and the start-up time to the first full sync (the operator is restarted
//! with all N objects present; the time until it has reconciled every one of them, from
//! controller-runtime's `controller_runtime_reconcile_total` and hoist's
//! `hoist_reconciles_total`). Prints hoist/KEDA ratios. KEDA's operator is measured alone;
//! its adapter, which the HPAs need, is printed beside it. KEDA's client-side throttle is
//! raised to the API server's own limits ([`KEDA_ARGS`]); its other settings are its defaults.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    clippy::panic,
    clippy::unchecked_time_subtraction,
    reason = "a bench binary"
)]

use std::time::{Duration, Instant};

use hoist_api::{Scaler, Stage};
use hoist_tests::bulk::{count, for_each, wait_count};
use hoist_tests::keda::{Keda, scaled_object_resource, scaled_objects};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, http_get, install_scaler_crd, plugin_path,
    samples,
};
use hoist_tests::process_stats::{Memory, cpu_time, memory};
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{Value, json};

const IDLE: Duration = Duration::from_mins(1);
/// KEDA's operator throttles its own API requests (client-go's 20 per second, burst 30, by
/// default), which makes creating thousands of `ScaledObject`s take most of an hour here;
/// hoist does not throttle. Both run unthrottled by the client in this bench. KEDA's metrics
/// (on by default; `tests/cluster/keda` turns them off) serve `controller_runtime_*`.
const KEDA_ARGS: &[&str] = &[
    "--kube-api-qps=500",
    "--kube-api-burst=1000",
    "--enable-prometheus-metrics=true",
];

/// What one operator cost at one size.
#[derive(Debug)]
struct Cost {
    memory: Memory,
    idle_cpu: Duration,
    startup: Duration,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sum of `family` over the samples whose labels contain `label`.
fn sum(text: &str, family: &str, label: &str) -> f64 {
    samples(text, family)
        .into_iter()
        .filter(|(l, _)| l.contains(label))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `reconciled()` reaches `n`; returns when.
async fn until_reconciled<F, Fut>(n: usize, what: &str, reconciled: F) -> Instant
where
    F: Fn() -> Fut,
    Fut: Future<Output = f64>,
{
    let deadline = Instant::now() + Duration::from_mins(30);
    loop {
        if reconciled().await >= n as f64 {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not every object reconciled in 30 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn idle_cpu(pids: &[u32]) -> Duration {
    let before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p).unwrap()).collect();
    tokio::time::sleep(IDLE).await;
    pids.iter()
        .zip(before)
        .map(|(p, b)| cpu_time(*p).unwrap() - b)
        .sum()
}

fn ready(o: &DynamicObject) -> bool {
    o.data["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn scaled_object(i: usize) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": format!("t{i}")},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("t{i}")},
            "minReplicaCount": 1, "maxReplicaCount": 3,
            "triggers": [{"type": "cron", "metadata": {
                "timezone": "Etc/UTC", "start": "0 0 1 1 *", "end": "1 0 1 1 *", "desiredReplicas": "2"}}]
        }
    })
}

async fn keda_side(cluster: &Cluster, ns: &TestNamespace, keda: &Keda, n: usize) -> Cost {
    let so = scaled_objects(&ns.client, &ns.name);
    // KEDA watches every namespace: another run's leftovers would be measured too.
    let everywhere: Api<DynamicObject> =
        Api::all_with(ns.client.clone(), &scaled_object_resource());
    let others = count(&everywhere, |_| true).await.unwrap();
    assert_eq!(
        others, 0,
        "{others} ScaledObjects exist before the bench creates any: delete them (an earlier run's namespace bench-keda-*?)"
    );
    let port = free_port();
    let metrics = move || async move {
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        match http_get(addr, "/metrics").await {
            Ok((200, text)) => sum(
                &text,
                "controller_runtime_reconcile_total",
                "controller=\"scaledobject\"",
            ),
            _ => 0.0,
        }
    };
    keda.restart_operator(port, KEDA_ARGS).unwrap();
    let t = Instant::now();
    for_each(n, |i| {
        let so = so.clone();
        async move {
            let o: DynamicObject = serde_json::from_value(scaled_object(i))?;
            so.create(&PostParams::default(), &o).await?;
            anyhow::Ok(())
        }
    })
    .await
    .unwrap();
    wait_count(&so, n, "every ScaledObject Ready", ready)
        .await
        .unwrap();
    let hpas = ns.api::<HorizontalPodAutoscaler>();
    wait_count(&hpas, n, "every HPA created", |_| true)
        .await
        .unwrap();
    println!(
        "  KEDA: {n} ScaledObjects created and Ready, {n} HPAs, in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    let pid = keda.operator_pid().unwrap();
    let adapter = keda.adapter_pid().unwrap();
    let cpu = idle_cpu(&[pid]).await;
    let adapter_cpu = cpu_time(adapter).unwrap();
    let mem = memory(pid).unwrap();
    println!(
        "  KEDA operator: VmRSS {:.1} MiB (peak {:.1}), idle CPU {:.2} s/min; adapter VmRSS {:.1} MiB, CPU so far {:.1} s",
        mem.rss_mib(),
        mem.peak_mib(),
        cpu.as_secs_f64(),
        memory(adapter).unwrap().rss_mib(),
        adapter_cpu.as_secs_f64()
    );

    // Start-up: a restart with every ScaledObject present.
    let t0 = Instant::now();
    keda.restart_operator(port, KEDA_ARGS).unwrap();
    let synced = until_reconciled(n, "KEDA after a restart", metrics).await;
    let startup = synced - t0;
    println!(
        "  KEDA operator start-up to every ScaledObject reconciled: {:.1}s",
        startup.as_secs_f64()
    );

    // Clean up: KEDA deletes its HPAs with the ScaledObjects. A collection delete of
    // thousands can end (the client's timeout) before it marked every object: ask again
    // until all are gone.
    wait::until(
        Duration::from_mins(30),
        "every ScaledObject deleted",
        || {
            let so = so.clone();
            async move {
                let left = count(&so, |o| o.metadata.deletion_timestamp.is_none()).await?;
                if left > 0 {
                    let _ = so
                        .delete_collection(&DeleteParams::default(), &ListParams::default())
                        .await;
                }
                Ok(count(&so, |_| true).await? == 0)
            }
        },
    )
    .await
    .unwrap();
    wait_count(&hpas, 0, "KEDA's HPAs gone", |_| true)
        .await
        .unwrap();
    let _ = cluster;
    Cost {
        memory: mem,
        idle_cpu: cpu,
        startup,
    }
}

async fn hoist_side(cluster: &Cluster, ns: &TestNamespace, n: usize) -> Cost {
    let scalers = ns.api::<Scaler>();
    let options = OperatorOptions {
        extra_args: vec!["--namespace".into(), ns.name.clone()],
        ..OperatorOptions::default()
    };
    let op = Operator::start(cluster, &options).await.unwrap();
    let t = Instant::now();
    for_each(n, |i| {
        let scalers = scalers.clone();
        async move {
            let s: Scaler = serde_json::from_value(json!({
                "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                "metadata": {"name": format!("t{i}")},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": format!("t{i}")},
                    "minReplicas": 1, "maxReplicas": 3, "autoscaling": {"fixed": {}},
                    "hooks": {"plugin": {"configMap": "bench-plugin"}}}
            }))?;
            scalers.create(&PostParams::default(), &s).await?;
            anyhow::Ok(())
        }
    })
    .await.unwrap();
    let idle_at_1 = |s: &Scaler| {
        s.status.as_ref().is_some_and(|st| {
            st.stage == Stage::Idle
                && st.replicas == Some(1)
                && st.plugin.as_ref().is_some_and(|p| p.accepted)
        })
    };
    wait_count(
        &scalers,
        n,
        "every Scaler Idle with its plugin accepted",
        idle_at_1,
    )
    .await
    .unwrap();
    println!(
        "  hoist: {n} Scalers created and Idle in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let pid = op.pid();
    let cpu = idle_cpu(&[pid]).await;
    let mem = memory(pid).unwrap();
    println!(
        "  hoist: VmRSS {:.1} MiB (peak {:.1}), idle CPU {:.2} s/min",
        mem.rss_mib(),
        mem.peak_mib(),
        cpu.as_secs_f64()
    );
    drop(op);

    let t0 = Instant::now();
    let op = Operator::start(cluster, &options).await.unwrap();
    let metrics = || async {
        sum(
            &op.metrics().await.unwrap_or_default(),
            "hoist_reconciles_total",
            "",
        )
    };
    let synced = until_reconciled(n, "hoist after a restart", metrics).await;
    let startup = synced - t0;
    println!(
        "  hoist start-up to every Scaler reconciled: {:.1}s",
        startup.as_secs_f64()
    );
    drop(op);
    let _ = scalers
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    Cost {
        memory: mem,
        idle_cpu: cpu,
        startup,
    }
}

fn ratio(h: f64, k: f64) -> String {
    if k > 0.0 {
        format!("{:.2}", h / k)
    } else {
        "n/a".to_string()
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("HOIST_BENCH_SIZES")
        .unwrap_or_else(|_| "1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("HOIST_BENCH_SIZES: comma-separated counts")
        })
        .collect();
    let cluster = Cluster::shared();
    let keda = Keda::in_cluster(cluster).unwrap();
    let mut rows = Vec::new();
    for &n in &sizes {
        println!("N = {n}");
        let ns: TestNamespace = cluster.namespace("bench-keda").await.unwrap();
        install_scaler_crd(&ns.client).await.unwrap();
        apply_plugin_configmap(&ns, "bench-plugin", &plugin_path("fixture-noop").unwrap())
            .await
            .unwrap();
        let t = Instant::now();
        let sets = ns.api::<StatefulSet>();
        for_each(n, |i| {
            let sets = sets.clone();
            async move {
                let name = format!("t{i}");
                let set: StatefulSet = serde_json::from_value(json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
                    "spec": {"replicas": 1, "serviceName": name, "podManagementPolicy": "Parallel",
                        "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                            "spec": {"containers": [{"name": "worker", "image": "worker"}]}}}
                }))?;
                sets.create(&PostParams::default(), &set).await?;
                anyhow::Ok(())
            }
        })
        .await
        .unwrap();
        wait_count(&sets, n, "every StatefulSet ready", |s: &StatefulSet| {
            s.status.as_ref().and_then(|st| st.ready_replicas) == Some(1)
        })
        .await
        .unwrap();
        println!(
            "  {n} StatefulSets ready in {:.1}s",
            t.elapsed().as_secs_f64()
        );

        let k = keda_side(cluster, &ns, &keda, n).await;
        let h = hoist_side(cluster, &ns, n).await;
        rows.push((n, h, k));
        let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
            .delete(&ns.name, &DeleteParams::default())
            .await;
    }

    println!();
    println!("| N | measure | hoist | KEDA operator | hoist/KEDA |");
    println!("|---|---|---|---|---|");
    for (n, h, k) in &rows {
        println!(
            "| {n} | resident memory (MiB) | {:.1} | {:.1} | {} |",
            h.memory.rss_mib(),
            k.memory.rss_mib(),
            ratio(h.memory.rss_mib(), k.memory.rss_mib())
        );
        println!(
            "| {n} | idle CPU (s per minute) | {:.2} | {:.2} | {} |",
            h.idle_cpu.as_secs_f64(),
            k.idle_cpu.as_secs_f64(),
            ratio(h.idle_cpu.as_secs_f64(), k.idle_cpu.as_secs_f64())
        );
        println!(
            "| {n} | start-up to first full sync (s) | {:.1} | {:.1} | {} |",
            h.startup.as_secs_f64(),
            k.startup.as_secs_f64(),
            ratio(h.startup.as_secs_f64(), k.startup.as_secs_f64())
        );
    }
}
