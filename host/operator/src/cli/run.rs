//! `hoist run`: the operator process. Checks the CRD is installed, serves /healthz, /readyz
//! and /metrics, competes for the leader lease, and runs the Scaler controller while it
//! leads (with `--shards N`: competes for the shard Leases and runs the controller at once,
//! acting on the Scalers of the shards it holds). SIGTERM/SIGINT shut down gracefully (in-flight reconciles finish, the lease is
//! released); losing the lease exits non-zero so the pod restarts as a standby.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use hoist_api::Scaler;
use hoist_sandbox::{Sandbox, SandboxConfig};
use kube::api::ListParams;
use kube::runtime::events::Reporter;
use kube::{Api, Client};

use crate::act::Actor;
use crate::autoscaling::{Autoscalers, Modes};
use crate::controller::{self, Parts};
use crate::error::OperatorError;
use crate::events::Publisher;
use crate::fence::Fence;
use crate::hook_call::HookEnv;
use crate::http_server::{self, Health, Role};
use crate::latest::LatestScalers;
use crate::leader;
use crate::metrics::{Metrics, RequestLabels};
use crate::reconcile::Context;
use crate::shard_leases::{ShardLeases, ShardSettings};
use crate::target::Targets;

/// Log output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Arguments of `hoist run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address of the /healthz, /readyz and /metrics endpoint.
    #[arg(long, env = "HOIST_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Directory for precompiled plugins (kept across restarts when it is on a volume). It may be
    /// writable by others (a Kubernetes emptyDir): the cache is a private `uid-<euid>`
    /// directory inside it.
    #[arg(long, env = "HOIST_PLUGIN_CACHE_DIR")]
    pub plugin_cache_dir: Option<PathBuf>,
    /// Most linear memory of one plugin call (all its memories together), in MiB.
    #[arg(long, env = "HOIST_PLUGIN_MEMORY_MIB", default_value_t = 128)]
    pub plugin_memory_mib: u64,
    /// CPU time a plugin's compilation may take (in a worker process), in seconds.
    #[arg(long, env = "HOIST_PLUGIN_COMPILE_CPU_SECONDS", default_value_t = 60)]
    pub plugin_compile_cpu_seconds: u64,
    /// Address space a plugin's compilation may use (in a worker process), in MiB.
    #[arg(long, env = "HOIST_PLUGIN_COMPILE_MEMORY_MIB", default_value_t = 1024)]
    pub plugin_compile_memory_mib: u64,
    /// Largest plugin pulled from an OCI registry, in MiB (a ConfigMap holds 1 MiB at most).
    #[arg(long, env = "HOIST_PLUGIN_MAX_MIB", default_value_t = 64)]
    pub plugin_max_mib: u64,
    /// PEM file of CA certificates trusted for plugin registries, besides the public roots
    /// (a registry with a private CA). Repeat for several.
    #[arg(long, env = "HOIST_PLUGIN_REGISTRY_CA", value_delimiter = ',')]
    pub plugin_registry_ca: Vec<PathBuf>,
    /// Compete for a Lease and act only while holding it.
    #[arg(long, env = "HOIST_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "HOIST_LEASE_NAME", default_value = "hoist-operator")]
    pub lease_name: String,
    /// Split the Scalers over this many shards, each with its own Lease
    /// (`<lease-name>-shard-<i>-of-<N>`): every replica is active and acts on the shards it
    /// holds. 1 (the default) is one leader. Every replica must run with the same count; one
    /// that sees a live Lease of another count acts on nothing until it is gone.
    #[arg(long, env = "HOIST_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub shards: u32,
    /// This replica's identity (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Watch and act in this namespace only (Scalers, their targets, plugin ConfigMaps);
    /// by default every namespace. With it the operator needs only namespaced RBAC (a Role),
    /// and several operators can each own one namespace of a cluster.
    #[arg(long, env = "HOIST_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Scalers reconciled at once.
    #[arg(long, env = "HOIST_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,
    /// Log format.
    #[arg(long, env = "HOIST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Serve `autoscaling.hpa` (own `HorizontalPodAutoscaler`s). `false` when the operator has
    /// no RBAC for HPAs (the chart's `rbac.hpa=false`): no HPA watch, and such Scalers report
    /// `AutoscalerActive=False` instead of failing requests.
    #[arg(long, env = "HOIST_HPA_MODE", default_value_t = true, action = clap::ArgAction::Set)]
    pub hpa_mode: bool,
    /// Serve `autoscaling.keda` (own KEDA `ScaledObject`s). `false` when the operator has no RBAC
    /// for `ScaledObject`s (the chart's `rbac.keda=false`): such Scalers report
    /// `KEDAAvailable=False` and keep `spec.replicas`.
    #[arg(long, env = "HOIST_KEDA_MODE", default_value_t = true, action = clap::ArgAction::Set)]
    pub keda_mode: bool,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,kube_lease_manager=warn")
    });
    // Colours only on a terminal: a pod's log (kubectl logs) gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hoist".into());
    format!("{host}-{}", std::process::id())
}

