//! The state machine's rules as tables: each row is "given this observation, the plan does
//! this". Read top to bottom as a specification.
// Tables are long by nature; `Option<Option<_>>` in `Expect` means "not checked" / "expect none" /
// "expect this".
#![allow(
    clippy::too_many_lines,
    clippy::option_option,
    clippy::unnecessary_wraps,
    clippy::semicolon_if_nothing_returned
)]

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_api::conditions;
use hoist_api::{
    Backoff, Failure, FailurePolicy, Hooks, OnFailure, Operation, PluginRef, PluginStatus,
    RETRY_ANNOTATION, RetryPolicy, Scaler, ScalerSpec, ScalerStatus, Stage, StageTimeouts,
    TargetRef,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use super::*;

pub(super) const NOW: i64 = 1_700_000_000;
pub(super) const DIGEST: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER_DIGEST: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(super) fn digest(text: &str) -> Digest {
    Digest::parse(text).unwrap()
}

pub(super) fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(secs).unwrap())
}

pub(super) fn micro(secs: i64) -> MicroTime {
    MicroTime(jiff::Timestamp::from_second(secs).unwrap())
}

/// Spec: StatefulSet web, desired 5, bounds 0..=10, no hooks.
pub(super) fn spec() -> ScalerSpec {
    ScalerSpec {
        target_ref: TargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
        },
        replicas: Some(5),
        min_replicas: Some(0),
        max_replicas: Some(10),
        ..ScalerSpec::default()
    }
}

pub(super) fn hooks(policy: FailurePolicy) -> Hooks {
    Hooks {
        plugin: PluginRef::config_map("drain"),
        config: Some(serde_json::json!({"port": 8080})),
        failure_policy: policy,
        ..Hooks::default()
    }
}

pub(super) fn accepted() -> PluginStatus {
    PluginStatus {
        digest: DIGEST.into(),
        config_hash: config_hash(hooks(FailurePolicy::FailClose).config.as_ref()),
        accepted: true,
        message: None,
    }
}

/// An observation builder: a Scaler in some state, its target, the plugin, a hook result.
#[derive(Clone)]
struct Given(Observation, Option<HookResult>);

/// A decision in one value: the hook asked for (phase 1), or the plan (phase 2, or no hook).
#[derive(Debug, PartialEq)]
struct Out {
    hook: Option<HookCall>,
    plan: Plan,
}

impl std::ops::Deref for Out {
    type Target = Plan;
    fn deref(&self) -> &Plan {
        &self.plan
    }
}

/// Phase 1 when there is no hook result, phase 2 with it: what the operator would do.
fn outcome(obs: &Observation, result: Option<HookResult>) -> Out {
    match result {
        Some(r) => Out {
            hook: None,
            plan: decide_after(obs, r),
        },
        None => match decide(obs) {
            Decision::Act(plan) => Out { hook: None, plan },
            Decision::Call(call) => Out {
                hook: Some(call),
                plan: Plan::default(),
            },
        },
    }
}

impl Given {
    fn decide(&self) -> Out {
        outcome(&self.0, self.1.clone())
    }
}

fn given() -> Given {
    Given(
        Observation {
            scaler: Scaler {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some("web".into()),
                    generation: Some(1),
                    ..Default::default()
                },
                spec: spec(),
                status: None,
            },
            target: target(3),
            plugin: PluginAvailability::NotConfigured,
            conflict: None,
            now: jiff::Timestamp::from_second(NOW).unwrap(),
        },
        None,
    )
}

/// A settled target at `n` replicas.
pub(super) fn target(n: i32) -> TargetObservation {
    TargetObservation::Found(TargetScale {
        spec_replicas: n,
        status_replicas: n,
        ready_replicas: Some(n),
        observed_generation_current: true,
        selector: Some("app=web".into()),
        uid: Some(TARGET_UID.into()),
    })
}

pub(super) const TARGET_UID: &str = "0f0f0f0f-1111-2222-3333-444455556666";

pub(super) fn op(from: i32, to: i32, stage_started: i64, digest: Option<&str>) -> Operation {
    Operation {
        id: format!("{}-{from}-{to}", NOW - 100),
        from,
        to,
        target: Some(hoist_api::OperationTarget {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "web".into(),
            uid: Some(TARGET_UID.into()),
        }),
        started_at: at(NOW - 100),
        stage_started_at: micro(stage_started),
        plugin_digest: digest.map(str::to_owned),
        hook_state: None,
        hook_message: None,
        hook_calls: 0,
        next_hook_call_at: None,
        target_writes: 0,
        attempt: 1,
    }
}

impl Given {
    fn spec(mut self, f: impl FnOnce(&mut ScalerSpec)) -> Self {
        f(&mut self.0.scaler.spec);
        self
    }
    fn with_hooks(self, policy: FailurePolicy) -> Self {
        let g = self.spec(|s| s.hooks = Some(hooks(policy)));
        let mut g = g.plugin(PluginAvailability::Ready {
            digest: digest(DIGEST),
        });
        if let Some(st) = &mut g.0.scaler.status {
            st.plugin = Some(accepted());
        }
        g
    }
    fn status(mut self, f: impl FnOnce(&mut ScalerStatus)) -> Self {
        let st = self.0.scaler.status.get_or_insert_with(|| ScalerStatus {
            replicas: Some(3),
            ..ScalerStatus::default()
        });
        f(st);
        self
    }
    /// Adopted and Idle at 3 replicas.
    fn idle(self) -> Self {
        let hooked = self.0.scaler.spec.hooks.is_some();
        self.status(|s| {
            s.stage = Stage::Idle;
            if hooked {
                s.plugin = Some(accepted());
            }
        })
    }
    /// In `stage` of an operation 3 → 5 whose stage started `ago` seconds before now.
    fn in_stage(self, stage: Stage, ago: i64) -> Self {
        let digest = self.0.scaler.spec.hooks.as_ref().map(|_| DIGEST);
        self.status(|s| {
            s.stage = stage;
            s.operation = Some(op(3, 5, NOW - ago, digest));
            s.plugin = digest.map(|_| accepted());
        })
    }
    fn failed(self, on_failure: OnFailure, ago: i64) -> Self {
        self.in_stage(Stage::PreScaling, 100).status(|s| {
            s.stage = Stage::Failed;
            s.failure = Some(Failure {
                stage: Stage::PreScaling,
                reason: "PreScaleFailed".into(),
                message: "pre-scale failed: boom".into(),
                at: at(NOW - ago),
                on_failure,
                on_failure_message: None,
            });
        })
    }
    fn target(mut self, t: TargetObservation) -> Self {
        self.0.target = t;
        self
    }
    fn target_at(self, spec: i32, status: i32, ready: i32, current: bool) -> Self {
        self.target(TargetObservation::Found(TargetScale {
            spec_replicas: spec,
            status_replicas: status,
            ready_replicas: Some(ready),
            observed_generation_current: current,
            selector: Some("app=web".into()),
            uid: Some(TARGET_UID.into()),
        }))
    }
    fn plugin(mut self, p: PluginAvailability) -> Self {
        self.0.plugin = p;
        self
    }
    fn result(mut self, r: HookResult) -> Self {
        self.1 = Some(r);
        self
    }
    fn annotate_retry(mut self) -> Self {
        self.0.scaler.metadata.annotations = Some(BTreeMap::from([(
            RETRY_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]));
        self
    }
}

fn done() -> HookResult {
    HookResult::Done {
        message: Some("ok".into()),
    }
}
fn failed(reason: &str) -> HookResult {
    HookResult::Failed {
        reason: reason.into(),
    }
}
fn in_progress(state: &str, secs: u64) -> HookResult {
    HookResult::InProgress {
        state: state.into(),
        retry_after: Duration::from_secs(secs),
        message: Some("draining".into()),
    }
}

/// What a row expects. `None` fields are not checked.
#[derive(Default)]
struct Expect {
    /// Stage after the plan (the written status', or the observed one when nothing is written).
    stage: Option<Stage>,
    /// The hook the plan asks for (`Some(None)`: none).
    hook: Option<Option<Hook>>,
    /// The /scale write (`Some(None)`: none).
    scale: Option<Option<i32>>,
    requeue: Option<Option<Duration>>,
    /// Event reasons, in order.
    events: Option<&'static [&'static str]>,
    pending: Option<Option<i32>>,
    remove_retry: Option<bool>,
    /// (condition type, status, reason)
    condition: Option<(&'static str, bool, &'static str)>,
    /// Arbitrary extra check.
    check: Option<fn(&Out)>,
}

