//! Runs the hook a plan asks for: loads the operation's plugin, builds the hook context from
//! the cluster (its pods chosen by [`crate::leaving_pods`]), calls the plugin through the
//! sandbox's [`HookRunner`], counts the call in the metrics, and reports the result back to the
//! state machine as a [`HookResult`].

use std::sync::Arc;
use std::time::Instant;

use hoist_api::{Scaler, Stage};
use hoist_decide::{HookCall, HookResult};
use hoist_sandbox::{CallIdentity, FailedStage, FailureInfo, HookContext, HookOutcome, HookRunner};
use hoist_types::{Direction, Hook};
use kube::ResourceExt;

use crate::act::Actor;
use crate::error::OperatorError;
use crate::fence::Fence;
use crate::hook_access::HookAccess;
use crate::leaving_pods::{Choosing, PodPlan, plan_pods};
use crate::metrics::{HookLabels, HookLatencyLabels, Metrics};
use crate::plugins::PluginRegistry;
use crate::policy::Admission;
use crate::target::Targets;

/// Everything a hook call needs besides the plan.
#[derive(Clone)]
pub struct HookEnv {
    pub runner: Arc<dyn HookRunner>,
    pub plugins: PluginRegistry,
    /// Where calls may connect, their secrets and TLS, as the cluster policies allow.
    pub access: HookAccess,
    pub targets: Targets,
    pub metrics: Arc<Metrics>,
    pub fence: Fence,
}

impl std::fmt::Debug for HookEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookEnv").finish_non_exhaustive()
    }
}

fn failed_stage(stage: Stage) -> FailedStage {
    match stage {
        Stage::Scaling => FailedStage::Scaling,
        Stage::PostScaling => FailedStage::PostScaling,
        _ => FailedStage::PreScaling,
    }
}

