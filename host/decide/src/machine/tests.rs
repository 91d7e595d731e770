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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

pub(super) const NOW: i64 = 1_700_000_000;
pub(super) const DIGEST: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OTHER_DIGEST: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(super) fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(secs).unwrap())
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
        plugin: PluginRef {
            config_map: "drain".into(),
            ..PluginRef::default()
        },
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
struct Given(Observation);

fn given() -> Given {
    Given(Observation {
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
        hook_result: None,
        now: jiff::Timestamp::from_second(NOW).unwrap(),
    })
}

/// A settled target at `n` replicas.
pub(super) fn target(n: i32) -> TargetObservation {
    TargetObservation::Found(TargetScale {
        spec_replicas: n,
        status_replicas: n,
        ready_replicas: Some(n),
        observed_generation_current: true,
        selector: Some("app=web".into()),
    })
}

pub(super) fn op(from: i32, to: i32, stage_started: i64, digest: Option<&str>) -> Operation {
    Operation {
        id: format!("{}-{from}-{to}", NOW - 100),
        from,
        to,
        started_at: at(NOW - 100),
        stage_started_at: at(stage_started),
        plugin_digest: digest.map(str::to_owned),
        hook_state: None,
        hook_message: None,
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
            digest: DIGEST.into(),
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
        }))
    }
    fn plugin(mut self, p: PluginAvailability) -> Self {
        self.0.plugin = p;
        self
    }
    fn result(mut self, r: HookResult) -> Self {
        self.0.hook_result = Some(r);
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
    check: Option<fn(&Plan)>,
}

fn stage_after(obs: &Observation, plan: &Plan) -> Stage {
    plan.status
        .as_ref()
        .or(obs.scaler.status.as_ref())
        .map_or(Stage::Idle, |s| s.stage)
}

fn run(table: Vec<(&str, Given, Expect)>) {
    for (name, Given(obs), expect) in table {
        let plan = decide(&obs);
        let ctx = || format!("{name}\nplan: {plan:#?}");
        if plan.hook.is_some() {
            assert!(
                !plan.has_writes() && plan.requeue_after.is_none(),
                "a hook plan carries nothing else: {}",
                ctx()
            );
        }
        assert_eq!(plan, decide(&obs), "deterministic: {name}");
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
                check: Some(|p| assert_eq!(p.status.as_ref().unwrap().replicas, Some(3))),
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
                events: Some(&["OperationStarted", "Scaling"]),
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
                let plan = decide(&given().spec(|s| s.replicas = Some(3)).idle().0);
                *s = plan.status.unwrap();
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
            "adopted count outside the bounds is clamped through an operation, not silently",
            given()
                .spec(|s| s.replicas = None)
                .target(target(20))
                .idle(),
            Expect {
                stage: Some(Stage::Scaling),
                scale: Some(Some(10)),
                events: Some(&["OperationStarted", "Scaling"]),
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
                events: Some(&["HooksSkipped", "OperationStarted", "Scaling"]),
                condition: Some((conditions::HOOKS_READY, false, "PluginInvalid")),
                ..Expect::default()
            },
        ),
        (
            "new plugin digest: validate-config first, nothing written",
            given()
                .with_hooks(FailurePolicy::FailClose)
                .idle()
                .plugin(PluginAvailability::Ready {
                    digest: OTHER_DIGEST.into(),
                }),
            Expect {
                hook: Some(Some(Hook::ValidateConfig)),
                check: Some(|p| assert_eq!(p.hook.as_ref().unwrap().plugin_digest, OTHER_DIGEST)),
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
                    digest: OTHER_DIGEST.into(),
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
                    digest: OTHER_DIGEST.into(),
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
                    assert_eq!(call.plugin_digest, DIGEST);
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
                    digest: OTHER_DIGEST.into(),
                }),
            Expect {
                check: Some(|p| assert_eq!(p.hook.as_ref().unwrap().plugin_digest, DIGEST)),
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
                events: Some(&["Scaled", "OperationSucceeded"]),
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
                    digest: OTHER_DIGEST.into(),
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
                events: Some(&["RetryScheduled", "OperationStarted", "Scaling"]),
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
    let plan = decide(&g.0);
    let op = plan.status.as_ref().unwrap().operation.as_ref().unwrap();
    assert_eq!(op.stage_started_at, at(NOW - 10));
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
        let first = decide(&obs);
        if first.scale_target.is_some() {
            continue;
        }
        obs.scaler.status = first.status.or(obs.scaler.status);
        let second = decide(&obs);
        assert_eq!(second.status, None, "{second:#?}");
        assert!(second.events.is_empty());
    }
}

#[test]
fn status_round_trip_through_json_gives_the_same_plan() {
    // What the API server stores is all there is after a restart.
    let g = given().with_hooks(FailurePolicy::FailClose).idle();
    let plan = decide(&g.0);
    let mut obs = g.0.clone();
    obs.scaler.status = plan.status.clone();
    let stored: Scaler =
        serde_json::from_value(serde_json::to_value(&obs.scaler).unwrap()).unwrap();
    let mut restored = obs.clone();
    restored.scaler = stored;
    assert_eq!(decide(&obs), decide(&restored));
}
