//! The cluster admins' [`HookPolicy`] objects, as they apply to one namespace: which plugins
//! may run there ([`Policies::admission`]) and where its hooks and Prometheus queries may
//! connect ([`Policies::grant`]).
//!
//! Every policy whose namespace selector matches the namespace's labels applies, and their
//! grants add up; a namespace no policy selects gets [`HookPolicySpec::builtin_default`]. Until
//! both watches (policies, namespaces) have listed once, nothing is admitted: a policy not yet
//! seen must not be taken for "no policy".

use std::collections::BTreeMap;
use std::sync::Arc;

use hoist_api::policy::BUILTIN_DEFAULT_POLICY;
use hoist_api::{HookPolicy, HookPolicySpec};
use hoist_types::Digest;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

/// The policies and namespace labels, from the controller's watches.
#[derive(Clone)]
pub struct Policies {
    objects: Store<HookPolicy>,
    namespaces: Store<Namespace>,
    listed: [tokio::sync::watch::Receiver<bool>; 2],
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies").finish_non_exhaustive()
    }
}

/// Whether a plugin may run in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted, by the named policy.
    Admitted {
        /// The policy's name (or the builtin default's description).
        by: String,
    },
    /// Refused: the text names the policies that apply and says why.
    Refused(String),
    /// The policies are not listed yet: ask again soon.
    NotListedYet,
}

/// What the policies that apply to a namespace grant its hooks' network access, before the
/// sandbox turns it into a checked grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantSpec {
    /// Host patterns (allow-list syntax).
    pub hosts: Vec<String>,
    /// CIDRs, as written in the policies.
    pub cidrs: Vec<String>,
    /// The names below `NAMESPACE.svc` (and `.svc.cluster.local`).
    pub same_namespace: bool,
    /// The target's pods.
    pub target_pods: bool,
    /// The policies this comes from, for messages.
    pub from: Vec<String>,
}

impl Policies {
    /// Policies over the two stores, ready once both `listed` are true.
    pub fn new(
        policies: Store<HookPolicy>,
        namespaces: Store<Namespace>,
        listed: [tokio::sync::watch::Receiver<bool>; 2],
    ) -> Self {
        Policies {
            objects: policies,
            namespaces,
            listed,
        }
    }

    /// No policy at all, already listed: every namespace gets the builtin default (for tests
    /// and tools that run hooks without a cluster).
    pub fn none() -> Self {
        let listed = || tokio::sync::watch::channel(true).1;
        Policies {
            objects: kube::runtime::reflector::store::<HookPolicy>().0,
            namespaces: kube::runtime::reflector::store::<Namespace>().0,
            listed: [listed(), listed()],
        }
    }

    fn listed(&self) -> bool {
        self.listed.iter().all(|l| *l.borrow())
    }

    /// The policies that apply to `namespace`, sorted by name; empty when none does (the
    /// builtin default applies then).
    pub fn applying(&self, namespace: &str) -> Vec<Arc<HookPolicy>> {
        let labels = self
            .namespaces
            .state()
            .into_iter()
            .find(|n| n.name_any() == namespace)
            .map_or_else(
                // A namespace not listed yet (just created): its name label is certain.
                || {
                    BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        namespace.to_string(),
                    )])
                },
                |n| n.labels().clone(),
            );
        let mut out: Vec<Arc<HookPolicy>> = self
            .objects
            .state()
            .into_iter()
            .filter(|p| p.spec.selects(&labels))
            .collect();
        out.sort_by_key(|p| p.name_any());
        out
    }

    /// Whether the plugin with `digest` may run in `namespace`.
    pub fn admission(&self, namespace: &str, digest: &Digest) -> Admission {
        if !self.listed() {
            return Admission::NotListedYet;
        }
        admission_by(&self.applying(namespace), namespace, digest)
    }

    /// What the policies that apply to `namespace` grant.
    pub fn grant(&self, namespace: &str) -> GrantSpec {
        if !self.listed() {
            return GrantSpec::default();
        }
        grant_by(&self.applying(namespace))
    }
}

