//! The Helm chart (charts/hoist) on the real control plane: `helm install` creates the CRD,
//! the operator Deployment, its ServiceAccount and RBAC, and a plugin ConfigMap from the
//! values; then the real `hoist run` binary, started with the chart's own arguments and a
//! token of the chart's ServiceAccount (TokenRequest API), adopts a StatefulSet and scales it
//! 2 → 1 through the trino-drain plugin from that ConfigMap. A permission the chart forgot
//! shows up as a failed operation or a "forbidden" in the operator's log.
//!
//! The samples in charts/hoist/examples are checked against the real CRD schema and CEL rules
//! (server-side apply, dry run, strict field validation), and their hook configurations
//! against the plugins' own `validate-config`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use hoist_api::{Scaler, Stage};
use hoist_tests::helm::{Installed, helm, run_helm};
use hoist_tests::operator::{Operator, OperatorOptions, hoist_binary, plugin_path};
use hoist_tests::trino::TrinoWorker;
use hoist_tests::{Cluster, TestNamespace, repo_root, wait};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DynamicObject, ListParams, Patch, PatchParams, PostParams, ValidationDirective};
use serde_json::{Value, json};

const MANAGER: &str = "hoist-chart-test";

/// A kubeconfig for the cluster that authenticates as `namespace/service_account` with a
/// token from the TokenRequest API (one hour), written next to the admin kubeconfig.
async fn service_account_kubeconfig(
    cluster: &Cluster,
    ns: &TestNamespace,
    service_account: &str,
) -> Result<PathBuf> {
    let accounts: Api<ServiceAccount> = ns.api();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let token = accounts
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .with_context(|| {
            format!(
                "TokenRequest for ServiceAccount {}/{service_account}",
                ns.name
            )
        })?
        .status
        .context("the TokenRequest has no status")?
        .token;
    let admin: Value = serde_yaml::from_str(&std::fs::read_to_string(cluster.kubeconfig())?)
        .context("parsing the admin kubeconfig")?;
    let cluster_entry = admin["clusters"][0].clone();
    let cluster_name = cluster_entry["name"]
        .as_str()
        .context("the admin kubeconfig names no cluster")?
        .to_string();
    let user = format!("system:serviceaccount:{}:{service_account}", ns.name);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster_entry],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": cluster_name, "user": user, "namespace": ns.name}}],
        "current-context": "sa",
    });
    let path = cluster
        .dir()
        .join(format!("kubeconfig-{}-{service_account}", ns.name));
    std::fs::write(&path, serde_yaml::to_string(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The arguments of `hoist run` in the chart's Deployment, minus the ones the test kit sets
/// itself (endpoint address, leader election switch, cache directory) and the log format
/// (the kit reads the text log).
fn chart_run_args(deployment: &Deployment) -> Vec<String> {
    let container = &deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let args = container.args.clone().unwrap_or_default();
    assert_eq!(
        args.first().map(String::as_str),
        Some("run"),
        "the chart runs `hoist run`: {args:?}"
    );
    args.into_iter()
        .skip(1)
        .filter(|a| {
            ![
                "--metrics-addr",
                "--leader-elect",
                "--plugin-cache-dir",
                "--log-format",
            ]
            .iter()
            .any(|kit| a.starts_with(kit))
        })
        .collect()
}

async fn scaler_stage(api: &Api<Scaler>, name: &str) -> Result<(Stage, Option<i32>)> {
    let status = api.get(name).await?.status.unwrap_or_default();
    Ok((status.stage, status.replicas))
}

/// helm install (CRDs, RBAC, the Deployment whose pods kwok runs, trino-drain as a plugin
/// ConfigMap from the values) and checks of what it made; returns the `hoist run` arguments
/// of the chart's Deployment.
async fn install_chart(
    cluster: &Cluster,
    ns: &TestNamespace,
    release: &str,
    fullname: &str,
) -> Vec<String> {
    let wasm = plugin_path("trino-drain").unwrap();
    let b64 = cluster.dir().join(format!("{release}-trino-drain.b64"));
    // base64, as `base64 -w0` writes it (k8s-openapi's ByteString serializes to exactly that).
    let encoded =
        serde_json::to_value(k8s_openapi::ByteString(std::fs::read(&wasm).unwrap())).unwrap();
    std::fs::write(&b64, encoded.as_str().unwrap()).unwrap();
    run_helm(
        cluster,
        &[
            "install",
            release,
            &repo_root().join("charts/hoist").to_string_lossy(),
            "--namespace",
            &ns.name,
            "--set",
            "plugins.install[0].name=trino-drain",
            // The chart's HookPolicy is cluster-scoped: it selects only this namespace.
            "--set",
            &format!(
                "defaultPolicy.namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name={}",
                ns.name
            ),
            "--set-file",
            &format!("plugins.install[0].wasmBase64={}", b64.display()),
            "--wait",
            "--timeout",
            "2m",
        ],
    )
    .unwrap();

    // The ConfigMap the chart rendered is the one `hoist plugin pack` makes.
    let packed = Command::new(hoist_binary().unwrap())
        .args(["plugin", "pack"])
        .arg(&wasm)
        .args(["--name", "trino-drain", "--namespace", &ns.name])
        .output()
        .unwrap();
    assert!(packed.status.success(), "hoist plugin pack: {packed:?}");
    let packed: ConfigMap = serde_yaml::from_slice(&packed.stdout).unwrap();
    let installed = ns.api::<ConfigMap>().get("trino-drain").await.unwrap();
    assert_eq!(installed.binary_data, packed.binary_data, "binaryData");
    let annotation = |cm: &ConfigMap| {
        cm.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("hoist.dev/plugin-sha256").cloned())
    };
    assert_eq!(annotation(&installed), annotation(&packed));
    assert_eq!(
        installed
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("hoist.dev/plugin"))
            .map(String::as_str),
        Some("trino-drain")
    );

    // The Deployment runs its replicas as the chart's ServiceAccount.
    let deployment = ns.api::<Deployment>().get(fullname).await.unwrap();
    let pod_spec = deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(pod_spec.service_account_name.as_deref(), Some(fullname));
    assert_eq!(deployment.spec.as_ref().unwrap().replicas, Some(2));
    chart_run_args(&deployment)
}

