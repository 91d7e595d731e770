//! trino-drain against loopback servers that behave like Trino workers:
//! ACTIVE → (PUT "DRAINING") DRAINING → DRAINED after several polls; PUT "ACTIVE" undoes it.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Seen, options, plugin_bytes, pod, sandbox, scale_down, serve};
use hoist_sandbox::{FailedStage, FailureInfo, HookOutcome, HookRunner, SandboxError};

#[derive(Default)]
struct Worker {
    state: String,
    polls_while_draining: u32,
    drain_requests: u32,
    requests: u32,
}

/// Polls a worker answers DRAINING before it reports DRAINED.
const POLLS_TO_DRAIN: u32 = 3;

fn trino(workers: Arc<Mutex<HashMap<String, Worker>>>) -> common::Handler {
    Arc::new(move |req: &Seen| {
        let mut workers = workers.lock().unwrap();
        let w = workers
            .entry(req.local.ip().to_string())
            .or_insert_with(|| Worker {
                state: "ACTIVE".into(),
                ..Worker::default()
            });
        w.requests += 1;
        if req.path != "/v1/info/state" {
            return (404, "\"not found\"".into());
        }
        if req.headers.get("x-trino-user").map(String::as_str) != Some("hoist-operator") {
            return (401, "\"X-Trino-User required\"".into());
        }
        match req.method.as_str() {
            "GET" => {
                if w.state == "DRAINING" {
                    w.polls_while_draining += 1;
                    if w.polls_while_draining >= POLLS_TO_DRAIN {
                        w.state = "DRAINED".into();
                    }
                }
                (200, format!("\"{}\"", w.state))
            }
            "PUT" => match req.body.as_str() {
                "\"DRAINING\"" => {
                    w.drain_requests += 1;
                    if w.state == "ACTIVE" {
                        w.state = "DRAINING".into();
                        w.polls_while_draining = 0;
                    }
                    (200, String::new())
                }
                "\"ACTIVE\"" => {
                    w.state = "ACTIVE".into();
                    (200, String::new())
                }
                other => (400, format!("\"bad state {other}\"")),
            },
            _ => (405, String::new()),
        }
    })
}

#[tokio::test]
async fn drains_leaving_workers_over_several_rounds_and_restores_them_on_failure() {
    let ips = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"];
    let workers = Arc::new(Mutex::new(HashMap::new()));
    let port = serve(&ips, trino(workers.clone())).await;
    let all: Vec<_> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| pod(&format!("trino-worker-{i}"), u32::try_from(i).unwrap(), ip))
        .collect();
    let config = format!(r#"{{"port": {port}, "user": "hoist-operator", "pollIntervalMs": 250}}"#);
    let mut ctx = scale_down(all, 2, &config);
    let allowed: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let opts = options(Duration::from_secs(10), &allowed);

    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("trino-drain")).unwrap();
    sb.validate_config(&plugin, &config, &opts).await.unwrap();

    let mut rounds = 0;
    let message = loop {
        rounds += 1;
        assert!(rounds < 20, "never drained");
        match sb.pre_scale(&plugin, &ctx, &opts).await.unwrap() {
            HookOutcome::InProgress {
                state,
                retry_after,
                message,
            } => {
                assert_eq!(retry_after, Duration::from_millis(250));
                assert!(message.contains("trino-worker-3"), "{message}");
                let saved: serde_json::Value = serde_json::from_str(&state).unwrap();
                assert_eq!(
                    saved["asked"],
                    serde_json::json!(["trino-worker-2", "trino-worker-3"]),
                    "{state}"
                );
                ctx.saved_state = Some(state);
                ctx.attempt += 1;
            }
            HookOutcome::Done { message } => break message,
        }
    };
    assert_eq!(message, "2 worker(s) drained");
    // One round asks, POLLS_TO_DRAIN rounds poll; the last poll sees DRAINED.
    assert_eq!(rounds, 1 + POLLS_TO_DRAIN);
    {
        let workers = workers.lock().unwrap();
        for ip in ["127.0.1.3", "127.0.1.4"] {
            let w = &workers[ip];
            assert_eq!(w.state, "DRAINED", "{ip}");
            assert_eq!(
                w.drain_requests, 1,
                "{ip} asked once: the saved state carried that"
            );
        }
        for ip in ["127.0.1.1", "127.0.1.2"] {
            assert!(
                !workers.contains_key(ip),
                "staying worker {ip} was contacted"
            );
        }
    }

    // The operation fails later: on-failure puts the leaving workers back to work.
    let failure = FailureInfo {
        stage: FailedStage::Scaling,
        reason: "ScalingDeadlineExceeded".into(),
    };
    sb.on_failure(&plugin, &ctx, &failure, &opts).await.unwrap();
    let workers = workers.lock().unwrap();
    assert_eq!(workers["127.0.1.3"].state, "ACTIVE");
    assert_eq!(workers["127.0.1.4"].state, "ACTIVE");
}

