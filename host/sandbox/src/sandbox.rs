//! The engine, plugin loading and verification.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use hoist_types::Digest;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{self, HookPre};
use crate::cache::DiskCache;
use crate::config::SandboxConfig;
use crate::error::SandboxError;
use crate::host::HostState;
use crate::plugin::{LoadSource, Plugin};
use crate::{HOOKS_INTERFACE, WIT_VERSION};

/// Counters of how loads were served, since the sandbox was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Loads answered from memory (same digest already loaded).
    pub memory_hits: u64,
    /// Loads answered from the on-disk precompiled cache.
    pub disk_hits: u64,
    /// Loads that compiled the component.
    pub compiled: u64,
}

/// The plugin sandbox: one wasmtime engine, the loaded plugins, and the hook runner.
/// Cheap to clone; all clones share the engine and the loaded plugins.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) config: SandboxConfig,
    cache: Option<DiskCache>,
    plugins: Mutex<HashMap<Digest, Arc<Plugin>>>,
    memory_hits: AtomicU64,
    disk_hits: AtomicU64,
    compiled: AtomicU64,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.inner.config)
            .field("loaded", &self.loaded_digests())
            .finish_non_exhaustive()
    }
}

/// The wasmtime configuration hoist runs plugins with.
pub(crate) fn engine_config(config: &SandboxConfig) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.wasm_component_model(true);
    let slots = config.max_concurrent_calls.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        // A Rust component has a handful of core instances (the program plus shims).
        .total_core_instances(slots.saturating_mul(8))
        .max_core_instances_per_component(32)
        .total_memories(slots.saturating_mul(2))
        .max_memories_per_component(4)
        .total_tables(slots.saturating_mul(8))
        .max_tables_per_component(16)
        .total_stacks(slots)
        .max_memory_size(usize::try_from(config.memory_limit_bytes).unwrap_or(usize::MAX))
        .max_unused_warm_slots(slots.min(16));
    c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    c
}

