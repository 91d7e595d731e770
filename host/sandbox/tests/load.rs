//! Loading: verification errors are distinct, same bytes are deduplicated, and precompiled
//! artifacts are reused from disk — also by a new process.
// Tests and their helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{plugin_bytes, sandbox};
use hoist_sandbox::{Digest, LoadSource, Sandbox, SandboxConfig, SandboxError};

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
    assert_eq!(a.digest(), &Digest::of(&bytes));
    assert_eq!(a.wit_version(), hoist_sandbox::WIT_VERSION);
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

#[test]
fn an_emptydir_volume_holds_a_private_cache_that_no_other_user_can_plant() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // The kubelet creates an emptyDir with mode 0777.
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("emptydir");
    std::fs::create_dir(&volume).unwrap();
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777)).unwrap();
    let private = hoist_sandbox::private_cache_dir(&volume);
    assert!(private.starts_with(&volume));
    Sandbox::new(SandboxConfig {
        cache_dir: Some(private.clone()),
        ..SandboxConfig::default()
    })
    .unwrap();
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // Another user who can write the volume made that directory first: it is refused (this
    // part needs root to give the directory away, as the tests run in CI).
    std::fs::remove_dir(&private).unwrap();
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let given_away = std::process::Command::new("chown")
        .arg("12345")
        .arg(&private)
        .status()
        .is_ok_and(|s| s.success());
    if given_away {
        assert_eq!(std::fs::metadata(&private).unwrap().uid(), 12345);
        let err = Sandbox::new(SandboxConfig {
            cache_dir: Some(private),
            ..SandboxConfig::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("belongs to uid 12345"), "{err}");
    }
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

fn cache_config(cache: &std::path::Path) -> SandboxConfig {
    SandboxConfig {
        cache_dir: Some(cache.to_path_buf()),
        ..SandboxConfig::default()
    }
}

/// The one cache entry's file name after the digest: `-<engine key>.cwasm`.
fn engine_suffix(cache: &std::path::Path) -> String {
    let name = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| std::path::Path::new(n).extension() == Some("cwasm".as_ref()))
        .expect("a cache entry");
    name[64..].to_string()
}

#[tokio::test]
async fn load_cached_serves_a_digest_whose_bytes_are_gone() {
    use hoist_sandbox::{HookOutcome, HookRunner};
    common::Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let digest = {
        let first = Sandbox::new(cache_config(&cache)).unwrap();
        first
            .load(&plugin_bytes("fixture-noop"))
            .unwrap()
            .digest()
            .clone()
    };
    // A restarted operator: a new sandbox on the same cache, and no bytes.
    let sb = Sandbox::new(cache_config(&cache)).unwrap();
    let plugin = sb.load_cached(&digest).unwrap().expect("cached");
    assert_eq!(plugin.digest(), &digest);
    assert_eq!(plugin.wit_version(), hoist_sandbox::WIT_VERSION);
    assert_eq!(
        plugin.exports(),
        ["pre-scale", "post-scale", "on-failure", "validate-config"]
    );
    assert_eq!(
        plugin.size(),
        0,
        "the cache does not know the component's size"
    );
    assert_eq!(sb.stats().disk_hits, 1);
    assert_eq!(sb.stats().compiled, 0);
    let ctx = common::scale_down(vec![common::pod("w-0", 0, "127.0.0.1")], 0, "{}");
    let outcome = sb
        .pre_scale(
            &plugin,
            &ctx,
            &common::options(std::time::Duration::from_secs(5), &[]),
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        HookOutcome::Done {
            message: "no pre-scale work".into()
        }
    );
    // Now loaded: the same Arc from memory, and by `get`.
    assert!(Arc::ptr_eq(
        &plugin,
        &sb.load_cached(&digest).unwrap().unwrap()
    ));
    assert!(sb.get(&digest).is_some());
    assert_eq!(sb.stats().memory_hits, 1);

    // A digest never loaded is not cached.
    let unknown = Digest::parse(&"0".repeat(64)).unwrap();
    assert!(sb.load_cached(&unknown).unwrap().is_none());
    // Without a cache directory nothing is cached.
    assert!(sandbox().load_cached(&digest).unwrap().is_none());
}

#[test]
fn load_cached_verifies_the_entry_like_a_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let sb = Sandbox::new(cache_config(&cache)).unwrap();
    sb.load(&plugin_bytes("fixture-noop")).unwrap();
    let suffix = engine_suffix(&cache);
    // A precompiled component of the wrong WIT version under a digest's name (the cache
    // never writes one; a future hoist with the same engine could).
    let wrong =
        wasmtime::component::Component::new(sb.engine(), plugin_bytes("fixture-wrong-version"))
            .unwrap()
            .serialize()
            .unwrap();
    let digest = Digest::parse(&"1".repeat(64)).unwrap();
    let path = cache.join(format!("{digest}{suffix}"));
    std::fs::write(&path, wrong).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let err = Sandbox::new(cache_config(&cache))
        .unwrap()
        .load_cached(&digest)
        .unwrap_err();
    assert!(
        matches!(err, SandboxError::LoadWitVersion { ref found, .. } if found == "9.0.0"),
        "{err:?}"
    );
}

#[test]
fn load_cached_applies_the_cache_safety_checks() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let digest = Sandbox::new(cache_config(&cache))
        .unwrap()
        .load(&plugin_bytes("fixture-noop"))
        .unwrap()
        .digest()
        .clone();
    let entry = cache.join(format!("{digest}{}", engine_suffix(&cache)));

    // An entry others could have written is not trusted.
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sb = Sandbox::new(cache_config(&cache)).unwrap();
    assert!(sb.load_cached(&digest).unwrap().is_none());
    std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Nor a symlink to one (even a good one).
    let elsewhere = dir.path().join("elsewhere.cwasm");
    std::fs::rename(&entry, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &entry).unwrap();
    assert!(sb.load_cached(&digest).unwrap().is_none());
    std::fs::remove_file(&entry).unwrap();
    std::fs::rename(&elsewhere, &entry).unwrap();

    // Nor one that is not a precompiled artifact.
    let good = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, b"not a precompiled artifact").unwrap();
    assert!(sb.load_cached(&digest).unwrap().is_none());
    std::fs::write(&entry, &good).unwrap();

    // Nor anything once the directory became writable by others.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(sb.load_cached(&digest).unwrap().is_none());
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();

    // The same entry, restored, loads.
    assert!(sb.load_cached(&digest).unwrap().is_some());
}
