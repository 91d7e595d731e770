//! Real Trino servers (`io.trino:trino-server`, trimmed by `tests/trino/install`) as child
//! processes of a test: one coordinator, and workers bound to pods' loopback IPs, all with
//! the `tpch` catalog only.
//!
//! Each server runs in a temporary directory of its own (its working directory, its config
//! files and its log), and is killed when its [`TrinoServer`] is dropped, a panicking test
//! included. A watchdog shell (one per server) kills it too if the test process dies
//! without unwinding (SIGKILL, a test timeout).
//!
//! What Trino 476 needs here: Java 24+ (`HOIST_TRINO_JAVA`), `node.bind-ip` and
//! `node.internal-address` on the pod IP, `access-control.name=allow-all` (else the state
//! endpoint answers 403 `Management only resource`), and a short `shutdown.grace-period`
//! (a drain takes at least twice it).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::wait;

/// Directory of the trimmed install (`tests/trino/install` prints it).
pub const HOME_ENV: &str = "HOIST_TRINO_HOME";
/// A `java` of version 24 or later.
pub const JAVA_ENV: &str = "HOIST_TRINO_JAVA";
/// The user every request names (`allow-all` lets it do anything).
pub const USER: &str = "hoist";

/// Where Trino and its Java are.
#[derive(Debug, Clone)]
pub struct Install {
    /// The install directory (`lib/`, `plugin/tpch/`).
    pub home: PathBuf,
    /// The `java` binary.
    pub java: PathBuf,
}

impl Install {
    /// From `HOIST_TRINO_HOME` and `HOIST_TRINO_JAVA` (`tests/run` exports both). `None` when
    /// either is unset, so a local run without them can skip; under `CI=true` that is an
    /// error, never a skip.
    ///
    /// # Errors
    /// When a variable names something that is not there, or both are missing in CI.
    pub fn from_env() -> Result<Option<Install>> {
        let home = std::env::var_os(HOME_ENV).map(PathBuf::from);
        let java = std::env::var_os(JAVA_ENV).map(PathBuf::from);
        let (Some(home), Some(java)) = (home, java) else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                bail!(
                    "{HOME_ENV} and {JAVA_ENV} must be set in CI (tests/run exports them: \
                     HOIST_TRINO_HOME=$(tests/trino/install), HOIST_TRINO_JAVA=a Java 24+ \
                     such as /usr/lib/jvm/temurin-25-jdk-amd64/bin/java)"
                );
            }
            return Ok(None);
        };
        if !home.join("lib").is_dir() || !home.join("plugin/tpch").is_dir() {
            bail!(
                "{HOME_ENV}={} has no lib/ and plugin/tpch/: run tests/trino/install",
                home.display()
            );
        }
        if !java.is_file() {
            bail!("{JAVA_ENV}={} is not a file", java.display());
        }
        Ok(Some(Install { home, java }))
    }
}

/// What kind of server to start.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Node id (the pod's name for a worker).
    pub name: String,
    /// Whether it is the coordinator (it schedules no tasks on itself).
    pub coordinator: bool,
    /// Where it listens (`node.bind-ip`, `node.internal-address`, `http-server.http.port`).
    pub addr: SocketAddr,
    /// The coordinator's address (`discovery.uri`).
    pub discovery: SocketAddr,
    /// `shutdown.grace-period`.
    pub grace: Duration,
    /// Maximum heap (`-Xmx`, MiB).
    pub heap_mib: u32,
}

