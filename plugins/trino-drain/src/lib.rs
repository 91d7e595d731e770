//! trino-drain: drain the Trino workers that a scale-down removes.
//!
//! `pre-scale` (scale down): for each leaving worker, `PUT /v1/info/state` with `"DRAINING"`
//! (once per operation; the saved state remembers which workers were asked), then poll
//! `GET /v1/info/state` on later calls until every leaving worker reports `"DRAINED"` (no
//! tasks left, process still up). `DRAINING` is reversible: `on-failure` puts the workers
//! back with `"ACTIVE"`. Scale up and `post-scale` have nothing to do.
//!
//! Config (all optional):
//! `{"port": 8080, "scheme": "http", "user": "hoist", "userHeader": "X-Trino-User",
//!   "pollIntervalMs": 5000, "drainTimeoutMs": 1800000, "requestTimeoutMs": 5000}`

use std::collections::BTreeSet;
use std::time::Duration;

use hoist_sdk::http::{Request, host_port};
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

    fn state_url(&self, ip: &str) -> String {
        format!(
            "{}://{}/v1/info/state",
            self.scheme,
            host_port(ip, self.port)
        )
    }
}

/// What is kept between calls of one pre-scale stage.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Workers (pod names) already asked to drain.
    asked: BTreeSet<String>,
    /// Number of polling rounds so far.
    polls: u32,
}

struct TrinoDrain;

fn worker_state(config: &Config, ip: &str) -> Result<String, HookError> {
    let response = Request::get(config.state_url(ip))
        .header(&config.user_header, &config.user)
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .send()?
        .error_for_status()?;
    Ok(response.json::<String>()?)
}

fn set_worker_state(config: &Config, ip: &str, state: &str) -> Result<(), HookError> {
    Request::put(config.state_url(ip))
        .header(&config.user_header, &config.user)
        .json(&serde_json::Value::String(state.to_string()))
        .timeout(Duration::from_millis(config.request_timeout_ms))
        .send()?
        .error_for_status()?;
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
            if !state.asked.contains(&pod.name) {
                set_worker_state(&config, ip, "DRAINING")?;
                log::info(&format!("asked worker {} ({ip}) to drain", pod.name));
                state.asked.insert(pod.name.clone());
                pending.push(format!("{}=DRAINING", pod.name));
                continue;
            }
            let current = worker_state(&config, ip)?;
            match current.as_str() {
                "DRAINED" => {}
                "DRAINING" => pending.push(format!("{}=DRAINING", pod.name)),
                "ACTIVE" => {
                    // Asked before, active again: the worker restarted or someone undid it.
                    log::warn(&format!(
                        "worker {} is ACTIVE again; asking it to drain again",
                        pod.name
                    ));
                    set_worker_state(&config, ip, "DRAINING")?;
                    pending.push(format!("{}=DRAINING", pod.name));
                }
                other => {
                    return Err(HookError::Remote(format!(
                        "worker {} is in state {other}, which draining cannot continue from",
                        pod.name
                    )));
                }
            }
        }

        if pending.is_empty() {
            return Ok(Outcome::Done(format!(
                "{} worker(s) drained",
                state.asked.len()
            )));
        }
        state.polls += 1;
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
        log::info(&format!(
            "operation failed ({}); putting {} worker(s) back to ACTIVE",
            failure.reason,
            ctx.pods_removed.len()
        ));
        let mut errors = Vec::new();
        for (pod, ip) in leaving_with_ip(ctx) {
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
