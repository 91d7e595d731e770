//! The typed interface the operator calls hooks through, and its wasmtime implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use hoist_types::{Digest, Hook};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::bindings::types as wit;
use crate::call::{CallIdentity, CallOptions};
use crate::context::{FailureInfo, HookContext, HookOutcome, split_hook_error};
use crate::error::SandboxError;
use crate::host::{CapturedOutput, HostState, MAX_LOG_LINE_BYTES, guest_failure_text};
use crate::plugin::Plugin;
use crate::sandbox::Sandbox;
use crate::secrets::HookSecrets;
use crate::text::{MAX_MESSAGE_BYTES, bounded_text, loggable_text};

/// A boxed future, so that [`HookRunner`] stays object-safe (`Arc<dyn HookRunner>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Calls a plugin's hooks. Implemented by [`Sandbox`]; the operator holds it as
/// `Arc<dyn HookRunner>` so the state machine can be tested with a fake.
pub trait HookRunner: Send + Sync {
    /// Call `pre-scale`.
    fn pre_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>>;

    /// Call `post-scale`.
    fn post_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>>;

    /// Call `on-failure`.
    fn on_failure<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        failure: &'a FailureInfo,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;

    /// Call `validate-config`; a rejection is [`SandboxError::ConfigRejected`].
    fn validate_config<'a>(
        &'a self,
        plugin: &'a Plugin,
        config: &'a str,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>>;
}

enum Invocation<'a> {
    Scale(Hook, &'a HookContext),
    Failure(&'a HookContext, &'a FailureInfo),
    Validate(&'a str),
}

impl Invocation<'_> {
    fn hook(&self) -> Hook {
        match self {
            Invocation::Scale(h, _) => *h,
            Invocation::Failure(..) => Hook::OnFailure,
            Invocation::Validate(_) => Hook::ValidateConfig,
        }
    }
}

enum Answer {
    Outcome(Result<wit::Outcome, wit::HookError>),
    Unit(Result<(), wit::HookError>),
    Validate(Result<(), String>),
}

impl HookRunner for Sandbox {
    fn pre_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>> {
        Box::pin(self.scale_hook(plugin, Hook::PreScale, ctx, options))
    }

    fn post_scale<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<HookOutcome, SandboxError>> {
        Box::pin(self.scale_hook(plugin, Hook::PostScale, ctx, options))
    }

    fn on_failure<'a>(
        &'a self,
        plugin: &'a Plugin,
        ctx: &'a HookContext,
        failure: &'a FailureInfo,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let hook = Hook::OnFailure.as_str();
            let (answer, denied) = self
                .invoke(plugin, Invocation::Failure(ctx, failure), options)
                .await?;
            match answer {
                Answer::Unit(Ok(())) => Ok(()),
                Answer::Unit(Err(e)) => Err(guest_error(hook, e, &denied)),
                _ => Err(SandboxError::HookResult {
                    hook,
                    message: "unexpected answer".into(),
                }),
            }
        })
    }

    fn validate_config<'a>(
        &'a self,
        plugin: &'a Plugin,
        config: &'a str,
        options: &'a CallOptions,
    ) -> BoxFuture<'a, Result<(), SandboxError>> {
        Box::pin(async move {
            let (answer, _) = self
                .invoke(plugin, Invocation::Validate(config), options)
                .await?;
            match answer {
                Answer::Validate(Ok(())) => Ok(()),
                Answer::Validate(Err(message)) => Err(SandboxError::ConfigRejected(bounded_text(
                    &message,
                    MAX_MESSAGE_BYTES,
                ))),
                _ => Err(SandboxError::HookResult {
                    hook: Hook::ValidateConfig.as_str(),
                    message: "unexpected answer".into(),
                }),
            }
        })
    }
}

/// A hook's error answer, its text bounded to [`MAX_MESSAGE_BYTES`].
fn guest_error(hook: &'static str, e: wit::HookError, denied: &[String]) -> SandboxError {
    let (kind, message) = split_hook_error(e);
    let message = bounded_text(&message, MAX_MESSAGE_BYTES);
    if denied.is_empty() {
        SandboxError::HookFailed {
            hook,
            kind,
            message,
        }
    } else {
        SandboxError::HookRequestDenied {
            hook,
            // At most 8 hosts of at most 256 bytes each (see `host::record_denied`).
            hosts: denied.join(", "),
            message,
        }
    }
}

