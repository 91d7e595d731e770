//! trino-drain: drain the Trino workers that a scale-down removes.
//!
//! `pre-scale` (scale down): for each leaving worker, read `GET /v1/info/state` first. An
//! `ACTIVE` worker is asked with `PUT /v1/info/state` `"DRAINING"`; a worker already
//! `DRAINING` or `DRAINED` (drained by an admin, or by an earlier call whose answer was lost)
//! counts as asked: Trino answers 400 `Invalid state transition` to asking a `DRAINED` worker
//! again. Later
//! calls poll until every leaving worker reports `"DRAINED"` (no tasks left, process still
//! up). `DRAINING` is reversible: `on-failure` puts the workers back with `"ACTIVE"`, except
//! those it found already draining. Scale up and `post-scale` have nothing to do.
//!
//! Changing the state is a management action: with Trino's default access control the
//! `PUT` answers 403 `Management only resource` (the `GET` works), so the workers need
//! `access-control.name=allow-all` or a rule that lets the configured user manage them. A
//! real drain takes at least twice the workers' `shutdown.grace-period` (default 2 min) plus
//! the time their running tasks need: the Scaler's `preScaling` deadline must be longer.
//!
//! Config (all optional):
//! `{"port": 8080, "scheme": "http", "user": "hoist", "userHeader": "X-Trino-User",
//!   "userSecret": "trino-user", "passwordSecret": "trino-password",
//!   "pollIntervalMs": 5000, "drainTimeoutMs": 1800000, "requestTimeoutMs": 5000}`
//!
//! With Trino's password authentication, `passwordSecret` names the secret (handed by the
//! operator, see `hoist_sdk::secret`) holding the password: every request then carries
//! `Authorization: Basic` for the user; `userSecret` takes the user from a secret instead of
//! `user`. Trino accepts passwords only over `https` (the operator's TLS settings for the
//! Scaler give the CA that signed the workers' certificates).

use std::collections::BTreeSet;
use std::time::Duration;

use hoist_sdk::http::{HttpError, Request, Response, host_port};
use hoist_sdk::{Failure, Hook, HookError, Outcome, Pod, ScaleContext, config, log};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Config {
    /// HTTP port of the workers.
    port: u16,
    /// `http` or `https`.
    scheme: String,
    /// The user named in the user header.
    user: String,
    /// Header carrying the user (Trino's is `X-Trino-User`).
    user_header: String,
    /// Secret holding the user (instead of `user`).
    user_secret: Option<String>,
    /// Secret holding the user's password: requests carry `Authorization: Basic`.
    password_secret: Option<String>,
    /// Delay between polls while workers drain.
    poll_interval_ms: u64,
    /// Give up (fail the operation) when draining takes longer than this in the stage.
    drain_timeout_ms: u64,
    /// Per-request timeout.
    request_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8080,
            scheme: "http".into(),
            user: "hoist".into(),
            user_header: "X-Trino-User".into(),
            user_secret: None,
            password_secret: None,
            poll_interval_ms: 5_000,
            drain_timeout_ms: 30 * 60 * 1000,
            request_timeout_ms: 5_000,
        }
    }
}

impl Config {
    fn parse(text: &str) -> Result<Config, String> {
        let config: Config = config::parse_message(text)?;
        if config.scheme != "http" && config.scheme != "https" {
            return Err(format!(
                "config field `scheme`: must be http or https, not {:?}",
                config.scheme
            ));
        }
        if config.port == 0 {
            return Err("config field `port`: must not be 0".into());
        }
        if config.user.is_empty() || config.user_header.is_empty() {
            return Err("config fields `user` and `userHeader` must not be empty".into());
        }
        if config.poll_interval_ms == 0 {
            return Err("config field `pollIntervalMs`: must be positive".into());
        }
        Ok(config)
    }

    /// A request with the user header and, with `passwordSecret`, basic authentication.
    fn request(&self, method: &str, ip: &str) -> Result<Request, HookError> {
        let secret = |field: &str, name: &str| {
            hoist_sdk::secret(name).ok_or_else(|| {
                HookError::InvalidConfig(format!(
                    "config field `{field}`: no secret named {name:?} is handed to this call"
                ))
            })
        };
        let user = match &self.user_secret {
            Some(name) => secret("userSecret", name)?,
            None => self.user.clone(),
        };
        let mut request = Request::new(method, self.state_url(ip))
            .header(&self.user_header, &user)
            .timeout(Duration::from_millis(self.request_timeout_ms));
        if let Some(name) = &self.password_secret {
            let password = secret("passwordSecret", name)?;
            let credentials = base64(format!("{user}:{password}").as_bytes());
            request = request.header("authorization", &format!("Basic {credentials}"));
        }
        Ok(request)
    }

    fn state_url(&self, ip: &str) -> String {
        format!(
            "{}://{}/v1/info/state",
            self.scheme,
            host_port(ip, self.port)
        )
    }
}

/// What is kept between calls of one pre-scale stage. It changes only when a worker is
/// asked or found, so repeated polls leave the Scaler's status as it was. (A state saved by an
/// older version with a `polls` counter still reads: unknown fields are ignored.)
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    /// Workers (pod names) this operation asked to drain: `on-failure` reactivates them.
    asked: BTreeSet<String>,
    /// Workers found `DRAINING` or `DRAINED` before this operation asked them (an admin's
    /// drain, or one whose request was sent but not recorded): `on-failure` leaves them.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    found: BTreeSet<String>,
}

struct TrinoDrain;

