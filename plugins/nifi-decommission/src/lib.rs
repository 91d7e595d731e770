//! nifi-decommission: decommission the NiFi nodes that a scale-down removes.
//!
//! NiFi's documented order (since 1.8): disconnect → (once `DISCONNECTED`) offload → (once
//! `OFFLOADED`) delete. This hook talks to a node that stays (ordinal 0) and moves all leaving
//! nodes through one phase before any starts the next, returning `in-progress` between calls:
//!
//! 1. `POST /nifi-api/access/token` (form `username`, `password`) → bearer token, when
//!    credentials are configured;
//! 2. `GET /nifi-api/controller/cluster` → nodes, matched to leaving pods by address (the pod's
//!    IP, its name, or its FQDN `name.…`);
//! 3. `PUT /nifi-api/controller/cluster/nodes/{id}` with `DISCONNECTING`, then `OFFLOADING`;
//! 4. `DELETE /nifi-api/controller/cluster/nodes/{id}`.
//!
//! `on-failure` reconnects leaving nodes that were disconnected or offloaded but not deleted.
//!
//! Config: `{"port": 8443, "scheme": "https", "credentials": {"usernameSecret": "username",
//! "passwordSecret": "password"}, "pollIntervalMs": 5000, "timeoutMs": 3600000,
//! "requestTimeoutMs": 10000}`.
//!
//! `credentials` names the secrets (as the operator hands them to the call, see
//! `hoist_sdk::secret`) holding NiFi's single-user or LDAP login; leave it out for an
//! unsecured cluster. `username` / `password` in plain text still work instead of
//! `usernameSecret` / `passwordSecret`, but are discouraged: the Scaler's config is readable by
//! everyone who can read the Scaler. With `https` (NiFi's default, at the pod IP on 8443)
//! the host verifies NiFi's certificate against the CA bundle of the Scaler's TLS settings and
//! presents its client certificate when one is set (NiFi's mutual TLS).

use std::collections::BTreeMap;
use std::time::Duration;

