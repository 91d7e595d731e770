//! Outgoing requests from inside the sandbox: every other spelling of an address refused
//! with its reason, names resolved once and checked, redirects not followed, a silent server
//! ended by the deadline, guest sockets refused, secrets handed and redacted, and a plugin
//! built against hoist:hooks@0.1.0 still loading and answering.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Seen, options, plugin_bytes, pod, sandbox, scale_down, serve};
use hoist_sandbox::{
    ForbiddenAddrs, HookOutcome, HookRunner, HookSecrets, IpNet, NetworkGrant, SandboxError,
};
use serde_json::json;

fn counting_server() -> (Arc<AtomicU32>, common::Handler) {
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let handler: common::Handler = Arc::new(move |req: &Seen| {
        counter.fetch_add(1, Ordering::SeqCst);
        (
            200,
            format!(
                "hello {}",
                req.headers.get("host").cloned().unwrap_or_default()
            ),
        )
    });
    (hits, handler)
}

fn probe_ctx(config: &serde_json::Value) -> hoist_sandbox::HookContext {
    scale_down(
        vec![pod("p-0", 0, "127.0.4.1"), pod("p-1", 1, "127.0.4.2")],
        1,
        &config.to_string(),
    )
}

fn requests(targets: &[&str]) -> serde_json::Value {
    json!({
        "mode": "requests",
        "targets": targets.iter().map(|a| json!({"authority": a})).collect::<Vec<_>>(),
    })
}

async fn probe_message(options: &hoist_sandbox::CallOptions, config: &serde_json::Value) -> String {
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    match sb.pre_scale(&plugin, &probe_ctx(config), options).await {
        Ok(HookOutcome::Done { message }) => message,
        other => panic!("{config}: {other:?}"),
    }
}

