//! KEDA itself for the integration tests: its CRDs (`tests/cluster/keda-crds`), and KEDA as a
//! cluster admin installs it (`tests/cluster/keda`: `keda-operator` and `keda-adapter`, built
//! from KEDA's Go module by `tests/cluster/keda-build`, run as local processes against the test
//! control plane, the adapter registered as the external metrics API). KEDA's operator
//! activates (0 → min or 1) and deactivates (→ 0 after the cooldown) a target through its
//! `/scale`; the replica counts in between come from the HPA KEDA creates, which reads the
//! adapter's external metrics.

use std::os::unix::process::CommandExt as _;
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

/// The resource `keda.sh/v1alpha1 ScaledObject`.
pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
        "scaledobjects",
    )
}

/// The `keda.sh/v1alpha1 ScaledObject`s of `namespace`.
pub fn scaled_objects(client: &kube::Client, namespace: &str) -> kube::Api<DynamicObject> {
    kube::Api::namespaced_with(client.clone(), namespace, &scaled_object_resource())
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
    dir: PathBuf,
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
            dir: cluster.dir().to_path_buf(),
            logs: cluster.dir().join("logs"),
        })
    }

    fn tail(&self, name: &str, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("keda-{name}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The pid of the running `keda-operator` (the last one `DIR/pids` names).
    pub fn operator_pid(&self) -> Result<u32> {
        self.pid("keda-operator")
    }

    /// The pid of the running `keda-adapter`.
    pub fn adapter_pid(&self) -> Result<u32> {
        self.pid("keda-adapter")
    }

    fn pid(&self, name: &str) -> Result<u32> {
        let pids = std::fs::read_to_string(self.dir.join("pids"))
            .with_context(|| format!("reading {}/pids", self.dir.display()))?;
        let pid: u32 = pids
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, n)| *n == name)
            .filter_map(|(pid, _)| pid.parse().ok())
            .next_back()
            .with_context(|| format!("no {name} in the cluster's pids file"))?;
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("{name} ({pid}) is not running");
        }
        Ok(pid)
    }

    /// Stops `keda-operator` and starts it again with the same command line and environment,
    /// except that its controller metrics (controller-runtime's `controller_runtime_*`) are
    /// served on `127.0.0.1:metrics_port`, and with `extra_args` (flags given again replace the
    /// earlier ones). Returns the new pid, recorded in `DIR/pids` so that
    /// `tests/cluster/down` stops it.
    pub fn restart_operator(&self, metrics_port: u16, extra_args: &[&str]) -> Result<u32> {
        let pid = self.operator_pid()?;
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let cmdline = split(std::fs::read(format!("/proc/{pid}/cmdline"))?);
        let environ = split(std::fs::read(format!("/proc/{pid}/environ"))?);
        let (program, args) = cmdline
            .split_first()
            .context("keda-operator has an empty command line")?;
        let flag = |a: &str| a.split_once('=').map_or(a, |(f, _)| f).to_owned();
        let replaced: Vec<String> = extra_args.iter().map(|a| flag(a)).collect();
        let args: Vec<String> = args
            .iter()
            .filter(|a| !replaced.contains(&flag(a)))
            .map(|a| {
                if a.starts_with("--metrics-bind-address=") {
                    format!("--metrics-bind-address=127.0.0.1:{metrics_port}")
                } else {
                    a.clone()
                }
            })
            .chain(extra_args.iter().map(|a| (*a).to_owned()))
            .collect();
        let status = Command::new("kill").arg(pid.to_string()).status()?;
        if !status.success() {
            bail!("kill {pid} failed");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
        {
            if std::time::Instant::now() > deadline {
                bail!("keda-operator ({pid}) did not stop within 30 s");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.logs.join("keda-operator.log"))?;
        let child = Command::new(program)
            .args(&args)
            .env_clear()
            .envs(environ.iter().filter_map(|kv| kv.split_once('=')))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let new = child.id();
        let mut pids = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("pids"))?;
        std::io::Write::write_all(&mut pids, format!("{new} keda-operator\n").as_bytes())?;
        Ok(new)
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
