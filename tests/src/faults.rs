//! Faults of the test control plane's own processes: stop and continue one (SIGSTOP /
//! SIGCONT: it answers nothing meanwhile, connections stay open), or kill it and start it again
//! with exactly the command line it had (`/proc/<pid>/cmdline`), as a crashed and restarted
//! API server would be. The restarted process is appended to the cluster's pids file, so
//! `tests/cluster/down` stops it like the others.
//!
//! These act on the cluster every test of a process shares: a test that uses them must hold
//! [`exclusive`] and run in a test binary of its own.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::sync::{Mutex, MutexGuard};

use crate::{Cluster, wait};

/// Serialises the tests of one binary that disturb the shared cluster.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// The pid the cluster's pids file lists last under `name` (`etcd`, `kube-apiserver`, ...).
pub fn pid_of(cluster: &Cluster, name: &str) -> Result<u32> {
    let pids = cluster.dir().join("pids");
    let text =
        std::fs::read_to_string(&pids).with_context(|| format!("reading {}", pids.display()))?;
    text.lines()
        .rev()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, n)| *n == name)
        .find_map(|(p, _)| p.parse().ok())
        .with_context(|| format!("{name} is not in {}", pids.display()))
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{sig} {pid} failed: {status}");
    }
    Ok(())
}

/// A stopped control-plane process; continued by [`Paused::resume`], or when dropped (a test
/// that fails while it is stopped must not leave the shared cluster frozen).
#[derive(Debug)]
pub struct Paused {
    pid: Option<u32>,
}

impl Paused {
    /// SIGCONT.
    pub fn resume(mut self) -> Result<()> {
        match self.pid.take() {
            Some(pid) => signal(pid, "CONT"),
            None => Ok(()),
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = signal(pid, "CONT");
        }
    }
}

/// SIGSTOP `name`: it stops answering until the returned guard resumes it.
pub fn pause(cluster: &Cluster, name: &str) -> Result<Paused> {
    let pid = pid_of(cluster, name)?;
    signal(pid, "STOP")?;
    Ok(Paused { pid: Some(pid) })
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// SIGKILL `name`, then start it again with the same command line, appending to its log.
/// Returns once the new process runs (not once it serves; wait for that separately).
pub async fn kill_and_restart(cluster: &Cluster, name: &str) -> Result<u32> {
    let pid = pid_of(cluster, name)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("reading the command line of {name} ({pid})"))?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let Some((program, rest)) = args.split_first() else {
        bail!("{name} ({pid}) has an empty command line");
    };
    signal(pid, "KILL")?;
    wait::until(
        Duration::from_secs(30),
        &format!("{name} ({pid}) to die"),
        || async move { Ok(!running(pid)) },
    )
    .await?;
    let log = cluster.dir().join("logs").join(format!("{name}.log"));
    // The killed process's listening port can take a moment to be free again: a start that
    // exits at once is tried again.
    for _ in 0..30 {
        let out = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log handle")?;
        let mut child = Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group, like `setsid` in tests/cluster/up: the test's end does
            // not take it along.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name} again"))?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        if child
            .try_wait()
            .context("checking the restarted process")?
            .is_none()
        {
            let new_pid = child.id();
            append_pid(cluster.dir(), new_pid, name)?;
            return Ok(new_pid);
        }
    }
    bail!(
        "{name} did not stay up after 30 starts; see {}",
        log.display()
    )
}

fn append_pid(dir: &Path, pid: u32, name: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("pids"))
        .context("opening the pids file")?;
    writeln!(f, "{pid} {name}").context("writing the pids file")
}

/// Waits until the API server answers `/readyz` through `client` and admits writes again (a
/// dry-run namespace create passes admission: right after a restart, the `NamespaceLifecycle`
/// refuses requests until its informer has synced, although `/readyz` already says ok).
pub async fn wait_api_ready(client: &kube::Client) -> Result<()> {
    wait::until(Duration::from_mins(2), "the API server to be ready", || {
        let client = client.clone();
        async move {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .context("building /readyz")?;
            if client.request_text(req).await.is_err() {
                return Ok(false);
            }
            let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
                kube::Api::all(client);
            let probe = k8s_openapi::api::core::v1::Namespace {
                metadata: kube::api::ObjectMeta {
                    generate_name: Some("fault-probe-".into()),
                    ..kube::api::ObjectMeta::default()
                },
                ..k8s_openapi::api::core::v1::Namespace::default()
            };
            let dry_run = kube::api::PostParams {
                dry_run: true,
                ..kube::api::PostParams::default()
            };
            Ok(namespaces.create(&dry_run, &probe).await.is_ok())
        }
    })
    .await
}

/// Waits until the control plane works again after a fault: the API server admits writes
/// ([`wait_api_ready`]) and the controller-manager's controllers have reconnected (a new
/// namespace gets its default ServiceAccount; after a restart of the API server this can
/// take well over a minute while their watches back off).
pub async fn wait_recovered(cluster: &Cluster) -> Result<()> {
    let client = cluster.client().await?;
    wait_api_ready(&client).await?;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    let probe = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta {
            generate_name: Some("fault-recovered-".into()),
            ..kube::api::ObjectMeta::default()
        },
        ..k8s_openapi::api::core::v1::Namespace::default()
    };
    let created = namespaces
        .create(&kube::api::PostParams::default(), &probe)
        .await
        .context("creating a probe namespace")?;
    let name = created
        .metadata
        .name
        .context("the probe namespace has no name")?;
    let accounts: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
        kube::Api::namespaced(client, &name);
    wait::until(
        Duration::from_mins(4),
        "the controllers to be back (a new namespace's default ServiceAccount)",
        || {
            let accounts = accounts.clone();
            async move { Ok(accounts.get_opt("default").await?.is_some()) }
        },
    )
    .await?;
    let _ = namespaces
        .delete(&name, &kube::api::DeleteParams::default())
        .await;
    Ok(())
}
