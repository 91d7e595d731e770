//! Shared test helpers: built plugins, contexts, a loopback HTTP server, log capture.
// Test support: a failed setup step is a failed test, so unwrap/expect/panic are the point.
#![allow(
    dead_code,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

pub mod hostile;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hoist_sandbox::{
    AllowList, CallIdentity, CallOptions, Direction, HookContext, PodInfo, Sandbox, SandboxConfig,
    TargetRef,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Build all plugins once per process (`plugins/build`) and return the output directory.
/// A failed build fails the test with the build's output; it never skips.
pub fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("plugins/build");
        let out = Command::new(&script)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "plugins/build failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        assert!(
            dir.is_dir(),
            "plugins/build printed {}, not a directory",
            dir.display()
        );
        dir
    })
}

/// The bytes of a built plugin by crate name (`trino-drain`, `fixture-trap`, ...).
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn sandbox() -> Sandbox {
    Logs::capture();
    Sandbox::new(SandboxConfig {
        memory_limit_bytes: 64 * 1024 * 1024,
        ..SandboxConfig::default()
    })
    .unwrap()
}

pub fn pod(name: &str, ordinal: u32, ip: &str) -> PodInfo {
    PodInfo {
        name: name.into(),
        ordinal: Some(ordinal),
        ip: Some(ip.into()),
        ready: true,
    }
}

/// A scale-down context from `all.len()` to `all.len() - removed` pods (the last ones leave).
pub fn scale_down(all: Vec<PodInfo>, removed: usize, config: &str) -> HookContext {
    let from = all.len();
    let to = from - removed;
    let mut pods_removed: Vec<PodInfo> = all[to..].to_vec();
    pods_removed.reverse();
    HookContext {
        namespace: "data".into(),
        scaler: "workers".into(),
        target: TargetRef {
            api_version: "apps/v1".into(),
            kind: "StatefulSet".into(),
            name: "workers".into(),
        },
        operation_id: "op-1".into(),
        from_replicas: u32::try_from(from).unwrap(),
        to_replicas: u32::try_from(to).unwrap(),
        direction: Direction::Down,
        pods_removed,
        pods_added: Vec::new(),
        all_pods: all,
        config: config.into(),
        saved_state: None,
        attempt: 1,
        elapsed_in_stage: Duration::ZERO,
    }
}

pub fn options(deadline: Duration, allowed: &[String]) -> CallOptions {
    CallOptions::new(
        deadline,
        AllowList::new(allowed),
        CallIdentity {
            namespace: "data".into(),
            scaler: "workers".into(),
            operation: "op-1".into(),
            attempt: 1,
        },
    )
}

/// A request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub local: SocketAddr,
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: String,
}

pub type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// Serve `handler` on each of `ips`, all on the same port (found by binding the first on port
/// 0). Returns the port. Servers run until the runtime ends.
pub async fn serve(ips: &[&str], handler: Handler) -> u16 {
    'attempt: for _ in 0..20 {
        let first: IpAddr = ips[0].parse().unwrap();
        let l0 = tokio::net::TcpListener::bind((first, 0)).await.unwrap();
        let port = l0.local_addr().unwrap().port();
        let mut listeners = vec![l0];
        for ip in &ips[1..] {
            let ip: IpAddr = ip.parse().unwrap();
            match tokio::net::TcpListener::bind((ip, port)).await {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'attempt,
            }
        }
        for listener in listeners {
            let handler = handler.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let local = stream.local_addr().unwrap();
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(
                            move |req: hyper::Request<hyper::body::Incoming>| {
                                let handler = handler.clone();
                                async move {
                                    let method = req.method().to_string();
                                    let path = req
                                        .uri()
                                        .path_and_query()
                                        .map(ToString::to_string)
                                        .unwrap_or_default();
                                    let headers = req
                                        .headers()
                                        .iter()
                                        .map(|(k, v)| {
                                            (
                                                k.as_str().to_string(),
                                                v.to_str().unwrap_or("").to_string(),
                                            )
                                        })
                                        .collect();
                                    let body = req
                                        .into_body()
                                        .collect()
                                        .await
                                        .map(http_body_util::Collected::to_bytes)
                                        .unwrap_or_default();
                                    let seen = Seen {
                                        local,
                                        method,
                                        path,
                                        headers,
                                        body: String::from_utf8_lossy(&body).into_owned(),
                                    };
                                    let (status, body) = handler(&seen);
                                    let response = hyper::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(body)))
                                        .unwrap();
                                    Ok::<_, Infallible>(response)
                                }
                            },
                        );
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        }
        return port;
    }
    panic!("could not bind {ips:?} on one common port");
}

/// Captured log output of this test process.
///
/// One global subscriber (installed on first use) writes into one buffer: thread-scoped
/// subscribers miss events whose callsite interest another thread cached first, so tests
/// search the shared text for strings unique to them (a port, a message).
#[derive(Debug, Clone, Copy)]
pub struct Logs;

static LOG_BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn text() -> String {
        let buffer = LOG_BUFFER.get().expect("Logs::capture first");
        String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
    }

    /// Make sure the global capturing subscriber is installed.
    pub fn capture() {
        LOG_BUFFER.get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let writer = LogWriter(buffer.clone());
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber");
            buffer
        });
    }
}
