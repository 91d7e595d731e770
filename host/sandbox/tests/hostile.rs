//! Hostile plugins: crafted components (several memories, a compile bomb, wrong export types,
//! a start function that never returns) and Rust guests that leak host resources, log huge
//! lines or look for ambient authority. Each ends with a clear error, or a bounded success,
//! within its deadline; the process's memory stays bounded and nothing is left behind (file
//! descriptors back to their count before).
//!
//! The tests of this file run one at a time (`serial`), so that the memory and descriptor
//! figures of one are not another's.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use common::hostile;
use common::{Logs, options, plugin_bytes, pod, scale_down};
use hoist_sandbox::{
    CompileLimits, CompileMode, CompileWorker, HookContext, HookOutcome, HookRunner, LoadSource,
    MAX_RESOURCES_PER_CALL, Sandbox, SandboxConfig, SandboxError,
};

/// Most the process's resident memory may grow during one attack.
const MAX_GROWTH_BYTES: u64 = 600 * 1024 * 1024;

const MIB: u64 = 1024 * 1024;

async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

/// A field of /proc/self/status, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line
        .trim_start_matches(field)
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What an attack cost the process: peak resident memory above the start, and descriptors
/// left open.
struct Footprint {
    rss_before: u64,
    fds_before: usize,
}

impl Footprint {
    fn start() -> Footprint {
        // Reset the peak (VmHWM) to the current resident size.
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        Footprint {
            rss_before: status_bytes("VmRSS"),
            fds_before: open_fds(),
        }
    }

    /// Check the bounds; returns the peak growth in MiB for the report.
    fn check(self, what: &str) -> u64 {
        let peak = status_bytes("VmHWM");
        let growth = peak.saturating_sub(self.rss_before);
        eprintln!(
            "{what}: peak RSS growth {} MiB (VmRSS before {} MiB, VmHWM {} MiB)",
            growth / MIB,
            self.rss_before / MIB,
            peak / MIB
        );
        assert!(
            growth < MAX_GROWTH_BYTES,
            "{what}: resident memory grew by {} MiB",
            growth / MIB
        );
        let fds = open_fds();
        if fds != self.fds_before {
            for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
                let entry = entry.unwrap();
                eprintln!(
                    "fd {} -> {:?}",
                    entry.file_name().display(),
                    std::fs::read_link(entry.path())
                );
            }
        }
        // At most as many: the previous test's runtime may still be closing its own.
        assert!(
            fds <= self.fds_before,
            "{what}: {} file descriptors left open",
            fds - self.fds_before
        );
        growth / MIB
    }
}

fn sandbox_with(memory_limit_bytes: u64, compile: CompileMode) -> Sandbox {
    Logs::capture();
    Sandbox::new(SandboxConfig {
        memory_limit_bytes,
        compile,
        ..SandboxConfig::default()
    })
    .unwrap()
}

fn worker(limits: CompileLimits) -> CompileMode {
    CompileMode::Worker(CompileWorker {
        program: env!("CARGO_BIN_EXE_hoist-compile-worker").into(),
        args: Vec::new(),
        limits,
    })
}

fn ctx(config: &str) -> HookContext {
    scale_down(
        vec![pod("w-0", 0, "127.0.0.1"), pod("w-1", 1, "127.0.0.1")],
        1,
        config,
    )
}

async fn pre_scale(
    sb: &Sandbox,
    bytes: &[u8],
    config: &str,
    deadline: Duration,
) -> Result<HookOutcome, SandboxError> {
    let plugin = sb.load(bytes).unwrap();
    sb.pre_scale(&plugin, &ctx(config), &options(deadline, &[]))
        .await
}

/// The same call once, before measuring: the first call of a plugin creates what the process
/// keeps for the next ones (its memory images, the runtime's own descriptors); what a call
/// must not leave behind is measured on the second.
async fn warm_up(sb: &Sandbox, bytes: &[u8], config: &str, deadline: Duration) {
    let _ = pre_scale(sb, bytes, config, deadline).await;
}

#[tokio::test]
async fn the_hand_written_plugin_works_so_the_fixtures_below_are_meaningful() {
    let _serial = serial().await;
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let outcome = pre_scale(
        &sb,
        &hostile::component("hooks"),
        "{}",
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: String::new()
        }
    );
}

