//! {{name}}: a hoist hook plugin. Before a scale-down it asks every leaving pod to drain
//! (`PUT http://POD:PORT/v1/info/state "DRAINING"`, as a Trino worker takes it) and polls
//! until each reports `DRAINED`; if the operation fails, it puts them back `ACTIVE`. Change the
//! requests to what your product needs; keep each call short and idempotent (hoist calls
//! again with the state you return).

use hoist_sdk::http::{Request, host_port};
use hoist_sdk::{Failure, Hook, HookError, Outcome, ScaleContext, config, log};
use serde::Deserialize;

/// `spec.hooks.config` of the Scaler (unknown fields are refused, naming the field).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    /// The pods' HTTP port.
    port: u16,
    /// Milliseconds between polls.
    #[serde(default = "default_poll")]
    poll_interval_ms: u32,
}

fn default_poll() -> u32 {
    2_000
}

fn state_url(ip: &str, port: u16) -> String {
    format!("http://{}/v1/info/state", host_port(ip, port))
}

/// `PUT url` with the JSON string `state`.
fn put_state(url: &str, state: &str) -> Result<(), HookError> {
    Request::put(url)
        .header("content-type", "application/json")
        .body(format!("\"{state}\""))
        .send()?
        .error_for_status()?;
    Ok(())
}

struct Plugin;

impl Hook for Plugin {
    fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let config: Config = config::parse(&ctx.config)?;
        let mut draining = 0;
        for pod in &ctx.pods_removed {
            let Some(ip) = pod.ip.as_deref() else {
                continue;
            };
            let url = state_url(ip, config.port);
            let state: String = Request::get(&url).send()?.error_for_status()?.json()?;
            match state.as_str() {
                "DRAINED" => {}
                "DRAINING" => draining += 1,
                _ => {
                    // Idempotent: asking again after a retry is harmless.
                    put_state(&url, "DRAINING")?;
                    draining += 1;
                }
            }
        }
        if draining > 0 {
            log::info(&format!("{draining} pod(s) still draining"));
            return Ok(Outcome::in_progress(
                "draining",
                u64::from(config.poll_interval_ms),
                format!("{draining} pod(s) draining"),
            ));
        }
        Ok(Outcome::Done(format!(
            "{} pod(s) drained",
            ctx.pods_removed.len()
        )))
    }

    fn on_failure(ctx: &ScaleContext, _failure: &Failure) -> Result<(), HookError> {
        let config: Config = config::parse(&ctx.config)?;
        for pod in &ctx.pods_removed {
            let Some(ip) = pod.ip.as_deref() else {
                continue;
            };
            put_state(&state_url(ip, config.port), "ACTIVE")?;
        }
        Ok(())
    }

    fn validate_config(config: &str) -> Result<(), String> {
        config::parse_message::<Config>(config).map(|_| ())
    }
}

hoist_sdk::export_hook!(Plugin);
