//! `HookPolicy` (`hoist.dev/v1alpha1`, cluster-scoped): what cluster admins allow the hooks of
//! the namespaces it selects — which plugins may run, and where they (and the builtin
//! autoscaler's Prometheus queries) may connect. Namespace users cannot change it; a Scaler's
//! own `spec.hooks.allowedHosts` only narrows it.
//!
//! Every policy whose `namespaceSelector` matches a namespace applies to it; their grants add up.
//! A namespace no policy selects gets [`HookPolicySpec::builtin_default`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name under which the builtin default is reported (no object of that name exists).
pub const BUILTIN_DEFAULT_POLICY: &str = "(builtin default: no HookPolicy selects the namespace)";

/// Most plugins one policy admits by digest.
pub const MAX_POLICY_PLUGINS: usize = 256;
/// Most host patterns or CIDRs one policy grants.
pub const MAX_POLICY_EGRESS: usize = 256;

/// Cluster-admin policy for hook plugins: which plugins the Scalers of the selected namespaces
/// may run and which hosts their hooks and Prometheus metrics may reach.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hoist.dev",
    version = "v1alpha1",
    kind = "HookPolicy",
    plural = "hookpolicies",
    singular = "hookpolicy",
    shortname = "hpol",
    category = "hoist",
    derive = "PartialEq",
    derive = "Default",
    doc = "Cluster-admin policy: which hook plugins may run in the selected namespaces and where they may connect.",
    printcolumn = r#"{"name":"AnyPlugin","type":"boolean","jsonPath":".spec.allowAnyPlugin","description":"Whether any plugin is admitted"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HookPolicySpec {
    /// Namespaces this policy applies to, by their labels (`kubernetes.io/metadata.name` names
    /// one). An empty selector selects every namespace.
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Admit every plugin (a Scaler may still pin its own sha256). When false, only the
    /// plugins listed in `plugins` run.
    #[serde(default)]
    pub allow_any_plugin: bool,
    /// Plugins admitted, by the sha256 of the component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub plugins: Vec<AdmittedPlugin>,
    /// Where hooks (and the builtin autoscaler's Prometheus queries) may connect.
    #[serde(default)]
    pub egress: EgressGrant,
}

/// One admitted plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdmittedPlugin {
    /// The sha256 of the component (64 lowercase hex characters, as `sha256sum` prints it).
    #[schemars(length(min = 64, max = 64), regex(pattern = "^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// A name for people (e.g. `nifi-decommission 1.2.0`); not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub name: Option<String>,
}

/// Hosts and addresses granted. A request is allowed when its host matches `hosts` or every
/// address it resolves to lies in `cidrs` (or in the target's pods, or the namespace's
/// services, when those are granted) — and the Scaler's own `allowedHosts` allows it too.
/// Link-local addresses (169.254.0.0/16, fe80::/10), the API server's addresses and the
/// operator's metrics port stay unreachable unless an entry here names them exactly (a CIDR
/// inside them, or their address as a host).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressGrant {
    /// Host patterns: `host`, `host:port`, `*.domain` (every name below it), IPv6 as `[::1]:80`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub hosts: Vec<String>,
    /// Address ranges, e.g. `10.0.0.0/8`, `fd00::/8`, `192.168.1.7/32`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 43)))]
    pub cidrs: Vec<String>,
    /// The names of the Scaler's own namespace: `*.NAMESPACE.svc` and
    /// `*.NAMESPACE.svc.cluster.local`.
    #[serde(default)]
    pub same_namespace: bool,
    /// The pods of the Scaler's target, by their IPs.
    #[serde(default)]
    pub target_pods: bool,
}

impl HookPolicySpec {
    /// What applies to a namespace no HookPolicy selects: any plugin, connecting only to the
    /// names of its own namespace and the pods of its target. This grants a hook nothing the
    /// namespace's users cannot reach from a pod of their own, and it keeps hoist doing what it
    /// is installed for (draining the workload's own pods) until an admin writes a policy.
    pub fn builtin_default() -> Self {
        HookPolicySpec {
            namespace_selector: LabelSelector::default(),
            allow_any_plugin: true,
            plugins: Vec::new(),
            egress: EgressGrant {
                hosts: Vec::new(),
                cidrs: Vec::new(),
                same_namespace: true,
                target_pods: true,
            },
        }
    }

