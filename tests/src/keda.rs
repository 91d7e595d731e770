//! KEDA itself for the integration tests: its CRDs (`tests/cluster/keda-crds`), and KEDA as a
//! cluster admin installs it (`tests/cluster/keda`: `keda-operator` and `keda-adapter`, built
//! from KEDA's Go module by `tests/cluster/keda-build`, run as local processes against the test
//! control plane, the adapter registered as the external metrics API). KEDA's operator
//! activates (0 → min or 1) and deactivates (→ 0 after the cooldown) a target through its
//! `/scale`; the replica counts in between come from the HPA KEDA creates, which reads the
//! adapter's external metrics.

use std::path::PathBuf;
use std::process::{Command, Stdio};

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

/// KEDA installed in the test cluster by `tests/cluster/keda`: its operator watching every
/// namespace and its metrics adapter serving the external metrics API. Started on first use
/// (once per cluster; later calls find it running) and stopped with the cluster.
#[derive(Debug)]
pub struct Keda {
    logs: PathBuf,
}

impl Keda {
    /// KEDA of `cluster`, installed now if it is not running yet.
    pub fn in_cluster(cluster: &Cluster) -> Result<Self> {
        let script = repo_root().join("tests/cluster/keda");
        let out = Command::new(&script)
            .arg(cluster.dir())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "tests/cluster/keda failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self {
            logs: cluster.dir().join("logs"),
        })
    }

    fn tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("keda-{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The last lines the operator and the adapter logged, for failure messages.
    pub fn log_tail(&self) -> String {
        format!(
            "keda-operator (tail):\n{}\nkeda-adapter (tail):\n{}",
            self.tail("operator", 40),
            self.tail("adapter", 20)
        )
    }
}
