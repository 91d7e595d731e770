//! KEDA itself for the integration tests: its CRDs (`tests/cluster/keda-crds`) and its
//! operator, `keda-operator`, built from its Go module by `tests/cluster/keda-build` and run as
//! a local process against the test control plane, watching one namespace.
//!
//! Out of a cluster the operator needs: a kubeconfig, `WATCH_NAMESPACE`, `POD_NAMESPACE` and
//! `KEDA_CLUSTER_OBJECT_NAMESPACE`, and a certificate directory (`ca.crt`, `tls.crt`,
//! `tls.key`, usable for server and client auth) for its gRPC metrics service, even with
//! certificate rotation off. Every listener is bound to loopback. The metrics adapter is not
//! run: KEDA's operator alone activates (0 → min or 1) and deactivates (→ 0 after the
//! cooldown) a target through its `/scale`; the replica counts in between come from the HPA
//! KEDA creates, which needs the adapter's external metrics API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use crate::operator::install_crd_file;
use crate::{Cluster, repo_root};

/// Runs a script of `tests/cluster` that prints one path; its stderr explains a failure.
fn script_path(script: &str) -> Result<PathBuf> {
    let path = repo_root().join("tests/cluster").join(script);
    let out = Command::new(&path)
        .output()
        .with_context(|| format!("running {}", path.display()))?;
    if !out.status.success() {
        bail!(
            "tests/cluster/{script} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

/// The directory holding KEDA's CRD files (`tests/cluster/keda-crds`).
pub fn crd_dir() -> Result<PathBuf> {
    script_path("keda-crds")
}

/// The `keda.sh/v1alpha1 ScaledObject`s of `namespace`.
pub fn scaled_objects(client: &kube::Client, namespace: &str) -> kube::Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    );
    kube::Api::namespaced_with(client.clone(), namespace, &ar)
}

/// Applies every KEDA CRD and waits until each is Established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let dir = crd_dir()?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no KEDA CRD in {}", dir.display());
    }
    for file in files {
        install_crd_file(client, &file.to_string_lossy()).await?;
    }
    Ok(())
}

/// A certificate authority and a loopback certificate signed by it, for server and client
/// auth, as KEDA's gRPC service loads them.
fn write_certificates(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ext = dir.join("ext.cnf");
    std::fs::write(
        &ext,
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )?;
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=hoist-test-keda-ca",
        ],
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=localhost",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tls.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    ];
    for args in steps {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl (install the openssl package)")?;
        if !out.status.success() {
            bail!(
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}

static KEDA_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `keda-operator`, killed when dropped.
#[derive(Debug)]
pub struct KedaOperator {
    child: Child,
    log: PathBuf,
}

impl KedaOperator {
    /// Builds (or reuses) `keda-operator` and starts it watching `namespace`.
    pub fn start(cluster: &Cluster, namespace: &str) -> Result<Self> {
        let bin = script_path("keda-build")?;
        let seq = KEDA_SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = cluster
            .dir()
            .join(format!("keda-{}-{seq}", std::process::id()));
        let certs = dir.join("certs");
        write_certificates(&certs)?;
        let log = dir.join("keda-operator.log");
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&bin)
            .args([
                "--leader-elect=false",
                "--enable-cert-rotation=false",
                "--enable-prometheus-metrics=false",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=127.0.0.1:0",
                "--metrics-service-bind-address=127.0.0.1:0",
                "--zap-log-level=info",
            ])
            .arg(format!("--cert-dir={}", certs.display()))
            .arg(format!("--ca-dir={}", certs.display()))
            .env("KUBECONFIG", cluster.kubeconfig())
            .env("WATCH_NAMESPACE", namespace)
            .env("POD_NAMESPACE", namespace)
            .env("KEDA_CLUSTER_OBJECT_NAMESPACE", namespace)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self { child, log })
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for KedaOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
