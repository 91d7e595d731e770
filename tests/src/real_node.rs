//! The test cluster's real nodes (`tests/cluster/up DIR --real-nodes N`): kubelets on
//! Debian's containerd and runc, each in a network namespace of its own, where pods run from
//! real images. What a test needs from them: their names and files, and a way for their
//! pods to reach a server the test runs (a fake Trino worker on a kwok pod's loopback IP).

use std::net::SocketAddr;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::Cluster;

/// One real node of the cluster.
#[derive(Debug, Clone)]
pub struct RealNode {
    /// The Node's name.
    pub name: String,
    /// Its network namespace (a bind-mounted nsfs file): pods with `hostNetwork` live here.
    pub netns: PathBuf,
    /// The kubelet's `--root-dir` (pods' volumes are under `pods/<uid>/volumes`).
    pub kubelet_root: PathBuf,
}

/// The real nodes `tests/cluster/up` started for `cluster`, from its `env` file.
///
/// # Errors
/// When the cluster has none: the message says how to start one that has.
pub fn real_nodes(cluster: &Cluster) -> Result<Vec<RealNode>> {
    let names = cluster.env("HOIST_CLUSTER_REAL_NODES")?.unwrap_or_default();
    if names.trim().is_empty() {
        bail!(
            "the cluster in {} has no real nodes; start it with `tests/cluster/up DIR --real-nodes 2`",
            cluster.dir().display()
        );
    }
    names
        .split_whitespace()
        .map(|name| {
            let dir = cluster.dir().join("nodes").join(name);
            let node = RealNode {
                name: name.to_owned(),
                netns: dir.join("netns"),
                kubelet_root: dir.join("kubelet"),
            };
            if !node.netns.exists() || !node.kubelet_root.is_dir() {
                bail!(
                    "real node {name}: {} or {} is missing",
                    node.netns.display(),
                    node.kubelet_root.display()
                );
            }
            Ok(node)
        })
        .collect()
}

/// Connections made inside a node's network namespace to an address, carried to the same
/// address in the test's namespace. Stops when dropped.
#[derive(Debug)]
pub struct Forward {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` inside the network namespace `netns` and forwards every connection to
/// `addr` as the test process sees it, so that a pod on a real node reaches a server the
/// test runs on a kwok pod's IP, as a pod on one pod network would.
///
/// # Errors
/// When the namespace cannot be entered (the tests run as root) or `addr` cannot be bound in
/// it.
pub fn forward_into(netns: &Path, addr: SocketAddr) -> Result<Forward> {
    let ns = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    // A thread of its own enters the namespace (setns changes only the calling thread), binds
    // and ends; the socket stays in the namespace it was made in.
    let listener = std::thread::scope(|s| {
        s.spawn(|| -> Result<std::net::TcpListener> {
            rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .with_context(|| format!("entering the network namespace {}", netns.display()))?;
            let listener = std::net::TcpListener::bind(addr)
                .with_context(|| format!("binding {addr} in {}", netns.display()))?;
            listener.set_nonblocking(true)?;
            Ok(listener)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread binding {addr} in {} died", netns.display()))?
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(addr).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok(Forward { task })
}
