//! Plugin sources → verified plugins, with hot swap.
//!
//! A Scaler names a ConfigMap (labelled `hoist.dev/plugin`) and a key, or an OCI artifact.
//! The registry reads a ConfigMap from a reflector store, pulls an artifact in the background
//! ([`OciPuller`]), hashes the component, and hands back what the state machine needs
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

use hoist_api::{OciPluginRef, PluginLocation, PluginRef};
use hoist_decide::PluginAvailability;
use hoist_sandbox::{Plugin, Sandbox};
use hoist_types::Digest;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc;

use crate::hook_access::{HookAccess, OperatorEgress};
use crate::metrics::{Metrics, ResultLabels};
use crate::plugin_configmap;
use crate::plugin_oci::OciPuller;
use crate::policy::{Admission, Policies};

/// The label that marks a ConfigMap as a plugin source (and lets the operator watch it).
pub const PLUGIN_LABEL: &str = "hoist.dev/plugin";

/// Plugins compiled at once. Each compilation is a worker process of up to the compile
/// memory bound (1 GiB by default) beside the operator: distinct plugins arriving together
/// (tenants' ConfigMaps, OCI pins) queue here instead of adding up. Two, so that one big
/// plugin compiling (an 18 MB Python component takes tens of seconds) does not hold up the
/// next.
pub const MAX_CONCURRENT_COMPILES: usize = 2;

/// Where a plugin comes from: a ConfigMap key or an OCI artifact, for a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceKey {
    ConfigMap {
        namespace: String,
        config_map: String,
        key: String,
    },
    Oci {
        namespace: String,
        /// The artifact and the credentials it is pulled with (another secret is another
        /// source: what one namespace's credentials fetched is not another's).
        oci: OciPluginRef,
    },
}

impl SourceKey {
    pub fn new(namespace: &str, plugin: &PluginRef) -> Self {
        match plugin.location() {
            PluginLocation::ConfigMap { name, key } => Self::ConfigMap {
                namespace: namespace.to_string(),
                config_map: name.to_string(),
                key: key.to_string(),
            },
            PluginLocation::Oci(oci) => Self::Oci {
                namespace: namespace.to_string(),
                oci: oci.clone(),
            },
        }
    }

    pub fn namespace(&self) -> &str {
        match self {
            Self::ConfigMap { namespace, .. } | Self::Oci { namespace, .. } => namespace,
        }
    }
}

impl std::fmt::Display for SourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ConfigMap {
                namespace,
                config_map,
                key,
            } => write!(f, "ConfigMap {namespace}/{config_map} key {key}"),
            Self::Oci { namespace, oci } => {
                write!(
                    f,
                    "OCI artifact {} (for namespace {namespace})",
                    oci.reference
                )
            }
        }
    }
}

/// What happened to a background load; sent so the Scalers of that source reconcile.
#[derive(Debug, Clone)]
pub struct LoadFinished {
    pub source: SourceKey,
    /// The component's digest; none when an OCI pull failed before there were bytes.
    pub digest: Option<Digest>,
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
    /// Where each OCI source's pull stands.
    pulls: HashMap<SourceKey, OciPull>,
}

/// One OCI source's pull.
#[derive(Debug, Clone)]
enum OciPull {
    /// Being pulled (and then loaded) now.
    Pulling,
    /// Pulled: the component the artifact holds (immutable for a digest reference; for a tag,
    /// what it held when pulled).
    Pulled(Digest),
    /// The last attempt failed; the next starts at `retry_at` (a reconcile after it does).
    Failed {
        reason: String,
        attempt: u32,
        retry_at: std::time::Instant,
    },
}

/// Wait before pulling a source again after `attempt` failures: 10 s, doubling to 5 min.
fn pull_backoff(attempt: u32) -> std::time::Duration {
    let secs = 10u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    std::time::Duration::from_secs(secs.min(300))
}

/// The digest (or why there is none) of one version of a plugin ConfigMap.
#[derive(Debug)]
struct SeenVersion {
    uid: Option<String>,
    resource_version: Option<String>,
    digest: Result<Digest, String>,
}

/// What OCI pulls need: the puller, and the cluster's egress rules for the registry address.
#[derive(Clone, Debug)]
pub struct OciSources {
    pub puller: OciPuller,
    pub access: Option<HookAccess>,
}

