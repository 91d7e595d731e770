//! Scale bench (run by hand): many Scalers held by one operator, every desired count changed
//! at once, and (with a hook) a new plugin version swapped in under all of them.
//!
//! ```sh
//! cargo build --release -p hoist-operator --bin hoist
//! HOIST_TEST_CLUSTER_DIR=... HOIST_BENCH_SCALERS=10000 HOIST_BENCH_TARGET=widget \
//!   HOIST_BENCH_HOOK=1 cargo bench -p hoist-tests --bench scale
//! ```
//!
//! - `HOIST_BENCH_SCALERS`: how many (default 1000).
//! - `HOIST_BENCH_TARGET`: `widget` (default; `tests/fixtures/widget-crd.yaml`, a CRD with a
//!   /scale subresource, watched by hoist through discovery; this bench plays its controller and
//!   copies spec.replicas to status.replicas), `statefulset` or `deployment` (kwok pods, the
//!   real controllers).
//! - `HOIST_BENCH_HOOK=1`: every Scaler has the `fixture-noop` plugin, one ConfigMap shared by
//!   all; after the mass change a new version of it (the same component with one more custom
//!   section: a new digest) is applied, and the bench reports the swap.
//!
//! Prints: time until every Scaler adopted its target, the operator's memory and idle CPU, the
//! time until all settle after every desired count changes at once (1 -> 2), the API requests
//! of that change by method and resource, and the operator's peak memory during it.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hoist_api::{Scaler, Stage};
use hoist_tests::bulk::{PARALLEL, for_each, wait_count};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, install_scaler_crd, install_widget_crd,
    plugin_path, samples, widget_resource,
};
use hoist_tests::process_stats::{cpu_time, memory, reset_peak};
use hoist_tests::{Cluster, TestNamespace};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Widget,
    StatefulSet,
    Deployment,
}

impl Target {
    fn from_env() -> Self {
        match std::env::var("HOIST_BENCH_TARGET").as_deref() {
            Ok("statefulset") => Self::StatefulSet,
            Ok("deployment") => Self::Deployment,
            Ok("widget") | Err(_) => Self::Widget,
            Ok(other) => {
                panic!("HOIST_BENCH_TARGET={other}: use widget, statefulset or deployment")
            }
        }
    }

    fn reference(self, name: &str) -> Value {
        match self {
            Self::Widget => {
                json!({"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget", "name": name})
            }
            Self::StatefulSet => {
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name})
            }
            Self::Deployment => {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": name})
            }
        }
    }

    fn pod_spec(name: &str) -> Value {
        json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker"}]}}
        })
    }

    async fn create(self, ns: &TestNamespace, name: &str) -> anyhow::Result<()> {
        match self {
            Self::Widget => {
                let ar = widget_resource();
                let widgets: Api<DynamicObject> =
                    Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
                let mut w = DynamicObject::new(name, &ar);
                w.data = json!({"spec": {"replicas": 1}});
                widgets.create(&PostParams::default(), &w).await?;
                widgets
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"replicas": 1}})),
                    )
                    .await?;
            }
            Self::StatefulSet => {
                let mut spec = Self::pod_spec(name);
                spec["replicas"] = json!(1);
                spec["serviceName"] = json!(name);
                spec["podManagementPolicy"] = json!("Parallel");
                let sts: StatefulSet = serde_json::from_value(
                    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": spec}),
                )?;
                ns.api::<StatefulSet>()
                    .create(&PostParams::default(), &sts)
                    .await?;
            }
            Self::Deployment => {
                let mut spec = Self::pod_spec(name);
                spec["replicas"] = json!(1);
                let d: Deployment = serde_json::from_value(
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}),
                )?;
                ns.api::<Deployment>()
                    .create(&PostParams::default(), &d)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The Widgets' controller: status.replicas follows spec.replicas.
fn widget_controller(ns: &TestNamespace) -> tokio::task::JoinHandle<()> {
    let widgets: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &widget_resource());
    tokio::spawn(async move {
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
    })
}

fn idle_at(s: &Scaler, n: i32) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.stage == Stage::Idle && st.replicas == Some(n) && st.operation.is_none()
    })
}

/// The pids of the control plane's `kube-apiserver` and `etcd` (the cluster's pids file).
fn control_plane_pids(cluster: &Cluster) -> Vec<u32> {
    let pids = std::fs::read_to_string(cluster.dir().join("pids")).unwrap_or_default();
    pids.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, name)| matches!(*name, "kube-apiserver" | "etcd"))
        .filter_map(|(pid, _)| pid.parse().ok())
        .collect()
}

fn cpu_of(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|p| cpu_time(*p).ok()).sum()
}

/// `hoist_kube_requests_total` by `method,resource`.
async fn requests(op: &Operator) -> BTreeMap<String, f64> {
    samples(&op.metrics().await.unwrap(), "hoist_kube_requests_total")
}

fn print_requests(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, per: usize) {
    let mut total = 0.0;
    for (labels, v) in after {
        let d = v - before.get(labels).copied().unwrap_or(0.0);
        if d > 0.0 {
            println!("    {labels}: {d:.0} ({:.2} per Scaler)", d / per as f64);
            total += d;
        }
    }
    println!(
        "    total: {total:.0} ({:.2} per Scaler)",
        total / per as f64
    );
}

fn plugin_loads(text: &str) -> f64 {
    samples(text, "hoist_plugin_loads_total").values().sum()
}

