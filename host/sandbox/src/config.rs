//! Sandbox configuration.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// How the sandbox is set up. `Default` gives values fit for the operator.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Directory for precompiled artifacts (created, mode 0700). `None`: compile on every
    /// process start. Only this directory is ever read for precompiled code.
    pub cache_dir: Option<PathBuf>,
    /// How components are compiled: in this process (the default, for tests and tools that
    /// load trusted plugins) or in a bounded worker process (for untrusted ones).
    pub compile: CompileMode,
    /// Most bytes of linear memory a plugin instance may have, all its memories together
    /// (a component may hold several core modules, each with its own memory), initial sizes
    /// included.
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
            compile: CompileMode::InProcess,
            memory_limit_bytes: 128 * 1024 * 1024,
            max_concurrent_calls: 64,
            epoch_tick: Duration::from_millis(10),
            max_stderr_bytes: 16 * 1024,
            max_state_bytes: 64 * 1024,
        }
    }
}

/// Where [`crate::Sandbox::load`] compiles a component that is neither loaded nor cached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CompileMode {
    /// In this process, on wasmtime's compile threads: nothing bounds the time or memory a
    /// crafted component's compilation takes. For tests and benchmarks of trusted plugins.
    #[default]
    InProcess,
    /// In a child process with CPU-time and address-space limits it sets on itself, and a
    /// wall-clock limit the sandbox enforces: a component that hits one is refused with
    /// [`crate::SandboxError::LoadCompileLimit`]. The child hands back the precompiled code,
    /// which this process loads, verifies and caches like code it compiled itself.
    Worker(CompileWorker),
}

/// A child program that compiles components: it must run [`crate::compile_worker::run`] (the
/// `hoist` binary does as `hoist compile-worker`, a hidden subcommand).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileWorker {
    /// The program, for example `std::env::current_exe()`.
    pub program: PathBuf,
    /// Its arguments, for example `["compile-worker"]`.
    pub args: Vec<OsString>,
    /// The bounds of one compilation.
    pub limits: CompileLimits,
}

impl CompileWorker {
    /// A worker with the default [`CompileLimits`].
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        CompileWorker {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            limits: CompileLimits::default(),
        }
    }
}

/// Bounds of one compilation in a [`CompileWorker`].
///
/// The defaults are far above what real plugins need: the worker compiles `trino-drain` (a
/// 237 KB component) in 0.35 s of CPU time at 37 MiB resident, and still does with 96 MiB
/// of address space; a compile bomb of 7 MiB reaches 1 GiB of address space within about
/// 1.5 s and keeps compiling for minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// CPU time of the worker (`RLIMIT_CPU`), in seconds. The worker compiles on one thread,
    /// so this is also about its wall time.
    pub cpu_seconds: u64,
    /// Address space of the worker (`RLIMIT_AS`), in bytes.
    pub address_space_bytes: u64,
    /// Wall-clock time after which the sandbox kills the worker (a worker that sleeps or
    /// waits uses no CPU time).
    pub wall_time: Duration,
    /// Most bytes of precompiled code the sandbox reads from the worker.
    pub max_artifact_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            cpu_seconds: 60,
            address_space_bytes: 2 * 1024 * 1024 * 1024,
            wall_time: Duration::from_mins(2),
            max_artifact_bytes: 256 * 1024 * 1024,
        }
    }
}
