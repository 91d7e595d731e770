//! `builtin` mode on the real control plane against a real Prometheus (Debian's binary on
//! loopback, scraping an exporter the test sets): hoist's own autoscaler (the HPA formula, 1 s
//! decisions, 5 s scale-down window, 3 s scale-to-zero grace) writes the Scaler's /scale and the
//! state machine moves the StatefulSet: up with demand, down after the window, to zero and back
//! from zero; with Prometheus stopped the last known value is held (`MetricsAvailable=False`,
//! `LastKnownValueHeld`) and nothing is scaled.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines,
    reason = "tests"
)]

#[path = "autoscaling_kit.rs"]
mod kit;

use std::time::Duration;

use hoist_api::Scaler;
use hoist_api::conditions::{AUTOSCALER_ACTIVE, METRICS_AVAILABLE};
use hoist_tests::prometheus::{DEMAND_QUERY, Prometheus};
use serde_json::json;

use kit::{apply_scaler, create_statefulset, env, has_condition, idle_at};

async fn demand(prom: &Prometheus, value: f64) {
    prom.set_value(value);
    prom.wait_for(DEMAND_QUERY, value).await.unwrap();
}

#[tokio::test]
async fn builtin_scales_with_prometheus_to_zero_and_back_and_holds_on_outage() {
    let mut prom = Prometheus::start().await.expect("a real Prometheus");
    let env = env("as-builtin").await;
    let ns = &env.ns;
    create_statefulset(ns, "web", 2).await.unwrap();
    demand(&prom, 20.0).await;
    apply_scaler(
        ns,
        "web",
        json!({
            "targetRef": kit::sts_ref("web"),
            "minReplicas": 0, "maxReplicas": 6,
            "autoscaling": {"builtin": {
                "algorithm": "hpa",
                "metrics": [{"prometheus": {"address": prom.address(), "query": DEMAND_QUERY, "target": 10}}],
                "decisionInterval": "1s",
                "scaleToZeroGracePeriod": "3s",
                "hpa": {"scaleDownStabilization": "5s"}
            }}
        }),
    )
    .await;
    // On target (20 over 2 pods, 10 each): nothing moves; the conditions say the autoscaler runs.
    kit::wait_scaler(&env, "web", "MetricsAvailable and AutoscalerActive", |s| {
        has_condition(s, METRICS_AVAILABLE, "True", "MetricAvailable")
            && has_condition(s, AUTOSCALER_ACTIVE, "True", "Recommending")
            && idle_at(s, 2)
    })
    .await;

    // Up: 40 over 2 pods is twice the target → 4.
    demand(&prom, 40.0).await;
    kit::wait_scaler(&env, "web", "scaled up to 4", |s| {
        s.spec.replicas == Some(4) && idle_at(s, 4)
    })
    .await;
    kit::wait_statefulset_ready(ns, "web", 4).await.unwrap();

    // Down after the 5 s window: 10 over 4 pods → 1.
    demand(&prom, 10.0).await;
    kit::wait_scaler(&env, "web", "scaled down to 1", |s| {
        s.spec.replicas == Some(1) && idle_at(s, 1)
    })
    .await;

    // To zero after the grace period, and back from zero (Prometheus answers at zero pods).
    demand(&prom, 0.0).await;
    kit::wait_scaler(&env, "web", "scaled to zero", |s| {
        s.spec.replicas == Some(0) && idle_at(s, 0)
    })
    .await;
    kit::wait_statefulset_ready(ns, "web", 0).await.unwrap();
    demand(&prom, 15.0).await;
    let s = kit::wait_scaler(&env, "web", "back from zero", |s| {
        s.spec.replicas.is_some_and(|n| n >= 1)
            && s.status.as_ref().and_then(|st| st.replicas) >= Some(1)
    })
    .await;
    assert!(
        s.spec.replicas <= Some(2),
        "15 needs at most 2: {:?}",
        s.spec.replicas
    );
    let settled = kit::wait_scaler(&env, "web", "settled at 2", |s| {
        s.spec.replicas == Some(2) && idle_at(s, 2)
    })
    .await;

    // Outage: Prometheus stops. The last known value (15) is held, the condition says so, and
    // the count stays (never to zero or min because the source is down).
    prom.stop();
    let held = kit::wait_scaler(
        &env,
        "web",
        "MetricsAvailable=False LastKnownValueHeld",
        |s| has_condition(s, METRICS_AVAILABLE, "False", "LastKnownValueHeld"),
    )
    .await;
    let message = kit::condition_message(&held, METRICS_AVAILABLE);
    assert!(message.contains("metrics[0]"), "{message}");
    // Several decisions pass (1 s each) with the source down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let s = env.ns.api::<Scaler>().get("web").await.unwrap();
    assert_eq!(s.spec.replicas, settled.spec.replicas, "held, not scaled");
    assert!(has_condition(
        &s,
        METRICS_AVAILABLE,
        "False",
        "LastKnownValueHeld"
    ));
    assert!(idle_at(&s, 2));

    // The source comes back: fresh again.
    prom.restart().await.unwrap();
    demand(&prom, 15.0).await;
    kit::wait_scaler(&env, "web", "MetricsAvailable again", |s| {
        has_condition(s, METRICS_AVAILABLE, "True", "MetricAvailable")
    })
    .await;
}