/// A StatefulSet `trino` of two Trino workers: real HTTP servers on the pods' loopback IPs.
async fn trino_workers(ns: &TestNamespace) -> Vec<(String, TrinoWorker)> {
    let sts: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "trino"},
        "spec": {"replicas": 2, "serviceName": "trino", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "trino"}},
                 "template": {"metadata": {"labels": {"app": "trino"}},
                              "spec": {"containers": [{"name": "worker", "image": "trinodb/trino"}]}}}
    }))
    .unwrap();
    let statefulsets: Api<StatefulSet> = ns.api();
    statefulsets
        .patch("trino", &PatchParams::apply(MANAGER), &Patch::Apply(&sts))
        .await
        .unwrap();
    let pods: Api<Pod> = ns.api();
    let ips = wait::for_value(Duration::from_mins(1), "2 trino pods with IPs", || {
        let pods = pods.clone();
        async move {
            let list = pods
                .list(&ListParams::default().labels("app=trino"))
                .await?;
            let mut ips: Vec<(String, String)> = list
                .items
                .iter()
                .filter_map(|p| {
                    let ip = p.status.as_ref()?.pod_ip.clone()?;
                    Some((p.metadata.name.clone()?, ip))
                })
                .collect();
            ips.sort();
            Ok((ips.len() == 2).then_some(ips))
        }
    })
    .await
    .unwrap();
    let mut workers = Vec::new();
    for (name, ip) in &ips {
        workers.push((
            name.clone(),
            TrinoWorker::start(ip.parse().unwrap(), 8080, 2)
                .await
                .unwrap(),
        ));
    }
    wait::until(Duration::from_mins(1), "the StatefulSet ready at 2", || {
        let statefulsets = statefulsets.clone();
        async move {
            let s = statefulsets.get("trino").await?;
            Ok(s.status.and_then(|s| s.ready_replicas) == Some(2))
        }
    })
    .await
    .unwrap();
    workers
}

