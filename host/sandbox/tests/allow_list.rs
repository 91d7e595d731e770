//! Outgoing HTTP reaches only hosts on the call's allow-list; a denied request is an error the
//! guest sees, and the host logs it.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Seen, options, plugin_bytes, pod, sandbox, scale_down, serve};
use hoist_sandbox::{HookOutcome, HookRunner, SandboxError};

#[tokio::test]
async fn a_host_off_the_list_is_denied_and_logged_and_one_on_it_is_reached() {
    common::Logs::capture();
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let port = serve(
        &["127.0.3.1"],
        Arc::new(move |req: &Seen| {
            counter.fetch_add(1, Ordering::SeqCst);
            (200, format!("hello from {}", req.path))
        }),
    )
    .await;
    let config = format!(r#"{{"url": "http://127.0.3.1:{port}/probe"}}"#);
    let ctx = scale_down(
        vec![pod("p-0", 0, "127.0.3.1"), pod("p-1", 1, "127.0.3.2")],
        1,
        &config,
    );
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-forbidden-host")).unwrap();

    // Not on the list: another host, and the right host on another port.
    let denied = options(
        Duration::from_secs(5),
        &[
            "127.0.3.2".into(),
            format!("127.0.3.1:{}", port.wrapping_add(1)),
        ],
    );
    let err = sb.pre_scale(&plugin, &ctx, &denied).await.unwrap_err();
    match &err {
        SandboxError::HookRequestDenied { hosts, message, .. } => {
            assert_eq!(
                hosts,
                &format!("127.0.3.1:{port} (not on the Scaler's allowedHosts)")
            );
            assert!(
                message.contains("denied"),
                "the guest saw the denial: {message}"
            );
        }
        other => panic!("expected HookRequestDenied, got {other:?}"),
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a denied request never leaves the sandbox"
    );
    let text = common::Logs::text();
    assert!(
        text.contains("plugin request denied: not on the Scaler's allowedHosts"),
        "{text}"
    );
    assert!(
        text.contains(&format!("host=127.0.3.1:{port}")) && text.contains("scaler=workers"),
        "{text}"
    );

    // On the list as host:port, then as a bare host.
    for entry in [format!("127.0.3.1:{port}"), "127.0.3.1".to_string()] {
        let outcome = sb
            .pre_scale(&plugin, &ctx, &options(Duration::from_secs(5), &[entry]))
            .await
            .unwrap();
        assert_eq!(
            outcome,
            HookOutcome::Done {
                message: format!("http://127.0.3.1:{port}/probe answered 200: hello from /probe")
            }
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_empty_allow_list_denies_everything() {
    let ctx = scale_down(
        vec![pod("p-0", 0, "127.0.0.1"), pod("p-1", 1, "127.0.0.1")],
        1,
        r#"{"url": "http://127.0.0.1:9/"}"#,
    );
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-forbidden-host")).unwrap();
    let err = sb
        .pre_scale(&plugin, &ctx, &options(Duration::from_secs(5), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::HookRequestDenied { .. }),
        "{err:?}"
    );
}
