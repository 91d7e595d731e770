//! nifi-decommission against a loopback server that enforces the `NiFi` rules: offload only a
//! DISCONNECTED node, delete only an OFFLOADED one, every call with the bearer token.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Seen, options, plugin_bytes, pod, sandbox, scale_down, serve};
use hoist_sandbox::{HookOutcome, HookRunner};
use serde_json::{Value, json};

struct Node {
    id: String,
    address: String,
    status: String,
    /// Cluster listings seen since the last transition.
    ticks: u32,
}

struct Cluster {
    nodes: Vec<Node>,
    events: Vec<String>,
    refused: Vec<String>,
}

const TOKEN: &str = "eyJ-test-token";

fn nifi(cluster: Arc<Mutex<Cluster>>) -> common::Handler {
    Arc::new(move |req: &Seen| {
        let mut c = cluster.lock().unwrap();
        if req.method == "POST" && req.path == "/nifi-api/access/token" {
            return if req.body == "username=admin&password=s3cr%3Dt" {
                (201, TOKEN.into())
            } else {
                (401, "bad credentials".into())
            };
        }
        if req.headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {TOKEN}"))
        {
            return (401, "unauthorized".into());
        }
        if req.method == "GET" && req.path == "/nifi-api/controller/cluster" {
            // Time passes between listings: transitional states settle.
            for n in &mut c.nodes {
                n.ticks += 1;
                match n.status.as_str() {
                    "DISCONNECTING" if n.ticks >= 1 => n.status = "DISCONNECTED".into(),
                    "OFFLOADING" if n.ticks >= 2 => n.status = "OFFLOADED".into(),
                    _ => {}
                }
            }
            let nodes: Vec<Value> = c.nodes.iter().map(|n| json!({"nodeId": n.id, "address": n.address, "apiPort": 8443, "status": n.status})).collect();
            return (
                200,
                json!({"cluster": {"nodes": nodes, "generated": "12:00:00 UTC"}}).to_string(),
            );
        }
        let Some(id) = req.path.strip_prefix("/nifi-api/controller/cluster/nodes/") else {
            return (404, "not found".into());
        };
        let id = id.to_string();
        let Some(idx) = c.nodes.iter().position(|n| n.id == id) else {
            return (404, "no such node".into());
        };
        match req.method.as_str() {
            "PUT" => {
                let body: Value = serde_json::from_str(&req.body).unwrap_or(Value::Null);
                let wanted = body["node"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if body["node"]["nodeId"] != json!(id) {
                    return (400, "nodeId mismatch".into());
                }
                let current = c.nodes[idx].status.clone();
                let ok = match wanted.as_str() {
                    "DISCONNECTING" => current == "CONNECTED",
                    "OFFLOADING" => current == "DISCONNECTED",
                    "CONNECTING" => matches!(current.as_str(), "DISCONNECTED" | "OFFLOADED"),
                    _ => false,
                };
                if !ok {
                    c.refused.push(format!("{wanted} {id} while {current}"));
                    return (
                        409,
                        format!("Cannot set {id} to {wanted}: node is {current}"),
                    );
                }
                c.events.push(format!("{wanted} {id}"));
                c.nodes[idx].status = wanted;
                c.nodes[idx].ticks = 0;
                (200, req.body.clone())
            }
            "DELETE" => {
                let current = c.nodes[idx].status.clone();
                if current != "OFFLOADED" {
                    c.refused.push(format!("DELETE {id} while {current}"));
                    return (
                        409,
                        format!("Cannot remove {id}: node is {current}, not OFFLOADED"),
                    );
                }
                c.events.push(format!("DELETE {id}"));
                c.nodes.remove(idx);
                (200, "{}".into())
            }
            _ => (405, String::new()),
        }
    })
}

#[tokio::test]
async fn decommissions_two_nodes_phase_by_phase_through_a_staying_node() {
    let ips = ["127.0.2.1", "127.0.2.2", "127.0.2.3"];
    let fqdn = |i: usize| format!("nifi-{i}.nifi-headless.data.svc.cluster.local");
    let cluster = Arc::new(Mutex::new(Cluster {
        nodes: (0..3)
            .map(|i| Node {
                id: format!("node-{i}-uuid"),
                address: fqdn(i),
                status: "CONNECTED".into(),
                ticks: 0,
            })
            .collect(),
        events: Vec::new(),
        refused: Vec::new(),
    }));
    // Only the node that stays (ordinal 0) serves the API here: the plugin must go through it.
    let port = serve(&ips[..1], nifi(cluster.clone())).await;
    let all: Vec<_> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| pod(&format!("nifi-{i}"), u32::try_from(i).unwrap(), ip))
        .collect();
    let config = format!(
        r#"{{"port": {port}, "scheme": "http", "credentials": {{"username": "admin", "password": "s3cr=t"}}, "pollIntervalMs": 100}}"#
    );
    let mut ctx = scale_down(all, 2, &config);
    let opts = options(Duration::from_secs(10), &[format!("{}:{port}", ips[0])]);

    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("nifi-decommission")).unwrap();
    sb.validate_config(&plugin, &config, &opts).await.unwrap();

    let mut rounds = 0;
    let mut phases = Vec::new();
    let done = loop {
        rounds += 1;
        assert!(
            rounds < 20,
            "never finished; events {:?}",
            cluster.lock().unwrap().events
        );
        match sb.pre_scale(&plugin, &ctx, &opts).await.unwrap() {
            HookOutcome::InProgress { state, message, .. } => {
                let saved: Value = serde_json::from_str(&state).unwrap();
                assert_eq!(saved["nodes"]["nifi-1"], "node-1-uuid", "{state}");
                assert_eq!(saved["nodes"]["nifi-2"], "node-2-uuid", "{state}");
                phases.push(saved["phase"].as_str().unwrap().to_string());
                assert!(
                    message.starts_with(saved["phase"].as_str().unwrap()),
                    "{message}"
                );
                ctx.saved_state = Some(state);
                ctx.attempt += 1;
            }
            HookOutcome::Done { message } => break message,
        }
    };
    assert_eq!(done, "2 node(s) disconnected, offloaded and deleted");
    assert!(
        phases.first().is_some_and(|p| p == "disconnecting"),
        "{phases:?}"
    );
    assert!(phases.iter().any(|p| p == "offloading"), "{phases:?}");

    let c = cluster.lock().unwrap();
    assert!(c.refused.is_empty(), "NiFi refused: {:?}", c.refused);
    let pos = |e: &str| {
        c.events
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("{e} missing from {:?}", c.events))
    };
    let last_disconnect = pos("DISCONNECTING node-1-uuid").max(pos("DISCONNECTING node-2-uuid"));
    let first_offload = pos("OFFLOADING node-1-uuid").min(pos("OFFLOADING node-2-uuid"));
    let last_offload = pos("OFFLOADING node-1-uuid").max(pos("OFFLOADING node-2-uuid"));
    let first_delete = pos("DELETE node-1-uuid").min(pos("DELETE node-2-uuid"));
    assert!(
        last_disconnect < first_offload,
        "one phase for all nodes before the next: {:?}",
        c.events
    );
    assert!(last_offload < first_delete, "{:?}", c.events);
    assert_eq!(c.events.len(), 6, "{:?}", c.events);
    let left: Vec<&str> = c.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(left, ["node-0-uuid"]);
}