#[tokio::test]
async fn an_export_of_the_wrong_signature_is_refused_at_load() {
    let _serial = serial().await;
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let bytes = hostile::component_with_wit("hooks", |text| {
        text.replace(
            "pre-scale: func(ctx: scale-context) -> result<outcome, hook-error>;",
            "pre-scale: func(ctx: u32) -> u32;",
        )
    });
    let err = sb.load(&bytes).unwrap_err();
    assert!(
        matches!(&err, SandboxError::LoadExportMismatch(m) if m.contains("`pre-scale`")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "PluginExportMismatch");
    eprintln!("wrong signature: {err}");
}

#[tokio::test]
async fn a_renamed_record_field_is_refused_at_load() {
    let _serial = serial().await;
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let bytes = hostile::component_with_wit("hooks", |text| {
        text.replace("retry-after-ms: u64,", "retry-after: u64,")
    });
    let err = sb.load(&bytes).unwrap_err();
    match &err {
        SandboxError::LoadExportMismatch(m) => {
            assert!(m.contains("`pre-scale`"), "{m}");
            assert!(m.contains("retry-after"), "{m}");
        }
        other => panic!("expected LoadExportMismatch, got {other:?}"),
    }
    eprintln!("renamed field: {err}");
    // A renamed field in a parameter's record too.
    let bytes = hostile::component_with_wit("hooks", |text| {
        text.replace("reason: string,", "why: string,")
    });
    let err = sb.load(&bytes).unwrap_err();
    assert!(
        matches!(&err, SandboxError::LoadExportMismatch(m) if m.contains("`on-failure`")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_start_function_that_never_returns_ends_at_the_deadline() {
    let _serial = serial().await;
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let bytes = hostile::component("start-loop");
    let deadline = Duration::from_millis(300);
    warm_up(&sb, &bytes, "{}", deadline).await;
    let footprint = Footprint::start();
    let err = pre_scale(&sb, &bytes, "{}", deadline).await.unwrap_err();
    assert!(
        matches!(err, SandboxError::HookDeadline { deadline: d, .. } if d == deadline),
        "{err:?}"
    );
    assert_eq!(err.reason(), "HookDeadlineExceeded");
    footprint.check("start-function loop");
}

#[tokio::test]
async fn the_memory_limit_is_for_all_memories_of_a_plugin_together() {
    let _serial = serial().await;
    // The plugin and three modules of 60 MiB each: each memory is under 128 MiB, together
    // they are 180 MiB.
    let extra = hostile::core_module("extra-memory");
    let bytes = hostile::with_extra_modules(
        &hostile::component("hooks"),
        &[extra.clone(), extra.clone(), extra],
    );
    let sb = sandbox_with(128 * MIB, CompileMode::InProcess);
    warm_up(&sb, &bytes, "{}", Duration::from_secs(5)).await;
    let footprint = Footprint::start();
    let err = pre_scale(&sb, &bytes, "{}", Duration::from_secs(5))
        .await
        .unwrap_err();
    match &err {
        SandboxError::HookMemoryLimit {
            limit_bytes,
            requested_bytes,
            ..
        } => {
            assert_eq!(*limit_bytes, 128 * MIB);
            assert!(*requested_bytes > 128 * MIB, "{requested_bytes}");
        }
        other => panic!("expected HookMemoryLimit, got {other:?}"),
    }
    eprintln!("four memories: {err}");
    footprint.check("four memories under 128 MiB");
    // Under a limit above their sum the same plugin works: it is the sum that is limited.
    let sb = sandbox_with(256 * MIB, CompileMode::InProcess);
    pre_scale(&sb, &bytes, "{}", Duration::from_secs(5))
        .await
        .unwrap();
}

/// Depth of the compile bomb: 7.2 MiB, the largest function body wasmparser accepts; it
/// compiles for minutes in-process.
const BOMB_DEPTH: usize = 2_400_000;

#[tokio::test]
async fn a_compile_bomb_is_refused_at_the_worker_cpu_limit() {
    let _serial = serial().await;
    let bomb = hostile::compile_bomb(BOMB_DEPTH);
    assert!(bomb.len() > 7_000_000, "{}", bomb.len());
    let limits = CompileLimits {
        cpu_seconds: 3,
        address_space_bytes: 4096 * MIB,
        wall_time: Duration::from_mins(1),
        ..CompileLimits::default()
    };
    let sb = sandbox_with(64 * MIB, worker(limits));
    let footprint = Footprint::start();
    let started = Instant::now();
    let err = sb.load(&bomb).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, SandboxError::LoadCompileLimit(m) if m.contains("CPU-time limit of 3 s")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "PluginInvalid");
    assert!(err.is_load_error());
    eprintln!("compile bomb, 3 s CPU: refused after {took:?}: {err}");
    footprint.check("compile bomb (CPU)");
    assert!(sb.loaded_digests().is_empty());
}

#[tokio::test]
async fn a_compile_bomb_is_refused_at_the_worker_memory_limit() {
    let _serial = serial().await;
    let bomb = hostile::compile_bomb(BOMB_DEPTH);
    let limits = CompileLimits {
        cpu_seconds: 60,
        address_space_bytes: 256 * MIB,
        wall_time: Duration::from_mins(2),
        ..CompileLimits::default()
    };
    let sb = sandbox_with(64 * MIB, worker(limits));
    let footprint = Footprint::start();
    let started = Instant::now();
    let err = sb.load(&bomb).unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, SandboxError::LoadCompileLimit(m) if m.contains("memory limit of 256 MiB")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "PluginInvalid");
    eprintln!("compile bomb, 256 MiB: refused after {took:?}: {err}");
    footprint.check("compile bomb (memory)");
}

#[tokio::test]
async fn a_compile_bomb_is_refused_at_the_worker_wall_time() {
    let _serial = serial().await;
    let bomb = hostile::compile_bomb(BOMB_DEPTH);
    let limits = CompileLimits {
        cpu_seconds: 60,
        address_space_bytes: 4096 * MIB,
        wall_time: Duration::from_secs(1),
        ..CompileLimits::default()
    };
    let sb = sandbox_with(64 * MIB, worker(limits));
    let footprint = Footprint::start();
    let err = sb.load(&bomb).unwrap_err();
    assert!(
        matches!(&err, SandboxError::LoadCompileLimit(m) if m.contains("wall-time limit of 1 s")),
        "{err:?}"
    );
    footprint.check("compile bomb (wall time)");
}

#[tokio::test]
async fn real_plugins_compile_in_the_worker_are_cached_and_run() {
    let _serial = serial().await;
    let cache = tempfile::tempdir().unwrap();
    let config = |compile| SandboxConfig {
        cache_dir: Some(cache.path().to_path_buf()),
        compile,
        ..SandboxConfig::default()
    };
    let sb = Sandbox::new(config(worker(CompileLimits::default()))).unwrap();
    // A first call creates what the process keeps for the next ones (see `warm_up`).
    warm_up(
        &sb,
        &hostile::component("hooks"),
        "{}",
        Duration::from_secs(5),
    )
    .await;
    let footprint = Footprint::start();
    let started = Instant::now();
    let (_, source) = sb.load_with_source(&plugin_bytes("trino-drain")).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    eprintln!(
        "trino-drain compiled in the worker in {:?}",
        started.elapsed()
    );
    let (noop, _) = sb.load_with_source(&plugin_bytes("fixture-noop")).unwrap();
    let outcome = sb
        .pre_scale(&noop, &ctx("{}"), &options(Duration::from_secs(5), &[]))
        .await
        .unwrap();
    assert!(matches!(outcome, HookOutcome::Done { .. }), "{outcome:?}");
    // The loaded plugins hold descriptors (memory images) until they are unloaded.
    drop((noop, sb));
    footprint.check("real plugins in the worker");
    // Another sandbox (a restart) finds what the worker compiled in the cache.
    let again = Sandbox::new(config(worker(CompileLimits::default()))).unwrap();
    let (_, source) = again
        .load_with_source(&plugin_bytes("trino-drain"))
        .unwrap();
    assert_eq!(source, LoadSource::DiskCache);
    // An invalid component is the plugin's error, with the compiler's reason.
    let mut broken = hostile::component("hooks");
    let len = broken.len();
    broken.truncate(len - 3);
    let err = again.load(&broken).unwrap_err();
    assert_eq!(err.reason(), "PluginInvalid", "{err:?}");
    assert!(matches!(err, SandboxError::LoadCompile(_)), "{err:?}");
}

#[tokio::test]
async fn a_worker_that_is_not_one_is_not_the_plugins_fault() {
    let _serial = serial().await;
    let sb = sandbox_with(
        64 * MIB,
        CompileMode::Worker(CompileWorker::new("/bin/true", &[])),
    );
    let err = sb.load(&plugin_bytes("fixture-noop")).unwrap_err();
    assert!(matches!(err, SandboxError::CompileWorker(_)), "{err:?}");
    assert!(!err.is_load_error());
    let sb = sandbox_with(
        64 * MIB,
        CompileMode::Worker(CompileWorker::new("/nonexistent/hoist", &[])),
    );
    let err = sb.load(&plugin_bytes("fixture-noop")).unwrap_err();
    assert!(matches!(err, SandboxError::CompileWorker(_)), "{err:?}");
}

#[tokio::test]
async fn a_guest_finds_no_files_environment_or_arguments() {
    let _serial = serial().await;
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let outcome = pre_scale(
        &sb,
        &plugin_bytes("fixture-hostile-guest"),
        r#"{"attack": "ambient"}"#,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let HookOutcome::Done { message } = outcome else {
        panic!("{outcome:?}")
    };
    eprintln!("ambient: {message}");
    for expected in [
        "read_dir(/) failed",
        "read_dir(.) failed",
        "read /etc/passwd failed",
        "write /tmp/hoist-fixture failed",
        "env vars: 0",
        "args: 0",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
}

#[tokio::test]
async fn thousands_of_leaked_header_fields_end_at_the_resource_limit() {
    let _serial = serial().await;
    let sb = sandbox_with(128 * MIB, CompileMode::InProcess);
    let bytes = plugin_bytes("fixture-hostile-guest");
    // As reproduced: 9,000 fields of 100 KiB each. A header map that big is refused at once.
    let config = r#"{"attack": "leak-fields", "count": 9000, "valueBytes": 102400}"#;
    warm_up(&sb, &bytes, config, Duration::from_secs(10)).await;
    let footprint = Footprint::start();
    let err = pre_scale(&sb, &bytes, config, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::HookResourceLimit { what, .. } if what.contains("16 KiB of header fields")),
        "{err:?}"
    );
    assert_eq!(err.reason(), "HookResourceLimit");
    eprintln!("9,000 fields of 100 KiB: {err}");
    footprint.check("9,000 fields of 100 KiB");
    // 9,000 fields of 10 KiB, each within the limit: the resource table ends the call.
    let config = r#"{"attack": "leak-fields", "count": 9000, "valueBytes": 10240}"#;
    warm_up(&sb, &bytes, config, Duration::from_secs(10)).await;
    let footprint = Footprint::start();
    let err = pre_scale(&sb, &bytes, config, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SandboxError::HookResourceLimit { what, .. } if what.contains(&MAX_RESOURCES_PER_CALL.to_string())),
        "{err:?}"
    );
    eprintln!("9,000 fields of 10 KiB: {err}");
    footprint.check("9,000 fields of 10 KiB");
    let config = r#"{"attack": "leak-requests", "count": 9000}"#;
    warm_up(&sb, &bytes, config, Duration::from_secs(10)).await;
    let footprint = Footprint::start();
    let err = pre_scale(&sb, &bytes, config, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::HookResourceLimit { .. }),
        "{err:?}"
    );
    footprint.check("9,000 leaked outgoing requests");
    // Under the limit, the same guest is done.
    let outcome = pre_scale(
        &sb,
        &bytes,
        r#"{"attack": "leak-fields", "count": 500, "valueBytes": 1024}"#,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(matches!(outcome, HookOutcome::Done { .. }), "{outcome:?}");
}

#[tokio::test]
async fn a_hundred_mebibyte_log_line_is_cut() {
    let _serial = serial().await;
    let sb = sandbox_with(256 * MIB, CompileMode::InProcess);
    let bytes = plugin_bytes("fixture-hostile-guest");
    let config = r#"{"attack": "log-line", "bytes": 104857600}"#;
    warm_up(&sb, &bytes, config, Duration::from_secs(20)).await;
    let footprint = Footprint::start();
    let outcome = pre_scale(
        &sb,
        &bytes,
        r#"{"attack": "log-line", "bytes": 104857600}"#,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: "logged a line of 104857600 bytes".into()
        }
    );
    footprint.check("100 MiB log line");
    let text = Logs::text();
    let longest = text.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 16 * 1024, "a log line of {longest} bytes");
    // Under the default memory limit the guest cannot even build the line.
    let sb = sandbox_with(64 * MIB, CompileMode::InProcess);
    let err = pre_scale(
        &sb,
        &plugin_bytes("fixture-hostile-guest"),
        r#"{"attack": "log-line", "bytes": 104857600}"#,
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, SandboxError::HookMemoryLimit { .. }),
        "{err:?}"
    );
}