impl Sandbox {
    /// Create the engine (async, epoch interruption with a ticker thread, pooling allocator)
    /// and, if configured, open the precompiled-artifact cache.
    pub fn new(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| SandboxError::EngineSetup(format!("{e:#}")))?;
        let mut linker = Linker::<HostState>::new(&engine);
        let setup = |e: wasmtime::Error| SandboxError::EngineSetup(format!("{e:#}"));
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(setup)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(setup)?;
        bindings::log::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;
        bindings::types::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;
        bindings::secrets::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(setup)?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(DiskCache::open(dir, &engine)?),
            None => None,
        };
        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(&engine, config.epoch_tick, ticker_stop.clone())?;
        Ok(Sandbox {
            inner: Arc::new(Inner {
                engine,
                linker,
                config,
                cache,
                plugins: Mutex::new(HashMap::new()),
                memory_hits: AtomicU64::new(0),
                disk_hits: AtomicU64::new(0),
                compiled: AtomicU64::new(0),
                ticker_stop,
            }),
        })
    }

    /// The wasmtime engine (for benchmarks and tools that need the raw floor).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration the sandbox was created with.
    pub fn config(&self) -> &SandboxConfig {
        &self.inner.config
    }

    /// Load and verify a plugin. Same bytes → the same `Arc<Plugin>`.
    pub fn load(&self, bytes: &[u8]) -> Result<Arc<Plugin>, SandboxError> {
        self.load_with_source(bytes).map(|(plugin, _)| plugin)
    }

    /// Like [`Sandbox::load`], also telling where the compiled code came from.
    ///
    /// CPU-heavy on a miss (compilation takes tens to hundreds of milliseconds): call it from
    /// a blocking-friendly context (`tokio::task::spawn_blocking`) in async code.
    pub fn load_with_source(
        &self,
        bytes: &[u8],
    ) -> Result<(Arc<Plugin>, LoadSource), SandboxError> {
        let digest = Digest::of(bytes);
        if let Some(plugin) = self.get(&digest) {
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok((plugin, LoadSource::Memory));
        }
        sniff(bytes)?;
        let started = Instant::now();
        let cached = self
            .inner
            .cache
            .as_ref()
            .and_then(|c| c.load(&self.inner.engine, &digest));
        let (component, source) = if let Some(component) = cached {
            (component, LoadSource::DiskCache)
        } else {
            let component = Component::new(&self.inner.engine, bytes)
                .map_err(|e| SandboxError::LoadCompile(format!("{e:#}")))?;
            (component, LoadSource::Compiled)
        };
        let plugin = self.verify(&component, &digest, bytes.len())?;
        if source == LoadSource::Compiled
            && let Some(cache) = &self.inner.cache
            && let Err(err) = cache.store(&component, &digest)
        {
            // The plugin works; only the next process start pays for compiling again.
            tracing::warn!(digest = %digest, error = %err, "cannot write precompiled plugin to the cache");
        }
        match source {
            LoadSource::DiskCache => self.inner.disk_hits.fetch_add(1, Ordering::Relaxed),
            _ => self.inner.compiled.fetch_add(1, Ordering::Relaxed),
        };
        tracing::info!(
            digest = %digest,
            size = bytes.len(),
            source = %source,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "plugin loaded"
        );
        Ok((self.insert(digest, plugin), source))
    }

    /// Load a plugin by digest alone: from memory, or else from the on-disk cache of
    /// precompiled plugins ([`SandboxConfig::cache_dir`]), for when its bytes are no longer
    /// available (an operation in flight after a restart, whose `ConfigMap` already holds a
    /// newer version).
    ///
    /// `Ok(None)` when the plugin is neither loaded nor cached: no cache directory, no entry
    /// for this digest and engine, or an entry that the cache does not trust (not a private
    /// regular file of the cache's owner) or wasmtime cannot read; those are logged. A cached entry is verified like
    /// [`Sandbox::load_with_source`] verifies bytes (world, exports, WIT version, imports),
    /// with the same errors.
    ///
    /// The returned plugin's [`Plugin::size`] is 0: the cache keeps compiled code, not the
    /// component's size. Counted as a disk hit in [`Sandbox::stats`]. Maps a file; cheap
    /// next to compiling, but blocking I/O.
    pub fn load_cached(&self, digest: &Digest) -> Result<Option<Arc<Plugin>>, SandboxError> {
        if let Some(plugin) = self.get(digest) {
            self.inner.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(plugin));
        }
        let Some(cache) = &self.inner.cache else {
            return Ok(None);
        };
        let started = Instant::now();
        let Some(component) = cache.load(&self.inner.engine, digest) else {
            return Ok(None);
        };
        let plugin = self.verify(&component, digest, 0)?;
        self.inner.disk_hits.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            digest = %digest,
            source = %LoadSource::DiskCache,
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "plugin loaded by digest from the precompiled cache"
        );
        Ok(Some(self.insert(digest.clone(), plugin)))
    }

    /// Add a verified plugin to the loaded ones; another thread may have loaded the same
    /// digest meanwhile: the first one stays, and is returned.
    fn insert(&self, digest: Digest, plugin: Plugin) -> Arc<Plugin> {
        let plugin = Arc::new(plugin);
        self.inner
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(digest)
            .or_insert(plugin)
            .clone()
    }

    /// A loaded plugin by digest (an operation in flight keeps the digest it started with).
    pub fn get(&self, digest: &Digest) -> Option<Arc<Plugin>> {
        self.inner
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .cloned()
    }

    /// Forget a loaded plugin (calls holding its `Arc` finish normally). Returns whether it
    /// was loaded.
    pub fn unload(&self, digest: &Digest) -> bool {
        self.inner
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(digest)
            .is_some()
    }

    /// Digests of the loaded plugins.
    pub fn loaded_digests(&self) -> Vec<Digest> {
        let mut digests: Vec<Digest> = self
            .inner
            .plugins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        digests.sort();
        digests
    }

    /// How loads were served so far.
    pub fn stats(&self) -> LoadStats {
        LoadStats {
            memory_hits: self.inner.memory_hits.load(Ordering::Relaxed),
            disk_hits: self.inner.disk_hits.load(Ordering::Relaxed),
            compiled: self.inner.compiled.load(Ordering::Relaxed),
        }
    }

    /// Check the component is of our world and version, and pre-instantiate it.
    fn verify(
        &self,
        component: &Component,
        digest: &Digest,
        size: usize,
    ) -> Result<Plugin, SandboxError> {
        let engine = &self.inner.engine;
        let ty = component.component_type();
        let mut export_names = Vec::new();
        let mut ours: Option<(String, Vec<String>)> = None;
        let mut other_versions = Vec::new();
        for (name, item) in ty.exports(engine) {
            export_names.push(name.to_string());
            let (iface, version) = name.split_once('@').unwrap_or((name, ""));
            if iface != HOOKS_INTERFACE {
                continue;
            }
            if crate::supports_wit_version(version) {
                let funcs = match item.ty {
                    ComponentItem::ComponentInstance(inst) => inst
                        .exports(engine)
                        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(n, _)| n.to_string())
                        .collect(),
                    _ => Vec::new(),
                };
                ours = Some((version.to_string(), funcs));
            } else {
                other_versions.push(version.to_string());
            }
        }
        let Some((wit_version, exports)) = ours else {
            if let Some(found) = other_versions.into_iter().next() {
                return Err(SandboxError::LoadWitVersion {
                    found: if found.is_empty() {
                        "(unversioned)".into()
                    } else {
                        found
                    },
                    supported: WIT_VERSION.into(),
                });
            }
            let exports = if export_names.is_empty() {
                "nothing".to_string()
            } else {
                export_names.join(", ")
            };
            return Err(SandboxError::LoadWrongWorld { exports });
        };
        let instance_pre = self
            .inner
            .linker
            .instantiate_pre(component)
            .map_err(|e| SandboxError::LoadLink(format!("{e:#}")))?;
        let pre = HookPre::new(instance_pre)
            .map_err(|e| SandboxError::LoadExportMismatch(format!("{e:#}")))?;
        Ok(Plugin {
            digest: digest.clone(),
            size,
            wit_version,
            exports,
            pre,
        })
    }
}

