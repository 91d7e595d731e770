//! Memory of the Scalers hoist keeps (run by hand): how much of the operator's resident memory
//! at 10,000 Scalers is the Scaler objects themselves, in a reflector store as the controller
//! keeps them.
//!
//! ```sh
//! HOIST_BENCH_SCALERS=10000 cargo bench -p hoist-tests --bench cached_scalers
//! ```
//!
//! Each Scaler is a settled one as the scale bench leaves it (fixed mode on a Widget, Idle,
//! seven conditions), with its own name and uid. Prints the resident memory before and after
//! the store is filled, and per Scaler, beside the JSON size of one Scaler.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench")]

use hoist_api::Scaler;
use hoist_tests::process_stats;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::json;

fn settled(i: usize) -> serde_json::Value {
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2026-12-02T07:50:01Z", "observedGeneration": 2})
    };
    json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
        "metadata": {
            "name": format!("s-{i}"), "namespace": "bench-scale-1",
            "uid": format!("0e6a1f52-7d1c-4f0b-9a57-{i:012}"),
            "resourceVersion": format!("{}", 100_000 + i), "generation": 2,
            "creationTimestamp": "2026-12-02T07:48:00Z",
            "finalizers": ["hoist.dev/operation"]
        },
        "spec": {
            "targetRef": {"apiVersion": "fixtures.hoist.dev/v1", "kind": "Widget", "name": format!("w-{i}")},
            "minReplicas": 1, "maxReplicas": 10, "replicas": 2
        },
        "status": {
            "stage": "Idle", "replicas": 2, "observedGeneration": 2, "selector": "app=w",
            "lastScaleTime": "2026-12-02T07:52:10Z",
            "conditions": [
                condition("Ready", "True", "Idle", "running 2 replicas as asked"),
                condition("ScalingActive", "False", "Idle", "no operation in flight"),
                condition("HooksReady", "True", "NoHooks", "no hook plugin configured"),
                condition("AbleToScale", "True", "TargetReachable", "fixtures.hoist.dev/v1/Widget w can be scaled"),
                condition("WithinBounds", "True", "WithinBounds", "2 replicas, within minReplicas 1 and maxReplicas 10"),
                condition("ValidSpec", "True", "Valid", "the spec is valid"),
                condition("TargetConflict", "False", "NoConflict", "no other Scaler or HorizontalPodAutoscaler targets fixtures.hoist.dev/v1/Widget w"),
            ]
        }
    })
}

fn main() {
    let n: usize = std::env::var("HOIST_BENCH_SCALERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let me = std::process::id();
    let json_size = serde_json::to_vec(&settled(0)).unwrap().len();
    let (store, mut writer) = reflector::store::<Scaler>();
    let before = process_stats::memory(me).unwrap().rss_mib();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..n {
        let scaler: Scaler = serde_json::from_value(settled(i)).unwrap();
        writer.apply_watcher_event(&watcher::Event::InitApply(scaler));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let after = process_stats::memory(me).unwrap().rss_mib();
    assert_eq!(store.state().len(), n);
    let per = (after - before) * 1024.0 * 1024.0 / f64::from(u32::try_from(n).unwrap());
    println!("cached Scalers: {n} in a reflector store");
    println!("one Scaler as JSON: {json_size} bytes");
    println!(
        "resident memory: {before:.1} MiB before, {after:.1} MiB after: {:.1} MiB, {per:.0} bytes per Scaler",
        after - before
    );
}
