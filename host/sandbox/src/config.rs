//! Sandbox configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How the sandbox is set up. `Default` gives values fit for the operator.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Directory for precompiled artifacts (created, mode 0700). `None`: compile on every
    /// process start. Only this directory is ever read for precompiled code.
    pub cache_dir: Option<PathBuf>,
    /// Largest linear memory a plugin instance may have, in bytes.
    pub memory_limit_bytes: u64,
    /// How many hook calls may run at once (pooling allocator slots).
    pub max_concurrent_calls: u32,
    /// Period of the epoch ticker: the granularity of deadlines for guest code, and how often
    /// a busy guest yields to the async runtime.
    pub epoch_tick: Duration,
    /// Most bytes of a guest's stderr kept per call (for panic messages and logs).
    pub max_stderr_bytes: usize,
    /// Largest `state` an in-progress outcome may carry (it is stored in a Scaler's status).
    pub max_state_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            cache_dir: None,
            memory_limit_bytes: 128 * 1024 * 1024,
            max_concurrent_calls: 64,
            epoch_tick: Duration::from_millis(10),
            max_stderr_bytes: 16 * 1024,
            max_state_bytes: 64 * 1024,
        }
    }
}
