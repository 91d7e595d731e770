//! http-drain: the generic "call this URL on each leaving pod, poll that one until it says
//! done" hook, against loopback pods.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Seen, options, plugin_bytes, pod, sandbox, scale_down, serve};
use hoist_sandbox::{FailedStage, FailureInfo, HookOutcome, HookRunner, SandboxError};

#[tokio::test]
async fn drains_each_leaving_pod_until_its_status_says_done_and_undoes_on_failure() {
    let ips = ["127.0.5.1", "127.0.5.2", "127.0.5.3"];
    // Per pod IP: requests seen, and status polls answered so far.
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Arc::default();
    let log = seen.clone();
    let port = serve(
        &ips,
        Arc::new(move |req: &Seen| {
            let mut seen = log.lock().unwrap();
            let calls = seen.entry(req.local.ip().to_string()).or_default();
            calls.push(format!("{} {} {}", req.method, req.path, req.body));
            if req.headers.get("authorization").map(String::as_str) != Some("Bearer t0k") {
                return (401, "{}".into());
            }
            match (req.method.as_str(), req.path.as_str()) {
                ("POST", p) if p.starts_with("/admin/drain/") => (202, "{}".into()),
                ("GET", p) if p.starts_with("/admin/drain/") => {
                    let polls = calls.iter().filter(|c| c.starts_with("GET ")).count();
                    let state = if polls >= 2 { "DONE" } else { "RUNNING" };
                    (200, format!(r#"{{"drain": {{"state": "{state}"}}}}"#))
                }
                ("POST", "/admin/resume") => (200, "{}".into()),
                _ => (404, "{}".into()),
            }
        }),
    )
    .await;
    let config = format!(
        r#"{{
            "port": {port},
            "headers": {{"Authorization": "Bearer t0k"}},
            "drain": {{"method": "POST", "path": "/admin/drain/{{pod}}", "body": "{{\"ordinal\": {{ordinal}}}}"}},
            "status": {{"path": "/admin/drain/{{pod}}", "donePointer": "/drain/state", "doneValue": "DONE"}},
            "undo": {{"path": "/admin/resume"}},
            "pollIntervalMs": 50
        }}"#
    );
    let all: Vec<_> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| pod(&format!("app-{i}"), u32::try_from(i).unwrap(), ip))
        .collect();
    let mut ctx = scale_down(all, 2, &config);
    let allowed: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let opts = options(Duration::from_secs(10), &allowed);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("http-drain")).unwrap();
    sb.validate_config(&plugin, &config, &opts).await.unwrap();

    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 10);
        match sb.pre_scale(&plugin, &ctx, &opts).await.unwrap() {
            HookOutcome::InProgress { state, .. } => ctx.saved_state = Some(state),
            HookOutcome::Done { message } => {
                assert_eq!(message, "2 pod(s) drained");
                break;
            }
        }
    }
    assert_eq!(rounds, 3, "ask, poll (RUNNING), poll (DONE)");
    {
        let seen = seen.lock().unwrap();
        assert!(
            !seen.contains_key("127.0.5.1"),
            "the staying pod was contacted"
        );
        assert_eq!(
            seen["127.0.5.3"],
            [
                "POST /admin/drain/app-2 {\"ordinal\": 2}",
                "GET /admin/drain/app-2 ",
                "GET /admin/drain/app-2 ",
            ]
        );
    }
    let failure = FailureInfo {
        stage: FailedStage::Scaling,
        reason: "Timeout".into(),
    };
    sb.on_failure(&plugin, &ctx, &failure, &opts).await.unwrap();
    assert_eq!(
        seen.lock().unwrap()["127.0.5.2"].last().map(String::as_str),
        Some("POST /admin/resume ")
    );
}

#[tokio::test]
async fn bad_configs_are_rejected_naming_the_field() {
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("http-drain")).unwrap();
    let opts = options(Duration::from_secs(10), &[]);
    // A config with the pointer but no value is rejected, naming the field.
    let err = sb
        .validate_config(
            &plugin,
            r#"{"drain": {"path": "/d"}, "status": {"path": "/s", "donePointer": "/x"}}"#,
            &opts,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::ConfigRejected(m) if m.contains("status.doneValue")),
        "{err:?}"
    );
    let err = sb
        .validate_config(&plugin, r#"{"status": {"path": "/s"}}"#, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::ConfigRejected(m) if m.contains("drain")),
        "{err:?}"
    );
}
