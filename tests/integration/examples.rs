//! The chart's autoscaling examples (`charts/hoist/examples/`), applied as shipped on the real
//! control plane and driven by their real metric paths. Only what names this cluster changes:
//! `metadata.namespace` (the test's namespace) and the Prometheus address (a real Prometheus on
//! loopback, serving the series the example's query asks for).
//!
//! - `web-kpa-zero.yaml`: a Deployment at 0 wakes from the Prometheus metric (requests waiting
//!   at the ingress) and grows on the pods metric each ready pod serves (KPA panic mode).
//! - `trino-keda.yaml`: KEDA (`tests/cluster/keda`) scales the workers on queued queries
//!   through its adapter's external metric, and back down through trino-drain (fake workers at
//!   the pods' IPs on the example's port 8080); the example's cron window decides the floor.
//!
//! `nifi-hpa.yaml` (CPU utilization) needs a resource metrics API (metrics-server and pods
//! that use CPU), which this control plane does not have; it is not driven here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

#[path = "autoscaling_kit.rs"]
mod kit;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hoist_api::Scaler;
use hoist_tests::prometheus::{Exporter, Prometheus};
use hoist_tests::trino::{TrinoWorker, pod_ips};
use hoist_tests::{TestNamespace, repo_root, wait};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use kit::{LONG, create_statefulset, idle_at};

/// The example file as the API server gets it, in namespace `ns`, with every Prometheus
/// address of it replaced by `prometheus`.
fn example(file: &str, ns: &str, prometheus: &str) -> Value {
    let path = repo_root().join("charts/hoist/examples").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut scaler: Value = serde_yaml::from_str(&text).unwrap();
    scaler["metadata"]["namespace"] = json!(ns);
    // (`get_mut`, not indexing: indexing a missing key would add it as null.)
    let list = |scaler: &mut Value, pointer: &str| -> Vec<Value> {
        scaler
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default()
    };
    let metrics = list(&mut scaler, "/spec/autoscaling/builtin/metrics");
    let triggers = list(&mut scaler, "/spec/autoscaling/keda/triggers");
    let metrics: Vec<Value> = metrics
        .into_iter()
        .map(|mut m| {
            if let Some(p) = m.get_mut("prometheus") {
                p["address"] = json!(prometheus);
            }
            m
        })
        .collect();
    let triggers: Vec<Value> = triggers
        .into_iter()
        .map(|mut t| {
            if t["type"] == "prometheus" {
                t["metadata"]["serverAddress"] = json!(prometheus);
            }
            t
        })
        .collect();
    if let Some(m) = scaler.pointer_mut("/spec/autoscaling/builtin/metrics") {
        *m = Value::Array(metrics);
    }
    if let Some(t) = scaler.pointer_mut("/spec/autoscaling/keda/triggers") {
        *t = Value::Array(triggers);
    }
    scaler
}

async fn apply_example(ns: &TestNamespace, scaler: &Value) {
    let name = scaler["metadata"]["name"].as_str().unwrap().to_owned();
    ns.api::<Scaler>()
        .patch(
            &name,
            &PatchParams::apply(kit::MANAGER).force(),
            &Patch::Apply(scaler),
        )
        .await
        .unwrap();
}

async fn wait_idle_at(env: &kit::Env, name: &str, n: i32, extra: &dyn Fn() -> String) -> Scaler {
    let api = env.ns.api::<Scaler>();
    let got = wait::for_value(LONG, &format!("Scaler {name} idle at {n}"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            Ok(idle_at(&s, n).then_some(s))
        }
    })
    .await;
    match got {
        Ok(s) => s,
        Err(e) => {
            let now = api.get_opt(name).await.ok().flatten().map(|s| s.status);
            panic!(
                "{e}\nScaler now: {}\n{}\nhoist log:\n{}",
                serde_json::to_string_pretty(&now).unwrap_or_default(),
                extra(),
                env.op.log()
            )
        }
    }
}

async fn create_deployment(ns: &TestNamespace, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "web"}]}
            }
        }
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &d)
        .await
        .unwrap();
}

/// Every running pod labelled `app=<name>` serves `metric` on `<pod IP>:9090/metrics`, the
/// pods sharing `total` evenly (as a load balancer spreads requests), until dropped.
struct PodLoad {
    task: tokio::task::JoinHandle<()>,
}

