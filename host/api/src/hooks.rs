//! `spec.hooks`: the plugin that runs around every scaling operation, and how it may fail.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// The default ConfigMap key holding the plugin component.
pub const DEFAULT_PLUGIN_KEY: &str = "plugin.wasm";
/// The default deadline of a single hook call.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Hook plugin, its configuration and its limits.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hooks {
    /// Where the plugin (a WebAssembly component) is stored.
    pub plugin: PluginRef,
    /// The plugin's own configuration, handed to it verbatim as JSON and checked by its
    /// `validate-config` export before any operation starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_schema")]
    pub config: Option<serde_json::Value>,
    /// Deadline of one hook call (default 30s); a call never outlives its stage's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<Duration>,
    /// What a failed, trapped or timed-out hook does to the operation (default FailClose).
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Hosts the plugin may reach over HTTP (`host` or `host:port`; `*.` prefix for a domain).
    /// Empty: only the target's own pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub allowed_hosts: Vec<String>,
    /// Keys of Secrets in the Scaler's namespace handed to the plugin at call time (it asks for
    /// them by `name`). Their values are never written to the Scaler, events or logs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub secrets: Vec<HookSecret>,
    /// TLS for the plugin's HTTPS requests: the CA bundle to trust instead of the public roots
    /// and a client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<HookTls>,
}

/// Most secrets one Scaler hands its plugin.
pub const MAX_HOOK_SECRETS: usize = 16;
/// Largest secret value handed to a plugin, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Largest CA bundle, certificate or key read for a Scaler's TLS, in bytes.
pub const MAX_TLS_BYTES: usize = 256 * 1024;

/// One Secret key handed to the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.name.matches('^[A-Za-z0-9_.-]+$')", "message": "hooks.secrets[].name may hold letters, digits, '_', '.' and '-' only"}
]))]
pub struct HookSecret {
    /// The name the plugin asks for (e.g. `password`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The Secret and key holding the value.
    pub secret_key_ref: KeyRef,
}

/// A key of a Secret or ConfigMap in the Scaler's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// TLS settings of a Scaler's hook calls.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookTls {
    /// PEM CA certificates to trust (only these) for the plugin's HTTPS requests, from a key of
    /// a ConfigMap or a Secret. Absent: the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<CaBundleRef>,
    /// A Secret of type kubernetes.io/tls (`tls.crt`, `tls.key`) holding the client
    /// certificate presented to servers that ask for one (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_certificate_secret: Option<String>,
}

/// Where a CA bundle is stored: exactly one of the two.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.configMapKeyRef) != has(self.secretKeyRef)", "message": "hooks.tls.caBundle needs exactly one of configMapKeyRef and secretKeyRef"}
]))]
pub struct CaBundleRef {
    /// A ConfigMap key holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// A Secret key holding the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
}

impl Hooks {
    /// The per-call deadline in effect.
    pub fn effective_call_timeout(&self) -> Duration {
        self.call_timeout.unwrap_or(DEFAULT_CALL_TIMEOUT)
    }
}

/// Where the plugin comes from: a ConfigMap of the Scaler's namespace or an OCI registry;
/// exactly one of `configMap` and `oci`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.configMap) != has(self.oci)", "message": "hooks.plugin needs exactly one of configMap and oci"},
    {"rule": "!has(self.key) || has(self.configMap)", "message": "hooks.plugin.key names a ConfigMap key; it needs hooks.plugin.configMap"},
    {"rule": "!has(self.oci) || self.oci.reference.contains('@sha256:') || has(self.sha256)", "message": "hooks.plugin.oci.reference names a tag: pin it, with @sha256:<manifest digest> in the reference or with hooks.plugin.sha256"}
]))]
pub struct PluginRef {
    /// Name of a ConfigMap in the Scaler's namespace holding the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub config_map: Option<String>,
    /// Key in the ConfigMap's binaryData (default `plugin.wasm`; a `.gz` suffix means gzip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
    /// A Wasm OCI artifact in a registry (one `application/wasm` layer, as `wkg` and
    /// `hoist plugin push` publish it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciPluginRef>,
    /// Pin: the sha256 of the component (64 lowercase hex characters); a different plugin is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), extend("x-kubernetes-validations" = [
        {"rule": "self.matches('^[0-9a-f]{64}$')", "message": "hooks.plugin.sha256 must be 64 lowercase hexadecimal characters (the output of sha256sum)"}
    ]))]
    pub sha256: Option<String>,
}

/// A plugin published to an OCI registry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciPluginRef {
    /// `REGISTRY/REPOSITORY@sha256:<manifest digest>` (what `hoist plugin push` prints), or
    /// `REGISTRY/REPOSITORY:TAG` together with `hooks.plugin.sha256`. Always pulled over HTTPS.
    #[schemars(length(min = 1, max = 512))]
    pub reference: String,
    /// A Secret of type `kubernetes.io/dockerconfigjson` in the Scaler's namespace with the
    /// registry's credentials; without it the pull is anonymous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pull_secret: Option<String>,
}

