//! A real HTTP server that behaves like a Trino worker's state endpoint, for tests that
//! drain "workers" running at pod IPs on loopback.
//!
//! `GET /v1/info/state` answers the state as a JSON string; `PUT /v1/info/state` with
//! `"DRAINING"`, `"ACTIVE"` or `"SHUTTING_DOWN"` changes it; asking a `DRAINED` worker for
//! `DRAINING` answers 400, as Trino 476 does (a `DRAINING` one answers 200). A draining worker reports
//! `DRAINING` for a configurable number of polls, then `DRAINED` (its tasks finished; the
//! process stays up), as Trino does since late 2024. Requests without `X-Trino-User` get
//! 401 like a secured coordinator would answer. Every change is recorded with its time.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;

use crate::scenario::LONG;
use crate::{TestNamespace, wait};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;

/// A state change of a worker, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    pub state: String,
}

#[derive(Debug)]
struct Worker {
    state: String,
    polls_while_draining: u32,
    polls_to_drain: u32,
    history: Vec<Transition>,
}

impl Worker {
    fn set(&mut self, state: &str) {
        self.state = state.to_string();
        self.history.push(Transition {
            at: Instant::now(),
            state: state.to_string(),
        });
    }
}

type Shared = Arc<Mutex<Worker>>;

fn lock(worker: &Shared) -> std::sync::MutexGuard<'_, Worker> {
    worker.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake worker; the server stops when this is dropped.
#[derive(Debug)]
pub struct TrinoWorker {
    addr: SocketAddr,
    worker: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TrinoWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get_state(State(worker): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
    if !headers.contains_key("x-trino-user") {
        return (StatusCode::UNAUTHORIZED, "missing X-Trino-User".into());
    }
    let mut w = lock(&worker);
    if w.state == "DRAINING" {
        w.polls_while_draining += 1;
        if w.polls_while_draining >= w.polls_to_drain {
            w.set("DRAINED");
        }
    }
    (StatusCode::OK, format!("\"{}\"", w.state))
}

async fn put_state(
    State(worker): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    if !headers.contains_key("x-trino-user") {
        return (StatusCode::UNAUTHORIZED, "missing X-Trino-User".into());
    }
    let Ok(wanted) = serde_json::from_str::<String>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            format!("body must be a JSON string, got {body:?}"),
        );
    };
    let mut w = lock(&worker);
    match (w.state.as_str(), wanted.as_str()) {
        (_, "ACTIVE") => w.set("ACTIVE"),
        ("ACTIVE", "DRAINING") => {
            w.polls_while_draining = 0;
            w.set("DRAINING");
        }
        ("DRAINING", "DRAINING") => {}
        // Trino 476 refuses to drain a drained worker again (a client must read the state
        // first).
        ("DRAINED", "DRAINING") => {
            return (
                StatusCode::BAD_REQUEST,
                "Invalid state transition to DRAINING".into(),
            );
        }
        (_, "SHUTTING_DOWN") => w.set("SHUTTING_DOWN"),
        (from, to) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot go from {from} to {to}"),
            );
        }
    }
    (StatusCode::OK, format!("\"{}\"", w.state))
}

impl TrinoWorker {
    /// Starts a worker on `ip:port` (port 0 picks one) that drains after `polls_to_drain` polls.
    pub async fn start(ip: IpAddr, port: u16, polls_to_drain: u32) -> Result<TrinoWorker> {
        let worker = Arc::new(Mutex::new(Worker {
            state: String::new(),
            polls_while_draining: 0,
            polls_to_drain,
            history: Vec::new(),
        }));
        lock(&worker).set("ACTIVE");
        let app = Router::new()
            .route("/v1/info/state", get(get_state).put(put_state))
            .with_state(worker.clone());
        let listener = tokio::net::TcpListener::bind((ip, port))
            .await
            .with_context(|| format!("binding a fake Trino worker to {ip}:{port}"))?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(TrinoWorker { addr, worker, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current state.
    pub fn state(&self) -> String {
        lock(&self.worker).state.clone()
    }

    /// Every state it went through, oldest first (starts with ACTIVE).
    pub fn history(&self) -> Vec<Transition> {
        lock(&self.worker).history.clone()
    }

    /// From now on, reports DRAINED after `more` further polls. A worker started with
    /// `polls_to_drain` `u32::MAX` stays DRAINING until this is called.
    pub fn drain_after(&self, more: u32) {
        let mut w = lock(&self.worker);
        w.polls_to_drain = w.polls_while_draining.saturating_add(more);
    }

    /// How often it was polled while DRAINING.
    pub fn polls_while_draining(&self) -> u32 {
        lock(&self.worker).polls_while_draining
    }

    /// When it first reported DRAINED, if it did.
    pub fn drained_at(&self) -> Option<Instant> {
        lock(&self.worker)
            .history
            .iter()
            .find(|t| t.state == "DRAINED")
            .map(|t| t.at)
    }
}

/// The IPs of a StatefulSet's pods by ordinal.
pub async fn pod_ips(ns: &TestNamespace, set: &str) -> Result<BTreeMap<u32, IpAddr>> {
    let pods = ns.api::<Pod>();
    wait::for_value(LONG, &format!("IPs of {set}'s pods"), || {
        let pods = pods.clone();
        let set = set.to_string();
        async move {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={set}")))
                .await?;
            let mut out = BTreeMap::new();
            for p in &list.items {
                let Some(ordinal) = p
                    .name_any()
                    .strip_prefix(&format!("{set}-"))
                    .and_then(|o| o.parse::<u32>().ok())
                else {
                    continue;
                };
                match p.status.as_ref().and_then(|s| s.pod_ip.as_deref()) {
                    Some(ip) => {
                        out.insert(ordinal, ip.parse()?);
                    }
                    None => return Ok(None),
                }
            }
            Ok((!out.is_empty()).then_some(out))
        }
    })
    .await
}

/// Fake Trino workers on the given ordinals' pod IPs, all on one port (returned).
pub async fn start_workers(
    ips: &BTreeMap<u32, IpAddr>,
    ordinals: &[u32],
    polls_to_drain: u32,
) -> Result<(u16, BTreeMap<u32, TrinoWorker>)> {
    let mut port = 0;
    let mut workers = BTreeMap::new();
    for o in ordinals {
        let ip = ips
            .get(o)
            .with_context(|| format!("no pod IP for ordinal {o}"))?;
        let w = TrinoWorker::start(*ip, port, polls_to_drain).await?;
        port = w.addr().port();
        workers.insert(*o, w);
    }
    Ok((port, workers))
}
