//! Leader election with a coordination.k8s.io Lease: two replicas can run, one acts.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

use crate::error::OperatorError;

/// Holds (or waits for) the lease; `is_leader` flips as leadership changes.
#[derive(Debug)]
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<
        Result<kube_lease_manager::LeaseManager, kube_lease_manager::LeaseManagerError>,
    >,
}

/// Starts competing for `namespace/name` as `identity` (lease 15 s, renewed 5 s early).
pub async fn compete(
    client: Client,
    namespace: &str,
    name: &str,
    identity: &str,
) -> Result<Leadership, OperatorError> {
    let manager = LeaseManagerBuilder::new(client, name)
        .with_namespace(namespace)
        .with_parameters(
            LeaseParams::new(identity, 15, 5).with_field_manager(format!("hoist-{identity}")),
        )
        .build()
        .await
        .map_err(OperatorError::LeaderElection)?;
    let (is_leader, task) = manager.watch().await;
    Ok(Leadership { is_leader, task })
}

impl Leadership {
    /// Waits until this process leads.
    pub async fn acquired(&mut self) -> bool {
        self.is_leader.wait_for(|leader| *leader).await.is_ok()
    }

    /// Resolves when leadership is lost (or the lease task ended).
    pub async fn lost(&mut self) {
        let _ = self.is_leader.wait_for(|leader| !*leader).await;
    }

    /// After the lease was lost: stop competing at once. (Releasing would wait for the lease
    /// task, which keeps trying to acquire the lease again, and once the other holder lets it
    /// expire, takes it back: a process that stopped acting would then hold it, and no
    /// standby could lead.)
    pub fn abandon(self) {
        self.task.abort();
    }

    /// Gives the lease up so a standby takes over at once.
    pub async fn release(self) {
        drop(self.is_leader);
        match self.task.await {
            Ok(Ok(_)) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => tracing::warn!(error = %e, "releasing the leader lease"),
            Err(e) => tracing::warn!(error = %e, "the lease task failed"),
        }
    }
}