/// A running Trino server; killed on drop.
#[derive(Debug)]
pub struct TrinoServer {
    name: String,
    addr: SocketAddr,
    child: Mutex<Option<Child>>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn config_properties(o: &ServerOptions, install: &Install, dir: &Path) -> String {
    let mut c = String::new();
    let coordinator = o.coordinator;
    let _ = writeln!(c, "coordinator={coordinator}");
    if coordinator {
        let _ = writeln!(c, "node-scheduler.include-coordinator=false");
    }
    let ip = o.addr.ip();
    let _ = writeln!(c, "http-server.http.port={}", o.addr.port());
    let _ = writeln!(c, "discovery.uri=http://{}", o.discovery);
    let _ = writeln!(c, "node.environment=hoist");
    let _ = writeln!(c, "node.id={}", o.name);
    let _ = writeln!(c, "node.bind-ip={ip}");
    let _ = writeln!(c, "node.internal-address={ip}");
    let _ = writeln!(c, "plugin.dir={}", install.home.join("plugin").display());
    let _ = writeln!(c, "catalog.config-dir={}", dir.join("catalog").display());
    let _ = writeln!(
        c,
        "access-control.config-files={}",
        dir.join("access-control.properties").display()
    );
    let _ = writeln!(c, "shutdown.grace-period={}ms", o.grace.as_millis());
    c
}

/// Kills `pid` (SIGKILL) once the test process `owner` is gone; ends when `pid` ends.
fn watchdog(owner: u32, pid: u32) -> Result<()> {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do \
           if ! kill -0 {owner} 2>/dev/null; then kill -9 {pid}; exit 0; fi; sleep 1; \
         done"
    );
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a watchdog for a Trino server")?;
    Ok(())
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    if let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

impl TrinoServer {
    /// Writes its configuration into a fresh temporary directory and starts it; returns at
    /// once (see [`TrinoServer::wait_started`]).
    ///
    /// # Errors
    /// When the files cannot be written or java cannot be started.
    pub fn start(install: &Install, o: &ServerOptions) -> Result<TrinoServer> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("trino-{}-", o.name))
            .tempdir()
            .context("creating a Trino data directory")?;
        let d = dir.path();
        std::fs::create_dir_all(d.join("catalog"))?;
        std::fs::write(d.join("catalog/tpch.properties"), "connector.name=tpch\n")?;
        std::fs::write(
            d.join("access-control.properties"),
            "access-control.name=allow-all\n",
        )?;
        let config = d.join("config.properties");
        std::fs::write(&config, config_properties(o, install, d))?;
        let log = d.join("server.log");
        let out = std::fs::File::create(&log).context("creating the Trino log")?;
        let err = out.try_clone()?;
        let child = Command::new(&install.java)
            .arg(format!("-Xmx{}m", o.heap_mib))
            .args([
                "-XX:+UseG1GC",
                "-XX:+ExitOnOutOfMemoryError",
                "-XX:+EnableDynamicAgentLoading",
                "--enable-native-access=ALL-UNNAMED",
                "-Djdk.attach.allowAttachSelf=true",
                "-Dfile.encoding=UTF-8",
            ])
            .arg(format!("-Dconfig={}", config.display()))
            .arg("-cp")
            .arg(install.home.join("lib/*"))
            .arg("io.trino.server.TrinoServer")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", install.java.display()))?;
        let server = TrinoServer {
            name: o.name.clone(),
            addr: o.addr,
            child: Mutex::new(Some(child)),
            log,
            _dir: dir,
        };
        if let Some(pid) = server.pid() {
            watchdog(std::process::id(), pid)?;
        }
        Ok(server)
    }

    fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    /// Its node id.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log (stdout and stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines of its log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the process still runs.
    pub fn running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits until it says `SERVER STARTED` (or fails when the process exits first).
    ///
    /// # Errors
    /// When it exits or does not start within `timeout`.
    pub async fn wait_started(&self, timeout: Duration) -> Result<()> {
        wait::until(timeout, &format!("Trino {} to start", self.name), || {
            let started = self.log().contains("======== SERVER STARTED ========");
            let running = self.running();
            async move {
                if !started && !running {
                    bail!("the process exited");
                }
                Ok(started)
            }
        })
        .await
        .with_context(|| format!("log of {}:\n{}", self.name, self.log_tail(40)))
    }

    /// Stops it as a kubelet stops a container: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&self, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        signal(pid, rustix::process::Signal::TERM);
        let until = Instant::now() + grace;
        while self.running() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
    }

    fn kill(&self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The wall-clock times of log lines containing `needle`, oldest first (Trino logs in
    /// UTC, `2026-12-01T16:15:58.247Z<TAB>INFO…`).
    pub fn log_times(&self, needle: &str) -> Vec<(Timestamp, String)> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| {
                let ts = l.split('\t').next()?.parse::<Timestamp>().ok()?;
                Some((ts, l.to_string()))
            })
            .collect()
    }
}