/// `~/.cache/hoist/plugins` (`/var/cache/hoist/plugins` without a home directory).
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(
            || PathBuf::from("/var/cache/hoist"),
            |h| PathBuf::from(h).join(".cache/hoist"),
        )
        .join("plugins")
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

async fn check_crd(client: &Client, namespace: Option<&str>) -> Result<(), OperatorError> {
    let scalers: Api<Scaler> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let missing = |e: kube::Error| match e {
        kube::Error::Api(s) if s.code == 404 => OperatorError::CrdMissing { reason: s.message },
        e => OperatorError::CrdMissing {
            reason: e.to_string(),
        },
    };
    scalers
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(missing)?;
    // HookPolicies are cluster-scoped, read cluster-wide in every mode: no hook runs before
    // they are listed, so a missing CRD (an upgrade that skipped crds/) must be said at once.
    Api::<hoist_api::HookPolicy>::all(client.clone())
        .list_metadata(&ListParams::default().limit(1))
        .await
        .map_err(missing)?;
    Ok(())
}

/// A client from the environment whose every request counts in `hoist_kube_requests_total`.
async fn counting_client(metrics: &Arc<Metrics>) -> Result<(Client, http::Uri), OperatorError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| OperatorError::Connect(kube::Error::InferConfig(e)))?;
    let cluster_url = config.cluster_url.clone();
    let requests = metrics.kube_requests.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        requests
            .get_or_create(&RequestLabels::of(
                req.method().as_str(),
                req.uri().path(),
                req.uri().query(),
            ))
            .inc();
        req
    });
    Ok((
        kube::client::ClientBuilder::try_from(config)
            .map_err(OperatorError::Connect)?
            .with_layer(&count)
            .build(),
        cluster_url,
    ))
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(operate(args)).map_err(anyhow::Error::from)
}

