//! The test control plane (tests/cluster) is a real Kubernetes: workloads get pods from
//! kwok, /scale works, CRDs with subresources are served, garbage collection and RBAC run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_tests::{Cluster, TestNamespace, wait};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);

fn labels(app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), app.to_string())])
}

fn pod_template(app: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {"containers": [{"name": "main", "image": "registry.invalid/none:1"}]}
    })
}

async fn ready_pods(ns: &TestNamespace, app: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = ns.api();
    let list = pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect())
}

async fn wait_ready_count(ns: &TestNamespace, app: &str, n: usize) -> Vec<Pod> {
    wait::for_value(TIMEOUT, &format!("{n} ready pods of {app}"), || async {
        let pods = ready_pods(ns, app).await?;
        let total: Api<Pod> = ns.api();
        let all = total
            .list(&ListParams::default().labels(&format!("app={app}")))
            .await?;
        Ok((pods.len() == n && all.items.len() == n).then_some(pods))
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn deployment_pods_become_ready_with_loopback_ips() {
    let ns = Cluster::shared().namespace("cp-deploy").await.unwrap();
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": labels("web")}, "template": pod_template("web")}
    }))
    .unwrap();
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deploy)
        .await
        .unwrap();

    let pods = wait_ready_count(&ns, "web", 3).await;
    for pod in &pods {
        let ip: std::net::Ipv4Addr = pod
            .status
            .as_ref()
            .unwrap()
            .pod_ip
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            ip.is_loopback(),
            "pod {:?} has IP {ip}, outside the loopback range",
            pod.metadata.name
        );
        assert_eq!(
            ip.octets()[1],
            1,
            "pod IPs come from 127.1.0.0/16, got {ip}"
        );
    }
}

#[tokio::test]
async fn statefulset_follows_writes_to_its_scale_subresource() {
    let ns = Cluster::shared().namespace("cp-sts").await.unwrap();
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"replicas": 1, "serviceName": "db", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": labels("db")}, "template": pod_template("db")}
    }))
    .unwrap();
    let api = ns.api::<StatefulSet>();
    api.create(&PostParams::default(), &sts).await.unwrap();
    wait_ready_count(&ns, "db", 1).await;

    let scale = api
        .patch_scale(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    let pods = wait_ready_count(&ns, "db", 3).await;
    let mut names: Vec<_> = pods
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);

    api.patch_scale(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    wait_ready_count(&ns, "db", 1).await;
}

async fn install_crd(client: &Client, path: &str) -> CustomResourceDefinition {
    let text = std::fs::read_to_string(hoist_tests::repo_root().join(path)).unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("hoist-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    wait::until(TIMEOUT, "the CRD to be Established", || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let crd = crds.get(&name).await?;
            Ok(crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            }))
        }
    })
    .await
    .unwrap();
    crds.get(&name).await.unwrap()
}

#[tokio::test]
async fn crd_with_status_and_scale_is_served_and_takes_server_side_apply() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("cp-crd").await.unwrap();
    install_crd(&ns.client, "tests/fixtures/widget-crd.yaml").await;
    let gvk = GroupVersionKind::gvk("fixtures.hoist.dev", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);

    // Server-side apply with a field manager, twice: the second apply updates in place.
    let widget = json!({"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget",
                        "metadata": {"name": "w"}, "spec": {"replicas": 2, "color": "red"}});
    api.patch(
        "w",
        &PatchParams::apply("hoist-tests"),
        &Patch::Apply(&widget),
    )
    .await
    .unwrap();
    let widget = json!({"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget",
                        "metadata": {"name": "w"}, "spec": {"replicas": 2, "color": "blue"}});
    let applied = api
        .patch(
            "w",
            &PatchParams::apply("hoist-tests"),
            &Patch::Apply(&widget),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["spec"]["color"], "blue");
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(
        managers.contains(&"hoist-tests".to_string()),
        "field managers: {managers:?}"
    );

    // /status is its own subresource: a status write through the main resource is ignored.
    api.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 2, "selector": "app=w"}})),
    )
    .await
    .unwrap();
    // /scale maps spec.replicas, status.replicas and status.selector.
    let scale = api.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(2));
    assert_eq!(scale.status.as_ref().unwrap().replicas, 2);
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some("app=w")
    );
    api.patch_scale(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["replicas"], 5);
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_what_it_owns() {
    let ns = Cluster::shared().namespace("cp-gc").await.unwrap();
    let cms = ns.api::<ConfigMap>();
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut dependent: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "owned"}})).unwrap();
    dependent.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "owner".into(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..OwnerReference::default()
    }]);
    cms.create(&PostParams::default(), &dependent)
        .await
        .unwrap();
    cms.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    wait::until(TIMEOUT, "the owned ConfigMap to be collected", || {
        let cms = cms.clone();
        async move { Ok(cms.get_opt("owned").await?.is_none()) }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn rbac_denies_a_service_account_without_a_role() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("cp-rbac").await.unwrap();
    let sas = ns.api::<ServiceAccount>();
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap(),
    )
    .await
    .unwrap();
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 600}}))
            .unwrap();
    let token = sas
        .create_subresource::<TokenRequest, TokenRequest>(
            "token",
            "nobody",
            &PostParams::default(),
            &request,
        )
        .await
        .unwrap()
        .status
        .unwrap()
        .token;

    let mut config = cluster.config().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let client = Client::try_from(config).unwrap();
    let err = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("a ServiceAccount without a Role must not list ConfigMaps");
    match err {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    // The identity is recognised (401 would mean the token was not accepted at all).
    let review = Api::<ConfigMap>::namespaced(client, &ns.name)
        .get_opt("anything")
        .await;
    assert!(
        matches!(review, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{review:?}"
    );
}