impl Drop for TrinoServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small client for Trino's HTTP endpoints, as [`USER`].
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
}

impl Client {
    /// A client with a per-request timeout.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new() -> Result<Client> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client { http })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, String)> {
        let resp = req.header("X-Trino-User", USER).send().await?;
        let status = resp.status().as_u16();
        Ok((status, resp.text().await?))
    }

    /// `GET /v1/info/state` of a server: `"ACTIVE"`, `"DRAINING"`, `"DRAINED"`, ….
    ///
    /// # Errors
    /// When it cannot be reached or answers anything but 200 with a JSON string.
    pub async fn state(&self, addr: SocketAddr) -> Result<String> {
        let (status, body) = self
            .send(self.http.get(format!("http://{addr}/v1/info/state")))
            .await?;
        if status != 200 {
            bail!("GET {addr}/v1/info/state: HTTP {status}: {body}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// `PUT /v1/info/state`; returns the status and body (400 when the transition is
    /// invalid, e.g. DRAINING → DRAINING).
    ///
    /// # Errors
    /// When it cannot be reached.
    pub async fn set_state(&self, addr: SocketAddr, state: &str) -> Result<(u16, String)> {
        self.send(
            self.http
                .put(format!("http://{addr}/v1/info/state"))
                .header("Content-Type", "application/json")
                .body(Value::String(state.into()).to_string()),
        )
        .await
    }

    /// The number of active workers the coordinator knows (`GET /v1/node`).
    ///
    /// # Errors
    /// When the coordinator cannot be reached.
    pub async fn worker_count(&self, coordinator: SocketAddr) -> Result<usize> {
        let (status, body) = self
            .send(self.http.get(format!("http://{coordinator}/v1/node")))
            .await?;
        if status != 200 {
            bail!("GET /v1/node: HTTP {status}: {body}");
        }
        let nodes: Vec<Value> = serde_json::from_str(&body)?;
        Ok(nodes.len())
    }

    /// Starts `sql` on the coordinator and follows it to the end in a task of its own.
    ///
    /// # Errors
    /// When the coordinator does not accept the statement.
    pub async fn start_query(&self, coordinator: SocketAddr, sql: &str) -> Result<Query> {
        let (status, body) = self
            .send(
                self.http
                    .post(format!("http://{coordinator}/v1/statement"))
                    .body(sql.to_string()),
            )
            .await?;
        if status != 200 {
            bail!("POST /v1/statement: HTTP {status}: {body}");
        }
        let first: Value = serde_json::from_str(&body)?;
        let progress = Arc::new(Mutex::new(QueryProgress::default()));
        lock(&progress).update(&first);
        let task = tokio::spawn(follow(self.clone(), first, progress.clone()));
        Ok(Query { progress, task })
    }
}

/// What a statement reported so far.
#[derive(Debug, Clone, Default)]
pub struct QueryProgress {
    /// Trino's query id.
    pub id: String,
    /// The last `stats.state` (`QUEUED`, `RUNNING`, `FINISHED`, `FAILED`).
    pub state: String,
    /// Splits running now.
    pub running_splits: u64,
    /// Rows of data received.
    pub rows: Vec<Value>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// When it was seen finished (or failed).
    pub ended_at: Option<Instant>,
}

impl QueryProgress {
    fn update(&mut self, page: &Value) {
        if let Some(id) = page["id"].as_str() {
            self.id = id.to_string();
        }
        if let Some(state) = page["stats"]["state"].as_str() {
            self.state = state.to_string();
        }
        self.running_splits = page["stats"]["runningSplits"].as_u64().unwrap_or(0);
        if let Some(data) = page["data"].as_array() {
            self.rows.extend(data.iter().cloned());
        }
        if let Some(message) = page["error"]["message"].as_str() {
            let name = page["error"]["errorName"].as_str().unwrap_or("");
            self.error = Some(format!("{name}: {message}"));
        }
    }
}

async fn follow(client: Client, mut page: Value, progress: Arc<Mutex<QueryProgress>>) {
    while let Some(next) = page["nextUri"].as_str().map(str::to_string) {
        let got = client.send(client.http.get(&next)).await;
        match got.and_then(|(status, body)| {
            if status == 200 {
                Ok(serde_json::from_str::<Value>(&body)?)
            } else {
                bail!("GET {next}: HTTP {status}: {body}")
            }
        }) {
            Ok(p) => page = p,
            Err(e) => {
                // Trino answers 503 when busy; the client protocol says retry.
                lock(&progress).error = Some(format!("following the query: {e:#}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        {
            let mut p = lock(&progress);
            p.error = None;
            p.update(&page);
        }
    }
    lock(&progress).ended_at = Some(Instant::now());
}

/// A statement followed in the background; dropping it stops following (not the query).
#[derive(Debug)]
pub struct Query {
    progress: Arc<Mutex<QueryProgress>>,
    task: tokio::task::JoinHandle<()>,
}

impl Query {
    /// What it reported so far.
    pub fn progress(&self) -> QueryProgress {
        lock(&self.progress).clone()
    }

    /// Waits until it ended; returns its progress (check `state` and `error`).
    ///
    /// # Errors
    /// When it does not end within `timeout`.
    pub async fn wait_ended(&self, timeout: Duration) -> Result<QueryProgress> {
        wait::for_value(timeout, "the query to end", || {
            let p = self.progress();
            async move { Ok(p.ended_at.is_some().then_some(p)) }
        })
        .await
    }
}

impl Drop for Query {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A coordinator on `coordinator` and one worker per `(name, ip)`, all on `port`, started in
/// parallel; returns once every server started and the coordinator sees every worker.
///
/// # Errors
/// When one does not start within `timeout`.
pub async fn start_cluster(
    install: &Install,
    coordinator: SocketAddr,
    workers: &[(String, IpAddr)],
    port: u16,
    grace: Duration,
    timeout: Duration,
) -> Result<(Arc<TrinoServer>, Vec<Arc<TrinoServer>>)> {
    let base = ServerOptions {
        name: "coordinator".into(),
        coordinator: true,
        addr: coordinator,
        discovery: coordinator,
        grace,
        heap_mib: 512,
    };
    let coord = Arc::new(TrinoServer::start(install, &base)?);
    let mut started = Vec::new();
    for (name, ip) in workers {
        let o = ServerOptions {
            name: name.clone(),
            coordinator: false,
            addr: SocketAddr::new(*ip, port),
            ..base.clone()
        };
        started.push(Arc::new(TrinoServer::start(install, &o)?));
    }
    coord.wait_started(timeout).await?;
    for w in &started {
        w.wait_started(timeout).await?;
    }
    let client = Client::new()?;
    wait::until(timeout, "the coordinator to see every worker", || {
        let client = client.clone();
        async move { Ok(client.worker_count(coordinator).await? >= workers.len()) }
    })
    .await?;
    Ok((coord, started))
}

/// A free TCP port on `ip` (bound and released: another process could take it, rarely).
///
/// # Errors
/// When nothing can bind there.
pub fn free_port(ip: IpAddr) -> Result<u16> {
    let listener = std::net::TcpListener::bind((ip, 0))
        .with_context(|| format!("binding a free port on {ip}"))?;
    Ok(listener.local_addr()?.port())
}

/// Records each distinct state a worker reports, polled every 250 ms, with when.
#[derive(Debug)]
pub struct StateRecorder {
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StateRecorder {
    /// Starts polling `addr`; unreachable polls record nothing.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn start(addr: SocketAddr) -> Result<StateRecorder> {
        let client = Client::new()?;
        let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(state) = client.state(addr).await {
                    let mut s = lock(&sink);
                    if s.last().is_none_or(|(_, last)| *last != state) {
                        s.push((Instant::now(), state));
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Ok(StateRecorder { seen, task })
    }

    /// The distinct states seen, oldest first.
    pub fn states(&self) -> Vec<String> {
        lock(&self.seen).iter().map(|(_, s)| s.clone()).collect()
    }
}

impl Drop for StateRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