impl Sandbox {
    /// `pre-scale` or `post-scale`. Messages are cut to [`MAX_MESSAGE_BYTES`]; a state larger
    /// than [`crate::SandboxConfig::max_state_bytes`] is an error, never cut (the plugin
    /// could not resume from part of it).
    async fn scale_hook(
        &self,
        plugin: &Plugin,
        name: Hook,
        ctx: &HookContext,
        options: &CallOptions,
    ) -> Result<HookOutcome, SandboxError> {
        let hook = name.as_str();
        let (answer, denied) = self
            .invoke(plugin, Invocation::Scale(name, ctx), options)
            .await?;
        match answer {
            Answer::Outcome(Ok(wit::Outcome::Done(message))) => Ok(HookOutcome::Done {
                message: bounded_text(&message, MAX_MESSAGE_BYTES),
            }),
            Answer::Outcome(Ok(wit::Outcome::InProgress(p))) => {
                let max = self.inner.config.max_state_bytes;
                if p.state.len() > max {
                    return Err(SandboxError::HookResult {
                        hook,
                        message: format!(
                            "in-progress state is {} bytes, more than the {max} allowed \
                             (the state is stored in the Scaler's status: keep it small)",
                            p.state.len()
                        ),
                    });
                }
                Ok(HookOutcome::InProgress {
                    state: p.state,
                    retry_after: Duration::from_millis(p.retry_after_ms),
                    message: bounded_text(&p.message, MAX_MESSAGE_BYTES),
                })
            }
            Answer::Outcome(Err(e)) => Err(guest_error(hook, e, &denied)),
            _ => Err(SandboxError::HookResult {
                hook,
                message: "unexpected answer".into(),
            }),
        }
    }

    /// One call: a fresh store, limits, the deadline (epoch for guest code, a tokio timeout
    /// around everything), and classification of failures.
    async fn invoke(
        &self,
        plugin: &Plugin,
        invocation: Invocation<'_>,
        options: &CallOptions,
    ) -> Result<(Answer, Vec<String>), SandboxError> {
        let inner = &self.inner;
        let hook = invocation.hook().as_str();
        let identity = Arc::new(options.identity.clone());
        let stderr = CapturedOutput::new(inner.config.max_stderr_bytes);
        let state = HostState::new(
            identity.clone(),
            hook,
            plugin.digest.clone(),
            options,
            inner.config.memory_limit_bytes,
            stderr.clone(),
        );
        let denied = state.policy.denied.clone();
        let mut store = Store::new(&inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        let deadline_at = Instant::now() + options.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline_at {
                Ok(UpdateDeadline::Interrupt)
            } else {
                // Let the async runtime run other tasks (and the call's timeout) every tick.
                Ok(UpdateDeadline::Yield(1))
            }
        });

        let call = async {
            let instance = plugin
                .pre
                .instantiate_async(&mut store)
                .await
                .map_err(|e| (true, e))?;
            let hooks = instance.hoist_hooks_hooks();
            let answer = match invocation {
                Invocation::Scale(name, ctx) => {
                    let ctx = wit::ScaleContext::from(ctx);
                    let r = if name == Hook::PostScale {
                        hooks.call_post_scale(&mut store, &ctx).await
                    } else {
                        hooks.call_pre_scale(&mut store, &ctx).await
                    };
                    r.map(Answer::Outcome)
                }
                Invocation::Failure(ctx, failure) => hooks
                    .call_on_failure(
                        &mut store,
                        &wit::ScaleContext::from(ctx),
                        &wit::Failure::from(failure),
                    )
                    .await
                    .map(Answer::Unit),
                Invocation::Validate(config) => hooks
                    .call_validate_config(&mut store, config)
                    .await
                    .map(Answer::Validate),
            };
            answer.map_err(|e| (false, e))
        };
        let started = Instant::now();
        let result = tokio::time::timeout(options.deadline, call).await;
        let stderr_text = options.secrets.redact(&stderr.contents()).into_owned();
        let denied_hosts = denied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let outcome = match result {
            Ok(Ok(answer)) => Ok((redact_answer(answer, &options.secrets), denied_hosts)),
            Err(_elapsed) => Err(SandboxError::HookDeadline {
                hook,
                deadline: options.deadline,
            }),
            Ok(Err((true, e))) => Err(SandboxError::Instantiate(format!("{e:#}"))),
            Ok(Err((false, e))) => Err(classify_trap(
                hook,
                &e,
                &store,
                &stderr_text,
                options.deadline,
            )),
        };
        store
            .data()
            .log_budget
            .report(&identity, hook, &plugin.digest);
        report(
            &identity,
            hook,
            &plugin.digest,
            &loggable_text(stderr_text.trim(), inner.config.max_stderr_bytes),
            outcome.as_ref().err(),
            started,
        );
        outcome
    }
}

