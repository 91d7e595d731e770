//! Which pods a hook call is about: the pods an operation removes (a StatefulSet's highest
//! ordinals; a Deployment's chosen, marked ones), the pods it adds, and all live pods. Pure.

use std::collections::BTreeMap;

use hoist_api::{LEAVING_ANNOTATION, TargetRef};
use hoist_sandbox::{AllowList, PodInfo};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The ordinal of a StatefulSet pod (`<name>-<ordinal>`).
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<u32> {
    pod_name
        .strip_prefix(set_name)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

fn pod_info(pod: &Pod, ordinal: Option<u32>) -> PodInfo {
    PodInfo {
        name: pod.name_any(),
        ordinal,
        ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        ready: is_ready(pod),
    }
}

fn chosen_by(pod: &Pod, operation_id: &str) -> bool {
    pod.annotations()
        .get(LEAVING_ANNOTATION)
        .is_some_and(|v| v == operation_id)
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Whether a hook call may choose more leaving pods than the operation already chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choosing {
    /// A pre-scale call: complete the choice (the first call makes it).
    Complete,
    /// Any later hook: the pods chosen before and nothing else. After the scale-down the
    /// remaining pods must never be reported as leaving.
    Keep,
}

/// The `count` Deployment/ReplicaSet pods a scale-down takes: those this operation chose before
/// (annotated, even while being deleted), then, if `choosing` allows, live pods ranked as a
/// scale-down should take them: not-ready first, then the newest; names break ties. Pure.
pub fn choose_leaving(
    pods: &[Pod],
    count: usize,
    operation_id: &str,
    choosing: Choosing,
) -> Vec<String> {
    let mut chosen: Vec<&Pod> = pods.iter().filter(|p| chosen_by(p, operation_id)).collect();
    chosen.sort_by_key(|p| p.name_any());
    if choosing == Choosing::Complete {
        let mut candidates: Vec<&Pod> = pods
            .iter()
            .filter(|p| !chosen_by(p, operation_id) && !is_terminating(p))
            .collect();
        candidates.sort_by(|a, b| {
            is_ready(a)
                .cmp(&is_ready(b))
                .then_with(|| b.creation_timestamp().cmp(&a.creation_timestamp()))
                .then_with(|| a.name_any().cmp(&b.name_any()))
        });
        chosen.extend(candidates);
    }
    chosen
        .into_iter()
        .take(count)
        .map(ResourceExt::name_any)
        .collect()
}

/// The pods of one hook call's context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodPlan {
    /// The pods the operation removes.
    pub removed: Vec<PodInfo>,
    /// The pods the operation adds (StatefulSet ordinals; a Deployment's are not known yet).
    pub added: Vec<PodInfo>,
    /// Every live (not terminating) pod of the target.
    pub all: Vec<PodInfo>,
    /// Removed Deployment/ReplicaSet pods not yet annotated as this operation's.
    pub to_mark: Vec<String>,
}

/// Pods leaving and arriving for an operation `from → to` on `target`. Pure.
pub fn plan_pods(
    target: &TargetRef,
    pods: &[Pod],
    (from, to): (i32, i32),
    operation_id: &str,
    choosing: Choosing,
) -> PodPlan {
    let sts = target.is_stateful_set();
    let ordinal = |p: &Pod| {
        if sts {
            ordinal_of(&target.name, &p.name_any())
        } else {
            None
        }
    };
    let mut all: Vec<PodInfo> = pods
        .iter()
        .filter(|p| !is_terminating(p))
        .map(|p| pod_info(p, ordinal(p)))
        .collect();
    all.sort_by(|a, b| a.ordinal.cmp(&b.ordinal).then_with(|| a.name.cmp(&b.name)));
    // Leaving pods are described even while they terminate.
    let by_name: BTreeMap<String, &Pod> = pods.iter().map(|p| (p.name_any(), p)).collect();
    let (lo, hi) = (from.min(to).max(0), from.max(to).max(0));
    let mut plan = PodPlan::default();
    if sts {
        // Removed pods highest ordinal first (the StatefulSet controller's order), added ones
        // lowest first, as the WIT contract documents.
        let ordinals: Vec<u32> = if to < from {
            (lo.unsigned_abs()..hi.unsigned_abs()).rev().collect()
        } else {
            (lo.unsigned_abs()..hi.unsigned_abs()).collect()
        };
        for ordinal in ordinals {
            let name = format!("{}-{ordinal}", target.name);
            let info = by_name.get(&name).map_or_else(
                || PodInfo {
                    name: name.clone(),
                    ordinal: Some(ordinal),
                    ip: None,
                    ready: false,
                },
                |p| pod_info(p, Some(ordinal)),
            );
            if to < from {
                plan.removed.push(info);
            } else {
                plan.added.push(info);
            }
        }
    } else if to < from {
        let count = usize::try_from(from - to).unwrap_or(0);
        for name in choose_leaving(pods, count, operation_id, choosing) {
            if let Some(p) = by_name.get(&name) {
                if !chosen_by(p, operation_id) {
                    plan.to_mark.push(name.clone());
                }
                plan.removed.push(pod_info(p, None));
            }
        }
    }
    plan.all = all;
    plan
}

/// The default allow-list: the target's own pods (by IP).
pub(crate) fn default_allow_list(all: &[PodInfo]) -> AllowList {
    AllowList::new(all.iter().filter_map(|p| p.ip.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, created: &str, leaving: Option<&str>) -> Pod {
        let mut annotations = serde_json::Map::new();
        if let Some(op) = leaving {
            annotations.insert(LEAVING_ANNOTATION.into(), json!(op));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created, "annotations": annotations},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn sts() -> TargetRef {
        TargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "trino".into(),
        }
    }

    fn deploy() -> TargetRef {
        TargetRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        }
    }

    #[test]
    fn statefulset_scale_down_removes_the_highest_ordinals() {
        let pods: Vec<Pod> = (0..3)
            .map(|i| {
                pod(
                    &format!("trino-{i}"),
                    &format!("127.1.0.{i}"),
                    true,
                    "2026-01-01T00:00:00Z",
                    None,
                )
            })
            .collect();
        let PodPlan {
            removed,
            added,
            all,
            to_mark,
        } = plan_pods(&sts(), &pods, (3, 1), "op", Choosing::Complete);
        assert!(to_mark.is_empty(), "StatefulSet pods are never annotated");
        let names: Vec<_> = removed
            .iter()
            .map(|p| (p.name.as_str(), p.ordinal, p.ip.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("trino-2", Some(2), Some("127.1.0.2")),
                ("trino-1", Some(1), Some("127.1.0.1"))
            ],
            "highest ordinal first"
        );
        assert!(added.is_empty());
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].ordinal, Some(0));
    }

    #[test]
    fn statefulset_scale_up_names_the_new_ordinals() {
        let pods = vec![pod(
            "trino-0",
            "127.1.0.0",
            true,
            "2026-01-01T00:00:00Z",
            None,
        )];
        let PodPlan { removed, added, .. } =
            plan_pods(&sts(), &pods, (1, 3), "op", Choosing::Complete);
        assert!(removed.is_empty());
        let added: Vec<_> = added
            .iter()
            .map(|p| (p.name.as_str(), p.ordinal, p.ready))
            .collect();
        assert_eq!(
            added,
            [("trino-1", Some(1), false), ("trino-2", Some(2), false)]
        );
    }

    #[test]
    fn deployment_scale_down_prefers_chosen_then_unready_then_newest() {
        let pods = vec![
            pod("web-a", "127.1.0.1", true, "2026-01-01T00:00:00Z", None),
            pod("web-b", "127.1.0.2", true, "2026-01-03T00:00:00Z", None),
            pod("web-c", "127.1.0.3", false, "2026-01-01T00:00:00Z", None),
            pod("web-d", "127.1.0.4", true, "2026-01-02T00:00:00Z", None),
        ];
        assert_eq!(
            choose_leaving(&pods, 2, "op1", Choosing::Complete),
            ["web-c", "web-b"]
        );
        // Once chosen (annotated), the same pods stay chosen even if readiness changes.
        let pods = vec![
            pod(
                "web-a",
                "127.1.0.1",
                false,
                "2026-01-01T00:00:00Z",
                Some("op1"),
            ),
            pod("web-b", "127.1.0.2", true, "2026-01-03T00:00:00Z", None),
            pod("web-c", "127.1.0.3", false, "2026-01-01T00:00:00Z", None),
            pod(
                "web-d",
                "127.1.0.4",
                true,
                "2026-01-02T00:00:00Z",
                Some("op1"),
            ),
        ];
        assert_eq!(
            choose_leaving(&pods, 2, "op1", Choosing::Complete),
            ["web-a", "web-d"]
        );
        // An annotation of another operation does not count.
        assert_eq!(
            choose_leaving(&pods, 1, "op2", Choosing::Complete),
            ["web-a"]
        );
        let plan = plan_pods(&deploy(), &pods, (4, 2), "op1", Choosing::Complete);
        assert_eq!(plan.removed.len(), 2);
        assert!(plan.to_mark.is_empty(), "both already carry op1");
        let plan = plan_pods(&deploy(), &pods, (4, 1), "op1", Choosing::Complete);
        assert_eq!(
            plan.to_mark,
            ["web-c"],
            "the third pod is chosen and marked"
        );
    }

    fn terminating(mut pod: Pod) -> Pod {
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-04T00:00:00Z".parse().unwrap(),
            ));
        pod
    }

    /// After the controller starts deleting the chosen pods, every later call of the operation
    /// still names them, and never the pods that stay (the kept workers must not be drained).
    #[test]
    fn deployment_leaving_pods_stay_the_chosen_ones_while_they_terminate() {
        let pods = vec![
            pod("web-a", "127.1.0.1", true, "2026-01-01T00:00:00Z", None),
            pod("web-b", "127.1.0.2", true, "2026-01-01T00:00:00Z", None),
            terminating(pod(
                "web-c",
                "127.1.0.3",
                true,
                "2026-01-01T00:00:00Z",
                Some("op1"),
            )),
            terminating(pod(
                "web-d",
                "127.1.0.4",
                true,
                "2026-01-01T00:00:00Z",
                Some("op1"),
            )),
        ];
        for choosing in [Choosing::Complete, Choosing::Keep] {
            let plan = plan_pods(&deploy(), &pods, (4, 2), "op1", choosing);
            let removed: Vec<_> = plan
                .removed
                .iter()
                .map(|p| (p.name.as_str(), p.ip.as_deref()))
                .collect();
            assert_eq!(
                removed,
                [("web-c", Some("127.1.0.3")), ("web-d", Some("127.1.0.4"))],
                "{choosing:?}"
            );
            let all: Vec<_> = plan.all.iter().map(|p| p.name.as_str()).collect();
            assert_eq!(all, ["web-a", "web-b"], "{choosing:?}");
            assert!(plan.to_mark.is_empty());
        }
        // Once they are gone, a post-scale call reports no leaving pod rather than others.
        let plan = plan_pods(&deploy(), &pods[..2], (4, 2), "op1", Choosing::Keep);
        assert!(plan.removed.is_empty());
        // A terminating pod nobody chose is never chosen.
        let others = vec![
            pod("web-a", "127.1.0.1", true, "2026-01-01T00:00:00Z", None),
            terminating(pod(
                "web-z",
                "127.1.0.9",
                false,
                "2026-01-09T00:00:00Z",
                None,
            )),
        ];
        assert_eq!(
            choose_leaving(&others, 1, "op1", Choosing::Complete),
            ["web-a"]
        );
    }

    #[test]
    fn ordinals_parse_only_for_the_set() {
        assert_eq!(ordinal_of("trino", "trino-12"), Some(12));
        assert_eq!(ordinal_of("trino", "trino-worker-1"), None);
        assert_eq!(ordinal_of("trino", "other-1"), None);
    }
}
