//! A loaded, verified plugin.

use std::fmt;

use hoist_types::Digest;

use crate::bindings::HookPre;
use crate::host::HostState;

/// Where a [`crate::Sandbox::load`] got the compiled plugin from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadSource {
    /// Already loaded in this process (same digest).
    Memory,
    /// Read from the precompiled-artifact cache on disk: no compilation.
    DiskCache,
    /// Compiled now (and written to the disk cache, when there is one).
    Compiled,
}

impl fmt::Display for LoadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadSource::Memory => "memory",
            LoadSource::DiskCache => "disk-cache",
            LoadSource::Compiled => "compiled",
        })
    }
}

/// A verified plugin, ready to be instantiated for calls: a component of `hoist:hooks/hook`
/// at a supported WIT version, identified by the sha256 of its bytes.
pub struct Plugin {
    pub(crate) digest: Digest,
    pub(crate) size: usize,
    pub(crate) wit_version: String,
    pub(crate) exports: Vec<String>,
    pub(crate) pre: HookPre<HostState>,
}

impl Plugin {
    /// The sha256 of the component bytes.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Size of the component in bytes; 0 for a plugin loaded by
    /// [`crate::Sandbox::load_cached`], which never saw them.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The `hoist:hooks` version the plugin was built for (the export's version).
    pub fn wit_version(&self) -> &str {
        &self.wit_version
    }

    /// The functions of the plugin's `hoist:hooks/hooks` export.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("wit_version", &self.wit_version)
            .field("exports", &self.exports)
            .finish_non_exhaustive()
    }
}
