//! Loading: verification errors are distinct, same bytes are deduplicated, and precompiled
//! artifacts are reused from disk — also by a new process.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{plugin_bytes, sandbox};
use hoist_sandbox::{LoadSource, Sandbox, SandboxConfig, SandboxError};

#[test]
fn garbage_is_not_wasm() {
    let err = sandbox()
        .load(b"this is a shell script, not a plugin\n")
        .unwrap_err();
    assert!(matches!(err, SandboxError::LoadNotWasm(_)), "{err:?}");
    assert_eq!(err.reason(), "PluginNotWasm");
    let err = sandbox().load(b"").unwrap_err();
    assert!(matches!(err, SandboxError::LoadNotWasm(_)), "{err:?}");
}

#[test]
fn core_module_is_not_a_component() {
    // The smallest valid core module: magic + version 1.
    let err = sandbox().load(b"\0asm\x01\0\0\0").unwrap_err();
    assert!(matches!(err, SandboxError::LoadCoreModule), "{err:?}");
    assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
}

#[test]
fn truncated_component_does_not_compile() {
    let mut bytes = plugin_bytes("fixture-noop");
    bytes.truncate(bytes.len() / 2);
    let err = sandbox().load(&bytes).unwrap_err();
    assert!(matches!(err, SandboxError::LoadCompile(_)), "{err:?}");
}

#[test]
fn wrong_world_is_named_with_its_exports() {
    let err = sandbox()
        .load(&plugin_bytes("fixture-wrong-world"))
        .unwrap_err();
    match &err {
        SandboxError::LoadWrongWorld { exports } => assert!(
            exports.contains("hoist:fixtures/greeter@0.1.0"),
            "{exports}"
        ),
        other => panic!("expected LoadWrongWorld, got {other:?}"),
    }
    assert!(err.is_load_error());
}

#[test]
fn wrong_wit_version_is_its_own_error() {
    let err = sandbox()
        .load(&plugin_bytes("fixture-wrong-version"))
        .unwrap_err();
    match &err {
        SandboxError::LoadWitVersion { found, supported } => {
            assert_eq!(found, "9.0.0");
            assert_eq!(supported, hoist_sandbox::WIT_VERSION);
        }
        other => panic!("expected LoadWitVersion, got {other:?}"),
    }
}

#[test]
fn a_plugin_is_verified_and_deduplicated_by_digest() {
    let sb = sandbox();
    let bytes = plugin_bytes("trino-drain");
    let (a, source_a) = sb.load_with_source(&bytes).unwrap();
    let (b, source_b) = sb.load_with_source(&bytes).unwrap();
    assert_eq!(source_a, LoadSource::Compiled);
    assert_eq!(source_b, LoadSource::Memory);
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.digest().len(), 64);
    assert_eq!(a.wit_version(), "0.1.0");
    assert_eq!(
        a.exports(),
        ["pre-scale", "post-scale", "on-failure", "validate-config"]
    );
    assert_eq!(
        sb.get(a.digest()).map(|p| p.digest().to_string()),
        Some(a.digest().to_string())
    );
    assert!(sb.unload(a.digest()));
    assert!(sb.get(a.digest()).is_none());
}

#[test]
fn disk_cache_serves_a_new_sandbox_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = plugin_bytes("fixture-noop");
    let config = SandboxConfig {
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    let first = Sandbox::new(config.clone()).unwrap();
    assert_eq!(
        first.load_with_source(&bytes).unwrap().1,
        LoadSource::Compiled
    );
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one artifact, no temp files left: {files:?}"
    );
    let second = Sandbox::new(config).unwrap();
    assert_eq!(
        second.load_with_source(&bytes).unwrap().1,
        LoadSource::DiskCache
    );
    assert_eq!(second.stats().compiled, 0);
    assert_eq!(second.stats().disk_hits, 1);
}

#[test]
fn a_corrupt_cache_entry_is_replaced_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let bytes = plugin_bytes("fixture-noop");
    let config = SandboxConfig {
        cache_dir: Some(cache.clone()),
        ..SandboxConfig::default()
    };
    Sandbox::new(config.clone()).unwrap().load(&bytes).unwrap();
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"not a precompiled artifact").unwrap();
    let sb = Sandbox::new(config.clone()).unwrap();
    assert_eq!(sb.load_with_source(&bytes).unwrap().1, LoadSource::Compiled);
    assert_eq!(
        Sandbox::new(config)
            .unwrap()
            .load_with_source(&bytes)
            .unwrap()
            .1,
        LoadSource::DiskCache
    );
}

#[test]
fn a_cache_dir_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("shared");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache),
        ..SandboxConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, SandboxError::CacheDir { .. }), "{err:?}");
}

/// Run as a subprocess by `second_process_load_hits_disk_cache`: load trino-drain with the
/// cache dir from the environment and print where it came from.
#[test]
#[ignore = "helper: run as a subprocess by second_process_load_hits_disk_cache"]
fn child_load_and_report_source() {
    let cache = std::env::var("HOIST_TEST_CACHE_DIR").expect("HOIST_TEST_CACHE_DIR");
    let wasm = std::env::var("HOIST_TEST_PLUGIN").expect("HOIST_TEST_PLUGIN");
    let bytes = std::fs::read(wasm).unwrap();
    let sb = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.into()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let started = std::time::Instant::now();
    let (plugin, source) = sb.load_with_source(&bytes).unwrap();
    println!(
        "LOAD-SOURCE={source} DIGEST={} MS={:.2}",
        plugin.digest(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn second_process_load_hits_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = common::plugins_dir().join("trino_drain.wasm");
    let run = || {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "child_load_and_report_source",
                "--nocapture",
            ])
            .env("HOIST_TEST_CACHE_DIR", dir.path().join("cache"))
            .env("HOIST_TEST_PLUGIN", &wasm)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "child failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("LOAD-SOURCE="))
            .unwrap_or_else(|| panic!("no report in {stdout}"))
            .to_string();
        eprintln!("child: {line}");
        line
    };
    let first = run();
    let second = run();
    assert!(first.starts_with("LOAD-SOURCE=compiled "), "{first}");
    assert!(second.starts_with("LOAD-SOURCE=disk-cache "), "{second}");
    // Same digest both times.
    assert_eq!(
        first.split_whitespace().nth(1),
        second.split_whitespace().nth(1)
    );
}
