//! The chart's pods for real: `helm install` of charts/hoist with hoist's own image
//! (`deploy/image`) on the test cluster's real nodes (a kubelet each, on Debian's containerd
//! and runc, in a network namespace of its own: `tests/cluster/up DIR --real-nodes 2`). The two
//! replicas start from the image with the chart's security context, ServiceAccount token,
//! probes and volumes; the workload's pods stay on kwok's node.
//!
//! The leader scales a StatefulSet 3 → 1 through trino-drain (from the chart's plugin
//! ConfigMap); while the two leaving workers drain, the test deletes the leader's pod, and the
//! standby takes the lease and finishes the operation. What the runtime shows on the way: the
//! process's user, capabilities and read-only root (from /proc on the node), `hoist --version`
//! and a refused write to `/` from inside the container (exec through the API server), and the
//! plugin cache as a private directory in the kubelet's world-writable emptyDir.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use anyhow::{Context as _, Result, bail};
use hoist_api::{Scaler, Stage};
use hoist_tests::helm::{Installed, run_helm};
use hoist_tests::operator::plugin_path;
use hoist_tests::real_node::{Forward, RealNode, forward_into, real_nodes};
use hoist_tests::scenario::{LONG, create_statefulset, is_idle_at, sts_ref};
use hoist_tests::trino::{TrinoWorker, pod_ips, start_workers};
use hoist_tests::{Cluster, TestNamespace, repo_root, wait};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{AttachParams, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use serde_json::{Value, json};

const MANAGER: &str = "hoist-chart-pod-test";
/// The chart's default Lease name.
const LEASE: &str = "hoist-operator";

/// The API server's port, from the admin kubeconfig.
async fn api_port(cluster: &Cluster) -> Result<String> {
    let url = cluster.config().await?.cluster_url;
    url.port_u16()
        .map(|p| p.to_string())
        .context("the admin kubeconfig's server has no port")
}

/// The chart's values for this cluster: the image as `deploy/image` built it (the chart's
/// defaults), the pods on the real nodes on their network, one namespace watched, trino-drain
/// installed from the values.
async fn values(cluster: &Cluster, ns: &TestNamespace) -> Result<Value> {
    let wasm = std::fs::read(plugin_path("trino-drain")?)?;
    Ok(json!({
        "hostNetwork": true,
        "nodeSelector": {"hoist.dev/node": "real"},
        "tolerations": [{"key": "hoist.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        // No kube-proxy here: the Service address of the API server is not routed, so the
        // pods use the address the nodes reach it at (a forward into each node's namespace).
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
            {"name": "KUBERNETES_SERVICE_PORT", "value": api_port(cluster).await?},
        ],
        "watchNamespace": ns.name,
        // The chart's HookPolicy is cluster-scoped: it selects only this test's namespace.
        "defaultPolicy": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name}}},
        "logFormat": "json",
        "plugins": {"install": [{
            "name": "trino-drain",
            "wasmBase64": serde_json::to_value(k8s_openapi::ByteString(wasm))?,
        }]},
    }))
}

/// The release's pods, by name.
async fn operator_pods(ns: &TestNamespace, release: &str) -> Result<BTreeMap<String, Pod>> {
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/name=hoist,app.kubernetes.io/instance={release}"
        )))
        .await?;
    Ok(pods
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((p.metadata.name.clone()?, p)))
        .collect())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn lease_holder(ns: &TestNamespace) -> Result<Option<String>> {
    Ok(ns
        .api::<Lease>()
        .get_opt(LEASE)
        .await?
        .and_then(|l| l.spec?.holder_identity))
}

async fn log_of(ns: &TestNamespace, pod: &str) -> Result<String> {
    ns.api::<Pod>()
        .logs(
            pod,
            &LogParams {
                container: Some("hoist".into()),
                ..LogParams::default()
            },
        )
        .await
        .with_context(|| format!("reading the log of pod {pod} through the API server"))
}

/// Runs `command` in the pod's container through the API server (kubelet → containerd);
/// returns (stdout, stderr).
async fn exec(ns: &TestNamespace, pod: &str, command: &[&str]) -> Result<(String, String)> {
    let mut attached = ns
        .api::<Pod>()
        .exec(
            pod,
            command.iter().copied(),
            &AttachParams::default().stderr(true),
        )
        .await
        .with_context(|| format!("exec {command:?} in pod {pod}"))?;
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = attached.stdout() {
        tokio::io::AsyncReadExt::read_to_string(&mut out, &mut stdout).await?;
    }
    if let Some(mut err) = attached.stderr() {
        tokio::io::AsyncReadExt::read_to_string(&mut err, &mut stderr).await?;
    }
    attached.join().await?;
    Ok((stdout, stderr))
}

