//! Hook secrets and TLS end to end: the real `hoist run` runs nifi-decommission against a fake
//! NiFi served over HTTPS with mutual TLS on pod 0's loopback IP (tests/src/nifi.rs). The login
//! comes from a Secret (`spec.hooks.secrets`), the CA bundle from a ConfigMap and the client
//! certificate from a kubernetes.io/tls Secret (`spec.hooks.tls`).
//!
//! 1. With all of it, scaling 3 → 1 disconnects, offloads and deletes the leaving nodes before
//!    the StatefulSet shrinks, every NiFi call is authorized, and the password appears nowhere
//!    in the Scaler, the namespace's Events or the operator's log.
//! 2. Without the client certificate the handshake fails, the operation fails saying so, and
//!    NiFi saw no request.
//! 3. With a CA that did not sign NiFi's certificate the operation fails with a certificate
//!    error.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use hoist_api::{
    CaBundleRef, HookSecret, HookTls, Hooks, KeyRef, OnFailure, PluginRef, Scaler, Stage,
};
use hoist_tests::nifi::{DELETED, NifiCluster, Pki, random_hex};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, install_scaler_crd, plugin_path,
};
use hoist_tests::scenario::{
    LONG, create_statefulset, is_idle_at, record, set_desired, sts_ref, wait_statefulset_ready,
};
use hoist_tests::trino::pod_ips;
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Resource};
use serde_json::json;

const NAME: &str = "nifi";
const USERNAME: &str = "admin";

struct Env {
    ns: TestNamespace,
    op: Operator,
}

async fn env(prefix: &str) -> Env {
    let cluster = Cluster::shared();
    let ns = cluster.namespace(prefix).await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let cache: PathBuf = cluster
        .dir()
        .join(format!("plugin-cache-tls-{}", std::process::id()));
    let opts = OperatorOptions {
        plugin_cache_dir: Some(cache),
        extra_args: vec!["--namespace".into(), ns.name.clone()],
        ..OperatorOptions::default()
    };
    let op = Operator::start(cluster, &opts)
        .await
        .expect("hoist run starts");
    Env { ns, op }
}

/// What the Scaler's `spec.hooks.tls` gets.
#[derive(Clone, Copy)]
struct Trust {
    /// The CA that signed NiFi's certificate (else one of another PKI).
    right_ca: bool,
    /// `clientCertificateSecret` set.
    client_cert: bool,
}

/// The fake NiFi on pod 0 of a StatefulSet of 3 and the password its login wants.
struct Setup {
    nifi: NifiCluster,
    password: String,
}

fn node_id(ordinal: u32) -> String {
    format!("node-{ordinal}-uuid")
}

async fn create<K>(ns: &TestNamespace, value: serde_json::Value)
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + k8s_openapi::serde::Serialize
        + k8s_openapi::serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let obj: K = serde_json::from_value(value).unwrap();
    ns.api::<K>()
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

fn hooks(port: u16, trust: Trust) -> Hooks {
    let secret = |name: &str| HookSecret {
        name: name.into(),
        secret_key_ref: KeyRef {
            name: "nifi-login".into(),
            key: name.into(),
        },
    };
    Hooks {
        plugin: PluginRef::config_map("nifi-decommission"),
        config: Some(json!({
            "port": port, "scheme": "https", "pollIntervalMs": 300,
            "credentials": {"usernameSecret": "username", "passwordSecret": "password"}
        })),
        secrets: vec![secret("username"), secret("password")],
        tls: Some(HookTls {
            ca_bundle: Some(CaBundleRef {
                config_map_key_ref: Some(KeyRef {
                    name: "nifi-ca".into(),
                    key: "ca.crt".into(),
                }),
                secret_key_ref: None,
            }),
            client_certificate_secret: trust.client_cert.then(|| "nifi-client".into()),
        }),
        ..Hooks::default()
    }
}

