//! Each misbehaving fixture ends with its own error kind within its deadline, and the sandbox
//! keeps working: the next call on a good plugin succeeds.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{options, plugin_bytes, pod, sandbox, scale_down};
use hoist_sandbox::{HookOutcome, HookRunner, SandboxError};

fn ctx() -> hoist_sandbox::HookContext {
    scale_down(
        vec![pod("w-0", 0, "127.0.0.1"), pod("w-1", 1, "127.0.0.1")],
        1,
        "{}",
    )
}

async fn good_call_still_works(sb: &hoist_sandbox::Sandbox) {
    let noop = sb.load(&plugin_bytes("fixture-noop")).unwrap();
    let outcome = sb
        .pre_scale(&noop, &ctx(), &options(Duration::from_secs(5), &[]))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: "no pre-scale work".into()
        }
    );
}

#[tokio::test]
async fn a_panicking_hook_is_a_trap_with_its_message() {
    common::Logs::capture();
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-trap")).unwrap();
    let started = Instant::now();
    let err = sb
        .pre_scale(&plugin, &ctx(), &options(Duration::from_secs(5), &[]))
        .await
        .unwrap_err();
    match &err {
        SandboxError::HookTrapped { hook, message } => {
            assert_eq!(*hook, "pre-scale");
            assert!(
                message.contains("fixture trap: deliberate panic in pre-scale of workers"),
                "{message}"
            );
        }
        other => panic!("expected HookTrapped, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // The guest's log line before the panic reached tracing with the call's identity.
    let text = common::Logs::text();
    assert!(text.contains("about to panic on purpose"), "{text}");
    assert!(
        text.contains("scaler=workers") && text.contains("hook=\"pre-scale\""),
        "{text}"
    );
    // The other hooks of the same plugin still work: a trap poisons nothing.
    sb.validate_config(&plugin, "{}", &options(Duration::from_secs(5), &[]))
        .await
        .unwrap();
    good_call_still_works(&sb).await;
}

#[tokio::test]
async fn an_endless_loop_ends_at_its_deadline() {
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-endless-loop")).unwrap();
    let deadline = Duration::from_millis(300);
    let started = Instant::now();
    let err = sb
        .pre_scale(&plugin, &ctx(), &options(deadline, &[]))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, SandboxError::HookDeadline { deadline: d, .. } if d == deadline),
        "{err:?}"
    );
    assert_eq!(err.reason(), "HookDeadlineExceeded");
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(1),
        "took {took:?}"
    );
    good_call_still_works(&sb).await;
}

#[tokio::test]
async fn a_gigabyte_allocation_hits_the_memory_limit() {
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-memory-bomb")).unwrap();
    let started = Instant::now();
    let err = sb
        .pre_scale(&plugin, &ctx(), &options(Duration::from_secs(5), &[]))
        .await
        .unwrap_err();
    match &err {
        SandboxError::HookMemoryLimit {
            limit_bytes,
            requested_bytes,
            ..
        } => {
            assert_eq!(*limit_bytes, 64 * 1024 * 1024);
            assert!(*requested_bytes >= 1 << 30, "{requested_bytes}");
        }
        other => panic!("expected HookMemoryLimit, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    good_call_still_works(&sb).await;
}

#[tokio::test]
async fn a_hook_blocked_in_a_host_http_call_ends_at_its_deadline() {
    // A server that accepts and never answers: the guest is inside a host call, where epoch
    // interruption cannot reach it; the call's timeout must.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-forbidden-host")).unwrap();
    let mut ctx = ctx();
    ctx.config = format!(r#"{{"url": "http://{addr}/never"}}"#);
    let deadline = Duration::from_millis(400);
    let started = Instant::now();
    let err = sb
        .pre_scale(&plugin, &ctx, &options(deadline, &[addr.to_string()]))
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::HookDeadline { .. }), "{err:?}");
    assert!(
        started.elapsed() < deadline + Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    good_call_still_works(&sb).await;
}

#[tokio::test]
async fn many_failing_calls_leave_the_sandbox_healthy() {
    let sb = sandbox();
    let trap = sb.load(&plugin_bytes("fixture-trap")).unwrap();
    let bomb = sb.load(&plugin_bytes("fixture-memory-bomb")).unwrap();
    // More failing calls than pooling slots: instances and memories are released each time.
    for _ in 0..80 {
        assert!(
            sb.pre_scale(&trap, &ctx(), &options(Duration::from_secs(5), &[]))
                .await
                .is_err()
        );
    }
    for _ in 0..3 {
        assert!(matches!(
            sb.pre_scale(&bomb, &ctx(), &options(Duration::from_secs(5), &[]))
                .await,
            Err(SandboxError::HookMemoryLimit { .. })
        ));
    }
    good_call_still_works(&sb).await;
}