impl HookEnv {
    /// Runs `call` for `scaler` and reports what came of it: a problem of the plugin or the
    /// call is a `HookResult::Failed` the state machine turns into a Failed stage (or
    /// fail-open); reading or marking the pods, or the lease, failing before the call is an
    /// error, and the reconcile is retried.
    pub async fn run(
        &self,
        scaler: &Scaler,
        call: &HookCall,
        selector: Option<&str>,
        actor: &Actor,
    ) -> Result<HookResult, OperatorError> {
        let hook = call.hook;
        let started = Instant::now();
        let result = self.run_inner(scaler, call, selector, actor).await;
        let outcome = match &result {
            Ok(HookResult::Done { .. }) => "done",
            Ok(HookResult::InProgress { .. }) => "in_progress",
            Ok(HookResult::Failed { .. }) => "failed",
            // The call did not happen: the API server or the lease stopped it first.
            Err(_) => return result,
        };
        let plugin = call.plugin_digest.short().to_owned();
        self.metrics
            .hook_calls
            .get_or_create(&HookLabels {
                plugin: plugin.clone(),
                hook: hook.as_str(),
                outcome,
            })
            .inc();
        self.metrics
            .hook_duration
            .get_or_create(&HookLatencyLabels {
                plugin,
                hook: hook.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());
        result
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one linear sequence: load, context, allow-list, call, map"
    )]
    async fn run_inner(
        &self,
        scaler: &Scaler,
        call: &HookCall,
        selector: Option<&str>,
        actor: &Actor,
    ) -> Result<HookResult, OperatorError> {
        let Some(hooks) = &scaler.spec.hooks else {
            return Ok(HookResult::Failed {
                reason: "spec.hooks was removed while the operation needed a hook".into(),
            });
        };
        let namespace = scaler.namespace().unwrap_or_default();
        let plugin = match self
            .plugins
            .ensure_loaded(&namespace, &hooks.plugin, &call.plugin_digest)
            .await
        {
            Ok(p) => p,
            Err(reason) => {
                return Ok(HookResult::Failed {
                    reason: format!("PluginNotLoaded: {reason}"),
                });
            }
        };
        // Checked at every call, not only when the operation started: an admin who withdraws a
        // plugin stops it mid-operation too.
        match self
            .access
            .policies()
            .admission(&namespace, plugin.digest())
        {
            Admission::Admitted { .. } => {}
            Admission::Refused(reason) => {
                return Ok(HookResult::Failed {
                    reason: format!("PluginNotAdmitted: {reason}"),
                });
            }
            Admission::NotListedYet => {
                return Err(OperatorError::PoliciesNotListed);
            }
        }
        let config = hooks
            .config
            .as_ref()
            .map_or_else(|| "{}".to_string(), ToString::to_string);
        let op = call.operation.as_ref();
        let identity = CallIdentity {
            namespace: namespace.clone(),
            scaler: scaler.name_any(),
            operation: op.map(|o| o.id.clone()).unwrap_or_default(),
            attempt: op.map_or(0, |o| o.attempt),
        };
        self.fence.check(scaler, "calling a hook")?;
        let hook = call.hook;
        if hook == Hook::ValidateConfig {
            let options = match self
                .access
                .call_options(scaler, hooks, &[], call.timeout, identity)
                .await?
            {
                Ok(options) => options,
                Err(reason) => {
                    return Ok(HookResult::Failed {
                        reason: format!("HookAccess: {reason}"),
                    });
                }
            };
            return Ok(
                match self
                    .runner
                    .validate_config(&plugin, &config, &options)
                    .await
                {
                    Ok(()) => HookResult::Done { message: None },
                    Err(e) => HookResult::Failed {
                        reason: format!("{}: {e}", e.reason()),
                    },
                },
            );
        }
        let Some(op) = op else {
            return Ok(HookResult::Failed {
                reason: format!("internal: {hook} asked for without an operation"),
            });
        };
        // The operation's own workload: after `spec.targetRef` changed (the operation failed,
        // on-failure undoes it), its pods are found by its own selector, not the new target's.
        let target = op.target.clone();
        let own_selector = if target == scaler.spec.target_ref {
            selector.map(str::to_owned)
        } else {
            // A read that fails is retried (an error), never taken for "no pods".
            self.targets
                .observe(&namespace, &target)
                .await?
                .and_then(|t| t.selector)
        };
        let pods = match own_selector.as_deref() {
            Some(sel) => self.targets.pods(&namespace, sel).await?,
            None => Vec::new(),
        };
        let choosing = if hook == Hook::PreScale {
            Choosing::Complete
        } else {
            Choosing::Keep
        };
        let PodPlan {
            removed,
            added,
            all,
            to_mark,
        } = plan_pods(&target, &pods, (op.from, op.to), &op.id, choosing);
        // A mark that fails is retried with the whole call (an error, not the hook's failure):
        // the pods chosen stay the chosen ones, marked or about to be.
        if target.honours_deletion_cost() && op.direction == Direction::Down {
            actor.mark_leaving(scaler, &to_mark, &op.id).await?;
        }
        let options = match self
            .access
            .call_options(scaler, hooks, &all, call.timeout, identity)
            .await?
        {
            Ok(options) => options,
            Err(reason) => {
                return Ok(HookResult::Failed {
                    reason: format!("HookAccess: {reason}"),
                });
            }
        };
        let ctx = HookContext {
            namespace,
            scaler: scaler.name_any(),
            target: hoist_sandbox::TargetRef {
                api_version: target.api_version,
                kind: target.kind,
                name: target.name,
            },
            operation_id: op.id.clone(),
            from_replicas: op.from.unsigned_abs(),
            to_replicas: op.to.unsigned_abs(),
            direction: op.direction,
            pods_removed: removed,
            pods_added: added,
            all_pods: all,
            config,
            saved_state: op.saved_state.clone(),
            attempt: op.call,
            elapsed_in_stage: op.elapsed_in_stage,
        };
        let outcome = match hook {
            Hook::PreScale => self.runner.pre_scale(&plugin, &ctx, &options).await,
            Hook::PostScale => self.runner.post_scale(&plugin, &ctx, &options).await,
            // ValidateConfig returned above; only OnFailure reaches this arm.
            Hook::OnFailure | Hook::ValidateConfig => {
                let failure = call.failure.as_ref().map_or_else(
                    || FailureInfo {
                        stage: FailedStage::PreScaling,
                        reason: "unknown".into(),
                    },
                    |f| FailureInfo {
                        stage: failed_stage(f.stage),
                        reason: f.reason.clone(),
                    },
                );
                self.runner
                    .on_failure(&plugin, &ctx, &failure, &options)
                    .await
                    .map(|()| HookOutcome::Done {
                        message: String::new(),
                    })
            }
        };
        Ok(match outcome {
            Ok(HookOutcome::Done { message }) => HookResult::Done {
                message: non_empty(message),
            },
            Ok(HookOutcome::InProgress {
                state,
                retry_after,
                message,
            }) => HookResult::InProgress {
                state,
                retry_after,
                message: non_empty(message),
            },
            Err(e) => HookResult::Failed {
                reason: format!("{}: {e}", e.reason()),
            },
        })
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}
