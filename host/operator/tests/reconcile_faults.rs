//! The whole reconcile (snapshot → autoscaling mode → decide → hook → decide → act) of a
//! scale-down 3 → 1 of a StatefulSet and of a Deployment, with the real sandbox running the
//! real trino-drain plugin against loopback Trino workers, over an in-process API server that
//! keeps the objects and plays the workload's controller (a Deployment's pods go in the
//! ReplicaSet controller's order: lowest `pod-deletion-cost` first, then the newest; they are
//! gone by the next list, the harshest timing for a reconcile that would choose afresh). A clean run counts the operation's writes; then, for
//! every one of them, the operation is run again with that write answered by a 409, by a
//! dropped connection (not applied), or applied with its response lost, and the next round
//! is given the Scaler as it was before the failure (the watch has not caught up).
//!
//! In every run: pre-scale is only ever asked to drain a pod that leaves; `/scale` is never
//! written before pre-scale answered Done for this operation; no staying worker is drained;
//! and the operation ends Idle at 1 with nothing lost (replicas, finalizer).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use hoist_api::Scaler;
use hoist_operator::act::Actor;
use hoist_operator::autoscaling::{Autoscalers, Modes};
use hoist_operator::controller;
use hoist_operator::events::Publisher;
use hoist_operator::fence::Fence;
use hoist_operator::hook_call::HookEnv;
use hoist_operator::http_server::Progress;
use hoist_operator::latest::LatestScalers;
use hoist_operator::metrics::Metrics;
use hoist_operator::plugin_configmap;
use hoist_operator::reconcile::{self, Context};
use hoist_operator::target::Targets;
use hoist_sandbox::{
    CallOptions, FailureInfo, HookContext, HookOutcome, HookRunner, Plugin, Sandbox, SandboxConfig,
    SandboxError,
};
use hoist_tests::trino::{TrinoWorker, start_workers};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::runtime::watcher;
use serde_json::{Value, json};

const NS: &str = "ns";
const SCALER_PATH: &str = "/apis/hoist.dev/v1alpha1/namespaces/ns/scalers/s";

/// The workload kind under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    StatefulSet,
    Deployment,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::StatefulSet => "statefulsets",
            Kind::Deployment => "deployments",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::StatefulSet => "StatefulSet",
            Kind::Deployment => "Deployment",
        }
    }

    /// The pod names, oldest first.
    fn pod_name(self, i: u32) -> String {
        match self {
            Kind::StatefulSet => format!("web-{i}"),
            Kind::Deployment => format!("web-5d9c7-{}", ["kx2", "m7q", "zt4"][i as usize]),
        }
    }
}

/// A pod the fake controller keeps.
#[derive(Debug, Clone)]
struct FakePod {
    name: String,
    ip: IpAddr,
    created: String,
    annotations: serde_json::Map<String, Value>,
    /// Deleted: still listed (terminating) until the next list.
    terminating: bool,
}
const PODS_PATH: &str = "/api/v1/namespaces/ns/pods";

/// How the API server answers the write the test aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// 409 Conflict, nothing applied.
    Conflict,
    /// The connection drops before the server applied anything.
    DropBefore,
    /// The server applied the write; the connection dropped before the answer.
    LostResponse,
}

/// What the API server holds, and what the test learns from it.
#[derive(Debug)]
struct World {
    kind: Kind,
    scaler: Value,
    revision: u64,
    replicas: i64,
    generation: i64,
    pods: Vec<FakePod>,
    /// Writes (any method but GET) seen since the operation started.
    writes: usize,
    fault: Option<(usize, Fault)>,
    /// For each `/scale` write: the replicas and whether pre-scale had answered Done for the
    /// operation the status records.
    scale_writes: Vec<(i64, bool)>,
    /// Requests the server does not know.
    unexpected: Vec<String>,
    /// A desired count written while the operation's last pre-scale call runs.
    desired_during_last_call: Option<i64>,
}

