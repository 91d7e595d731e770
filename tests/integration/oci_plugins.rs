//! Plugins from a real OCI registry: the CNCF Distribution registry on loopback with TLS and
//! basic auth made by the test (tests/src/registry.rs), `hoist plugin push` publishing, and the
//! real `hoist run` pulling with the credentials of a `kubernetes.io/dockerconfigjson` Secret.
//!
//! 1. A Python hook (the Python SDK's trino-drain example, 18 MB), pushed and pinned by its
//!    manifest digest; while it compiles, another Scaler of the same operator loads a plugin
//!    and finishes a scale-down (compilation is off the reconcile path). The Python hook then
//!    drains two fake Trino workers on the leaving pods' IPs during a 3 → 1 scale-down; a
//!    second push (the JavaScript SDK's example, 13 MB) and a new pin swap it without a
//!    restart: after a scale-up, the next 3 → 1 runs the JavaScript hook.
//! 2. Pulls that cannot succeed say why in `HooksReady` (no credentials, a component pin the
//!    artifact does not match, the registry down) and are retried: once the registry is back,
//!    the plugin loads and the Scaler scales.
//! 3. The cluster admin's `HookPolicy` applies to OCI plugins: the operator does not connect to
//!    a registry the namespace's egress grant does not name, and a pulled plugin whose digest
//!    no policy admits does not run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hoist_api::{Scaler, conditions};
use hoist_tests::operator::{
    Operator, OperatorOptions, apply_plugin_configmap, apply_policy, delete_policy, hoist_binary,
    install_scaler_crd, js_example_plugin, plugin_path, python_example_plugin,
};
use hoist_tests::registry::{Registry, USERNAME};
use hoist_tests::scenario::{
    LONG, create_statefulset, is_idle_at, set_desired, sts_ref, wait_statefulset_ready,
};
use hoist_tests::trino::{pod_ips, start_workers};
use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NAME: &str = "web";

/// What `hoist plugin push` printed: the pinned reference and the component's sha256.
struct Pushed {
    pinned: String,
    sha256: String,
}

/// Pushes fixture `plugin` to `repository:tag` with `hoist plugin push`, the password on stdin.
fn push(registry: &Registry, plugin: &str, repository_tag: &str) -> Pushed {
    push_file(registry, &plugin_path(plugin).unwrap(), repository_tag)
}

/// Pushes the component at `wasm` to `repository:tag`.
fn push_file(registry: &Registry, wasm: &Path, repository_tag: &str) -> Pushed {
    let wasm = wasm.to_path_buf();
    let mut child = Command::new(hoist_binary().unwrap())
        .args(["plugin", "push"])
        .arg(&wasm)
        .arg(format!("oci://{}/{repository_tag}", registry.host()))
        .args(["--username", USERNAME, "--password-stdin", "--ca-file"])
        .arg(registry.ca_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{}", registry.password()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "hoist plugin push failed: {}\nregistry log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        registry.log()
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    let pinned = lines.next().unwrap().to_owned();
    let sha256 = lines
        .next()
        .and_then(|l| l.strip_prefix("sha256 "))
        .unwrap()
        .to_owned();
    let repository = repository_tag.split(':').next().unwrap();
    assert!(
        pinned.starts_with(&format!("{}/{repository}@sha256:", registry.host())),
        "{pinned}"
    );
    assert_eq!(
        sha256,
        file_sha256(&wasm),
        "the sha256 printed is the component's"
    );
    Pushed { pinned, sha256 }
}

fn file_sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A namespace with the CRDs and an operator that trusts the registry's CA; the namespace is
/// selected only by policies its test writes when `own_policy`.
async fn env(prefix: &str, registry: &Registry, own_policy: bool) -> (TestNamespace, Operator) {
    let cluster = Cluster::shared();
    let ns = if own_policy {
        cluster.namespace_with_own_policy(prefix).await.unwrap()
    } else {
        cluster.namespace(prefix).await.unwrap()
    };
    install_scaler_crd(&ns.client).await.unwrap();
    let cache = cluster
        .dir()
        .join(format!("plugin-cache-oci-{prefix}-{}", std::process::id()));
    let op = Operator::start(
        cluster,
        &OperatorOptions {
            plugin_cache_dir: Some(cache),
            extra_args: vec![
                "--namespace".into(),
                ns.name.clone(),
                "--plugin-registry-ca".into(),
                registry.ca_file().display().to_string(),
            ],
            ..OperatorOptions::default()
        },
    )
    .await
    .expect("hoist run starts");
    (ns, op)
}

async fn create_pull_secret(ns: &TestNamespace, registry: &Registry) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": registry.docker_config_json()}
    }))
    .unwrap();
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