#[tokio::test]
async fn every_other_spelling_is_refused_with_its_reason_and_never_connects() {
    let (hits, handler) = counting_server();
    let port = serve(&["127.0.4.1"], handler).await;
    let opts = options(
        Duration::from_secs(10),
        &[format!("127.0.4.1:{port}"), "allowed.test".into()],
    );
    let not_allowed = "not on the Scaler's allowedHosts";
    let non_canonical = "non-canonical address spelling";
    let userinfo = "userinfo (user@) in the authority";
    let cases: Vec<(String, String)> = vec![
        (format!("127.1:{port}"), non_canonical.into()),
        (format!("0x7f000001:{port}"), non_canonical.into()),
        (format!("0X7F000001:{port}"), non_canonical.into()),
        (format!("2130706433:{port}"), non_canonical.into()),
        (format!("0177.0.0.1:{port}"), non_canonical.into()),
        (format!("0x7f.0.4.1:{port}"), non_canonical.into()),
        (
            format!("127.0.4.1..:{port}"),
            "not a valid host name".into(),
        ),
        (format!("[::ffff:127.0.0.1]:{port}"), not_allowed.into()),
        (format!("127.0.0.1.:{port}"), not_allowed.into()),
        (format!("LOCALHOST:{port}"), not_allowed.into()),
        (format!("localhost.:{port}"), not_allowed.into()),
        (
            format!("127.0.4.1:{}", port.wrapping_add(1)),
            not_allowed.into(),
        ),
        (format!("allowed.test@127.0.4.1:{port}"), userinfo.into()),
        (format!("127.0.4.1:{port}@evil.test"), userinfo.into()),
        (format!("user:pw@127.0.4.1:{port}"), userinfo.into()),
    ];
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    for (authority, reason) in &cases {
        let message = probe_message(&opts, &requests(&[authority])).await;
        assert_eq!(
            message,
            format!("{authority} -> error denied"),
            "{authority}"
        );
        // The probe fails the hook when asked, so the refusal shows in the call's error.
        let err = sb
            .pre_scale(&plugin, &probe_ctx(&fail_config(authority)), &opts)
            .await
            .unwrap_err();
        let SandboxError::HookRequestDenied { hosts, .. } = &err else {
            panic!("{authority}: expected HookRequestDenied, got {err:?}");
        };
        let shown = match authority.rsplit_once('@') {
            Some((_, host)) => format!("[userinfo]@{host}"),
            None => authority.clone(),
        };
        assert_eq!(hosts, &format!("{shown} ({reason})"), "{authority}");
        assert_eq!(err.reason(), "HookRequestDenied");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no refused request reached the server"
    );

    // The canonical spellings reach it, with the canonical host in the Host header.
    let message = probe_message(
        &opts,
        &requests(&[
            &format!("127.0.4.1:{port}"),
            &format!("127.0.4.1.:{port}"),
            &format!("[::ffff:127.0.4.1]:{port}"),
        ]),
    )
    .await;
    assert_eq!(
        message,
        format!(
            "127.0.4.1:{port} -> 200\n127.0.4.1.:{port} -> 200\n[::ffff:127.0.4.1]:{port} -> 200"
        )
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    let text = common::Logs::text();
    assert!(
        text.contains(&format!("plugin request denied: {non_canonical}"))
            && text.contains(&format!("host=127.1:{port}")),
        "{text}"
    );
}

fn fail_config(authority: &str) -> serde_json::Value {
    json!({"mode": "requests", "fail": true, "targets": [{"authority": authority}]})
}

#[tokio::test]
async fn a_name_resolving_to_a_forbidden_address_is_refused() {
    let (hits, handler) = counting_server();
    let port = serve(&["127.0.0.1"], handler).await;
    let forbidden = ForbiddenAddrs::default().with(
        "127.0.0.0/8".parse::<IpNet>().unwrap(),
        None,
        "loopback (forbidden in this test)",
    );
    let opts = options(
        Duration::from_secs(10),
        &["localhost".into(), "127.0.0.1".into()],
    )
    .with_forbidden(forbidden);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    for authority in [format!("localhost:{port}"), format!("LocalHost.:{port}")] {
        let err = sb
            .pre_scale(&plugin, &probe_ctx(&fail_config(&authority)), &opts)
            .await
            .unwrap_err();
        let SandboxError::HookRequestDenied { hosts, .. } = &err else {
            panic!("{authority}: {err:?}");
        };
        // Refusals after resolution name the canonical host.
        assert_eq!(
            hosts,
            &format!("localhost:{port} (127.0.0.1 is loopback (forbidden in this test))"),
            "{err}"
        );
    }
    // Named explicitly by the grant, the address is reachable again.
    let grant = NetworkGrant::new(["127.0.0.1"], Vec::new());
    let opts = opts.with_grant(grant);
    let message = probe_message(&opts, &requests(&[&format!("127.0.0.1:{port}")])).await;
    assert_eq!(message, format!("127.0.0.1:{port} -> 200"));
    // Not by a name pattern alone: localhost matches, its address stays forbidden.
    let opts = opts.with_grant(NetworkGrant::new(["localhost"], Vec::new()));
    let message = probe_message(&opts, &requests(&[&format!("localhost:{port}")])).await;
    assert_eq!(message, format!("localhost:{port} -> error denied"));
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_cluster_grant_narrows_the_allow_list() {
    let (hits, handler) = counting_server();
    let port = serve(&["127.0.4.11", "127.0.4.12"], handler).await;
    let grant = NetworkGrant::new(Vec::<String>::new(), ["127.0.4.8/29".parse().unwrap()]);
    let opts = options(
        Duration::from_secs(10),
        &["127.0.4.11".into(), "127.0.4.12".into()],
    )
    .with_grant(grant);
    let message = probe_message(
        &opts,
        &requests(&[&format!("127.0.4.11:{port}"), &format!("127.0.4.12:{port}")]),
    )
    .await;
    assert_eq!(
        message,
        format!("127.0.4.11:{port} -> 200\n127.0.4.12:{port} -> 200")
    );
    let opts = opts.with_grant(NetworkGrant::new(
        Vec::<String>::new(),
        ["127.0.4.12/32".parse().unwrap()],
    ));
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    let err = sb
        .pre_scale(
            &plugin,
            &probe_ctx(&fail_config(&format!("127.0.4.11:{port}"))),
            &opts,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "127.0.4.11:{port} (not granted by the cluster policy)"
        )),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn redirects_are_handed_to_the_guest_not_followed() {
    let (forbidden_hits, forbidden_handler) = counting_server();
    let forbidden_port = serve(&["127.0.4.21"], forbidden_handler).await;
    let target = format!("http://127.0.4.21:{forbidden_port}/secret");
    let redirect = Arc::new(move |_: &Seen| (302, target.clone()));
    let port = serve(&["127.0.4.20"], redirect).await;
    // The redirect's target is on no list: the host must neither follow nor check it.
    let opts = options(Duration::from_secs(10), &[format!("127.0.4.20:{port}")]);
    let message = probe_message(&opts, &requests(&[&format!("127.0.4.20:{port}")])).await;
    assert_eq!(
        message,
        format!("127.0.4.20:{port} -> 302 location=http://127.0.4.21:{forbidden_port}/secret")
    );
    // A guest that follows it sends a new request, checked like any other.
    let message = probe_message(&opts, &requests(&[&format!("127.0.4.21:{forbidden_port}")])).await;
    assert_eq!(
        message,
        format!("127.0.4.21:{forbidden_port} -> error denied")
    );
    assert_eq!(forbidden_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_server_that_never_answers_ends_at_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.4.30:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, reads, never answers; keeps every connection open.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let opts = options(Duration::from_millis(1500), &[format!("127.0.4.30:{port}")]);
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    let started = std::time::Instant::now();
    let result = sb
        .pre_scale(
            &plugin,
            &probe_ctx(&requests(&[&format!("127.0.4.30:{port}")])),
            &opts,
        )
        .await;
    // The call ends at its deadline. The request's own read timeout is bounded by the same
    // deadline, so at that instant either the deadline ends the call, or the read timeout
    // reaches the guest first and the probe reports it (CI saw both).
    match &result {
        Err(SandboxError::HookDeadline { .. }) => {}
        Ok(done) => assert!(
            format!("{done:?}").contains("ConnectionReadTimeout"),
            "{done:?}"
        ),
        Err(other) => panic!("{other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "ended before the deadline: {result:?}"
    );
}

#[tokio::test]
async fn guest_sockets_and_name_lookups_fail() {
    let (hits, handler) = counting_server();
    let port = serve(&["127.0.4.40"], handler).await;
    let opts = options(
        Duration::from_secs(10),
        &[format!("127.0.4.40:{port}"), "localhost".into()],
    );
    let message = probe_message(
        &opts,
        &json!({"mode": "sockets", "addr": format!("127.0.4.40:{port}"), "name": "localhost"}),
    )
    .await;
    let mut lines = message.lines();
    let connect = lines.next().unwrap();
    let lookup = lines.next().unwrap();
    assert!(connect.starts_with("connect: failed"), "{message}");
    assert!(lookup.starts_with("lookup: failed"), "{message}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn secrets_reach_the_plugin_and_never_the_logs_or_messages() {
    common::Logs::capture();
    let value = "pw-7f3a9c-never-logged";
    let secrets = HookSecrets::new().with("password", value);
    let opts = options(Duration::from_secs(10), &[]).with_secrets(secrets);
    assert!(!format!("{opts:?}").contains(value), "Debug shows no value");
    let message = probe_message(&opts, &json!({"mode": "secret", "name": "password"})).await;
    assert_eq!(message, "secret password is [redacted]");
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    let err = sb
        .pre_scale(
            &plugin,
            &probe_ctx(&json!({"mode": "secret", "name": "password", "fail": true})),
            &opts,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pre-scale failed: remote error: failed holding [redacted]"
    );
    let missing = probe_message(&opts, &json!({"mode": "secret", "name": "other"})).await;
    assert_eq!(missing, "secret other is (none)");
    let text = common::Logs::text();
    assert!(
        text.contains("probe: secret password is [redacted]"),
        "{text}"
    );
    assert!(
        !text.contains(value),
        "a secret value reached the log:\n{text}"
    );
}

#[tokio::test]
async fn a_plugin_built_against_0_1_0_loads_and_answers() {
    common::Logs::capture();
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-legacy-0-1-0")).unwrap();
    assert_eq!(plugin.wit_version(), "0.1.0");
    assert_ne!(hoist_sandbox::WIT_VERSION, "0.1.0");
    let opts = options(Duration::from_secs(10), &[]);
    let ctx = scale_down(
        vec![pod("p-0", 0, "127.0.4.50"), pod("p-1", 1, "127.0.4.51")],
        1,
        "{}",
    );
    let outcome = sb.pre_scale(&plugin, &ctx, &opts).await.unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: "legacy 0.1.0 plugin: 1 pods leave workers".into()
        }
    );
    sb.validate_config(&plugin, "{}", &opts).await.unwrap();
    let err = sb.validate_config(&plugin, "bad", &opts).await.unwrap_err();
    assert!(matches!(err, SandboxError::ConfigRejected(_)), "{err:?}");
    assert!(common::Logs::text().contains("legacy 0.1.0 plugin: pre-scale"));
    // And the current SDK's plugins are of the current version.
    let current = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    assert_eq!(current.wit_version(), hoist_sandbox::WIT_VERSION);
}
