//! Prometheus metrics of the operator (text exposition on `/metrics`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub from: String,
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub plugin: String,
    pub hook: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLatencyLabels {
    pub plugin: String,
    pub hook: &'static str,
}

/// One kind of request to the API server: the HTTP method and what it addresses.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// [`request_resource`] of the path: `scalers/status`, `pods (list)`, `leases`, ...
    pub resource: String,
}

impl RequestLabels {
    /// The labels of a request with `method` to `path` (and `query`, without `?`).
    pub fn of(method: &str, path: &str, query: Option<&str>) -> Self {
        Self {
            method: method.to_string(),
            resource: request_resource(path, query),
        }
    }
}

/// What a request addresses, named so that the values stay few: the resource and
/// subresource (`scalers/status`, `statefulsets/scale`), with ` (list)` or ` (watch)` when no
/// object is named. Namespaces, object names, groups and versions are left out; a path that
/// is not a resource path (discovery, `/version`) is `discovery`.
pub fn request_resource(path: &str, query: Option<&str>) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (["api", _, rest @ ..] | ["apis", _, _, rest @ ..]) = segments.as_slice() else {
        return "discovery".to_string();
    };
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        other => other,
    };
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match rest {
        [] => "discovery".to_string(),
        [resource] if watch => format!("{resource} (watch)"),
        [resource] => format!("{resource} (list)"),
        [resource, _name] => (*resource).to_string(),
        [resource, _name, sub, ..] => format!("{resource}/{sub}"),
    }
}

/// A target kind (`apiVersion kind`) of the watches of [`crate::target_watch`]; at most
/// [`crate::target_watch::MAX_WATCHED_KINDS`] values.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metric families, registered once.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub stage_transitions: Family<TransitionLabels, Counter>,
    pub hook_calls: Family<HookLabels, Counter>,
    pub hook_duration: Family<HookLatencyLabels, Histogram, fn() -> Histogram>,
    pub plugin_loads: Family<ResultLabels, Counter>,
    pub failures: Family<StageLabels, Counter>,
    pub scale_writes: Counter,
    pub leader: Gauge,
    pub shards_held: Gauge,
    pub kube_requests: Family<RequestLabels, Counter>,
    pub watched_target_kinds: Gauge,
    pub target_watch_events: Family<KindLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hoist");
        let reconciles = Family::<ResultLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Scaler reconciliations by result",
            reconciles.clone(),
        );
        let reconcile_duration = latency_histogram();
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        let stage_transitions = Family::<TransitionLabels, Counter>::default();
        registry.register(
            "stage_transitions",
            "Scaler stage transitions",
            stage_transitions.clone(),
        );
        let hook_calls = Family::<HookLabels, Counter>::default();
        registry.register(
            "hook_calls",
            "Hook calls by plugin, hook and outcome",
            hook_calls.clone(),
        );
        let hook_duration =
            Family::<HookLatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "hook_duration_seconds",
            "Hook call latency",
            hook_duration.clone(),
        );
        let plugin_loads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "plugin_loads",
            "Plugin loads (compile or cache) by result",
            plugin_loads.clone(),
        );
        let failures = Family::<StageLabels, Counter>::default();
        registry.register(
            "failures",
            "Operations that went to Failed, by the stage that failed",
            failures.clone(),
        );
        let scale_writes = Counter::default();
        registry.register(
            "scale_writes",
            "Writes to targets' /scale subresource",
            scale_writes.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        let shards_held = Gauge::default();
        registry.register(
            "shards_held",
            "Shards (hoist run --shards) whose Lease this replica holds and has renewed in time",
            shards_held.clone(),
        );
        let kube_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests sent to the Kubernetes API server, by HTTP method and resource (a watch counts once)",
            kube_requests.clone(),
        );
        let watched_target_kinds = Gauge::default();
        registry.register(
            "watched_target_kinds",
            "Target kinds beyond StatefulSet, Deployment and ReplicaSet that hoist watches",
            watched_target_kinds.clone(),
        );
        let target_watch_events = Family::<KindLabels, Counter>::default();
        registry.register(
            "target_watch_events",
            "Changes seen by the watches of target kinds beyond the built-in ones, by kind",
            target_watch_events.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            stage_transitions,
            hook_calls,
            hook_duration,
            plugin_loads,
            failures,
            scale_writes,
            leader,
            shards_held,
            kube_requests,
            watched_target_kinds,
            target_watch_events,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_resource_not_by_object() {
        let cases = [
            (
                "/apis/hoist.dev/v1alpha1/namespaces/a/scalers/s1/status",
                None,
                "scalers/status",
            ),
            (
                "/apis/hoist.dev/v1alpha1/namespaces/a/scalers/s1",
                None,
                "scalers",
            ),
            (
                "/apis/apps/v1/namespaces/a/statefulsets/web/scale",
                None,
                "statefulsets/scale",
            ),
            (
                "/api/v1/namespaces/a/pods",
                Some("labelSelector=app%3Dweb"),
                "pods (list)",
            ),
            (
                "/api/v1/namespaces/a/pods",
                Some("watch=true&resourceVersion=5"),
                "pods (watch)",
            ),
            (
                "/apis/hoist.dev/v1alpha1/scalers",
                Some("watch=true"),
                "scalers (watch)",
            ),
            ("/api/v1/namespaces", None, "namespaces (list)"),
            ("/api/v1/namespaces/a", None, "namespaces"),
            (
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/hoist",
                None,
                "leases",
            ),
            ("/api/v1/namespaces/a/events", None, "events (list)"),
            (
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                "events (list)",
            ),
            ("/apis", None, "discovery"),
            ("/apis/apps/v1", None, "discovery"),
            ("/version", None, "discovery"),
        ];
        for (path, query, want) in cases {
            assert_eq!(request_resource(path, query), want, "{path}?{query:?}");
        }
    }

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.reconciles
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
        m.hook_calls
            .get_or_create(&HookLabels {
                plugin: "abc".into(),
                hook: "pre-scale",
                outcome: "done",
            })
            .inc();
        m.hook_duration
            .get_or_create(&HookLatencyLabels {
                plugin: "abc".into(),
                hook: "pre-scale",
            })
            .observe(0.01);
        m.stage_transitions
            .get_or_create(&TransitionLabels {
                from: "Idle".into(),
                to: "PreScaling".into(),
            })
            .inc();
        m.leader.set(1);
        let text = m.encode();
        for name in [
            "hoist_reconciles_total{result=\"ok\"} 1",
            "hoist_hook_calls_total{plugin=\"abc\",hook=\"pre-scale\",outcome=\"done\"} 1",
            "hoist_hook_duration_seconds_bucket",
            "hoist_stage_transitions_total{from=\"Idle\",to=\"PreScaling\"} 1",
            "hoist_leader 1",
        ] {
            assert!(text.contains(name), "missing {name} in:\n{text}");
        }
    }
}
