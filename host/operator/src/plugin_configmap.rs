//! The plugin `ConfigMap` format, written by `hoist plugin pack` and read by the operator.
//!
//! - label `hoist.dev/plugin: <name>` (the operator watches `ConfigMaps` with this label);
//! - annotation `hoist.dev/plugin-sha256: <hex sha256 of the uncompressed component>`;
//! - the component in `binaryData` under `plugin.wasm`, or gzip-compressed under
//!   `plugin.wasm.gz` when only that fits the `ConfigMap` size limit (1 MiB of data in total).

use std::collections::BTreeMap;
use std::io::{Read, Write};

use hoist_types::Digest;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

/// Label naming the plugin; the operator selects plugin `ConfigMaps` by it.
pub const LABEL: &str = "hoist.dev/plugin";
/// Annotation with the hex sha256 of the uncompressed component.
pub const SHA256_ANNOTATION: &str = "hoist.dev/plugin-sha256";
/// Default `binaryData` key of the component.
pub const DEFAULT_KEY: &str = "plugin.wasm";
/// Suffix of the gzip-compressed form of a key.
pub const GZIP_SUFFIX: &str = ".gz";
/// Kubernetes' limit on a `ConfigMap`'s data (keys and values of `data` and `binaryData`).
pub const CONFIGMAP_LIMIT_BYTES: usize = 1024 * 1024;
/// Largest component a compressed entry may expand to (a guard against gzip bombs).
pub const MAX_UNCOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// What went wrong building or reading a plugin `ConfigMap`.
#[derive(Debug, thiserror::Error)]
pub enum PluginConfigMapError {
    /// Building: the name cannot be a `ConfigMap` name and label value.
    #[error("invalid plugin name {name:?}: {reason}")]
    BuildName { name: String, reason: String },
    /// Building: the component does not fit, not even compressed.
    #[error(
        "the plugin is too large for a ConfigMap: {size} bytes, {compressed} bytes gzip-compressed, \
         and a ConfigMap holds at most {limit} bytes. Publish it to an OCI registry \
         instead (`hoist plugin push`, then spec.hooks.plugin.oci), or make it smaller (release build, opt-level \"s\", strip debug info)"
    )]
    BuildTooLarge {
        size: usize,
        compressed: usize,
        limit: usize,
    },
    /// Building: compressing failed.
    #[error("compressing the plugin: {0}")]
    BuildCompress(#[source] std::io::Error),
    /// Reading: neither the key nor its `.gz` form is in `binaryData`.
    #[error(
        "ConfigMap {configmap} has no binaryData key {key:?} (nor {key:?} + \".gz\"); it has: {present}"
    )]
    ReadMissingKey {
        configmap: String,
        key: String,
        present: String,
    },
    /// Reading: the compressed entry does not decompress.
    #[error("ConfigMap {configmap} key {key:?}: not valid gzip data: {source}")]
    ReadDecompress {
        configmap: String,
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// Reading: the compressed entry expands beyond the limit.
    #[error("ConfigMap {configmap} key {key:?}: expands beyond {limit} bytes; refusing it")]
    ReadTooLarge {
        configmap: String,
        key: String,
        limit: usize,
    },
    /// Reading: the bytes do not match the sha256 annotation.
    #[error(
        "ConfigMap {configmap} key {key:?}: sha256 of the component is {actual}, but the \
         annotation {SHA256_ANNOTATION} says {expected}"
    )]
    ReadDigestMismatch {
        configmap: String,
        key: String,
        expected: String,
        actual: String,
    },
}

