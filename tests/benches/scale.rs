//! Scale bench (run by hand): many Scalers held by one operator.
//!
//! ```sh
//! cargo build --release -p hoist-operator --bin hoist
//! HOIST_BENCH_SCALERS=5000 HOIST_TEST_CLUSTER_DIR=... cargo bench -p hoist-tests --bench scale
//! ```
//!
//! Workloads are Widgets (tests/fixtures/widget-crd.yaml: a CRD with a /scale subresource),
//! not StatefulSets: 5,000 kwok pods plus their StatefulSet controller work would load the
//! 2-core machine far more than the operator under test. This bench plays the Widgets'
//! controller: when a Widget's spec.replicas changes it copies it to status.replicas.
//!
//! Prints: time until every Scaler adopted its Widget, the operator's VmRSS/VmHWM, its CPU
//! over 60 s of idling, and the time until all Scalers settle (Idle at the new count) after
//! every Scaler's desired count changes at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    reason = "a bench binary"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hoist_api::{Scaler, Stage};
use hoist_tests::operator::{
    Operator, OperatorOptions, install_scaler_crd, install_widget_crd, widget_resource,
};
use hoist_tests::{Cluster, TestNamespace, wait};
use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;

const PARALLEL: usize = 48;

/// (`VmRSS`, `VmHWM`) in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

async fn count_idle_at(scalers: &Api<Scaler>, n: i32) -> anyhow::Result<usize> {
    let mut idle = 0;
    let mut params = ListParams::default().limit(500);
    loop {
        let page = scalers.list(&params).await?;
        idle += page
            .items
            .iter()
            .filter(|s| {
                s.status.as_ref().is_some_and(|st| {
                    st.stage == Stage::Idle && st.replicas == Some(n) && st.operation.is_none()
                })
            })
            .count();
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => params = params.continue_token(&c),
            _ => return Ok(idle),
        }
    }
}

async fn wait_all_idle(scalers: &Api<Scaler>, total: usize, n: i32, what: &str) {
    wait::until(Duration::from_mins(20), what, || {
        let scalers = scalers.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok(count_idle_at(&scalers, n).await? == total)
        }
    })
    .await
    .unwrap();
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("HOIST_BENCH_SCALERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let cluster = Cluster::shared();
    let ns: TestNamespace = cluster.namespace("bench-scale").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    install_widget_crd(&ns.client).await.unwrap();
    let ar = widget_resource();
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let scalers = ns.api::<Scaler>();

    let t = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let widgets = widgets.clone();
            let ar = ar.clone();
            async move {
                let name = format!("w{i}");
                let mut w = DynamicObject::new(&name, &ar);
                w.data = json!({"spec": {"replicas": 1}});
                widgets.create(&PostParams::default(), &w).await?;
                widgets
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"replicas": 1}})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    println!(
        "{total} Widgets created in {:.1}s",
        t.elapsed().as_secs_f64()
    );

    // The Widgets' controller: status.replicas follows spec.replicas.
    let controller = tokio::spawn({
        let widgets = widgets.clone();
        async move {
            let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
            let stream = watcher(widgets.clone(), watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(w)) = stream.next().await {
                let spec = w.data["spec"]["replicas"].as_i64();
                if spec.is_some() && spec != w.data["status"]["replicas"].as_i64() {
                    let permit = gate.clone().acquire_owned().await.unwrap();
                    let widgets = widgets.clone();
                    tokio::spawn(async move {
                        let _ = widgets
                            .patch_status(
                                &w.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": {"replicas": spec}})),
                            )
                            .await;
                        drop(permit);
                    });
                }
            }
        }
    });

    let op = Operator::start(
        cluster,
        &OperatorOptions {
            extra_args: vec!["--namespace".into(), ns.name.clone()],
            ..OperatorOptions::default()
        },
    )
    .await
    .unwrap();
    let pid = op.pid();

    let t = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let scalers = scalers.clone();
            async move {
                let s: Scaler = serde_json::from_value(json!({
                    "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                    "metadata": {"name": format!("s{i}")},
                    "spec": {"targetRef": {"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget",
                        "name": format!("w{i}")}, "minReplicas": 1, "maxReplicas": 3}
                }))?;
                scalers.create(&PostParams::default(), &s).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    wait_all_idle(&scalers, total, 1, "every Scaler adopted").await;
    println!(
        "{total} Scalers created and adopted (Idle at 1) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let (rss, hwm) = memory_kib(pid);
    println!(
        "operator memory after adoption: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(rss),
        mib(hwm)
    );

    // Idle CPU over a minute (the bench itself stays quiet meanwhile).
    let c0 = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_mins(1)).await;
    let c1 = cpu_ticks(pid);
    let hz = clock_ticks_per_second();
    println!(
        "operator CPU while idle: {:.2} s over 60 s ({:.2}% of one core)",
        (c1 - c0) as f64 / hz as f64,
        (c1 - c0) as f64 / hz as f64 / 60.0 * 100.0
    );
    let before = op.metrics().await.unwrap();

    // Every Scaler's desired count changes at once.
    let t = Instant::now();
    futures::stream::iter(0..total)
        .map(|i| {
            let scalers = scalers.clone();
            async move {
                scalers
                    .patch_scale(
                        &format!("s{i}"),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"replicas": 2}})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let written = t.elapsed();
    wait_all_idle(&scalers, total, 2, "every Scaler Idle at 2").await;
    println!(
        "all {total} desired counts written in {:.1}s; all settled (Idle at 2) {:.1}s after the first write",
        written.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let (rss, hwm) = memory_kib(pid);
    println!(
        "operator memory after the change: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        mib(rss),
        mib(hwm)
    );
    let after = op.metrics().await.unwrap();
    let requests = |m: &str| -> f64 {
        m.lines()
            .filter(|l| l.starts_with("hoist_kube_requests_total"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    println!(
        "operator API requests for the change: {:.0} ({:.1} per Scaler)",
        requests(&after) - requests(&before),
        (requests(&after) - requests(&before)) / total as f64
    );

    controller.abort();
    drop(op);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&ns.name, &DeleteParams::default())
        .await;
}
