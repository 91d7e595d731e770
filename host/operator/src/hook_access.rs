//! What one hook call may use besides its plugin: where it may connect (the cluster policies'
//! grant, narrowed by the Scaler's `allowedHosts`, never the forbidden addresses), the Secret
//! keys it names, and its TLS material. Secrets, CA bundles and client certificates are read
//! by name (GET) at call time and handed to the sandbox; they are never logged or written.

use std::net::IpAddr;
use std::sync::Arc;

use hoist_api::hooks::{MAX_SECRET_BYTES, MAX_TLS_BYTES};
use hoist_api::{Hooks, KeyRef, Scaler};
use hoist_sandbox::{
    AllowList, CallIdentity, CallOptions, ConnectionLimit, ForbiddenAddrs, HookSecrets,
    NetworkGrant, PodInfo, TlsSettings,
};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};

use crate::error::OperatorError;
use crate::leaving_pods::default_allow_list;
use crate::policy::{GrantSpec, Policies};

/// Outgoing requests in flight across every hook call of the process.
pub const MAX_CONNECTIONS: usize = 256;

/// Builds the [`CallOptions`] of a Scaler's hook calls.
#[derive(Clone)]
pub struct HookAccess {
    client: Client,
    policies: Policies,
    forbidden: ForbiddenAddrs,
    connections: ConnectionLimit,
}

impl std::fmt::Debug for HookAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookAccess")
            .field("forbidden", &self.forbidden)
            .finish_non_exhaustive()
    }
}

impl HookAccess {
    /// Access decided by `policies`, never reaching `forbidden`.
    pub fn new(client: Client, policies: Policies, forbidden: ForbiddenAddrs) -> Self {
        HookAccess {
            client,
            policies,
            forbidden,
            connections: ConnectionLimit::new(MAX_CONNECTIONS),
        }
    }

    /// The policies this access follows.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// The addresses no hook or metric query reaches unless a policy names them.
    pub fn forbidden(&self) -> &ForbiddenAddrs {
        &self.forbidden
    }

    /// The options of one call for `scaler`: `Ok(Err(why))` when the Scaler's secrets or TLS
    /// settings cannot be used (the call fails with that reason, naming the field); `Err` when
    /// reading them from the API server failed (the reconcile is retried).
    pub async fn call_options(
        &self,
        scaler: &Scaler,
        hooks: &Hooks,
        pods: &[PodInfo],
        deadline: std::time::Duration,
        identity: CallIdentity,
    ) -> Result<Result<CallOptions, String>, OperatorError> {
        let namespace = scaler.namespace().unwrap_or_default();
        let allow = if hooks.allowed_hosts.is_empty() {
            default_allow_list(pods)
        } else {
            AllowList::new(hooks.allowed_hosts.iter())
        };
        let grant = network_grant(&self.policies.grant(&namespace), &namespace, pods);
        let mut options = CallOptions::new(deadline, allow, identity)
            .with_grant(grant)
            .with_forbidden(self.forbidden.clone())
            .with_connection_limit(self.connections.clone());
        match self.secrets(&namespace, hooks).await? {
            Ok(secrets) => options = options.with_secrets(secrets),
            Err(why) => return Ok(Err(why)),
        }
        match self.tls(&namespace, hooks).await? {
            Ok(Some(tls)) => options = options.with_tls(tls),
            Ok(None) => {}
            Err(why) => return Ok(Err(why)),
        }
        Ok(Ok(options))
    }

    /// The values of `spec.hooks.secrets`.
    async fn secrets(
        &self,
        namespace: &str,
        hooks: &Hooks,
    ) -> Result<Result<HookSecrets, String>, OperatorError> {
        let mut secrets = HookSecrets::new();
        for (i, s) in hooks.secrets.iter().enumerate() {
            let field = format!("spec.hooks.secrets[{i}].secretKeyRef");
            let value = match self
                .secret_key(namespace, &s.secret_key_ref, &field, MAX_SECRET_BYTES)
                .await?
            {
                Ok(bytes) => bytes,
                Err(why) => return Ok(Err(why)),
            };
            match String::from_utf8(value) {
                Ok(text) => secrets = secrets.with(s.name.clone(), text),
                Err(_) => {
                    return Ok(Err(format!(
                        "{field}: the value of key {} of Secret {namespace}/{} is not UTF-8 text",
                        s.secret_key_ref.key, s.secret_key_ref.name
                    )));
                }
            }
        }
        Ok(Ok(secrets))
    }