async fn create_scaler(ns: &TestNamespace, plugin: Value, config: Option<Value>) {
    create_scaler_named(ns, NAME, plugin, config).await;
}

/// A Scaler `name` of StatefulSet `name`, hooked by `plugin`.
async fn create_scaler_named(ns: &TestNamespace, name: &str, plugin: Value, config: Option<Value>) {
    let mut hooks = json!({"plugin": plugin});
    if let Some(config) = config {
        hooks["config"] = config;
    }
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": name},
        "spec": {"targetRef": sts_ref(name), "minReplicas": 1, "maxReplicas": 10,
                 "hooks": hooks}
    }))
    .unwrap();
    ns.api::<Scaler>()
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
}

async fn patch_config(ns: &TestNamespace, config: Value) {
    ns.api::<Scaler>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hooks": {"config": config}}})),
        )
        .await
        .unwrap();
}

async fn patch_plugin(ns: &TestNamespace, plugin: Value) {
    ns.api::<Scaler>()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hooks": {"plugin": plugin}}})),
        )
        .await
        .unwrap();
}

/// Whether the plugin with `sha256` is loaded: `HooksReady` names it, validated or about to be
/// (`validate-config` runs when an operation starts).
fn loaded(s: &Scaler, sha256: &str) -> bool {
    hooks_ready(s).is_some_and(|(_, reason, message)| {
        (reason == "PluginReady" || reason == "ValidatingConfig") && message.contains(&sha256[..12])
    })
}

/// `HooksReady` as (status, reason, message).
fn hooks_ready(s: &Scaler) -> Option<(String, String, String)> {
    let c = conditions::find(&s.status.as_ref()?.conditions, "HooksReady")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// How long a plugin may take to pull and compile: the 18 MB Python component compiles for
/// minutes in a debug build on a busy machine.
const COMPILE: Duration = Duration::from_mins(8);

async fn wait_scaler<T>(
    ns: &TestNamespace,
    op: &Operator,
    what: &str,
    check: impl Fn(&Scaler) -> Option<T>,
) -> T {
    wait_scaler_for(ns, op, LONG, what, check).await
}

async fn wait_scaler_for<T>(
    ns: &TestNamespace,
    op: &Operator,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Scaler) -> Option<T>,
) -> T {
    let api = ns.api::<Scaler>();
    let check = &check;
    let found = wait::for_value(timeout, &format!("Scaler {NAME}: {what}"), || {
        let api = api.clone();
        async move { Ok(api.get_opt(NAME).await?.as_ref().and_then(check)) }
    })
    .await;
    match found {
        Ok(v) => v,
        Err(e) => {
            let s = api.get_opt(NAME).await.ok().flatten();
            panic!(
                "{e:#}\nScaler status: {:?}\noperator log:\n{}",
                s.and_then(|s| s.status),
                op.log()
            )
        }
    }
}

