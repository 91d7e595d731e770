//! Plugins in OCI registries: pull (the operator) and push (`hoist plugin push`).
//!
//! The artifact layout is the Wasm OCI one the component-model tools use (wasm-pkg-tools /
//! `wkg`): an image manifest whose config has media type
//! `application/vnd.wasm.config.v0+json` and whose one layer, `application/wasm`, is the
//! component. A pull is always HTTPS, bounded in size and time, checked against the cluster's
//! egress policy first, and made with a fresh client each time: a registry token of one
//! namespace's credentials is never reused for another's pull.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hoist_api::OciPluginRef;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use oci_client::Reference;
use oci_client::client::{
    Certificate, CertificateEncoding, ClientConfig, ClientProtocol, Config, ImageLayer,
};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use tokio::io::AsyncWrite;

use crate::hook_access::OperatorEgress;

/// Media type of the component layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of the artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The layer media type of the older wasm-to-oci layout, accepted on pull.
const LEGACY_WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Deadline of one whole pull (manifest and layer).
pub const PULL_TIMEOUT: Duration = Duration::from_mins(2);
/// Largest `.dockerconfigjson` read from a pull secret.
const MAX_DOCKER_CONFIG_BYTES: usize = 64 * 1024;

/// How the operator reaches registries.
#[derive(Clone)]
pub struct RegistrySettings {
    /// CA certificates (PEM) trusted besides the public roots, for registries with a private CA.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// Largest component accepted, in bytes.
    pub max_bytes: u64,
}

impl std::fmt::Debug for RegistrySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySettings")
            .field("extra_cas", &self.extra_ca_pem.len())
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl RegistrySettings {
    /// The client of one pull or push: HTTPS only, with the extra CAs and short connect and
    /// read deadlines.
    fn client(&self) -> Result<oci_client::Client, String> {
        let config = ClientConfig {
            protocol: ClientProtocol::Https,
            extra_root_certificates: self
                .extra_ca_pem
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..ClientConfig::default()
        };
        oci_client::Client::try_from(config).map_err(|e| format!("building the OCI client: {e}"))
    }
}

/// Pulls plugins for the operator.
#[derive(Clone)]
pub struct OciPuller {
    kube: Client,
    settings: RegistrySettings,
}

impl std::fmt::Debug for OciPuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciPuller")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OciPuller {
    pub fn new(kube: Client, settings: RegistrySettings) -> Self {
        Self { kube, settings }
    }

    /// The component `oci` names, for a Scaler in `namespace`; the reason names the field
    /// or the registry's answer when it cannot be had. The registry's address is checked
    /// against `egress` first.
    pub async fn pull(
        &self,
        namespace: &str,
        oci: &OciPluginRef,
        egress: Option<&OperatorEgress>,
    ) -> Result<Vec<u8>, String> {
        let reference: Reference = oci.reference.parse().map_err(|e| {
            format!(
                "spec.hooks.plugin.oci.reference {:?} is not an OCI reference: {e}",
                oci.reference
            )
        })?;
        let registry = reference.resolve_registry().to_string();
        if let Some(egress) = egress {
            egress
                .check(&format!("https://{registry}/"))
                .await
                .map_err(|reason| format!("registry {registry}: {reason}"))?;
        }
        let auth = self.auth(namespace, oci, &registry).await?;
        let client = self.settings.client()?;
        let max = self.settings.max_bytes;
        let pull = async {
            let (manifest, _digest) = client
                .pull_image_manifest(&reference, &auth)
                .await
                .map_err(|e| format!("pulling the manifest of {reference}: {e}"))?;
            let layer = component_layer(&manifest).map_err(|e| format!("{reference}: {e}"))?;
            if u64::try_from(layer.size).unwrap_or(u64::MAX) > max {
                return Err(format!(
                    "{reference}: the component is {} bytes, more than the {max} this operator accepts (--plugin-max-mib)",
                    layer.size
                ));
            }
            let mut out = BoundedBuffer::new(max);
            client
                .pull_blob(&reference, layer, &mut out)
                .await
                .map_err(|e| format!("pulling the component layer of {reference}: {e}"))?;
            Ok(out.into_inner())
        };
        tokio::time::timeout(PULL_TIMEOUT, pull)
            .await
            .map_err(|_| format!("pulling {reference} took longer than {PULL_TIMEOUT:?}"))?
    }

    /// The credentials of the pull: anonymous without a pull secret.
    async fn auth(
        &self,
        namespace: &str,
        oci: &OciPluginRef,
        registry: &str,
    ) -> Result<RegistryAuth, String> {
        let Some(name) = &oci.pull_secret else {
            return Ok(RegistryAuth::Anonymous);
        };
        let field = "spec.hooks.plugin.oci.pullSecret";
        let secret = Api::<Secret>::namespaced(self.kube.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| format!("reading Secret {namespace}/{name} ({field}): {e}"))?
            .ok_or_else(|| format!("Secret {namespace}/{name} ({field}) not found"))?;
        if secret.type_.as_deref() != Some("kubernetes.io/dockerconfigjson") {
            return Err(format!(
                "Secret {namespace}/{name} ({field}) is of type {:?}, not kubernetes.io/dockerconfigjson",
                secret.type_.unwrap_or_default()
            ));
        }
        let config = secret
            .data
            .as_ref()
            .and_then(|d| d.get(".dockerconfigjson"))
            .ok_or_else(|| {
                format!("Secret {namespace}/{name} ({field}) has no .dockerconfigjson key")
            })?;
        registry_auth(&config.0, registry)
            .map_err(|reason| format!("Secret {namespace}/{name} ({field}): {reason}"))
    }
}

