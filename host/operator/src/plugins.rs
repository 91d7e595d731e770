//! Plugin sources → verified plugins, with hot swap.
//!
//! A Scaler names a ConfigMap (labelled `hoist.dev/plugin`) and a key. The registry reads it
//! from a reflector store, hashes the component, and hands back what the state machine needs
//! ([`PluginAvailability`]). Loading (verify + compile, or a disk-cache hit) runs in the
//! background; when it finishes, the Scalers using that ConfigMap are reconciled again.
//!
//! Hot swap: a changed ConfigMap is a new digest. New operations get it once it verified; an
//! operation in flight keeps the digest recorded in its status (the sandbox keeps every
//! digest it loaded). A bad new version does not replace the last good one of that source:
//! Scalers keep using the previous digest (unless their sha256 pin names another) and get a
//! Warning event naming the reason.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use hoist_api::PluginRef;
use hoist_decide::PluginAvailability;
use hoist_sandbox::{Plugin, Sandbox};
use hoist_types::Digest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::metrics::{Metrics, ResultLabels};
use crate::plugin_configmap;

/// The label that marks a ConfigMap as a plugin source (and lets the operator watch it).
pub const PLUGIN_LABEL: &str = "hoist.dev/plugin";

/// Where a plugin comes from: a ConfigMap key in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceKey {
    pub namespace: String,
    pub config_map: String,
    pub key: String,
}

impl SourceKey {
    pub fn new(namespace: &str, plugin: &PluginRef) -> Self {
        Self {
            namespace: namespace.to_string(),
            config_map: plugin.config_map.clone(),
            key: plugin.effective_key().to_string(),
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConfigMap {}/{} key {}",
            self.namespace, self.config_map, self.key
        )
    }
}

/// What happened to a background load; sent so the Scalers of that source reconcile.
#[derive(Debug, Clone)]
pub struct LoadFinished {
    pub source: SourceKey,
    pub digest: Digest,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The last digest of each source that verified.
    last_good: HashMap<SourceKey, Digest>,
    /// Digests that failed to load, with why.
    rejected: HashMap<Digest, String>,
    /// Digests being loaded now.
    loading: HashSet<Digest>,
    /// What each source's ConfigMap version holds: decoded and hashed once per (uid,
    /// resourceVersion), not on every reconcile.
    seen: HashMap<SourceKey, SeenVersion>,
}

/// The digest (or why there is none) of one version of a plugin ConfigMap.
#[derive(Debug)]
struct SeenVersion {
    uid: Option<String>,
    resource_version: Option<String>,
    digest: Result<Digest, String>,
}

