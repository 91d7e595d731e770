//! A real Prometheus on loopback, scraping an exporter the test controls.
//!
//! ```text
//! let mut prom = Prometheus::start().await?;      // exporter + Debian's prometheus binary
//! prom.set_value(12.0);                           // the gauge `hoist_test_demand`
//! prom.wait_for(DEMAND_QUERY, 12.0).await?;       // until Prometheus has scraped it
//! // a Scaler's builtin metric:
//! //   prometheus: {address: prom.address(), query: DEMAND_QUERY, target: 5}
//! prom.stop_exporter().await?;                    // outage: the series goes stale, the query
//!                                                 // returns no sample (waits until it does)
//! prom.start_exporter().await?;                   // back (same address, same value)
//! prom.stop();                                    // outage: Prometheus itself is gone
//! prom.restart().await?;                          // back on the same address, data kept
//! ```
//!
//! - [`Prometheus::start`] serves an [`Exporter`] on `127.0.0.1:<free port>` with the gauge
//!   [`DEMAND_METRIC`] at 0, writes a config scraping it every second (job `exporter`), runs the
//!   `prometheus` binary (Debian's package, installed by `tests/setup`; `HOIST_PROMETHEUS_BIN`
//!   overrides the path) with its TSDB in a temporary directory and `--web.listen-address` on a
//!   free loopback port, and returns once the target is up and the gauge is queryable. No
//!   internet, no root-only path, no systemd: the packaged service is not used.
//! - [`Prometheus::query`] runs an instant query and returns its single value (an error when
//!   there is not exactly one sample); [`Prometheus::wait_for`] polls until a query has a value.
//! - The Prometheus process is killed on drop (and by [`Prometheus::stop`]); its log is kept in
//!   the temporary directory and returned by [`Prometheus::log`] for failure messages.
//!
//! [`Exporter`] is usable alone, e.g. as a pod's metrics endpoint: it serves `/metrics` in the
//! Prometheus text format, from gauges set with [`Exporter::set`] or a whole page set with
//! [`Exporter::set_page`], and can bind any loopback address (127.0.0.2, 127.0.0.3, … model
//! different pod IPs with the same port).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::wait;

/// The gauge the harness's exporter serves; the test sets it with [`Prometheus::set_value`].
pub const DEMAND_METRIC: &str = "hoist_test_demand";
/// A query for the gauge that returns one sample: `sum(hoist_test_demand)`.
pub const DEMAND_QUERY: &str = "sum(hoist_test_demand)";
/// Environment variable naming the prometheus binary (default: `prometheus` on PATH).
pub const PROMETHEUS_BIN_ENV: &str = "HOIST_PROMETHEUS_BIN";
/// Whether Prometheus's last scrape of the exporter succeeded (1) or not (0).
pub const UP_QUERY: &str = "up{job=\"exporter\"}";

/// What an [`Exporter`] serves.
#[derive(Debug, Default)]
struct Page {
    gauges: BTreeMap<String, f64>,
    raw: Option<String>,
}

impl Page {
    fn render(&self) -> String {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        let mut out = String::new();
        for (name, value) in &self.gauges {
            let _ = writeln!(out, "# HELP {name} Set by the test.");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }
}

/// An HTTP server on a loopback address serving `/metrics` (Prometheus text format).
#[derive(Debug)]
pub struct Exporter {
    addr: SocketAddr,
    page: Arc<Mutex<Page>>,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Exporter {
    /// Starts serving on `ip` at a free port.
    pub async fn start(ip: IpAddr) -> Result<Self> {
        Self::start_at(SocketAddr::new(ip, 0)).await
    }

    /// Starts serving on `addr` (port 0: a free one).
    pub async fn start_at(addr: SocketAddr) -> Result<Self> {
        let mut exporter = Self {
            addr,
            page: Arc::new(Mutex::new(Page::default())),
            server: None,
        };
        exporter.serve().await?;
        Ok(exporter)
    }

    async fn serve(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .with_context(|| format!("binding the exporter to {}", self.addr))?;
        self.addr = listener.local_addr().context("exporter address")?;
        let page = Arc::clone(&self.page);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = page.lock().unwrap_or_else(PoisonError::into_inner).render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await;
        });
        self.server = Some((stop_tx, task));
        Ok(())
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets gauge `name` to `value` (the page then lists every gauge set so far).
    pub fn set(&self, name: &str, value: f64) {
        let mut page = self.page.lock().unwrap_or_else(PoisonError::into_inner);
        page.raw = None;
        page.gauges.insert(name.to_owned(), value);
    }

    /// Serves `text` verbatim as the page (labels, histograms, comments, garbage…).
    pub fn set_page(&self, text: &str) {
        self.page.lock().unwrap_or_else(PoisonError::into_inner).raw = Some(text.to_owned());
    }

    /// Stops serving: connections are refused until [`Exporter::restart`].
    pub async fn stop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            // Graceful shutdown closes idle keep-alive connections; bound the wait anyway.
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Serves again on the same address, with the same page.
    pub async fn restart(&mut self) -> Result<()> {
        if self.server.is_none() {
            self.serve().await?;
        }
        Ok(())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            task.abort();
        }
    }
}