/// A StatefulSet of 3, the fake NiFi on pod 0's IP knowing the 3 nodes (by FQDN), the Secrets
/// and ConfigMap `trust` asks for, and a Scaler with nifi-decommission, Idle at 3.
async fn setup(e: &Env, trust: Trust) -> Setup {
    let ns = &e.ns;
    apply_plugin_configmap(
        ns,
        "nifi-decommission",
        &plugin_path("nifi-decommission").unwrap(),
    )
    .await
    .unwrap();
    create_statefulset(ns, NAME, 3).await.unwrap();
    let ips: BTreeMap<u32, IpAddr> = pod_ips(ns, NAME).await.unwrap();
    let pki = Pki::generate(&[ips[&0]]).unwrap();
    let password = format!("s3cr3t-{}", random_hex(12).unwrap());
    let nodes: Vec<(String, String)> = (0..3)
        .map(|o| {
            (
                node_id(o),
                format!("{NAME}-{o}.{NAME}.{}.svc.cluster.local", ns.name),
            )
        })
        .collect();
    let nifi = NifiCluster::start(ips[&0], &pki, USERNAME, &password, &nodes)
        .await
        .unwrap();
    let ca = if trust.right_ca {
        pki.ca_cert.clone()
    } else {
        Pki::generate(&[ips[&0]]).unwrap().ca_cert
    };
    create::<Secret>(
        ns,
        json!({"metadata": {"name": "nifi-login"},
        "stringData": {"username": USERNAME, "password": password}}),
    )
    .await;
    create::<ConfigMap>(
        ns,
        json!({"metadata": {"name": "nifi-ca"}, "data": {"ca.crt": ca}}),
    )
    .await;
    if trust.client_cert {
        create::<Secret>(
            ns,
            json!({"metadata": {"name": "nifi-client"},
            "type": "kubernetes.io/tls",
            "stringData": {"tls.crt": pki.client_cert, "tls.key": pki.client_key}}),
        )
        .await;
    }
    let hooks = serde_json::to_value(hooks(nifi.addr().port(), trust)).unwrap();
    create::<Scaler>(ns, json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": NAME},
        "spec": {"targetRef": sts_ref(NAME), "minReplicas": 1, "maxReplicas": 10, "hooks": hooks}
    }))
    .await;
    wait_scaler(ns, "Idle at 3", |s| is_idle_at(s, 3).then_some(())).await;
    Setup { nifi, password }
}

async fn wait_scaler<T>(ns: &TestNamespace, what: &str, check: impl Fn(&Scaler) -> Option<T>) -> T {
    let api = ns.api::<Scaler>();
    let check = &check;
    wait::for_value(LONG, &format!("Scaler {NAME}: {what}"), || {
        let api = api.clone();
        async move { Ok(check(&api.get(NAME).await?)) }
    })
    .await
    .unwrap()
}

/// Waits until the operation failed and its `on-failure` call settled (or `HooksReady` went
/// False) and returns the message.
async fn wait_failed(ns: &TestNamespace) -> String {
    wait_scaler(ns, "Failed", |s| {
        let st = s.status.as_ref()?;
        if st.stage == Stage::Failed {
            return st
                .failure
                .as_ref()
                .filter(|f| f.on_failure != OnFailure::Pending)
                .map(|f| format!("{}: {}", f.reason, f.message));
        }
        st.conditions
            .iter()
            .find(|c| {
                c.type_ == hoist_api::conditions::HOOKS_READY
                    && c.status == "False"
                    && !matches!(c.reason.as_str(), "PluginLoading" | "ValidatingConfig")
            })
            .map(|c| format!("{}: {}", c.reason, c.message))
    })
    .await
}

/// The object as `kubectl get -o yaml` shows it (every field, not only the typed ones).
async fn raw_yaml<K>(ns: &TestNamespace) -> String
where
    K: Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> =
        Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::erase::<K>(&()));
    let list = api.list(&ListParams::default()).await.unwrap();
    serde_yaml::to_string(&list.items).unwrap()
}

fn assert_absent(place: &str, text: &str, password: &str) {
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(password)).collect();
    assert!(lines.is_empty(), "the password is in {place}: {lines:#?}");
}

