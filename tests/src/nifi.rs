//! A fake NiFi cluster API served over HTTPS with mutual TLS, for tests that run
//! nifi-decommission through the operator (hook TLS and secrets end to end).
//!
//! Certificates come from [`Pki::generate`] (tests/src/pki.rs): a CA, a server certificate
//! for the loopback IPs the fake listens on, and a client certificate signed by the same CA.
//! The server refuses a handshake without a client certificate that CA signed.
//!
//! The API is the part nifi-decommission uses: `POST /nifi-api/access/token` (form `username`,
//! `password`) answers a bearer token every other call must carry; `GET
//! /nifi-api/controller/cluster` lists the nodes; `PUT /nifi-api/controller/cluster/nodes/{id}`
//! with `DISCONNECTING` (from `CONNECTED`), `OFFLOADING` (from `DISCONNECTED`) or `CONNECTING`
//! (from `DISCONNECTED`/`OFFLOADED`); `DELETE` of an `OFFLOADED` node. Other transitions answer
//! 409 as NiFi does. Transitional states settle as time passes, counted in cluster listings:
//! `DISCONNECTING` → `DISCONNECTED` after one, `OFFLOADING` → `OFFLOADED` after two,
//! `CONNECTING` → `CONNECTED` after one. Every request, every state change and every failed
//! TLS handshake is recorded.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;

pub use crate::pki::{Pki, random_hex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Status of a node once it is deleted (in [`NifiCluster::node_states`] and the history).
pub const DELETED: &str = "DELETED";

/// One HTTP request the fake answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The login with the expected user and password, or another call with the token.
    pub authorized: bool,
    pub status: u16,
}

/// A node's state change, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Instant,
    pub node: String,
    pub status: String,
}

#[derive(Debug)]
struct Node {
    id: String,
    address: String,
    status: String,
    /// Cluster listings since the last change.
    ticks: u32,
}