fn stage_after(obs: &Observation, plan: &Plan) -> Stage {
    plan.status
        .as_ref()
        .or(obs.scaler.status.as_ref())
        .map_or(Stage::Idle, |s| s.stage)
}

fn run(table: Vec<(&str, Given, Expect)>) {
    for (name, given, expect) in table {
        let plan = given.decide();
        let obs = given.0.clone();
        let ctx = || format!("{name}\nplan: {plan:#?}");
        if plan.hook.is_some() {
            assert!(
                !plan.has_writes() && plan.requeue_after.is_none(),
                "a hook plan carries nothing else: {}",
                ctx()
            );
        }
        assert_eq!(plan, given.decide(), "deterministic: {name}");
        if let Some(stage) = expect.stage {
            assert_eq!(stage_after(&obs, &plan), stage, "stage: {}", ctx());
        }
        if let Some(hook) = expect.hook {
            assert_eq!(plan.hook.as_ref().map(|h| h.hook), hook, "hook: {}", ctx());
        }
        if let Some(scale) = expect.scale {
            assert_eq!(plan.scale_target, scale, "scale: {}", ctx());
        }
        if let Some(requeue) = expect.requeue {
            assert_eq!(plan.requeue_after, requeue, "requeue: {}", ctx());
        }
        if let Some(events) = expect.events {
            let reasons: Vec<&str> = plan.events.iter().map(|e| e.reason.as_str()).collect();
            assert_eq!(reasons, events, "events: {}", ctx());
        }
        if let Some(pending) = expect.pending {
            let st = plan.status.as_ref().or(obs.scaler.status.as_ref()).unwrap();
            assert_eq!(st.pending_replicas, pending, "pending: {}", ctx());
        }
        if let Some(remove) = expect.remove_retry {
            assert_eq!(
                plan.remove_retry_annotation,
                remove,
                "remove retry: {}",
                ctx()
            );
        }
        if let Some((type_, status, reason)) = expect.condition {
            let st = plan.status.as_ref().or(obs.scaler.status.as_ref()).unwrap();
            let c = conditions::find(&st.conditions, type_)
                .unwrap_or_else(|| panic!("no {type_}: {}", ctx()));
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                (conditions::status_str(status), reason),
                "condition {type_}: {}",
                ctx()
            );
        }
        if let Some(check) = expect.check {
            check(&plan);
        }
    }
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