/// The password is in none of the Scaler, the namespace's Events and the operator's log.
async fn assert_password_nowhere(e: &Env, password: &str) {
    let scaler = raw_yaml::<Scaler>(&e.ns).await;
    assert!(
        scaler.contains("passwordSecret"),
        "not the Scaler: {scaler}"
    );
    assert_absent("the Scaler", &scaler, password);
    let events = raw_yaml::<Event>(&e.ns).await;
    assert!(events.contains("OperationStarted"), "no events: {events}");
    assert_absent("the Events", &events, password);
    let log = e.op.log();
    assert!(!log.is_empty(), "the operator logged nothing");
    assert_absent("the operator's log", &log, password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_decommissions_nifi_nodes_over_mutual_tls_with_a_secret_login() {
    let e = env("tls-ok").await;
    let trust = Trust {
        right_ca: true,
        client_cert: true,
    };
    let s = setup(&e, trust).await;
    let spec = record(e.ns.api::<StatefulSet>(), NAME, |s: &StatefulSet| {
        s.spec.as_ref().and_then(|s| s.replicas)
    })
    .await;

    set_desired(&e.ns, NAME, 1).await.unwrap();
    wait_scaler(&e.ns, "Idle at 1", |s| is_idle_at(s, 1).then_some(())).await;
    wait_statefulset_ready(&e.ns, NAME, 1).await.unwrap();

    let log = e.op.log();
    let expected: BTreeMap<String, String> = [
        (node_id(0), "CONNECTED".to_string()),
        (node_id(1), DELETED.to_string()),
        (node_id(2), DELETED.to_string()),
    ]
    .into();
    assert_eq!(s.nifi.node_states(), expected, "operator log:\n{log}");
    let changes = spec.entries();
    let values: Vec<Option<i32>> = changes.iter().map(|(_, v)| *v).collect();
    assert_eq!(values, [Some(3), Some(1)], "the StatefulSet shrank once");
    let shrunk_at = changes[1].0;
    for o in [1, 2] {
        let node = node_id(o);
        assert_eq!(
            s.nifi.statuses_of(&node),
            [
                "DISCONNECTING",
                "DISCONNECTED",
                "OFFLOADING",
                "OFFLOADED",
                DELETED
            ],
            "{node}"
        );
        let history = s.nifi.history();
        let deleted = history
            .iter()
            .find(|t| t.node == node && t.status == DELETED);
        assert!(
            deleted.is_some_and(|t| t.at < shrunk_at),
            "{node} deleted after the StatefulSet shrank"
        );
    }
    assert!(
        s.nifi.statuses_of(&node_id(0)).is_empty(),
        "the staying node is untouched"
    );

    let requests = s.nifi.requests();
    let first = requests.first().expect("NiFi saw requests");
    assert_eq!(
        (first.method.as_str(), first.path.as_str()),
        ("POST", "/nifi-api/access/token")
    );
    assert!(
        requests.iter().all(|r| r.authorized && r.status < 300),
        "every call logged in with the secret's password or carried its token: {requests:#?}"
    );
    assert!(s.nifi.tls_errors().is_empty(), "{:?}", s.nifi.tls_errors());
    assert_password_nowhere(&e, &s.password).await;
}

/// Scale 3 → 1 with `trust`; the operation fails before NiFi answers anything: returns the
/// failure message.
async fn scale_down_fails(prefix: &str, trust: Trust) -> String {
    let e = env(prefix).await;
    let s = setup(&e, trust).await;
    set_desired(&e.ns, NAME, 1).await.unwrap();
    let message = wait_failed(&e.ns).await;
    let log = e.op.log();
    let requests = s.nifi.requests();
    assert!(
        requests.iter().all(|r| !r.authorized),
        "NiFi saw authorized requests: {requests:#?}\n{message}\nlog:\n{log}"
    );
    assert!(
        requests.is_empty(),
        "no HTTP request gets through TLS: {requests:#?}"
    );
    assert!(
        !s.nifi.tls_errors().is_empty(),
        "NiFi saw no failed handshake: {message}"
    );
    let sts = e.ns.api::<StatefulSet>().get(NAME).await.unwrap();
    assert_eq!(
        sts.spec.and_then(|s| s.replicas),
        Some(3),
        "the StatefulSet is left alone"
    );
    assert!(
        s.nifi.node_states().values().all(|v| v == "CONNECTED"),
        "{:?}",
        s.nifi.node_states()
    );
    assert_password_nowhere(&e, &s.password).await;
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_client_certificate_the_handshake_fails_and_nifi_sees_nothing() {
    let trust = Trust {
        right_ca: true,
        client_cert: false,
    };
    let message = scale_down_fails("tls-nocert", trust).await;
    let lower = message.to_lowercase();
    assert!(
        ["certificate", "tls", "handshake"]
            .iter()
            .any(|w| lower.contains(w)),
        "the failure names the TLS error: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_ca_that_did_not_sign_nifi_s_certificate_the_call_fails() {
    let trust = Trust {
        right_ca: false,
        client_cert: true,
    };
    let message = scale_down_fails("tls-wrongca", trust).await;
    assert!(
        message.to_lowercase().contains("certificate"),
        "the failure names the certificate error: {message}"
    );
}