/// The answer with every secret value in its messages replaced (the in-progress state is
/// the plugin's own and stays as it is).
fn redact_answer(answer: Answer, secrets: &HookSecrets) -> Answer {
    if secrets.is_empty() {
        return answer;
    }
    let text = |m: String| secrets.redact(&m).into_owned();
    let error = |e: wit::HookError| match e {
        wit::HookError::InvalidConfig(m) => wit::HookError::InvalidConfig(text(m)),
        wit::HookError::Remote(m) => wit::HookError::Remote(text(m)),
        wit::HookError::Other(m) => wit::HookError::Other(text(m)),
    };
    match answer {
        Answer::Outcome(Ok(wit::Outcome::Done(m))) => {
            Answer::Outcome(Ok(wit::Outcome::Done(text(m))))
        }
        Answer::Outcome(Ok(wit::Outcome::InProgress(mut p))) => {
            p.message = text(p.message);
            Answer::Outcome(Ok(wit::Outcome::InProgress(p)))
        }
        Answer::Outcome(Err(e)) => Answer::Outcome(Err(error(e))),
        Answer::Unit(Err(e)) => Answer::Unit(Err(error(e))),
        Answer::Validate(Err(m)) => Answer::Validate(Err(text(m))),
        other => other,
    }
}

/// Log the end of a call: the guest's stderr (debug, already made loggable) and, for a
/// failure, why (warn, escaped: error texts come from the plugin).
fn report(
    identity: &CallIdentity,
    hook: &'static str,
    digest: &Digest,
    stderr: &str,
    error: Option<&SandboxError>,
    started: Instant,
) {
    if !stderr.is_empty() {
        tracing::debug!(
            target: "hoist::plugin",
            namespace = %identity.namespace,
            scaler = %identity.scaler,
            hook,
            operation = %identity.operation,
            attempt = identity.attempt,
            "guest stderr: {stderr}"
        );
    }
    if let Some(err) = error {
        tracing::warn!(
            target: "hoist::plugin",
            namespace = %identity.namespace,
            scaler = %identity.scaler,
            hook,
            operation = %identity.operation,
            attempt = identity.attempt,
            plugin = digest.short(),
            reason = err.reason(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "hook call failed: {}",
            loggable_text(&err.to_string(), 2 * MAX_LOG_LINE_BYTES)
        );
    }
}

fn classify_trap(
    hook: &'static str,
    err: &wasmtime::Error,
    store: &Store<HostState>,
    stderr: &str,
    deadline: Duration,
) -> SandboxError {
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        return SandboxError::HookDeadline { hook, deadline };
    }
    let limiter = &store.data().limiter;
    if let Some(requested) = limiter.refused {
        return SandboxError::HookMemoryLimit {
            hook,
            limit_bytes: limiter.limit(),
            requested_bytes: requested,
        };
    }
    let trap = match err.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    let message = match guest_failure_text(stderr) {
        Some(text) => format!("{} ({trap})", bounded_text(&text, MAX_MESSAGE_BYTES)),
        None => trap,
    };
    SandboxError::HookTrapped { hook, message }
}
