//! HTTPS from the sandbox to a loopback server with its own CA that requires client
//! certificates: works with the Scaler's CA and client certificate, fails clearly without.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Pki, Seen, options, plugin_bytes, pod, sandbox, scale_down, serve_tls};
use hoist_sandbox::{CallOptions, HookOutcome, HookRunner, SandboxError, TlsSettings};

async fn get(options: &CallOptions, url: &str) -> Result<HookOutcome, SandboxError> {
    let ctx = scale_down(
        vec![pod("p-0", 0, "127.0.5.1"), pod("p-1", 1, "127.0.5.2")],
        1,
        &format!(r#"{{"url": "{url}"}}"#),
    );
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-forbidden-host")).unwrap();
    sb.pre_scale(&plugin, &ctx, options).await
}

fn failure(result: Result<HookOutcome, SandboxError>) -> String {
    match result {
        Err(SandboxError::HookFailed { message, .. }) => message,
        other => panic!("expected a failed hook, got {other:?}"),
    }
}

#[tokio::test]
async fn mutual_tls_with_the_scalers_ca_and_client_certificate() {
    let pki = Pki::new("hoist test CA", &["127.0.5.1"], &["nifi-0.test"]);
    let hits = Arc::new(AtomicU32::new(0));
    let counter = hits.clone();
    let handler = Arc::new(move |req: &Seen| {
        counter.fetch_add(1, Ordering::SeqCst);
        (200, format!("secure {}", req.path))
    });
    let port = serve_tls(&["127.0.5.1"], handler, pki.server_config(true)).await;
    let url = format!("https://127.0.5.1:{port}/probe");
    let base = options(Duration::from_secs(10), &[format!("127.0.5.1:{port}")]);

    let with_cert = base
        .clone()
        .with_tls(pki.tls_settings(true).client_config().unwrap());
    let outcome = get(&with_cert, &url).await.unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: format!("{url} answered 200: secure /probe")
        }
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // The public roots (no CA bundle) do not trust the test CA.
    let message = failure(get(&base, &url).await);
    assert!(
        message.contains("presented a certificate this call does not accept")
            && message.contains("UnknownIssuer"),
        "{message}"
    );

    // Trusting the CA without a client certificate: the server refuses the session.
    let no_cert = base
        .clone()
        .with_tls(pki.tls_settings(false).client_config().unwrap());
    let message = failure(get(&no_cert, &url).await);
    assert!(
        message.contains("refused the TLS session") && message.contains("client certificate"),
        "{message}"
    );

    // Another CA's bundle does not trust this server either.
    let other = Pki::new("another CA", &["127.0.5.1"], &[]);
    let wrong_ca = base.with_tls(other.tls_settings(true).client_config().unwrap());
    let message = failure(get(&wrong_ca, &url).await);
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "only the first request was served"
    );
}

#[tokio::test]
async fn tls_settings_errors_name_the_problem() {
    let pki = Pki::new("hoist test CA", &["127.0.5.9"], &[]);
    let other = Pki::new("other CA", &["127.0.5.9"], &[]);
    let message = |settings: TlsSettings| match settings.client_config() {
        Err(err @ SandboxError::TlsSetup(_)) => {
            assert_eq!(err.reason(), "TlsSetup");
            err.to_string()
        }
        other => panic!("expected TlsSetup, got {other:?}"),
    };
    let mismatched = TlsSettings {
        ca_bundle_pem: Some(pki.ca.clone().into_bytes()),
        client_cert_pem: Some(pki.client_cert.clone().into_bytes()),
        client_key_pem: Some(other.client_key.clone().into_bytes()),
    };
    let text = message(mismatched);
    assert_eq!(
        text,
        "cannot use the TLS settings: the client private key does not match the client certificate"
    );
    let key_only_body = other.client_key.lines().nth(1).unwrap().to_string();
    assert!(!text.contains(&key_only_body));
    let cert_as_key = TlsSettings {
        ca_bundle_pem: None,
        client_cert_pem: Some(pki.client_cert.clone().into_bytes()),
        client_key_pem: Some(pki.client_cert.clone().into_bytes()),
    };
    assert!(
        message(cert_as_key).contains("client private key: no PEM section of the expected kind"),
    );
}
