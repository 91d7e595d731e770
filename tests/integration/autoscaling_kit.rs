//! Shared by the `autoscaling_*` integration tests (included with `#[path]`): a namespace with
//! the Scaler CRD and an operator watching only it, a StatefulSet target run by kwok, Scalers
//! from JSON, and waits on their conditions.
#![allow(dead_code, reason = "each test file uses part of the kit")]

use hoist_api::Scaler;
use hoist_api::conditions;
use hoist_tests::operator::{Operator, OperatorOptions, install_scaler_crd};
#[allow(unused_imports, reason = "each test file uses part of the kit")]
pub use hoist_tests::scenario::{
    LONG, create_statefulset, is_idle_at as idle_at, set_desired, sts_ref, wait_statefulset_ready,
};
use hoist_tests::{Cluster, TestNamespace, wait};
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Field manager of the tests' own writes.
pub const MANAGER: &str = "hoist-tests";

/// A namespace with the CRD installed and an operator watching only it.
pub struct Env {
    pub ns: TestNamespace,
    pub op: Operator,
}

pub async fn env(prefix: &str) -> Env {
    env_with(prefix, &[]).await
}

/// [`env`], with more `hoist run` arguments.
pub async fn env_with(prefix: &str, args: &[&str]) -> Env {
    let cluster = Cluster::shared();
    let ns = cluster.namespace(prefix).await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let mut extra_args = vec!["--namespace".to_owned(), ns.name.clone()];
    extra_args.extend(args.iter().map(|a| (*a).to_owned()));
    let op = Operator::start(
        cluster,
        &OperatorOptions {
            extra_args,
            env: vec![("RUST_LOG".into(), "info,kube=warn".into())],
            ..OperatorOptions::default()
        },
    )
    .await
    .expect("hoist run starts");
    Env { ns, op }
}

/// Server-side applies a Scaler `name` with `spec` (the test owns every field it sets).
pub async fn apply_scaler(ns: &TestNamespace, name: &str, spec: Value) {
    let scaler = json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
        "metadata": {"name": name}, "spec": spec
    });
    ns.api::<Scaler>()
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&scaler),
        )
        .await
        .unwrap();
}

/// Merge-patches the Scaler's spec.
pub async fn patch_spec(ns: &TestNamespace, name: &str, spec: Value) {
    ns.api::<Scaler>()
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .unwrap();
}

/// Waits until `check` holds for the Scaler; returns it.
pub async fn wait_scaler(
    env: &Env,
    name: &str,
    what: &str,
    check: impl Fn(&Scaler) -> bool,
) -> Scaler {
    let api = env.ns.api::<Scaler>();
    let check = &check;
    let got = wait::for_value(LONG, &format!("Scaler {name}: {what}"), || {
        let api = api.clone();
        async move {
            let s = api.get(name).await?;
            Ok(check(&s).then_some(s))
        }
    })
    .await;
    match got {
        Ok(s) => s,
        Err(e) => {
            let now = api.get(name).await.ok();
            panic!(
                "{e}\nScaler now: {}\noperator log:\n{}",
                serde_json::to_string_pretty(&now.map(|s| s.status)).unwrap_or_default(),
                env.op.log()
            )
        }
    }
}

/// The condition `type_` as (status, reason), if present.
pub fn condition(s: &Scaler, type_: &str) -> Option<(String, String)> {
    let st = s.status.as_ref()?;
    conditions::find(&st.conditions, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

/// Whether the condition is present with this status and reason.
pub fn has_condition(s: &Scaler, type_: &str, status: &str, reason: &str) -> bool {
    condition(s, type_).is_some_and(|(st, r)| st == status && r == reason)
}

/// The condition's message.
pub fn condition_message(s: &Scaler, type_: &str) -> String {
    s.status
        .as_ref()
        .and_then(|st| conditions::find(&st.conditions, type_))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Switches the Scaler `name` from `mode` to `fixed` and waits until the object hoist owned
/// for that mode (`owned`, same name) is gone and no condition in `gone_conditions` is left.
pub async fn switch_to_fixed_and_wait_gone<K>(
    env: &Env,
    name: &str,
    mode: &str,
    owned: &kube::Api<K>,
    gone_conditions: &[&str],
) where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    patch_spec(
        &env.ns,
        name,
        json!({"autoscaling": {mode: null, "fixed": {}}}),
    )
    .await;
    wait::until(
        LONG,
        &format!("the {mode} object deleted on mode change"),
        || {
            let owned = owned.clone();
            let name = name.to_string();
            async move { Ok(owned.get_opt(&name).await?.is_none()) }
        },
    )
    .await
    .unwrap();
    wait_scaler(env, name, "no autoscaling conditions in fixed mode", |s| {
        gone_conditions.iter().all(|c| condition(s, c).is_none())
    })
    .await;
}

/// What the tests of real metric paths start from: [`env`], KEDA in the cluster (operator and
/// metrics adapter), a real Prometheus, and the trino-drain plugin ConfigMap.
pub struct MetricsEnv {
    pub env: Env,
    pub keda: hoist_tests::keda::Keda,
    pub prom: hoist_tests::prometheus::Prometheus,
}

pub async fn metrics_env(prefix: &str) -> MetricsEnv {
    let env = env(prefix).await;
    let keda = hoist_tests::keda::Keda::in_cluster(Cluster::shared()).unwrap();
    let prom = hoist_tests::prometheus::Prometheus::start()
        .await
        .expect("a real Prometheus");
    let plugin = hoist_tests::operator::plugin_path("trino-drain").unwrap();
    hoist_tests::operator::apply_plugin_configmap(&env.ns, "trino-drain", &plugin)
        .await
        .unwrap();
    MetricsEnv { env, keda, prom }
}
