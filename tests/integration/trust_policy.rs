//! The trust boundary on the real control plane, with the real operator: cluster admins'
//! `HookPolicies` decide which plugins run in a namespace and where its hooks and Prometheus
//! queries may connect; what they refuse is refused whatever the Scaler says, and reported in
//! the Scaler's conditions and events.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use hoist_api::{Scaler, Stage, conditions};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, apply_policy, delete_policy,
    install_scaler_crd, plugin_path,
};
use hoist_tests::scenario::{LONG, create_statefulset, set_desired, sts_ref};
use hoist_tests::trino::pod_ips;
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

/// An operator watching only `ns`.
async fn operator(ns: &TestNamespace) -> Operator {
    let cache = Cluster::shared()
        .dir()
        .join(format!("plugin-cache-trust-{}", std::process::id()));
    Operator::start(
        Cluster::shared(),
        &OperatorOptions {
            plugin_cache_dir: Some(cache),
            extra_args: vec!["--namespace".into(), ns.name.clone()],
            ..OperatorOptions::default()
        },
    )
    .await
    .expect("hoist run starts")
}

/// A namespace only the policies its test writes select, with the CRDs and an operator.
async fn own_policy_env(prefix: &str) -> (TestNamespace, Operator) {
    let ns = Cluster::shared()
        .namespace_with_own_policy(prefix)
        .await
        .unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let op = operator(&ns).await;
    (ns, op)
}

async fn create_scaler(ns: &TestNamespace, name: &str, spec: Value) {
    let mut spec = spec;
    spec["targetRef"] = sts_ref(name);
    spec["maxReplicas"] = json!(10);
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

/// Waits until condition `type_` of Scaler `name` has `reason` (or, given as `~text`, a
/// message containing `text`); returns its message.
async fn wait_condition(ns: &TestNamespace, name: &str, type_: &str, reason: &str) -> String {
    let api = ns.api::<Scaler>();
    wait::for_value(LONG, &format!("Scaler {name}: {type_} {reason}"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            let found = s
                .status
                .as_ref()
                .and_then(|st| conditions::find(&st.conditions, type_))
                .filter(|c| match reason.strip_prefix('~') {
                    Some(text) => c.message.contains(text),
                    None => c.reason == reason,
                })
                .map(|c| c.message.clone());
            Ok(found)
        }
    })
    .await
    .unwrap()
}

async fn sts_replicas(ns: &TestNamespace, name: &str) -> Option<i32> {
    ns.api::<StatefulSet>()
        .get(name)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas)
}

async fn wait_idle_at(ns: &TestNamespace, name: &str, replicas: i32) {
    let api = ns.api::<Scaler>();
    wait::until(LONG, &format!("Scaler {name} Idle at {replicas}"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            Ok(s.status
                .as_ref()
                .is_some_and(|st| st.stage == Stage::Idle && st.replicas == Some(replicas))
                && s.spec.replicas == Some(replicas))
        }
    })
    .await
    .unwrap();
}