/// A negative control: the namespace's default ServiceAccount has none of hoist's
/// permissions, and the operator refuses to start with it. (So a token really is the
/// ServiceAccount's, and the chart's RBAC is what lets the operator work.)
async fn default_service_account_is_refused(cluster: &Cluster, ns: &TestNamespace) {
    let default_kubeconfig = service_account_kubeconfig(cluster, ns, "default")
        .await
        .unwrap();
    let refused = Operator::start(
        cluster,
        &OperatorOptions {
            kubeconfig: Some(default_kubeconfig),
            extra_args: vec!["--namespace".into(), ns.name.clone()],
            ..OperatorOptions::default()
        },
    )
    .await
    .expect_err("the default ServiceAccount cannot run hoist");
    assert!(
        format!("{refused:#}").contains("forbidden"),
        "the refusal names the missing permission: {refused:#}"
    );
}

/// Adopts the StatefulSet with a Scaler using the chart-installed trino-drain, then scales
/// it 2 → 1 (as an HPA would, through /scale) and waits until the operation is done.
async fn scale_trino_down(ns: &TestNamespace, operator: &Operator) {
    let scalers: Api<Scaler> = ns.api();
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": "trino"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "trino"},
                 "minReplicas": 1, "maxReplicas": 3,
                 "hooks": {"plugin": {"configMap": "trino-drain"},
                           "config": {"port": 8080, "pollIntervalMs": 200}}}
    }))
    .unwrap();
    wait::until(Duration::from_mins(1), "the Scaler API served", || {
        let scalers = scalers.clone();
        let scaler = scaler.clone();
        async move {
            scalers
                .patch(
                    "trino",
                    &PatchParams::apply(MANAGER),
                    &Patch::Apply(&scaler),
                )
                .await?;
            Ok(true)
        }
    })
    .await
    .unwrap();
    let log_on_failure = |e: anyhow::Error| -> anyhow::Error {
        anyhow::anyhow!("{e:#}\noperator log:\n{}", operator.log())
    };
    wait::until(
        Duration::from_mins(1),
        "the Scaler adopts 2 replicas",
        || {
            let scalers = scalers.clone();
            async move { Ok(scaler_stage(&scalers, "trino").await? == (Stage::Idle, Some(2))) }
        },
    )
    .await
    .map_err(log_on_failure)
    .unwrap();

    scalers
        .patch_scale(
            "trino",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait::until(
        Duration::from_mins(2),
        "the Scaler back at Idle with 1 replica",
        || {
            let scalers = scalers.clone();
            async move {
                let (stage, replicas) = scaler_stage(&scalers, "trino").await?;
                if stage == Stage::Failed {
                    bail!(
                        "the Scaler failed: {:?}",
                        scalers.get("trino").await?.status
                    );
                }
                Ok((stage, replicas) == (Stage::Idle, Some(1)))
            }
        },
    )
    .await
    .map_err(log_on_failure)
    .unwrap();
}

/// A Deployment `name` of `replicas` pods (kwok runs them).
async fn deployment(ns: &TestNamespace, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "app", "image": "example.com/app"}]}}}
    }))
    .unwrap();
    ns.api::<Deployment>()
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&d))
        .await
        .unwrap();
}

async fn apply_scaler(ns: &TestNamespace, name: &str, spec: Value) {
    let scaler = json!({"apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                        "metadata": {"name": name}, "spec": spec});
    ns.api::<Scaler>()
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&scaler))
        .await
        .unwrap();
}

/// `hpa` mode as the chart's ServiceAccount: hoist creates the HPA (targeting the Scaler) and
/// deletes it when the mode changes.
async fn owned_hpa_under_the_chart_rbac(ns: &TestNamespace) {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    deployment(ns, "web", 1).await;
    let target = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"});
    apply_scaler(
        ns,
        "web",
        json!({"targetRef": target, "minReplicas": 1, "maxReplicas": 4,
               "autoscaling": {"hpa": {"metrics": [{"type": "Resource", "resource": {"name": "cpu",
                   "target": {"type": "Utilization", "averageUtilization": 70}}}]}}}),
    )
    .await;
    let hpas: Api<HorizontalPodAutoscaler> = ns.api();
    let owned = ListParams::default().labels(&format!("{}=web", hoist_api::SCALER_LABEL));
    let hpa = wait::for_value(Duration::from_mins(1), "the owned HPA", || {
        let hpas = hpas.clone();
        let owned = owned.clone();
        async move { Ok(hpas.list(&owned).await?.items.into_iter().next()) }
    })
    .await
    .unwrap();
    let spec = hpa.spec.unwrap();
    assert_eq!(
        (
            spec.scale_target_ref.kind.as_str(),
            spec.scale_target_ref.name.as_str()
        ),
        ("Scaler", "web")
    );
    assert_eq!(spec.max_replicas, 4);
    apply_scaler(
        ns,
        "web",
        json!({"targetRef": target, "minReplicas": 1, "maxReplicas": 4,
               "autoscaling": {"fixed": {}}}),
    )
    .await;
    wait::until(Duration::from_mins(1), "the owned HPA deleted", || {
        let hpas = hpas.clone();
        let owned = owned.clone();
        async move { Ok(hpas.list(&owned).await?.items.is_empty()) }
    })
    .await
    .unwrap();
}