#[allow(
    clippy::too_many_lines,
    reason = "start-up reads top to bottom: client, CRD, endpoints, sandbox, lease, controller, shutdown"
)]
async fn operate(args: &Args) -> Result<(), OperatorError> {
    // Which build runs, and as whom (the plugin cache directory is named after the uid).
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        revision = crate::REVISION,
        uid = rustix::process::geteuid().as_raw(),
        gid = rustix::process::getegid().as_raw(),
        "hoist run starting"
    );
    let metrics = Arc::new(Metrics::new());
    let (client, cluster_url) = counting_client(&metrics).await?;
    check_crd(&client, args.namespace.as_deref()).await?;
    if let Some(ns) = &args.namespace {
        tracing::info!(namespace = %ns, "watching one namespace");
    }

    let health = Arc::new(Health::default());
    let (bound, serve) =
        http_server::bind(args.metrics_addr, health.clone(), metrics.clone()).await?;
    tracing::info!(addr = %bound, "serving /healthz /readyz /metrics");
    let server = tokio::spawn(serve);

    // The flag names a volume others may write (an emptyDir is mode 0777): the cache is this
    // user's private directory inside it.
    let cache_dir = hoist_sandbox::private_cache_dir(
        &args
            .plugin_cache_dir
            .clone()
            .unwrap_or_else(default_cache_dir),
    );
    let sandbox = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache_dir),
        // Plugins come from ConfigMaps: compile each in a bounded worker process.
        compile: crate::cli::compile_in_worker(crate::cli::compile_limits(
            args.plugin_compile_cpu_seconds,
            args.plugin_compile_memory_mib,
        ))
        .map_err(OperatorError::Sandbox)?,
        memory_limit_bytes: args.plugin_memory_mib.saturating_mul(1024 * 1024),
        ..SandboxConfig::default()
    })
    .map_err(OperatorError::Sandbox)?;

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let shards = if args.shards > 1 {
        if !args.leader_elect {
            return Err(OperatorError::ShardsNeedLeases);
        }
        let shards = ShardLeases::start(
            ShardSettings {
                client: client.clone(),
                namespace: args.lease_namespace.clone(),
                base: args.lease_name.clone(),
                count: args.shards,
                identity: identity.clone(),
            },
            metrics.clone(),
        )
        .await?;
        Some(shards)
    } else {
        None
    };
    let mut leadership = if args.leader_elect && shards.is_none() {
        let mut l = leader::compete(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
        )
        .await?;
        health.set_role(Role::Standby);
        tracing::info!(%identity, lease = %format!("{}/{}", args.lease_namespace, args.lease_name), "waiting for the leader lease");
        tokio::select! {
            acquired = l.acquired() => if !acquired { return Ok(()) },
            () = shutdown_signal() => { l.release().await; return Ok(()); }
        }
        tracing::info!(%identity, "leading");
        metrics.leader.set(1);
        Some(l)
    } else {
        None
    };
    if !args.leader_elect {
        metrics.leader.set(1);
    }
    health.set_role(Role::Syncing);

    let (policies, policy_watch) = controller::policy_stores();

    let fence = match (&shards, &leadership) {
        (Some(shards), _) => Fence::Shards(shards.ownership.clone()),
        (None, Some(l)) => Fence::lease(l.is_leader.clone()),
        (None, None) => Fence::unfenced(),
    };
    let latest = Arc::new(LatestScalers::default());
    let targets = Targets::new(client.clone());
    let recorder = Publisher::new(
        client.clone(),
        Reporter {
            controller: "hoist".into(),
            instance: Some(identity.clone()),
        },
    );
    let forbidden = crate::hook_access::operator_forbidden(&cluster_url, bound).await;
    tracing::info!(
        closed = %forbidden,
        "hooks and metric queries never reach these unless a HookPolicy names them"
    );
    let access = crate::hook_access::HookAccess::new(client.clone(), policies, forbidden);
    let mut extra_ca_pem = Vec::new();
    for path in &args.plugin_registry_ca {
        extra_ca_pem.push(
            std::fs::read(path).map_err(|source| OperatorError::ReadRegistryCa {
                path: path.display().to_string(),
                source,
            })?,
        );
    }
    let oci = crate::plugins::OciSources {
        puller: crate::plugin_oci::OciPuller::new(
            client.clone(),
            crate::plugin_oci::RegistrySettings {
                extra_ca_pem,
                max_bytes: args.plugin_max_mib.saturating_mul(1024 * 1024),
            },
        ),
        access: Some(access.clone()),
    };
    let (cm_store, cm_writer) = controller::plugin_store();
    let (plugins, loads) =
        controller::plugin_registry(sandbox.clone(), cm_store, Some(oci), metrics.clone());
    let (autoscalers, autoscaling_triggers) = Autoscalers::new(
        client.clone(),
        args.namespace.clone(),
        Modes {
            hpa: args.hpa_mode,
            keda: args.keda_mode,
        },
        Some(access.clone()),
    );
    let context = Arc::new(Context {
        hooks: HookEnv {
            runner: Arc::new(sandbox),
            plugins,
            access,
            targets: targets.clone(),
            metrics: metrics.clone(),
            fence: fence.clone(),
        },
        actor: Actor {
            client: client.clone(),
            targets,
            recorder: recorder.clone(),
            metrics: metrics.clone(),
            fence,
            latest: latest.clone(),
        },
        metrics: metrics.clone(),
        autoscalers,
        latest,
        progress: health.progress.clone(),
        scalers: std::sync::OnceLock::new(),
        hpas: std::sync::OnceLock::new(),
        by_target: crate::target_index::TargetIndexes::default(),
    });
    let (synced_tx, synced_rx) = tokio::sync::oneshot::channel::<()>();
    let synced_health = health.clone();
    tokio::spawn(async move {
        if synced_rx.await.is_ok() {
            tracing::info!("caches synced; ready");
            synced_health.set_role(Role::Leading);
        }
    });
    let parts = Parts {
        client,
        context,
        configmaps: cm_writer,
        loads,
        recorder,
        concurrency: args.concurrency.max(1),
        namespace: args.namespace.clone(),
        autoscaling_triggers,
        watch_hpas: args.hpa_mode,
        caches_synced: synced_tx,
        policy_watch,
        owned_shards: shards.as_ref().map(|s| s.owned.clone()),
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controller = tokio::spawn(controller::run(parts, async move {
        let _ = stop_rx.await;
    }));
    let lost = async {
        match leadership.as_mut() {
            Some(l) => l.lost().await,
            None => std::future::pending().await,
        }
    };
    let mut controller_ended = false;
    let lost_leadership = tokio::select! {
        () = shutdown_signal() => { tracing::info!("shutting down"); false }
        () = lost => { tracing::error!("lost the leader lease; stopping"); true }
        _ = &mut controller => {
            // The controller loop should run as long as this replica leads: /healthz fails
            // so that the kubelet restarts the process.
            tracing::error!("the controller loop ended; /healthz reports it");
            health.progress.set_stopped();
            controller_ended = true;
            false
        }
    };
    let _ = stop_tx.send(());
    if !controller_ended {
        let _ = controller.await;
    }
    metrics.leader.set(0);
    if let Some(shards) = shards {
        shards.release().await;
    }
    if let Some(l) = leadership {
        if lost_leadership {
            l.abandon();
        } else {
            l.release().await;
        }
    }
    server.abort();
    if lost_leadership {
        return Err(OperatorError::LeaderLost);
    }
    Ok(())
}
