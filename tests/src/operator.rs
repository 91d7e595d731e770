//! The real `hoist` operator as a child process of a test, plus what it needs in the
//! cluster: the CRD and plugin ConfigMaps packed by `hoist plugin pack`.
//!
//! The binary is the one cargo built for the workspace (`tests/run` builds every target
//! before the tests run); a missing binary is an error naming the command that builds it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde::Deserialize;

use crate::{Cluster, TestNamespace, repo_root, wait};

/// Field manager the test kit applies with.
pub const TEST_MANAGER: &str = "hoist-tests";

/// The `hoist` binary cargo built next to this test executable
/// (`<target>/debug/deps/<test>` → `<target>/debug/hoist`).
pub fn hoist_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable has no target directory above it")?;
    let bin = profile_dir.join("hoist");
    if !bin.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p hoist-operator --bin hoist` (tests/run builds it)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Applies (server-side) a `HookPolicy` named `name` selecting only `ns`.
pub async fn apply_policy(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Result<()> {
    let mut spec = spec;
    spec["namespaceSelector"] =
        serde_json::json!({"matchLabels": {"kubernetes.io/metadata.name": ns.name.clone()}});
    let policy: hoist_api::HookPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "hoist.dev/v1alpha1", "kind": "HookPolicy",
        "metadata": {"name": name}, "spec": spec
    }))
    .context("building the HookPolicy")?;
    Api::<hoist_api::HookPolicy>::all(ns.client.clone())
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await
        .with_context(|| format!("applying HookPolicy {name}"))?;
    Ok(())
}

/// Deletes `HookPolicy` `name` (gone already is fine).
pub async fn delete_policy(ns: &TestNamespace, name: &str) {
    let _ = Api::<hoist_api::HookPolicy>::all(ns.client.clone())
        .delete(name, &kube::api::DeleteParams::default())
        .await;
}

/// Builds the plugins once per process (`plugins/build`) and returns the directory with
/// the `.wasm` files. A failed build is an error, never a skip.
pub fn plugins_dir() -> Result<&'static Path> {
    static DIR: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    built_once(&DIR, "plugins/build")
}

/// Path of a built plugin, by crate name (`trino-drain`, `fixture-trap`, ...).
pub fn plugin_path(name: &str) -> Result<PathBuf> {
    let path = plugins_dir()?.join(format!("{}.wasm", name.replace('-', "_")));
    if !path.is_file() {
        bail!("plugin {name}: {} is missing", path.display());
    }
    Ok(path)
}

/// The Python SDK's example (trino-drain's logic), built once per process with
/// `plugins/python/make-component` (componentize-py from the Python package index, cached).
pub fn python_example_plugin() -> Result<&'static Path> {
    static PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    built_once(&PATH, "plugins/python/make-component")
}

/// The JavaScript SDK's example (trino-drain's logic), built once per process with
/// `plugins/js/make-component` (componentize-js from npm, cached).
pub fn js_example_plugin() -> Result<&'static Path> {
    static PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    built_once(&PATH, "plugins/js/make-component")
}

/// Runs `script` (relative to the repository) once per `cell` and returns the path it printed.
fn built_once(
    cell: &'static OnceLock<std::result::Result<PathBuf, String>>,
    script: &str,
) -> Result<&'static Path> {
    let path = cell.get_or_init(|| {
        let script = repo_root().join(script);
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    });
    match path {
        Ok(p) => Ok(p.as_path()),
        Err(e) => bail!("{e}"),
    }
}

/// Label that keeps a test namespace out of [`TEST_POLICY`]: the namespace gets only the
/// policies its test writes (or hoist's builtin default).
pub const OWN_POLICY_LABEL: &str = "hoist.dev/test-own-policy";

/// The `HookPolicy` every test namespace gets unless labelled [`OWN_POLICY_LABEL`]: what an
/// admin grants a team whose hooks talk to services on loopback (the tests' fake products and
/// Prometheus): any plugin, 127.0.0.0/8, the namespace's names and the target's pods. The API
/// server and the operator's metrics port on loopback stay closed (not named explicitly).
pub const TEST_POLICY: &str = "hoist-tests-loopback";

/// Server-side applies the CRDs of `crds/scaler.yaml` (Scaler, `HookPolicy`), waits until they
/// are Established, and applies [`TEST_POLICY`].
pub async fn install_scaler_crd(client: &kube::Client) -> Result<()> {
    install_crd_file(client, "crds/scaler.yaml").await?;
    let policy: hoist_api::HookPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "hoist.dev/v1alpha1",
        "kind": "HookPolicy",
        "metadata": {"name": TEST_POLICY},
        "spec": {
            "namespaceSelector": {"matchExpressions": [
                {"key": OWN_POLICY_LABEL, "operator": "DoesNotExist"}
            ]},
            "allowAnyPlugin": true,
            "egress": {"cidrs": ["127.0.0.0/8"], "sameNamespace": true, "targetPods": true}
        }
    }))?;
    Api::<hoist_api::HookPolicy>::all(client.clone())
        .patch(
            TEST_POLICY,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await
        .context("applying the tests' HookPolicy")?;
    Ok(())
}

/// Server-side applies the CRDs in `path` (relative to the repository root; one or more YAML
/// documents) and waits until each is Established.
pub async fn install_crd_file(client: &kube::Client, path: &str) -> Result<()> {
    let path = repo_root().join(path);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let crd = CustomResourceDefinition::deserialize(doc)
            .with_context(|| format!("parsing {}", path.display()))?;
        install_crd(client, crd).await?;
    }
    Ok(())
}

async fn install_crd(client: &kube::Client, crd: CustomResourceDefinition) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().context("the CRD has no name")?;
    crds.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&crd),
    )
    .await
    .with_context(|| format!("applying CRD {name}"))?;
    wait::until(
        Duration::from_mins(1),
        &format!("CRD {name} Established"),
        || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                Ok(crds
                    .get(&name)
                    .await?
                    .status
                    .and_then(|s| s.conditions)
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    }))
            }
        },
    )
    .await
}

/// The fixture workload `fixtures.hoist.dev/v1 Widget` (`tests/fixtures/widget-crd.yaml`):
/// a custom resource with a /scale subresource and no controller, whose status a test or
/// bench sets itself.
pub fn widget_resource() -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("fixtures.hoist.dev", "v1", "Widget"),
        "widgets",
    )
}

/// Installs the Widget CRD and waits until it is Established.
pub async fn install_widget_crd(client: &kube::Client) -> Result<()> {
    install_crd_file(client, "tests/fixtures/widget-crd.yaml").await
}

/// Packs `wasm` with `hoist plugin pack` and server-side applies the ConfigMap as
/// `name` in the test namespace (creating or replacing it: a hot swap).
pub async fn apply_plugin_configmap(ns: &TestNamespace, name: &str, wasm: &Path) -> Result<()> {
    let out = Command::new(hoist_binary()?)
        .args(["plugin", "pack"])
        .arg(wasm)
        .args(["--name", name, "--namespace", &ns.name])
        .output()
        .context("running hoist plugin pack")?;
    if !out.status.success() {
        bail!(
            "hoist plugin pack {} failed: {}",
            wasm.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let cm: ConfigMap =
        serde_yaml::from_slice(&out.stdout).context("parsing the packed ConfigMap")?;
    apply_configmap(ns, name, &cm).await
}

/// Server-side applies a ConfigMap (forcing ownership: the test is the only writer).
pub async fn apply_configmap(ns: &TestNamespace, name: &str, cm: &ConfigMap) -> Result<()> {
    ns.api::<ConfigMap>()
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(cm),
        )
        .await
        .with_context(|| format!("applying ConfigMap {}/{name}", ns.name))?;
    Ok(())
}

/// How to start an operator.
#[derive(Debug, Clone, Default)]
pub struct OperatorOptions {
    /// Compete for the leader Lease (`--leader-elect`).
    pub leader_elect: bool,
    /// Lease name (distinct per test, so tests do not fight over one lease).
    pub lease_name: Option<String>,
    /// Lease namespace.
    pub lease_namespace: Option<String>,
    /// The identity written into the Lease.
    pub identity: Option<String>,
    /// Where precompiled plugins are cached; reuse it across restarts to model a volume.
    pub plugin_cache_dir: Option<PathBuf>,
    /// A kubeconfig other than the cluster's admin one (e.g. a ServiceAccount's).
    pub kubeconfig: Option<PathBuf>,
    /// More arguments for `hoist run`.
    pub extra_args: Vec<String>,
    /// More environment (`RUST_LOG`, ...).
    pub env: Vec<(String, String)>,
}

/// A running `hoist run` process; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    log: PathBuf,
    addr: SocketAddr,
}

static OPERATOR_SEQ: AtomicU32 = AtomicU32::new(0);

impl Operator {
    /// Starts `hoist run` against `cluster` and waits until it serves `/healthz`. Its
    /// stderr goes to a log file under the cluster directory ([`Operator::log`]).
    pub async fn start(cluster: &Cluster, opts: &OperatorOptions) -> Result<Self> {
        let seq = OPERATOR_SEQ.fetch_add(1, Ordering::Relaxed);
        let logs = cluster.dir().join("logs");
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let log = logs.join(format!("hoist-{}-{seq}.log", std::process::id()));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let cache = opts.plugin_cache_dir.clone().unwrap_or_else(|| {
            cluster
                .dir()
                .join(format!("plugin-cache-{}-{seq}", std::process::id()))
        });
        let mut cmd = Command::new(hoist_binary()?);
        cmd.arg("run")
            .arg("--metrics-addr=127.0.0.1:0")
            .arg(format!("--leader-elect={}", opts.leader_elect))
            .arg("--plugin-cache-dir")
            .arg(&cache);
        if let Some(l) = &opts.lease_name {
            cmd.args(["--lease-name", l]);
        }
        if let Some(l) = &opts.lease_namespace {
            cmd.args(["--lease-namespace", l]);
        }
        if let Some(i) = &opts.identity {
            cmd.args(["--identity", i]);
        }
        cmd.args(&opts.extra_args)
            .env(
                "KUBECONFIG",
                opts.kubeconfig
                    .clone()
                    .unwrap_or_else(|| cluster.kubeconfig()),
            )
            .env("NO_COLOR", "1")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env_remove("HOIST_PLUGIN_CACHE_DIR")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = cmd.spawn().context("spawning hoist run")?;
        let mut op = Self {
            child,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let log_path = op.log.clone();
        let addr = wait::for_value(
            Duration::from_secs(30),
            "hoist run to serve /healthz",
            || {
                let log_path = log_path.clone();
                let exited = op.child.try_wait().ok().flatten();
                async move {
                    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                    if let Some(status) = exited {
                        bail!("hoist run exited ({status}) before serving; its log:\n{text}");
                    }
                    Ok(serving_addr(&text))
                }
            },
        )
        .await?;
        op.addr = addr;
        Ok(op)
    }

    /// The address of `/healthz`, `/readyz` and `/metrics`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the operator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, wherever it is.
    pub fn kill_hard(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child.kill().context("killing hoist run")?;
        }
        self.child.wait().context("reaping hoist run")?;
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for a graceful exit; returns the exit code.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.child.id());
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "hoist run did not exit within {timeout:?} after SIGTERM; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// GET `path` on the operator's endpoint; returns the status code and body.
    pub async fn get(&self, path: &str) -> Result<(u16, String)> {
        http_get(self.addr, path).await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let (code, body) = self.get("/metrics").await?;
        if code != 200 {
            bail!("/metrics answered {code}: {body}");
        }
        Ok(body)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.kill_hard();
    }
}

/// The samples of one metric family in Prometheus text: label set (the text between the
/// braces, empty without labels) to value.
pub fn samples(text: &str, family: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, labels) = match name_labels.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (name_labels, ""),
            };
            (name == family).then(|| Some((labels.to_string(), value.parse::<f64>().ok()?)))?
        })
        .collect()
}

/// The address from the operator's `serving /healthz /readyz /metrics addr=…` log line.
fn serving_addr(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("serving /healthz"))
        .find_map(|l| {
            let rest = &l[l.find("addr=")? + "addr=".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
}

/// A plain HTTP/1.1 GET to a loopback address (hyper's client connection).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake")?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let resp = sender
        .send_request(req)
        .await
        .with_context(|| format!("GET http://{addr}{path}"))?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the body")?
        .to_bytes();
    driver.abort();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::serving_addr;

    #[test]
    fn finds_the_bound_address_in_the_log() {
        let log = "2026-11-23T12:00:00Z  INFO hoist::cli::run: serving /healthz /readyz /metrics addr=127.0.0.1:41234\n";
        assert_eq!(serving_addr(log), Some("127.0.0.1:41234".parse().unwrap()));
        assert_eq!(serving_addr("INFO starting\n"), None);
    }
}
