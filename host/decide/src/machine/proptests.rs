//! Invariants over random event sequences, run through a small simulated world: the operator's
//! two-phase loop, a target that catches up when told, a plugin whose outcomes the sequence
//! chooses, crashes between the /scale write and the status write, pauses, retries, and time.
#![allow(clippy::struct_excessive_bools)] // the simulated world's switches

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hoist_api::{FailurePolicy, RETRY_ANNOTATION, Scaler, ScalerStatus, Stage};
use proptest::prelude::*;

use super::tests::{DIGEST, NOW, hooks, spec};
use super::*;

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Done,
    InProgress,
    Fail,
}

#[derive(Clone, Debug)]
enum Ev {
    /// Someone writes spec.replicas (HPA, person); may be outside the bounds.
    Desire(i32),
    /// Time passes.
    Advance(u64),
    /// The target's controller catches up with its spec.
    TargetCatchUp,
    /// The next hook calls return this.
    Hooks(Outcome),
    /// The next reconcile dies after the /scale write, before the status write.
    Crash,
    /// A person sets hoist.dev/retry=true.
    Retry,
    /// spec.paused.
    Pause(bool),
    /// A reconcile.
    Reconcile,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        3 => (-2i32..14).prop_map(Ev::Desire),
        3 => prop_oneof![Just(1u64), Just(5), Just(30), Just(200), Just(700)].prop_map(Ev::Advance),
        3 => Just(Ev::TargetCatchUp),
        2 => prop_oneof![Just(Outcome::Done), Just(Outcome::InProgress), Just(Outcome::Fail)].prop_map(Ev::Hooks),
        1 => Just(Ev::Crash),
        1 => Just(Ev::Retry),
        1 => any::<bool>().prop_map(Ev::Pause),
        8 => Just(Ev::Reconcile),
    ]
}

struct Sim {
    scaler: Scaler,
    target_spec: i32,
    target_status: i32,
    target_generation_current: bool,
    now: i64,
    outcome: Outcome,
    crash_next: bool,
    /// (operation id, attempt) for which pre-scale returned Done.
    pre_done: HashSet<(String, u32)>,
    fail_open: bool,
    hooked: bool,
}