/// The operator's plugins.
#[derive(Clone)]
pub struct PluginRegistry {
    sandbox: Sandbox,
    configmaps: Store<ConfigMap>,
    inner: Arc<Mutex<Inner>>,
    finished: mpsc::UnboundedSender<LoadFinished>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

impl PluginRegistry {
    pub fn new(
        sandbox: Sandbox,
        configmaps: Store<ConfigMap>,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<LoadFinished>) {
        let (finished, rx) = mpsc::unbounded_channel();
        (
            Self {
                sandbox,
                configmaps,
                inner: Arc::default(),
                finished,
                metrics,
            },
            rx,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current bytes of a source, if the ConfigMap is there and readable.
    fn read_source(&self, source: &SourceKey) -> Result<Vec<u8>, String> {
        let cm = self
            .configmaps
            .get(&ObjectRef::new(&source.config_map).within(&source.namespace))
            .ok_or_else(|| {
                format!(
                    "ConfigMap {}/{} not found among plugin ConfigMaps (it must exist and carry the label {PLUGIN_LABEL}; `hoist plugin pack` writes one)",
                    source.namespace, source.config_map
                )
            })?;
        plugin_configmap::component_bytes(&cm, &source.key).map_err(|e| e.to_string())
    }

    /// The digest the source's ConfigMap holds now, hashed only when its version changed;
    /// with the bytes when they had to be decoded for that.
    fn current_digest(&self, source: &SourceKey) -> (Result<Digest, String>, Option<Vec<u8>>) {
        let cm = self
            .configmaps
            .get(&ObjectRef::new(&source.config_map).within(&source.namespace));
        let version = cm.as_ref().map(|cm| {
            (
                cm.metadata.uid.clone(),
                cm.metadata.resource_version.clone(),
            )
        });
        if let Some((uid, rv)) = &version
            && let Some(seen) = self.lock().seen.get(source)
            && seen.uid == *uid
            && seen.resource_version == *rv
        {
            return (seen.digest.clone(), None);
        }
        let bytes = self.read_source(source);
        let digest = bytes.as_ref().map(|b| Digest::of(b)).map_err(Clone::clone);
        if let Some((uid, resource_version)) = version {
            self.lock().seen.insert(
                source.clone(),
                SeenVersion {
                    uid,
                    resource_version,
                    digest: digest.clone(),
                },
            );
        }
        (digest, bytes.ok())
    }

    /// Unloads the compiled plugins no Scaler needs any more: neither the current digest of a
    /// source a Scaler names, nor the digest of an operation in flight. The precompiled
    /// artifacts stay on disk (an operation can load its digest from there again).
    pub fn retain(&self, scalers: &[std::sync::Arc<hoist_api::Scaler>]) -> usize {
        let mut keep: HashSet<Digest> = HashSet::new();
        let inner = self.lock();
        for s in scalers {
            let namespace = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(hooks) = &s.spec.hooks {
                let source = SourceKey::new(&namespace, &hooks.plugin);
                if let Some(d) = inner.last_good.get(&source) {
                    keep.insert(d.clone());
                }
                if let Some(Ok(d)) = inner.seen.get(&source).map(|v| &v.digest) {
                    keep.insert(d.clone());
                }
            }
            if let Some(d) = s
                .status
                .as_ref()
                .and_then(|st| st.operation.as_ref())
                .and_then(|op| op.plugin_digest.as_deref())
                // Text that is not a digest names no loaded plugin.
                .and_then(|d| Digest::parse(d).ok())
            {
                keep.insert(d);
            }
        }
        keep.extend(inner.loading.iter().cloned());
        drop(inner);
        let mut unloaded = 0;
        for digest in self.sandbox.loaded_digests() {
            if !keep.contains(&digest) && self.sandbox.unload(&digest) {
                tracing::info!(%digest, "unloaded a plugin no Scaler uses");
                unloaded += 1;
            }
        }
        unloaded
    }

    /// What the state machine should know about the plugin a Scaler names, starting a
    /// background load when the current bytes are not loaded yet.
    pub fn availability(&self, namespace: &str, plugin: &PluginRef) -> PluginAvailability {
        let source = SourceKey::new(namespace, plugin);
        let pin = plugin.sha256.as_deref();
        let fallback = |reason: String, inner: &Inner| match inner.last_good.get(&source) {
            Some(good)
                if pin.is_none_or(|p| p == good.as_str()) && self.sandbox.get(good).is_some() =>
            {
                PluginAvailability::Ready {
                    digest: good.clone(),
                }
            }
            _ => PluginAvailability::Invalid { reason },
        };
        let (digest, bytes) = match self.current_digest(&source) {
            (Ok(digest), bytes) => (digest, bytes),
            (Err(reason), _) => return fallback(reason, &self.lock()),
        };
        if let Some(pin) = pin
            && pin != digest.as_str()
        {
            let reason = format!(
                "{source} holds a plugin with sha256 {digest}, but spec.hooks.plugin.sha256 pins {pin}"
            );
            return fallback(reason, &self.lock());
        }
        if self.sandbox.get(&digest).is_some() {
            self.lock().last_good.insert(source, digest.clone());
            return PluginAvailability::Ready { digest };
        }
        let mut inner = self.lock();
        if let Some(reason) = inner.rejected.get(&digest) {
            let reason = format!("{source}: plugin {digest} was rejected: {reason}");
            return fallback(reason, &inner);
        }
        if !inner.loading.contains(&digest) {
            // The bytes: decoded above on a new version, or read again now (rare: the version
            // was seen before but its digest is not loaded, e.g. after it was unloaded).
            let bytes = match bytes {
                Some(b) => Ok(b),
                None => self.read_source(&source),
            };
            match bytes {
                Ok(bytes) if Digest::of(&bytes) == digest => {
                    inner.loading.insert(digest.clone());
                    self.spawn_load(source.clone(), digest.clone(), bytes);
                }
                Ok(_) | Err(_) => {
                    // Changed under us: the next reconcile sees the new version.
                    inner.seen.remove(&source);
                }
            }
        }
        // While the new version loads, the last good one (if any) serves new operations.
        match inner.last_good.get(&source) {
            Some(good)
                if pin.is_none_or(|p| p == good.as_str()) && self.sandbox.get(good).is_some() =>
            {
                PluginAvailability::Ready {
                    digest: good.clone(),
                }
            }
            _ => PluginAvailability::Loading,
        }
    }

    fn spawn_load(&self, source: SourceKey, digest: Digest, bytes: Vec<u8>) {
        let this = self.clone();
        tokio::spawn(async move {
            let sandbox = this.sandbox.clone();
            let result = tokio::task::spawn_blocking(move || sandbox.load(&bytes)).await;
            let error = match result {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(join) => Some(format!("the load task failed: {join}")),
            };
            {
                let mut inner = this.lock();
                inner.loading.remove(&digest);
                match &error {
                    None => {
                        inner.last_good.insert(source.clone(), digest.clone());
                    }
                    Some(reason) => {
                        inner.rejected.insert(digest.clone(), reason.clone());
                    }
                }
            }
            let result = if error.is_none() { "ok" } else { "rejected" };
            this.metrics
                .plugin_loads
                .get_or_create(&ResultLabels { result })
                .inc();
            match &error {
                None => tracing::info!(%source, %digest, "plugin loaded"),
                Some(reason) => tracing::warn!(%source, %digest, %reason, "plugin rejected"),
            }
            let _ = this.finished.send(LoadFinished {
                source,
                digest,
                error,
            });
        });
    }

    /// Makes sure the plugin with `digest` is loaded for a hook call: loads it now from its
    /// source when the source still holds those bytes (after a restart, for example).
    pub async fn ensure_loaded(
        &self,
        namespace: &str,
        plugin: &PluginRef,
        digest: &Digest,
    ) -> Result<Arc<Plugin>, String> {
        if let Some(p) = self.sandbox.get(digest) {
            return Ok(p);
        }
        let source = SourceKey::new(namespace, plugin);
        let current = self.read_source(&source);
        if current
            .as_ref()
            .map_or(true, |bytes| Digest::of(bytes) != *digest)
        {
            // The source moved on (or is gone) since the operation started, e.g. a swap and a
            // restart mid-operation: the precompiled artifact of its digest is still on disk.
            let sandbox = self.sandbox.clone();
            let wanted = digest.clone();
            let cached = tokio::task::spawn_blocking(move || sandbox.load_cached(&wanted))
                .await
                .map_err(|e| format!("the load task failed: {e}"))?
                .map_err(|e| e.to_string())?;
            return match (cached, current) {
                (Some(plugin), _) => {
                    tracing::info!(%source, %digest, "loaded the operation's plugin from the precompile cache");
                    Ok(plugin)
                }
                (None, Ok(bytes)) => Err(format!(
                    "the operation runs plugin {digest}, which is neither loaded nor in the precompile cache, and {source} now holds {}; retry the Scaler to start over with the current plugin",
                    Digest::of(&bytes)
                )),
                (None, Err(reason)) => Err(reason),
            };
        }
        let Ok(bytes) = current else {
            return Err(format!("{source} cannot be read"));
        };
        let sandbox = self.sandbox.clone();
        let loaded = tokio::task::spawn_blocking(move || sandbox.load(&bytes))
            .await
            .map_err(|e| format!("the load task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        self.lock().last_good.insert(source, digest.clone());
        Ok(loaded)
    }
}
