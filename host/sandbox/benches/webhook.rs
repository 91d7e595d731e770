//! In-process Wasm hook vs an HTTP webhook (a bench binary, not a test):
//! `cargo bench -p hoist-sandbox --bench webhook`.
//!
//! The alternative to in-process plugins is a webhook: a service the operator POSTs the context
//! to, as Kubernetes admission webhooks and KEDA's external scalers work. The same pre-scale
//! logic runs both ways; the operator side is measured in one run, interleaved:
//!
//! (w) hoist: `HookRunner::pre_scale` on `fixture-noop` (a fresh sandboxed instance, the
//!     context lowered into it, the outcome lifted out);
//! (h) a webhook: the context encoded as JSON, sent (POST) over one kept-alive loopback connection
//!     to a hyper server in its own process, which decodes it into the same `HookContext`,
//!     answers the same outcome as JSON, which is decoded (the webhook's best case);
//! (c) the same webhook with a new TCP connection per call (a client without a pool).
//!
//! Then the memory one more plugin costs each way: a loaded component (the resident growth of
//! this process per distinct trino-drain component loaded, over 20 of them) vs one more
//! process (the webhook server's resident set after serving the benchmark).
//!
//! The server is this very binary, started again with `HOIST_BENCH_WEBHOOK_SERVE=1`.

// A benchmark binary: any failed step aborts the measurement, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all, clippy::pedantic)]
mod common;
#[path = "support/timing.rs"]
#[allow(dead_code)]
mod timing;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hoist_sandbox::{HookContext, HookOutcome, HookRunner, Sandbox, SandboxConfig};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use timing::{measure, micros};

const SERVE: &str = "HOIST_BENCH_WEBHOOK_SERVE";

/// What both implementations answer to pre-scale (the SDK's default, which `fixture-noop` uses).
const MESSAGE: &str = "no pre-scale work";

fn main() {
    if std::env::var_os(SERVE).is_some() {
        serve();
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut server = Server::start();
    latency(&runtime, &server);
    memory(&server);
    server.stop();
}

/// The webhook: a hyper HTTP/1 server on loopback that decodes the context and answers the
/// outcome. Prints its port on stdout, serves until stdin closes.
fn serve() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                stream.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(answer);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // Until the benchmark closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {}
        })
        .await
        .unwrap();
    });
}

async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let ctx: HookContext = serde_json::from_slice(&body).unwrap();
    assert!(!ctx.pods_removed.is_empty());
    let outcome = HookOutcome::Done {
        message: MESSAGE.into(),
    };
    let json = serde_json::to_vec(&outcome).unwrap();
    Ok(hyper::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(json)))
        .unwrap())
}

/// The webhook process.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(SERVE, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().unwrap();
        Self { child, port }
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(&format!("/proc/{}/status", self.child.id()))
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        self.child.wait().unwrap();
    }
}

/// `VmRSS` of a `/proc/…/status` file, in KiB.
fn rss_kib(status: &str) -> u64 {
    std::fs::read_to_string(status)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}

