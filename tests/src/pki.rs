//! Certificates for one test, made with the `openssl` CLI: a CA, a server certificate for
//! the loopback IPs a test server listens on, and a client certificate signed by the same CA
//! (the fake NiFi's mutual TLS, the registry's HTTPS).

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// `n` random bytes from the kernel, as lowercase hex.
pub fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    }))
}

/// PEM certificates and keys made for one test.
#[derive(Clone)]
pub struct Pki {
    /// The CA's certificate (the bundle a client trusts).
    pub ca_cert: String,
    /// The server's certificate, for the IPs given to [`Pki::generate`].
    pub server_cert: String,
    /// The server's key (PKCS#8).
    pub server_key: String,
    /// A client certificate signed by the CA (`tls.crt` of a kubernetes.io/tls Secret).
    pub client_cert: String,
    /// Its key (`tls.key`).
    pub client_key: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

const REQ_HEAD: &str = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n";

/// Runs `openssl` in `dir` with `args` (split at spaces: file names here have none).
fn openssl(dir: &Path, args: &str) -> Result<()> {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .context("running openssl (install the openssl CLI)")?;
    if !out.status.success() {
        bail!(
            "openssl {args} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A P-256 key `name.key` and a certificate `name.crt` for `cn` signed by `ca.crt`, with `ext`
/// added to the end-entity extensions.
fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) -> Result<()> {
    let cnf = format!(
        "{REQ_HEAD}CN = {cn}\n[ext]\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\nauthorityKeyIdentifier = keyid\n{ext}\n"
    );
    std::fs::write(dir.join(format!("{name}.cnf")), cnf)?;
    openssl(
        dir,
        &format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
             -out {name}.csr -config {name}.cnf"
        ),
    )?;
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -set_serial 0x{} -days 2 \
             -extfile {name}.cnf -extensions ext -out {name}.crt",
            random_hex(8)?
        ),
    )
}

impl Pki {
    /// A fresh CA, a server certificate for `server_ips` and a client certificate, made with
    /// the `openssl` CLI in a temporary directory.
    pub fn generate(server_ips: &[IpAddr]) -> Result<Pki> {
        let tmp = tempfile::tempdir().context("creating a directory for certificates")?;
        let dir = tmp.path();
        std::fs::write(
            dir.join("ca.cnf"),
            format!(
                "{REQ_HEAD}CN = hoist-test-ca-{}\n[ext]\nbasicConstraints = critical,CA:TRUE\n\
                 keyUsage = critical,keyCertSign,cRLSign\nsubjectKeyIdentifier = hash\n",
                random_hex(4)?
            ),
        )?;
        openssl(
            dir,
            "req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.crt -days 2 -config ca.cnf -extensions ext",
        )?;
        let sans = server_ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .collect::<Vec<_>>()
            .join(",");
        leaf(
            dir,
            "server",
            "hoist-test-server",
            &format!("extendedKeyUsage = serverAuth\nsubjectAltName = {sans}"),
        )?;
        leaf(
            dir,
            "client",
            "hoist-test-operator",
            "extendedKeyUsage = clientAuth",
        )?;
        let read =
            |f: &str| std::fs::read_to_string(dir.join(f)).with_context(|| format!("reading {f}"));
        Ok(Pki {
            ca_cert: read("ca.crt")?,
            server_cert: read("server.crt")?,
            server_key: read("server.key")?,
            client_cert: read("client.crt")?,
            client_key: read("client.key")?,
        })
    }

    /// A rustls server config: this server certificate, client certificates from this CA
    /// required.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_cert.as_bytes()) {
            roots.add(cert.context("parsing the CA certificate")?)?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .context("building the client certificate verifier")?;
        let chain = CertificateDer::pem_slice_iter(self.server_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .context("parsing the server certificate")?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key.as_bytes())
            .context("parsing the server key")?;
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("building the TLS server config")
    }
}