    /// Whether this policy admits the plugin with this sha256.
    pub fn admits(&self, sha256: &str) -> bool {
        self.allow_any_plugin || self.plugins.iter().any(|p| p.sha256 == sha256)
    }

    /// Whether the selector selects a namespace with these labels. A selector that cannot be
    /// read selects nothing (and [`HookPolicySpec::problems`] says why).
    pub fn selects(&self, namespace_labels: &BTreeMap<String, String>) -> bool {
        use kube::core::{Selector, SelectorExt};
        Selector::try_from(self.namespace_selector.clone())
            .is_ok_and(|s| s.matches(namespace_labels))
    }

    /// What is wrong with the policy, each naming the field; empty when it is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(e) = kube::core::Selector::try_from(self.namespace_selector.clone()) {
            out.push(format!("spec.namespaceSelector: {e}"));
        }
        if self.plugins.len() > MAX_POLICY_PLUGINS {
            out.push(format!(
                "spec.plugins: {} entries, at most {MAX_POLICY_PLUGINS}",
                self.plugins.len()
            ));
        }
        for (i, p) in self.plugins.iter().enumerate() {
            if p.sha256.len() != 64
                || !p
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                out.push(format!(
                    "spec.plugins[{i}].sha256: must be 64 lowercase hexadecimal characters"
                ));
            }
        }
        for (i, cidr) in self.egress.cidrs.iter().enumerate() {
            if !is_cidr(cidr) {
                out.push(format!(
                    "spec.egress.cidrs[{i}]: {cidr:?} is not an address range such as \
                     10.0.0.0/8 or fd00::/8"
                ));
            }
        }
        for (field, len) in [
            ("hosts", self.egress.hosts.len()),
            ("cidrs", self.egress.cidrs.len()),
        ] {
            if len > MAX_POLICY_EGRESS {
                out.push(format!(
                    "spec.egress.{field}: {len} entries, at most {MAX_POLICY_EGRESS}"
                ));
            }
        }
        out
    }
}

/// `ADDRESS/PREFIX` with a prefix no longer than the address.
fn is_cidr(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(prefix) = prefix.parse::<u8>() else {
        return false;
    };
    match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_selector_selects_every_namespace_and_labels_select_some() {
        let all = HookPolicySpec::default();
        assert!(all.selects(&BTreeMap::new()));
        let team: HookPolicySpec = serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchLabels": {"team": "nifi"}},
            "plugins": [{"sha256": "a".repeat(64)}],
        }))
        .unwrap();
        assert!(team.selects(&BTreeMap::from([("team".into(), "nifi".into())])));
        assert!(!team.selects(&BTreeMap::from([("team".into(), "trino".into())])));
        assert!(team.admits(&"a".repeat(64)));
        assert!(!team.admits(&"b".repeat(64)));
        assert!(team.problems().is_empty());
    }

    #[test]
    fn problems_name_the_field() {
        let bad: HookPolicySpec = serde_json::from_value(serde_json::json!({
            "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Bogus"}]},
            "plugins": [{"sha256": "ABC"}],
            "egress": {"cidrs": ["10.0.0.0/8", "10.0.0.0/33", "example.com"]},
        }))
        .unwrap();
        let problems = bad.problems();
        assert!(
            problems[0].starts_with("spec.namespaceSelector"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("spec.plugins[0].sha256"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("spec.egress.cidrs[1]"),
            "{problems:?}"
        );
        assert!(
            problems[3].starts_with("spec.egress.cidrs[2]"),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            !bad.selects(&BTreeMap::new()),
            "an unreadable selector selects nothing"
        );
    }

    #[test]
    fn the_builtin_default_admits_any_plugin_and_grants_only_the_namespace() {
        let d = HookPolicySpec::builtin_default();
        assert!(d.admits(&"c".repeat(64)));
        assert!(d.egress.same_namespace && d.egress.target_pods);
        assert!(d.egress.hosts.is_empty() && d.egress.cidrs.is_empty());
    }
}