#[tokio::test]
async fn on_failure_reconnects_disconnected_nodes() {
    let ips = ["127.0.2.11", "127.0.2.12"];
    let cluster = Arc::new(Mutex::new(Cluster {
        nodes: vec![
            Node {
                id: "a".into(),
                address: ips[0].into(),
                status: "CONNECTED".into(),
                ticks: 0,
            },
            Node {
                id: "b".into(),
                address: ips[1].into(),
                status: "CONNECTED".into(),
                ticks: 0,
            },
        ],
        events: Vec::new(),
        refused: Vec::new(),
    }));
    let port = serve(&ips[..1], nifi(cluster.clone())).await;
    let all = vec![pod("nifi-0", 0, ips[0]), pod("nifi-1", 1, ips[1])];
    let config = format!(
        r#"{{"port": {port}, "scheme": "http", "credentials": {{"username": "admin", "password": "s3cr=t"}}}}"#
    );
    let mut ctx = scale_down(all, 1, &config);
    let opts = options(Duration::from_secs(10), &[ips[0].to_string()]);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("nifi-decommission")).unwrap();
    // Two rounds: disconnect, then (DISCONNECTED) offload starts.
    for _ in 0..2 {
        if let HookOutcome::InProgress { state, .. } =
            sb.pre_scale(&plugin, &ctx, &opts).await.unwrap()
        {
            ctx.saved_state = Some(state);
        }
    }
    // Matched by IP this time; let offloading finish, then fail the operation.
    cluster.lock().unwrap().nodes[1].status = "OFFLOADED".into();
    let failure = hoist_sandbox::FailureInfo {
        stage: hoist_sandbox::FailedStage::PreScaling,
        reason: "HookDeadlineExceeded".into(),
    };
    sb.on_failure(&plugin, &ctx, &failure, &opts).await.unwrap();
    let c = cluster.lock().unwrap();
    assert_eq!(c.nodes[1].status, "CONNECTING");
    assert_eq!(
        c.events,
        ["DISCONNECTING b", "OFFLOADING b", "CONNECTING b"]
    );
}

