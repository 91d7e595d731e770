//! trino-drain against real Trino 476 (`io.trino:trino-server`, Java 24+): a coordinator, and
//! one worker per StatefulSet pod bound to the pod's loopback IP, all with the `tpch`
//! catalog only (`tests/src/trino_server.rs`; `tests/trino/install` caches the server).
//!
//! One test, two paths over the same Scaler 3 → 1:
//! 1. PreScaling's deadline (4 s) is shorter than a drain (at least twice the 5 s
//!    `shutdown.grace-period`): the operation fails, on-failure puts both leaving workers back
//!    to ACTIVE, they stay ACTIVE, and no pod is deleted;
//! 2. an admin drains trino-2 by hand (once it is DRAINED, real Trino answers 400 to asking
//!    it again); with a 5 min deadline and a `tpch` query running, a retry finds trino-2
//!    drained and drains trino-1 behind the query: the StatefulSet is written only after
//!    both workers reported DRAINED (Trino's own log says when), each worker is stopped when
//!    its pod goes (as a kubelet would), and the query succeeds.
//!
//! Without `HOIST_TRINO_HOME` and `HOIST_TRINO_JAVA` the test skips, except under `CI=true`,
//! where it fails (`tests/run` exports both).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hoist_api::{OnFailure, Scaler, Stage};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, install_scaler_crd, plugin_path,
};
use hoist_tests::scenario::{LONG, create_statefulset, is_idle_at, record, set_desired, sts_ref};
use hoist_tests::trino::pod_ips;
use hoist_tests::trino_server::{
    Client, Install, StateRecorder, TrinoServer, free_port, start_cluster,
};
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// `shutdown.grace-period` of every server: a drain takes at least twice this.
const GRACE: Duration = Duration::from_secs(5);
/// Long enough to span the drain: 48 M rows generated and summed by three workers.
const QUERY: &str = "SELECT count(*), sum(quantity), sum(extendedprice) FROM tpch.sf8.lineitem";
/// Four JVMs starting on a shared machine.
const START: Duration = Duration::from_mins(3);
/// The success path: the query, then the drain after it.
const DRAIN: Duration = Duration::from_mins(5);

/// Trino at the StatefulSet's pod IPs.
struct Trino {
    coordinator: Arc<TrinoServer>,
    workers: BTreeMap<u32, Arc<TrinoServer>>,
    port: u16,
    client: Client,
}

impl Trino {
    fn logs(&self) -> String {
        let mut out = format!("--- coordinator\n{}\n", self.coordinator.log_tail(30));
        for w in self.workers.values() {
            let _ = write!(out, "--- {}\n{}\n", w.name(), w.log_tail(30));
        }
        out
    }

    fn addr(&self, ordinal: u32) -> SocketAddr {
        self.workers[&ordinal].addr()
    }
}

async fn start_trino(install: &Install, ips: &BTreeMap<u32, IpAddr>) -> Trino {
    let coordinator_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let coordinator = SocketAddr::new(coordinator_ip, free_port(coordinator_ip).unwrap());
    // One port for every worker (the plugin has one), free on the first pod IP.
    let port = free_port(ips[&0]).unwrap();
    let names: Vec<(String, IpAddr)> = ips
        .iter()
        .map(|(o, ip)| (format!("trino-{o}"), *ip))
        .collect();
    let started = Instant::now();
    let (coordinator, workers) = start_cluster(install, coordinator, &names, port, GRACE, START)
        .await
        .unwrap();
    eprintln!(
        "trino_real: coordinator and {} workers started in {:.1}s",
        workers.len(),
        started.elapsed().as_secs_f64()
    );
    Trino {
        coordinator,
        workers: ips.keys().copied().zip(workers).collect(),
        port,
        client: Client::new().unwrap(),
    }
}

fn stage(s: &Scaler) -> Option<Stage> {
    s.status.as_ref().map(|st| st.stage)
}

async fn wait_scaler(
    ns: &TestNamespace,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Scaler) -> bool,
) -> Scaler {
    let api = ns.api::<Scaler>();
    let check = &check;
    wait::for_value(timeout, &format!("Scaler trino: {what}"), || {
        let api = api.clone();
        async move {
            let s = api.get("trino").await?;
            Ok(check(&s).then_some(s))
        }
    })
    .await
    .unwrap()
}

async fn create_scaler(ns: &TestNamespace, port: u16) {
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
        "metadata": {"name": "trino"},
        "spec": {
            "targetRef": sts_ref("trino"), "minReplicas": 1, "maxReplicas": 3,
            "hooks": {"plugin": {"configMap": "trino-drain"},
                      "config": {"port": port, "pollIntervalMs": 1000}},
            // Shorter than any real drain: the first path fails.
            "stageTimeouts": {"preScaling": "4s"},
        }
    }))
    .unwrap();
    ns.api::<Scaler>()
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
}