/// `builtin` mode as the chart's ServiceAccount: each pod of a Deployment serves a metric on its
/// own IP; hoist scrapes it, writes the Scaler's /scale (25 in flight, 10 per pod: 3) and the
/// Deployment follows.
async fn builtin_under_the_chart_rbac(ns: &TestNamespace) {
    deployment(ns, "api", 1).await;
    let pods: Api<Pod> = ns.api();
    let ip = wait::for_value(Duration::from_mins(1), "the api pod's IP", || {
        let pods = pods.clone();
        async move {
            let list = pods.list(&ListParams::default().labels("app=api")).await?;
            Ok(list.items.into_iter().find_map(|p| p.status?.pod_ip))
        }
    })
    .await
    .unwrap();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async { "# TYPE inflight gauge\ninflight 25\n" }),
    );
    let listener = tokio::net::TcpListener::bind((ip.parse::<std::net::IpAddr>().unwrap(), 9090))
        .await
        .unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    apply_scaler(
        ns,
        "api",
        json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
               "minReplicas": 1, "maxReplicas": 3,
               "autoscaling": {"builtin": {"algorithm": "hpa", "decisionInterval": "1s",
                   "metrics": [{"pods": {"port": 9090, "metricName": "inflight", "target": 10}}]}}}),
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    let scalers: Api<Scaler> = ns.api();
    wait::until(Duration::from_mins(2), "builtin scales api to 3", || {
        let deployments = deployments.clone();
        let scalers = scalers.clone();
        async move {
            let desired = scalers.get("api").await?.spec.replicas;
            let d = deployments.get("api").await?;
            Ok(desired == Some(3) && d.spec.and_then(|s| s.replicas) == Some(3))
        }
    })
    .await
    .unwrap();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_and_its_service_account_runs_the_operator() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("chart").await.unwrap();
    let release = ns.name.clone();
    let fullname = format!("{release}-hoist");

    let run_args = install_chart(cluster, &ns, &release, &fullname).await;
    let installed = Installed::new(cluster, &release, &ns.name);

    default_service_account_is_refused(cluster, &ns).await;

    let workers = trino_workers(&ns).await;
    let statefulsets: Api<StatefulSet> = ns.api();

    // The operator as the chart runs it: the chart's arguments, POD_NAME/POD_NAMESPACE as the
    // downward API sets them, and the chart's ServiceAccount. The chart's default is the
    // release's namespace only: `--namespace` and a Role there.
    let kubeconfig = service_account_kubeconfig(cluster, &ns, &fullname)
        .await
        .unwrap();
    let identity = format!("{release}-operator-0");
    assert!(
        run_args.contains(&format!("--namespace={}", ns.name)),
        "the chart watches its own namespace by default: {run_args:?}"
    );
    let extra_args = run_args;
    let operator = Operator::start(
        cluster,
        &OperatorOptions {
            leader_elect: true,
            kubeconfig: Some(kubeconfig),
            extra_args,
            env: vec![
                ("POD_NAME".into(), identity.clone()),
                ("POD_NAMESPACE".into(), ns.name.clone()),
            ],
            ..OperatorOptions::default()
        },
    )
    .await
    .unwrap();

    scale_trino_down(&ns, &operator).await;
    owned_hpa_under_the_chart_rbac(&ns).await;
    builtin_under_the_chart_rbac(&ns).await;
    assert_eq!(
        statefulsets
            .get("trino")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(1)
    );

    // trino-1 was drained before it went; trino-0 was left alone.
    for (name, worker) in &workers {
        let states: Vec<String> = worker.history().into_iter().map(|t| t.state).collect();
        if name == "trino-1" {
            assert_eq!(states, ["ACTIVE", "DRAINING", "DRAINED"], "{name}");
        } else {
            assert_eq!(states, ["ACTIVE"], "{name}");
        }
    }

    // This operator (by its identity) did the work and published the events; nothing it
    // tried was forbidden.
    let events: Api<Event> = ns.api();
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_instance.as_deref() == Some(identity.as_str()))
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "Adopted",
        "ConfigAccepted",
        "OperationStarted",
        "Scaled",
        "OperationSucceeded",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "event {reason} from {identity}; got {reasons:?}"
        );
    }
    let log = operator.log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something:\n{log}"
    );
    assert!(
        operator.metrics().await.unwrap().contains("hoist_leader 1"),
        "the operator leads through the chart's Lease"
    );
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> = ns.api();
    let holder = lease
        .get("hoist-operator")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(identity.as_str()));

    drop(operator);
    installed.uninstall().unwrap();
}

