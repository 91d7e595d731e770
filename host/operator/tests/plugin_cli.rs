//! `hoist plugin check|run|pack` end to end, as a plugin author runs them.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Build the plugins once per process; a failed build fails the test.
fn plugins_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = Command::new(repo_root().join("plugins/build"))
            .output()
            .expect("run plugins/build");
        assert!(
            out.status.success(),
            "plugins/build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn plugin(name: &str) -> PathBuf {
    let path = plugins_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.is_file(), "{} missing", path.display());
    path
}

/// A fresh scratch directory under the system temp dir.
fn scratch() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hoist-cli-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `hoist` with a fresh home directory: the default plugin cache
/// (`~/.cache/hoist/plugins`) starts empty for every call.
fn hoist(args: &[&str]) -> Output {
    hoist_with_home(args, &scratch())
}

fn hoist_with_home(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(args)
        .env_remove("HOIST_PLUGIN_CACHE_DIR")
        .env("HOME", home)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_prints_digest_exports_and_wit_version() {
    let file = plugin("trino-drain");
    let out = hoist(&["plugin", "check", file.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let digest = hex::encode(Sha256::digest(std::fs::read(&file).unwrap()));
    assert!(stdout.contains(&format!("sha256:  {digest}")), "{stdout}");
    assert!(stdout.contains("wit:     hoist:hooks@0.1.1"), "{stdout}");
    assert!(
        stdout.contains("exports: pre-scale, post-scale, on-failure, validate-config"),
        "{stdout}"
    );
}

#[test]
fn a_second_check_in_a_new_process_loads_from_the_cache() {
    let dir = scratch();
    let cache = dir.join("cache");
    let file = plugin("nifi-decommission");
    let args = [
        "plugin",
        "check",
        file.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let first = hoist(&args);
    let second = hoist(&args);
    assert!(
        first.status.success() && second.status.success(),
        "{}\n{}",
        text(&first.stderr),
        text(&second.stderr)
    );
    assert!(
        text(&first.stdout).contains("load:    compiled in"),
        "{}",
        text(&first.stdout)
    );
    assert!(
        text(&second.stdout).contains("load:    cache hit in"),
        "{}",
        text(&second.stdout)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_and_run_cache_under_the_home_directory_unless_told_not_to() {
    let home = scratch();
    let file = plugin("fixture-noop");
    let args = ["plugin", "check", file.to_str().unwrap()];
    let first = hoist_with_home(&args, &home);
    let second = hoist_with_home(&args, &home);
    let default = home.join(".cache/hoist/plugins");
    assert!(
        text(&first.stdout).contains("compiled in"),
        "{}",
        text(&first.stdout)
    );
    assert!(
        text(&second.stdout).contains("load:    cache hit in")
            && text(&second.stdout).contains(default.to_str().unwrap()),
        "{}\n{}",
        text(&second.stdout),
        text(&second.stderr)
    );
    let uncached = hoist_with_home(
        &["plugin", "check", file.to_str().unwrap(), "--no-cache"],
        &home,
    );
    assert!(
        text(&uncached.stdout).contains("compiled in")
            && text(&uncached.stdout).contains("no cache dir"),
        "{}",
        text(&uncached.stdout)
    );
}

#[test]
fn run_refuses_a_context_file_with_an_unknown_field() {
    let dir = scratch();
    let ctx = write_context(&dir, 1, None);
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ctx).unwrap()).unwrap();
    value["podsRemoved"][0]["ordnial"] = serde_json::json!(1);
    value["toReplica"] = serde_json::json!(1);
    for (field, text_) in [
        ("ordnial", value.clone()),
        ("toReplica", {
            let mut v = value.clone();
            v["podsRemoved"][0]
                .as_object_mut()
                .unwrap()
                .remove("ordnial");
            v
        }),
    ] {
        std::fs::write(&ctx, text_.to_string()).unwrap();
        let out = hoist(&[
            "plugin",
            "run",
            plugin("fixture-noop").to_str().unwrap(),
            "--hook",
            "pre-scale",
            "--context",
            ctx.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("is not a hook context")
                && stderr.contains(&format!("unknown field `{field}`")),
            "{stderr}"
        );
    }
}

#[test]
fn check_refuses_bad_files_with_a_clear_reason() {
    let dir = scratch();
    let garbage = dir.join("garbage.wasm");
    std::fs::write(&garbage, b"#!/bin/sh\necho not a plugin\n").unwrap();
    let core = dir.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (garbage, "PluginNotWasm", "not a WebAssembly binary"),
        (
            core,
            "PluginCoreModule",
            "core WebAssembly module, not a component",
        ),
        (
            plugin("fixture-wrong-world"),
            "PluginWrongWorld",
            "does not export `hoist:hooks/hooks`",
        ),
        (
            plugin("fixture-wrong-version"),
            "PluginWitVersion",
            "built for hoist:hooks@9.0.0",
        ),
        (dir.join("absent.wasm"), "reading", "absent.wasm"),
    ];
    for (file, reason, words) in cases {
        let out = hoist(&["plugin", "check", file.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{} passed the check", file.display());
        assert!(
            stderr.contains(reason) && stderr.contains(words),
            "{}: {stderr}",
            file.display()
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A section of `id` holding `payload`, in a module or component.
fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb128(payload.len(), out);
    out.extend_from_slice(payload);
}

/// A compile bomb: a component whose one core module has one function of 2.4 million nested
/// empty blocks (7.2 MiB, the most wasmparser takes in a function). Compiling it in-process
/// ran for minutes at over 1 GiB.
fn compile_bomb() -> Vec<u8> {
    const DEPTH: usize = 2_400_000;
    let mut body = vec![0]; // no locals
    for _ in 0..DEPTH {
        body.extend_from_slice(&[0x02, 0x40]); // block (empty type)
    }
    body.resize(body.len() + DEPTH + 1, 0x0b); // the blocks' ends and the function's
    let mut code = vec![1]; // one function body
    leb128(body.len(), &mut code);
    code.extend_from_slice(&body);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[1, 0x60, 0, 0], &mut module); // types: () -> ()
    section(3, &[1, 0], &mut module); // functions: one of type 0
    section(10, &code, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // a core module
    component
}

#[test]
fn check_refuses_a_compile_bomb_at_its_limits() {
    let dir = scratch();
    let bomb = dir.join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb()).unwrap();
    let bomb = bomb.to_str().unwrap();
    // With the default address space (1 GiB) the memory bound is hit first; with room to
    // spare, the CPU-time bound.
    let cases: [(&[&str], &str); 2] = [
        (&["plugin", "check", bomb], "memory limit of 1024 MiB"),
        (
            &[
                "plugin",
                "check",
                "--compile-cpu-seconds",
                "2",
                "--compile-memory-mib",
                "8192",
                bomb,
            ],
            "CPU-time limit of 2 s",
        ),
    ];
    for (args, bound) in cases {
        let started = std::time::Instant::now();
        let out = hoist(args);
        let took = started.elapsed();
        let stderr = text(&out.stderr);
        eprintln!(
            "compile bomb refused by `hoist {}` after {took:?}: {stderr}",
            args.join(" ")
        );
        assert!(!out.status.success(), "the bomb passed the check");
        assert!(
            stderr.contains("PluginInvalid") && stderr.contains(bound),
            "{stderr}"
        );
        // A generous bound: the compilation is stopped, not finished (that takes minutes).
        assert!(took < std::time::Duration::from_mins(1), "took {took:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A tiny HTTP/1.1 server on a loopback address answering like a Trino worker: PUT sets the
/// state, GET returns it (a worker that has been draining reports DRAINED).
fn trino_worker() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.4.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut state = String::from("\"ACTIVE\"");
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let length = head
                .iter()
                .find_map(|h| {
                    h.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = String::from_utf8(body).unwrap();
            let user = head
                .iter()
                .any(|h| h.eq_ignore_ascii_case("x-trino-user: hoist"));
            let request = head.first().cloned().unwrap_or_default();
            log.lock()
                .unwrap()
                .push(format!("{request} {body} user={user}"));
            let reply = if request.starts_with("PUT ") {
                state = body;
                String::new()
            } else if state == "\"DRAINING\"" {
                "\"DRAINED\"".to_string()
            } else {
                state.clone()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    (addr, seen)
}

fn write_context(dir: &Path, port: u16, saved_state: Option<&str>) -> PathBuf {
    let ctx = serde_json::json!({
        "namespace": "analytics",
        "scaler": "trino",
        "target": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "trino-worker"},
        "operationId": "op-7",
        "fromReplicas": 2,
        "toReplicas": 1,
        "direction": "down",
        "podsRemoved": [{"name": "trino-worker-1", "ordinal": 1, "ip": "127.0.4.1", "ready": true}],
        "allPods": [
            {"name": "trino-worker-0", "ordinal": 0, "ip": "127.0.4.2", "ready": true},
            {"name": "trino-worker-1", "ordinal": 1, "ip": "127.0.4.1", "ready": true}
        ],
        "config": format!(r#"{{"port": {port}, "pollIntervalMs": 2000}}"#),
        "savedState": saved_state,
        "attempt": if saved_state.is_some() { 2 } else { 1 },
        "elapsedInStage": 0
    });
    let path = dir.join("ctx.json");
    std::fs::write(&path, serde_json::to_string_pretty(&ctx).unwrap()).unwrap();
    path
}

#[test]
fn run_drives_a_hook_against_a_local_worker_and_prints_json() {
    let (addr, seen) = trino_worker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let dir = scratch();
    let file = plugin("trino-drain");

    let ctx = write_context(&dir, port, None);
    let out = hoist(&[
        "plugin",
        "run",
        file.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
        "--allow-host",
        &addr,
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "inProgress", "{json}");
    assert_eq!(json["retryAfterMs"], 2000);
    let state = json["state"].as_str().unwrap().to_string();
    assert!(state.contains("trino-worker-1"), "{state}");
    // Guest logs reach stderr with the call's identity.
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("asked worker trino-worker-1") && stderr.contains("scaler=trino"),
        "{stderr}"
    );

    let ctx = write_context(&dir, port, Some(&state));
    let out = hoist(&[
        "plugin",
        "run",
        file.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
        "--allow-host",
        &addr,
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "done", "{json}");
    assert_eq!(json["message"], "1 worker(s) drained");

    let out = hoist(&[
        "plugin",
        "run",
        file.to_str().unwrap(),
        "--hook",
        "on-failure",
        "--context",
        ctx.to_str().unwrap(),
        "--allow-host",
        &addr,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            // trino-drain reads the state before asking (a DRAINED worker refuses DRAINING).
            "GET /v1/info/state HTTP/1.1  user=true",
            "PUT /v1/info/state HTTP/1.1 \"DRAINING\" user=true",
            "GET /v1/info/state HTTP/1.1  user=true",
            "PUT /v1/info/state HTTP/1.1 \"ACTIVE\" user=true",
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_until_done_hands_each_state_to_the_next_call() {
    let (addr, seen) = trino_worker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let dir = scratch();
    // The worker drains at the second poll; trino-drain polls every 2 s (the context's config).
    let ctx = write_context(&dir, port, None);
    let out = hoist(&[
        "plugin",
        "run",
        plugin("trino-drain").to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
        "--allow-host",
        &addr,
        "--until-done",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let calls: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["outcome"], "inProgress");
    assert_eq!(calls[0]["call"], 1);
    assert_eq!(calls[1]["outcome"], "done");
    assert_eq!(calls[1]["message"], "1 worker(s) drained");
    // The second call resumed from the state: it polled, it did not ask to drain again.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().filter(|r| r.starts_with("PUT ")).count(),
        1,
        "{seen:?}"
    );
    let on_failure = hoist(&[
        "plugin",
        "run",
        plugin("trino-drain").to_str().unwrap(),
        "--hook",
        "on-failure",
        "--context",
        ctx.to_str().unwrap(),
        "--until-done",
    ]);
    assert!(!on_failure.status.success());
    assert!(
        text(&on_failure.stderr).contains("--until-done replays pre-scale and post-scale only"),
        "{}",
        text(&on_failure.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `hoist plugin new` → `cargo build` → `hoist plugin run --until-done`: the author's path with
/// the Rust template, outside the plugins workspace, against a loopback worker.
#[test]
fn new_scaffolds_a_rust_plugin_that_builds_and_drains() {
    let dir = scratch();
    let project = dir.join("my-drain");
    let sdk = repo_root().join("plugins/sdk");
    let out = hoist(&[
        "plugin",
        "new",
        "my-drain",
        "--lang",
        "rust",
        "--dir",
        project.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for file in ["Cargo.toml", "src/lib.rs", "context.json", "README.md"] {
        assert!(project.join(file).is_file(), "{file} missing");
    }
    let again = hoist(&[
        "plugin",
        "new",
        "my-drain",
        "--dir",
        project.to_str().unwrap(),
    ]);
    assert!(
        text(&again.stderr).contains("exists and is not empty"),
        "{}",
        text(&again.stderr)
    );
    // The versions the plugins workspace builds with (no resolution, no download), and its
    // target directory (the SDK's dependencies are compiled already).
    std::fs::copy(
        repo_root().join("plugins/Cargo.lock"),
        project.join("Cargo.lock"),
    )
    .unwrap();
    let target = plugins_dir().ancestors().nth(2).unwrap().to_path_buf();
    let build = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&project)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/my_drain.wasm");
    let size = std::fs::metadata(&wasm).unwrap().len();
    eprintln!("my_drain.wasm: {size} bytes (the template's release profile)");

    let (addr, seen) = trino_worker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let ctx = write_context(&dir, port, None);
    let out = hoist(&[
        "plugin",
        "run",
        wasm.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
        "--allow-host",
        &addr,
        "--until-done",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let last: serde_json::Value =
        serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "done", "{last}");
    assert_eq!(last["message"], "1 pod(s) drained");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r.starts_with("PUT ") && r.contains("DRAINING")),
        "{seen:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// `hoist plugin new --lang python` (the Python SDK's trino-drain example) built with the SDK's
/// pinned componentize-py (`plugins/python/make-component`), checked and replayed against a
/// loopback worker.
#[test]
fn a_python_plugin_from_the_template_builds_and_drains() {
    sdk_template_builds_and_drains("python", "plugins/python", "app.py");
}

/// `hoist plugin new --lang js` (the JavaScript SDK's trino-drain example) built with the SDK's
/// pinned componentize-js (`plugins/js/make-component`), checked and replayed against a
/// loopback worker.
#[test]
fn a_javascript_plugin_from_the_template_builds_and_drains() {
    sdk_template_builds_and_drains("js", "plugins/js", "app.js");
}

/// `validate-config` of `wasm` with a configuration holding an unknown field: refused, naming it.
fn unknown_config_field_is_refused(wasm: &Path, ctx: &Path, dir: &Path) {
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"port": 1, "prot": 2}"#).unwrap();
    let refused = hoist_with_home(
        &[
            "plugin",
            "run",
            wasm.to_str().unwrap(),
            "--hook",
            "validate-config",
            "--context",
            ctx.to_str().unwrap(),
            "--config",
            bad.to_str().unwrap(),
        ],
        dir,
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stdout).contains("unknown field `prot`"),
        "{}",
        text(&refused.stdout)
    );
}

/// Scaffolds a `lang` project with the SDK at `sdk`, builds its `app` with the SDK's
/// `make-component`, checks it, drains a loopback worker with `run --until-done`, and sees a
/// configuration with an unknown field refused.
fn sdk_template_builds_and_drains(lang: &str, sdk: &str, app: &str) {
    let dir = scratch();
    let project = dir.join("my-drain");
    let sdk = repo_root().join(sdk);
    let out = hoist(&[
        "plugin",
        "new",
        "my-drain",
        "--lang",
        lang,
        "--dir",
        project.to_str().unwrap(),
        "--sdk-path",
        sdk.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let source = if lang == "python" {
        project.clone()
    } else {
        project.join(app)
    };
    assert!(project.join(app).is_file());
    let wasm = dir.join("my_drain.wasm");
    let build = Command::new(sdk.join("make-component"))
        .arg(&source)
        .arg(&wasm)
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    assert_eq!(PathBuf::from(text(&build.stdout).trim()), wasm);
    eprintln!("{}", text(&build.stderr).trim());
    // One home for the calls below: the component compiles once, then loads from the cache.
    let check = hoist_with_home(&["plugin", "check", wasm.to_str().unwrap()], &dir);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert!(
        text(&check.stdout).contains("wit:     hoist:hooks@0.1.1"),
        "{}",
        text(&check.stdout)
    );
    eprintln!("{}", text(&check.stdout));

    let (addr, seen) = trino_worker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let ctx = write_context(&dir, port, None);
    let out = hoist_with_home(
        &[
            "plugin",
            "run",
            wasm.to_str().unwrap(),
            "--hook",
            "pre-scale",
            "--context",
            ctx.to_str().unwrap(),
            "--allow-host",
            &addr,
            "--until-done",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let calls: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["outcome"], "inProgress");
    assert_eq!(calls[1]["outcome"], "done");
    assert_eq!(calls[1]["message"], "1 worker(s) drained");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[..2],
        [
            "GET /v1/info/state HTTP/1.1  user=true".to_owned(),
            "PUT /v1/info/state HTTP/1.1 \"DRAINING\" user=true".to_owned(),
        ],
        "{seen:?}"
    );
    unknown_config_field_is_refused(&wasm, &ctx, &dir);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_reports_failures_as_json_and_a_non_zero_exit() {
    let (addr, seen) = trino_worker();
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    let dir = scratch();
    let ctx = write_context(&dir, port, None);

    let trap = plugin("fixture-trap");
    let out = hoist(&[
        "plugin",
        "run",
        trap.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reason"], "HookTrapped", "{json}");
    assert!(
        json["message"]
            .as_str()
            .unwrap()
            .contains("deliberate panic in pre-scale of trino"),
        "{json}"
    );

    // No --allow-host: the worker is not reachable.
    let trino = plugin("trino-drain");
    let out = hoist(&[
        "plugin",
        "run",
        trino.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reason"], "HookRequestDenied", "{json}");
    assert!(
        text(&out.stderr).contains("plugin request denied"),
        "{}",
        text(&out.stderr)
    );
    assert!(seen.lock().unwrap().is_empty());

    let loop_plugin = plugin("fixture-endless-loop");
    let out = hoist(&[
        "plugin",
        "run",
        loop_plugin.to_str().unwrap(),
        "--hook",
        "pre-scale",
        "--context",
        ctx.to_str().unwrap(),
        "--deadline",
        "300ms",
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reason"], "HookDeadlineExceeded", "{json}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn run_prints_a_huge_plugin_message_cut_to_the_limit() {
    // fixture-huge-message answers with 10 MiB texts; the CLI prints what the sandbox
    // returns: at most MAX_MESSAGE_BYTES of each, with a note of how much was cut.
    let max = hoist_sandbox::MAX_MESSAGE_BYTES;
    let dir = scratch();
    let ctx = write_context(&dir, 8080, None);
    let file = plugin("fixture-huge-message");
    let run = |hook: &str| {
        hoist(&[
            "plugin",
            "run",
            file.to_str().unwrap(),
            "--hook",
            hook,
            "--context",
            ctx.to_str().unwrap(),
        ])
    };

    let out = run("pre-scale");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        out.stdout.len() < 4 * max,
        "{} bytes on stdout",
        out.stdout.len()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["outcome"], "done", "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.len() <= max, "{} bytes", message.len());
    assert!(message.starts_with("pre-scale done: €€€"), "{message}");
    assert!(
        message.contains("… [cut: ") && message.ends_with(" bytes more]"),
        "{message}"
    );

    let out = run("validate-config");
    assert!(!out.status.success());
    assert!(
        out.stdout.len() < 4 * max,
        "{} bytes on stdout",
        out.stdout.len()
    );
    assert!(
        out.stderr.len() < 16 * max,
        "{} bytes on stderr",
        out.stderr.len()
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["reason"], "ConfigRejected", "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.contains("config rejected: €€€") && message.ends_with(" bytes more]"),
        "{message}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn leb128(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = u8::try_from(n & 0x7f).unwrap();
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A valid component grown by a custom section holding `payload`.
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"hoist-test-padding";
    let mut section = Vec::new();
    leb128(name.len(), &mut section);
    section.extend_from_slice(name);
    section.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(section.len(), &mut out);
    out.extend_from_slice(&section);
    out
}

fn parse_configmap(yaml: &[u8]) -> ConfigMap {
    let text = text(yaml);
    assert!(
        text.contains("apiVersion: v1") && text.contains("kind: ConfigMap"),
        "{text}"
    );
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn pack_writes_a_configmap_with_the_component_and_its_digest() {
    let file = plugin("trino-drain");
    let bytes = std::fs::read(&file).unwrap();
    let out = hoist(&[
        "plugin",
        "pack",
        file.to_str().unwrap(),
        "--name",
        "trino-drain",
        "--namespace",
        "analytics",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cm = parse_configmap(&out.stdout);
    assert_eq!(cm.metadata.name.as_deref(), Some("trino-drain"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("analytics"));
    assert_eq!(
        cm.metadata.labels.unwrap()["hoist.dev/plugin"],
        "trino-drain"
    );
    assert_eq!(
        cm.metadata.annotations.unwrap()["hoist.dev/plugin-sha256"],
        hex::encode(Sha256::digest(&bytes))
    );
    assert_eq!(cm.binary_data.unwrap()["plugin.wasm"].0, bytes);
}

#[test]
fn pack_compresses_when_needed_and_refuses_what_cannot_fit() {
    let dir = scratch();
    let noop = std::fs::read(plugin("fixture-noop")).unwrap();

    // 2 MiB of zeros: too big plain, fits gzip-compressed.
    let big = with_custom_section(&noop, &vec![0u8; 2 * 1024 * 1024]);
    let big_file = dir.join("big.wasm");
    std::fs::write(&big_file, &big).unwrap();
    let check = hoist(&["plugin", "check", big_file.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "the padded component is still a valid plugin: {}",
        text(&check.stderr)
    );
    let out = hoist(&[
        "plugin",
        "pack",
        big_file.to_str().unwrap(),
        "--name",
        "big",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cm = parse_configmap(&out.stdout);
    let data = cm.binary_data.unwrap();
    assert!(!data.contains_key("plugin.wasm"));
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&data["plugin.wasm.gz"].0[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, big);
    assert_eq!(
        cm.metadata.annotations.unwrap()["hoist.dev/plugin-sha256"],
        hex::encode(Sha256::digest(&big))
    );

    // 1.2 MiB of noise: fits neither way.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..1_200_000)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed.to_le_bytes()[0]
        })
        .collect();
    let huge_file = dir.join("huge.wasm");
    std::fs::write(&huge_file, with_custom_section(&noop, &noise)).unwrap();
    let out = hoist(&[
        "plugin",
        "pack",
        huge_file.to_str().unwrap(),
        "--name",
        "huge",
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no partial YAML on failure");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("too large for a ConfigMap") && stderr.contains("1048576"),
        "{stderr}"
    );

    // Not a plugin: refused before packing.
    let out = hoist(&[
        "plugin",
        "pack",
        plugin("fixture-wrong-world").to_str().unwrap(),
        "--name",
        "wrong",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("PluginWrongWorld"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
