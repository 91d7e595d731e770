//! Who else sets the replicas of a Scaler's workload: other Scalers of the namespace with the
//! same `targetRef`, and `HorizontalPodAutoscalers` aimed at the workload itself (a user's own,
//! or the one KEDA makes for a ScaledObject). Pure: read from the watches' stores.

use std::cmp::Ordering;
use std::sync::Arc;

use hoist_api::{MANAGED_BY, MANAGED_BY_LABEL, Scaler, TargetRef};
use hoist_decide::{Rival, TargetConflict};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// The label KEDA puts on the HPA it makes for a ScaledObject: the ScaledObject's name.
const KEDA_SCALED_OBJECT_LABEL: &str = "scaledobject.keda.sh/name";

/// Whether `hpa` writes `target` itself (not a Scaler: hoist's own HPAs target Scalers).
fn aims_at(hpa: &HorizontalPodAutoscaler, target: &TargetRef) -> bool {
    let Some(spec) = &hpa.spec else {
        return false;
    };
    let r = &spec.scale_target_ref;
    let owned = hpa.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
    !owned
        && r.kind == target.kind
        && r.name == target.name
        && r.api_version.as_deref().unwrap_or(&target.api_version) == target.api_version
}

/// The rivals of `scaler` and which of them all acts: the oldest (a missing creation time
/// sorts last; the name breaks a tie). `None` when nothing else sets the replicas.
pub fn target_conflict(
    scalers: &[Arc<Scaler>],
    hpas: &[Arc<HorizontalPodAutoscaler>],
    scaler: &Scaler,
) -> Option<TargetConflict> {
    let namespace = scaler.namespace();
    let name = scaler.name_any();
    let target = &scaler.spec.target_ref;
    let created = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.map(|t| t.0);
    let mut all: Vec<(Option<Timestamp>, Rival)> = scalers
        .iter()
        .filter(|s| s.namespace() == namespace && s.name_any() != name)
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter(|s| &s.spec.target_ref == target)
        .map(|s| {
            (
                created(s.metadata.creation_timestamp.as_ref()),
                Rival::Scaler(s.name_any()),
            )
        })
        .collect();
    all.extend(
        hpas.iter()
            .filter(|h| h.namespace() == namespace && h.metadata.deletion_timestamp.is_none())
            .filter(|h| aims_at(h, target))
            .map(|h| {
                (
                    created(h.metadata.creation_timestamp.as_ref()),
                    Rival::Hpa {
                        name: h.name_any(),
                        scaled_object: h.labels().get(KEDA_SCALED_OBJECT_LABEL).cloned(),
                    },
                )
            }),
    );
    if all.is_empty() {
        return None;
    }
    let mut others: Vec<Rival> = all.iter().map(|(_, r)| r.clone()).collect();
    others.sort();
    let this = Rival::Scaler(name);
    all.push((
        created(scaler.metadata.creation_timestamp.as_ref()),
        this.clone(),
    ));
    all.sort_by(|a, b| match (a.0, b.0) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.1.cmp(&b.1)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.1.cmp(&b.1),
    });
    let oldest = all.swap_remove(0).1;
    Some(TargetConflict {
        others,
        acting: (oldest != this).then_some(oldest),
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::needless_pass_by_value,
        clippy::type_complexity,
        reason = "tests"
    )]

    use super::*;
    use serde_json::json;

    fn scaler(name: &str, created: &str, target: &str) -> Arc<Scaler> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "hoist.dev/v1alpha1", "kind": "Scaler",
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created},
                "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": target}},
            }))
            .unwrap(),
        )
    }

    fn hpa(
        name: &str,
        created: &str,
        target: (&str, &str),
        labels: serde_json::Value,
    ) -> Arc<HorizontalPodAutoscaler> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created, "labels": labels},
                "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": target.0, "name": target.1},
                         "maxReplicas": 5},
            }))
            .unwrap(),
        )
    }

    const T1: &str = "2026-01-01T00:00:01Z";
    const T2: &str = "2026-01-01T00:00:02Z";
    const T3: &str = "2026-01-01T00:00:03Z";

    #[test]
    fn rivals_and_who_acts() {
        let me = scaler("web", T2, "web");
        let cases: Vec<(
            &str,
            Vec<Arc<Scaler>>,
            Vec<Arc<HorizontalPodAutoscaler>>,
            Option<TargetConflict>,
        )> = vec![
            ("alone", vec![me.clone()], vec![], None),
            (
                "another Scaler of another workload, hoist's own HPA (aimed at the Scaler)",
                vec![me.clone(), scaler("db", T1, "db")],
                vec![hpa(
                    "web",
                    T1,
                    ("Scaler", "web"),
                    json!({MANAGED_BY_LABEL: MANAGED_BY}),
                )],
                None,
            ),
            (
                "an older Scaler of the same workload acts",
                vec![me.clone(), scaler("old", T1, "web")],
                vec![],
                Some(TargetConflict {
                    others: vec![Rival::Scaler("old".into())],
                    acting: Some(Rival::Scaler("old".into())),
                }),
            ),
            (
                "a newer Scaler: this one acts",
                vec![me.clone(), scaler("new", T3, "web")],
                vec![],
                Some(TargetConflict {
                    others: vec![Rival::Scaler("new".into())],
                    acting: None,
                }),
            ),
            (
                "a user's older HPA on the StatefulSet itself acts; KEDA's newer one is named by its ScaledObject",
                vec![me.clone()],
                vec![
                    hpa("mine", T1, ("StatefulSet", "web"), json!({})),
                    hpa(
                        "keda-hpa-web",
                        T3,
                        ("StatefulSet", "web"),
                        json!({KEDA_SCALED_OBJECT_LABEL: "web"}),
                    ),
                    hpa("other", T1, ("StatefulSet", "db"), json!({})),
                ],
                Some(TargetConflict {
                    others: vec![
                        Rival::Hpa {
                            name: "keda-hpa-web".into(),
                            scaled_object: Some("web".into()),
                        },
                        Rival::Hpa {
                            name: "mine".into(),
                            scaled_object: None,
                        },
                    ],
                    acting: Some(Rival::Hpa {
                        name: "mine".into(),
                        scaled_object: None,
                    }),
                }),
            ),
        ];
        for (what, scalers, hpas, want) in cases {
            assert_eq!(target_conflict(&scalers, &hpas, &me), want, "{what}");
        }
    }
}