/// Every sample Scaler in charts/hoist/examples is accepted by the API server's CRD schema
/// and CEL rules, and its hook configuration by the plugin it names.
#[tokio::test]
async fn chart_examples_are_valid_scalers() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("chart-examples").await.unwrap();
    hoist_tests::operator::install_scaler_crd(&ns.client)
        .await
        .unwrap();
    let dir = repo_root().join("charts/hoist/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "examples: {files:?}");

    let scalers: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &kube::api::ApiResource::erase::<Scaler>(&()),
    );
    let dry_run = PatchParams {
        dry_run: true,
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::apply(MANAGER)
    };
    let mut modes = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let mut object: Value = serde_yaml::from_str(&text).unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        object["metadata"]["namespace"] = json!(ns.name);
        let accepted = scalers.patch(&name, &dry_run, &Patch::Apply(&object)).await;
        assert!(
            accepted.is_ok(),
            "{}: the API server rejects it: {accepted:?}",
            file.display()
        );
        // It also parses as the Rust type the operator reads.
        let typed: Scaler = serde_json::from_value(object.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if let Some(mode) = typed
            .spec
            .autoscaling
            .as_ref()
            .and_then(hoist_api::Autoscaling::mode)
        {
            modes.push(mode.name());
        }
        if let Some(hooks) = &typed.spec.hooks {
            let config_map = hooks.plugin.config_map.as_deref().unwrap_or_else(|| {
                panic!(
                    "{}: the examples ship plugins as ConfigMaps",
                    file.display()
                )
            });
            validate_config(file, config_map, hooks.config.as_ref());
        }
    }
    // That check can fail too: trino-drain refuses a field it does not know.
    let refused = std::panic::catch_unwind(|| {
        validate_config(&files[0], "trino-drain", Some(&json!({"prot": 8080})));
    });
    assert!(refused.is_err(), "trino-drain accepts a misspelt field");

    modes.sort_unstable();
    assert_eq!(
        modes,
        ["builtin", "hpa", "keda"],
        "the samples cover these modes"
    );

    // The check can fail: a misspelt field in a sample is refused.
    let mut bad: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    bad["metadata"]["namespace"] = json!(ns.name);
    bad["spec"]["minReplica"] = json!(1);
    let name = bad["metadata"]["name"].as_str().unwrap().to_string();
    let refused = scalers
        .patch(&name, &dry_run, &Patch::Apply(&bad))
        .await
        .expect_err("an unknown field is refused");
    assert!(refused.to_string().contains("minReplica"), "{refused}");
}