/// Tell garbage, core modules and components apart from the 8-byte preamble.
fn sniff(bytes: &[u8]) -> Result<(), SandboxError> {
    const MAGIC: &[u8; 4] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        let what = if bytes.is_empty() {
            "the file is empty".to_string()
        } else {
            format!(
                "it does not start with the WebAssembly magic bytes \\0asm ({} bytes)",
                bytes.len()
            )
        };
        return Err(SandboxError::LoadNotWasm(what));
    }
    // version (u16 LE) and layer (u16 LE): core modules are version 1 layer 0; components
    // are layer 1.
    let layer = u16::from_le_bytes([bytes[6], bytes[7]]);
    match layer {
        0 => Err(SandboxError::LoadCoreModule),
        1 => Ok(()),
        other => Err(SandboxError::LoadNotWasm(format!(
            "unknown WebAssembly binary layer {other}"
        ))),
    }
}

/// Advance the engine's epoch every `tick` until the sandbox is dropped.
fn spawn_ticker(
    engine: &Engine,
    tick: std::time::Duration,
    stop: Arc<AtomicBool>,
) -> Result<(), SandboxError> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("hoist-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(|_| ())
        .map_err(|e| {
            SandboxError::EngineSetup(format!("cannot start the epoch ticker thread: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use super::sniff;
    use crate::SandboxError;

    #[test]
    fn sniff_tells_garbage_core_and_component_apart() {
        assert!(matches!(sniff(b""), Err(SandboxError::LoadNotWasm(_))));
        assert!(matches!(
            sniff(b"#!/bin/sh\necho hi\n"),
            Err(SandboxError::LoadNotWasm(_))
        ));
        assert!(matches!(
            sniff(b"\0asm\x01\0\0\0"),
            Err(SandboxError::LoadCoreModule)
        ));
        assert!(sniff(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