/// Pods of the StatefulSet that exist and are not being deleted.
async fn live_pods(ns: &TestNamespace) -> Vec<String> {
    let list = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app=trino"))
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(ResourceExt::name_any)
        .collect()
}

/// What a kubelet does: stops a worker once its pod is being deleted or gone.
fn stop_workers_when_pods_go(
    ns: &TestNamespace,
    workers: Vec<Arc<TrinoServer>>,
) -> tokio::task::JoinHandle<()> {
    let pods = ns.api::<Pod>();
    tokio::spawn(async move {
        let mut left = workers;
        while !left.is_empty() {
            let mut still = Vec::new();
            for w in left {
                let gone = match pods.get_opt(w.name()).await {
                    Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
                    Ok(None) => true,
                    Err(_) => false,
                };
                if gone {
                    w.stop(Duration::from_secs(30)).await;
                } else {
                    still.push(w);
                }
            }
            left = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The wall-clock time an `Instant` of this process stands for.
fn wall(at: Instant) -> SystemTime {
    SystemTime::now() - at.elapsed()
}

/// When Trino logged `needle` on `w` (the first time), as wall-clock time.
fn logged_at(w: &TrinoServer, needle: &str) -> SystemTime {
    let times = w.log_times(needle);
    let (ts, _) = times
        .first()
        .unwrap_or_else(|| panic!("{} never logged {needle:?}:\n{}", w.name(), w.log_tail(40)));
    SystemTime::from(*ts)
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trino_drain_drains_real_trino_workers_behind_a_running_query() {
    let Some(install) = Install::from_env().unwrap() else {
        eprintln!(
            "trino_real: skipped, HOIST_TRINO_HOME and HOIST_TRINO_JAVA are unset \
             (HOIST_TRINO_HOME=$(tests/trino/install), HOIST_TRINO_JAVA=a Java 24+)"
        );
        return;
    };
    let cluster = Cluster::shared();
    let ns = cluster.namespace("trino-real").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let options = OperatorOptions {
        plugin_cache_dir: Some(
            cluster
                .dir()
                .join(format!("plugin-cache-trino-{}", std::process::id())),
        ),
        extra_args: vec!["--namespace".into(), ns.name.clone()],
        ..OperatorOptions::default()
    };
    let op = Operator::start(cluster, &options).await.unwrap();
    apply_plugin_configmap(&ns, "trino-drain", &plugin_path("trino-drain").unwrap())
        .await
        .unwrap();
    create_statefulset(&ns, "trino", 3).await.unwrap();
    let ips = pod_ips(&ns, "trino").await.unwrap();
    let trino = start_trino(&install, &ips).await;
    create_scaler(&ns, trino.port).await;
    wait_scaler(&ns, LONG, "Idle at 3", |s| is_idle_at(s, 3)).await;

    let started = Instant::now();
    a_drain_longer_than_the_deadline_fails_and_reactivates(&ns, &op, &trino).await;
    eprintln!(
        "trino_real: failure path took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    a_retry_drains_behind_a_query_then_shrinks(&ns, &op, &trino).await;
    eprintln!(
        "trino_real: success path took {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

async fn a_drain_longer_than_the_deadline_fails_and_reactivates(
    ns: &TestNamespace,
    op: &Operator,
    t: &Trino,
) {
    let recorders: BTreeMap<u32, StateRecorder> = [1, 2]
        .into_iter()
        .map(|o| (o, StateRecorder::start(t.addr(o)).unwrap()))
        .collect();
    set_desired(ns, "trino", 1).await.unwrap();
    let failed = wait_scaler(ns, LONG, "Failed, on-failure settled", |s| {
        stage(s) == Some(Stage::Failed)
            && s.status
                .as_ref()
                .and_then(|st| st.failure.as_ref())
                .is_some_and(|f| f.on_failure != OnFailure::Pending)
    })
    .await;
    let failure = failed.status.unwrap().failure.unwrap();
    assert_eq!(failure.stage, Stage::PreScaling, "{failure:?}");
    assert_eq!(failure.reason, "StageTimeout", "{failure:?}");
    assert_eq!(
        failure.on_failure,
        OnFailure::Done,
        "{failure:?}; operator log:\n{}",
        op.log()
    );
    // Back to ACTIVE, and still ACTIVE once a whole drain would have ended.
    tokio::time::sleep(2 * GRACE + Duration::from_secs(2)).await;
    for o in [0, 1, 2] {
        assert_eq!(
            t.client.state(t.addr(o)).await.unwrap(),
            "ACTIVE",
            "worker {o}; operator log:\n{}\n{}",
            op.log(),
            t.logs()
        );
    }
    for (o, r) in &recorders {
        let states = r.states();
        assert_eq!(
            states.first().map(String::as_str),
            Some("ACTIVE"),
            "{o}: {states:?}"
        );
        assert!(
            states.iter().any(|s| s == "DRAINING"),
            "worker {o} was asked to drain: {states:?}"
        );
        assert_eq!(
            states.last().map(String::as_str),
            Some("ACTIVE"),
            "{o}: {states:?}"
        );
    }
    let sts = ns.api::<StatefulSet>().get("trino").await.unwrap();
    assert_eq!(sts.spec.and_then(|s| s.replicas), Some(3));
    assert_eq!(live_pods(ns).await.len(), 3, "no pod deleted");
}

async fn a_retry_drains_behind_a_query_then_shrinks(ns: &TestNamespace, op: &Operator, t: &Trino) {
    admin_drains_trino_2(t).await;
    let query = t
        .client
        .start_query(t.coordinator.addr(), QUERY)
        .await
        .unwrap();
    wait::until(LONG, "the query to run splits", || {
        let p = query.progress();
        async move { Ok(p.state == "RUNNING" && p.running_splits > 0) }
    })
    .await
    .unwrap();
    let spec = record(ns.api::<StatefulSet>(), "trino", |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;
    let kubelet = stop_workers_when_pods_go(ns, vec![t.workers[&1].clone(), t.workers[&2].clone()]);

    let asked_at = Instant::now();
    ns.api::<Scaler>()
        .patch(
            "trino",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"hoist.dev/retry": "true"}},
                "spec": {"stageTimeouts": {"preScaling": "5m"}},
            })),
        )
        .await
        .unwrap();
    wait_scaler(ns, DRAIN, "Idle at 1", |s| is_idle_at(s, 1)).await;
    let q = query.wait_ended(LONG).await.unwrap();
    assert_eq!(
        (q.state.as_str(), q.error.as_deref()),
        ("FINISHED", None),
        "{q:?}\n{}",
        t.logs()
    );
    let rows = q.rows.first().and_then(|r| r[0].as_u64());
    assert!(rows.is_some_and(|n| n > 40_000_000), "{q:?}");
    eprintln!(
        "trino_real: the query ran {:.1}s after the retry was asked",
        q.ended_at.unwrap().duration_since(asked_at).as_secs_f64()
    );

    // The StatefulSet went 3 → 1 once, after both leaving workers reported DRAINED.
    let changes = spec.entries();
    assert_eq!(
        changes.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
        vec![Some(3), Some(1)],
        "operator log:\n{}",
        op.log()
    );
    let shrunk = wall(changes[1].0);
    let query_ended = wall(q.ended_at.unwrap());
    for o in [1, 2] {
        let w = &t.workers[&o];
        let drained = logged_at(w, "Worker State change: DRAINING -> DRAINED");
        assert!(
            drained < shrunk,
            "worker {o} drained at {drained:?}, after the StatefulSet shrank ({shrunk:?})"
        );
    }
    // hoist asked trino-1 while the query ran, and its drain waited for the query's tasks.
    let w1 = &t.workers[&1];
    let asked = logged_at(w1, "Worker State change requested: ACTIVE -> DRAINING");
    assert!(
        asked < query_ended,
        "trino-1 was asked before the query ended"
    );
    assert!(
        w1.log_times("NodeStateManager\tWaiting for ")
            .iter()
            .any(|(_, l)| !l.contains("Waiting for 0 active tasks")),
        "trino-1 had tasks of the query to wait for:\n{}",
        w1.log_tail(40)
    );
    tokio::time::timeout(LONG, kubelet).await.unwrap().unwrap();
    assert!(!t.workers[&1].running() && !t.workers[&2].running());
    assert_eq!(t.client.state(t.addr(0)).await.unwrap(), "ACTIVE");
    assert_eq!(live_pods(ns).await, vec!["trino-0".to_string()]);
}

/// An admin drains trino-2. Once it is DRAINED real Trino refuses to be asked again, so
/// trino-drain must read the state first and count it as asked.
async fn admin_drains_trino_2(t: &Trino) {
    let (status, body) = t.client.set_state(t.addr(2), "DRAINING").await.unwrap();
    assert_eq!(status, 200, "{body}");
    // Asking a DRAINING worker again changes nothing.
    let (status, body) = t.client.set_state(t.addr(2), "DRAINING").await.unwrap();
    assert_eq!(status, 200, "{body}");
    wait::until(LONG, "trino-2 to drain", || async {
        Ok(t.client.state(t.addr(2)).await? == "DRAINED")
    })
    .await
    .unwrap();
    let (status, body) = t.client.set_state(t.addr(2), "DRAINING").await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("Invalid state transition to DRAINING"),
        "{body}"
    );
}
