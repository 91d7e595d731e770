//! What a hook call is for and what it may use: its identity (for logs) and its limits.

use std::time::Duration;

use crate::allow::AllowList;

/// Who a call is for; attached to every log line of the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallIdentity {
    /// Namespace of the Scaler.
    pub namespace: String,
    /// Name of the Scaler.
    pub scaler: String,
    /// The operation id.
    pub operation: String,
    /// Attempt number of this stage.
    pub attempt: u32,
}

/// Per-call limits and identity.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Wall-clock limit for the whole call: guest code and host calls (HTTP) alike.
    pub deadline: Duration,
    /// Hosts the plugin may send HTTP requests to.
    pub allowed_hosts: AllowList,
    /// For logs.
    pub identity: CallIdentity,
}

impl CallOptions {
    /// Options with a deadline, an allow-list and an identity.
    pub fn new(deadline: Duration, allowed_hosts: AllowList, identity: CallIdentity) -> Self {
        CallOptions {
            deadline,
            allowed_hosts,
            identity,
        }
    }
}