/// What the hooks were asked and answered, recorded around the real sandbox.
#[derive(Debug, Default)]
struct Calls {
    /// Every pod any pre-scale call was asked to drain.
    pre_scale_removed: BTreeSet<String>,
    /// Operations for which pre-scale answered Done.
    pre_scale_done: BTreeSet<String>,
    on_failure: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// The real sandbox, with every call and answer recorded.
struct Recording {
    sandbox: Sandbox,
    calls: Arc<Mutex<Calls>>,
    world: Arc<Mutex<World>>,
}

impl HookRunner for Recording {
    fn pre_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>> {
        Box::pin(async move {
            lock(&self.calls)
                .pre_scale_removed
                .extend(ctx.pods_removed.iter().map(|p| p.name.clone()));
            let outcome = self.sandbox.pre_scale(plugin, ctx, options).await;
            if matches!(outcome, Ok(HookOutcome::Done { .. })) {
                lock(&self.calls)
                    .pre_scale_done
                    .insert(ctx.operation_id.clone());
                // Someone writes the desired count while the last pre-scale call runs.
                let mut world = lock(&self.world);
                if let Some(n) = world.desired_during_last_call.take() {
                    world.set_desired(n);
                }
            }
            outcome
        })
    }

    fn post_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>> {
        self.sandbox.post_scale(plugin, ctx, options)
    }

    fn on_failure<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        failure: &'a FailureInfo,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        lock(&self.calls).on_failure += 1;
        self.sandbox.on_failure(plugin, ctx, failure, options)
    }