#[tokio::test]
async fn decommissions_over_mutual_tls_with_credentials_from_secrets() {
    common::Logs::capture();
    let ips = ["127.0.2.21", "127.0.2.22"];
    let cluster = Arc::new(Mutex::new(Cluster {
        nodes: vec![
            Node {
                id: "a".into(),
                address: ips[0].into(),
                status: "CONNECTED".into(),
                ticks: 0,
            },
            Node {
                id: "b".into(),
                address: ips[1].into(),
                status: "CONNECTED".into(),
                ticks: 0,
            },
        ],
        events: Vec::new(),
        refused: Vec::new(),
    }));
    // NiFi's own CA, a server certificate for the pod IP, client certificates required.
    let pki = common::Pki::new("nifi CA", &ips[..1], &["nifi-0.nifi-headless.data.svc"]);
    let port = common::serve_tls(&ips[..1], nifi(cluster.clone()), pki.server_config(true)).await;
    let all = vec![pod("nifi-0", 0, ips[0]), pod("nifi-1", 1, ips[1])];
    // No credentials in the config: only the names of the secrets holding them.
    let config = format!(
        r#"{{"port": {port}, "credentials": {{"usernameSecret": "username", "passwordSecret": "password"}}, "pollIntervalMs": 100}}"#
    );
    let mut ctx = scale_down(all, 1, &config);
    let secrets = hoist_sandbox::HookSecrets::new()
        .with("username", "admin")
        .with("password", "s3cr=t");
    let opts = options(Duration::from_secs(10), &[format!("{}:{port}", ips[0])])
        .with_tls(pki.tls_settings(true).client_config().unwrap())
        .with_secrets(secrets.clone());
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("nifi-decommission")).unwrap();
    sb.validate_config(&plugin, &config, &opts).await.unwrap();
    let done = loop {
        assert!(ctx.attempt < 20, "{:?}", cluster.lock().unwrap().events);
        match sb.pre_scale(&plugin, &ctx, &opts).await.unwrap() {
            HookOutcome::InProgress { state, .. } => {
                ctx.saved_state = Some(state);
                ctx.attempt += 1;
            }
            HookOutcome::Done { message } => break message,
        }
    };
    assert_eq!(done, "1 node(s) disconnected, offloaded and deleted");
    assert_eq!(
        cluster.lock().unwrap().events,
        ["DISCONNECTING b", "OFFLOADING b", "DELETE b"]
    );

    // Without the secrets the plugin says which one is missing; nothing is sent.
    let without = options(Duration::from_secs(10), &[format!("{}:{port}", ips[0])])
        .with_tls(pki.tls_settings(true).client_config().unwrap());
    ctx.saved_state = None;
    let err = sb.pre_scale(&plugin, &ctx, &without).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("`credentials.usernameSecret`: no secret named \"username\""),
        "{err}"
    );
    // The password never reached the operator's log.
    assert!(!common::Logs::text().contains("s3cr=t"));
}