/// The notes of the Events about Scaler `name`, joined.
async fn event_notes(ns: &TestNamespace, name: &str) -> String {
    let list = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    list.items
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter_map(|e| e.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The sha256 the operator computed for a plugin ConfigMap (its annotation).
async fn digest_of(ns: &TestNamespace, config_map: &str) -> String {
    let cm = ns.api::<ConfigMap>().get(config_map).await.unwrap();
    cm.annotations()
        .get("hoist.dev/plugin-sha256")
        .cloned()
        .expect("hoist plugin pack annotates the digest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_no_policy_admits_never_runs_until_the_admin_adds_its_digest() {
    let (ns, op) = own_policy_env("trust-admit").await;
    let policy = format!("trust-admit-{}", ns.name);
    apply_policy(
        &ns,
        &policy,
        json!({"plugins": [{"sha256": "0".repeat(64), "name": "some other plugin"}],
               "egress": {"targetPods": true}}),
    )
    .await
    .unwrap();
    apply_plugin_configmap(&ns, "noop", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    let digest = digest_of(&ns, "noop").await;
    create_statefulset(&ns, "web", 2).await.unwrap();
    create_scaler(
        &ns,
        "web",
        json!({"hooks": {"plugin": {"configMap": "noop"}, "failurePolicy": "FailOpen"}}),
    )
    .await;
    let message = wait_condition(&ns, "web", conditions::HOOKS_READY, "PluginNotAdmitted").await;
    assert!(
        message.contains(&format!("HookPolicy {policy}")),
        "{message}"
    );
    assert!(message.contains(&digest), "{message}");

    // Asked to scale, nothing happens: failOpen does not skip a refused plugin.
    set_desired(&ns, "web", 3).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(sts_replicas(&ns, "web").await, Some(2), "{}", op.log());

    // The admin admits the digest: the operation runs, with no restart.
    apply_policy(
        &ns,
        &policy,
        json!({"plugins": [{"sha256": digest, "name": "noop"}], "egress": {"targetPods": true}}),
    )
    .await
    .unwrap();
    wait_idle_at(&ns, "web", 3).await;
    assert_eq!(sts_replicas(&ns, "web").await, Some(3));
    delete_policy(&ns, &policy).await;
}

/// The API server's address (`host:port`) from the test cluster's kubeconfig.
fn api_server() -> String {
    let kubeconfig = std::fs::read_to_string(Cluster::shared().kubeconfig()).unwrap();
    let server = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .expect("kubeconfig has a server")
        .trim();
    server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// A StatefulSet of 1 whose Scaler's pre-scale GETs `url` (fixture `forbidden-host`), with
/// `allowed` as the Scaler's own allow-list, asked to scale to 2.
async fn reach(ns: &TestNamespace, name: &str, url: &str, allowed: &str) {
    create_statefulset(ns, name, 1).await.unwrap();
    create_scaler(
        ns,
        name,
        json!({"hooks": {"plugin": {"configMap": "forbidden-host"},
                         "config": {"url": url},
                         "allowedHosts": [allowed]},
               "retryPolicy": {"maxAttempts": 1}}),
    )
    .await;
    wait_condition(ns, name, conditions::HOOKS_READY, "PluginReady").await;
    set_desired(ns, name, 2).await.unwrap();
}

/// Waits until Scaler `name` failed, and returns its events' notes.
async fn refused(ns: &TestNamespace, name: &str) -> String {
    let api = ns.api::<Scaler>();
    wait::until(LONG, &format!("Scaler {name} Failed"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            Ok(s.status
                .as_ref()
                .is_some_and(|st| st.stage == Stage::Failed))
        }
    })
    .await
    .unwrap();
    assert_eq!(sts_replicas(ns, name).await, Some(1), "nothing scaled");
    event_notes(ns, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_reach_neither_other_namespaces_nor_the_api_server_nor_metadata() {
    // Namespace A: no HookPolicy selects it, so hoist's builtin default applies (its own
    // names and its target's pods). The Scalers' own allowedHosts name each forbidden host:
    // a Scaler can only narrow what the cluster grants.
    let (a, op_a) = own_policy_env("trust-egress").await;
    let b = Cluster::shared().namespace("trust-other").await.unwrap();
    create_statefulset(&b, "db", 1).await.unwrap();
    let b_ip = pod_ips(&b, "db").await.unwrap()[&0];
    apply_plugin_configmap(
        &a,
        "forbidden-host",
        &plugin_path("fixture-forbidden-host").unwrap(),
    )
    .await
    .unwrap();
    let api = api_server();
    reach(
        &a,
        "other-ns",
        &format!("http://{b_ip}:8080/"),
        &b_ip.to_string(),
    )
    .await;
    reach(&a, "api", &format!("http://{api}/api"), &api).await;
    reach(
        &a,
        "metadata",
        "http://169.254.169.254/latest/meta-data/",
        "169.254.169.254",
    )
    .await;
    let other = refused(&a, "other-ns").await;
    assert!(other.contains("not granted"), "{other}\n{}", op_a.log());
    let api_notes = refused(&a, "api").await;
    assert!(api_notes.contains("HookRequestDenied"), "{api_notes}");
    let metadata = refused(&a, "metadata").await;
    assert!(
        metadata.contains("169.254.169.254 (not granted by the cluster policy)"),
        "{metadata}"
    );

    // Namespace C: the tests' policy grants all of 127.0.0.0/8, and still the API server and
    // the operator's own metrics port stay closed: the grant does not name them.
    let c = Cluster::shared().namespace("trust-loopback").await.unwrap();
    install_scaler_crd(&c.client).await.unwrap();
    let op_c = operator(&c).await;
    apply_plugin_configmap(
        &c,
        "forbidden-host",
        &plugin_path("fixture-forbidden-host").unwrap(),
    )
    .await
    .unwrap();
    let metrics = op_c.addr().to_string();
    reach(&c, "api", &format!("http://{api}/api"), &api).await;
    reach(
        &c,
        "metrics",
        &format!("http://{metrics}/metrics"),
        &metrics,
    )
    .await;
    let api_notes = refused(&c, "api").await;
    assert!(
        api_notes.contains("is the API server"),
        "{api_notes}\n{}",
        op_c.log()
    );
    let metrics_notes = refused(&c, "metrics").await;
    assert!(
        metrics_notes.contains("the operator's metrics port"),
        "{metrics_notes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_address_the_policies_do_not_grant_is_never_queried() {
    let (ns, op) = own_policy_env("trust-prom").await;
    // Every ordinary address is granted; the metadata address stays closed all the same.
    let policy = format!("trust-prom-{}", ns.name);
    apply_policy(
        &ns,
        &policy,
        json!({"allowAnyPlugin": true, "egress": {"cidrs": ["0.0.0.0/0"]}}),
    )
    .await
    .unwrap();
    create_statefulset(&ns, "web", 1).await.unwrap();
    create_scaler(
        &ns,
        "web",
        json!({"autoscaling": {"builtin": {"algorithm": "hpa", "decisionInterval": "1s", "metrics": [{"prometheus": {
            "address": "http://169.254.169.254:9090",
            "query": "sum(up)", "target": 1.0}}]}}}),
    )
    .await;
    let message = wait_condition(
        &ns,
        "web",
        conditions::METRICS_AVAILABLE,
        "~refused by the cluster's HookPolicies",
    )
    .await;
    assert!(
        message.contains("refused by the cluster's HookPolicies"),
        "{message}\n{}",
        op.log()
    );
    assert!(message.contains("link-local"), "{message}");
    delete_policy(&ns, &policy).await;
}