/// [`Policies::admission`] over the policies that apply.
pub fn admission_by(applying: &[Arc<HookPolicy>], namespace: &str, digest: &Digest) -> Admission {
    if applying.is_empty() {
        return if HookPolicySpec::builtin_default().admits(digest.as_str()) {
            Admission::Admitted {
                by: BUILTIN_DEFAULT_POLICY.to_string(),
            }
        } else {
            Admission::Refused(format!(
                "plugin {digest} is not admitted in namespace {namespace} by the {BUILTIN_DEFAULT_POLICY}"
            ))
        };
    }
    if let Some(p) = applying.iter().find(|p| p.spec.admits(digest.as_str())) {
        return Admission::Admitted { by: p.name_any() };
    }
    let names: Vec<String> = applying
        .iter()
        .map(|p| format!("HookPolicy {}", p.name_any()))
        .collect();
    let verb = if names.len() == 1 { "applies" } else { "apply" };
    Admission::Refused(format!(
        "plugin {digest} is not admitted in namespace {namespace}: {} {verb} and none lists \
         its sha256 (spec.plugins) or sets allowAnyPlugin; a cluster admin must add it",
        names.join(", "),
    ))
}

/// [`Policies::grant`] over the policies that apply.
pub fn grant_by(applying: &[Arc<HookPolicy>]) -> GrantSpec {
    if applying.is_empty() {
        let d = HookPolicySpec::builtin_default().egress;
        return GrantSpec {
            hosts: d.hosts,
            cidrs: d.cidrs,
            same_namespace: d.same_namespace,
            target_pods: d.target_pods,
            from: vec![BUILTIN_DEFAULT_POLICY.to_string()],
        };
    }
    let mut grant = GrantSpec::default();
    for p in applying {
        let e = &p.spec.egress;
        grant.hosts.extend(e.hosts.iter().cloned());
        grant.cidrs.extend(e.cidrs.iter().cloned());
        grant.same_namespace |= e.same_namespace;
        grant.target_pods |= e.target_pods;
        grant.from.push(format!("HookPolicy {}", p.name_any()));
    }
    grant
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, spec: serde_json::Value) -> Arc<HookPolicy> {
        let mut p = HookPolicy::new(name, serde_json::from_value(spec).unwrap());
        p.metadata.name = Some(name.into());
        Arc::new(p)
    }

    fn digest(c: char) -> Digest {
        Digest::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn no_policy_means_the_builtin_default() {
        assert_eq!(
            admission_by(&[], "ns", &digest('a')),
            Admission::Admitted {
                by: BUILTIN_DEFAULT_POLICY.into()
            }
        );
        let g = grant_by(&[]);
        assert!(g.same_namespace && g.target_pods && g.hosts.is_empty());
    }

    #[test]
    fn a_policy_admits_only_what_it_lists_and_names_itself_when_it_refuses() {
        let team = policy(
            "team-a",
            serde_json::json!({"plugins": [{"sha256": "a".repeat(64)}]}),
        );
        assert_eq!(
            admission_by(std::slice::from_ref(&team), "ns", &digest('a')),
            Admission::Admitted {
                by: "team-a".into()
            }
        );
        let Admission::Refused(why) = admission_by(&[team], "ns", &digest('b')) else {
            panic!("admitted")
        };
        assert!(why.contains("HookPolicy team-a applies"), "{why}");
        assert!(why.contains(&"b".repeat(64)), "{why}");
    }

    #[test]
    fn grants_of_every_applying_policy_add_up() {
        let a = policy("a", serde_json::json!({"egress": {"hosts": ["x.example"]}}));
        let b = policy(
            "b",
            serde_json::json!({"allowAnyPlugin": true, "egress": {"cidrs": ["10.0.0.0/8"], "targetPods": true}}),
        );
        let g = grant_by(&[a.clone(), b.clone()]);
        assert_eq!(g.hosts, ["x.example"]);
        assert_eq!(g.cidrs, ["10.0.0.0/8"]);
        assert!(g.target_pods && !g.same_namespace);
        assert_eq!(
            admission_by(&[a, b], "ns", &digest('c')),
            Admission::Admitted { by: "b".into() }
        );
    }
}