/// One POST of `ctx` on `sender`; the decoded outcome.
async fn post(sender: &mut SendRequest<Full<Bytes>>, port: u16, ctx: &HookContext) -> HookOutcome {
    let body = serde_json::to_vec(ctx).unwrap();
    let request = hyper::Request::post(format!("http://127.0.0.1:{port}/pre-scale"))
        .header("host", format!("127.0.0.1:{port}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert!(response.status().is_success());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// A new HTTP/1 connection to the webhook.
async fn connect(port: u16) -> SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn kib(v: u64) -> f64 {
    f64::from(u32::try_from(v).unwrap())
}

/// A scale-down 5 → 3 of a Trino-like StatefulSet (the dispatch benchmark's context).
fn context() -> HookContext {
    let all = (0..5)
        .map(|i| common::pod(&format!("trino-worker-{i}"), i, &format!("10.1.0.1{i}")))
        .collect();
    let mut ctx = common::scale_down(all, 2, r#"{"port": 8080, "user": "hoist"}"#);
    ctx.saved_state = Some(r#"{"asked":["trino-worker-4","trino-worker-3"]}"#.into());
    ctx
}

fn latency(runtime: &tokio::runtime::Runtime, server: &Server) {
    let ctx = context();
    let expected = HookOutcome::Done {
        message: MESSAGE.into(),
    };

    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let noop = sandbox.load(&common::plugin_bytes("fixture-noop")).unwrap();
    let runner: &dyn HookRunner = &sandbox;
    let options = common::options(Duration::from_secs(10), &[]);
    let wasm = || {
        let outcome = runtime
            .block_on(runner.pre_scale(&noop, &ctx, &options))
            .unwrap();
        assert_eq!(outcome, expected);
    };

    let port = server.port;
    let mut kept = runtime.block_on(connect(port));
    let webhook = || {
        let outcome = runtime.block_on(post(&mut kept, port, &ctx));
        assert_eq!(outcome, expected);
    };
    let fresh = || {
        let outcome = runtime.block_on(async {
            let mut sender = connect(port).await;
            post(&mut sender, port, &ctx).await
        });
        assert_eq!(outcome, expected);
    };

    // Interleaved, so that machine noise hits all three alike.
    let (mut w, mut h, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let (mut wasm, mut webhook, mut fresh) = (wasm, webhook, fresh);
    for _ in 0..5 {
        w.push(measure(15, 200, &mut wasm));
        h.push(measure(15, 200, &mut webhook));
        c.push(measure(15, 200, &mut fresh));
    }
    for runs in [&mut w, &mut h, &mut c] {
        runs.sort();
    }
    let (w, h, c) = (w[2], h[2], c[2]);
    println!("pre-scale call, operator side (median of 5 × 15 batches of 200 calls):");
    println!(
        "  (w) hoist, in-process Wasm: fresh sandboxed instance + call   {:8.1} µs",
        micros(w)
    );
    println!(
        "  (h) webhook, kept-alive loopback HTTP/1 + JSON both ways      {:8.1} µs",
        micros(h)
    );
    println!(
        "  (c) webhook, new connection per call                          {:8.1} µs",
        micros(c)
    );
    println!(
        "  ratio w/h = {:.2}  (goal <= 0.5)   w/c = {:.2}",
        w.as_secs_f64() / h.as_secs_f64(),
        w.as_secs_f64() / c.as_secs_f64()
    );
}

/// Appends a custom section to a component, so that the same code has another digest (the
/// sandbox loads and keeps one compiled component per digest).
fn variant(component: &[u8], i: u32) -> Vec<u8> {
    let name = b"hoist-bench-variant";
    let payload = i.to_le_bytes();
    let mut section = Vec::new();
    leb128(&mut section, name.len() + 1 + payload.len());
    leb128(&mut section, name.len());
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    let mut out = component.to_vec();
    out.push(0); // custom section id
    out.extend_from_slice(&section);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn memory(server: &Server) {
    const PLUGINS: u32 = 20;
    let trino = common::plugin_bytes("trino-drain");
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    // One loaded first, so that what the first load allocates once (the engine's code memory,
    // wasmtime's type registry) is not counted per plugin.
    let mut loaded = vec![sandbox.load(&variant(&trino, PLUGINS)).unwrap()];
    let before = rss_kib("/proc/self/status");
    for i in 0..PLUGINS {
        loaded.push(sandbox.load(&variant(&trino, i)).unwrap());
    }
    let after = rss_kib("/proc/self/status");
    assert_eq!(sandbox.loaded_digests().len(), loaded.len());
    let per_plugin = kib(after.saturating_sub(before)) / f64::from(PLUGINS);
    let process = kib(server.rss_kib());
    println!(
        "memory of one more plugin: trino-drain ({} bytes) loaded in hoist {:.0} KiB \
         (resident growth over {PLUGINS}), the webhook process {:.0} KiB resident",
        trino.len(),
        per_plugin,
        process
    );
    println!(
        "  ratio hoist/webhook = {:.2}  (the webhook here decodes and answers, nothing more; a \
         real one also carries its HTTP client and product logic)",
        per_plugin / process
    );
}