impl PodLoad {
    fn start(ns: &TestNamespace, name: &str, metric: &'static str, total: f64) -> Self {
        let pods = ns.api::<Pod>();
        let selector = format!("app={name}");
        let task = tokio::spawn(async move {
            let mut exporters: BTreeMap<IpAddr, Exporter> = BTreeMap::new();
            loop {
                if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
                    let ips: Vec<IpAddr> = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .filter_map(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok())
                        .collect();
                    exporters.retain(|ip, _| ips.contains(ip));
                    for ip in ips {
                        if let std::collections::btree_map::Entry::Vacant(e) = exporters.entry(ip)
                            && let Ok(x) = Exporter::start_at(SocketAddr::new(ip, 9090)).await
                        {
                            e.insert(x);
                        }
                    }
                    #[allow(clippy::cast_precision_loss, reason = "a handful of pods")]
                    let share = total / exporters.len().max(1) as f64;
                    for x in exporters.values() {
                        x.set(metric, share);
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
        });
        Self { task }
    }
}

impl Drop for PodLoad {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_kpa_zero_wakes_from_prometheus_and_grows_on_the_pods_metric() {
    let env = kit::env("ex-web").await;
    let ns = &env.ns;
    let prom = Prometheus::start().await.expect("a real Prometheus");
    create_deployment(ns, "web", 0).await;
    let scaler = example("web-kpa-zero.yaml", &ns.name, &prom.address());
    apply_example(ns, &scaler).await;
    let log = || prom.log();
    // Adopted at 0, and spec.replicas seeded: the seed is written after the status that says
    // Idle, so wait for both (reading the first Idle snapshot raced the seed).
    wait_idle_at(&env, "web", 0, &log).await;
    kit::wait_scaler(&env, "web", "spec.replicas seeded with 0", |s| {
        s.spec.replicas == Some(0)
    })
    .await;

    // Requests wait at the ingress: the prometheus metric wakes the Deployment (0 → 1).
    let waiting = "http_requests_waiting{service=\"web\"}";
    prom.exporter().set_page(&format!(
        "# TYPE http_requests_waiting gauge\n{waiting} 5\n"
    ));
    prom.wait_for(&format!("sum({waiting})"), 5.0)
        .await
        .unwrap();
    wait_idle_at(&env, "web", 1, &log).await;

    // The pods serve their in-flight requests on :9090/metrics: 30 in all, at a target of
    // 10 × 0.7 per pod, ask for 5.
    let _load = PodLoad::start(ns, "web", "http_requests_in_flight", 30.0);
    wait_idle_at(&env, "web", 5, &log).await;
}

/// Whether the example's cron window (weekdays 08:00–19:00 Europe/Berlin) is open now.
fn business_hours_now() -> bool {
    let now = jiff::Zoned::now().with_time_zone(jiff::tz::TimeZone::get("Europe/Berlin").unwrap());
    let weekday = now.weekday().to_monday_one_offset();
    weekday <= 5 && (8..19).contains(&now.hour())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trino_keda_scales_on_queued_queries_and_drains_on_the_way_down() {
    let kit::MetricsEnv { env, keda, prom } = kit::metrics_env("ex-trino").await;
    let ns = &env.ns;
    create_statefulset(ns, "trino-worker", 2).await.unwrap();
    // The series the example's query sums; its namespace label is the example's own.
    let queued = |n: u32| {
        format!(
            "# TYPE trino_execution_QueryManager_QueuedQueries gauge\ntrino_execution_QueryManager_QueuedQueries{{namespace=\"analytics\"}} {n}\n"
        )
    };
    prom.exporter().set_page(&queued(0));
    let query = "sum(trino_execution_QueryManager_QueuedQueries{namespace=\"analytics\"})";
    prom.wait_for(query, 0.0).await.unwrap();
    let scaler = example("trino-keda.yaml", &ns.name, &prom.address());
    apply_example(ns, &scaler).await;
    let extra = || keda.log_tail();
    let floor = |open: bool| if open { 8 } else { 2 };

    // 50 queued queries at 5 per worker ask for 10, above the cron floor of 8.
    prom.exporter().set_page(&queued(50));
    prom.wait_for(query, 50.0).await.unwrap();
    wait_idle_at(&env, "trino-worker", 10, &extra).await;
    kit::wait_statefulset_ready(ns, "trino-worker", 10)
        .await
        .unwrap();

    // Workers on the example's port, 8080, at every pod's IP; then the queue empties.
    let ips = pod_ips(ns, "trino-worker").await.unwrap();
    let mut workers = Vec::new();
    for (ordinal, ip) in &ips {
        workers.push((*ordinal, TrinoWorker::start(*ip, 8080, 1).await.unwrap()));
    }
    prom.exporter().set_page(&queued(0));
    prom.wait_for(query, 0.0).await.unwrap();
    let expected = floor(business_hours_now());
    wait_idle_at(&env, "trino-worker", expected, &extra).await;
    for (ordinal, worker) in &workers {
        let leaving = i32::try_from(*ordinal).unwrap() >= expected;
        assert_eq!(
            worker.drained_at().is_some(),
            leaving,
            "worker trino-worker-{ordinal}: drained only when it left"
        );
    }
}
