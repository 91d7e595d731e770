//! http-drain: a generic "ask each leaving pod to drain over HTTP, then poll until it says it
//! is done" hook, for products without a dedicated plugin.
//!
//! Config:
//! ```json
//! {
//!   "port": 8080, "scheme": "http",
//!   "headers": {"Authorization": "Bearer ..."},
//!   "drain":  {"method": "POST", "path": "/admin/drain", "body": "{\"pod\":\"{pod}\"}"},
//!   "status": {"path": "/admin/drain", "donePointer": "/state", "doneValue": "DONE"},
//!   "undo":   {"method": "POST", "path": "/admin/resume"},
//!   "pollIntervalMs": 5000, "timeoutMs": 1800000, "requestTimeoutMs": 5000
//! }
//! ```
//! `{pod}` and `{ordinal}` in paths and bodies are replaced by the pod's name and ordinal.
//! Without `status.donePointer` a 2xx answer means done; with it, the JSON value at that
//! pointer must equal `doneValue` (string or any JSON). `undo` (optional) runs in on-failure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hoist_sdk::http::{Request, host_port};
use hoist_sdk::{Failure, Hook, HookError, Outcome, Pod, ScaleContext, config, log};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Call {
    #[serde(default = "post")]
    method: String,
    path: String,
    #[serde(default)]
    body: Option<String>,
}

fn post() -> String {
    "POST".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusCheck {
    path: String,
    #[serde(default)]
    done_pointer: Option<String>,
    #[serde(default)]
    done_value: Option<serde_json::Value>,
}

fn default_port() -> u16 {
    8080
}
fn default_scheme() -> String {
    "http".into()
}
fn default_poll() -> u64 {
    5_000
}
fn default_timeout() -> u64 {
    30 * 60 * 1000
}
fn default_request_timeout() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Config {
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_scheme")]
    scheme: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    drain: Call,
    status: StatusCheck,
    #[serde(default)]
    undo: Option<Call>,
    #[serde(default = "default_poll")]
    poll_interval_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_ms: u64,
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
        for (field, path) in [
            ("drain.path", &config.drain.path),
            ("status.path", &config.status.path),
        ] {
            if !path.starts_with('/') {
                return Err(format!("config field `{field}`: must start with /"));
            }
        }
        if let Some(p) = &config.status.done_pointer {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(
                    "config field `status.donePointer`: a JSON pointer starts with /".into(),
                );
            }
            if config.status.done_value.is_none() {
                return Err(
                    "config field `status.doneValue`: required with `status.donePointer`".into(),
                );
            }
        }
        if config.poll_interval_ms == 0 {
            return Err("config field `pollIntervalMs`: must be positive".into());
        }
        Ok(config)
    }

    fn request(&self, method: &str, ip: &str, path: &str, pod: &Pod) -> Request {
        let url = format!(
            "{}://{}{}",
            self.scheme,
            host_port(ip, self.port),
            fill(path, pod)
        );
        let mut request =
            Request::new(method, url).timeout(Duration::from_millis(self.request_timeout_ms));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
    }

    fn call(&self, call: &Call, ip: &str, pod: &Pod) -> Result<(), HookError> {
        let mut request = self.request(&call.method, ip, &call.path, pod);
        if let Some(body) = &call.body {
            request = request
                .header("content-type", "application/json")
                .body(fill(body, pod));
        }
        request.send()?.error_for_status()?;
        Ok(())
    }

    fn is_done(&self, ip: &str, pod: &Pod) -> Result<bool, HookError> {
        let response = self
            .request("GET", ip, &self.status.path, pod)
            .send()?
            .error_for_status()?;
        let Some(pointer) = &self.status.done_pointer else {
            return Ok(true);
        };
        let body: serde_json::Value = response.json()?;
        let found = body.pointer(pointer);
        Ok(match (&self.status.done_value, found) {
            (Some(want), Some(got)) => want == got,
            _ => false,
        })
    }
}

fn fill(template: &str, pod: &Pod) -> String {
    let ordinal = pod.ordinal.map(|o| o.to_string()).unwrap_or_default();
    template
        .replace("{pod}", &pod.name)
        .replace("{ordinal}", &ordinal)
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    asked: BTreeSet<String>,
}

struct HttpDrain;

impl Hook for HttpDrain {
    fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        if !ctx.is_scale_down() || ctx.pods_removed.is_empty() {
            return Ok(Outcome::Done("no pod leaves; nothing to drain".into()));
        }
        if ctx.elapsed_in_stage_ms > config.timeout_ms {
            return Err(HookError::Other(format!(
                "pods did not drain within {} ms (timeoutMs)",
                config.timeout_ms
            )));
        }
        let mut state: State = match ctx.saved_state.as_deref() {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| HookError::Other(format!("saved state is not http-drain's: {e}")))?,
            None => State::default(),
        };
        let mut pending = Vec::new();
        for pod in &ctx.pods_removed {
            let Some(ip) = pod.ip.as_deref() else {
                log::warn(&format!(
                    "pod {} has no IP (already gone?); nothing to drain",
                    pod.name
                ));
                continue;
            };
            if state.asked.insert(pod.name.clone()) {
                config.call(&config.drain, ip, pod)?;
                log::info(&format!("asked pod {} to drain", pod.name));
                pending.push(pod.name.clone());
            } else if !config.is_done(ip, pod)? {
                pending.push(pod.name.clone());
            }
        }
        if pending.is_empty() {
            return Ok(Outcome::Done(format!(
                "{} pod(s) drained",
                state.asked.len()
            )));
        }
        let saved = serde_json::to_string(&state)
            .map_err(|e| HookError::Other(format!("cannot save state: {e}")))?;
        Ok(Outcome::in_progress(
            saved,
            config.poll_interval_ms,
            format!("draining: {}", pending.join(", ")),
        ))
    }

    fn on_failure(ctx: &ScaleContext, failure: &Failure) -> Result<(), HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        let Some(undo) = &config.undo else {
            return Ok(());
        };
        if !ctx.is_scale_down() {
            return Ok(());
        }
        let mut errors = Vec::new();
        for pod in &ctx.pods_removed {
            let Some(ip) = pod.ip.as_deref() else {
                continue;
            };
            log::info(&format!(
                "operation failed ({}); undoing drain of {}",
                failure.reason, pod.name
            ));
            if let Err(err) = config.call(undo, ip, pod) {
                errors.push(format!("{}: {err}", pod.name));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(HookError::Remote(errors.join("; ")))
        }
    }

    fn validate_config(config: &str) -> Result<(), String> {
        Config::parse(config).map(|_| ())
    }
}

hoist_sdk::export_hook!(HttpDrain);
