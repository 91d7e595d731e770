//! Compiling a component: in this process, or in a bounded worker process
//! ([`crate::compile_worker`]) whose precompiled output this process loads.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::compile_worker::{EXIT_INVALID, EXIT_OUT_OF_MEMORY, Request};
use crate::config::{CompileMode, CompileWorker, SandboxConfig};
use crate::error::SandboxError;

/// Most bytes of the worker's stderr kept for an error message.
const MAX_WORKER_STDERR: u64 = 4096;

const MIB: u64 = 1024 * 1024;

/// Compile `bytes` as the configuration says.
pub(crate) fn compile(
    engine: &Engine,
    config: &SandboxConfig,
    bytes: &[u8],
) -> Result<Component, SandboxError> {
    match &config.compile {
        CompileMode::InProcess => {
            Component::new(engine, bytes).map_err(|e| SandboxError::LoadCompile(format!("{e:#}")))
        }
        CompileMode::Worker(worker) => {
            let artifact = run_worker(worker, config, bytes)?;
            deserialize(engine, &artifact).map_err(|e| {
                SandboxError::CompileWorker(format!(
                    "cannot load what the worker compiled (is {} this program, of the same \
                     version?): {e:#}",
                    worker.program.display()
                ))
            })
        }
    }
}

/// Load precompiled code from the worker.
///
/// `Component::deserialize` is `unsafe` because the bytes are native code that wasmtime
/// trusts. It is sound here as it is for code compiled in this process: the worker is the
/// configured program (this program, run again as `compile-worker`), which compiled the
/// component with the same wasmtime and an engine configuration derived from this sandbox's
/// (wasmtime checks the artifact's header against this engine); the bytes came straight from
/// its stdout pipe, never through a file others could write.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: see the function documentation: our own compiler's output over a private pipe.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Run the worker on `bytes`; its stdout (the precompiled component) or why not.
fn run_worker(
    worker: &CompileWorker,
    config: &SandboxConfig,
    bytes: &[u8],
) -> Result<Vec<u8>, SandboxError> {
    let limits = worker.limits;
    let request = Request {
        cpu_seconds: limits.cpu_seconds,
        address_space_bytes: limits.address_space_bytes,
        memory_limit_bytes: config.memory_limit_bytes,
        max_concurrent_calls: config.max_concurrent_calls,
    };
    let mut line = serde_json::to_vec(&request)
        .map_err(|e| SandboxError::CompileWorker(format!("cannot encode the request: {e}")))?;
    line.push(b'\n');
    let mut child = Command::new(&worker.program)
        .args(&worker.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            SandboxError::CompileWorker(format!("cannot start {}: {e}", worker.program.display()))
        })?;
    let pipes = Pipes::start(&mut child, line, bytes.to_vec(), limits.max_artifact_bytes);
    let pipes = match pipes {
        Ok(pipes) => pipes,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let started = Instant::now();
    let (status, stopped) = wait(&mut child, &pipes.too_big, limits.wall_time)?;
    let (stdout, stderr) = pipes.finish();
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    tracing::debug!(
        status = %status,
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        artifact_bytes = stdout.len(),
        "compile worker finished"
    );
    let limit = |what: String| Err(SandboxError::LoadCompileLimit(what));
    match stopped {
        Some(Stopped::WallTime) => {
            return limit(format!(
                "took longer than its wall-time limit of {} s",
                limits.wall_time.as_secs_f64()
            ));
        }
        Some(Stopped::TooBig) => {
            return limit(format!(
                "produced more than its limit of {} MiB of compiled code",
                limits.max_artifact_bytes / MIB
            ));
        }
        None => {}
    }
    let cpu = format!(
        "used more than its CPU-time limit of {} s",
        limits.cpu_seconds
    );
    let memory = format!(
        "needed more than its memory limit of {} MiB of address space",
        limits.address_space_bytes / MIB
    );
    if let Some(signal) = status.signal() {
        if signal == Signal::XCPU.as_raw() || signal == Signal::KILL.as_raw() {
            return limit(cpu);
        }
        if signal == Signal::ABORT.as_raw() && stderr.contains("memory allocation of") {
            return limit(memory);
        }
        return Err(SandboxError::CompileWorker(format!(
            "the worker was killed by signal {signal}: {}",
            or_nothing(&stderr)
        )));
    }
    match status.code() {
        Some(0) => Ok(stdout),
        Some(code) if code == i32::from(EXIT_INVALID) => Err(SandboxError::LoadCompile(stderr)),
        Some(code) if code == i32::from(EXIT_OUT_OF_MEMORY) => limit(memory),
        _ => Err(SandboxError::CompileWorker(format!(
            "the worker failed ({status}): {}",
            or_nothing(&stderr)
        ))),
    }
}

