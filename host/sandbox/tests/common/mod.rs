//! Shared test helpers: built plugins, contexts, a loopback HTTP server, log capture.
// Test support: a failed setup step is a failed test, so unwrap/expect/panic are the point.
#![allow(
    dead_code,
    clippy::missing_panics_doc,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hoist_sandbox::rustls;
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
/// 0). Returns the port. Servers run until the runtime ends. A 3xx answer's body is sent as
/// its `location` header (and as its body).
pub async fn serve(ips: &[&str], handler: Handler) -> u16 {
    serve_on(ips, handler, None).await
}

/// [`serve`] over TLS with `tls` (see [`Pki::server_config`]).
pub async fn serve_tls(ips: &[&str], handler: Handler, tls: Arc<rustls::ServerConfig>) -> u16 {
    serve_on(ips, handler, Some(tokio_rustls::TlsAcceptor::from(tls))).await
}

async fn serve_on(ips: &[&str], handler: Handler, tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
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
            let tls = tls.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let local = stream.local_addr().unwrap();
                    let handler = handler.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            // A failed handshake (no client certificate, an untrusted
                            // server) ends the connection, as a real server does.
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve_connection(stream, local, handler).await;
                                }
                            }
                            None => serve_connection(stream, local, handler).await,
                        }
                    });
                }
            });
        }
        return port;
    }
    panic!("could not bind {ips:?} on one common port");
}

async fn serve_connection<S>(stream: S, local: SocketAddr, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
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
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
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
            let mut response = hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if (300..400).contains(&status) {
                response = response.header("location", body.as_str());
            }
            let response = response.body(Full::new(Bytes::from(body))).unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// A test PKI made with rcgen: a CA, a server certificate for some IPs and names, and a
/// client certificate, all signed by the CA; every field is PEM text.
pub struct Pki {
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl Pki {
    /// A fresh CA (named `name`), a server certificate for `ips` and `names`, a client one.
    pub fn new(name: &str, ips: &[&str], names: &[&str]) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose, SanType,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, name);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
                .unwrap();
        for ip in ips {
            server
                .subject_alt_names
                .push(SanType::IpAddress(ip.parse().unwrap()));
        }
        server.distinguished_name.push(DnType::CommonName, "server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "hoist");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &issuer).unwrap();

        Pki {
            ca: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        }
    }

    /// A server configuration with this PKI's server certificate, requiring a client
    /// certificate signed by its CA when `require_client_cert`.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.ca.as_bytes()).unwrap())
                .unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(self.server_cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(self.server_key.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// The hook's TLS settings: this CA, and the client certificate when `client_cert`.
    pub fn tls_settings(&self, client_cert: bool) -> hoist_sandbox::TlsSettings {
        hoist_sandbox::TlsSettings {
            ca_bundle_pem: Some(self.ca.clone().into_bytes()),
            client_cert_pem: client_cert.then(|| self.client_cert.clone().into_bytes()),
            client_key_pem: client_cert.then(|| self.client_key.clone().into_bytes()),
        }
    }
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
