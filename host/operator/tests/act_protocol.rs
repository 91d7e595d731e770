//! The write protocol of `act`, against a scripted API server (tower-test): every request the
//! operator sends is recorded, and the script answers each one, with a fault where the test
//! asks for it. Whatever fails, the target's `/scale` is never written before the status that
//! records Scaling was accepted, and nothing at all is written by a replica that lost its lease.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::{Arc, Mutex};

use hoist_api::{Operation, OperationTarget, Scaler, ScalerSpec, ScalerStatus, Stage, TargetRef};
use hoist_decide::Plan;
use hoist_operator::act::Actor;
use hoist_operator::events::Publisher;
use hoist_operator::fence::Fence;
use hoist_operator::latest::LatestScalers;
use hoist_operator::metrics::Metrics;
use hoist_operator::target::Targets;
use http::{Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::json;

/// How the scripted API server answers one request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    Conflict,
    DropConnection,
}

fn scaler(rv: &str) -> Scaler {
    let mut s = Scaler::new(
        "s",
        ScalerSpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
            },
            ..ScalerSpec::default()
        },
    );
    s.metadata.namespace = Some("ns".into());
    s.metadata.uid = Some("u-1".into());
    s.metadata.resource_version = Some(rv.into());
    s
}

/// The status that records Scaling 3 → 1 (what a plan entering Scaling writes).
fn scaling_status() -> ScalerStatus {
    let t = jiff::Timestamp::from_second(1_700_000_000).unwrap();
    ScalerStatus {
        stage: Stage::Scaling,
        operation: Some(Operation {
            id: "u1-1700000000-3-1".into(),
            from: 3,
            to: 1,
            target: Some(OperationTarget {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "web".into(),
                uid: Some("sts-uid".into()),
            }),
            started_at: Time(t),
            stage_started_at: MicroTime(t),
            plugin_digest: None,
            hook_state: None,
            hook_message: None,
            hook_calls: 0,
            next_hook_call_at: None,
            target_writes: 1,
            attempt: 1,
        }),
        ..ScalerStatus::default()
    }
}

fn respond(path: &str, answer: Answer) -> Option<Response<Body>> {
    let (code, body) = match answer {
        Answer::DropConnection => return None,
        Answer::Conflict => (
            StatusCode::CONFLICT,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "the object has been modified", "reason": "Conflict", "code": 409}),
        ),
        Answer::Ok if path.ends_with("/scalers/s/status") || path.ends_with("/scalers/s") => {
            let mut s = scaler("2");
            s.status = Some(scaling_status());
            (StatusCode::OK, serde_json::to_value(&s).unwrap())
        }
        Answer::Ok if path == "/apis/apps/v1" => (
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                   "resources": [
                       {"name": "statefulsets", "singularName": "statefulset", "namespaced": true,
                        "kind": "StatefulSet", "verbs": ["get", "list", "patch"]},
                       {"name": "statefulsets/scale", "singularName": "", "namespaced": true,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch"]}]}),
        ),
        Answer::Ok if path.ends_with("/statefulsets/web/scale") => (
            StatusCode::OK,
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                   "metadata": {"name": "web", "namespace": "ns"},
                   "spec": {"replicas": 1}, "status": {"replicas": 3}}),
        ),
        Answer::Ok => (
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": "not found", "reason": "NotFound", "code": 404}),
        ),
    };
    Some(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    )
}

/// Applies `plan` (decided on resourceVersion 1) through an Actor whose API server answers the
/// status write with `status_answer`; returns act's result and the requests, in order.
async fn act_with(plan: &Plan, status_answer: Answer, leading: bool) -> (bool, Vec<String>) {
    let plan = plan.clone();
    with_actor(status_answer, leading, |actor| async move {
        actor.act(&scaler("1"), &plan).await.is_ok()
    })
    .await
}

