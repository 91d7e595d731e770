//! TLS for outgoing requests: which servers are trusted, and the client certificate.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::SandboxError;

/// TLS settings of one Scaler's hooks, as PEM text (from a Secret or `ConfigMap`).
///
/// Build the client configuration once with [`TlsSettings::client_config`] and reuse it for
/// every call ([`crate::CallOptions::with_tls`]): parsing certificates is not free.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// CA certificates to trust, instead of the public roots (only these are trusted then).
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Client certificate chain (leaf first) for mutual TLS.
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key (PKCS#8, PKCS#1 or SEC1). Not shown by `Debug`;
    /// [`TlsSettings::client_config`] does not keep it (rustls keeps the parsed key), so the
    /// settings can be dropped once the configuration is built.
    pub client_key_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map(Vec::len);
        f.debug_struct("TlsSettings")
            .field("ca_bundle_pem_bytes", &len(&self.ca_bundle_pem))
            .field("client_cert_pem_bytes", &len(&self.client_cert_pem))
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

fn setup(message: impl Into<String>) -> SandboxError {
    SandboxError::TlsSetup(message.into())
}

/// What is wrong with PEM text, without quoting any of it.
fn pem_problem(err: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error;
    match err {
        Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        Error::Base64Decode(_) => "a PEM section is not valid base64",
        Error::NoItemsFound => "no PEM section of the expected kind",
        _ => "the PEM text cannot be read",
    }
}

impl TlsSettings {
    /// The rustls client configuration: HTTP/1.1 (ALPN), TLS 1.2 and 1.3 with the ring
    /// provider, trusting the CA bundle when one is given (only it), else the public roots
    /// (`webpki-roots`, as wasmtime-wasi-http's default sender); with the client certificate
    /// and key when given (both or neither).
    ///
    /// Errors are [`SandboxError::TlsSetup`] naming what is wrong, never quoting the PEM.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, SandboxError> {
        let roots = match &self.ca_bundle_pem {
            Some(pem) => {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup(format!("CA bundle: {}", pem_problem(&e))))?;
                if certs.is_empty() {
                    return Err(setup("CA bundle: no PEM certificate in it"));
                }
                let mut roots = rustls::RootCertStore::empty();
                for (i, cert) in certs.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        setup(format!(
                            "CA bundle: certificate {} is not a usable CA certificate: {e}",
                            i + 1
                        ))
                    })?;
                }
                roots
            }
            None => public_roots(),
        };
        let builder = builder()?.with_root_certificates(roots);
        let mut config = match (&self.client_cert_pem, &self.client_key_pem) {
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(setup(
                    "a client certificate is given without its private key",
                ));
            }
            (None, Some(_)) => {
                return Err(setup(
                    "a client private key is given without its certificate",
                ));
            }
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| setup(format!("client certificate: {}", pem_problem(&e))))?;
                if chain.is_empty() {
                    return Err(setup("client certificate: no PEM certificate in it"));
                }
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                    setup(format!(
                        "client private key: {} (PKCS#8, PKCS#1 or SEC1 expected)",
                        pem_problem(&e)
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => {
                            setup("the client private key does not match the client certificate")
                        }
                        other => setup(format!(
                            "the client certificate or private key is unusable: {other}"
                        )),
                    })?
            }
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, SandboxError> {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| setup(format!("TLS provider: {e}")))
}

fn public_roots() -> rustls::RootCertStore {
    rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The configuration of calls without TLS settings: public roots, no client certificate.
/// Built once per process.
pub(crate) fn public_roots_config() -> Result<Arc<ClientConfig>, SandboxError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let config = TlsSettings::default().client_config()?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

#[cfg(test)]
mod tests {
    use super::TlsSettings;
    use crate::SandboxError;

    fn message(settings: &TlsSettings) -> String {
        match settings.client_config() {
            Err(SandboxError::TlsSetup(m)) => m,
            other => panic!("expected TlsSetup, got {other:?}"),
        }
    }

    #[test]
    fn public_roots_without_settings() {
        assert!(TlsSettings::default().client_config().is_ok());
    }

    #[test]
    fn bad_settings_say_what_is_wrong_without_quoting_them() {
        let secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n".to_vec();
        let cases = [
            (
                TlsSettings {
                    ca_bundle_pem: Some(b"not pem at all".to_vec()),
                    ..TlsSettings::default()
                },
                "CA bundle: no PEM certificate in it",
            ),
            (
                TlsSettings {
                    client_cert_pem: Some(b"x".to_vec()),
                    ..TlsSettings::default()
                },
                "a client certificate is given without its private key",
            ),
            (
                TlsSettings {
                    client_key_pem: Some(secret.clone()),
                    ..TlsSettings::default()
                },
                "a client private key is given without its certificate",
            ),
        ];
        for (settings, want) in cases {
            assert_eq!(message(&settings), want);
            assert_eq!(
                settings.client_config().map(|_| ()).map_err(|e| e.reason()),
                Err("TlsSetup")
            );
        }
        let debug = format!(
            "{:?}",
            TlsSettings {
                client_key_pem: Some(secret),
                ..TlsSettings::default()
            }
        );
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
    }
}