    fn validate_config<'a>(
        &'a self,
        plugin: &'a Plugin,
        config: &'a str,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        self.sandbox.validate_config(plugin, config, options)
    }
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().unwrap();
    for (k, v) in fields {
        if v.is_null() {
            object.remove(k);
        } else {
            merge(object.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn status_of(code: StatusCode, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason,
           "reason": reason, "code": code.as_u16()})
}

impl World {
    fn new(kind: Kind, pod_ips: &BTreeMap<u32, IpAddr>, hooks: &Value) -> Self {
        let scaler = json!({
            "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
            "metadata": {"name": "s", "namespace": NS, "uid": "scaler-uid", "generation": 1,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": kind.name(), "name": "web"},
                     "replicas": 3, "hooks": hooks},
        });
        let pods = pod_ips
            .iter()
            .map(|(i, ip)| FakePod {
                name: kind.pod_name(*i),
                ip: *ip,
                created: format!("2026-01-01T00:00:0{i}Z"),
                annotations: serde_json::Map::new(),
                terminating: false,
            })
            .collect();
        let mut w = Self {
            kind,
            scaler,
            revision: 1,
            replicas: 3,
            generation: 1,
            pods,
            writes: 0,
            fault: None,
            scale_writes: Vec::new(),
            unexpected: Vec::new(),
            desired_during_last_call: None,
        };
        w.bump();
        w
    }

    fn bump(&mut self) {
        self.revision += 1;
        self.scaler["metadata"]["resourceVersion"] = json!(self.revision.to_string());
    }

    fn scaler(&self) -> Scaler {
        serde_json::from_value(self.scaler.clone()).unwrap()
    }

    fn target_path(&self) -> String {
        format!("/apis/apps/v1/namespaces/ns/{}/web", self.kind.plural())
    }

    fn workload(&self) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": self.kind.name(),
            "metadata": {"name": "web", "namespace": NS, "uid": "sts-uid",
                         "generation": self.generation, "resourceVersion": "1"},
            "spec": {"replicas": self.replicas, "serviceName": "web",
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}}},
            "status": {"replicas": self.replicas, "readyReplicas": self.replicas,
                       "availableReplicas": self.replicas, "currentReplicas": self.replicas,
                       "updatedReplicas": self.replicas, "observedGeneration": self.generation},
        })
    }

    fn scale(&self) -> Value {
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
               "metadata": {"name": "web", "namespace": NS},
               "spec": {"replicas": self.replicas},
               "status": {"replicas": self.replicas, "selector": "app=web"}})
    }

    /// The pods, as a list answers them; pods deleted before this list are gone after it.
    fn list_pods(&mut self) -> Value {
        let items: Vec<Value> = self
            .pods
            .iter()
            .map(|p| {
                let mut meta = json!({"name": p.name, "namespace": NS, "uid": format!("uid-{}", p.name),
                                      "labels": {"app": "web"}, "creationTimestamp": p.created,
                                      "annotations": p.annotations});
                if p.terminating {
                    meta["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
                }
                json!({"metadata": meta,
                       "status": {"phase": "Running", "podIP": p.ip.to_string(),
                                  "conditions": [{"type": "Ready", "status": "True"}]}})
            })
            .collect();
        self.pods.retain(|p| !p.terminating);
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
               "items": items})
    }

    /// New pods up to `replicas` (no worker listens on their IPs: nothing drains them).
    fn add_pods(&mut self, replicas: i64) {
        let mut n = 0u8;
        while i64::try_from(self.pods.iter().filter(|p| !p.terminating).count()).unwrap() < replicas
        {
            n += 1;
            let IpAddr::V4(base) = self.pods[0].ip else {
                unreachable!("the test's pod IPs are IPv4")
            };
            let [a, b, c, _] = base.octets();
            self.pods.push(FakePod {
                name: format!("web-5d9c7-new{n}"),
                ip: IpAddr::V4(Ipv4Addr::new(a, b, c, 10 + n)),
                created: "2026-01-01T00:10:00Z".into(),
                annotations: serde_json::Map::new(),
                terminating: false,
            });
        }
    }

    /// The workload's controller after a replicas change: a StatefulSet removes its highest
    /// ordinals; a ReplicaSet the lowest deletion cost first, then the newest.
    fn remove_pods(&mut self, replicas: i64) {
        let live: Vec<usize> = (0..self.pods.len())
            .filter(|i| !self.pods[*i].terminating)
            .collect();
        let excess = live
            .len()
            .saturating_sub(usize::try_from(replicas).unwrap());
        let mut order = live;
        let cost = |p: &FakePod| {
            p.annotations
                .get("controller.kubernetes.io/pod-deletion-cost")
                .and_then(Value::as_str)
                .and_then(|c| c.parse::<i64>().ok())
                .unwrap_or(0)
        };
        match self.kind {
            Kind::StatefulSet => order.sort_by(|a, b| self.pods[*b].name.cmp(&self.pods[*a].name)),
            Kind::Deployment => order.sort_by(|a, b| {
                let (pa, pb) = (&self.pods[*a], &self.pods[*b]);
                cost(pa)
                    .cmp(&cost(pb))
                    .then_with(|| pb.created.cmp(&pa.created))
            }),
        }
        for i in order.into_iter().take(excess) {
            self.pods[i].terminating = true;
        }
    }

    /// Answers one request; `None` drops the connection.
    fn answer(&mut self, method: &Method, path: &str, body: &[u8], calls: &Calls) -> Answer {
        let write = method != Method::GET;
        let mut fault = None;
        if write {
            self.writes += 1;
            if let Some((at, f)) = self.fault
                && at == self.writes
            {
                fault = Some(f);
            }
        }
        match fault {
            Some(Fault::Conflict) => {
                return Answer::Reply(
                    StatusCode::CONFLICT,
                    status_of(StatusCode::CONFLICT, "Conflict"),
                );
            }
            Some(Fault::DropBefore) => return Answer::Drop,
            _ => {}
        }
        let reply = self.apply(method, path, body, calls);
        if fault == Some(Fault::LostResponse) {
            return Answer::Drop;
        }
        reply
    }

    fn apply(&mut self, method: &Method, path: &str, body: &[u8], calls: &Calls) -> Answer {
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let ok = |v: Value| Answer::Reply(StatusCode::OK, v);
        let target = self.target_path();
        let scale = format!("{target}/scale");
        let plural = self.kind.plural();
        match (method.as_str(), path) {
            ("GET", "/apis/apps/v1") => ok(json!({
                "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                "resources": [
                    {"name": plural, "singularName": "", "namespaced": true,
                     "kind": self.kind.name(), "verbs": ["get", "list", "patch"]},
                    {"name": format!("{plural}/scale"), "singularName": "", "namespaced": true,
                     "group": "autoscaling", "version": "v1", "kind": "Scale",
                     "verbs": ["get", "patch"]}]})),
            ("GET", p) if p == target => ok(self.workload()),
            ("GET", p) if p == scale => ok(self.scale()),
            ("PATCH", p) if p == scale => {
                let replicas = body["spec"]["replicas"].as_i64().unwrap();
                let operation = self.scaler["status"]["operation"]["id"]
                    .as_str()
                    .unwrap_or_default();
                let drained_first = calls.pre_scale_done.contains(operation);
                self.scale_writes.push((replicas, drained_first));
                if replicas != self.replicas {
                    self.replicas = replicas;
                    self.generation += 1;
                    self.remove_pods(replicas);
                    self.add_pods(replicas);
                }
                ok(self.scale())
            }
            ("GET", PODS_PATH) => ok(self.list_pods()),
            ("GET", SCALER_PATH) => ok(self.scaler.clone()),
            ("PATCH", p) if p == format!("{SCALER_PATH}/status") => {
                let guard = body["metadata"]["resourceVersion"].as_str();
                if guard.is_some_and(|rv| rv != self.revision.to_string()) {
                    return Answer::Reply(
                        StatusCode::CONFLICT,
                        status_of(StatusCode::CONFLICT, "Conflict"),
                    );
                }
                // hoist is the status's only field manager: its apply is the whole status.
                self.scaler["status"] = body["status"].clone();
                self.bump();
                ok(self.scaler.clone())
            }
            ("PATCH", SCALER_PATH) => {
                // The finalizer (apply of metadata.finalizers alone) or a merge of metadata.
                if let Some(f) = body["metadata"].get("finalizers") {
                    self.scaler["metadata"]["finalizers"] = f.clone();
                } else {
                    merge(&mut self.scaler["metadata"], &body["metadata"]);
                }
                self.bump();
                ok(self.scaler.clone())
            }
            ("PATCH", p) if p.starts_with(&format!("{PODS_PATH}/")) => {
                let name = &p[PODS_PATH.len() + 1..];
                let Some(pod) = self.pods.iter_mut().find(|pod| pod.name == name) else {
                    return Answer::Reply(
                        StatusCode::NOT_FOUND,
                        status_of(StatusCode::NOT_FOUND, "NotFound"),
                    );
                };
                let mut annotations = Value::Object(pod.annotations.clone());
                merge(&mut annotations, &body["metadata"]["annotations"]);
                pod.annotations = annotations.as_object().cloned().unwrap_or_default();
                ok(json!({"metadata": {"name": name, "namespace": NS}}))
            }
            ("POST" | "PATCH", p)
                if p.starts_with("/apis/events.k8s.io/v1/namespaces/ns/events") =>
            {
                Answer::Reply(StatusCode::CREATED, body)
            }
            _ => {
                self.unexpected.push(format!("{method} {path}"));
                Answer::Reply(
                    StatusCode::NOT_FOUND,
                    status_of(StatusCode::NOT_FOUND, "NotFound"),
                )
            }
        }
    }

    /// Someone (an HPA, a person) writes the desired count.
    fn set_desired(&mut self, replicas: i64) {
        self.scaler["spec"]["replicas"] = json!(replicas);
        let g = self.scaler["metadata"]["generation"].as_i64().unwrap_or(1);
        self.scaler["metadata"]["generation"] = json!(g + 1);
        self.bump();
    }
}