/// Scales to `replicas` and waits until the StatefulSet runs them and the Scaler is Idle; the
/// plugin `validate-config` last checked must be `sha256`.
async fn scale(ns: &TestNamespace, op: &Operator, replicas: i32, sha256: &str) {
    set_desired(ns, NAME, replicas).await.unwrap();
    let s = wait_scaler(ns, op, &format!("Idle at {replicas}"), |s| {
        is_idle_at(s, replicas).then(|| s.clone())
    })
    .await;
    wait_statefulset_ready(ns, NAME, replicas).await.unwrap();
    let checked = s.status.and_then(|st| st.plugin).map(|p| p.digest);
    assert_eq!(
        checked.as_deref(),
        Some(sha256),
        "the operation ran this plugin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_python_hook_drains_a_scale_down_and_a_new_pin_swaps_it() {
    let registry = Registry::start().await.unwrap();
    let python = push_file(
        &registry,
        python_example_plugin().unwrap(),
        "hooks/trino-drain:py",
    );
    let (ns, op) = env("oci-swap", &registry, false).await;
    create_pull_secret(&ns, &registry).await;
    create_statefulset(&ns, NAME, 3).await.unwrap();
    let ips = pod_ips(&ns, NAME).await.unwrap();
    let (port, workers) = start_workers(&ips, &[1, 2], 2).await.unwrap();
    create_scaler(
        &ns,
        json!({"oci": {"reference": python.pinned, "pullSecret": "pull"}}),
        Some(json!({"port": port, "pollIntervalMs": 300})),
    )
    .await;

    // While the 18 MB component compiles (in the background, in a worker process), another
    // Scaler of the same operator loads its own plugin and finishes a 3 → 1 scale-down.
    let other = "other";
    create_statefulset(&ns, other, 3).await.unwrap();
    apply_plugin_configmap(&ns, "noop", &plugin_path("fixture-noop").unwrap())
        .await
        .unwrap();
    create_scaler_named(&ns, other, json!({"configMap": "noop"}), None).await;
    set_desired(&ns, other, 1).await.unwrap();
    let api = ns.api::<Scaler>();
    wait::for_value(LONG, "Scaler other: Idle at 1", || {
        let api = api.clone();
        async move {
            Ok(api
                .get_opt(other)
                .await?
                .filter(|s| is_idle_at(s, 1))
                .map(|_| ()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\noperator log:\n{}", op.log()));
    let web = api.get(NAME).await.unwrap();
    assert!(
        !loaded(&web, &python.sha256),
        "the other Scaler finished before the Python hook was compiled, so this proves \
         nothing about waiting for it; HooksReady: {:?}",
        hooks_ready(&web)
    );

    wait_scaler_for(
        &ns,
        &op,
        COMPILE,
        "Idle at 3, the Python hook loaded",
        |s| (is_idle_at(s, 3) && loaded(s, &python.sha256)).then_some(()),
    )
    .await;
    scale(&ns, &op, 1, &python.sha256).await;
    for (ordinal, worker) in &workers {
        assert_eq!(worker.state(), "DRAINED", "worker {ordinal} was drained");
    }

    // A new version: the JavaScript hook pushed under another tag, then the pin moves to it.
    let js = push_file(
        &registry,
        js_example_plugin().unwrap(),
        "hooks/trino-drain:js",
    );
    assert_ne!(python.pinned, js.pinned);
    patch_plugin(
        &ns,
        json!({"oci": {"reference": js.pinned, "pullSecret": "pull"}}),
    )
    .await;
    wait_scaler_for(&ns, &op, COMPILE, "the JavaScript hook loaded", |s| {
        loaded(s, &js.sha256).then_some(())
    })
    .await;
    drop(workers);
    scale(&ns, &op, 3, &js.sha256).await;
    let ips = pod_ips(&ns, NAME).await.unwrap();
    let (port_again, workers) = start_workers(&ips, &[1, 2], 2).await.unwrap();
    patch_config(&ns, json!({"port": port_again, "pollIntervalMs": 300})).await;
    scale(&ns, &op, 1, &js.sha256).await;
    for (ordinal, worker) in &workers {
        assert_eq!(
            worker.state(),
            "DRAINED",
            "worker {ordinal} was drained by the JS hook"
        );
    }
    assert!(
        op.log().contains("plugin pulled"),
        "the operator logs its pulls:\n{}",
        op.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_that_cannot_succeed_say_why_and_are_retried() {
    let mut registry = Registry::start().await.unwrap();
    let v1 = push(&registry, "fixture-noop", "hooks/drain:v1");
    let (ns, op) = env("oci-fail", &registry, false).await;
    create_statefulset(&ns, NAME, 3).await.unwrap();

    // No credentials: the registry answers 401, and the condition says the pull failed.
    create_scaler(&ns, json!({"oci": {"reference": v1.pinned}}), None).await;
    let (_, reason, message) = wait_scaler(&ns, &op, "HooksReady=False, pull failed", |s| {
        hooks_ready(s).filter(|(st, _, m)| st == "False" && m.contains("pulling failed"))
    })
    .await;
    assert_eq!(reason, "PluginInvalid");
    assert!(message.contains(&v1.pinned), "{message}");

    // A tag with a component pin the artifact does not match.
    create_pull_secret(&ns, &registry).await;
    let wrong = "0".repeat(64);
    patch_plugin(
        &ns,
        json!({"oci": {"reference": format!("{}/hooks/drain:v1", registry.host()), "pullSecret": "pull"},
               "sha256": wrong}),
    )
    .await;
    let (_, _, message) = wait_scaler(&ns, &op, "HooksReady=False, wrong pin", |s| {
        hooks_ready(s).filter(|(st, _, m)| st == "False" && m.contains("pins"))
    })
    .await;
    assert!(message.contains(&v1.sha256), "{message}");

    // The registry down: the pull fails, then succeeds once it is back.
    registry.stop();
    patch_plugin(
        &ns,
        json!({"oci": {"reference": v1.pinned, "pullSecret": "pull"}, "sha256": null}),
    )
    .await;
    wait_scaler(&ns, &op, "HooksReady=False, registry down", |s| {
        hooks_ready(s).filter(|(st, _, m)| st == "False" && m.contains("pulling failed"))
    })
    .await;
    registry.restart().await.unwrap();
    wait_scaler(
        &ns,
        &op,
        "the plugin loaded after the registry is back",
        |s| loaded(s, &v1.sha256).then_some(()),
    )
    .await;
    scale(&ns, &op, 1, &v1.sha256).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_policy_decides_which_registries_and_plugins() {
    let registry = Registry::start().await.unwrap();
    let v1 = push(&registry, "fixture-noop", "hooks/drain:v1");
    let (ns, op) = env("oci-policy", &registry, true).await;
    let policy = format!("oci-policy-{}", ns.name);
    // Any plugin, but no address: the registry on 127.0.0.1 is not granted.
    apply_policy(
        &ns,
        &policy,
        json!({"allowAnyPlugin": true, "egress": {"targetPods": true}}),
    )
    .await
    .unwrap();
    create_pull_secret(&ns, &registry).await;
    create_statefulset(&ns, NAME, 2).await.unwrap();
    create_scaler(
        &ns,
        json!({"oci": {"reference": v1.pinned, "pullSecret": "pull"}}),
        None,
    )
    .await;
    let (_, _, message) = wait_scaler(&ns, &op, "HooksReady=False, registry refused", |s| {
        hooks_ready(s).filter(|(st, _, m)| st == "False" && m.contains("HookPolicies"))
    })
    .await;
    assert!(message.contains(&registry.host()), "{message}");
    // The push asked for the manifest by tag (HEAD) and wrote it (PUT); a pull GETs it by
    // digest.
    assert_eq!(
        registry.log_lines_containing("GET /v2/hooks/drain/manifests/sha256:"),
        0,
        "the operator asked a registry it may not reach for the manifest:\n{}",
        registry.log()
    );

    // The registry granted, but only another plugin admitted: pulled, and refused.
    apply_policy(
        &ns,
        &policy,
        json!({"plugins": [{"sha256": "0".repeat(64), "name": "another"}],
               "egress": {"cidrs": ["127.0.0.0/8"], "targetPods": true}}),
    )
    .await
    .unwrap();
    let (_, reason, message) = wait_scaler(&ns, &op, "HooksReady=False, not admitted", |s| {
        hooks_ready(s).filter(|(st, r, _)| st == "False" && r == "PluginNotAdmitted")
    })
    .await;
    assert_eq!(reason, "PluginNotAdmitted");
    assert!(message.contains(&v1.sha256), "{message}");

    // Its digest admitted: it runs.
    apply_policy(
        &ns,
        &policy,
        json!({"plugins": [{"sha256": v1.sha256, "name": "noop"}],
               "egress": {"cidrs": ["127.0.0.0/8"], "targetPods": true}}),
    )
    .await
    .unwrap();
    scale(&ns, &op, 1, &v1.sha256).await;
    assert!(
        registry.log_lines_containing("GET /v2/hooks/drain/manifests/sha256:") >= 1,
        "once granted, the operator pulls by digest:\n{}",
        registry.log()
    );
    delete_policy(&ns, &policy).await;
}
