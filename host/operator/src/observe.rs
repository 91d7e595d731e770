//! Observe: read everything the state machine depends on for one Scaler.

use hoist_api::Scaler;
use hoist_decide::{Observation, PluginAvailability, TargetObservation, TargetScale};
use kube::ResourceExt;

use crate::plugins::PluginRegistry;
use crate::target::{TargetRef, Targets};

/// An observation plus what the operator needs to act on it (the target's pod selector).
#[derive(Debug, Clone)]
pub struct Observed {
    pub observation: Observation,
    pub selector: Option<String>,
}

/// Reads the target's /scale and readiness and the plugin's availability. Never fails: a
/// target that cannot be read is an observation too (`TargetObservation::Unavailable`).
pub async fn observe(scaler: &Scaler, targets: &Targets, plugins: &PluginRegistry) -> Observed {
    let namespace = scaler.namespace().unwrap_or_default();
    let target_ref = TargetRef::from(&scaler.spec.target_ref);
    let (target, selector) = match targets.observe(&namespace, &target_ref).await {
        Ok(Some(state)) => {
            let selector = state.selector.clone();
            let scale = TargetScale {
                spec_replicas: state.spec_replicas,
                status_replicas: state.status_replicas,
                ready_replicas: state.ready_replicas,
                observed_generation_current: state.generation_observed,
                selector: state.selector,
            };
            (TargetObservation::Found(scale), selector)
        }
        Ok(None) => (
            TargetObservation::Unavailable {
                reason: format!(
                    "target {} not found in namespace {namespace}",
                    target_ref.display()
                ),
            },
            None,
        ),
        Err(e) => (
            TargetObservation::Unavailable {
                reason: e.to_string(),
            },
            None,
        ),
    };
    let plugin = match &scaler.spec.hooks {
        None => PluginAvailability::NotConfigured,
        Some(hooks) => plugins.availability(&namespace, &hooks.plugin),
    };
    Observed {
        observation: Observation {
            scaler: scaler.clone(),
            target,
            plugin,
            hook_result: None,
            now: jiff::Timestamp::now(),
        },
        selector,
    }
}

/// How the cached Scaler compares with the API server's.
#[derive(Debug)]
pub enum Freshness {
    /// The cache holds the current version.
    Current,
    /// The API server has a newer version.
    Newer(Box<Scaler>),
    /// The Scaler was deleted.
    Gone,
}

/// Compares the cached Scaler with the API server's. A reconcile can run on a cached copy that
/// predates hoist's own last status write (the target's watch event arrived before the
/// Scaler's): before a side effect outside the Scaler (a hook call, a `/scale` write) the
/// operator re-reads, so a stage that already ended is never acted on twice.
pub async fn freshness(
    client: &kube::Client,
    cached: &Scaler,
) -> Result<Freshness, crate::error::OperatorError> {
    let namespace = cached.namespace().unwrap_or_default();
    let api: kube::Api<Scaler> = kube::Api::namespaced(client.clone(), &namespace);
    let current = api.get_opt(&cached.name_any()).await.map_err(|source| {
        crate::error::OperatorError::ReadScaler {
            scaler: format!("{namespace}/{}", cached.name_any()),
            source,
        }
    })?;
    Ok(match current {
        None => Freshness::Gone,
        Some(c) if c.resource_version() == cached.resource_version() => Freshness::Current,
        Some(mut c) => {
            c.managed_fields_mut().clear();
            Freshness::Newer(Box::new(c))
        }
    })
}