enum Answer {
    Reply(StatusCode, Value),
    Drop,
}

/// One operator (reconcile context) over one in-process API server.
struct Rig {
    world: Arc<Mutex<World>>,
    calls: Arc<Mutex<Calls>>,
    context: Arc<Context>,
    workers: BTreeMap<u32, TrinoWorker>,
}

/// A client whose requests the in-process API server over `world` answers.
fn serve(world: Arc<Mutex<World>>, calls: Arc<Mutex<Calls>>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (w, c) = (world, calls);
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let answer = {
                let calls = lock(&c);
                lock(&w).answer(&parts.method, parts.uri.path(), &body, &calls)
            };
            match answer {
                Answer::Reply(code, value) => send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(serde_json::to_vec(&value).unwrap()))
                        .unwrap(),
                ),
                Answer::Drop => send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection dropped by the test",
                )),
            }
        }
    });
    kube::Client::new(service, NS)
}

async fn rig(kind: Kind, sandbox: &Sandbox, wasm: &[u8], subnet: u8) -> Rig {
    let net = match kind {
        Kind::StatefulSet => 78,
        Kind::Deployment => 79,
    };
    let ips: BTreeMap<u32, IpAddr> = (0..3u8)
        .map(|o| {
            (
                u32::from(o),
                IpAddr::V4(Ipv4Addr::new(127, net, subnet, o + 1)),
            )
        })
        .collect();
    let (port, workers) = start_workers(&ips, &[0, 1, 2], 2).await.unwrap();
    let hooks = json!({"plugin": {"configMap": "trino-drain"},
                       "config": {"port": port, "pollIntervalMs": 100}});
    let world = Arc::new(Mutex::new(World::new(kind, &ips, &hooks)));
    let calls = Arc::new(Mutex::new(Calls::default()));

    let client = serve(world.clone(), calls.clone());

    let metrics = Arc::new(Metrics::new());
    let (cm_store, mut cm_writer) = controller::plugin_store();
    let mut cm = plugin_configmap::build("trino-drain", Some(NS), wasm).unwrap();
    cm.metadata.uid = Some("cm-uid".into());
    cm.metadata.resource_version = Some("1".into());
    cm_writer.apply_watcher_event(&watcher::Event::Apply(cm));
    let (plugins, _loads) =
        controller::plugin_registry(sandbox.clone(), cm_store, None, metrics.clone());
    let targets = Targets::new(client.clone());
    let latest = Arc::new(LatestScalers::default());
    let recorder = Publisher::new(
        client.clone(),
        Reporter {
            controller: "hoist".into(),
            instance: None,
        },
    );
    let (autoscalers, _triggers) = Autoscalers::new(
        client.clone(),
        Some(NS.into()),
        Modes {
            hpa: false,
            keda: false,
        },
        None,
    );
    let context = Arc::new(Context {
        hooks: HookEnv {
            runner: Arc::new(Recording {
                sandbox: sandbox.clone(),
                calls: calls.clone(),
                world: world.clone(),
            }),
            plugins,
            access: hoist_operator::hook_access::HookAccess::new(
                client.clone(),
                hoist_operator::policy::Policies::none(),
                hoist_sandbox::ForbiddenAddrs::default(),
            ),
            targets: targets.clone(),
            metrics: metrics.clone(),
            fence: Fence::unfenced(),
        },
        actor: Actor {
            client,
            targets,
            recorder,
            metrics: metrics.clone(),
            fence: Fence::unfenced(),
            latest: latest.clone(),
        },
        metrics,
        autoscalers,
        latest,
        progress: Arc::new(Progress::default()),
        scalers: std::sync::OnceLock::new(),
        hpas: std::sync::OnceLock::new(),
        by_target: hoist_operator::target_index::TargetIndexes::default(),
    });
    Rig {
        world,
        calls,
        context,
        workers,
    }
}

