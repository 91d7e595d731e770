//! Fencing: a replica that lost the Lease of a Scaler stops before its next side effect on it.
//!
//! Every side effect (a hook call, a pod mark, a status, finalizer or `/scale` write) first
//! asks [`Fence::check`] with the Scaler it is for. With one leader, losing the Lease also stops
//! the controller, but reconciles in flight at that moment would otherwise finish their writes
//! beside the new leader's. With shards, the controller keeps running: the fence is what keeps
//! a replica off the Scalers of a shard it does not hold.

use hoist_api::Scaler;
use kube::ResourceExt;
use tokio::sync::watch;

use crate::error::OperatorError;
use crate::shard_leases::Ownership;

/// Whether this replica may act on a Scaler.
#[derive(Debug, Clone)]
pub enum Fence {
    /// No leader election (`--leader-elect=false`): always allowed.
    Unfenced,
    /// One leader Lease: allowed while the Lease watch says this replica leads.
    Leader(watch::Receiver<bool>),
    /// `--shards N`: allowed while this replica owns the Scaler's shard.
    Shards(Ownership),
}

impl Fence {
    /// No leader election: this replica always acts.
    pub fn unfenced() -> Self {
        Self::Unfenced
    }

    /// Acts while the Lease watch says this replica leads.
    pub fn lease(leading: watch::Receiver<bool>) -> Self {
        Self::Leader(leading)
    }

    /// `Ok` while this replica may act on `scaler`; `what` names the side effect refused
    /// otherwise.
    pub fn check(&self, scaler: &Scaler, what: &'static str) -> Result<(), OperatorError> {
        match self {
            Self::Leader(leading) if !*leading.borrow() => Err(OperatorError::NotLeader { what }),
            Self::Unfenced | Self::Leader(_) => Ok(()),
            Self::Shards(ownership) => {
                let shard = ownership.shard_of(&scaler.uid().unwrap_or_default());
                if ownership.owns_shard(shard) {
                    Ok(())
                } else {
                    Err(OperatorError::NotShardOwner { what, shard })
                }
            }
        }
    }

    /// Counts a reconcile of `scaler` as running until the guard is dropped (with shards: a
    /// shard is handed over to another replica only once none of its reconciles runs).
    pub fn enter(&self, scaler: &Scaler) -> Option<crate::shard_leases::InFlight> {
        match self {
            Self::Unfenced | Self::Leader(_) => None,
            Self::Shards(ownership) => {
                Some(ownership.enter(ownership.shard_of(&scaler.uid().unwrap_or_default())))
            }
        }
    }

    /// Whether this replica reconciles `scaler` at all: always with one leader (the controller
    /// runs only while it leads); with shards, while it owns the Scaler's shard.
    pub fn owns(&self, scaler: &Scaler) -> bool {
        match self {
            Self::Unfenced | Self::Leader(_) => true,
            Self::Shards(ownership) => {
                ownership.owns_shard(ownership.shard_of(&scaler.uid().unwrap_or_default()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_lease_refuses_every_later_side_effect() {
        let (tx, rx) = watch::channel(true);
        let fence = Fence::lease(rx);
        let scaler = Scaler::new(
            "s",
            serde_json::from_value(serde_json::json!({
                "targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web"}
            }))
            .unwrap(),
        );
        assert!(fence.check(&scaler, "hook call").is_ok());
        tx.send(false).unwrap();
        let err = fence.check(&scaler, "hook call").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not the leader any more: hook call not done"
        );
        assert!(Fence::unfenced().check(&scaler, "anything").is_ok());
    }
}
