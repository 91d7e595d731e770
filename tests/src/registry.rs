//! A real OCI registry for plugin tests: the CNCF Distribution registry (`tests/registry/build`
//! builds it from its Go module), on a loopback address, serving HTTPS with a certificate from a
//! CA made for the test ([`Pki`]) and requiring basic auth (an htpasswd file with a bcrypt hash
//! of a random password).
//!
//! - The process is killed on drop (and by [`Registry::stop`]); [`Registry::restart`] starts it
//!   again on the same address with the same storage.
//! - Its log is kept in its temporary directory ([`Registry::log`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::pki::{Pki, random_hex};
use crate::prometheus::free_loopback_port;
use crate::repo_root;

/// The registry user of every test registry.
pub const USERNAME: &str = "hoist-test";

/// A running registry.
pub struct Registry {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    password: String,
    pki: Pki,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// `tests/registry/build` once per process: the registry binary's path.
pub fn registry_bin() -> Result<&'static Path> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let bin = BIN.get_or_init(|| {
        let script = repo_root().join("tests/registry/build");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "tests/registry/build failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    });
    match bin {
        Ok(p) => Ok(p.as_path()),
        Err(e) => bail!("{e}"),
    }
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until it answers.
    pub async fn start() -> Result<Registry> {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let pki = Pki::generate(&[ip])?;
        let dir = tempfile::Builder::new()
            .prefix("hoist-registry-")
            .tempdir()
            .context("creating the registry's directory")?;
        let password = random_hex(16)?;
        let hash = bcrypt::hash(&password, 6).context("hashing the registry password")?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).with_context(|| format!("writing {name}"))
        };
        write("htpasswd", &format!("{USERNAME}:{hash}\n"))?;
        write("server.crt", &pki.server_cert)?;
        write("server.key", &pki.server_key)?;
        write("ca.crt", &pki.ca_cert)?;
        let mut registry = Registry {
            child: None,
            addr: free_loopback_port()?,
            dir,
            password,
            pki,
        };
        let mut attempt = 0;
        loop {
            match registry.spawn().await {
                Ok(()) => return Ok(registry),
                // The free port picked may be taken before the registry binds it: retry.
                Err(_) if attempt < 2 && registry.log().contains("address already in use") => {
                    registry.stop();
                    registry.addr = free_loopback_port()?;
                    attempt += 1;
                }
                Err(e) => {
                    registry.stop();
                    let log = registry.log();
                    return Err(e.context(format!("registry log (last lines):\n{log}")));
                }
            }
        }
    }

    fn config(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: {secret}\n  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n\
             auth:\n  htpasswd:\n    realm: hoist-test\n    path: {d}/htpasswd\n",
            addr = self.addr,
            secret = random_hex(16).unwrap_or_default(),
        )
    }

    /// Runs the binary and waits until `/v2/` answers 401 (up, and asking for credentials).
    async fn spawn(&mut self) -> Result<()> {
        let config = self.dir.path().join("config.yml");
        std::fs::write(&config, self.config()).context("writing the registry config")?;
        let log = std::fs::File::create(self.log_path()).context("creating the registry log")?;
        let log_err = log.try_clone().context("cloning the log handle")?;
        let child = Command::new(registry_bin()?)
            .arg("serve")
            .arg(&config)
            .current_dir(self.dir.path())
            // The registry reads OTEL_* variables; none of the test machine's should reach it.
            .env("OTEL_TRACES_EXPORTER", "none")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .context("starting the registry")?;
        self.child = Some(child);
        let http = reqwest::Client::builder()
            .no_proxy()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca_cert.as_bytes())
                    .context("parsing the registry's CA")?,
            )
            .timeout(Duration::from_secs(5))
            .build()
            .context("building an HTTP client")?;
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().context("polling the registry")?
            {
                bail!("the registry exited with {status}");
            }
            let last = match http.get(format!("https://{}/v2/", self.addr)).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::UNAUTHORIZED => return Ok(()),
                Ok(r) => format!("/v2/ answered {}", r.status()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "the registry on {} did not answer within 60 s; last: {last}",
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `127.0.0.1:PORT`: the registry part of a reference.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The password of [`USERNAME`].
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The PEM file of the CA that signed the registry's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A `.dockerconfigjson` with this registry's credentials.
    pub fn docker_config_json(&self) -> String {
        serde_json::json!({"auths": {self.host(): {"username": USERNAME, "password": self.password}}})
            .to_string()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last 40 lines of the registry's log.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// How many lines of the whole log (the access log included) contain `text`.
    pub fn log_lines_containing(&self, text: &str) -> usize {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Kills the registry (an outage: connections are refused).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same address and storage.
    pub async fn restart(&mut self) -> Result<()> {
        if self.child.is_none() {
            self.spawn().await?;
        }
        Ok(())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}