/// The operator's plugins.
#[derive(Clone)]
pub struct PluginRegistry {
    sandbox: Sandbox,
    configmaps: Store<ConfigMap>,
    /// Pulls OCI plugins; `None` where there is no registry access (unit tests).
    oci: Option<OciSources>,
    inner: Arc<Mutex<Inner>>,
    finished: mpsc::UnboundedSender<LoadFinished>,
    metrics: Arc<Metrics>,
    /// [`MAX_CONCURRENT_COMPILES`] permits.
    compiles: Arc<tokio::sync::Semaphore>,
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
        oci: Option<OciSources>,
        metrics: Arc<Metrics>,
    ) -> (Self, mpsc::UnboundedReceiver<LoadFinished>) {
        let (finished, rx) = mpsc::unbounded_channel();
        (
            Self {
                sandbox,
                configmaps,
                oci,
                inner: Arc::default(),
                finished,
                metrics,
                compiles: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_COMPILES)),
            },
            rx,
        )
    }

    /// Loads `bytes` (verify and compile, or a cache hit) on the blocking pool, once one of the
    /// [`MAX_CONCURRENT_COMPILES`] permits is free.
    async fn load(&self, bytes: Vec<u8>) -> Result<Arc<Plugin>, String> {
        let _permit = self
            .compiles
            .acquire()
            .await
            .map_err(|e| format!("the compile queue is closed: {e}"))?;
        let sandbox = self.sandbox.clone();
        tokio::task::spawn_blocking(move || sandbox.load(&bytes))
            .await
            .map_err(|e| format!("the load task failed: {e}"))?
            .map_err(|e| e.to_string())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ConfigMap of a ConfigMap source, if it is in the store.
    fn config_map_of(&self, source: &SourceKey) -> Option<Arc<ConfigMap>> {
        match source {
            SourceKey::ConfigMap {
                namespace,
                config_map,
                ..
            } => self
                .configmaps
                .get(&ObjectRef::new(config_map).within(namespace)),
            SourceKey::Oci { .. } => None,
        }
    }

    /// The current bytes of a ConfigMap source, if the ConfigMap is there and readable.
    fn read_source(&self, source: &SourceKey) -> Result<Vec<u8>, String> {
        let SourceKey::ConfigMap {
            namespace,
            config_map,
            key,
        } = source
        else {
            return Err(format!("{source} is not read from a ConfigMap"));
        };
        let cm = self.config_map_of(source).ok_or_else(|| {
            format!(
                "ConfigMap {namespace}/{config_map} not found among plugin ConfigMaps (it must exist and carry the label {PLUGIN_LABEL}; `hoist plugin pack` writes one)"
            )
        })?;
        plugin_configmap::component_bytes(&cm, key).map_err(|e| e.to_string())
    }

    /// The digest the source's ConfigMap holds now, hashed only when its version changed;
    /// with the bytes when they had to be decoded for that.
    fn current_digest(&self, source: &SourceKey) -> (Result<Digest, String>, Option<Vec<u8>>) {
        let cm = self.config_map_of(source);
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
        let mut sources: HashSet<SourceKey> = HashSet::new();
        let mut inner = self.lock();
        for s in scalers {
            let namespace = s.metadata.namespace.clone().unwrap_or_default();
            if let Some(hooks) = &s.spec.hooks {
                let source = SourceKey::new(&namespace, &hooks.plugin);
                sources.insert(source.clone());
                if let Some(d) = inner.last_good.get(&source) {
                    keep.insert(d.clone());
                }
                if let Some(Ok(d)) = inner.seen.get(&source).map(|v| &v.digest) {
                    keep.insert(d.clone());
                }
                if let Some(OciPull::Pulled(d)) = inner.pulls.get(&source) {
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
        // What no Scaler names any more is forgotten (a pull in flight finishes first): the
        // map does not grow with every reference a Scaler ever named.
        inner
            .pulls
            .retain(|source, pull| matches!(pull, OciPull::Pulling) || sources.contains(source));
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
    /// background load (and, for an OCI artifact, pull) when the current bytes are not loaded
    /// yet. Only a plugin `policies` admit in `namespace` is compiled: one they refuse is
    /// `NotAdmitted` before any of its code is looked at (and compiled once an admin adds its
    /// digest; the policy watch reconciles its Scalers).
    pub fn availability(
        &self,
        namespace: &str,
        plugin: &PluginRef,
        policies: &Policies,
    ) -> PluginAvailability {
        let source = SourceKey::new(namespace, plugin);
        let pin = plugin.sha256.as_deref();
        if let SourceKey::Oci { .. } = source {
            return self.oci_availability(source, pin, policies);
        }
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
            match policies.admission(namespace, &digest) {
                Admission::Admitted { .. } => {}
                Admission::Refused(reason) => return PluginAvailability::NotAdmitted { reason },
                Admission::NotListedYet => return PluginAvailability::Loading,
            }
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
            let error = this.load(bytes).await.err();
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
                digest: Some(digest),
                error,
            });
        });
    }

    /// [`Self::availability`] of an OCI source: pulled once per reference and credentials
    /// (a digest reference is immutable), pulled again after a failure with a backoff, or when
    /// its plugin was unloaded.
    fn oci_availability(
        &self,
        source: SourceKey,
        pin: Option<&str>,
        policies: &Policies,
    ) -> PluginAvailability {
        let mut inner = self.lock();
        let attempt = match inner.pulls.get(&source) {
            Some(OciPull::Pulling) => return PluginAvailability::Loading,
            Some(OciPull::Pulled(digest)) => {
                let digest = digest.clone();
                if let Some(pin) = pin
                    && pin != digest.as_str()
                {
                    let reason = format!(
                        "{source} holds a plugin with sha256 {digest}, but spec.hooks.plugin.sha256 pins {pin}"
                    );
                    // A tag may be moved to the pinned plugin: look again in a minute.
                    if let SourceKey::Oci { oci, .. } = &source
                        && !oci.reference.contains('@')
                    {
                        let wait = std::time::Duration::from_mins(1);
                        inner.pulls.insert(
                            source.clone(),
                            OciPull::Failed {
                                reason: reason.clone(),
                                attempt: 1,
                                retry_at: std::time::Instant::now() + wait,
                            },
                        );
                        self.wake_later(source.clone(), wait);
                    }
                    return PluginAvailability::Invalid { reason };
                }
                if self.sandbox.get(&digest).is_some() {
                    return PluginAvailability::Ready { digest };
                }
                if let Some(reason) = inner.rejected.get(&digest) {
                    return PluginAvailability::Invalid {
                        reason: format!("{source}: plugin {digest} was rejected: {reason}"),
                    };
                }
                if inner.loading.contains(&digest) {
                    return PluginAvailability::Loading;
                }
                // Pulled, but not loaded: refused by the policies (not compiled), or unloaded
                // since (no Scaler used it for a while). Pull it again once admitted.
                match policies.admission(source.namespace(), &digest) {
                    Admission::Admitted { .. } => 1,
                    Admission::Refused(reason) => {
                        return PluginAvailability::NotAdmitted { reason };
                    }
                    Admission::NotListedYet => return PluginAvailability::Loading,
                }
            }
            Some(OciPull::Failed {
                reason,
                attempt,
                retry_at,
            }) => {
                if std::time::Instant::now() < *retry_at {
                    return PluginAvailability::Invalid {
                        reason: format!("{source}: {reason}"),
                    };
                }
                attempt + 1
            }
            None => 1,
        };
        let Some(oci) = self.oci.clone() else {
            return PluginAvailability::Invalid {
                reason: format!("{source}: this operator pulls no OCI plugins"),
            };
        };
        inner.pulls.insert(source.clone(), OciPull::Pulling);
        drop(inner);
        self.spawn_pull(oci, source, attempt, policies.clone());
        PluginAvailability::Loading
    }

    /// Reconciles the Scalers of `source` again after `wait`, so a retry planned for then
    /// happens.
    fn wake_later(&self, source: SourceKey, wait: std::time::Duration) {
        let again = self.finished.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _ = again.send(LoadFinished {
                source,
                digest: None,
                error: None,
            });
        });
    }

    /// Pulls an OCI source and loads what it holds, in the background; reports like a load.
    fn spawn_pull(&self, oci: OciSources, source: SourceKey, attempt: u32, policies: Policies) {
        let this = self.clone();
        tokio::spawn(async move {
            let SourceKey::Oci {
                namespace,
                oci: reference,
            } = &source
            else {
                return;
            };
            let egress = oci
                .access
                .as_ref()
                .map(|a| OperatorEgress::for_namespace(a, namespace));
            let pulled = oci.puller.pull(namespace, reference, egress.as_ref()).await;
            let result = match pulled {
                Ok(bytes) => {
                    let digest = Digest::of(&bytes);
                    tracing::info!(%source, %digest, bytes = bytes.len(), "plugin pulled");
                    this.lock()
                        .pulls
                        .insert(source.clone(), OciPull::Pulled(digest.clone()));
                    let admitted = matches!(
                        policies.admission(namespace, &digest),
                        Admission::Admitted { .. }
                    );
                    if !admitted {
                        // Not compiled: the Scalers' next reconcile reads NotAdmitted.
                        tracing::info!(%source, %digest, "plugin pulled; no HookPolicy admits it, so it is not compiled");
                        Ok((digest, None, false))
                    } else if this.sandbox.get(&digest).is_some() {
                        Ok((digest, None, false))
                    } else {
                        this.lock().loading.insert(digest.clone());
                        let error = this.load(bytes).await.err();
                        let mut inner = this.lock();
                        inner.loading.remove(&digest);
                        if let Some(reason) = &error {
                            inner.rejected.insert(digest.clone(), reason.clone());
                        }
                        drop(inner);
                        Ok((digest, error, true))
                    }
                }
                Err(reason) => Err(reason),
            };
            let finished = match result {
                Ok((digest, error, loaded_now)) => {
                    let outcome = if error.is_none() { "ok" } else { "rejected" };
                    if loaded_now {
                        this.metrics
                            .plugin_loads
                            .get_or_create(&ResultLabels { result: outcome })
                            .inc();
                    }
                    match &error {
                        None if loaded_now => tracing::info!(%source, %digest, "plugin loaded"),
                        None => {}
                        Some(reason) => {
                            tracing::warn!(%source, %digest, %reason, "plugin rejected");
                        }
                    }
                    LoadFinished {
                        source,
                        digest: Some(digest),
                        error,
                    }
                }
                Err(reason) => {
                    let wait = pull_backoff(attempt);
                    tracing::warn!(%source, %reason, attempt, retry_in = ?wait, "plugin pull failed");
                    this.lock().pulls.insert(
                        source.clone(),
                        OciPull::Failed {
                            reason: format!(
                                "pulling failed (attempt {attempt}, next in {wait:?}): {reason}"
                            ),
                            attempt,
                            retry_at: std::time::Instant::now() + wait,
                        },
                    );
                    this.wake_later(source.clone(), wait);
                    LoadFinished {
                        source,
                        digest: None,
                        error: Some(format!("pulling failed: {reason}")),
                    }
                }
            };
            let _ = this.finished.send(finished);
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
        if let SourceKey::Oci { .. } = source {
            return self.ensure_loaded_oci(&source, digest).await;
        }
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
        let loaded = self.load(bytes).await?;
        self.lock().last_good.insert(source, digest.clone());
        Ok(loaded)
    }

    /// [`Self::ensure_loaded`] of an OCI source: from the precompile cache, else pulled again
    /// (the artifact of a digest reference still holds the operation's plugin).
    async fn ensure_loaded_oci(
        &self,
        source: &SourceKey,
        digest: &Digest,
    ) -> Result<Arc<Plugin>, String> {
        let sandbox = self.sandbox.clone();
        let wanted = digest.clone();
        let cached = tokio::task::spawn_blocking(move || sandbox.load_cached(&wanted))
            .await
            .map_err(|e| format!("the load task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        if let Some(plugin) = cached {
            tracing::info!(%source, %digest, "loaded the operation's plugin from the precompile cache");
            return Ok(plugin);
        }
        let (
            Some(oci),
            SourceKey::Oci {
                namespace,
                oci: reference,
            },
        ) = (&self.oci, source)
        else {
            return Err(format!("{source}: this operator pulls no OCI plugins"));
        };
        let egress = oci
            .access
            .as_ref()
            .map(|a| OperatorEgress::for_namespace(a, namespace));
        let bytes = oci
            .puller
            .pull(namespace, reference, egress.as_ref())
            .await?;
        let pulled = Digest::of(&bytes);
        if pulled != *digest {
            return Err(format!(
                "the operation runs plugin {digest}, which is neither loaded nor in the precompile cache, and {source} now holds {pulled}; retry the Scaler to start over with the current plugin"
            ));
        }
        let loaded = self.load(bytes).await?;
        self.lock()
            .pulls
            .insert(source.clone(), OciPull::Pulled(digest.clone()));
        Ok(loaded)
    }
}
