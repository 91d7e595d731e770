//! Reaction bench (run by hand): how long from a Scaler's desired count changing to the
//! target's `/scale` being written, with no hooks, on the real control plane; and how many
//! API requests the operator sends per change.
//!
//! ```sh
//! cargo build --release -p hoist-operator --bin hoist
//! HOIST_TEST_CLUSTER_DIR=... cargo bench -p hoist-tests --bench reaction   # or without: starts a cluster
//! ```
//!
//! Each round writes the Scaler's `/scale` (as an HPA does) and times until a watch on the
//! StatefulSet sees `spec.replicas` change; then waits until the Scaler is Idle again before
//! the next round. Requests are counted by the operator itself (`hoist_kube_requests_total`,
//! a tower layer on its client) over the whole operation (Idle → Scaling → Idle).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::too_many_lines,
    reason = "a bench binary"
)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use hoist_api::{Scaler, Stage};
use hoist_tests::operator::{Operator, OperatorOptions, install_scaler_crd};
use hoist_tests::{Cluster, wait};
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const ROUNDS: usize = 100;

fn requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("hoist_kube_requests_total"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let cluster = Cluster::shared();
    let ns = cluster.namespace("bench-reaction").await.unwrap();
    install_scaler_crd(&ns.client).await.unwrap();
    let op = Operator::start(
        cluster,
        &OperatorOptions {
            extra_args: vec!["--namespace".into(), ns.name.clone()],
            ..OperatorOptions::default()
        },
    )
    .await
    .unwrap();

    let set: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "serviceName": "web", "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap();
    let sets = ns.api::<StatefulSet>();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let scaler: Scaler = serde_json::from_value(json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler", "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"},
            "minReplicas": 1, "maxReplicas": 3}
    }))
    .unwrap();
    let scalers = ns.api::<Scaler>();
    scalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();

    let idle_at = |n: i32| {
        let scalers = scalers.clone();
        async move {
            wait::until(Duration::from_mins(2), "the Scaler Idle", || {
                let scalers = scalers.clone();
                async move {
                    let s = scalers.get("web").await?;
                    Ok(s.status.is_some_and(|st| {
                        st.stage == Stage::Idle && st.replicas == Some(n) && st.operation.is_none()
                    }))
                }
            })
            .await
            .unwrap();
        }
    };
    idle_at(1).await;

    // A watch on the StatefulSet's spec.replicas, forwarded with the time it arrived.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, i32)>();
    let watch = tokio::spawn({
        let sets = sets.clone();
        async move {
            let mut last = None;
            let stream = watcher(sets, watcher::Config::default().fields("metadata.name=web"))
                .default_backoff()
                .applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(s)) = stream.next().await {
                let r = s.spec.and_then(|s| s.replicas).unwrap_or(0);
                if last != Some(r) {
                    last = Some(r);
                    let _ = tx.send((Instant::now(), r));
                }
            }
        }
    });
    let _ = rx.recv().await;

    let mut reactions = Vec::with_capacity(ROUNDS);
    let mut per_change = Vec::with_capacity(ROUNDS);
    for round in 0..ROUNDS {
        let to = if round % 2 == 0 { 2 } else { 1 };
        let before = requests(&op.metrics().await.unwrap());
        let t0 = Instant::now();
        scalers
            .patch_scale(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": to}})),
            )
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_mins(1), async {
            loop {
                let (at, r) = rx.recv().await.expect("the watch runs");
                if r == to {
                    return at;
                }
            }
        })
        .await
        .expect("the target's /scale was written");
        reactions.push(seen - t0);
        idle_at(to).await;
        let after = requests(&op.metrics().await.unwrap());
        per_change.push(after - before);
    }
    watch.abort();

    reactions.sort();
    let mean_requests = per_change.iter().sum::<f64>() / per_change.len() as f64;
    let mut sorted_requests = per_change.clone();
    sorted_requests.sort_by(f64::total_cmp);
    println!(
        "reaction (Scaler /scale write -> StatefulSet spec.replicas seen by a watch), {ROUNDS} changes, no hooks:"
    );
    println!(
        "  p50 {:.1} ms   p90 {:.1} ms   min {:.1} ms   max {:.1} ms",
        percentile(&reactions, 0.5).as_secs_f64() * 1e3,
        percentile(&reactions, 0.9).as_secs_f64() * 1e3,
        reactions[0].as_secs_f64() * 1e3,
        reactions[reactions.len() - 1].as_secs_f64() * 1e3,
    );
    println!(
        "  operator API requests per operation (Idle -> Scaling -> Idle, hoist_kube_requests_total): mean {mean_requests:.1}, median {}, max {}",
        sorted_requests[sorted_requests.len() / 2],
        sorted_requests[sorted_requests.len() - 1]
    );
    println!("  by method: {}", {
        let m = op.metrics().await.unwrap();
        m.lines()
            .filter(|l| l.starts_with("hoist_kube_requests_total"))
            .collect::<Vec<_>>()
            .join("; ")
    });
}