impl Sim {
    fn new(hooked: bool, fail_open: bool) -> Self {
        let mut spec = spec();
        spec.replicas = Some(3);
        if hooked {
            spec.hooks = Some(hooks(if fail_open {
                FailurePolicy::FailOpen
            } else {
                FailurePolicy::FailClose
            }));
        }
        Self {
            scaler: Scaler {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some("web".into()),
                    generation: Some(1),
                    ..Default::default()
                },
                spec,
                status: None,
            },
            target_spec: 3,
            target_status: 3,
            target_generation_current: true,
            now: NOW,
            outcome: Outcome::Done,
            crash_next: false,
            pre_done: HashSet::new(),
            fail_open,
            hooked,
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            scaler: self.scaler.clone(),
            target: TargetObservation::Found(TargetScale {
                spec_replicas: self.target_spec,
                status_replicas: self.target_status,
                ready_replicas: Some(self.target_status),
                observed_generation_current: self.target_generation_current,
                selector: Some("app=web".into()),
            }),
            plugin: if self.hooked {
                PluginAvailability::Ready {
                    digest: DIGEST.into(),
                }
            } else {
                PluginAvailability::NotConfigured
            },
            hook_result: None,
            now: jiff::Timestamp::from_second(self.now).unwrap(),
        }
    }

    fn status(&self) -> ScalerStatus {
        self.scaler.status.clone().unwrap_or_default()
    }

    fn hook_outcome(&mut self, call: &HookCall) -> HookResult {
        if call.hook == Hook::ValidateConfig {
            return HookResult::Done { message: None };
        }
        match self.outcome {
            Outcome::Done => {
                if call.hook == Hook::PreScale
                    && let Some(op) = &call.operation
                {
                    self.pre_done.insert((op.id.clone(), op.attempt));
                }
                HookResult::Done { message: None }
            }
            Outcome::InProgress => HookResult::InProgress {
                state: format!("t{}", self.now),
                retry_after: Duration::from_secs(if self.now % 2 == 0 { 10 } else { 700 }),
                message: None,
            },
            Outcome::Fail => HookResult::Failed {
                reason: "injected".into(),
            },
        }
    }

    /// One reconcile: the operator's two-phase loop, with every invariant checked.
    fn reconcile(&mut self) -> Result<Plan, TestCaseError> {
        let obs = self.observation();
        let mut plan = decide(&obs);

        // Replay: the same observation gives the same plan...
        prop_assert_eq!(&plan, &decide(&obs));
        // ...and so does the observation after its status went through the API server (JSON),
        // which is all a restarted operator has.
        let mut stored = obs.clone();
        stored.scaler = serde_json::from_value(serde_json::to_value(&obs.scaler).unwrap()).unwrap();
        prop_assert_eq!(&plan, &decide(&stored));

        if let Some(call) = plan.hook.clone() {
            prop_assert!(
                !plan.has_writes() && plan.requeue_after.is_none(),
                "a hook plan writes nothing"
            );
            if call.hook != Hook::ValidateConfig {
                let op = self.status().operation;
                prop_assert!(
                    op.is_some_and(|op| Some(op.plugin_digest.as_deref())
                        == Some(Some(call.plugin_digest.as_str()))),
                    "hooks use the operation's digest"
                );
            }
            let result = self.hook_outcome(&call);
            let second = Observation {
                hook_result: Some(result),
                ..obs.clone()
            };
            plan = decide(&second);
            prop_assert!(
                plan.hook.is_none(),
                "phase 2 never asks for another hook: {:?}",
                plan.hook
            );
            prop_assert_eq!(&plan, &decide(&second));
        }

        let after = plan.status.clone().unwrap_or_else(|| self.status());
        // The target is only ever written with the frozen `to`, after pre-scale said Done.
        if let Some(n) = plan.scale_target {
            let op = after.operation.as_ref();
            prop_assert!(
                op.is_some_and(|op| op.to == n),
                "scale write {} is not the operation's to: {:?}",
                n,
                op
            );
            let op = op.unwrap();
            prop_assert_eq!(
                n,
                self.scaler.spec.clamp(n),
                "the written count is within the bounds"
            );
            if op.plugin_digest.is_some() && !self.fail_open {
                prop_assert!(
                    self.pre_done.contains(&(op.id.clone(), op.attempt)),
                    "target written before pre-scale was done for {:?}",
                    op
                );
            }
        }
        // Every in-flight stage has a deadline, and the plan looks again no later than it.
        if after.stage.in_flight() && !self.scaler.spec.paused {
            let op = after.operation.as_ref().unwrap();
            let t = self.scaler.spec.effective_stage_timeouts();
            let limit = match after.stage {
                Stage::PreScaling => t.pre_scaling(),
                Stage::Scaling => t.scaling(),
                _ => t.post_scaling(),
            };
            let deadline =
                op.stage_started_at.0.as_second() + i64::try_from(limit.get().as_secs()).unwrap();
            let requeue = plan.requeue_after;
            prop_assert!(
                requeue.is_some(),
                "in-flight stage {} without a requeue",
                after.stage
            );
            let at = self.now + i64::try_from(requeue.unwrap().as_secs()).unwrap();
            prop_assert!(
                at <= deadline.max(self.now),
                "requeue at {} after the {} deadline {}",
                at,
                after.stage,
                deadline
            );
        }
        // Pending is never the operation's own target.
        if let (Some(op), Some(p)) = (&after.operation, after.pending_replicas) {
            prop_assert_ne!(op.to, p);
        }

        // Act, in the documented order; a crash loses everything after the /scale write.
        if let Some(n) = plan.scale_target
            && n != self.target_spec
        {
            self.target_spec = n;
            self.target_generation_current = false;
        }
        if std::mem::take(&mut self.crash_next) {
            return Ok(plan);
        }
        if let Some(status) = &plan.status {
            self.scaler.status = Some(status.clone());
        }
        if plan.remove_retry_annotation {
            self.scaler.metadata.annotations = None;
        }
        Ok(plan)
    }

    fn apply(&mut self, ev: &Ev) -> Result<(), TestCaseError> {
        match ev {
            Ev::Desire(n) => {
                self.scaler.spec.replicas = Some((*n).max(0));
                self.scaler.metadata.generation = self.scaler.metadata.generation.map(|g| g + 1);
            }
            Ev::Advance(s) => self.now += i64::try_from(*s).unwrap(),
            Ev::TargetCatchUp => {
                self.target_status = self.target_spec;
                self.target_generation_current = true;
            }
            Ev::Hooks(o) => self.outcome = *o,
            Ev::Crash => self.crash_next = true,
            Ev::Retry => {
                self.scaler.metadata.annotations = Some(BTreeMap::from([(
                    RETRY_ANNOTATION.to_owned(),
                    "true".to_owned(),
                )]));
            }
            Ev::Pause(p) => self.scaler.spec.paused = *p,
            Ev::Reconcile => {
                self.reconcile()?;
            }
        }
        Ok(())
    }

    /// Let the world settle with cooperative hooks and target; retry when Failed.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        self.scaler.spec.paused = false;
        self.outcome = Outcome::Done;
        self.crash_next = false;
        for _ in 0..60 {
            if self.status().stage == Stage::Failed {
                self.apply(&Ev::Retry)?;
            }
            let plan = self.reconcile()?;
            self.apply(&Ev::TargetCatchUp)?;
            let quiet = plan.status.is_none()
                && plan.scale_target.is_none()
                && plan.requeue_after.is_none()
                && plan.hook.is_none();
            if quiet && self.status().stage == Stage::Idle {
                return Ok(());
            }
            self.now += i64::try_from(
                plan.requeue_after
                    .unwrap_or(Duration::from_secs(1))
                    .as_secs()
                    .max(1),
            )
            .unwrap();
        }
        Err(TestCaseError::fail(format!(
            "did not settle: {:#?}",
            self.status()
        )))
    }
}

fn run(events: &[Ev], hooked: bool, fail_open: bool) -> Result<(), TestCaseError> {
    let mut sim = Sim::new(hooked, fail_open);
    for ev in events {
        sim.apply(ev)?;
    }
    sim.settle()?;
    // No desired value is lost: the last one (clamped) is what the target runs.
    let want = sim.scaler.spec.clamp(sim.scaler.spec.replicas.unwrap_or(3));
    prop_assert_eq!(
        sim.target_spec,
        want,
        "target runs {} but the last desired value is {}",
        sim.target_spec,
        want
    );
    prop_assert_eq!(sim.status().pending_replicas, None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_with_a_fail_close_plugin(events in prop::collection::vec(ev(), 0..80)) {
        run(&events, true, false)?;
    }

    #[test]
    fn invariants_hold_with_a_fail_open_plugin(events in prop::collection::vec(ev(), 0..80)) {
        run(&events, true, true)?;
    }

    #[test]
    fn invariants_hold_without_hooks(events in prop::collection::vec(ev(), 0..80)) {
        run(&events, false, false)?;
    }
}