fn or_nothing(text: &str) -> &str {
    if text.is_empty() {
        "(no message)"
    } else {
        text
    }
}

/// Why the sandbox stopped the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopped {
    WallTime,
    TooBig,
}

/// Wait for the worker to exit; kill it when its wall time is over or its output too big.
fn wait(
    child: &mut Child,
    too_big: &AtomicBool,
    wall_time: Duration,
) -> Result<(ExitStatus, Option<Stopped>), SandboxError> {
    let deadline = Instant::now() + wall_time;
    let mut pause = Duration::from_millis(1);
    loop {
        let status = child
            .try_wait()
            .map_err(|e| SandboxError::CompileWorker(format!("cannot wait for the worker: {e}")))?;
        if let Some(status) = status {
            return Ok((status, None));
        }
        let stop = if too_big.load(Ordering::Relaxed) {
            Some(Stopped::TooBig)
        } else if Instant::now() >= deadline {
            Some(Stopped::WallTime)
        } else {
            None
        };
        if let Some(stop) = stop {
            let _ = child.kill();
            let status = child.wait().map_err(|e| {
                SandboxError::CompileWorker(format!("cannot wait for the worker: {e}"))
            })?;
            return Ok((status, Some(stop)));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The threads feeding the worker's stdin and reading its stdout and stderr, so that none of
/// the three pipes can block the worker (or this process) while it runs.
struct Pipes {
    stdin: JoinHandle<()>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
    too_big: Arc<AtomicBool>,
}

impl Pipes {
    fn start(
        child: &mut Child,
        line: Vec<u8>,
        bytes: Vec<u8>,
        max_artifact: u64,
    ) -> Result<Pipes, SandboxError> {
        let missing = || SandboxError::CompileWorker("the worker's pipes are missing".into());
        let mut stdin = child.stdin.take().ok_or_else(missing)?;
        let mut stdout = child.stdout.take().ok_or_else(missing)?;
        let mut stderr = child.stderr.take().ok_or_else(missing)?;
        let spawn_error =
            |e: std::io::Error| SandboxError::CompileWorker(format!("cannot start a thread: {e}"));
        let stdin = std::thread::Builder::new()
            .name("hoist-compile-in".into())
            .spawn(move || {
                // A worker that dies early closes the pipe: its exit status says why.
                let _ = stdin
                    .write_all(&line)
                    .and_then(|()| stdin.write_all(&bytes));
            })
            .map_err(spawn_error)?;
        let too_big = Arc::new(AtomicBool::new(false));
        let flag = too_big.clone();
        let stdout = std::thread::Builder::new()
            .name("hoist-compile-out".into())
            .spawn(move || {
                let mut artifact = Vec::new();
                let read = (&mut stdout)
                    .take(max_artifact.saturating_add(1))
                    .read_to_end(&mut artifact);
                if read.is_ok() && u64::try_from(artifact.len()).unwrap_or(u64::MAX) > max_artifact
                {
                    flag.store(true, Ordering::Relaxed);
                    // Keep reading (and dropping) so the worker is not blocked on a full pipe
                    // until it is killed.
                    let _ = std::io::copy(&mut stdout, &mut std::io::sink());
                }
                artifact
            })
            .map_err(spawn_error)?;
        let stderr = std::thread::Builder::new()
            .name("hoist-compile-err".into())
            .spawn(move || {
                let mut text = Vec::new();
                let _ = (&mut stderr).take(MAX_WORKER_STDERR).read_to_end(&mut text);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                text
            })
            .map_err(spawn_error)?;
        Ok(Pipes {
            stdin,
            stdout,
            stderr,
            too_big,
        })
    }

    /// After the worker exited: its stdout and stderr.
    fn finish(self) -> (Vec<u8>, Vec<u8>) {
        let _ = self.stdin.join();
        let stdout = self.stdout.join().unwrap_or_default();
        let stderr = self.stderr.join().unwrap_or_default();
        (stdout, stderr)
    }
}