use hoist_sdk::http::{Request, Response, host_port};
use hoist_sdk::{Failure, Hook, HookError, Outcome, Pod, ScaleContext, config, log};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where the login comes from: each of the user and the password from a secret (preferred)
/// or in plain text.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Credentials {
    #[serde(default)]
    username_secret: Option<String>,
    #[serde(default)]
    password_secret: Option<String>,
    /// Discouraged: plain text in the Scaler.
    #[serde(default)]
    username: Option<String>,
    /// Discouraged: plain text in the Scaler.
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    fn check(&self) -> Result<(), String> {
        for (plain, secret, name) in [
            (&self.username, &self.username_secret, "username"),
            (&self.password, &self.password_secret, "password"),
        ] {
            match (plain, secret) {
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "config field `credentials`: give `{name}Secret` or `{name}`, not both"
                    ));
                }
                (None, None) => {
                    return Err(format!(
                        "config field `credentials.{name}Secret`: required (the name of the \
                         secret holding the {name})"
                    ));
                }
                (Some(v), None) | (None, Some(v)) if v.is_empty() => {
                    return Err(format!(
                        "config field `credentials.{name}`: must not be empty"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The user and the password, reading the secrets.
    fn resolve(&self) -> Result<(String, String), HookError> {
        let one =
            |plain: &Option<String>, secret: &Option<String>, name: &str| match (plain, secret) {
                (Some(value), _) => Ok(value.clone()),
                (None, Some(secret)) => hoist_sdk::secret(secret).ok_or_else(|| {
                    HookError::InvalidConfig(format!(
                        "config field `credentials.{name}Secret`: no secret named {secret:?} is \
                     handed to this call"
                    ))
                }),
                (None, None) => Err(HookError::InvalidConfig(format!(
                    "config field `credentials.{name}Secret`: required"
                ))),
            };
        Ok((
            one(&self.username, &self.username_secret, "username")?,
            one(&self.password, &self.password_secret, "password")?,
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct Config {
    port: u16,
    scheme: String,
    credentials: Option<Credentials>,
    poll_interval_ms: u64,
    timeout_ms: u64,
    request_timeout_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            port: 8443,
            scheme: "https".into(),
            credentials: None,
            poll_interval_ms: 5_000,
            timeout_ms: 60 * 60 * 1000,
            request_timeout_ms: 10_000,
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
        if config.poll_interval_ms == 0 {
            return Err("config field `pollIntervalMs`: must be positive".into());
        }
        if let Some(c) = &config.credentials {
            c.check()?;
        }
        Ok(config)
    }
}

/// One node in `GET /nifi-api/controller/cluster`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(clippy::struct_field_names)] // named as in NiFi's API
struct Node {
    node_id: String,
    address: String,
    status: String,
}

#[derive(Debug, Deserialize)]
struct ClusterBody {
    cluster: Cluster,
}

#[derive(Debug, Deserialize)]
struct Cluster {
    nodes: Vec<Node>,
}

/// Kept between calls: the nodes matched to leaving pods and the phase reached.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Pod name → NiFi node id.
    nodes: BTreeMap<String, String>,
    /// The phase last worked on.
    phase: String,
}

/// A client for the NiFi REST API of the node that stays.
struct Nifi<'a> {
    config: &'a Config,
    base: String,
    token: Option<String>,
}

impl<'a> Nifi<'a> {
    fn connect(config: &'a Config, via: &Pod) -> Result<Self, HookError> {
        let ip = via.ip.as_deref().ok_or_else(|| {
            HookError::Remote(format!("NiFi node {} (ordinal 0) has no IP yet", via.name))
        })?;
        let base = format!(
            "{}://{}/nifi-api",
            config.scheme,
            host_port(ip, config.port)
        );
        let mut nifi = Nifi {
            config,
            base,
            token: None,
        };
        if let Some(creds) = &config.credentials {
            let (username, password) = creds.resolve()?;
            let response = Request::post(format!("{}/access/token", nifi.base))
                .form(&[("username", &username), ("password", &password)])
                .timeout(nifi.timeout())
                .send()?
                .error_for_status()?;
            nifi.token = Some(response.text().trim().to_string());
        }
        Ok(nifi)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn send(&self, request: Request) -> Result<Response, HookError> {
        let request = match &self.token {
            Some(token) => request.header("authorization", &format!("Bearer {token}")),
            None => request,
        };
        Ok(request.timeout(self.timeout()).send()?.error_for_status()?)
    }

    fn nodes(&self) -> Result<Vec<Node>, HookError> {
        let response = self.send(Request::get(format!("{}/controller/cluster", self.base)))?;
        Ok(response.json::<ClusterBody>()?.cluster.nodes)
    }

    fn set_status(&self, node_id: &str, status: &str) -> Result<(), HookError> {
        let url = format!(
            "{}/controller/cluster/nodes/{}",
            self.base,
            hoist_sdk::http::form_encode(node_id)
        );
        let body = json!({"node": {"nodeId": node_id, "status": status}});
        self.send(Request::put(url).json(&body))?;
        Ok(())
    }

    fn delete(&self, node_id: &str) -> Result<(), HookError> {
        let url = format!(
            "{}/controller/cluster/nodes/{}",
            self.base,
            hoist_sdk::http::form_encode(node_id)
        );
        self.send(Request::delete(url))?;
        Ok(())
    }
}

/// Whether a NiFi node address names this pod.
fn matches(node: &Node, pod: &Pod) -> bool {
    let address = node.address.as_str();
    pod.ip.as_deref() == Some(address)
        || address == pod.name
        || address
            .strip_prefix(pod.name.as_str())
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Phases in order; a node's rank is how far along it is.
fn rank(status: &str) -> Option<u8> {
    match status {
        "CONNECTED" | "CONNECTING" => Some(0),
        "DISCONNECTING" => Some(1),
        "DISCONNECTED" => Some(2),
        "OFFLOADING" => Some(3),
        "OFFLOADED" => Some(4),
        _ => None,
    }
}

/// Leaving pods → their node (by address, or by the id remembered from an earlier call),
/// remembering each match in the state.
fn match_leaving<'a>(
    pods: &'a [Pod],
    nodes: &'a [Node],
    state: &mut State,
) -> Vec<(&'a Pod, &'a Node)> {
    let mut leaving = Vec::new();
    for pod in pods {
        let found = nodes.iter().find(|n| matches(n, pod)).or_else(|| {
            state
                .nodes
                .get(&pod.name)
                .and_then(|id| nodes.iter().find(|n| &n.node_id == id))
        });
        match found {
            Some(node) => {
                state.nodes.insert(pod.name.clone(), node.node_id.clone());
                leaving.push((pod, node));
            }
            None if state.nodes.contains_key(&pod.name) => {
                log::debug(&format!("node of {} is already deleted", pod.name));
            }
            None => log::warn(&format!(
                "no NiFi node matches leaving pod {} (ip {:?}); it is not in the cluster",
                pod.name, pod.ip
            )),
        }
    }
    leaving
}

struct NifiDecommission;

fn via_pod(ctx: &ScaleContext) -> Result<&Pod, HookError> {
    let via = ctx.first_ordinal_pod().ok_or_else(|| {
        HookError::Remote("no pod with ordinal 0 to reach the NiFi cluster through".into())
    })?;
    if ctx.pods_removed.iter().any(|p| p.name == via.name) {
        return Err(HookError::Other(format!(
            "the node hoist talks through ({}) is itself leaving; NiFi needs one node that stays",
            via.name
        )));
    }
    Ok(via)
}

impl Hook for NifiDecommission {
    fn pre_scale(ctx: &ScaleContext) -> Result<Outcome, HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        if !ctx.is_scale_down() || ctx.pods_removed.is_empty() {
            return Ok(Outcome::Done(
                "no node leaves; nothing to decommission".into(),
            ));
        }
        if ctx.elapsed_in_stage_ms > config.timeout_ms {
            return Err(HookError::Other(format!(
                "decommission did not finish within {} ms (timeoutMs)",
                config.timeout_ms
            )));
        }
        let mut state: State = match ctx.saved_state.as_deref() {
            Some(text) => serde_json::from_str(text).map_err(|e| {
                HookError::Other(format!("saved state is not nifi-decommission's: {e}"))
            })?,
            None => State::default(),
        };

        let nifi = Nifi::connect(&config, via_pod(ctx)?)?;
        let nodes = nifi.nodes()?;

        let leaving = match_leaving(&ctx.pods_removed, &nodes, &mut state);
        if leaving.is_empty() {
            return Ok(Outcome::Done(format!(
                "{} node(s) decommissioned",
                state.nodes.len()
            )));
        }

        let mut ranks = Vec::with_capacity(leaving.len());
        for (pod, node) in &leaving {
            let r = rank(&node.status).ok_or_else(|| {
                HookError::Remote(format!(
                    "node of {} has unknown status {}",
                    pod.name, node.status
                ))
            })?;
            ranks.push(r);
        }
        let slowest = ranks.iter().copied().min().unwrap_or(0);
        let phase = match slowest {
            0 => {
                for ((pod, node), r) in leaving.iter().zip(&ranks) {
                    if *r == 0 {
                        nifi.set_status(&node.node_id, "DISCONNECTING")?;
                        log::info(&format!(
                            "disconnecting NiFi node {} ({})",
                            node.node_id, pod.name
                        ));
                    }
                }
                "disconnecting"
            }
            1 => "disconnecting",
            2 | 3 => {
                for ((pod, node), r) in leaving.iter().zip(&ranks) {
                    if *r == 2 {
                        nifi.set_status(&node.node_id, "OFFLOADING")?;
                        log::info(&format!(
                            "offloading NiFi node {} ({})",
                            node.node_id, pod.name
                        ));
                    }
                }
                "offloading"
            }
            _ => {
                for (pod, node) in &leaving {
                    nifi.delete(&node.node_id)?;
                    log::info(&format!(
                        "deleted NiFi node {} ({})",
                        node.node_id, pod.name
                    ));
                }
                return Ok(Outcome::Done(format!(
                    "{} node(s) disconnected, offloaded and deleted",
                    state.nodes.len()
                )));
            }
        };
        state.phase = phase.to_string();
        let detail = leaving
            .iter()
            .map(|(pod, node)| format!("{}={}", pod.name, node.status))
            .collect::<Vec<_>>()
            .join(", ");
        let saved = serde_json::to_string(&state)
            .map_err(|e| HookError::Other(format!("cannot save state: {e}")))?;
        Ok(Outcome::in_progress(
            saved,
            config.poll_interval_ms,
            format!("{phase}: {detail}"),
        ))
    }

    fn on_failure(ctx: &ScaleContext, failure: &Failure) -> Result<(), HookError> {
        let config = Config::parse(&ctx.config).map_err(HookError::InvalidConfig)?;
        if !ctx.is_scale_down() || ctx.pods_removed.is_empty() {
            return Ok(());
        }
        let nifi = Nifi::connect(&config, via_pod(ctx)?)?;
        let nodes = nifi.nodes()?;
        let mut errors = Vec::new();
        for pod in &ctx.pods_removed {
            let Some(node) = nodes.iter().find(|n| matches(n, pod)) else {
                continue;
            };
            if matches!(node.status.as_str(), "DISCONNECTED" | "OFFLOADED") {
                log::info(&format!(
                    "operation failed ({}); reconnecting NiFi node {} ({})",
                    failure.reason, node.node_id, pod.name
                ));
                if let Err(err) = nifi.set_status(&node.node_id, "CONNECTING") {
                    errors.push(format!("{}: {err}", pod.name));
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(HookError::Remote(format!(
                "could not reconnect: {}",
                errors.join("; ")
            )))
        }
    }

    fn validate_config(config: &str) -> Result<(), String> {
        Config::parse(config).map(|_| ())
    }
}

hoist_sdk::export_hook!(NifiDecommission);