/// Where a [`PluginRef`] points, as one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginLocation<'a> {
    /// A ConfigMap and its key.
    ConfigMap { name: &'a str, key: &'a str },
    /// An OCI artifact.
    Oci(&'a OciPluginRef),
}

impl std::fmt::Display for PluginLocation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfigMap { name, .. } => write!(f, "ConfigMap {name}"),
            Self::Oci(oci) => write!(f, "OCI artifact {}", oci.reference),
        }
    }
}

impl PluginRef {
    /// A plugin in ConfigMap `name`, default key.
    pub fn config_map(name: &str) -> Self {
        Self {
            config_map: Some(name.to_string()),
            ..Self::default()
        }
    }

    /// The ConfigMap key in effect.
    pub fn effective_key(&self) -> &str {
        self.key.as_deref().unwrap_or(DEFAULT_PLUGIN_KEY)
    }

    /// Where the plugin is: the OCI artifact when `oci` is set, else the ConfigMap (named `""`
    /// when neither is, which validation refuses).
    pub fn location(&self) -> PluginLocation<'_> {
        match &self.oci {
            Some(oci) => PluginLocation::Oci(oci),
            None => PluginLocation::ConfigMap {
                name: self.config_map.as_deref().unwrap_or_default(),
                key: self.effective_key(),
            },
        }
    }
}

/// What happens when a hook fails, traps, times out or cannot be loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// The operation goes to Failed, `on-failure` is called, and the workload is not changed
    /// further until a retry.
    #[default]
    FailClose,
    /// A Warning event is emitted and the operation continues without the hook.
    FailOpen,
}

/// Per-stage deadlines of an operation; nothing waits forever.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageTimeouts {
    /// Deadline of PreScaling, all pre-scale calls included (default 10m). Size it for the
    /// slowest drain: a Trino worker drains in twice its `shutdown.grace-period` (2m by default)
    /// plus the time its running queries still need, so 10m fails a drain behind a query that
    /// runs on for ~6 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_scaling: Option<Duration>,
    /// Deadline for the target to report the new count ready (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Duration>,
    /// Deadline of PostScaling, all post-scale calls included (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_scaling: Option<Duration>,
}

impl StageTimeouts {
    /// Default deadline of every stage.
    pub const DEFAULT: Duration = Duration::from_secs(600);

    /// PreScaling's deadline in effect.
    pub fn pre_scaling(&self) -> Duration {
        self.pre_scaling.unwrap_or(Self::DEFAULT)
    }

    /// Scaling's deadline in effect.
    pub fn scaling(&self) -> Duration {
        self.scaling.unwrap_or(Self::DEFAULT)
    }

    /// PostScaling's deadline in effect.
    pub fn post_scaling(&self) -> Duration {
        self.post_scaling.unwrap_or(Self::DEFAULT)
    }
}

/// Automatic retries of a Failed operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Attempts in all, the first included (so 1 means no automatic retry).
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// Wait before each retry: doubles from `initial` up to `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Exponential backoff bounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.initial) || !has(self.max) || duration(self.initial) <= duration(self.max)", "message": "retryPolicy.backoff.initial must not exceed retryPolicy.backoff.max"}
]))]
pub struct Backoff {
    /// Wait before the first retry (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Longest wait (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

impl Backoff {
    /// Default first wait.
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(30);
    /// Default longest wait.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(600);

    /// The wait before retry number `retry` (1 = the first retry): `initial × 2^(retry−1)`,
    /// capped at `max`.
    pub fn delay(&self, retry: u32) -> Duration {
        let initial = self.initial.unwrap_or(Self::DEFAULT_INITIAL).get();
        let max = self.max.unwrap_or(Self::DEFAULT_MAX).get();
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        initial
            .checked_mul(factor)
            .map_or(max, |d| d.min(max))
            .into()
    }
}

fn free_object_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "The plugin's own configuration (any JSON object), handed to it verbatim."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Some(Duration::from_secs(10)),
            max: Some(Duration::from_secs(60)),
        };
        let waits: Vec<u64> = (1..=6).map(|n| b.delay(n).get().as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert_eq!(
            b.delay(200).get().as_secs(),
            60,
            "huge retry numbers saturate"
        );
        let default = Backoff::default();
        assert_eq!(default.delay(1), Backoff::DEFAULT_INITIAL);
    }

    #[test]
    fn defaults() {
        let p = PluginRef::config_map("cm");
        assert_eq!(p.effective_key(), "plugin.wasm");
        assert_eq!(
            Hooks::default().effective_call_timeout(),
            DEFAULT_CALL_TIMEOUT
        );
        assert_eq!(StageTimeouts::default().scaling(), StageTimeouts::DEFAULT);
        assert_eq!(FailurePolicy::default(), FailurePolicy::FailClose);
    }
}