#[derive(Debug)]
struct State {
    username: String,
    password: String,
    token: String,
    nodes: Vec<Node>,
    requests: Vec<Seen>,
    history: Vec<Transition>,
    tls_errors: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `application/x-www-form-urlencoded` → pairs.
fn parse_form(body: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

impl State {
    fn set(&mut self, idx: usize, status: &str) {
        let node = &mut self.nodes[idx];
        node.status = status.to_string();
        node.ticks = 0;
        self.history.push(Transition {
            at: Instant::now(),
            node: node.id.clone(),
            status: status.to_string(),
        });
    }

    /// (authorized, status, body) of one request.
    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        bearer: Option<&str>,
        body: &str,
    ) -> (bool, StatusCode, String) {
        if method == Method::POST && path == "/nifi-api/access/token" {
            let form = parse_form(body);
            let ok = form.get("username") == Some(&self.username)
                && form.get("password") == Some(&self.password);
            return if ok {
                (true, StatusCode::CREATED, self.token.clone())
            } else {
                (false, StatusCode::UNAUTHORIZED, "bad credentials".into())
            };
        }
        if bearer != Some(format!("Bearer {}", self.token).as_str()) {
            return (false, StatusCode::UNAUTHORIZED, "unauthorized".into());
        }
        let (status, text) = self.api(method, path, body);
        (true, status, text)
    }

    fn list(&mut self) -> String {
        for idx in 0..self.nodes.len() {
            self.nodes[idx].ticks += 1;
            let n = &self.nodes[idx];
            let next = match (n.status.as_str(), n.ticks) {
                ("DISCONNECTING", 1..) => "DISCONNECTED",
                ("OFFLOADING", 2..) => "OFFLOADED",
                ("CONNECTING", 1..) => "CONNECTED",
                _ => continue,
            };
            self.set(idx, next);
        }
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .filter(|n| n.status != DELETED)
            .map(|n| {
                json!({"nodeId": n.id, "address": n.address, "apiPort": 8443, "status": n.status})
            })
            .collect();
        json!({"cluster": {"nodes": nodes, "generated": "12:00:00 UTC"}}).to_string()
    }

    fn api(&mut self, method: &Method, path: &str, body: &str) -> (StatusCode, String) {
        if method == Method::GET && path == "/nifi-api/controller/cluster" {
            return (StatusCode::OK, self.list());
        }
        let Some(id) = path.strip_prefix("/nifi-api/controller/cluster/nodes/") else {
            return (StatusCode::NOT_FOUND, "not found".into());
        };
        let Some(idx) = self
            .nodes
            .iter()
            .position(|n| n.id == id && n.status != DELETED)
        else {
            return (StatusCode::NOT_FOUND, format!("no node {id}"));
        };
        let current = self.nodes[idx].status.clone();
        let wanted = match *method {
            Method::DELETE => DELETED.to_string(),
            Method::PUT => {
                let body: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                if body["node"]["nodeId"] != json!(id) {
                    return (StatusCode::BAD_REQUEST, "nodeId mismatch".into());
                }
                body["node"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            }
            _ => return (StatusCode::METHOD_NOT_ALLOWED, String::new()),
        };
        let allowed = match wanted.as_str() {
            "DISCONNECTING" => current == "CONNECTED",
            "OFFLOADING" => current == "DISCONNECTED",
            "CONNECTING" => matches!(current.as_str(), "DISCONNECTED" | "OFFLOADED"),
            DELETED => current == "OFFLOADED",
            _ => false,
        };
        if !allowed {
            return (
                StatusCode::CONFLICT,
                format!("cannot move node {id} from {current} to {wanted}"),
            );
        }
        self.set(idx, &wanted);
        (StatusCode::OK, body.to_string())
    }
}

async fn handle(req: Request<Incoming>, state: Shared) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let bearer = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let mut s = lock(&state);
    let (authorized, status, text) = s.answer(&method, &path, bearer.as_deref(), &body);
    s.requests.push(Seen {
        at: Instant::now(),
        method: method.to_string(),
        path,
        authorized,
        status: status.as_u16(),
    });
    drop(s);
    let content_type = if text.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn connection(acceptor: TlsAcceptor, tcp: TcpStream, state: Shared) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(e) => {
            lock(&state).tls_errors.push(e.to_string());
            return;
        }
    };
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(req, state).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// A running fake NiFi cluster API; the server and its connections stop when it is dropped.
#[derive(Debug)]
pub struct NifiCluster {
    addr: SocketAddr,
    state: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NifiCluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NifiCluster {
    /// Serves on `ip` (a port it picks) with `pki`'s server certificate, requiring a client
    /// certificate from `pki`'s CA and the login `username`/`password`. `nodes` are
    /// `(node id, address)` pairs, all `CONNECTED`.
    pub async fn start(
        ip: IpAddr,
        pki: &Pki,
        username: &str,
        password: &str,
        nodes: &[(String, String)],
    ) -> Result<NifiCluster> {
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_config()?));
        let state = Arc::new(Mutex::new(State {
            username: username.to_string(),
            password: password.to_string(),
            token: format!("eyJ-fake-{}", random_hex(16)?),
            nodes: nodes
                .iter()
                .map(|(id, address)| Node {
                    id: id.clone(),
                    address: address.clone(),
                    status: "CONNECTED".into(),
                    ticks: 0,
                })
                .collect(),
            requests: Vec::new(),
            history: Vec::new(),
            tls_errors: Vec::new(),
        }));
        let listener = TcpListener::bind((ip, 0))
            .await
            .with_context(|| format!("binding the fake NiFi to {ip}"))?;
        let addr = listener.local_addr()?;
        let shared = state.clone();
        let task = tokio::spawn(async move {
            // Dropped (aborting every connection) when this task is aborted.
            let mut connections = JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((tcp, _)) => {
                        connections.spawn(connection(acceptor.clone(), tcp, shared.clone()));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(NifiCluster { addr, state, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every HTTP request answered, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.state).requests.clone()
    }

    /// Node id → current status ([`DELETED`] once deleted).
    pub fn node_states(&self) -> BTreeMap<String, String> {
        lock(&self.state)
            .nodes
            .iter()
            .map(|n| (n.id.clone(), n.status.clone()))
            .collect()
    }

    /// Every state change, oldest first.
    pub fn history(&self) -> Vec<Transition> {
        lock(&self.state).history.clone()
    }

    /// The statuses `node` went through, in order.
    pub fn statuses_of(&self, node: &str) -> Vec<String> {
        self.history()
            .into_iter()
            .filter(|t| t.node == node)
            .map(|t| t.status)
            .collect()
    }

    /// Why TLS handshakes failed (as the server saw it), oldest first.
    pub fn tls_errors(&self) -> Vec<String> {
        lock(&self.state).tls_errors.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};
    use std::sync::Arc;

    use anyhow::{Context, Result};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    use super::{DELETED, NifiCluster, Pki, parse_form};

    #[test]
    fn form_decoding() {
        let f = parse_form("username=admin&password=s3cr%3Dt+x%2");
        assert_eq!(f.get("username").map(String::as_str), Some("admin"));
        assert_eq!(f.get("password").map(String::as_str), Some("s3cr=t x%2"));
    }

    fn connector(pki: &Pki, client_cert: bool) -> Result<TlsConnector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pki.ca_cert.as_bytes()) {
            roots.add(cert?)?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let config = if client_cert {
            let chain = CertificateDer::pem_slice_iter(pki.client_cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(
                chain,
                PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes())?,
            )?
        } else {
            builder.with_no_client_auth()
        };
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// One HTTP/1.1 request over a fresh TLS connection: (status, body).
    async fn call(
        tls: &TlsConnector,
        addr: SocketAddr,
        request: &str,
        token: Option<&str>,
        body: &str,
    ) -> Result<(u16, String)> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let mut stream = tls
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await?;
        let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
        let head = format!(
            "{request} HTTP/1.1\r\nhost: nifi\r\nconnection: close\r\n{auth}\
             content-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        let status = out.get(9..12).context("no status line")?.parse()?;
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        Ok((status, body.to_string()))
    }

    #[tokio::test]
    async fn mutual_tls_login_and_a_node_walked_out() -> Result<()> {
        let ip: IpAddr = "127.0.0.1".parse()?;
        let pki = Pki::generate(&[ip])?;
        let nodes = [
            ("n0".to_string(), "a0".to_string()),
            ("n1".into(), "a1".into()),
        ];
        let nifi = NifiCluster::start(ip, &pki, "admin", "pw=1", &nodes).await?;
        let addr = nifi.addr();
        let tls = connector(&pki, true)?;
        let login = "POST /nifi-api/access/token";
        let (status, _) = call(&tls, addr, login, None, "username=admin&password=pw").await?;
        assert_eq!(status, 401);
        let (status, token) =
            call(&tls, addr, login, None, "username=admin&password=pw%3D1").await?;
        assert_eq!(status, 201);
        let list = "GET /nifi-api/controller/cluster";
        assert_eq!(call(&tls, addr, list, None, "").await?.0, 401);
        let t = Some(token.as_str());
        let node = "/nifi-api/controller/cluster/nodes/n1";
        let put = |s: &str| format!(r#"{{"node":{{"nodeId":"n1","status":"{s}"}}}}"#);
        let put_node = format!("PUT {node}");
        assert_eq!(
            call(&tls, addr, &put_node, t, &put("OFFLOADING")).await?.0,
            409
        );
        assert_eq!(
            call(&tls, addr, &put_node, t, &put("DISCONNECTING"))
                .await?
                .0,
            200
        );
        let (_, listed) = call(&tls, addr, list, t, "").await?;
        assert!(listed.contains(r#""status":"DISCONNECTED""#), "{listed}");
        assert_eq!(
            call(&tls, addr, &put_node, t, &put("OFFLOADING")).await?.0,
            200
        );
        for _ in 0..2 {
            call(&tls, addr, list, t, "").await?;
        }
        assert_eq!(
            call(&tls, addr, &format!("DELETE {node}"), t, "").await?.0,
            200
        );
        assert_eq!(nifi.node_states()["n1"], DELETED);
        assert_eq!(
            nifi.statuses_of("n1"),
            [
                "DISCONNECTING",
                "DISCONNECTED",
                "OFFLOADING",
                "OFFLOADED",
                DELETED
            ]
        );
        assert_eq!(nifi.node_states()["n0"], "CONNECTED");
        assert!(nifi.tls_errors().is_empty(), "{:?}", nifi.tls_errors());

        let seen = nifi.requests().len();
        let without = connector(&pki, false)?;
        assert!(call(&without, addr, login, None, "").await.is_err());
        let other_ca = connector(&Pki::generate(&[ip])?, true)?;
        assert!(call(&other_ca, addr, login, None, "").await.is_err());
        assert_eq!(nifi.requests().len(), seen, "no request got through");
        // The server sees the other CA's client abort a moment after the client gave up.
        for _ in 0..50 {
            if nifi.tls_errors().len() == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(nifi.tls_errors().len(), 2, "{:?}", nifi.tls_errors());
        Ok(())
    }
}