/// Runs the plugin's `validate-config` on the sample's `hooks.config` (`hoist plugin run`).
fn validate_config(file: &Path, config_map: &str, config: Option<&Value>) {
    let wasm = plugin_path(config_map).unwrap_or_else(|e| {
        panic!(
            "{}: no plugin for ConfigMap {config_map}: {e:#}",
            file.display()
        )
    });
    let dir = tempfile_dir();
    let config_file = dir.join(format!("{config_map}-config.json"));
    std::fs::write(
        &config_file,
        config.cloned().unwrap_or(json!({})).to_string(),
    )
    .unwrap();
    let context = json!({
        "namespace": "n", "scaler": "s",
        "target": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "t"},
        "operationId": "op", "fromReplicas": 1, "toReplicas": 1, "direction": "down",
        "podsRemoved": [], "podsAdded": [], "allPods": [], "config": "{}",
        "savedState": null, "attempt": 1, "elapsedInStage": 0
    });
    let context_file = dir.join(format!("{config_map}-context.json"));
    std::fs::write(&context_file, context.to_string()).unwrap();
    let out = Command::new(hoist_binary().unwrap())
        .args(["plugin", "run"])
        .arg(&wasm)
        .args(["--hook", "validate-config", "--context"])
        .arg(&context_file)
        .arg("--config")
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {config_map} rejects the sample's hooks.config: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tempfile_dir() -> PathBuf {
    let dir = Cluster::shared()
        .dir()
        .join(format!("chart-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `helm template` of the chart with `--set` values; the rendered objects.
fn render(sets: &[&str]) -> Result<Vec<Value>> {
    let mut cmd = Command::new(helm()?);
    cmd.args(["template", "hoist"])
        .arg(repo_root().join("charts/hoist"))
        .args(["--namespace", "hoist-system"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().context("running helm template")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut objects = Vec::new();
    for doc in text.split("\n---\n") {
        let value: Value = serde_yaml::from_str(doc)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

/// Namespaced unless asked: a Role in the release's namespace and the operator watching it;
/// `clusterWide` is the opt-in for every namespace, and cannot be combined with
/// `watchNamespace`.
#[test]
fn chart_is_namespaced_unless_cluster_wide_is_asked_for() {
    let namespaced = render(&[]).unwrap();
    assert_eq!(
        kinds(&namespaced),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "HookPolicy",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    assert!(find(&namespaced, "ClusterRole", "hoist").is_none());
    assert_eq!(
        find(&namespaced, "Role", "hoist").unwrap()["metadata"]["namespace"],
        "hoist-system"
    );
    let args = &find(&namespaced, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--namespace=hoist-system")),
        "{args}"
    );
    let both = render(&["clusterWide=true", "watchNamespace=team-a"]).expect_err("not both");
    assert!(both.to_string().contains("not both"), "{both}");
    let every = render(&["clusterWide=true"]).unwrap();
    assert!(find(&every, "Role", "hoist").is_none());
    let args = &find(&every, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        !args
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("--namespace"))),
        "{args}"
    );
}

/// What the values switch on and off: the `ServiceMonitor` only when enabled, the RBAC as a
/// `ClusterRole` (`clusterWide`) or (`watchNamespace`) as a Role with the same rules, the Lease
/// Role bound to the lease the Deployment uses, and a clear error for a bad plugin entry.
#[test]
fn chart_values_render_what_they_say() {
    let default = render(&["clusterWide=true"]).unwrap();
    assert_eq!(
        kinds(&default),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Deployment",
            "HookPolicy",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let cluster_rules = &find(&default, "ClusterRole", "hoist").unwrap()["rules"];
    let lease_role = find(&default, "Role", "hoist-leader-election").unwrap();
    assert_eq!(
        lease_role["rules"][1]["resourceNames"],
        json!(["hoist-operator"])
    );
    let args = &find(&default, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--lease-name=hoist-operator")),
        "{args}"
    );

    for mode in ["--hpa-mode=true", "--keda-mode=true", "--shards=1"] {
        assert!(args.as_array().unwrap().contains(&json!(mode)), "{args}");
    }

    let has_rule = |rules: &serde_json::Value, resource: &str| {
        rules.as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!(resource)))
        })
    };
    let may_write = |rules: &serde_json::Value, resource: &str| {
        rules.as_array().unwrap().iter().any(|r| {
            r["resources"]
                .as_array()
                .is_some_and(|rs| rs.contains(&json!(resource)))
                && r["verbs"]
                    .as_array()
                    .is_some_and(|vs| vs.contains(&json!("patch")))
        })
    };
    assert!(may_write(cluster_rules, "horizontalpodautoscalers"));
    assert!(may_write(cluster_rules, "scaledobjects"));
    // Without RBAC for a mode's kind, the operator runs with that mode off; it still watches
    // every HPA (read only), to report one that fights a Scaler.
    let without = render(&["clusterWide=true", "rbac.hpa=false", "rbac.keda=false"]).unwrap();
    let rules = &find(&without, "ClusterRole", "hoist").unwrap()["rules"];
    assert!(!may_write(rules, "horizontalpodautoscalers"));
    assert!(has_rule(rules, "horizontalpodautoscalers"));
    assert!(!has_rule(rules, "scaledobjects"));
    let args = &find(&without, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    for mode in ["--hpa-mode=false", "--keda-mode=false"] {
        assert!(args.as_array().unwrap().contains(&json!(mode)), "{args}");
    }

    let monitored = render(&["serviceMonitor.enabled=true"]).unwrap();
    assert!(find(&monitored, "ServiceMonitor", "hoist").is_some());

    let scoped = render(&["watchNamespace=team-a"]).unwrap();
    assert!(find(&scoped, "ClusterRole", "hoist").is_none());
    let role = find(&scoped, "Role", "hoist").unwrap();
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert_eq!(
        &role["rules"], cluster_rules,
        "the same rules, one namespace"
    );
    assert_eq!(
        find(&scoped, "RoleBinding", "hoist").unwrap()["subjects"][0]["namespace"],
        "hoist-system"
    );
    let args = &find(&scoped, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--namespace=team-a")),
        "{args}"
    );

    let bad = render(&[
        "plugins.install[0].name=Bad_Name",
        "plugins.install[0].wasmBase64=AGFzbQEAAAA=",
    ])
    .expect_err("a bad plugin name is refused");
    assert!(bad.to_string().contains("plugins.install[0].name"), "{bad}");
    let missing = render(&["plugins.install[0].name=p"]).expect_err("no component");
    assert!(missing.to_string().contains("wasmBase64"), "{missing}");
}

/// Shards: every replica acts; the Role covers the shard and member Leases, which it watches,
/// and the departed members' Leases, which it deletes.
#[test]
fn chart_renders_shards() {
    let sharded = render(&["shards=3", "replicaCount=3"]).unwrap();
    let args = &find(&sharded, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"]["containers"]
        [0]["args"];
    assert!(
        args.as_array().unwrap().contains(&json!("--shards=3")),
        "{args}"
    );
    let lease_rules = &find(&sharded, "Role", "hoist-leader-election").unwrap()["rules"];
    assert_eq!(
        lease_rules[1]["resourceNames"],
        json!(null),
        "{lease_rules}"
    );
    assert_eq!(
        lease_rules[1]["verbs"],
        json!(["get", "list", "watch", "patch", "delete"])
    );
    let unleased = render(&["shards=3", "leaderElection.enabled=false"])
        .expect_err("shards without leases are refused");
    assert!(
        unleased.to_string().contains("leaderElection.enabled"),
        "{unleased}"
    );
    let zero = render(&["shards=0"]).expect_err("zero shards are refused");
    assert!(
        zero.to_string().contains("shards must be from 1 to 256"),
        "{zero}"
    );
}

/// The trust boundary in the chart: the cluster-scoped reads of `HookPolicies` and Namespaces
/// (read only, also in one namespace), Secrets and `ConfigMaps` only by name (narrowed by
/// `resourceNames` when listed), and the default `HookPolicy` the values describe.
#[test]
fn chart_renders_the_trust_boundary() {
    let default = render(&["clusterWide=true"]).unwrap();
    let cluster_rules = &find(&default, "ClusterRole", "hoist").unwrap()["rules"];
    // Also in one namespace, hoist reads the cluster's HookPolicies and the namespaces' labels,
    // and gets a target kind's CRD (its /scale paths); read only. It only ever gets Secrets
    // and ConfigMaps by name.
    let reader = &find(&default, "ClusterRole", "hoist-policy-reader").unwrap()["rules"];
    let reader: Vec<(Value, Value)> = reader
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["resources"].clone(), r["verbs"].clone()))
        .collect();
    assert_eq!(
        reader,
        [
            (json!(["hookpolicies"]), json!(["list", "watch"])),
            (json!(["namespaces"]), json!(["list", "watch"])),
            (json!(["customresourcedefinitions"]), json!(["get"])),
        ]
    );
    let secrets = cluster_rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["secrets"]))
        .unwrap();
    assert_eq!(secrets["verbs"], json!(["get"]));
    let named = render(&[
        "clusterWide=true",
        "rbac.secretNames={nifi-login,nifi-client-tls}",
    ])
    .unwrap();
    let named_rules = &find(&named, "ClusterRole", "hoist").unwrap()["rules"];
    let secrets = named_rules
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["secrets"]))
        .unwrap();
    assert_eq!(
        secrets["resourceNames"],
        json!(["nifi-login", "nifi-client-tls"])
    );
    let policy = find(&default, "HookPolicy", "hoist-default").unwrap();
    assert_eq!(policy["spec"]["allowAnyPlugin"], json!(true));
    assert_eq!(policy["spec"]["egress"]["targetPods"], json!(true));
    assert!(
        find(
            &render(&["defaultPolicy.create=false"]).unwrap(),
            "HookPolicy",
            "hoist-default"
        )
        .is_none()
    );

    let scoped = render(&["watchNamespace=team-a"]).unwrap();
    assert!(find(&scoped, "ClusterRole", "hoist-policy-reader").is_some());
}