/// A 403 from the state endpoint says what the worker needs, not only that it refused.
fn explain(config: &Config, err: HttpError) -> HookError {
    match err {
        HttpError::Status { status: 403, .. } => HookError::Remote(format!(
            "{err}; the worker's access control does not let user {:?} change its state (a \
             management resource): give the workers `access-control.name=allow-all` in \
             etc/access-control.properties, or a file-based rule that allows this user",
            config.user
        )),
        other => other.into(),
    }
}

/// Standard base64 with padding (for `Authorization: Basic`).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(
                    ALPHABET[usize::try_from((n >> shift) & 63).unwrap_or(0)],
                ));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn worker_state(config: &Config, ip: &str) -> Result<String, HookError> {
    let response = config
        .request("GET", ip)?
        .send()
        .and_then(Response::error_for_status)
        .map_err(|e| explain(config, e))?;
    Ok(response.json::<String>()?)
}

fn set_worker_state(config: &Config, ip: &str, state: &str) -> Result<(), HookError> {
    config
        .request("PUT", ip)?
        .json(&serde_json::Value::String(state.to_string()))
        .send()
        .and_then(Response::error_for_status)
        .map_err(|e| explain(config, e))?;
    Ok(())
}

fn leaving_with_ip(ctx: &ScaleContext) -> Vec<(&Pod, &str)> {
    ctx.pods_removed
        .iter()
        .filter_map(|pod| {
            let ip = pod.ip.as_deref();
            if ip.is_none() {
                log::warn(&format!(
                    "worker {} has no IP (already gone?); nothing to drain",
                    pod.name
                ));
            }
            ip.map(|ip| (pod, ip))
        })
        .collect()
}

/// One leaving worker, one pre-scale call: read its state, ask it to drain when it is
/// `ACTIVE`. Returns whether it is still draining.
fn drain_one(config: &Config, state: &mut State, pod: &Pod, ip: &str) -> Result<bool, HookError> {
    let name = &pod.name;
    let current = worker_state(config, ip)?;
    match current.as_str() {
        "ACTIVE" => {
            if state.asked.contains(name) || state.found.remove(name) {
                // Asked (or found draining) before, active again: the worker restarted or
                // someone undid it.
                log::warn(&format!(
                    "worker {name} is ACTIVE again; asking it to drain again"
                ));
            }
            set_worker_state(config, ip, "DRAINING")?;
            log::info(&format!("asked worker {name} ({ip}) to drain"));
            state.asked.insert(name.clone());
            Ok(true)
        }
        "DRAINING" | "DRAINED" => {
            // Asking a DRAINED worker again is refused (400 Invalid state transition), and a
            // DRAINING one needs nothing: either counts as asked.
            if !state.asked.contains(name) && state.found.insert(name.clone()) {
                log::info(&format!(
                    "worker {name} ({ip}) is already {current}; not asking again (on-failure \
                     leaves it as found)"
                ));
            }
            Ok(current == "DRAINING")
        }
        other => Err(HookError::Remote(format!(
            "worker {name} is in state {other}, which draining cannot continue from"
        ))),
    }
}

impl Hook for TrinoDrain {
    fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        if !ctx.is_scale_down() || ctx.pods_removed.is_empty() {
            return Ok(Outcome::Done("no worker leaves; nothing to drain".into()));
        }
        let mut state: State = match ctx.saved_state.as_deref() {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| HookError::Other(format!("saved state is not trino-drain's: {e}")))?,
            None => State::default(),
        };
        if ctx.elapsed_in_stage_ms > config.drain_timeout_ms {
            return Err(HookError::Other(format!(
                "workers did not drain within {} ms (drainTimeoutMs)",
                config.drain_timeout_ms
            )));
        }

        let mut pending = Vec::new();
        for (pod, ip) in leaving_with_ip(ctx) {
            if drain_one(&config, &mut state, pod, ip)? {
                pending.push(format!("{}=DRAINING", pod.name));
            }
        }

        if pending.is_empty() {
            return Ok(Outcome::Done(format!(
                "{} worker(s) drained",
                state.asked.len() + state.found.len()
            )));
        }
        let message = format!("waiting for workers to drain: {}", pending.join(", "));
        let saved = serde_json::to_string(&state)
            .map_err(|e| HookError::Other(format!("cannot save state: {e}")))?;
        Ok(Outcome::in_progress(
            saved,
            config.poll_interval_ms,
            message,
        ))
    }

    fn on_failure(ctx: &ScaleContext, failure: &Failure) -> Result<(), HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        if !ctx.is_scale_down() {
            return Ok(());
        }
        // Without a saved state (the first call failed) every leaving worker may have been
        // asked: put them all back. With one, leave the workers found already draining.
        let found = ctx
            .saved_state
            .as_deref()
            .and_then(|text| serde_json::from_str::<State>(text).ok())
            .map(|state| state.found)
            .unwrap_or_default();
        let ours: Vec<_> = leaving_with_ip(ctx)
            .into_iter()
            .filter(|(pod, _)| !found.contains(&pod.name))
            .collect();
        log::info(&format!(
            "operation failed ({}); putting {} worker(s) back to ACTIVE{}",
            failure.reason,
            ours.len(),
            if found.is_empty() {
                String::new()
            } else {
                let names: Vec<&str> = found.iter().map(String::as_str).collect();
                format!(
                    "; leaving {} as found (drained before this operation asked)",
                    names.join(", ")
                )
            }
        ));
        let mut errors = Vec::new();
        for (pod, ip) in ours {
            if let Err(err) = set_worker_state(&config, ip, "ACTIVE") {
                errors.push(format!("{}: {err}", pod.name));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(HookError::Remote(format!(
                "could not reactivate: {}",
                errors.join("; ")
            )))
        }
    }

    fn validate_config(config: &str) -> Result<(), String> {
        Config::parse(config).map(|_| ())
    }
}

hoist_sdk::export_hook!(TrinoDrain);