fn validate_name(name: &str) -> Result<(), PluginConfigMapError> {
    let fail = |reason: &str| PluginConfigMapError::BuildName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 63 {
        return Err(fail(
            "must be 1 to 63 characters (it is also a label value)",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Err(fail(
            "only lower-case letters, digits, '-' and '.' are allowed",
        ));
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err(fail("must start and end with a letter or digit"));
    }
    Ok(())
}

/// Build the `ConfigMap` for a component: plain if it fits, gzip-compressed if only that fits.
pub fn build(
    name: &str,
    namespace: Option<&str>,
    component: &[u8],
) -> Result<ConfigMap, PluginConfigMapError> {
    validate_name(name)?;
    let digest = Digest::of(component).to_string();
    let plain_size = DEFAULT_KEY.len() + component.len();
    let (key, data) = if plain_size <= CONFIGMAP_LIMIT_BYTES {
        (DEFAULT_KEY.to_string(), component.to_vec())
    } else {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder
            .write_all(component)
            .map_err(PluginConfigMapError::BuildCompress)?;
        let compressed = encoder
            .finish()
            .map_err(PluginConfigMapError::BuildCompress)?;
        let key = format!("{DEFAULT_KEY}{GZIP_SUFFIX}");
        if key.len() + compressed.len() > CONFIGMAP_LIMIT_BYTES {
            return Err(PluginConfigMapError::BuildTooLarge {
                size: component.len(),
                compressed: compressed.len(),
                limit: CONFIGMAP_LIMIT_BYTES,
            });
        }
        (key, compressed)
    };
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: namespace.map(ToString::to_string),
            labels: Some(BTreeMap::from([(LABEL.to_string(), name.to_string())])),
            annotations: Some(BTreeMap::from([(SHA256_ANNOTATION.to_string(), digest)])),
            ..ObjectMeta::default()
        },
        binary_data: Some(BTreeMap::from([(key, ByteString(data))])),
        ..ConfigMap::default()
    })
}

fn configmap_name(cm: &ConfigMap) -> String {
    match (&cm.metadata.namespace, &cm.metadata.name) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.clone(),
        _ => "(unnamed)".to_string(),
    }
}

/// The uncompressed component stored under `key` (or under `key` + `.gz`, gzip-compressed),
/// checked against the sha256 annotation when the `ConfigMap` has one.
pub fn component_bytes(cm: &ConfigMap, key: &str) -> Result<Vec<u8>, PluginConfigMapError> {
    let configmap = configmap_name(cm);
    let binary = cm.binary_data.as_ref();
    let gz_key = format!("{key}{GZIP_SUFFIX}");
    let (used_key, bytes) = if let Some(data) = binary.and_then(|b| b.get(key)) {
        if key.ends_with(GZIP_SUFFIX) {
            (key.to_string(), gunzip(&configmap, key, &data.0)?)
        } else {
            (key.to_string(), data.0.clone())
        }
    } else if let Some(data) = binary.and_then(|b| b.get(&gz_key)) {
        (gz_key.clone(), gunzip(&configmap, &gz_key, &data.0)?)
    } else {
        let mut present: Vec<String> = binary
            .map(|b| b.keys().cloned().collect())
            .unwrap_or_default();
        present.extend(
            cm.data
                .as_ref()
                .map(|d| d.keys().map(|k| format!("{k} (in data, not binaryData)")))
                .into_iter()
                .flatten(),
        );
        let present = if present.is_empty() {
            "no keys".to_string()
        } else {
            present.join(", ")
        };
        return Err(PluginConfigMapError::ReadMissingKey {
            configmap,
            key: key.to_string(),
            present,
        });
    };
    if let Some(expected) = cm
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SHA256_ANNOTATION))
    {
        let actual = Digest::of(&bytes);
        if !actual.as_str().eq_ignore_ascii_case(expected.trim()) {
            return Err(PluginConfigMapError::ReadDigestMismatch {
                configmap,
                key: used_key,
                expected: expected.clone(),
                actual: actual.to_string(),
            });
        }
    }
    Ok(bytes)
}

