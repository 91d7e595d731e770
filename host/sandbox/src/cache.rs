//! The on-disk cache of precompiled plugins.
//!
//! A precompiled artifact is native code: loading one is only safe if it was written by this
//! program for this engine. So the cache lives in a directory the sandbox creates with mode
//! 0700 and checks (owned by the same user as its files, not writable by group or others);
//! files are named by the plugin's sha256 and the engine's precompile compatibility hash;
//! a file is written to a temporary name and renamed into place, so a file that another
//! process may have mapped is never modified in place.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hoist_types::Digest;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::SandboxError;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The private cache directory of this process's user inside `volume`, a directory others may
/// be able to write (a Kubernetes `emptyDir` is created with mode 0777): `volume/uid-<euid>`.
/// [`DiskCache::open`] creates it with mode 0700 and refuses it unless this user owns it and
/// nobody else can write it, so whoever else can write `volume` cannot plant code in it.
pub fn private_cache_dir(volume: &Path) -> PathBuf {
    volume.join(format!("uid-{}", rustix::process::geteuid().as_raw()))
}

#[derive(Debug, Clone)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_key: String,
}

impl DiskCache {
    /// Create (or check) the cache directory.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self, SandboxError> {
        let fail = |reason: String| SandboxError::CacheDir {
            path: dir.to_path_buf(),
            reason,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| fail(format!("cannot create it: {e}")))?;
        let meta = fs::metadata(dir).map_err(|e| fail(format!("cannot read it: {e}")))?;
        if !meta.is_dir() {
            return Err(fail("it is not a directory".into()));
        }
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(fail(format!(
                "it is writable by group or others (mode {:o}); precompiled code is only loaded \
                 from a directory only this user can write (give a parent such as a \
                 Kubernetes emptyDir to `private_cache_dir`)",
                meta.permissions().mode() & 0o777
            )));
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return Err(fail(format!(
                "it belongs to uid {}, not to this process's uid {me}; precompiled code is only \
                 loaded from a directory this user owns",
                meta.uid()
            )));
        }
        // Any stable hasher works: the key only has to be equal for compatible engines. The
        // default hasher with its fixed (zero) keys is deterministic within one build of hoist.
        #[allow(deprecated)]
        let mut hasher = std::hash::SipHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine_key,
        })
    }

    fn path_for(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_key))
    }

    /// Load a precompiled component for `digest`, if the cache has a usable one.
    ///
    /// Any problem (absent, foreign owner, writable by others, incompatible, corrupt) is a
    /// miss: `Sandbox::load_with_source` compiles and [`DiskCache::store`] replaces the file;
    /// `Sandbox::load_cached` answers that the plugin is not cached.
    pub(crate) fn load(&self, engine: &Engine, digest: &Digest) -> Option<Component> {
        let path = self.path_for(digest);
        let meta = fs::symlink_metadata(&path).ok()?;
        let dir_meta = fs::metadata(&self.dir).ok()?;
        // The directory is checked again: its mode may have changed since `open`.
        if dir_meta.permissions().mode() & 0o022 != 0 {
            tracing::warn!(path = %self.dir.display(), "ignoring the plugin cache: the directory is writable by group or others");
            return None;
        }
        if !meta.is_file() || meta.uid() != dir_meta.uid() || meta.permissions().mode() & 0o022 != 0
        {
            tracing::warn!(path = %path.display(), "ignoring cache entry: not a private regular file");
            return None;
        }
        match deserialize(engine, &path) {
            Ok(component) => Some(component),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "ignoring unusable cache entry");
                None
            }
        }
    }

    /// Write the precompiled form of `component` for `digest`: to a temporary file in the
    /// cache directory, then renamed over the final name.
    pub(crate) fn store(&self, component: &Component, digest: &Digest) -> Result<(), String> {
        let bytes = component
            .serialize()
            .map_err(|e| format!("serialize: {e}"))?;
        let final_path = self.path_for(digest);
        let temp = self.dir.join(format!(
            ".{digest}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .map_err(|e| format!("create {}: {e}", temp.display()))?;
            file.write_all(&bytes)
                .map_err(|e| format!("write {}: {e}", temp.display()))?;
            file.sync_all()
                .map_err(|e| format!("sync {}: {e}", temp.display()))?;
            drop(file);
            fs::rename(&temp, &final_path)
                .map_err(|e| format!("rename to {}: {e}", final_path.display()))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// Map a precompiled component from the cache.
///
/// `Component::deserialize_file` is `unsafe` because the file is native code that wasmtime
/// trusts. It is sound here because the file comes only from our own cache directory (mode
/// 0700, checked above), written by `DiskCache::store` from a component this process
/// compiled and verified, named by content digest and engine compatibility hash, and never
/// modified in place once written (replacement is by rename). wasmtime itself also checks the
/// artifact's header against the engine's configuration and version.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: see the function documentation: trusted, private, content-addressed cache file.
    unsafe { Component::deserialize_file(engine, path) }
}
