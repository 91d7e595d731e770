//! The operator crate's error type: one variant per operation that can fail, each naming
//! the object it was about.

use std::net::SocketAddr;

/// Errors of the hoist operator and its subcommands.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Building a Kubernetes client from the environment failed.
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    /// The Scaler or `HookPolicy` CRD is not installed (or not readable with our credentials).
    #[error(
        "the CRDs of hoist (scalers.hoist.dev, hookpolicies.hoist.dev) are not served by this cluster: {reason}. Install them with `hoist crds | kubectl apply -f -` or the Helm chart"
    )]
    CrdMissing { reason: String },
    /// Discovery could not resolve a target's apiVersion/kind.
    #[error("resolving target kind {target}: {source}")]
    DiscoverTarget {
        target: String,
        #[source]
        source: kube::Error,
    },
    /// The target kind cannot be driven by a Scaler.
    #[error("target {target} cannot be scaled: {reason}")]
    TargetNotScalable { target: String, reason: String },
    /// Reading a target or its /scale failed.
    #[error("reading target {target}: {source}")]
    ReadTarget {
        target: String,
        #[source]
        source: kube::Error,
    },
    /// Writing a target's /scale failed.
    #[error("writing replicas of {target} through /scale: {source}")]
    WriteScale {
        target: String,
        #[source]
        source: kube::Error,
    },
    /// Listing a target's pods failed.
    #[error("listing pods in {namespace}: {source}")]
    ListPods {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    /// Annotating a pod for removal failed.
    #[error("marking pod {pod} for removal: {source}")]
    MarkPod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// Removing an ended operation's marks from a pod failed.
    #[error("removing the leaving marks of pod {pod}: {source}")]
    ReleasePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    /// Adding or removing hoist's finalizer on a Scaler failed.
    #[error("updating the finalizer of Scaler {scaler}: {source}")]
    PatchFinalizer {
        scaler: String,
        #[source]
        source: kube::Error,
    },
    /// Reading a Secret or ConfigMap a Scaler's hooks name (secrets, TLS) failed.
    #[error("reading {kind} {name} for a hook call: {source}")]
    ReadHookObject {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The cluster's `HookPolicies` (or the namespaces they select by) are not listed yet: no
    /// hook may run before it is known which policies apply.
    #[error("the HookPolicies are not listed yet: no hook runs before they are")]
    PoliciesNotListed,
    /// This replica no longer holds the leader Lease: no side effect may follow.
    #[error("not the leader any more: {what} not done")]
    NotLeader { what: &'static str },
    /// This replica does not hold (or has not renewed in time) the Lease of the Scaler's shard:
    /// no side effect may follow.
    #[error("shard {shard} is not this replica's: {what} not done")]
    NotShardOwner { what: &'static str, shard: u32 },
    /// `--shards` above 1 with `--leader-elect=false`: shards are owned through Leases.
    #[error("--shards above 1 needs --leader-elect=true: each shard is owned through a Lease")]
    ShardsNeedLeases,
    /// Creating or reading a shard Lease failed.
    #[error("shard Lease {lease}: {source}")]
    ShardLease {
        lease: String,
        #[source]
        source: kube_lease_manager::LeaseManagerError,
    },
    /// Writing a Scaler's status failed.
    #[error("writing status of Scaler {scaler}: {source}")]
    WriteStatus {
        scaler: String,
        #[source]
        source: kube::Error,
    },
    /// Updating a Scaler's metadata (the retry annotation) failed.
    #[error("updating Scaler {scaler}: {source}")]
    PatchScaler {
        scaler: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the workload's count to a Scaler's absent `spec.replicas` failed.
    #[error("seeding spec.replicas of Scaler {scaler}: {source}")]
    SeedReplicas {
        scaler: String,
        #[source]
        source: kube::Error,
    },
    /// Leader election failed.
    #[error("leader election: {0}")]
    LeaderElection(#[source] kube_lease_manager::LeaseManagerError),
    /// Another replica took the leader lease.
    #[error("lost the leader lease to another replica")]
    LeaderLost,
    /// Binding or serving the health/metrics endpoint failed.
    #[error("serving health and metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be created.
    #[error("reading the registry CA file {path} (--plugin-registry-ca): {source}")]
    ReadRegistryCa {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the plugin sandbox: {0}")]
    Sandbox(#[source] hoist_sandbox::SandboxError),
    /// Building the HTTP client of the metric sources failed.
    #[error("building the HTTP client for metric sources: {0}")]
    BuildMetricsClient(#[source] reqwest::Error),
    /// A builtin metric's spec cannot be used (checked before any request).
    #[error("Scaler {scaler}: {field}: {reason}")]
    CheckMetric {
        scaler: String,
        field: String,
        reason: String,
    },
    /// A Prometheus instant query failed or did not answer with one number.
    #[error("Scaler {scaler}: {field}: querying Prometheus at {address}: {reason}")]
    QueryPrometheus {
        scaler: String,
        field: String,
        address: String,
        reason: String,
    },
    /// No ready pod's metrics endpoint gave the metric (each pod's reason listed).
    #[error("Scaler {scaler}: {field}: no ready pod gave the metric: {failures}")]
    ScrapePods {
        scaler: String,
        field: String,
        failures: String,
    },
    /// Building an object hoist owns for a Scaler (its HPA or ScaledObject) failed.
    #[error("Scaler {scaler}: building its owned object: {reason}")]
    BuildOwned { scaler: String, reason: String },
    /// Server-side applying an object hoist owns for a Scaler failed.
    #[error("Scaler {scaler}: applying its {kind}: {source}")]
    ApplyOwned {
        kind: &'static str,
        scaler: String,
        #[source]
        source: kube::Error,
    },
    /// An object of the name hoist would own for a Scaler exists and belongs to someone else.
    #[error(
        "Scaler {scaler}: a {kind} named {name} exists and is not owned by this Scaler; hoist does not take it over (delete or rename it, or point it at the Scaler and use the external mode)"
    )]
    OwnedByOther {
        kind: &'static str,
        name: String,
        scaler: String,
    },
    /// Finding or deleting an object hoist owned for a Scaler's previous mode failed.
    #[error("Scaler {scaler}: deleting its {kind} of a previous mode: {source}")]
    DeleteOwned {
        kind: &'static str,
        scaler: String,
        #[source]
        source: kube::Error,
    },
}