/// Runs `f` with an Actor whose API server answers the status write with `status_answer`
/// (and everything else as `respond` does); returns `f`'s result and the requests, in order.
async fn with_actor<F, Fut>(status_answer: Answer, leading: bool, f: F) -> (bool, Vec<String>)
where
    F: FnOnce(Actor) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "ns");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorder = seen.clone();
    let server = tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let path = request.uri().path().to_owned();
            recorder
                .lock()
                .unwrap()
                .push(format!("{} {path}", request.method()));
            let answer = if path.ends_with("/status") {
                status_answer
            } else {
                Answer::Ok
            };
            match respond(&path, answer) {
                Some(response) => send.send_response(response),
                None => send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection dropped by the test",
                )),
            }
        }
    });
    let (tx, rx) = tokio::sync::watch::channel(leading);
    let actor = Actor {
        client: client.clone(),
        targets: Targets::new(client.clone()),
        recorder: Publisher::new(
            client,
            Reporter {
                controller: "hoist".into(),
                instance: None,
            },
        ),
        metrics: Arc::new(Metrics::new()),
        fence: Fence::lease(rx),
        latest: Arc::new(LatestScalers::default()),
    };
    let ok = f(actor).await;
    drop(tx);
    server.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    (ok, seen)
}

fn enter_scaling() -> Plan {
    Plan {
        status: Some(scaling_status()),
        scale_target: Some(1),
        ..Plan::default()
    }
}

#[tokio::test]
async fn the_status_is_written_before_the_scale_it_causes() {
    let (ok, seen) = act_with(&enter_scaling(), Answer::Ok, true).await;
    assert!(ok, "{seen:?}");
    assert_eq!(
        seen,
        [
            "PATCH /apis/hoist.dev/v1alpha1/namespaces/ns/scalers/s/status",
            "GET /apis/apps/v1",
            "PATCH /apis/apps/v1/namespaces/ns/statefulsets/web/scale",
        ]
    );
}

#[tokio::test]
async fn a_conflicting_status_write_writes_nothing_else_and_reads_the_current_version() {
    let (ok, seen) = act_with(&enter_scaling(), Answer::Conflict, true).await;
    assert!(!ok);
    assert_eq!(
        seen,
        [
            "PATCH /apis/hoist.dev/v1alpha1/namespaces/ns/scalers/s/status",
            "GET /apis/hoist.dev/v1alpha1/namespaces/ns/scalers/s",
        ],
        "no /scale write after a refused intent"
    );
}

#[tokio::test]
async fn a_dropped_connection_at_the_status_write_writes_nothing_else() {
    let (ok, seen) = act_with(&enter_scaling(), Answer::DropConnection, true).await;
    assert!(!ok);
    assert!(
        seen.iter().all(|r| !r.ends_with("/scale")),
        "no /scale write: {seen:?}"
    );
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_writes_nothing() {
    let (ok, seen) = act_with(&enter_scaling(), Answer::Ok, false).await;
    assert!(!ok);
    assert!(seen.is_empty(), "{seen:?}");
}

#[tokio::test]
async fn a_replica_that_lost_its_lease_applies_deletes_and_scales_no_owned_object() {
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let hpa: HorizontalPodAutoscaler =
        serde_json::from_value(json!({"metadata": {"name": "s", "namespace": "ns"}})).unwrap();
    let (ok, seen) = with_actor(Answer::Ok, false, |actor| async move {
        let api = kube::Api::<HorizontalPodAutoscaler>::namespaced(actor.client.clone(), "ns");
        let applied = actor
            .apply_owned(&api, "HorizontalPodAutoscaler", &scaler("1"), &hpa)
            .await;
        let desired = actor.write_desired(&scaler("1"), 2).await;
        matches!(
            applied,
            Err(hoist_operator::error::OperatorError::NotLeader { .. })
        ) && !desired
    })
    .await;
    assert!(ok, "{seen:?}");
    assert!(
        seen.iter().all(|r| r.starts_with("GET ")),
        "only reads: {seen:?}"
    );
}
