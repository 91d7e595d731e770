//! Test kit for hoist's integration tests: one real control plane per test process.
//!
//! [`Cluster::shared`] starts `tests/cluster/up` once per process (the first test that asks
//! pays the start-up), or reuses a running cluster named by `HOIST_TEST_CLUSTER_DIR`.
//! A cluster this kit starts is owned by the test process: a watchdog started by `up`
//! tears it down when the process exits, however it exits. Each test works in a namespace
//! of its own ([`Cluster::namespace`]).
//!
//! A missing Go toolchain or a failed build is an error naming what to install, never a
//! skipped test.
#![forbid(unsafe_code)]

pub mod bulk;
pub mod faults;
pub mod helm;
pub mod keda;
pub mod nifi;
pub mod operator;
pub mod pki;
pub mod process_stats;
pub mod prometheus;
pub mod real_node;
pub mod registry;
pub mod scenario;
pub mod trino;
pub mod trino_server;
pub mod wait;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Environment variable naming the directory of an already running cluster to reuse.
pub const CLUSTER_DIR_ENV: &str = "HOIST_TEST_CLUSTER_DIR";

/// A running control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    owned: bool,
}

static SHARED: OnceLock<std::result::Result<Cluster, String>> = OnceLock::new();
static NAMESPACE_SEQ: AtomicU32 = AtomicU32::new(0);

/// The repository root (where `tests/cluster/up` lives).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl Cluster {
    /// The cluster shared by all tests of this process, started on first use.
    ///
    /// # Panics
    /// When the cluster cannot be started: the test must fail, not skip.
    #[allow(
        clippy::panic,
        reason = "test kit: a cluster that cannot start fails the test"
    )]
    pub fn shared() -> &'static Cluster {
        let shared = SHARED.get_or_init(|| Self::start_or_reuse().map_err(|e| format!("{e:#}")));
        match shared {
            Ok(cluster) => cluster,
            Err(e) => panic!("the test control plane is not available: {e}"),
        }
    }

    fn start_or_reuse() -> Result<Cluster> {
        if let Ok(dir) = std::env::var(CLUSTER_DIR_ENV) {
            let dir = PathBuf::from(dir);
            if !dir.join("kubeconfig").is_file() {
                bail!(
                    "{CLUSTER_DIR_ENV}={} has no kubeconfig; start it with tests/cluster/up",
                    dir.display()
                );
            }
            return Ok(Cluster { dir, owned: false });
        }
        let base = std::env::var_os("HOIST_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/hoist")))
            .unwrap_or_else(std::env::temp_dir)
            .join("clusters");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        let dir = base.join(format!("test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let up = repo_root().join("tests/cluster/up");
        let out = Command::new(&up)
            .arg(&dir)
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .output()
            .with_context(|| format!("running {}", up.display()))?;
        if !out.status.success() {
            bail!(
                "{} {} failed ({}):\n{}",
                up.display(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
        Ok(Cluster { dir, owned: true })
    }

    /// The directory holding kubeconfig, pki/, logs/.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this process started the cluster (and its watchdog will stop it).
    pub fn owned(&self) -> bool {
        self.owned
    }

    /// A value `tests/cluster/up` (or `node`) wrote to the cluster's `env` file, if any.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn env(&self, key: &str) -> Result<Option<String>> {
        let file = self.dir.join("env");
        let env = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        Ok(env
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned))
    }

    /// Path of the admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// A client config with admin credentials.
    pub async fn config(&self) -> Result<Config> {
        let kubeconfig =
            Kubeconfig::read_from(self.kubeconfig()).context("reading the test kubeconfig")?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("building a client config from the test kubeconfig")
    }

    /// A fresh admin client (one per test: clients are tied to the test's runtime).
    pub async fn client(&self) -> Result<Client> {
        Client::try_from(self.config().await?).context("building a kube client")
    }

    /// Creates a namespace of its own for one test, named `<prefix>-<pid>-<seq>`, and
    /// waits until its default ServiceAccount exists (pods need it).
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        self.namespace_labelled(prefix, &[]).await
    }

    /// Like [`Cluster::namespace`], for a test that sets the namespace's `HookPolicies` itself:
    /// labelled so the tests' shared policy ([`operator::TEST_POLICY`]) does not select it.
    pub async fn namespace_with_own_policy(&self, prefix: &str) -> Result<TestNamespace> {
        self.namespace_labelled(prefix, &[(operator::OWN_POLICY_LABEL, "true")])
            .await
    }

    /// A test namespace with labels.
    pub async fn namespace_labelled(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> Result<TestNamespace> {
        let client = self.client().await?;
        let seq = NAMESPACE_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{seq}", std::process::id());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait::until(
            std::time::Duration::from_mins(1),
            "the default ServiceAccount",
            || {
                let sa = sa.clone();
                async move { Ok(sa.get_opt("default").await?.is_some()) }
            },
        )
        .await?;
        Ok(TestNamespace { name, client })
    }
}

/// A namespace created for one test, with an admin client.
#[derive(Clone)]
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    /// An admin client.
    pub client: Client,
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// A namespaced API for this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}
