//! Invariants over random event sequences, run through a small simulated world: the operator's
//! two-phase loop, a target that catches up when told, a plugin whose outcomes the sequence
//! chooses, crashes between the status write and the /scale write, reconciles on a stale copy
//! of the Scaler (whose writes conflict), pauses, retries, and time.
#![allow(clippy::struct_excessive_bools)] // the simulated world's switches

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use hoist_api::{FailurePolicy, RETRY_ANNOTATION, Scaler, ScalerStatus, Stage};
use proptest::prelude::*;

use super::tests::{DIGEST, NOW, digest, hooks, spec};
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
    /// The next reconcile dies after the status write, before the /scale write.
    Crash,
    /// A reconcile on the copy of the Scaler from before the last status write (a watch that
    /// lags): its hook call happens, its writes conflict and are dropped.
    Stale,
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
        2 => Just(Ev::Stale),
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
    /// The Scaler before the last status write.
    previous: Option<Scaler>,
    /// Operation ids for which pre-scale returned Done.
    pre_done: HashSet<String>,
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
            previous: None,
            pre_done: HashSet::new(),
            fail_open,
            hooked,
        }
    }

    fn observation(&self, scaler: &Scaler) -> Observation {
        Observation {
            scaler: scaler.clone(),
            target: TargetObservation::Found(TargetScale {
                spec_replicas: self.target_spec,
                status_replicas: self.target_status,
                ready_replicas: Some(self.target_status),
                observed_generation_current: self.target_generation_current,
                selector: Some("app=web".into()),
                uid: Some(super::tests::TARGET_UID.into()),
            }),
            plugin: if self.hooked {
                PluginAvailability::Ready {
                    digest: digest(DIGEST),
                }
            } else {
                PluginAvailability::NotConfigured
            },
            conflict: None,
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
                    self.pre_done.insert(op.id.clone());
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

    /// One reconcile: the operator's two-phase loop, with every invariant checked. `stale`
    /// decides on the Scaler as it was before the last status write.
    #[allow(
        clippy::too_many_lines,
        reason = "one reconcile with every invariant, read top to bottom"
    )]
    fn reconcile_on(&mut self, stale: bool) -> Result<Plan, TestCaseError> {
        let scaler = if stale {
            self.previous.clone().unwrap_or_else(|| self.scaler.clone())
        } else {
            self.scaler.clone()
        };
        let obs = self.observation(&scaler);
        let first = decide(&obs);

        // Replay: the same observation gives the same decision...
        prop_assert_eq!(&first, &decide(&obs));
        // ...and so does the observation after its status went through the API server (JSON),
        // which is all a restarted operator has.
        let mut stored = obs.clone();
        stored.scaler = serde_json::from_value(serde_json::to_value(&obs.scaler).unwrap()).unwrap();
        prop_assert_eq!(&first, &decide(&stored));

        let plan = match first {
            Decision::Act(plan) => plan,
            Decision::Call(call) => {
                let status = obs.scaler.status.clone().unwrap_or_default();
                if call.hook != Hook::ValidateConfig {
                    let op = status.operation.clone();
                    prop_assert!(
                        op.as_ref()
                            .is_some_and(|op| Some(op.plugin_digest.as_deref())
                                == Some(Some(call.plugin_digest.as_str()))),
                        "hooks use the operation's digest"
                    );
                }
                if call.hook == Hook::PreScale
                    && let Some(op) = &call.operation
                {
                    // The property the whole protocol exists for: once the target was written
                    // for an operation, no pre-scale call can choose its leaving pods again.
                    prop_assert!(
                        op.from == op.to || self.target_spec != op.to,
                        "pre-scale called for {} → {} after the target was written (stale: {})",
                        op.from,
                        op.to,
                        stale
                    );
                }
                let result = self.hook_outcome(&call);
                let plan = decide_after(&obs, result.clone());
                prop_assert_eq!(&plan, &decide_after(&obs, result));
                plan
            }
        };
        if stale && plan.status.is_some() {
            // The write carries the stale resourceVersion: the API server refuses it, and
            // nothing after it in the plan happens.
            return Ok(plan);
        }
        let status_before = self.status();
        let after = plan.status.clone().unwrap_or_else(|| status_before.clone());
        // The target is only ever written with the frozen `to`, after pre-scale said Done, by
        // a plan whose status (written first) records Scaling.
        if let Some(n) = plan.scale_target {
            prop_assert_eq!(
                after.stage,
                Stage::Scaling,
                "scale write without Scaling recorded"
            );
            prop_assert!(
                plan.status.is_some(),
                "scale write without a status write first"
            );
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
                    self.pre_done.contains(&op.id),
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

        // Act, in the documented order; a crash loses everything after the status write.
        if let Some(status) = &plan.status {
            self.previous = Some(self.scaler.clone());
            self.scaler.status = Some(status.clone());
        }
        if std::mem::take(&mut self.crash_next) {
            return Ok(plan);
        }
        if let Some(n) = plan.scale_target
            && n != self.target_spec
        {
            self.target_spec = n;
            self.target_generation_current = false;
        }
        if plan.remove_retry_annotation {
            self.scaler.metadata.annotations = None;
        }
        Ok(plan)
    }

    fn reconcile(&mut self) -> Result<Plan, TestCaseError> {
        self.reconcile_on(false)
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
            Ev::Stale => {
                self.reconcile_on(true)?;
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
                && plan.requeue_after.is_none();
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
