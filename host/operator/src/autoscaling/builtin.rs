//! `builtin` mode: hoist computes `spec.replicas` itself on a tick (`decisionInterval`).
//!
//! Each due tick reads every metric (`crate::metric_source`), feeds the pure decision
//! (`hoist_decide::modes::builtin::tick`) and, when the recommendation differs from
//! `spec.replicas`, writes it through the **Scaler's own /scale subresource**, as any
//! autoscaler would — the state machine then runs the hooks for the change.
//!
//! The per-Scaler state (the algorithm's windows, the last good value of each metric, the last
//! tick) lives in this process's memory, keyed by the Scaler's uid. It is not persisted: after a
//! restart it is rebuilt from new readings (the algorithms do not scale down before a full
//! window of fresh samples). With several operator replicas only the leader ticks.
//!
//! Zero replicas: a Prometheus metric is read at zero too, so demand above zero scales from 0
//! to at least 1. A pods metric cannot be read without pods; at zero it counts as no demand (a
//! Scaler with only pods metrics stays at zero — add a Prometheus metric to wake it). When
//! replicas are above zero but no pod is ready yet, a pods metric counts as failed, so its last
//! value is held rather than read as zero demand.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use hoist_api::Scaler;
use hoist_api::autoscaling::BuiltinAutoscaling;
use hoist_decide::TargetObservation;
use hoist_decide::autoscale::{DEFAULT_MAX_HOLD, Timestamp};
use hoist_decide::modes::ModeReport;
use hoist_decide::modes::builtin::{Memory, Reading, TickInput, tick};
use kube::ResourceExt;

use crate::act::Actor;
use crate::hook_access::{HookAccess, OperatorEgress};
use crate::metric_source::{self, MetricsClient, PodTarget};
use crate::target::Targets;
use hoist_decide::Observation;

/// The builtin autoscaler of every Scaler in `builtin` mode.
#[derive(Debug)]
pub struct Builtin {
    metrics: Option<MetricsClient>,
    /// The cluster policies Prometheus addresses are checked against; `None` checks nothing
    /// (tests of the autoscaler alone).
    access: Option<HookAccess>,
    memories: Mutex<HashMap<String, Memory>>,
}

/// What one builtin step did.
#[derive(Debug)]
pub struct Step {
    pub report: ModeReport,
    /// When the next tick is due.
    pub requeue: Duration,
    /// `spec.replicas` was written: the Scaler changed, skip this round's status write.
    pub wrote: bool,
}

impl Builtin {
    pub(crate) fn new(access: Option<HookAccess>) -> Self {
        let metrics = MetricsClient::new(MetricsClient::DEFAULT_TIMEOUT)
            .map_err(|e| tracing::error!(error = %e, "the builtin autoscaler cannot read metrics"))
            .ok();
        Self {
            metrics,
            access,
            memories: Mutex::new(HashMap::new()),
        }
    }