#[test]
fn adoption_a_new_scaler_takes_the_targets_count_and_scales_nothing() {
    run(vec![
        (
            "no status, no spec.replicas: adopt 3",
            given().spec(|s| s.replicas = None),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                hook: Some(None),
                events: Some(&["Adopted"]),
                check: Some(|p| {
                    assert_eq!(p.status.as_ref().unwrap().replicas, Some(3));
                    // The Scaler's /scale answers only once spec.replicas exists.
                    assert_eq!(p.seed_replicas, Some(3));
                }),
                ..Expect::default()
            },
        ),
        (
            "no status, spec.replicas 5 on a 3-replica target: adopt first, no scale on creation",
            given(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                events: Some(&["Adopted"]),
                requeue: Some(Some(Duration::ZERO)),
                ..Expect::default()
            },
        ),
        (
            "no status, target missing: record it, retry later",
            given().target(TargetObservation::Unavailable {
                reason: "statefulsets.apps \"web\" not found".into(),
            }),
            Expect {
                scale: Some(None),
                requeue: Some(secs(30)),
                condition: Some((conditions::ABLE_TO_SCALE, false, "TargetUnavailable")),
                check: Some(|p| assert_eq!(p.status.as_ref().unwrap().replicas, None)),
                ..Expect::default()
            },
        ),
        (
            "status without replicas (target was missing), target now found: adopt, no scale",
            given().status(|s| s.replicas = None),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                events: Some(&["Adopted"]),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn idle_starts_an_operation_with_to_frozen() {
    run(vec![
        (
            "desired 5, current 3, no plugin: pre passes at once, write 5, Scaling",
            given().idle(),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                hook: Some(None),
                events: Some(&["OperationStarted"]),
                requeue: Some(secs(5)),
                condition: Some((conditions::SCALING_ACTIVE, true, "Scaling")),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    let op = st.operation.as_ref().unwrap();
                    assert_eq!(
                        (op.from, op.to, op.attempt, op.plugin_digest.as_deref()),
                        (3, 5, 1, None)
                    );
                    assert_eq!(st.last_scale_time, Some(at(NOW)));
                }),
                ..Expect::default()
            },
        ),
        (
            "desired 5, current 3, plugin ready: PreScaling recorded first, hook next round",
            given().with_hooks(FailurePolicy::FailClose).idle(),
            Expect {
                stage: Some(Stage::PreScaling),
                scale: Some(None),
                hook: Some(None),
                requeue: Some(Some(Duration::ZERO)),
                events: Some(&["OperationStarted"]),
                check: Some(|p| {
                    assert_eq!(
                        p.status
                            .as_ref()
                            .unwrap()
                            .operation
                            .as_ref()
                            .unwrap()
                            .plugin_digest
                            .as_deref(),
                        Some(DIGEST)
                    )
                }),
                ..Expect::default()
            },
        ),
        (
            "desired equals current: nothing to do, nothing written",
            given().spec(|s| s.replicas = Some(3)).idle().status(|s| {
                // Conditions as a previous identical round wrote them.
                let plan = given().spec(|s| s.replicas = Some(3)).idle().decide();
                *s = plan.plan.status.unwrap();
            }),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                requeue: Some(None),
                events: Some(&[]),
                check: Some(|p| assert!(p.status.is_none())),
                ..Expect::default()
            },
        ),
        (
            "spec.replicas absent: keep the target's count",
            given().spec(|s| s.replicas = None).idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, true, "Idle")),
                ..Expect::default()
            },
        ),
        (
            "desired above max is clamped: 50 → 10",
            given().spec(|s| s.replicas = Some(50)).idle(),
            Expect {
                scale: Some(Some(10)),
                ..Expect::default()
            },
        ),
        (
            "desired below min is clamped: 0 with min 2 → 2",
            given()
                .spec(|s| {
                    s.replicas = Some(0);
                    s.min_replicas = Some(2);
                })
                .idle(),
            Expect {
                scale: Some(Some(2)),
                ..Expect::default()
            },
        ),
        (
            "scale to zero when minReplicas is 0",
            given().spec(|s| s.replicas = Some(0)).idle(),
            Expect {
                scale: Some(Some(0)),
                ..Expect::default()
            },
        ),
        (
            "default minReplicas 1 stops a 0",
            given()
                .spec(|s| {
                    s.replicas = Some(0);
                    s.min_replicas = None;
                })
                .idle(),
            Expect {
                scale: Some(Some(1)),
                ..Expect::default()
            },
        ),
        (
            "adopted count above maxReplicas: kept, reported, and seeded into spec.replicas",
            given()
                .spec(|s| s.replicas = None)
                .target(target(20))
                .idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                events: Some(&[]),
                condition: Some((conditions::WITHIN_BOUNDS, false, "AboveMaxReplicas")),
                check: Some(|p| assert_eq!(p.seed_replicas, Some(20))),
                ..Expect::default()
            },
        ),
        (
            "adopted 0 below the default minReplicas 1: kept and reported",
            given()
                .spec(|s| {
                    s.replicas = Some(0);
                    s.min_replicas = None;
                })
                .target(target(0))
                .idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::WITHIN_BOUNDS, false, "BelowMinReplicas")),
                check: Some(|p| assert_eq!(p.seed_replicas, None)),
                ..Expect::default()
            },
        ),
        (
            "out of bounds, then the asked count changes: the bounds apply (19 → 10)",
            given()
                .spec(|s| s.replicas = Some(19))
                .target(target(20))
                .idle(),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(10)),
                events: Some(&["OperationStarted"]),
                ..Expect::default()
            },
        ),
        (
            "a change of the bounds alone starts nothing (maxReplicas 10 under a count of 20)",
            given()
                .spec(|s| s.replicas = Some(20))
                .target(target(20))
                .idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, true, "Idle")),
                ..Expect::default()
            },
        ),
        (
            "within the bounds: WithinBounds True",
            given().spec(|s| s.replicas = Some(3)).idle(),
            Expect {
                condition: Some((conditions::WITHIN_BOUNDS, true, "WithinBounds")),
                check: Some(|p| assert_eq!(p.seed_replicas, None)),
                ..Expect::default()
            },
        ),
        (
            "pauseScaleOut holds an increase",
            given().spec(|s| s.pause_scale_out = true).idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, false, "DirectionPaused")),
                ..Expect::default()
            },
        ),
        (
            "pauseScaleIn holds a decrease",
            given()
                .spec(|s| {
                    s.pause_scale_in = true;
                    s.replicas = Some(1);
                })
                .idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                ..Expect::default()
            },
        ),
        (
            "pauseScaleIn lets an increase through",
            given().spec(|s| s.pause_scale_in = true).idle(),
            Expect {
                scale: Some(Some(5)),
                ..Expect::default()
            },
        ),
        (
            "invalid spec: no operation, ValidSpec names the field",
            given()
                .spec(|s| {
                    s.min_replicas = Some(8);
                    s.max_replicas = Some(4);
                })
                .idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::VALID_SPEC, false, "InvalidSpec")),
                check: Some(|p| {
                    let c = conditions::find(
                        &p.status.as_ref().unwrap().conditions,
                        conditions::VALID_SPEC,
                    )
                    .unwrap();
                    assert!(c.message.contains("spec.minReplicas"), "{}", c.message);
                }),
                ..Expect::default()
            },
        ),
        (
            "target unavailable: no operation, AbleToScale False",
            given().idle().target(TargetObservation::Unavailable {
                reason: "forbidden".into(),
            }),
            Expect {
                scale: Some(None),
                requeue: Some(secs(30)),
                condition: Some((conditions::ABLE_TO_SCALE, false, "TargetUnavailable")),
                ..Expect::default()
            },
        ),
        (
            "paused: nothing starts",
            given().spec(|s| s.paused = true).idle(),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                hook: Some(None),
                condition: Some((conditions::SCALING_ACTIVE, false, "Paused")),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn idle_waits_for_a_usable_plugin() {
    run(vec![
        (
            "plugin loading: no operation, HooksReady False, look again soon",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .plugin(PluginAvailability::Loading),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                requeue: Some(secs(10)),
                condition: Some((conditions::HOOKS_READY, false, "PluginLoading")),
                ..Expect::default()
            },
        ),
        (
            "plugin invalid, FailClose: no operation",
            given().with_hooks(FailurePolicy::FailClose).idle().plugin(
                PluginAvailability::Invalid {
                    reason: "wrong world".into(),
                },
            ),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, false, "HooksNotReady")),
                ..Expect::default()
            },
        ),
        (
            "plugin invalid, FailOpen: scale without hooks, Warning",
            given().with_hooks(FailurePolicy::FailOpen).idle().plugin(
                PluginAvailability::Invalid {
                    reason: "wrong world".into(),
                },
            ),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                events: Some(&["HooksSkipped", "OperationStarted"]),
                condition: Some((conditions::HOOKS_READY, false, "PluginInvalid")),
                ..Expect::default()
            },
        ),
        (
            "plugin not admitted by the cluster policy, FailOpen: still no operation",
            given().with_hooks(FailurePolicy::FailOpen).idle().plugin(
                PluginAvailability::NotAdmitted {
                    reason: "not admitted by HookPolicy team-a".into(),
                },
            ),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                hook: Some(None),
                condition: Some((conditions::HOOKS_READY, false, "PluginNotAdmitted")),
                ..Expect::default()
            },
        ),
        (
            "plugin not admitted, FailClose: no operation, Ready says hooks are not ready",
            given().with_hooks(FailurePolicy::FailClose).idle().plugin(
                PluginAvailability::NotAdmitted {
                    reason: "not admitted by HookPolicy team-a".into(),
                },
            ),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, false, "HooksNotReady")),
                ..Expect::default()
            },
        ),
        (
            "new plugin digest: validate-config first, nothing written",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .plugin(PluginAvailability::Ready {
                    digest: digest(OTHER_DIGEST),
                }),
            Expect {
                hook: Some(Some(Hook::ValidateConfig)),
                check: Some(|p| {
                    assert_eq!(
                        p.hook.as_ref().unwrap().plugin_digest.as_str(),
                        OTHER_DIGEST
                    )
                }),
                ..Expect::default()
            },
        ),
        (
            "changed config: validate-config again",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .spec(|s| s.hooks.as_mut().unwrap().config = Some(serde_json::json!({"port": 9}))),
            Expect {
                hook: Some(Some(Hook::ValidateConfig)),
                ..Expect::default()
            },
        ),
        (
            "validate-config Done: recorded, the operation starts with that digest",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .plugin(PluginAvailability::Ready {
                    digest: digest(OTHER_DIGEST),
                })
                .result(done()),
            Expect {
                stage: Some(Stage::PreScaling),
                events: Some(&["ConfigAccepted", "OperationStarted"]),
                condition: Some((conditions::HOOKS_READY, true, "PluginReady")),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    assert_eq!(
                        st.plugin.as_ref().map(|p| (p.digest.as_str(), p.accepted)),
                        Some((OTHER_DIGEST, true))
                    );
                    assert_eq!(
                        st.operation.as_ref().unwrap().plugin_digest.as_deref(),
                        Some(OTHER_DIGEST)
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "validate-config Failed: rejected, no operation",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .plugin(PluginAvailability::Ready {
                    digest: digest(OTHER_DIGEST),
                })
                .result(failed("port missing")),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                events: Some(&["ConfigRejected"]),
                condition: Some((conditions::HOOKS_READY, false, "ConfigRejected")),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn pre_scaling_calls_pre_scale_then_writes_the_frozen_to() {
    run(vec![
        (
            "phase 1: ask for pre-scale with the operation's context",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .status(|s| s.operation.as_mut().unwrap().hook_state = Some("step-1".into())),
            Expect {
                hook: Some(Some(Hook::PreScale)),
                check: Some(|p| {
                    let call = p.hook.as_ref().unwrap();
                    assert_eq!(call.plugin_digest.as_str(), DIGEST);
                    assert_eq!(call.timeout, Duration::from_secs(30), "callTimeout default");
                    let op = call.operation.as_ref().unwrap();
                    assert_eq!(
                        (op.from, op.to, op.direction, op.attempt),
                        (3, 5, Direction::Up, 1)
                    );
                    assert_eq!(op.saved_state.as_deref(), Some("step-1"));
                    assert_eq!(op.elapsed_in_stage, Duration::from_secs(40));
                }),
                ..Expect::default()
            },
        ),
        (
            "call timeout never outlives the stage: 10s left",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 590),
            Expect {
                check: Some(|p| {
                    assert_eq!(p.hook.as_ref().unwrap().timeout, Duration::from_secs(10))
                }),
                ..Expect::default()
            },
        ),
        (
            "Done: write the frozen 5 even though spec now says 7; 7 is pending",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .spec(|s| s.replicas = Some(7))
                .result(done()),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                pending: Some(Some(7)),
                events: Some(&["Scaling"]),
                requeue: Some(secs(5)),
                ..Expect::default()
            },
        ),
        (
            "InProgress: keep its state, call again after its delay",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .result(in_progress("step-2", 15)),
            Expect {
                stage: Some(Stage::PreScaling),
                scale: Some(None),
                requeue: Some(secs(15)),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!(op.hook_state.as_deref(), Some("step-2"));
                    assert_eq!(op.hook_message.as_deref(), Some("draining"));
                }),
                ..Expect::default()
            },
        ),
        (
            "InProgress near the deadline: requeue at the deadline, not later",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 595)
                .result(in_progress("s", 60)),
            Expect {
                requeue: Some(secs(5)),
                ..Expect::default()
            },
        ),
        (
            "InProgress with no delay: at least a second",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 10)
                .result(in_progress("s", 0)),
            Expect {
                requeue: Some(secs(1)),
                ..Expect::default()
            },
        ),
        (
            "Failed, FailClose: Failed, on-failure next round, target untouched",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .result(failed("node unreachable")),
            Expect {
                stage: Some(Stage::Failed),
                scale: Some(None),
                requeue: Some(Some(Duration::ZERO)),
                events: Some(&["OperationFailed"]),
                condition: Some((conditions::ABLE_TO_SCALE, false, "OperationFailed")),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(
                        (f.stage, f.reason.as_str(), f.on_failure),
                        (Stage::PreScaling, "PreScaleFailed", OnFailure::Pending)
                    );
                    assert!(f.message.contains("node unreachable"));
                }),
                ..Expect::default()
            },
        ),
        (
            "Failed, FailOpen: Warning, scale without the hook",
            given()
                .with_hooks(FailurePolicy::FailOpen)
                .in_stage(Stage::PreScaling, 40)
                .result(failed("node unreachable")),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                events: Some(&["HookFailedOpen", "Scaling"]),
                ..Expect::default()
            },
        ),
        (
            "stage deadline passed: Failed without calling the hook",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 600),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                scale: Some(None),
                check: Some(|p| {
                    assert_eq!(
                        p.status.as_ref().unwrap().failure.as_ref().unwrap().reason,
                        "StageTimeout"
                    )
                }),
                ..Expect::default()
            },
        ),
        (
            "custom stage deadline",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 61)
                .spec(|s| {
                    s.stage_timeouts = Some(StageTimeouts {
                        pre_scaling: Some(hoist_api::Duration::from_secs(60)),
                        ..StageTimeouts::default()
                    })
                }),
            Expect {
                stage: Some(Stage::Failed),
                ..Expect::default()
            },
        ),
        (
            "in flight keeps its digest though the ConfigMap now holds another plugin",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .plugin(PluginAvailability::Ready {
                    digest: digest(OTHER_DIGEST),
                }),
            Expect {
                check: Some(|p| {
                    assert_eq!(p.hook.as_ref().unwrap().plugin_digest.as_str(), DIGEST)
                }),
                ..Expect::default()
            },
        ),
        (
            "in flight keeps its digest though the current plugin is invalid",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .plugin(PluginAvailability::Invalid {
                    reason: "bad".into(),
                }),
            Expect {
                hook: Some(Some(Hook::PreScale)),
                ..Expect::default()
            },
        ),
        (
            "an operation digest that is not one (an edited status): the call fails, naming the field",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .status(|s| s.operation.as_mut().unwrap().plugin_digest = Some("abc".into())),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.reason, "PreScaleFailed");
                    assert!(
                        f.message.starts_with(
                            "pre-scale failed: PluginNotLoaded: status.operation.pluginDigest: \"abc\" is not a plugin digest"
                        ),
                        "{}",
                        f.message
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "a desired change is recorded as pending, never applied in flight",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .spec(|s| s.replicas = Some(2))
                .result(in_progress("s", 5)),
            Expect {
                pending: Some(Some(2)),
                check: Some(|p| {
                    assert_eq!(p.status.as_ref().unwrap().operation.as_ref().unwrap().to, 5)
                }),
                ..Expect::default()
            },
        ),
        (
            "a desired change back to the frozen value clears pending",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .status(|s| s.pending_replicas = Some(2))
                .result(in_progress("s", 5)),
            Expect {
                pending: Some(None),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn scaling_waits_for_the_target_within_a_deadline() {
    run(vec![
        (
            "ready at 5 with generation observed, plugin: PostScaling, hook next round",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::Scaling, 20)
                .target(target(5)),
            Expect {
                stage: Some(Stage::PostScaling),
                scale: Some(None),
                requeue: Some(Some(Duration::ZERO)),
                events: Some(&["Scaled"]),
                ..Expect::default()
            },
        ),
        (
            "ready at 5 without plugin: post passes, Idle",
            given().in_stage(Stage::Scaling, 20).target(target(5)),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                requeue: Some(None),
                events: Some(&["OperationSucceeded"]),
                condition: Some((conditions::READY, true, "Idle")),
                check: Some(|p| assert_eq!(p.status.as_ref().unwrap().operation, None)),
                ..Expect::default()
            },
        ),
        (
            "4 of 5 ready: wait",
            given()
                .in_stage(Stage::Scaling, 20)
                .target_at(5, 5, 4, true),
            Expect {
                stage: Some(Stage::Scaling),
                requeue: Some(secs(5)),
                ..Expect::default()
            },
        ),
        (
            "generation not observed yet: wait",
            given()
                .in_stage(Stage::Scaling, 20)
                .target_at(5, 5, 5, false),
            Expect {
                stage: Some(Stage::Scaling),
                ..Expect::default()
            },
        ),
        (
            "the wait never passes the deadline: 2s left",
            given()
                .in_stage(Stage::Scaling, 598)
                .target_at(5, 4, 4, true),
            Expect {
                stage: Some(Stage::Scaling),
                requeue: Some(secs(2)),
                ..Expect::default()
            },
        ),
        (
            "deadline: Failed (whatever the failure policy)",
            given()
                .with_hooks(FailurePolicy::FailOpen)
                .in_stage(Stage::Scaling, 600)
                .target_at(5, 4, 4, true),
            Expect {
                stage: Some(Stage::Failed),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(
                        (f.stage, f.reason.as_str(), f.on_failure),
                        (Stage::Scaling, "ScalingTimeout", OnFailure::Pending)
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "target's spec is not 5 (lost write or tampering): write 5 again",
            given().in_stage(Stage::Scaling, 20).target(target(3)),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                ..Expect::default()
            },
        ),
        (
            "target gone while scaling: wait until the deadline",
            given()
                .in_stage(Stage::Scaling, 20)
                .target(TargetObservation::Unavailable {
                    reason: "not found".into(),
                }),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(None),
                requeue: Some(secs(5)),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn post_scaling_calls_post_scale_then_serves_what_is_pending() {
    run(vec![
        (
            "phase 1: ask for post-scale",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5)),
            Expect {
                hook: Some(Some(Hook::PostScale)),
                ..Expect::default()
            },
        ),
        (
            "Done, nothing pending: Idle",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5))
                .result(done()),
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                events: Some(&["OperationSucceeded"]),
                pending: Some(None),
                ..Expect::default()
            },
        ),
        (
            "Done, 7 pending: the next operation 5 → 7 starts at once",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5))
                .spec(|s| s.replicas = Some(7))
                .result(done()),
            Expect {
                stage: Some(Stage::PreScaling),
                scale: Some(None),
                requeue: Some(Some(Duration::ZERO)),
                events: Some(&["OperationSucceeded", "OperationStarted"]),
                pending: Some(None),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!((op.from, op.to, op.attempt), (5, 7, 1));
                }),
                ..Expect::default()
            },
        ),
        (
            "Failed, FailClose: Failed",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5))
                .result(failed("x")),
            Expect {
                stage: Some(Stage::Failed),
                check: Some(|p| {
                    assert_eq!(
                        p.status.as_ref().unwrap().failure.as_ref().unwrap().reason,
                        "PostScaleFailed"
                    )
                }),
                ..Expect::default()
            },
        ),
        (
            "Failed, FailOpen: Idle with a Warning",
            given()
                .with_hooks(FailurePolicy::FailOpen)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5))
                .result(failed("x")),
            Expect {
                stage: Some(Stage::Idle),
                events: Some(&["HookFailedOpen", "OperationSucceeded"]),
                ..Expect::default()
            },
        ),
        (
            "Done, but the plugin changed meanwhile: Idle now, validate-config next round",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PostScaling, 5)
                .target(target(5))
                .spec(|s| s.replicas = Some(7))
                .plugin(PluginAvailability::Ready {
                    digest: digest(OTHER_DIGEST),
                })
                .result(done()),
            Expect {
                stage: Some(Stage::Idle),
                hook: Some(None),
                requeue: Some(Some(Duration::ZERO)),
                pending: Some(None),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn failed_calls_on_failure_once_then_waits_for_a_retry() {
    run(vec![
        (
            "on-failure pending: ask for it with what failed",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Pending, 1),
            Expect {
                hook: Some(Some(Hook::OnFailure)),
                check: Some(|p| {
                    let call = p.hook.as_ref().unwrap();
                    let f = call.failure.as_ref().unwrap();
                    assert_eq!(
                        (f.stage, f.reason.as_str()),
                        (Stage::PreScaling, "PreScaleFailed")
                    );
                    assert_eq!(call.operation.as_ref().unwrap().to, 5);
                }),
                ..Expect::default()
            },
        ),
        (
            "on-failure failed: recorded and a Warning, not hidden",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Pending, 1)
                .result(failed("cannot undrain")),
            Expect {
                stage: Some(Stage::Failed),
                events: Some(&["OnFailureFailed"]),
                requeue: Some(None),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(
                        (f.on_failure, f.on_failure_message.as_deref()),
                        (OnFailure::Failed, Some("cannot undrain"))
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "on-failure of an operation digest that is not one: recorded as failed, naming the field",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Pending, 1)
                .status(|s| s.operation.as_mut().unwrap().plugin_digest = Some("abc".into())),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                events: Some(&["OnFailureFailed"]),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.on_failure, OnFailure::Failed);
                    let message = f.on_failure_message.as_deref().unwrap();
                    assert!(
                        message.starts_with("PluginNotLoaded: status.operation.pluginDigest: "),
                        "{message}"
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "on-failure done: stays Failed",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Pending, 1)
                .result(done()),
            Expect {
                stage: Some(Stage::Failed),
                events: Some(&["OnFailureDone"]),
                ..Expect::default()
            },
        ),
        (
            "Failed, no retry: stays, nothing to requeue for",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Done, 3600),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                scale: Some(None),
                requeue: Some(None),
                ..Expect::default()
            },
        ),
        (
            "hoist.dev/retry=true: annotation removed, attempt 2 of the same change, same id",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Done, 60)
                .annotate_retry(),
            Expect {
                stage: Some(Stage::PreScaling),
                remove_retry: Some(true),
                events: Some(&["RetryRequested", "OperationStarted"]),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    let op = st.operation.as_ref().unwrap();
                    assert_eq!(
                        (op.attempt, op.id.as_str(), op.to),
                        (2, format!("{}-3-5", NOW - 100).as_str(), 5)
                    );
                    assert_eq!(st.failure, None);
                }),
                ..Expect::default()
            },
        ),
        (
            "retry with a different desired count: a new operation, attempt 1",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Done, 60)
                .annotate_retry()
                .spec(|s| s.replicas = Some(8)),
            Expect {
                stage: Some(Stage::PreScaling),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!((op.attempt, op.to), (1, 8));
                }),
                ..Expect::default()
            },
        ),
        (
            "retry annotation while on-failure is pending: on-failure first",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .failed(OnFailure::Pending, 1)
                .annotate_retry(),
            Expect {
                hook: Some(Some(Hook::OnFailure)),
                ..Expect::default()
            },
        ),
        (
            "retry policy, backoff not over (30s after failing, 60s backoff): wait the rest",
            given().failed(OnFailure::Skipped, 30).spec(|s| {
                s.retry_policy = Some(RetryPolicy {
                    max_attempts: 3,
                    backoff: Some(Backoff {
                        initial: Some(hoist_api::Duration::from_secs(60)),
                        max: None,
                    }),
                })
            }),
            Expect {
                stage: Some(Stage::Failed),
                requeue: Some(secs(30)),
                ..Expect::default()
            },
        ),
        (
            "retry policy, backoff over: retry",
            given().failed(OnFailure::Skipped, 60).spec(|s| {
                s.retry_policy = Some(RetryPolicy {
                    max_attempts: 3,
                    backoff: Some(Backoff {
                        initial: Some(hoist_api::Duration::from_secs(60)),
                        max: None,
                    }),
                })
            }),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                events: Some(&["RetryScheduled", "OperationStarted"]),
                ..Expect::default()
            },
        ),
        (
            "retry policy exhausted: stays Failed",
            given()
                .failed(OnFailure::Skipped, 9999)
                .status(|s| s.operation.as_mut().unwrap().attempt = 3)
                .spec(|s| {
                    s.retry_policy = Some(RetryPolicy {
                        max_attempts: 3,
                        backoff: None,
                    })
                }),
            Expect {
                stage: Some(Stage::Failed),
                requeue: Some(None),
                scale: Some(None),
                ..Expect::default()
            },
        ),
        (
            "retry annotation outside Failed: removed and ignored",
            given()
                .idle()
                .spec(|s| s.replicas = Some(3))
                .annotate_retry(),
            Expect {
                stage: Some(Stage::Idle),
                remove_retry: Some(true),
                events: Some(&["RetryIgnored"]),
                ..Expect::default()
            },
        ),
        (
            "desired changes while Failed are pending",
            given()
                .failed(OnFailure::Skipped, 10)
                .spec(|s| s.replicas = Some(9)),
            Expect {
                pending: Some(Some(9)),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn paused_freezes_at_the_stage_boundary() {
    run(vec![
        (
            "paused in PreScaling: no hook call, stage kept, pause time recorded",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .spec(|s| s.paused = true),
            Expect {
                stage: Some(Stage::PreScaling),
                hook: Some(None),
                scale: Some(None),
                requeue: Some(None),
                events: Some(&["Paused"]),
                check: Some(|p| assert_eq!(p.status.as_ref().unwrap().paused_since, Some(at(NOW)))),
                ..Expect::default()
            },
        ),
        (
            "paused past the deadline: no failure while paused",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 5000)
                .spec(|s| s.paused = true)
                .status(|s| s.paused_since = Some(at(NOW - 4000))),
            Expect {
                stage: Some(Stage::PreScaling),
                events: Some(&[]),
                ..Expect::default()
            },
        ),
        (
            "resumed: the stage clock is shifted by the paused time, so the deadline is not spent",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 5000)
                .status(|s| s.paused_since = Some(at(NOW - 4990))),
            // 5000s in stage, 4990s of them paused: 10s of stage time used.
            Expect {
                stage: Some(Stage::PreScaling),
                hook: Some(Some(Hook::PreScale)),
                check: Some(|p| {
                    assert_eq!(
                        p.hook
                            .as_ref()
                            .unwrap()
                            .operation
                            .as_ref()
                            .unwrap()
                            .elapsed_in_stage,
                        Duration::from_secs(10)
                    )
                }),
                ..Expect::default()
            },
        ),
        (
            "paused in Scaling with the target ready: no move to PostScaling",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::Scaling, 5)
                .target(target(5))
                .spec(|s| s.paused = true),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(None),
                ..Expect::default()
            },
        ),
        (
            "paused and Failed with the retry annotation: the annotation waits",
            given()
                .failed(OnFailure::Skipped, 5)
                .annotate_retry()
                .spec(|s| s.paused = true),
            Expect {
                stage: Some(Stage::Failed),
                remove_retry: Some(false),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn the_resumed_plan_equals_the_first_written_one() {
    // After a resume the hook call sees the same stage time, so the write that follows a
    // resume is deterministic too: apply the resume plan's status, then decide again.
    let g = given()
        .with_hooks(FailurePolicy::FailClose)
        .in_stage(Stage::PreScaling, 5000)
        .status(|s| s.paused_since = Some(at(NOW - 4990)))
        .result(in_progress("x", 5));
    let plan = g.decide();
    let op = plan.status.as_ref().unwrap().operation.as_ref().unwrap();
    assert_eq!(op.stage_started_at, micro(NOW - 10));
    assert_eq!(plan.status.as_ref().unwrap().paused_since, None);
}

#[test]
fn steady_state_writes_nothing() {
    // Writing the plan's status and deciding again gives no new write: no status churn.
    for g in [
        given().idle(),
        given()
            .with_hooks(FailurePolicy::FailClose)
            .idle()
            .spec(|s| s.replicas = Some(3)),
        given()
            .in_stage(Stage::Scaling, 20)
            .target_at(5, 4, 4, true),
    ] {
        let mut obs = g.0;
        let first = outcome(&obs, None).plan;
        if first.scale_target.is_some() {
            continue;
        }
        obs.scaler.status = first.status.or(obs.scaler.status);
        let second = outcome(&obs, None).plan;
        assert_eq!(second.status, None, "{second:#?}");
        assert!(second.events.is_empty());
    }
}

#[test]
fn status_round_trip_through_json_gives_the_same_plan() {
    // What the API server stores is all there is after a restart.
    let g = given().with_hooks(FailurePolicy::FailClose).idle();
    let plan = g.decide();
    let mut obs = g.0.clone();
    obs.scaler.status = plan.plan.status.clone();
    let stored: Scaler =
        serde_json::from_value(serde_json::to_value(&obs.scaler).unwrap()).unwrap();
    let mut restored = obs.clone();
    restored.scaler = stored;
    assert_eq!(decide(&obs), decide(&restored));
}

/// A scale-down 3 → 1 in `stage` (with the plugin), whose stage started `ago` seconds ago.
fn down_in_stage(g: Given, stage: Stage, ago: i64) -> Given {
    g.spec(|s| s.replicas = Some(1)).status(|s| {
        s.stage = stage;
        s.operation = Some(op(3, 1, NOW - ago, Some(DIGEST)));
        s.plugin = Some(accepted());
    })
}

fn with_finalizer(mut g: Given) -> Given {
    g.0.scaler.metadata.finalizers = Some(vec![hoist_api::FINALIZER.to_owned()]);
    g
}

fn deleted(mut g: Given) -> Given {
    g.0.scaler.metadata.deletion_timestamp = Some(at(NOW - 1));
    g
}

/// A Scaler deleted during a scale-down 3 → 1 with a plugin: Failed (`ScalerDeleted`), its
/// on-failure still due, the finalizer held.
fn deleted_with_on_failure_due() -> Given {
    deleted(with_finalizer(
        down_in_stage(
            given().with_hooks(FailurePolicy::FailClose),
            Stage::PreScaling,
            30,
        )
        .status(|s| {
            s.stage = Stage::Failed;
            s.failure = Some(Failure {
                stage: Stage::PreScaling,
                reason: "ScalerDeleted".into(),
                message: "deleted".into(),
                at: at(NOW),
                on_failure: OnFailure::Pending,
                on_failure_message: None,
            });
        }),
    ))
}

#[test]
fn intent_before_effect_and_one_workload() {
    run(vec![
        (
            "PreScaling but the target already runs `to`: pre-scale is never called again",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .target_at(5, 3, 3, false),
            Expect {
                stage: Some(Stage::Scaling),
                hook: Some(None),
                scale: Some(Some(5)),
                events: Some(&["PreScaleSkipped", "Scaling"]),
                ..Expect::default()
            },
        ),
        (
            "pre-scale Done: the plan records Scaling and writes `to` (the operator writes the status first)",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 40)
                .result(done()),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    assert_eq!(st.operation.as_ref().unwrap().to, 5);
                }),
                ..Expect::default()
            },
        ),
        (
            "spec.targetRef changed during the operation: Failed TargetChanged, nothing written",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::Scaling, 10)
                .spec(|s| s.target_ref.name = "other".into())
                .target_at(3, 3, 3, true),
            Expect {
                stage: Some(Stage::Failed),
                scale: Some(None),
                hook: Some(None),
                events: Some(&["OperationFailed"]),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.reason, "TargetChanged");
                    assert_eq!(f.on_failure, OnFailure::Pending);
                }),
                ..Expect::default()
            },
        ),
        (
            "the target is gone during PreScaling: Failed TargetGone",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 10)
                .target(TargetObservation::Missing {
                    reason: "not found".into(),
                }),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                scale: Some(None),
                condition: Some((conditions::ABLE_TO_SCALE, false, "TargetNotFound")),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.reason, "TargetGone");
                }),
                ..Expect::default()
            },
        ),
        (
            "deleted and created again under the same name: Failed TargetReplaced, never scaled",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::Scaling, 10)
                .target(TargetObservation::Found(TargetScale {
                    spec_replicas: 3,
                    status_replicas: 3,
                    ready_replicas: Some(3),
                    observed_generation_current: true,
                    selector: Some("app=web".into()),
                    uid: Some("another-uid".into()),
                })),
            Expect {
                stage: Some(Stage::Failed),
                scale: Some(None),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.reason, "TargetReplaced");
                    assert!(f.message.contains("another-uid"), "{}", f.message);
                }),
                ..Expect::default()
            },
        ),
        (
            "a new operation records its target with the uid, and an id unique across Scalers",
            {
                let mut g = given().idle();
                g.0.scaler.metadata.uid = Some("1234abcd-0000-0000-0000-000000000000".into());
                g
            },
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!(op.id, format!("1234abcd-{NOW}-3-5"));
                    let t = op.target.as_ref().unwrap();
                    assert_eq!(
                        (t.kind.as_str(), t.name.as_str(), t.uid.as_deref()),
                        ("StatefulSet", "web", Some(TARGET_UID))
                    );
                }),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn in_progress_hooks_are_called_when_due_and_counted() {
    run(vec![
        (
            "first call: the hook's attempt is 1",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 2),
            Expect {
                hook: Some(Some(Hook::PreScale)),
                check: Some(|p| {
                    let op = p.hook.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!((op.call, op.attempt), (1, 1));
                }),
                ..Expect::default()
            },
        ),
        (
            "in-progress after 10s: the due time and the call count are stored",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 2)
                .result(in_progress("s1", 10)),
            Expect {
                stage: Some(Stage::PreScaling),
                requeue: Some(Some(Duration::from_secs(10))),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!(op.hook_calls, 1);
                    assert_eq!(op.next_hook_call_at, Some(at(NOW + 10)));
                    assert_eq!(op.hook_state.as_deref(), Some("s1"));
                }),
                ..Expect::default()
            },
        ),
        (
            "a reconcile before the call is due (our own status write, a watch event) calls nothing",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 2)
                .status(|s| {
                    let op = s.operation.as_mut().unwrap();
                    op.hook_calls = 1;
                    op.next_hook_call_at = Some(at(NOW + 7));
                }),
            Expect {
                hook: Some(None),
                requeue: Some(Some(Duration::from_secs(7))),
                check: Some(|p| {
                    let op = p.status.as_ref().and_then(|s| s.operation.as_ref());
                    assert!(op.is_none_or(|op| op.hook_calls == 1), "no call counted");
                }),
                ..Expect::default()
            },
        ),
        (
            "once due: the second call says attempt 2",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 20)
                .status(|s| {
                    let op = s.operation.as_mut().unwrap();
                    op.hook_calls = 1;
                    op.next_hook_call_at = Some(at(NOW));
                }),
            Expect {
                hook: Some(Some(Hook::PreScale)),
                check: Some(|p| {
                    let op = p.hook.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!(op.call, 2);
                }),
                ..Expect::default()
            },
        ),
        (
            "less than a second of the stage left: StageTimeout, not a call that cannot finish",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 0)
                .status(|s| {
                    // Started 599.75 s ago: 250 ms of the 10 m stage left.
                    s.operation.as_mut().unwrap().stage_started_at =
                        MicroTime(jiff::Timestamp::from_millisecond(NOW * 1000 - 599_750).unwrap());
                }),
            Expect {
                stage: Some(Stage::Failed),
                hook: Some(None),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(f.reason, "StageTimeout");
                }),
                ..Expect::default()
            },
        ),
        (
            "a due time past the stage deadline still fails at the deadline",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 600)
                .status(|s| {
                    s.operation.as_mut().unwrap().next_hook_call_at = Some(at(NOW + 60));
                }),
            Expect {
                stage: Some(Stage::Failed),
                ..Expect::default()
            },
        ),
        (
            "a 10 MiB message is cut before it reaches the status",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 2)
                .result(HookResult::InProgress {
                    state: "s".into(),
                    retry_after: Duration::from_secs(1),
                    message: Some("x".repeat(10 << 20)),
                }),
            Expect {
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    let m = op.hook_message.as_deref().unwrap();
                    assert!(m.len() < MAX_PLUGIN_TEXT + 64, "{}", m.len());
                    assert!(
                        m.ends_with(&format!(
                            "[cut: {} bytes more]",
                            (10 << 20) - MAX_PLUGIN_TEXT
                        )),
                        "{}",
                        &m[m.len() - 40..]
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "a 10 MiB failure reason is cut too",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::PreScaling, 2)
                .result(failed(&"y".repeat(10 << 20))),
            Expect {
                stage: Some(Stage::Failed),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert!(
                        f.message.len() < MAX_PLUGIN_TEXT + 100,
                        "{}",
                        f.message.len()
                    );
                    assert!(
                        p.events
                            .iter()
                            .all(|e| e.message.len() < MAX_PLUGIN_TEXT + 200)
                    );
                }),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn retries_after_the_target_was_written_resume_at_scaling() {
    let scaling_timeout = |g: Given| {
        g.status(|s| {
            s.stage = Stage::Failed;
            s.failure = Some(Failure {
                stage: Stage::Scaling,
                reason: "ScalingTimeout".into(),
                message: "slow".into(),
                at: at(NOW - 5),
                on_failure: OnFailure::Done,
                on_failure_message: None,
            });
        })
    };
    run(vec![
        (
            "retry after ScalingTimeout: same operation, attempt 2, at Scaling (post-scale will run)",
            scaling_timeout(
                given()
                    .with_hooks(FailurePolicy::FailClose)
                    .in_stage(Stage::Scaling, 700)
                    .target_at(5, 5, 5, true),
            )
            .annotate_retry(),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                remove_retry: Some(true),
                events: Some(&["RetryRequested", "OperationResumed", "Scaling"]),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    let op = st.operation.as_ref().unwrap();
                    assert_eq!(
                        (op.attempt, op.id.as_str()),
                        (2, format!("{}-3-5", NOW - 100).as_str())
                    );
                    assert_eq!(st.failure, None);
                }),
                ..Expect::default()
            },
        ),
        (
            "then Scaling sees the target at `to` and enters PostScaling",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .in_stage(Stage::Scaling, 0)
                .status(|s| s.operation.as_mut().unwrap().attempt = 2)
                .target_at(5, 5, 5, true),
            Expect {
                stage: Some(Stage::PostScaling),
                ..Expect::default()
            },
        ),
        (
            "retry after ScalingTimeout on a replaced target: a new operation from Idle",
            scaling_timeout(
                given()
                    .with_hooks(FailurePolicy::FailClose)
                    .in_stage(Stage::Scaling, 700),
            )
            .target(TargetObservation::Found(TargetScale {
                spec_replicas: 3,
                status_replicas: 3,
                ready_replicas: Some(3),
                observed_generation_current: true,
                selector: Some("app=web".into()),
                uid: Some("another-uid".into()),
            }))
            .annotate_retry(),
            Expect {
                stage: Some(Stage::PreScaling),
                events: Some(&["RetryRequested", "OperationStarted"]),
                check: Some(|p| {
                    let op = p.status.as_ref().unwrap().operation.as_ref().unwrap();
                    assert_eq!(op.attempt, 1, "a new operation");
                }),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn the_finalizer_undoes_an_operation_of_a_deleted_scaler() {
    run(vec![
        (
            "starting an operation with a plugin adds the finalizer (before the status write)",
            given().with_hooks(FailurePolicy::FailClose).idle(),
            Expect {
                stage: Some(Stage::PreScaling),
                check: Some(|p| assert_eq!(p.finalizer, Some(FinalizerChange::Add))),
                ..Expect::default()
            },
        ),
        (
            "no plugin: no finalizer",
            given().idle(),
            Expect {
                stage: Some(Stage::Scaling),
                check: Some(|p| assert_eq!(p.finalizer, None)),
                ..Expect::default()
            },
        ),
        (
            "held while in flight: no change",
            with_finalizer(
                given()
                    .with_hooks(FailurePolicy::FailClose)
                    .in_stage(Stage::PreScaling, 2),
            ),
            Expect {
                hook: Some(Some(Hook::PreScale)),
                ..Expect::default()
            },
        ),
        (
            "deleted during PreScaling: Failed ScalerDeleted, on-failure next, finalizer kept",
            deleted(with_finalizer(down_in_stage(
                given().with_hooks(FailurePolicy::FailClose),
                Stage::PreScaling,
                30,
            ))),
            Expect {
                stage: Some(Stage::Failed),
                requeue: Some(Some(Duration::ZERO)),
                check: Some(|p| {
                    let f = p.status.as_ref().unwrap().failure.as_ref().unwrap();
                    assert_eq!(
                        (f.reason.as_str(), f.on_failure),
                        ("ScalerDeleted", OnFailure::Pending)
                    );
                    assert_eq!(p.finalizer, None);
                }),
                ..Expect::default()
            },
        ),
        (
            "deleted and Failed with on-failure due: ask for on-failure",
            deleted_with_on_failure_due(),
            Expect {
                hook: Some(Some(Hook::OnFailure)),
                check: Some(|p| {
                    let call = p.hook.as_ref().unwrap();
                    assert_eq!(call.failure.as_ref().unwrap().reason, "ScalerDeleted");
                }),
                ..Expect::default()
            },
        ),
        (
            "on-failure answered: the marks are released and the finalizer removed",
            deleted_with_on_failure_due().result(done()),
            Expect {
                events: Some(&["OnFailureDone"]),
                check: Some(|p| {
                    assert_eq!(p.finalizer, Some(FinalizerChange::Remove));
                    assert_eq!(
                        p.release_leaving.as_deref(),
                        Some(format!("{}-3-1", NOW - 100).as_str())
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "deleted while Idle with the finalizer left over: removed",
            deleted(with_finalizer(given().idle())),
            Expect {
                check: Some(|p| assert_eq!(p.finalizer, Some(FinalizerChange::Remove))),
                ..Expect::default()
            },
        ),
        (
            "a scale-down that succeeded releases its marks and the finalizer",
            with_finalizer(down_in_stage(
                given().with_hooks(FailurePolicy::FailClose),
                Stage::PostScaling,
                3,
            ))
            .target_at(1, 1, 1, true)
            .result(done()),
            Expect {
                stage: Some(Stage::Idle),
                check: Some(|p| {
                    assert_eq!(p.finalizer, Some(FinalizerChange::Remove));
                    assert!(p.release_leaving.is_some());
                }),
                ..Expect::default()
            },
        ),
    ]);
}

#[test]
fn two_scalers_on_one_workload_only_the_oldest_acts() {
    let conflict = |acting: Option<&str>| {
        Some(TargetConflict {
            others: vec![Rival::Scaler("other".into())],
            acting: acting.map(|a| Rival::Scaler(a.into())),
        })
    };
    run(vec![
        (
            "the newer Scaler starts nothing and says who acts",
            {
                let mut g = given().idle();
                g.0.conflict = conflict(Some("other"));
                g
            },
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                requeue: Some(Some(CONFLICT_POLL)),
                condition: Some((conditions::READY, false, "TargetConflict")),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    let c = conditions::find(&st.conditions, conditions::TARGET_CONFLICT).unwrap();
                    assert_eq!(
                        (c.status.as_str(), c.reason.as_str()),
                        ("True", "SeveralScalers")
                    );
                    assert!(
                        c.message.contains("only the oldest, Scaler other, acts"),
                        "{}",
                        c.message
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "the oldest acts, and says so too",
            {
                let mut g = given().idle();
                g.0.conflict = conflict(None);
                g
            },
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(5)),
                condition: Some((conditions::TARGET_CONFLICT, true, "SeveralScalers")),
                ..Expect::default()
            },
        ),
        (
            "an older HPA aimed at the workload itself: the Scaler starts nothing and says why",
            {
                let mut g = given().idle();
                let hpa = Rival::Hpa {
                    name: "keda-hpa-web".into(),
                    scaled_object: Some("web".into()),
                };
                g.0.conflict = Some(TargetConflict {
                    others: vec![hpa.clone()],
                    acting: Some(hpa),
                });
                g
            },
            Expect {
                stage: Some(Stage::Idle),
                scale: Some(None),
                condition: Some((conditions::READY, false, "TargetConflict")),
                check: Some(|p| {
                    let st = p.status.as_ref().unwrap();
                    let c = conditions::find(&st.conditions, conditions::TARGET_CONFLICT).unwrap();
                    assert_eq!(c.reason, "OtherAutoscaler");
                    assert!(
                        c.message.contains(
                            "HorizontalPodAutoscaler keda-hpa-web (of KEDA ScaledObject web)"
                        ) && c.message.contains("aim it at this Scaler"),
                        "{}",
                        c.message
                    );
                }),
                ..Expect::default()
            },
        ),
        (
            "alone: no conflict",
            given().idle(),
            Expect {
                condition: Some((conditions::TARGET_CONFLICT, false, "NoConflict")),
                ..Expect::default()
            },
        ),
    ]);
}
