//! The hooks gate: which plugin digest a new operation uses, after `validate-config` accepted
//! the configuration, and the HooksReady condition it implies.

use std::time::Duration;

use super::{
    Digest, EventKind, FailurePolicy, Hook, HookCall, HookResult, HooksGate, MAX_PLUGIN_TEXT,
    MIN_HOOK_RETRY, Machine, PLUGIN_LOADING_POLL, PluginAvailability, PluginStatus, bounded,
    config_hash, short,
};

impl Machine<'_> {
    // ----- hooks gate -----

    /// Decide which plugin a new operation uses, calling validate-config when needed.
    pub(super) fn hooks_gate(&mut self) -> HooksGate {
        let Some(hooks) = &self.spec.hooks else {
            self.hooks_condition =
                Some((true, "NoHooks".into(), "no hook plugin configured".into()));
            return HooksGate::Use(None);
        };
        let fail_open = hooks.failure_policy == FailurePolicy::FailOpen;
        let (digest, verdict) = match &self.obs.plugin {
            PluginAvailability::NotConfigured | PluginAvailability::Loading => {
                let message = format!("loading plugin from {}", hooks.plugin.location());
                self.hooks_condition = Some((false, "PluginLoading".into(), message.clone()));
                self.plan.requeue_after = Some(PLUGIN_LOADING_POLL);
                return HooksGate::Blocked(message);
            }
            PluginAvailability::Invalid { reason } => {
                let message = format!(
                    "plugin from {} is invalid: {reason}",
                    hooks.plugin.location()
                );
                self.hooks_condition = Some((false, "PluginInvalid".into(), message.clone()));
                return self.unusable_hooks(fail_open, message);
            }
            PluginAvailability::NotAdmitted { reason } => {
                self.hooks_condition = Some((false, "PluginNotAdmitted".into(), reason.clone()));
                return HooksGate::Blocked(reason.clone());
            }
            PluginAvailability::Ready { digest } => {
                let verdict = match self.plugin_verdict(digest, config_hash(hooks.config.as_ref()))
                {
                    Ok(verdict) => verdict,
                    Err(gate) => return gate,
                };
                (digest.clone(), verdict)
            }
        };
        if verdict.0 {
            self.hooks_condition = Some((
                true,
                "PluginReady".into(),
                format!(
                    "plugin {} loaded and accepted the configuration",
                    short(&digest)
                ),
            ));
            HooksGate::Use(Some(digest))
        } else {
            let message = format!(
                "plugin {} rejected the configuration: {}",
                short(&digest),
                verdict.1.unwrap_or_default()
            );
            self.hooks_condition = Some((false, "ConfigRejected".into(), message.clone()));
            self.unusable_hooks(fail_open, message)
        }
    }

    /// What validate-config said (or says now, in phase 2) about this plugin and config;
    /// `Err` when the gate must stop here (a request was made, or validation must wait).
    pub(super) fn plugin_verdict(
        &mut self,
        digest: &Digest,
        hash: String,
    ) -> Result<(bool, Option<String>), HooksGate> {
        let known = self
            .st
            .plugin
            .as_ref()
            .filter(|p| p.digest == digest.as_str() && p.config_hash == hash)
            .map(|p| (p.accepted, p.message.clone()));
        let verdict = if let Some(known) = known {
            known
        } else if !self.plan.has_writes()
            && self.requested.is_none()
            && let Some(result) = self.hook_result.take()
        {
            let verdict = match result {
                HookResult::Done { message } => {
                    (true, message.map(|m| bounded(&m, MAX_PLUGIN_TEXT)))
                }
                HookResult::Failed { reason } => (false, Some(bounded(&reason, MAX_PLUGIN_TEXT))),
                HookResult::InProgress { retry_after, .. } => {
                    // validate-config has no in-progress form; ask again later.
                    self.hooks_condition = Some((
                        false,
                        "ValidatingConfig".into(),
                        "validate-config asked to be called again".into(),
                    ));
                    self.plan.requeue_after = Some(retry_after.max(MIN_HOOK_RETRY));
                    return Err(HooksGate::Blocked(
                        "validating the plugin configuration".into(),
                    ));
                }
            };
            self.st.plugin = Some(PluginStatus {
                digest: digest.to_string(),
                config_hash: hash,
                accepted: verdict.0,
                message: verdict.1.clone(),
            });
            if verdict.0 {
                self.event(
                    EventKind::Normal,
                    "ConfigAccepted",
                    format!("plugin {} accepted the configuration", short(digest)),
                );
            } else {
                self.event(
                    EventKind::Warning,
                    "ConfigRejected",
                    format!(
                        "plugin {} rejected the configuration: {}",
                        short(digest),
                        verdict.1.clone().unwrap_or_default()
                    ),
                );
            }
            verdict
        } else if self.plan.has_writes() {
            // A hook cannot be asked for in a plan that writes; validate next round.
            self.hooks_condition = Some((
                false,
                "ValidatingConfig".into(),
                "validating the plugin configuration".into(),
            ));
            self.plan.requeue_after = Some(Duration::ZERO);
            return Err(HooksGate::Blocked(
                "validating the plugin configuration".into(),
            ));
        } else {
            self.request(HookCall {
                hook: Hook::ValidateConfig,
                plugin_digest: digest.clone(),
                timeout: self.call_timeout(),
                operation: None,
                failure: None,
            });
            return Err(HooksGate::Requested);
        };
        Ok(verdict)
    }

    pub(super) fn unusable_hooks(&mut self, fail_open: bool, message: String) -> HooksGate {
        if fail_open {
            let to = self.desired();
            let current = self.obs.target.found().map(|t| t.spec_replicas);
            if to.is_some() && to != current {
                self.event(
                    EventKind::Warning,
                    "HooksSkipped",
                    format!("{message}; failurePolicy FailOpen: scaling without hooks"),
                );
            }
            HooksGate::Use(None)
        } else {
            HooksGate::Blocked(message)
        }
    }

    /// HooksReady when the gate was not evaluated (an operation in flight, paused, adoption).
    pub(super) fn passive_hooks_condition(&self) -> (bool, String, String) {
        let Some(hooks) = &self.spec.hooks else {
            return (true, "NoHooks".into(), "no hook plugin configured".into());
        };
        match &self.obs.plugin {
            PluginAvailability::NotConfigured | PluginAvailability::Loading => (
                false,
                "PluginLoading".into(),
                format!("loading plugin from {}", hooks.plugin.location()),
            ),
            PluginAvailability::Invalid { reason } => (
                false,
                "PluginInvalid".into(),
                format!(
                    "plugin from {} is invalid: {reason}",
                    hooks.plugin.location()
                ),
            ),
            PluginAvailability::NotAdmitted { reason } => {
                (false, "PluginNotAdmitted".into(), reason.clone())
            }
            PluginAvailability::Ready { digest } => {
                let hash = config_hash(hooks.config.as_ref());
                match self
                    .st
                    .plugin
                    .as_ref()
                    .filter(|p| p.digest == digest.as_str() && p.config_hash == hash)
                {
                    Some(p) if p.accepted => (
                        true,
                        "PluginReady".into(),
                        format!(
                            "plugin {} loaded and accepted the configuration",
                            short(digest)
                        ),
                    ),
                    Some(p) => (
                        false,
                        "ConfigRejected".into(),
                        format!(
                            "plugin {} rejected the configuration: {}",
                            short(digest),
                            p.message.clone().unwrap_or_default()
                        ),
                    ),
                    None => (
                        false,
                        "ValidatingConfig".into(),
                        format!(
                            "plugin {} loaded; configuration not validated yet",
                            short(digest)
                        ),
                    ),
                }
            }
        }
    }
}