/// The process of `pod`'s container on this machine: `hoist run` with `POD_NAME=<pod>`.
fn container_process(pod: &str) -> Result<u32> {
    let wanted = format!("POD_NAME={pod}");
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let (Ok(cmdline), Ok(environ)) = (
            std::fs::read(entry.path().join("cmdline")),
            std::fs::read(entry.path().join("environ")),
        ) else {
            continue;
        };
        if cmdline.starts_with(b"/usr/bin/hoist\0run\0")
            && environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes())
        {
            return Ok(pid);
        }
    }
    bail!("no process of pod {pod} on this machine")
}

/// What the kernel says about the container's process: its ids, capabilities, no-new-privs,
/// seccomp, and a read-only root.
fn assert_confined(pid: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), "65532 65532 65532 65532", "{status}");
    assert_eq!(field("Gid"), "65532 65532 65532 65532", "{status}");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "{caps}: {status}");
    }
    assert_eq!(field("NoNewPrivs"), "1", "{status}");
    assert_eq!(
        field("Seccomp"),
        "2",
        "RuntimeDefault is a filter: {status}"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no / in mountinfo:\n{mountinfo}"));
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "the root is read-only: {root}"
    );
}

/// The plugin cache on the node: the kubelet's emptyDir is world-writable, the cache is a
/// directory of uid 65532 inside it that only that user can use, holding the compiled plugin.
fn assert_private_cache(node: &RealNode, pod: &Pod) {
    let uid = pod.metadata.uid.as_deref().unwrap();
    let volume = node
        .kubelet_root
        .join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~empty-dir/plugin-cache");
    let volume_mode = std::fs::metadata(&volume).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        volume_mode & 0o777,
        0o777,
        "{}: the kubelet makes emptyDirs world-writable",
        volume.display()
    );
    let cache = volume.join("uid-65532");
    let meta = std::fs::metadata(&cache).unwrap();
    assert_eq!(meta.uid(), 65532, "{}", cache.display());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o700,
        "{}",
        cache.display()
    );
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert!(entries > 0, "{} holds the compiled plugin", cache.display());
}

fn git_revision() -> String {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Fake Trino workers on three kwok pods, reachable from both real nodes' networks. They
/// stay DRAINING until the test lets them finish.
async fn workers(
    ns: &TestNamespace,
    nodes: &[RealNode],
) -> (u16, BTreeMap<u32, TrinoWorker>, Vec<Forward>) {
    create_statefulset(ns, "trino", 3).await.unwrap();
    let ips = pod_ips(ns, "trino").await.unwrap();
    assert_eq!(ips.len(), 3, "{ips:?}");
    let (port, workers) = start_workers(&ips, &[0, 1, 2], u32::MAX).await.unwrap();
    let mut forwards = Vec::new();
    for node in nodes {
        for w in workers.values() {
            forwards.push(forward_into(&node.netns, w.addr()).unwrap());
        }
    }
    (port, workers, forwards)
}

async fn wait_scaler(ns: &TestNamespace, what: &str, ok: impl Fn(&Scaler) -> bool) -> Scaler {
    let scalers = ns.api::<Scaler>();
    wait::for_value(LONG, what, || {
        let scalers = scalers.clone();
        let ok = &ok;
        async move {
            let s = scalers.get("trino").await?;
            if s.status
                .as_ref()
                .is_some_and(|st| st.stage == Stage::Failed)
            {
                bail!("the Scaler failed: {:?}", s.status);
            }
            Ok(ok(&s).then_some(s))
        }
    })
    .await
    .unwrap()
}

/// Cordons (or uncordons) a node, as `kubectl cordon` does.
async fn set_unschedulable(ns: &TestNamespace, node: &str, unschedulable: bool) {
    kube::Api::<Node>::all(ns.client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": unschedulable}})),
        )
        .await
        .unwrap();
}

async fn events_by(ns: &TestNamespace, instance: &str) -> Vec<String> {
    ns.api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(instance))
        .filter_map(|e| e.reason)
        .collect()
}

