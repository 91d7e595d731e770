//! Subcommands of the `hoist` binary, one module each.
pub mod crds;
pub mod plugin;
pub mod plugin_new;
pub mod run;
pub mod simulate;

use hoist_sandbox::{CompileLimits, CompileMode, CompileWorker, SandboxError};

/// The hidden subcommand that makes `hoist` a compile worker
/// ([`hoist_sandbox::compile_worker::run`]): the sandbox of `hoist run` and of
/// `hoist plugin check|run` runs this binary again with it to compile each new plugin under
/// CPU-time and memory limits.
pub const COMPILE_WORKER_SUBCOMMAND: &str = "compile-worker";

/// Compile limits from a CPU time in seconds and an address space in MiB; the wall time is
/// twice the CPU time and ten seconds more (a worker waiting for a busy CPU is not stopped
/// early).
pub fn compile_limits(cpu_seconds: u64, memory_mib: u64) -> CompileLimits {
    CompileLimits {
        cpu_seconds,
        address_space_bytes: memory_mib.saturating_mul(1024 * 1024),
        wall_time: std::time::Duration::from_secs(cpu_seconds.saturating_mul(2).saturating_add(10)),
        ..CompileLimits::default()
    }
}

/// Compile plugins in this very binary run as `hoist compile-worker`, within `limits`.
pub fn compile_in_worker(limits: CompileLimits) -> Result<CompileMode, SandboxError> {
    let program = std::env::current_exe().map_err(|e| {
        SandboxError::CompileWorker(format!(
            "cannot find this program, to run it as the compile worker: {e}"
        ))
    })?;
    Ok(CompileMode::Worker(CompileWorker {
        program,
        args: vec![COMPILE_WORKER_SUBCOMMAND.into()],
        limits,
    }))
}