#[tokio::test]
async fn a_worker_that_refuses_is_a_remote_error_and_bad_config_is_rejected() {
    let ips = ["127.0.1.5", "127.0.1.6"];
    let port = serve(
        &ips,
        Arc::new(|_: &Seen| (500, "\"internal error\"".into())),
    )
    .await;
    let all = vec![pod("w-0", 0, ips[0]), pod("w-1", 1, ips[1])];
    let config = format!(r#"{{"port": {port}}}"#);
    let ctx = scale_down(all, 1, &config);
    let allowed: Vec<String> = ips.iter().map(|ip| (*ip).to_string()).collect();
    let opts = options(Duration::from_secs(10), &allowed);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("trino-drain")).unwrap();
    let err = sb.pre_scale(&plugin, &ctx, &opts).await.unwrap_err();
    match err {
        SandboxError::HookFailed { kind, message, .. } => {
            assert_eq!(kind, hoist_sandbox::HookErrorKind::Remote);
            assert!(message.contains("HTTP 500"), "{message}");
        }
        other => panic!("expected HookFailed, got {other:?}"),
    }
    let err = sb
        .validate_config(&plugin, r#"{"port": "eighty"}"#, &opts)
        .await
        .unwrap_err();
    match err {
        SandboxError::ConfigRejected(message) => assert!(message.contains("`port`"), "{message}"),
        other => panic!("expected ConfigRejected, got {other:?}"),
    }
    let err = sb
        .validate_config(&plugin, r#"{"prot": 8080}"#, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::ConfigRejected(m) if m.contains("prot")),
        "{err:?}"
    );
}

#[tokio::test]
async fn password_authentication_from_secrets() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let port = serve(
        &["127.0.1.91"],
        Arc::new(move |req: &Seen| {
            log.lock().unwrap().push((
                req.headers.get("x-trino-user").cloned(),
                req.headers.get("authorization").cloned(),
            ));
            match req.method.as_str() {
                "GET" => (200, "\"DRAINED\"".into()),
                _ => (200, String::new()),
            }
        }),
    )
    .await;
    let all = vec![pod("w-0", 0, "127.0.1.90"), pod("w-1", 1, "127.0.1.91")];
    let config =
        format!(r#"{{"port": {port}, "userSecret": "user", "passwordSecret": "password"}}"#);
    let ctx = scale_down(all, 1, &config);
    let secrets = hoist_sandbox::HookSecrets::new()
        .with("user", "alice")
        .with("password", "open sesame");
    let opts = options(Duration::from_secs(10), &["127.0.1.91".into()]).with_secrets(secrets);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("trino-drain")).unwrap();
    sb.pre_scale(&plugin, &ctx, &opts).await.unwrap();
    let before = {
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty());
        // base64("alice:open sesame")
        for (user, auth) in seen.iter() {
            assert_eq!(user.as_deref(), Some("alice"));
            assert_eq!(auth.as_deref(), Some("Basic YWxpY2U6b3BlbiBzZXNhbWU="));
        }
        seen.len()
    };
    // Without the secret the plugin names it, and sends nothing.
    let opts = options(Duration::from_secs(10), &["127.0.1.91".into()]);
    let err = sb.pre_scale(&plugin, &ctx, &opts).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("config field `userSecret`: no secret named \"user\""),
        "{err}"
    );
    assert_eq!(seen.lock().unwrap().len(), before);
}