/// The one component layer of a Wasm artifact's manifest.
fn component_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor, String> {
    let wasm: Vec<&OciDescriptor> = manifest
        .layers
        .iter()
        .filter(|l| {
            l.media_type == WASM_LAYER_MEDIA_TYPE || l.media_type == LEGACY_WASM_LAYER_MEDIA_TYPE
        })
        .collect();
    match (wasm.as_slice(), manifest.layers.len()) {
        ([layer], 1) => Ok(layer),
        _ => Err(format!(
            "not a Wasm component artifact: it needs exactly one layer of media type {WASM_LAYER_MEDIA_TYPE} (config {WASM_CONFIG_MEDIA_TYPE}), and has [{}] (config {})",
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            manifest.config.media_type
        )),
    }
}

/// The credentials for `registry` in a `.dockerconfigjson`: `auths` keyed by the registry's
/// host (with or without `https://` and a path), each with `username` and `password` or
/// `auth` (base64 of `user:password`).
pub fn registry_auth(config: &[u8], registry: &str) -> Result<RegistryAuth, String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct DockerConfig {
        #[serde(default)]
        auths: std::collections::BTreeMap<String, Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        username: Option<String>,
        password: Option<String>,
        auth: Option<String>,
    }
    if config.len() > MAX_DOCKER_CONFIG_BYTES {
        return Err(format!(
            ".dockerconfigjson is {} bytes, more than {MAX_DOCKER_CONFIG_BYTES}",
            config.len()
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| format!(".dockerconfigjson is not a Docker config: {e}"))?;
    if !value.is_object() {
        return Err(".dockerconfigjson is not a Docker config: not a JSON object".into());
    }
    let parsed: DockerConfig = serde_json::from_value(value)
        .map_err(|e| format!(".dockerconfigjson is not a Docker config: {e}"))?;
    let host_of = |key: &str| {
        let key = key
            .strip_prefix("https://")
            .or_else(|| key.strip_prefix("http://"))
            .unwrap_or(key);
        key.split('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let wanted = registry.to_ascii_lowercase();
    let Some((_, entry)) = parsed.auths.iter().find(|(k, _)| host_of(k) == wanted) else {
        return Err(format!(
            ".dockerconfigjson has no credentials for {registry} (it has: {})",
            parsed
                .auths
                .keys()
                .map(|k| host_of(k))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    match (&entry.username, &entry.password, &entry.auth) {
        (Some(user), Some(password), _) => Ok(RegistryAuth::Basic(user.clone(), password.clone())),
        (_, _, Some(auth)) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| format!("the auth of {registry} is not base64: {e}"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| format!("the auth of {registry} is not UTF-8"))?;
            let (user, password) = text
                .split_once(':')
                .ok_or_else(|| format!("the auth of {registry} is not user:password"))?;
            Ok(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
        }
        _ => Err(format!(
            "the entry of {registry} has neither username and password nor auth"
        )),
    }
}

/// What a push published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `REGISTRY/REPOSITORY@sha256:…`: the pinned reference for `spec.hooks.plugin.oci`.
    pub pinned: String,
    /// The manifest digest (`sha256:…`).
    pub manifest_digest: String,
}

/// Publishes `component` as a Wasm OCI artifact at `reference` (a tag or a repository).
pub async fn push(
    settings: &RegistrySettings,
    reference: &str,
    component: Vec<u8>,
    auth: &RegistryAuth,
) -> Result<Pushed, String> {
    let reference: Reference = reference
        .parse()
        .map_err(|e| format!("{reference:?} is not an OCI reference: {e}"))?;
    let layer = ImageLayer::new(component, WASM_LAYER_MEDIA_TYPE.to_string(), None);
    let config = serde_json::json!({
        "created": jiff::Timestamp::now().to_string(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer.sha256_digest()],
    });
    let config = Config::new(
        serde_json::to_vec(&config).map_err(|e| e.to_string())?,
        WASM_CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    let client = settings.client()?;
    client
        .push(&reference, &[layer], config, auth, Some(manifest))
        .await
        .map_err(|e| format!("pushing to {reference}: {e}"))?;
    let manifest_digest = client
        .fetch_manifest_digest(&reference, auth)
        .await
        .map_err(|e| format!("reading back the digest of {reference}: {e}"))?;
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    Ok(Pushed {
        pinned: format!("{repository}@{manifest_digest}"),
        manifest_digest,
    })
}

/// A byte buffer that refuses to grow past its limit (a registry that sends more than the
/// manifest announced is cut off).
struct BoundedBuffer {
    bytes: Vec<u8>,
    limit: u64,
}

impl BoundedBuffer {
    fn new(limit: u64) -> Self {
        Self {
            bytes: Vec::new(),
            limit,
        }
    }

    fn into_inner(self) -> Vec<u8> {
        self.bytes
    }
}

impl AsyncWrite for BoundedBuffer {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let total = u64::try_from(self.bytes.len() + buf.len()).unwrap_or(u64::MAX);
        if total > self.limit {
            return Poll::Ready(Err(std::io::Error::other(format!(
                "the layer is longer than {} bytes",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_entry_of_the_registry() {
        let basic = |u: &str, p: &str| RegistryAuth::Basic(u.into(), p.into());
        let cases: [(&str, &str, Result<RegistryAuth, &str>); 7] = [
            (
                r#"{"auths":{"r.example":{"username":"u","password":"p"}}}"#,
                "r.example",
                Ok(basic("u", "p")),
            ),
            (
                // base64("u:p:q"): the password may hold ':'.
                r#"{"auths":{"https://R.example/v1/":{"auth":"dTpwOnE="}}}"#,
                "r.example",
                Ok(basic("u", "p:q")),
            ),
            (
                r#"{"auths":{"127.0.0.1:5000":{"auth":"dTpw"}}}"#,
                "127.0.0.1:5000",
                Ok(basic("u", "p")),
            ),
            (
                r#"{"auths":{"other.example":{"auth":"dTpw"}}}"#,
                "r.example",
                Err("no credentials for r.example (it has: other.example)"),
            ),
            (
                r#"{"auths":{"r.example":{"auth":"***"}}}"#,
                "r.example",
                Err("not base64"),
            ),
            (
                r#"{"auths":{"r.example":{}}}"#,
                "r.example",
                Err("neither username and password nor auth"),
            ),
            ("[]", "r.example", Err("not a Docker config")),
        ];
        for (config, registry, want) in cases {
            let got = registry_auth(config.as_bytes(), registry);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(format!("{got:?}"), format!("{want:?}")),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got}"),
                (got, want) => panic!("{config}: got {got:?}, want {want:?}"),
            }
        }
        let huge = vec![b' '; MAX_DOCKER_CONFIG_BYTES + 1];
        assert!(registry_auth(&huge, "r").is_err());
    }

    #[test]
    fn only_a_single_wasm_layer_is_a_plugin() {
        let desc = |media_type: &str| OciDescriptor {
            media_type: media_type.into(),
            ..OciDescriptor::default()
        };
        let manifest = |layers: Vec<OciDescriptor>| OciImageManifest {
            config: desc(WASM_CONFIG_MEDIA_TYPE),
            layers,
            ..OciImageManifest::default()
        };
        assert!(component_layer(&manifest(vec![desc(WASM_LAYER_MEDIA_TYPE)])).is_ok());
        assert!(component_layer(&manifest(vec![desc(LEGACY_WASM_LAYER_MEDIA_TYPE)])).is_ok());
        let image = manifest(vec![desc("application/vnd.oci.image.layer.v1.tar+gzip")]);
        let err = component_layer(&image).unwrap_err();
        assert!(
            err.contains("has [application/vnd.oci.image.layer.v1.tar+gzip]"),
            "{err}"
        );
        let two = manifest(vec![
            desc(WASM_LAYER_MEDIA_TYPE),
            desc(WASM_LAYER_MEDIA_TYPE),
        ]);
        assert!(component_layer(&two).is_err());
    }

    #[tokio::test]
    async fn the_buffer_refuses_bytes_past_its_limit() {
        use tokio::io::AsyncWriteExt as _;
        let mut buffer = BoundedBuffer::new(4);
        buffer.write_all(b"abcd").await.unwrap();
        assert!(buffer.write_all(b"e").await.is_err());
        assert_eq!(buffer.into_inner(), b"abcd");
    }
}