    /// The client configuration of `spec.hooks.tls`, when set.
    async fn tls(
        &self,
        namespace: &str,
        hooks: &Hooks,
    ) -> Result<Result<Option<Arc<rustls::ClientConfig>>, String>, OperatorError> {
        let Some(tls) = &hooks.tls else {
            return Ok(Ok(None));
        };
        let mut settings = TlsSettings::default();
        if let Some(ca) = &tls.ca_bundle {
            let read = match (&ca.config_map_key_ref, &ca.secret_key_ref) {
                (Some(cm), None) => {
                    self.config_map_key(namespace, cm, "spec.hooks.tls.caBundle.configMapKeyRef")
                        .await?
                }
                (None, Some(s)) => {
                    self.secret_key(
                        namespace,
                        s,
                        "spec.hooks.tls.caBundle.secretKeyRef",
                        MAX_TLS_BYTES,
                    )
                    .await?
                }
                _ => Err(
                    "spec.hooks.tls.caBundle: needs exactly one of configMapKeyRef and secretKeyRef"
                        .to_string(),
                ),
            };
            match read {
                Ok(pem) => settings.ca_bundle_pem = Some(pem),
                Err(why) => return Ok(Err(why)),
            }
        }
        if let Some(name) = &tls.client_certificate_secret {
            let field = "spec.hooks.tls.clientCertificateSecret";
            for (key, slot) in [
                ("tls.crt", &mut settings.client_cert_pem),
                ("tls.key", &mut settings.client_key_pem),
            ] {
                let key_ref = KeyRef {
                    name: name.clone(),
                    key: key.into(),
                };
                match self
                    .secret_key(namespace, &key_ref, field, MAX_TLS_BYTES)
                    .await?
                {
                    Ok(pem) => *slot = Some(pem),
                    Err(why) => return Ok(Err(why)),
                }
            }
        }
        Ok(settings
            .client_config()
            .map(Some)
            .map_err(|e| format!("spec.hooks.tls: {e}")))
    }

    /// One key of a Secret, at most `limit` bytes.
    async fn secret_key(
        &self,
        namespace: &str,
        key_ref: &KeyRef,
        field: &str,
        limit: usize,
    ) -> Result<Result<Vec<u8>, String>, OperatorError> {
        let secret = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(&key_ref.name)
            .await
            .map_err(|source| OperatorError::ReadHookObject {
                kind: "Secret",
                name: format!("{namespace}/{}", key_ref.name),
                source,
            })?;
        let Some(secret) = secret else {
            return Ok(Err(format!(
                "{field}: Secret {namespace}/{} not found",
                key_ref.name
            )));
        };
        let value = secret
            .data
            .and_then(|mut d| d.remove(&key_ref.key))
            .map(|b| b.0);
        Ok(bounded(value, field, "Secret", namespace, key_ref, limit))
    }

    /// One key of a ConfigMap (`data` or `binaryData`), at most [`MAX_TLS_BYTES`].
    async fn config_map_key(
        &self,
        namespace: &str,
        key_ref: &KeyRef,
        field: &str,
    ) -> Result<Result<Vec<u8>, String>, OperatorError> {
        let cm = Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(&key_ref.name)
            .await
            .map_err(|source| OperatorError::ReadHookObject {
                kind: "ConfigMap",
                name: format!("{namespace}/{}", key_ref.name),
                source,
            })?;
        let Some(cm) = cm else {
            return Ok(Err(format!(
                "{field}: ConfigMap {namespace}/{} not found",
                key_ref.name
            )));
        };
        let value = cm
            .data
            .and_then(|mut d| d.remove(&key_ref.key))
            .map(String::into_bytes)
            .or_else(|| {
                cm.binary_data
                    .and_then(|mut d| d.remove(&key_ref.key))
                    .map(|b| b.0)
            });
        Ok(bounded(
            value,
            field,
            "ConfigMap",
            namespace,
            key_ref,
            MAX_TLS_BYTES,
        ))
    }
}

/// A key's value, present and at most `limit` bytes; the error names the field, never the value.
fn bounded(
    value: Option<Vec<u8>>,
    field: &str,
    kind: &str,
    namespace: &str,
    key_ref: &KeyRef,
    limit: usize,
) -> Result<Vec<u8>, String> {
    match value {
        None => Err(format!(
            "{field}: {kind} {namespace}/{} has no key {}",
            key_ref.name, key_ref.key
        )),
        Some(v) if v.len() > limit => Err(format!(
            "{field}: key {} of {kind} {namespace}/{} holds {} bytes, more than the {limit} allowed",
            key_ref.key,
            key_ref.name,
            v.len()
        )),
        Some(v) => Ok(v),
    }
}

