//! helm, built from its Go module (`tests/helm/build`), run against the test cluster, and a
//! release that a failing test does not leave behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, Result, bail};

use crate::{Cluster, repo_root};

/// `tests/helm/build` once per process: the path of the helm binary built from its Go module.
pub fn helm() -> Result<&'static Path> {
    static HELM: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let helm = HELM.get_or_init(|| {
        let script = repo_root().join("tests/helm/build");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "tests/helm/build failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    });
    match helm {
        Ok(p) => Ok(p.as_path()),
        Err(e) => bail!("{e}"),
    }
}

/// Runs helm against the test cluster with its state (repositories, cache) under the
/// cluster directory; returns stdout, or an error with stderr.
pub fn run_helm(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let home = cluster.dir().join("helm");
    let out = Command::new(helm()?)
        .args(args)
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .context("running helm")?;
    if !out.status.success() {
        bail!(
            "helm {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Helm release of the test: uninstalled when dropped, so a failing test leaves no release
/// (and none of its cluster-scoped RBAC) behind.
#[derive(Debug)]
pub struct Installed<'a> {
    cluster: &'a Cluster,
    release: String,
    namespace: String,
    done: bool,
}

impl<'a> Installed<'a> {
    /// The release `release` in `namespace`, installed by the caller.
    pub fn new(cluster: &'a Cluster, release: &str, namespace: &str) -> Self {
        Self {
            cluster,
            release: release.to_owned(),
            namespace: namespace.to_owned(),
            done: false,
        }
    }

    /// `helm uninstall --wait`, checked.
    pub fn uninstall(mut self) -> Result<String> {
        self.done = true;
        run_helm(
            self.cluster,
            &[
                "uninstall",
                &self.release,
                "--namespace",
                &self.namespace,
                "--wait",
            ],
        )
    }
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = run_helm(
                self.cluster,
                &["uninstall", &self.release, "--namespace", &self.namespace],
            );
        }
    }
}