    /// Forget the memory of a Scaler (it left builtin mode or was deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.memories.lock() {
            m.remove(uid);
        }
    }

    /// Keeps only the memories of the Scalers whose uid is in `live`.
    pub fn retain(&self, live: &HashSet<String>) {
        if let Ok(mut m) = self.memories.lock() {
            m.retain(|uid, _| live.contains(uid));
        }
    }

    pub async fn step(
        &self,
        actor: &Actor,
        targets: &Targets,
        scaler: &Scaler,
        builtin: &BuiltinAutoscaling,
        observed: &Observation,
    ) -> Step {
        let uid = scaler.uid().unwrap_or_default();
        let now = Timestamp::from_unix_millis(observed.now.as_millisecond());
        let interval = builtin.effective_decision_interval().get();
        let mut memory = self
            .memories
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&uid))
            .unwrap_or_default();
        let report_of = |m: &Memory| {
            m.last_report()
                .cloned()
                .map_or(ModeReport::BuiltinStarting, ModeReport::Builtin)
        };
        let (report, requeue, wrote) = if let Some(wait) = memory.due_in(builtin, now) {
            (report_of(&memory), wait, false)
        } else if let TargetObservation::Found(target) = &observed.target {
            let current = scaler.spec.replicas.unwrap_or(target.spec_replicas);
            let ready = target.ready_replicas.unwrap_or(target.status_replicas);
            let readings = self.read(targets, scaler, builtin, observed, current).await;
            let out = tick(
                &mut memory,
                &TickInput {
                    spec: &scaler.spec,
                    builtin,
                    now,
                    current_replicas: current,
                    ready_replicas: ready,
                    readings: &readings,
                    max_hold: DEFAULT_MAX_HOLD,
                },
            );
            let wrote = match out.write {
                Some(n) => actor.write_desired(scaler, n).await,
                None => false,
            };
            (ModeReport::Builtin(out.report), interval, wrote)
        } else {
            // The target cannot be read: no tick; the state machine's conditions say why.
            (report_of(&memory), interval, false)
        };
        if let Ok(mut m) = self.memories.lock() {
            m.insert(uid, memory);
        }
        Step {
            report,
            requeue,
            wrote,
        }
    }

    async fn read(
        &self,
        targets: &Targets,
        scaler: &Scaler,
        builtin: &BuiltinAutoscaling,
        observed: &Observation,
        current: i32,
    ) -> Vec<Reading> {
        let who = super::who(scaler);
        let Some(client) = &self.metrics else {
            return vec![
                Err("the metrics HTTP client could not be built".into());
                builtin.metrics.len()
            ];
        };
        let egress = self
            .access
            .as_ref()
            .map(|a| OperatorEgress::for_namespace(a, &scaler.namespace().unwrap_or_default()));
        let needs_pods = builtin.metrics.iter().any(|m| m.pods.is_some());
        let pods: Result<Vec<PodTarget>, String> =
            match (&crate::observe::pod_selector(observed), needs_pods) {
                (_, false) => Ok(Vec::new()),
                (None, true) => Err("the target reports no pod selector".into()),
                (Some(selector), true) => targets
                    .pods(&scaler.namespace().unwrap_or_default(), selector)
                    .await
                    .map(|ps| {
                        ps.iter()
                            .filter(|p| p.metadata.deletion_timestamp.is_none())
                            .filter_map(PodTarget::from_pod)
                            .collect()
                    })
                    .map_err(|e| e.to_string()),
            };
        let mut readings = Vec::with_capacity(builtin.metrics.len());
        for (index, metric) in builtin.metrics.iter().enumerate() {
            let reading = match (&pods, metric.pods.is_some()) {
                (Err(e), true) => Err(e.clone()),
                (Ok(p), true) if p.is_empty() && current > 0 => {
                    Err("no ready pod to scrape yet".to_owned())
                }
                (Ok(p), _) => metric_source::read(&who, metric, index, p, client, egress.as_ref())
                    .await
                    .map(|r| r.metric())
                    .map_err(|e| e.to_string()),
                (Err(_), false) => {
                    metric_source::read(&who, metric, index, &[], client, egress.as_ref())
                        .await
                        .map(|r| r.metric())
                        .map_err(|e| e.to_string())
                }
            };
            readings.push(reading);
        }
        readings
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::{Builtin, Memory};

    #[test]
    fn retain_drops_the_memory_of_scalers_that_are_gone() {
        let builtin = Builtin::new(None);
        for uid in ["kept", "deleted"] {
            builtin
                .memories
                .lock()
                .unwrap()
                .insert(uid.to_string(), Memory::default());
        }
        builtin.retain(&HashSet::from(["kept".to_string()]));
        let left: Vec<String> = builtin.memories.lock().unwrap().keys().cloned().collect();
        assert_eq!(left, vec!["kept".to_string()]);
    }
}