/// What the operator itself must keep from hooks and metric queries, besides link-local
/// addresses: the API server, as this process reaches it (`cluster_url`, every address its host
/// resolves to, on its port) and as pods find it (`KUBERNETES_SERVICE_HOST`, every port), and
/// this process's metrics port on loopback and on its pod IP (`POD_IP`).
pub async fn operator_forbidden(
    cluster_url: &http::Uri,
    metrics: std::net::SocketAddr,
) -> ForbiddenAddrs {
    let mut forbidden = ForbiddenAddrs::default();
    if let Some(host) = cluster_url.host() {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let https = cluster_url.scheme_str() != Some("http");
        let port = cluster_url
            .port_u16()
            .unwrap_or(if https { 443 } else { 80 });
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map(|a| a.map(|s| s.ip()).collect())
                .unwrap_or_default(),
        };
        for ip in addrs {
            forbidden = forbidden.with(IpNet::from(ip), Some(port), "the API server");
        }
    }
    if let Some(ip) = std::env::var("KUBERNETES_SERVICE_HOST")
        .ok()
        .and_then(|h| h.parse::<IpAddr>().ok())
    {
        let port = std::env::var("KUBERNETES_SERVICE_PORT")
            .ok()
            .and_then(|p| p.parse::<u16>().ok());
        forbidden = forbidden.with(IpNet::from(ip), port, "the API server");
    }
    // Exact addresses (not 127.0.0.0/8): a policy granting a whole range that contains one of
    // them would name it explicitly and open it again.
    let port = Some(metrics.port());
    let own = [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        metrics.ip(),
    ];
    for ip in own.into_iter().filter(|ip| !ip.is_unspecified()) {
        forbidden = forbidden.with(IpNet::from(ip), port, "the operator's metrics port");
    }
    if let Some(ip) = std::env::var("POD_IP")
        .ok()
        .and_then(|h| h.parse::<IpAddr>().ok())
    {
        forbidden = forbidden.with(IpNet::from(ip), port, "the operator's metrics port");
    }
    forbidden
}

/// Where the operator's own connections on a Scaler's behalf (Prometheus queries, registry
/// pulls) may go: what the cluster policies grant its namespace, never the forbidden
/// addresses (the rules of hook requests, without a Scaler allow-list: the address is the
/// Scaler's own choice).
#[derive(Debug, Clone)]
pub struct OperatorEgress {
    pub grant: NetworkGrant,
    pub forbidden: ForbiddenAddrs,
}

/// How long resolving the name of an address the operator connects to may take.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl OperatorEgress {
    /// The egress of a Scaler in `namespace` under `access`.
    pub fn for_namespace(access: &HookAccess, namespace: &str) -> Self {
        Self {
            grant: network_grant(&access.policies().grant(namespace), namespace, &[]),
            forbidden: access.forbidden().clone(),
        }
    }

    /// Whether the http(s) URL `address` may be reached: its host is a canonical name or
    /// address, and every address it resolves to is granted and not forbidden.
    pub async fn check(&self, address: &str) -> Result<(), String> {
        let url = reqwest::Url::parse(address).map_err(|e| e.to_string())?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let egress = hoist_sandbox::Egress::new(
            hoist_sandbox::AllowList::new([host.as_str()]),
            self.grant.clone(),
            self.forbidden.clone(),
        );
        match tokio::time::timeout(RESOLVE_TIMEOUT, egress.resolve_checked(&host, port)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refusal)) => Err(format!(
                "refused by the cluster's HookPolicies: {refusal}; a cluster admin grants \
                 addresses the operator may reach for a namespace in a HookPolicy's spec.egress"
            )),
            Err(_) => Err(format!(
                "resolving {host} took longer than {RESOLVE_TIMEOUT:?}"
            )),
        }
    }
}

/// The sandbox's grant from what the policies grant a namespace: their host patterns and
/// CIDRs, the namespace's service names, the target's pods.
pub fn network_grant(spec: &GrantSpec, namespace: &str, pods: &[PodInfo]) -> NetworkGrant {
    let mut hosts = spec.hosts.clone();
    if spec.same_namespace && !namespace.is_empty() {
        hosts.push(format!("*.{namespace}.svc"));
        hosts.push(format!("*.{namespace}.svc.cluster.local"));
    }
    let mut cidrs: Vec<IpNet> = spec
        .cidrs
        .iter()
        .filter_map(|c| match c.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(e) => {
                tracing::warn!(cidr = %c, error = %e, from = ?spec.from, "a HookPolicy CIDR is not one; it grants nothing");
                None
            }
        })
        .collect();
    if spec.target_pods {
        cidrs.extend(
            pods.iter()
                .filter_map(|p| p.ip.as_deref()?.parse::<IpAddr>().ok())
                .map(IpNet::from),
        );
    }
    NetworkGrant::new(hosts, cidrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ip: &str) -> PodInfo {
        PodInfo {
            name: "web-0".into(),
            ordinal: Some(0),
            ip: Some(ip.into()),
            ready: true,
        }
    }

    #[test]
    fn the_grant_adds_the_namespace_names_and_the_target_pods() {
        let spec = GrantSpec {
            hosts: vec!["prometheus.monitoring.svc:9090".into()],
            cidrs: vec!["10.1.0.0/16".into(), "not-a-cidr".into()],
            same_namespace: true,
            target_pods: true,
            from: vec!["HookPolicy a".into()],
        };
        let grant = network_grant(&spec, "team-a", &[pod("10.2.0.7")]);
        let none = network_grant(&GrantSpec::default(), "team-a", &[pod("10.2.0.7")]);
        assert_ne!(grant, none);
        assert_eq!(
            grant,
            NetworkGrant::new(
                [
                    "prometheus.monitoring.svc:9090",
                    "*.team-a.svc",
                    "*.team-a.svc.cluster.local"
                ],
                [
                    "10.1.0.0/16".parse::<IpNet>().unwrap(),
                    "10.2.0.7/32".parse::<IpNet>().unwrap()
                ]
            )
        );
    }
}