/// Debian's Prometheus, run by the test on loopback, scraping an [`Exporter`].
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    addr: SocketAddr,
    exporter: Exporter,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts the exporter and Prometheus, and waits until Prometheus has scraped the exporter.
    pub async fn start() -> Result<Self> {
        let exporter = Exporter::start(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
        exporter.set(DEMAND_METRIC, 0.0);
        let dir = tempfile::Builder::new()
            .prefix("hoist-prometheus-")
            .tempdir()
            .context("creating Prometheus's temporary directory")?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: exporter\n    static_configs:\n      - targets: ['{}']\n",
            exporter.addr()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).context("writing prometheus.yml")?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building an HTTP client")?;
        let mut prom = Self {
            child: None,
            addr: free_loopback_port()?,
            exporter,
            dir,
            http,
        };
        let mut attempt = 0;
        loop {
            match prom.spawn(&config_path).await {
                Ok(()) => return Ok(prom),
                // The free port picked may be taken before Prometheus binds it: retry.
                Err(_) if attempt < 2 && prom.log().contains("address already in use") => {
                    prom.stop();
                    prom.addr = free_loopback_port()?;
                    attempt += 1;
                }
                Err(e) => {
                    prom.stop();
                    let log = prom.log();
                    return Err(e.context(format!("Prometheus log (last lines):\n{log}")));
                }
            }
        }
    }

    /// Runs the binary and waits until the exporter's gauge is queryable.
    async fn spawn(&mut self, config: &std::path::Path) -> Result<()> {
        let bin = std::env::var_os(PROMETHEUS_BIN_ENV)
            .map_or_else(|| PathBuf::from("prometheus"), PathBuf::from);
        let log = std::fs::File::create(self.log_path()).context("creating the Prometheus log")?;
        let log_err = log.try_clone().context("cloning the log handle")?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={}", self.addr))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=info")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (install Debian's prometheus package: tests/setup, or set \
                     {PROMETHEUS_BIN_ENV})",
                    bin.display()
                )
            })?;
        self.child = Some(child);
        // Until the exporter is up and its gauge is queryable, or Prometheus exits.
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling Prometheus")?
            {
                bail!("Prometheus exited with {status}");
            }
            let last = match self.query(UP_QUERY).await {
                Ok(up) if up > 0.5 => match self.query(DEMAND_QUERY).await {
                    Ok(_) => return Ok(()),
                    Err(e) => format!("{e:#}"),
                },
                Ok(up) => format!("{UP_QUERY} is {up}"),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "Prometheus on {} did not scrape {} within 60 s; last: {last}",
                    self.addr,
                    self.exporter.addr()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.log")
    }

    /// The last 40 lines of Prometheus's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The base URL of the HTTP API, for a Scaler's `prometheus.address`.
    pub fn address(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Where Prometheus listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The exporter Prometheus scrapes.
    pub fn exporter(&self) -> &Exporter {
        &self.exporter
    }

    /// Sets the gauge [`DEMAND_METRIC`] (Prometheus sees it at its next scrape, ≤ 1 s).
    pub fn set_value(&self, value: f64) {
        self.exporter.set(DEMAND_METRIC, value);
    }

    /// Runs an instant query; its single value, or an error saying what came back.
    pub async fn query(&self, query: &str) -> Result<f64> {
        let url = format!("{}/api/v1/query", self.address());
        let resp = self
            .http
            .get(&url)
            .query(&[("query", query)])
            .send()
            .await
            .with_context(|| format!("querying {url}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the answer to {query:?} (HTTP {status})"))?;
        let body: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "the answer to {query:?} (HTTP {status}) is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        if body["status"] != "success" {
            bail!("query {query:?} failed: HTTP {status}: {body}");
        }
        let value = match body["data"]["resultType"].as_str() {
            Some("scalar") => &body["data"]["result"][1],
            Some("vector") => match body["data"]["result"].as_array().map(Vec::len) {
                Some(1) => &body["data"]["result"][0]["value"][1],
                _ => bail!("query {query:?} did not return one sample: {body}"),
            },
            _ => bail!("query {query:?} returned no number: {body}"),
        };
        value
            .as_str()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("query {query:?}: unreadable value in {body}"))
    }

    /// Polls until `query` returns `value` (within 1e-9).
    pub async fn wait_for(&self, query: &str, value: f64) -> Result<()> {
        let what = format!("Prometheus to answer {query:?} with {value}");
        wait::until(Duration::from_secs(30), &what, || async {
            Ok((self.query(query).await? - value).abs() < 1e-9)
        })
        .await
    }

    /// Stops the exporter: Prometheus's next scrape fails and the series goes stale, so
    /// [`DEMAND_QUERY`] returns no sample (waits until it does).
    pub async fn stop_exporter(&mut self) -> Result<()> {
        self.exporter.stop().await;
        let what = format!("{DEMAND_QUERY} to return no sample after the exporter stopped");
        wait::until(Duration::from_secs(30), &what, || async {
            Ok(self.query(DEMAND_QUERY).await.is_err() && self.query(UP_QUERY).await? < 0.5)
        })
        .await
    }

    /// Serves the exporter again (same address and values) and waits until Prometheus has
    /// scraped it.
    pub async fn start_exporter(&mut self) -> Result<()> {
        self.exporter.restart().await?;
        wait::until(
            Duration::from_secs(30),
            "the exporter to be scraped again",
            || async {
                Ok(self.query(UP_QUERY).await? > 0.5 && self.query(DEMAND_QUERY).await.is_ok())
            },
        )
        .await
    }

    /// Kills Prometheus (a source outage: connections to [`Prometheus::address`] are refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Prometheus again on the same address, keeping its data, and waits for the
    /// exporter to be scraped.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_none() {
            let config = self.dir.path().join("prometheus.yml");
            self.spawn(&config).await?;
        }
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free port on 127.0.0.1 (bound and released: another process could take it, rarely).
pub fn free_loopback_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("finding a free loopback port")?;
    l.local_addr().context("reading the free port")
}