/// As whom and what the leader runs, from the inside: its start-up line, `hoist --version`
/// and a write to `/` in its container, and the kernel's view of its process.
async fn assert_runs_from_the_image(ns: &TestNamespace, leader: &str, standby: &str) {
    let log = log_of(ns, leader).await.unwrap();
    let starting: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "hoist run starting")
        .unwrap_or_else(|| panic!("no start-up line:\n{log}"));
    assert_eq!(starting["fields"]["uid"], 65532, "{starting}");
    assert_eq!(starting["fields"]["gid"], 65532, "{starting}");
    let revision = git_revision();
    assert_eq!(
        starting["fields"]["revision"], revision,
        "the image is from another revision: run deploy/image"
    );
    assert!(log.contains("caches synced; ready"), "{log}");
    assert!(
        log_of(ns, standby)
            .await
            .unwrap()
            .contains("waiting for the leader lease")
    );
    let (version, _) = exec(ns, leader, &["/usr/bin/hoist", "--version"])
        .await
        .unwrap();
    assert_eq!(
        version.trim(),
        format!("hoist {} (revision {revision})", env!("CARGO_PKG_VERSION"))
    );
    let (_, refused) = exec(
        ns,
        leader,
        &[
            "/usr/bin/hoist",
            "plugin",
            "check",
            "/usr/bin/hoist",
            "--cache-dir",
            "/",
        ],
    )
    .await
    .unwrap();
    assert!(
        refused.contains("Read-only file system"),
        "a write to / fails: {refused}"
    );
    assert_confined(container_process(leader).unwrap());
}

/// `helm install` on the real nodes; checks that two ready replicas run, one per real node,
/// and returns the release, its pods, the leader's and the standby's names.
async fn install<'a>(
    cluster: &'a Cluster,
    ns: &TestNamespace,
    nodes: &[RealNode],
) -> (Installed<'a>, BTreeMap<String, Pod>, String, String) {
    let release = ns.name.clone();
    let values_file = cluster.dir().join(format!("{release}-values.json"));
    std::fs::write(&values_file, values(cluster, ns).await.unwrap().to_string()).unwrap();
    run_helm(
        cluster,
        &[
            "install",
            &release,
            &repo_root().join("charts/hoist").to_string_lossy(),
            "--namespace",
            &ns.name,
            "--values",
            &values_file.to_string_lossy(),
            "--wait",
            "--timeout",
            "3m",
        ],
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nnode logs: {}",
            cluster.dir().join("nodes").display()
        )
    })
    .unwrap();
    let installed = Installed::new(cluster, &release, &ns.name);

    // Two ready replicas, one per real node; one holds the Lease, the other stands by.
    let pods = operator_pods(ns, &release).await.unwrap();
    assert_eq!(pods.len(), 2, "{:?}", pods.keys());
    let mut on_nodes: Vec<&str> = pods
        .values()
        .map(|p| p.spec.as_ref().unwrap().node_name.as_deref().unwrap())
        .collect();
    on_nodes.sort_unstable();
    let mut real: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).take(2).collect();
    real.sort_unstable();
    assert_eq!(on_nodes, real, "one replica per real node");
    assert!(pods.values().all(is_ready), "both pods Ready");
    let leader = wait::for_value(LONG, "a replica holds the Lease", || async {
        Ok(lease_holder(ns).await?.filter(|h| pods.contains_key(h)))
    })
    .await
    .unwrap();
    let standby = pods.keys().find(|p| **p != leader).unwrap().clone();

    (installed, pods, leader, standby)
}

/// The Scaler adopts the StatefulSet; a scale to 1 starts draining trino-1 and trino-2 (which
/// stay DRAINING until the test lets them finish).
async fn start_scale_down(ns: &TestNamespace, port: u16, workers: &BTreeMap<u32, TrinoWorker>) {
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": "trino"},
        "spec": {"targetRef": sts_ref("trino"), "minReplicas": 1, "maxReplicas": 3,
                 "hooks": {"plugin": {"configMap": "trino-drain"},
                           "config": {"port": port, "pollIntervalMs": 200}}}
    }))
    .unwrap();
    ns.api::<Scaler>()
        .patch(
            "trino",
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&scaler),
        )
        .await
        .unwrap();
    wait_scaler(ns, "the Scaler adopts 3 replicas", |s| is_idle_at(s, 3)).await;
    ns.api::<Scaler>()
        .patch_scale(
            "trino",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait::until(LONG, "trino-1 and trino-2 draining", || async {
        Ok(workers[&1].state() == "DRAINING" && workers[&2].state() == "DRAINING")
    })
    .await
    .unwrap();
}

