//! What a hook call is for and what it may use: its identity (for logs) and its limits.

use std::sync::Arc;
use std::time::Duration;

use crate::allow::AllowList;
use crate::egress::{ConnectionLimit, Egress, EgressLimits, ForbiddenAddrs, NetworkGrant};
use crate::secrets::HookSecrets;

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
///
/// [`CallOptions::new`] gives a call that may reach every host on its allow-list at any
/// address but the [`ForbiddenAddrs::default`] ones, trusting the public TLS roots, with no
/// secrets; the operator narrows it with the `with_*` methods.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// Wall-clock limit for the whole call: guest code and host calls (HTTP) alike.
    pub deadline: Duration,
    /// Hosts the plugin may send HTTP requests to (the Scaler's `allowedHosts`).
    pub allowed_hosts: AllowList,
    /// For logs.
    pub identity: CallIdentity,
    /// What the cluster admin allows any hook to reach.
    pub grant: NetworkGrant,
    /// Addresses never reached unless the grant names them.
    pub forbidden: ForbiddenAddrs,
    /// TLS client configuration; `None`: the public roots, no client certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Per-call bounds of outgoing requests.
    pub limits: EgressLimits,
    /// A bound on requests in flight shared with other calls.
    pub connection_limit: Option<ConnectionLimit>,
    /// Secrets the plugin may read.
    pub secrets: HookSecrets,
}

impl CallOptions {
    /// Options with a deadline, an allow-list and an identity; any address granted but the
    /// default forbidden ones, public TLS roots, default limits, no secrets.
    pub fn new(deadline: Duration, allowed_hosts: AllowList, identity: CallIdentity) -> Self {
        CallOptions {
            deadline,
            allowed_hosts,
            identity,
            grant: NetworkGrant::any(),
            forbidden: ForbiddenAddrs::default(),
            tls: None,
            limits: EgressLimits::default(),
            connection_limit: None,
            secrets: HookSecrets::default(),
        }
    }

    /// The cluster admin's grant.
    #[must_use]
    pub fn with_grant(mut self, grant: NetworkGrant) -> Self {
        self.grant = grant;
        self
    }

    /// The forbidden addresses.
    #[must_use]
    pub fn with_forbidden(mut self, forbidden: ForbiddenAddrs) -> Self {
        self.forbidden = forbidden;
        self
    }

    /// The TLS client configuration (from [`crate::TlsSettings::client_config`]).
    #[must_use]
    pub fn with_tls(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Per-call bounds of outgoing requests.
    #[must_use]
    pub fn with_limits(mut self, limits: EgressLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Share a bound on requests in flight with the other calls given the same (a clone).
    #[must_use]
    pub fn with_connection_limit(mut self, limit: ConnectionLimit) -> Self {
        self.connection_limit = Some(limit);
        self
    }

    /// The secrets the plugin may read.
    #[must_use]
    pub fn with_secrets(mut self, secrets: HookSecrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// The call's egress decision: allow-list, grant, forbidden addresses and TLS.
    pub fn egress(&self) -> Egress {
        let egress = Egress::new(
            self.allowed_hosts.clone(),
            self.grant.clone(),
            self.forbidden.clone(),
        );
        match &self.tls {
            Some(config) => egress.with_tls(config.clone()),
            None => egress,
        }
    }
}