impl Rig {
    /// Reconciles as the controller would until `done` holds for the stored Scaler. After a
    /// failed round, the next one gets the Scaler as it was before that round: the watch has
    /// not delivered what (if anything) the failed round wrote.
    async fn settle(&self, what: &str, done: impl Fn(&World) -> bool) {
        let mut stale: Option<Scaler> = None;
        for _ in 0..1_000 {
            let current = lock(&self.world).scaler();
            let delivered = stale.take().unwrap_or_else(|| current.clone());
            let result = reconcile::reconcile(Arc::new(delivered), self.context.clone()).await;
            if result.is_err() {
                stale = Some(current);
            }
            if done(&lock(&self.world)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let w = lock(&self.world);
        panic!(
            "{what}: not reached; Scaler {}\nunexpected requests {:?}",
            w.scaler, w.unexpected
        );
    }

    fn drained(&self) -> BTreeSet<u32> {
        self.workers
            .iter()
            .filter(|(_, w)| w.history().iter().any(|t| t.state == "DRAINING"))
            .map(|(o, _)| *o)
            .collect()
    }
}

/// The promises every run keeps, whatever happened: pre-scale was only asked about the two
/// pods that leave (the newest, ordinals 1 and 2), exactly their workers were drained, and
/// every `/scale` write came after pre-scale answered Done for its operation.
fn assert_only_leaving_pods_drained(rig: &Rig, kind: Kind, what: &str) {
    let w = lock(&rig.world);
    let calls = lock(&rig.calls);
    let leaving: BTreeSet<String> = [kind.pod_name(1), kind.pod_name(2)].into();
    assert!(
        calls.pre_scale_removed.is_subset(&leaving),
        "{what}: pre-scale was asked to drain {:?}; only {leaving:?} leave",
        calls.pre_scale_removed
    );
    assert_eq!(
        rig.drained(),
        BTreeSet::from([1, 2]),
        "{what}: exactly the leaving workers are drained"
    );
    assert!(
        w.scale_writes
            .iter()
            .all(|(_, drained_first)| *drained_first),
        "{what}: /scale written before pre-scale answered Done: {:?}",
        w.scale_writes
    );
}

/// The real sandbox (with a disk cache the caller keeps) and the trino-drain plugin's bytes.
fn sandbox_and_plugin() -> (Sandbox, Vec<u8>, tempfile::TempDir) {
    let wasm = std::fs::read(hoist_tests::operator::plugin_path("trino-drain").unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        ..SandboxConfig::default()
    })
    .unwrap();
    (sandbox, wasm, cache)
}

fn idle_at(w: &World, replicas: i64) -> bool {
    let status = &w.scaler["status"];
    status["stage"] == "Idle"
        && status["replicas"] == replicas
        && status.get("operation").is_none_or(Value::is_null)
        && w.replicas == replicas
        && w.scaler["metadata"]
            .get("finalizers")
            .is_none_or(|f| f.as_array().is_none_or(Vec::is_empty))
}

/// Runs the 3 → 1 operation with `fault` (none for the clean run); returns the writes the
/// operation made and checks every promise.
async fn scale_down(
    kind: Kind,
    sandbox: &Sandbox,
    wasm: &[u8],
    subnet: u8,
    fault: Option<(usize, Fault)>,
) -> usize {
    let rig = rig(kind, sandbox, wasm, subnet).await;
    rig.settle("Idle at 3 with the plugin ready", |w| {
        idle_at(w, 3)
            && w.scaler["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "HooksReady" && c["status"] == "True")
                })
    })
    .await;
    {
        let mut w = lock(&rig.world);
        w.writes = 0;
        w.fault = fault;
        w.set_desired(1);
    }
    rig.settle(&format!("{kind:?} Idle at 1 after {fault:?}"), |w| {
        idle_at(w, 1)
    })
    .await;