fn gunzip(configmap: &str, key: &str, data: &[u8]) -> Result<Vec<u8>, PluginConfigMapError> {
    let limit = MAX_UNCOMPRESSED_BYTES;
    let mut out = Vec::new();
    let decoder = flate2::read::GzDecoder::new(data);
    decoder
        .take(u64::try_from(limit).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut out)
        .map_err(|source| PluginConfigMapError::ReadDecompress {
            configmap: configmap.to_string(),
            key: key.to_string(),
            source,
        })?;
    if out.len() > limit {
        return Err(PluginConfigMapError::ReadTooLarge {
            configmap: configmap.to_string(),
            key: key.to_string(),
            limit,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic incompressible bytes.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()[0]
            })
            .collect()
    }

    #[test]
    fn small_component_is_stored_plain_and_read_back() {
        let component = noise(200_000, 7);
        let cm = build("trino-drain", Some("hoist-system"), &component).unwrap();
        assert_eq!(cm.metadata.labels.as_ref().unwrap()[LABEL], "trino-drain");
        assert_eq!(
            cm.metadata.annotations.as_ref().unwrap()[SHA256_ANNOTATION],
            Digest::of(&component).as_str()
        );
        assert!(cm.binary_data.as_ref().unwrap().contains_key("plugin.wasm"));
        assert_eq!(component_bytes(&cm, DEFAULT_KEY).unwrap(), component);
    }

    #[test]
    fn large_compressible_component_is_gzipped_and_read_back_by_the_plain_key() {
        let mut component = noise(300_000, 9);
        component.extend(std::iter::repeat_n(0u8, 2 * 1024 * 1024));
        let cm = build("big", None, &component).unwrap();
        let data = cm.binary_data.as_ref().unwrap();
        assert!(data.contains_key("plugin.wasm.gz") && !data.contains_key("plugin.wasm"));
        assert_eq!(component_bytes(&cm, DEFAULT_KEY).unwrap(), component);
        assert_eq!(component_bytes(&cm, "plugin.wasm.gz").unwrap(), component);
    }

    #[test]
    fn incompressible_oversized_component_is_refused_with_sizes() {
        let err = build("huge", None, &noise(1_200_000, 3)).unwrap_err();
        assert!(
            matches!(
                err,
                PluginConfigMapError::BuildTooLarge {
                    size: 1_200_000,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("at most 1048576 bytes"), "{err}");
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "Trino", "-x", "a/b", &"x".repeat(64)] {
            assert!(
                matches!(
                    build(name, None, b"x"),
                    Err(PluginConfigMapError::BuildName { .. })
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn missing_key_names_the_configmap_and_key() {
        let mut cm = build("p", Some("ns"), b"\0asm").unwrap();
        cm.binary_data = Some(BTreeMap::from([(
            "other.wasm".to_string(),
            ByteString(vec![1]),
        )]));
        let err = component_bytes(&cm, "plugin.wasm").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ns/p")
                && text.contains("\"plugin.wasm\"")
                && text.contains("other.wasm"),
            "{text}"
        );
    }

    #[test]
    fn tampered_bytes_fail_the_digest_check_and_unpinned_bytes_pass() {
        let mut cm = build("p", Some("ns"), b"original").unwrap();
        cm.binary_data = Some(BTreeMap::from([(
            "plugin.wasm".to_string(),
            ByteString(b"tampered".to_vec()),
        )]));
        let err = component_bytes(&cm, "plugin.wasm").unwrap_err();
        assert!(
            matches!(err, PluginConfigMapError::ReadDigestMismatch { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("ns/p"), "{err}");
        cm.metadata.annotations = None;
        assert_eq!(component_bytes(&cm, "plugin.wasm").unwrap(), b"tampered");
    }

    #[test]
    fn corrupt_gzip_is_a_clear_error() {
        let mut cm = build("p", Some("ns"), b"x").unwrap();
        cm.binary_data = Some(BTreeMap::from([(
            "plugin.wasm.gz".to_string(),
            ByteString(b"not gzip".to_vec()),
        )]));
        let err = component_bytes(&cm, "plugin.wasm").unwrap_err();
        assert!(
            matches!(err, PluginConfigMapError::ReadDecompress { .. }),
            "{err:?}"
        );
    }
}
