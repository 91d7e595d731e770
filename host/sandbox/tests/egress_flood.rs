//! A plugin starting 300 requests at once (2,000 held at once end sooner, at the call's
//! limit of host resources: see `hostile.rs`) gets at most 16 in flight (the others fail at
//! once with connection-limit-reached), the server never sees more connections than that,
//! a limit shared across calls holds too, and no descriptor outlives the call. Alone in its
//! test binary: it counts this process's open descriptors.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{options, plugin_bytes, pod, sandbox, scale_down};
use hoist_sandbox::{ConnectionLimit, EgressLimits, HookOutcome, HookRunner};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A server answering every request with the head of a 200 whose body never comes, keeping
/// the connection open until the client closes it; counts connections open now and at most.
async fn counting_server(ip: &str) -> (u16, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (o, p) = (open.clone(), peak.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let o = o.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            seen.extend_from_slice(&buf[..n]);
                            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                                seen.drain(..end + 4);
                                // The head only: the body never comes, so the connection
                                // stays in flight until the client gives up on it.
                                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n";
                                if stream.write_all(answer).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, open, peak)
}

async fn settle(what: impl Fn() -> bool) -> bool {
    for _ in 0..200 {
        if what() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    what()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_requests_at_once_are_bounded_and_leak_nothing() {
    let (port, open, peak) = counting_server("127.0.6.1").await;
    let authority = format!("127.0.6.1:{port}");
    let config = json!({"mode": "flood", "authority": authority, "count": 300}).to_string();
    let ctx = scale_down(
        vec![pod("p-0", 0, "127.0.6.1"), pod("p-1", 1, "127.0.6.2")],
        1,
        &config,
    );
    let sb = sandbox();
    let plugin = sb.load(&plugin_bytes("fixture-egress-probe")).unwrap();
    let opts = options(Duration::from_mins(1), std::slice::from_ref(&authority));
    // Warm up (first instantiation, log subscriber), then count.
    sb.pre_scale(&plugin, &ctx, &opts).await.unwrap();
    assert!(settle(|| open.load(Ordering::SeqCst) == 0).await);
    let before = open_fds();

    let message = match sb.pre_scale(&plugin, &ctx, &opts).await.unwrap() {
        HookOutcome::Done { message } => message,
        other @ HookOutcome::InProgress { .. } => panic!("{other:?}"),
    };
    let counts: Vec<usize> = message
        .split(' ')
        .take(2)
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (ok, limited) = (counts[0], counts[1]);
    assert!(message.ends_with("other="), "{message}");
    assert_eq!(ok + limited, 300, "{message}");
    // Each answered request stays in flight (its body never ends) while the guest holds it.
    assert!((1..=16).contains(&ok), "{message}");
    assert!(
        peak.load(Ordering::SeqCst) <= 16,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        common::Logs::text().contains("already 16 requests in flight in this call"),
        "one warning for the call"
    );

    // Once the call is over every connection closes and no descriptor is left.
    assert!(
        settle(|| open.load(Ordering::SeqCst) == 0).await,
        "{} connections still open",
        open.load(Ordering::SeqCst)
    );
    assert!(
        settle(|| open_fds() <= before).await,
        "descriptors: {before} before, {} after",
        open_fds()
    );

    // A limit shared by calls bounds them together, below the per-call limit here.
    let shared = ConnectionLimit::new(4);
    let opts = opts
        .with_connection_limit(shared.clone())
        .with_limits(EgressLimits {
            max_concurrent_requests: 100,
            ..EgressLimits::default()
        });
    let config = json!({"mode": "flood", "authority": authority, "count": 8}).to_string();
    let small = scale_down(
        vec![pod("p-0", 0, "127.0.6.1"), pod("p-1", 1, "127.0.6.2")],
        1,
        &config,
    );
    peak.store(0, Ordering::SeqCst);
    // Requests wait for a slot of a shared limit until their call's deadline: the guest
    // holds its first 4 responses (bodies never end) and waits for the 5th, so this call
    // ends at its deadline with no more than 4 connections ever open.
    let short = hoist_sandbox::CallOptions {
        deadline: Duration::from_secs(2),
        ..opts
    };
    let err = sb.pre_scale(&plugin, &small, &short).await.unwrap_err();
    assert_eq!(err.reason(), "HookDeadlineExceeded", "{err}");
    assert!(
        peak.load(Ordering::SeqCst) <= 4,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert!(
        settle(|| shared.available() == 4).await,
        "the shared slots come back"
    );
}
