//! Fencing: a replica that lost the leader Lease stops before its next side effect.
//!
//! Every side effect (a hook call, a pod mark, a status, finalizer or `/scale` write) first
//! asks [`Fence::check`]. Losing the Lease also stops the controller, but reconciles in flight
//! at that moment would otherwise finish their writes beside the new leader's.

use tokio::sync::watch;

use crate::error::OperatorError;

/// Whether this replica may act.
#[derive(Debug, Clone)]
pub struct Fence {
    /// `None`: no leader election (`--leader-elect=false`), always allowed.
    leading: Option<watch::Receiver<bool>>,
}

impl Fence {
    /// No leader election: this replica always acts.
    pub fn unfenced() -> Self {
        Self { leading: None }
    }

    /// Acts while the Lease watch says this replica leads.
    pub fn lease(leading: watch::Receiver<bool>) -> Self {
        Self {
            leading: Some(leading),
        }
    }

    /// `Ok` while this replica leads; `what` names the side effect refused otherwise.
    pub fn check(&self, what: &'static str) -> Result<(), OperatorError> {
        match &self.leading {
            Some(leading) if !*leading.borrow() => Err(OperatorError::NotLeader { what }),
            _ => Ok(()),
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
        assert!(fence.check("hook call").is_ok());
        tx.send(false).unwrap();
        let err = fence.check("hook call").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not the leader any more: hook call not done"
        );
        assert!(Fence::unfenced().check("anything").is_ok());
    }
}