/// `wasm` with one more custom section: another digest, the same component.
fn new_version(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"hoist-bench-version";
    let mut payload = vec![u8::try_from(name.len()).unwrap()];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut len = payload.len();
    loop {
        let byte = u8::try_from(len & 0x7f).unwrap();
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&payload);
    out
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::var("HOIST_BENCH_SCALERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let target = Target::from_env();
    let hook = std::env::var("HOIST_BENCH_HOOK").is_ok_and(|v| v == "1");
    println!("scale bench: {total} Scalers on {target:?}s, hook: {hook}");
    let cluster = Cluster::shared();
    let ns: TestNamespace = cluster.namespace("bench-scale").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    install_widget_crd(&ns.client).await.unwrap();
    let scalers = ns.api::<Scaler>();
    let noop = plugin_path("fixture-noop").unwrap();
    if hook {
        apply_plugin_configmap(&ns, "bench-plugin", &noop)
            .await
            .unwrap();
    }

    let t = Instant::now();
    for_each(total, |i| {
        let ns = &ns;
        async move { target.create(ns, &format!("t{i}")).await }
    })
    .await
    .unwrap();
    println!(
        "{total} targets created in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let controller = (target == Target::Widget).then(|| widget_controller(&ns));

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
    for_each(total, |i| {
        let scalers = scalers.clone();
        async move {
            let mut spec = json!({"targetRef": target.reference(&format!("t{i}")),
                "minReplicas": 1, "maxReplicas": 3});
            if hook {
                spec["hooks"] = json!({"plugin": {"configMap": "bench-plugin"}});
            }
            let s: Scaler = serde_json::from_value(json!({
                "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                "metadata": {"name": format!("s{i}")}, "spec": spec
            }))?;
            scalers.create(&PostParams::default(), &s).await?;
            anyhow::Ok(())
        }
    })
    .await
    .unwrap();
    wait_count(&scalers, total, "every Scaler adopted", |s| idle_at(s, 1))
        .await
        .unwrap();
    println!(
        "{total} Scalers created and adopted (Idle at 1) in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let m = memory(pid).unwrap();
    println!(
        "operator memory after adoption: VmRSS {:.1} MiB, VmHWM {:.1} MiB",
        m.rss_mib(),
        m.peak_mib()
    );

    // Idle CPU over a minute (the bench itself stays quiet meanwhile).
    let c0 = cpu_time(pid).unwrap();
    tokio::time::sleep(Duration::from_mins(1)).await;
    let idle = cpu_time(pid).unwrap() - c0;
    println!(
        "operator CPU while idle: {:.2} s over 60 s ({:.2}% of one core)",
        idle.as_secs_f64(),
        idle.as_secs_f64() / 60.0 * 100.0
    );

    // Every Scaler's desired count changes at once.
    let before = requests(&op).await;
    reset_peak(pid).unwrap();
    let control_plane = control_plane_pids(cluster);
    let cpu_before = (cpu_time(pid).unwrap(), cpu_of(&control_plane));
    let t = Instant::now();
    for_each(total, |i| {
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
    .await
    .unwrap();
    let written = t.elapsed();
    wait_count(&scalers, total, "every Scaler Idle at 2", |s| idle_at(s, 2))
        .await
        .unwrap();
    println!(
        "all {total} desired counts written in {:.1}s; all settled (Idle at 2) {:.1}s after the first write",
        written.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    let settled = t.elapsed().as_secs_f64();
    let (op_cpu, cp_cpu) = (
        cpu_time(pid).unwrap() - cpu_before.0,
        cpu_of(&control_plane) - cpu_before.1,
    );
    println!(
        "CPU during the change: operator {:.1} s, kube-apiserver + etcd {:.1} s (of {:.1} s wall on {} cores)",
        op_cpu.as_secs_f64(),
        cp_cpu.as_secs_f64(),
        settled,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );
    let m = memory(pid).unwrap();
    println!(
        "operator memory during the change: peak {:.1} MiB; after it VmRSS {:.1} MiB",
        m.peak_mib(),
        m.rss_mib()
    );
    let after = requests(&op).await;
    println!(
        "operator API requests of the change (hoist_kube_requests_total), by method and resource:"
    );
    print_requests(&before, &after, total);

    if hook {
        // Hot swap: a new version of the shared plugin.
        let bytes = new_version(&std::fs::read(&noop).unwrap(), "v2");
        let digest = sha256_hex(&bytes);
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("noop-v2.wasm");
        std::fs::write(&v2, &bytes).unwrap();
        let loads_before = plugin_loads(&op.metrics().await.unwrap());
        let before = requests(&op).await;
        reset_peak(pid).unwrap();
        let t = Instant::now();
        apply_plugin_configmap(&ns, "bench-plugin", &v2)
            .await
            .unwrap();
        wait_count(&scalers, total, "every Scaler on the new digest", |s| {
            s.status
                .as_ref()
                .and_then(|st| st.plugin.as_ref())
                .is_some_and(|p| p.digest == digest && p.accepted)
        })
        .await
        .unwrap();
        let took = t.elapsed();
        let m = memory(pid).unwrap();
        let loads = plugin_loads(&op.metrics().await.unwrap()) - loads_before;
        println!(
            "hot swap: all {total} Scalers on the new digest {:.1}s after the ConfigMap was applied; plugin loads (compilations): {loads:.0}; peak memory during the swap {:.1} MiB",
            took.as_secs_f64(),
            m.peak_mib()
        );
        println!("operator API requests of the swap:");
        print_requests(&before, &requests(&op).await, total);
    }

    if let Some(c) = controller {
        c.abort();
    }
    drop(op);
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(ns.client.clone())
        .delete(&ns.name, &DeleteParams::default())
        .await;
}