/// trino-1 and trino-2 were drained before they went, trino-0 left alone; the old leader
/// started the operation, the standby finished it.
async fn assert_drained_and_handed_over(
    ns: &TestNamespace,
    workers: &BTreeMap<u32, TrinoWorker>,
    leader: &str,
    standby: &str,
) {
    let sts = ns.api::<StatefulSet>().get("trino").await.unwrap();
    assert_eq!(sts.spec.unwrap().replicas, Some(1));
    for (ordinal, w) in workers {
        let states: Vec<String> = w.history().into_iter().map(|t| t.state).collect();
        if *ordinal == 0 {
            assert_eq!(states, ["ACTIVE"], "trino-0 is left alone");
        } else {
            assert_eq!(states, ["ACTIVE", "DRAINING", "DRAINED"], "trino-{ordinal}");
        }
    }
    let started = events_by(ns, leader).await;
    assert!(
        started.iter().any(|r| r == "OperationStarted"),
        "{leader} started the operation: {started:?}"
    );
    let finished = events_by(ns, standby).await;
    assert!(
        finished.iter().any(|r| r == "OperationSucceeded"),
        "{standby} finished it: {finished:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_hoist_from_its_image_and_a_standby_finishes_what_the_deleted_leader_started()
 {
    let cluster = Cluster::shared();
    let nodes = real_nodes(cluster).unwrap();
    let ns = cluster.namespace("chart-pod").await.unwrap();
    // A failed run may have left one cordoned.
    for node in &nodes {
        set_unschedulable(&ns, &node.name, false).await;
    }
    assert!(
        nodes.len() >= 2,
        "two replicas need two real nodes: {nodes:?}"
    );
    let release = ns.name.clone();
    let (port, workers, _forwards) = workers(&ns, &nodes).await;

    let (installed, pods, leader, standby) = install(cluster, &ns, &nodes).await;
    assert_runs_from_the_image(&ns, &leader, &standby).await;

    start_scale_down(&ns, port, &workers).await;

    // The leader's node is drained mid-operation: cordoned, then its pod deleted. (Cordoned,
    // the node takes no replacement pod, so the standby, not a new replica, takes over.)
    let pods_api = ns.api::<Pod>();
    let leader_uid = pods[&leader].metadata.uid.clone().unwrap();
    let leader_node = pods[&leader]
        .spec
        .as_ref()
        .unwrap()
        .node_name
        .clone()
        .unwrap();
    set_unschedulable(&ns, &leader_node, true).await;
    pods_api
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    wait::until(LONG, "the standby holds the Lease", || async {
        Ok(lease_holder(&ns).await?.as_deref() == Some(standby.as_str()))
    })
    .await
    .unwrap();
    kube::runtime::wait::await_condition(
        pods_api.clone(),
        &leader,
        conditions::is_deleted(&leader_uid),
    )
    .await
    .unwrap();
    let polls_before = workers[&1].polls_while_draining();
    wait::until(
        LONG,
        "the new leader polls the draining workers",
        || async { Ok(workers[&1].polls_while_draining() > polls_before) },
    )
    .await
    .unwrap();
    for w in workers.values() {
        w.drain_after(2);
    }
    wait_scaler(&ns, "the Scaler back at Idle with 1 replica", |s| {
        is_idle_at(s, 1)
    })
    .await;

    assert_drained_and_handed_over(&ns, &workers, &leader, &standby).await;
    let standby_pod = pods_api.get(&standby).await.unwrap();
    let node = nodes
        .iter()
        .find(|n| Some(n.name.as_str()) == standby_pod.spec.as_ref().unwrap().node_name.as_deref())
        .unwrap();
    assert_private_cache(node, &standby_pod);
    let standby_log = log_of(&ns, &standby).await.unwrap();
    assert!(
        !standby_log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{standby_log}"
    );

    // Uncordoned, the node takes the Deployment's replacement pod; it stands by, ready.
    set_unschedulable(&ns, &leader_node, false).await;
    wait::until(LONG, "two ready replicas again", || async {
        let pods = operator_pods(&ns, &release).await?;
        Ok(pods.len() == 2 && pods.values().all(is_ready))
    })
    .await
    .unwrap();
    let deployment = ns
        .api::<Deployment>()
        .get(&format!("{release}-hoist"))
        .await
        .unwrap();
    assert_eq!(deployment.status.unwrap().ready_replicas, Some(2));
    installed.uninstall().unwrap();
}
