//! The compile worker: a child process that compiles one component under CPU-time and
//! address-space limits, for [`crate::CompileMode::Worker`].
//!
//! A program becomes a worker by calling [`run`] (the `hoist` binary does for its hidden
//! `compile-worker` subcommand). The protocol, private to this crate's two sides:
//!
//! - stdin: one line of JSON (the limits and the engine settings, see `Request`), then the
//!   component's bytes to the end;
//! - stdout: the precompiled component (`Engine::precompile_component`) and nothing else;
//! - stderr: one short line saying why, when it fails;
//! - exit status: 0 compiled, [`EXIT_INVALID`] the component does not compile,
//!   [`EXIT_OUT_OF_MEMORY`] compiling ran out of address space, [`EXIT_USAGE`] the worker was
//!   misused (not the component's fault). Hitting the CPU limit kills the worker with
//!   `SIGXCPU`; running out of address space in an allocation aborts it (`SIGABRT`).

use std::io::{BufRead, Read, Write};
use std::process::ExitCode;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};
use wasmtime::{Engine, InstanceAllocationStrategy};

use crate::config::SandboxConfig;
use crate::sandbox::engine_config;

/// Exit status: the component does not compile (stderr says why).
pub const EXIT_INVALID: u8 = 1;
/// Exit status: the worker was misused (no or a bad request line, cannot set its limits).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: compiling failed for want of memory (the address-space limit).
pub const EXIT_OUT_OF_MEMORY: u8 = 3;

/// Longest request line accepted.
const MAX_REQUEST_LINE: u64 = 4096;

/// Longest error line written to stderr.
const MAX_ERROR_BYTES: usize = 1024;

/// The request line: the limits the worker puts on itself, and the sandbox settings its
/// engine configuration is derived from (so that the parent can load what it compiles).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Request {
    pub(crate) cpu_seconds: u64,
    pub(crate) address_space_bytes: u64,
    pub(crate) memory_limit_bytes: u64,
    pub(crate) max_concurrent_calls: u32,
}

/// Run as a compile worker: read the request and the component from stdin, set the limits,
/// compile, write the precompiled component to stdout. Returns the exit code; call it from
/// `main` and return (or `std::process::exit` with) what it gives.
pub fn run() -> ExitCode {
    // No core file if a limit kills the worker.
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = Vec::new();
    if let Err(e) = (&mut input)
        .take(MAX_REQUEST_LINE)
        .read_until(b'\n', &mut line)
    {
        return fail(EXIT_USAGE, &format!("cannot read the request line: {e}"));
    }
    let request: Request = match serde_json::from_slice(&line) {
        Ok(request) => request,
        Err(e) => return fail(EXIT_USAGE, &format!("bad request line: {e}")),
    };
    if let Err(e) = limit_self(&request) {
        return fail(EXIT_USAGE, &format!("cannot set the worker's limits: {e}"));
    }
    let mut bytes = Vec::new();
    if let Err(e) = input.read_to_end(&mut bytes) {
        return fail(EXIT_USAGE, &format!("cannot read the component: {e}"));
    }
    let engine = match Engine::new(&worker_config(&request)) {
        Ok(engine) => engine,
        Err(e) => return fail(EXIT_USAGE, &format!("cannot create the engine: {e:#}")),
    };
    let artifact = match engine.precompile_component(&bytes) {
        Ok(artifact) => artifact,
        Err(e) if is_out_of_memory(&e) => {
            return fail(EXIT_OUT_OF_MEMORY, &format!("out of memory: {e:#}"));
        }
        Err(e) => return fail(EXIT_INVALID, &format!("{e:#}")),
    };
    drop(bytes);
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(&artifact).and_then(|()| stdout.flush()) {
        return fail(
            EXIT_USAGE,
            &format!("cannot write the compiled component: {e}"),
        );
    }
    ExitCode::SUCCESS
}

/// The worker's engine: the sandbox's configuration (so the artifact is compatible with the
/// parent's engine: wasmtime checks that when it loads it), compiling on one thread (so the
/// CPU-time limit is about the wall time too) and without the pooling allocator (which
/// reserves address space for instances the worker never creates).
pub(crate) fn worker_config(request: &Request) -> wasmtime::Config {
    let sandbox = SandboxConfig {
        memory_limit_bytes: request.memory_limit_bytes,
        max_concurrent_calls: request.max_concurrent_calls,
        ..SandboxConfig::default()
    };
    let mut config = engine_config(&sandbox);
    config.parallel_compilation(false);
    config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    config
}

/// `RLIMIT_CPU` (soft: `SIGXCPU`; hard a little later: `SIGKILL`) and `RLIMIT_AS`, never above
/// the hard limits the worker inherited (it could not raise them).
fn limit_self(request: &Request) -> rustix::io::Result<()> {
    let cpu = request.cpu_seconds.max(1);
    set_limit(Resource::Cpu, cpu, cpu.saturating_add(2))?;
    set_limit(
        Resource::As,
        request.address_space_bytes,
        request.address_space_bytes,
    )
}

fn set_limit(resource: Resource, soft: u64, hard: u64) -> rustix::io::Result<()> {
    let inherited = getrlimit(resource).maximum;
    let cap = |n: u64| Some(inherited.map_or(n, |max| n.min(max)));
    setrlimit(
        resource,
        Rlimit {
            current: cap(soft),
            maximum: cap(hard),
        },
    )
}

fn is_out_of_memory(err: &wasmtime::Error) -> bool {
    err.is::<wasmtime::OutOfMemory>()
        || err.chain().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::OutOfMemory)
        })
}

fn fail(code: u8, message: &str) -> ExitCode {
    let message = crate::text::bounded_text(message, MAX_ERROR_BYTES).replace('\n', " ");
    let _ = writeln!(std::io::stderr(), "{message}");
    ExitCode::from(code)
}