    assert_only_leaving_pods_drained(&rig, kind, &format!("{kind:?} {fault:?}"));
    let w = lock(&rig.world);
    let calls = lock(&rig.calls);
    let stays: Vec<&FakePod> = w.pods.iter().filter(|p| !p.terminating).collect();
    assert_eq!(
        stays.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        vec![kind.pod_name(0)],
        "{kind:?} {fault:?}: the oldest pod stays"
    );
    assert!(
        stays.iter().all(|p| p.annotations.is_empty()),
        "{kind:?} {fault:?}: the pod that stays carries no leaving marks: {:?}",
        stays[0].annotations
    );
    assert_eq!(
        calls.on_failure, 0,
        "{kind:?} {fault:?}: nothing failed, nothing undone"
    );
    assert!(
        w.unexpected.is_empty(),
        "{kind:?} {fault:?}: unexpected requests {:?}",
        w.unexpected
    );
    w.writes
}

/// The clean operation, then one run per (write, fault), all at once.
async fn every_write_may_fail(kind: Kind) {
    let (sandbox, wasm, _cache) = sandbox_and_plugin();

    let writes = scale_down(kind, &sandbox, &wasm, 0, None).await;
    assert!(writes >= 4, "the clean operation wrote {writes} times");
    eprintln!("{kind:?}: the clean operation wrote {writes} times; each is now failed three ways");

    let mut runs = Vec::new();
    let mut subnet = 1u8;
    for at in 1..=writes {
        for fault in [Fault::Conflict, Fault::DropBefore, Fault::LostResponse] {
            let (sandbox, wasm) = (sandbox.clone(), wasm.clone());
            runs.push(tokio::spawn(async move {
                scale_down(kind, &sandbox, &wasm, subnet, Some((at, fault))).await
            }));
            subnet += 1;
        }
    }
    for run in runs {
        run.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_scale_down_survives_a_fault_at_every_write() {
    every_write_may_fail(Kind::StatefulSet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_scale_down_survives_a_fault_at_every_write() {
    every_write_may_fail(Kind::Deployment).await;
}

/// A Deployment scale-down 3 → 1 during whose last pre-scale call someone writes 2: the
/// operation goes on as decided (its status write conflicts, the next round sees the new
/// count) and removes exactly the drained pods; a second operation then serves 2, without
/// draining anything (a scale-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desired_count_written_during_the_last_pre_scale_call_drains_no_staying_pod() {
    let (sandbox, wasm, _cache) = sandbox_and_plugin();
    let kind = Kind::Deployment;
    let rig = rig(kind, &sandbox, &wasm, 250).await;
    rig.settle("Idle at 3", |w| idle_at(w, 3)).await;
    {
        let mut w = lock(&rig.world);
        w.desired_during_last_call = Some(2);
        w.set_desired(1);
    }
    rig.settle("Idle at 2", |w| idle_at(w, 2)).await;

    assert_only_leaving_pods_drained(&rig, kind, "a desired count during the last call");
    let w = lock(&rig.world);
    assert_eq!(
        w.scale_writes.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
        vec![1, 2],
        "the frozen 3 → 1 first, then 1 → 2"
    );
    let live: Vec<String> = w
        .pods
        .iter()
        .filter(|p| !p.terminating)
        .map(|p| p.name.clone())
        .collect();
    assert_eq!(live, vec![kind.pod_name(0), "web-5d9c7-new1".to_string()]);
    assert!(
        w.pods.iter().all(|p| p.annotations.is_empty()),
        "no marks left"
    );
}