/// Plugin distribution values: the registry CA is mounted and named by a flag; the
/// precompile cache moves from an emptyDir to a claim.
#[test]
fn chart_renders_registry_trust_and_a_persistent_plugin_cache() {
    let pod = |docs: &[Value]| {
        find(docs, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"].clone()
    };
    let args = |pod: &Value| -> Vec<String> {
        pod["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let volume = |pod: &Value, name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
    };
    let default = render(&[]).unwrap();
    let plain = pod(&default);
    assert!(args(&plain).contains(&"--plugin-max-mib=64".to_owned()));
    assert!(
        !args(&plain)
            .iter()
            .any(|a| a.starts_with("--plugin-registry-ca"))
    );
    assert!(volume(&plain, "registry-ca").is_none());
    assert!(volume(&plain, "plugin-cache").unwrap()["emptyDir"].is_object());
    assert!(find(&default, "PersistentVolumeClaim", "hoist-plugin-cache").is_none());

    let custom = render(&[
        "plugins.registryCA.configMap=registry-ca",
        "plugins.cachePersistence.enabled=true",
        "plugins.cachePersistence.size=2Gi",
    ])
    .unwrap();
    let with = pod(&custom);
    assert!(
        args(&with).contains(&"--plugin-registry-ca=/etc/hoist/registry-ca/ca.crt".to_owned()),
        "{:?}",
        args(&with)
    );
    assert_eq!(
        volume(&with, "registry-ca").unwrap()["configMap"]["name"],
        json!("registry-ca")
    );
    assert_eq!(
        volume(&with, "plugin-cache").unwrap()["persistentVolumeClaim"]["claimName"],
        json!("hoist-plugin-cache")
    );
    let claim = find(&custom, "PersistentVolumeClaim", "hoist-plugin-cache").unwrap();
    assert_eq!(
        claim["spec"]["resources"]["requests"]["storage"],
        json!("2Gi")
    );
    let existing = render(&[
        "plugins.cachePersistence.enabled=true",
        "plugins.cachePersistence.existingClaim=shared-cache",
    ])
    .unwrap();
    assert!(find(&existing, "PersistentVolumeClaim", "hoist-plugin-cache").is_none());
    assert_eq!(
        volume(&pod(&existing), "plugin-cache").unwrap()["persistentVolumeClaim"]["claimName"],
        json!("shared-cache")
    );
}

/// The image defaults to what `deploy/image` builds; `hostNetwork` puts one replica per node.
#[test]
fn chart_image_and_host_network_values() {
    let default = render(&[]).unwrap();
    // The image defaults to what deploy/image builds, tagged with the chart's appVersion.
    let pod = &find(&default, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"];
    let app_version = std::fs::read_to_string(repo_root().join("charts/hoist/Chart.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("appVersion: "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    assert_eq!(
        pod["containers"][0]["image"],
        json!(format!("localhost/hoist:{app_version}"))
    );
    assert!(pod.get("hostNetwork").is_none() && pod.get("affinity").is_none());
    // On the node's network, one replica per node (metricsPort is the node's port).
    let host = render(&["hostNetwork=true"]).unwrap();
    let pod = &find(&host, "Deployment", "hoist").unwrap()["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], json!(true));
    assert_eq!(pod["dnsPolicy"], json!("ClusterFirstWithHostNet"));
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], json!("kubernetes.io/hostname"));
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        find(&host, "Deployment", "hoist").unwrap()["spec"]["selector"]["matchLabels"]
    );
}
