//! Dispatch benchmark (a bench binary, not a test): `cargo bench -p hoist-sandbox --bench dispatch`.
//!
//! (a) the bare wasmtime floor: instantiate a pre-instantiated component in a fresh store
//!     (with an empty WASI context) and call one of its exports, `validate-config("{}")`, which
//!     does next to nothing;
//! (b) hoist's full dispatch of `pre-scale` through `HookRunner` with a realistic context
//!     (5 pods, 2 leaving): fresh store with limits, WASI with nothing granted, filtered HTTP,
//!     epoch deadline and timeout, lowering the context, lifting the outcome;
//!
//! both on the same plugin (`fixture-noop`), in one run, and prints b/a. Then the cold compile
//! and the cache-hit load time of the trino-drain plugin.

// A benchmark binary: any failed step aborts the measurement, by design.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all, clippy::pedantic)]
mod common;
#[path = "support/timing.rs"]
mod timing;

use std::time::{Duration, Instant};

use timing::{measure, micros, millis};

use hoist_sandbox::{HookRunner, LoadSource, Sandbox, SandboxConfig};
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

struct Floor {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Floor {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Floor {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

fn main() {
    dispatch_ratio();
    load_times();
}

/// (a) and (b), and their ratio.
fn dispatch_ratio() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
    let noop_bytes = common::plugin_bytes("fixture-noop");
    let noop = sandbox.load(&noop_bytes).unwrap();

    // (a) the floor, on the same engine (same pooling allocator and epoch configuration).
    let engine = sandbox.engine().clone();
    let component = wasmtime::component::Component::new(&engine, &noop_bytes).unwrap();
    let mut linker = Linker::<Floor>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    // The log import, as a dynamically typed no-op (the noop plugin never logs).
    linker
        .instance("hoist:hooks/log@0.1.1")
        .unwrap()
        .func_new("log", |_, _, _, _| Ok(()))
        .unwrap();
    // The secrets import (a plugin that reads none may not import it): always none.
    linker
        .instance("hoist:hooks/secrets@0.1.1")
        .unwrap()
        .func_new("get", |_, _, _, results| {
            results[0] = wasmtime::component::Val::Option(None);
            Ok(())
        })
        .unwrap();
    let pre = linker.instantiate_pre(&component).unwrap();
    let floor = || {
        runtime.block_on(async {
            let mut store = Store::new(
                &engine,
                Floor {
                    wasi: WasiCtx::builder().build(),
                    http: WasiHttpCtx::new(),
                    table: ResourceTable::new(),
                },
            );
            store.set_epoch_deadline(1_000_000);
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let iface = instance
                .get_export_index(&mut store, None, "hoist:hooks/hooks@0.1.1")
                .unwrap();
            let func = instance
                .get_export_index(&mut store, Some(&iface), "validate-config")
                .unwrap();
            let func = instance
                .get_typed_func::<(&str,), (Result<(), String>,)>(&mut store, &func)
                .unwrap();
            let (result,) = func.call_async(&mut store, ("{}",)).await.unwrap();
            assert!(result.is_ok());
        });
    };

    // (b) hoist's dispatch through the trait object the operator holds.
    let runner: &dyn HookRunner = &sandbox;
    let ips = [
        "10.1.0.10",
        "10.1.0.11",
        "10.1.0.12",
        "10.1.0.13",
        "10.1.0.14",
    ];
    let all = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| common::pod(&format!("trino-worker-{i}"), u32::try_from(i).unwrap(), ip))
        .collect();
    let mut ctx = common::scale_down(all, 2, r#"{"port": 8080, "user": "hoist"}"#);
    ctx.saved_state = Some(r#"{"asked":["trino-worker-4","trino-worker-3"],"polls":2}"#.into());
    let allowed: Vec<String> = ips.iter().map(|ip| format!("{ip}:8080")).collect();
    let options = common::options(Duration::from_secs(10), &allowed);
    let dispatch = || {
        runtime.block_on(async {
            let outcome = runner.pre_scale(&noop, &ctx, &options).await.unwrap();
            assert!(matches!(outcome, hoist_sandbox::HookOutcome::Done { .. }));
        });
    };

    // Interleave the two so that machine noise hits both alike.
    let (mut a_runs, mut b_runs) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        a_runs.push(measure(15, 200, floor));
        b_runs.push(measure(15, 200, dispatch));
    }
    a_runs.sort();
    b_runs.sort();
    let a = a_runs[2];
    let b = b_runs[2];
    println!(
        "(a) wasmtime floor: fresh store + instantiate + call empty export: {:8.2} µs",
        micros(a)
    );
    println!(
        "(b) hoist dispatch: HookRunner::pre_scale, 5-pod context:          {:8.2} µs",
        micros(b)
    );
    println!(
        "ratio b/a = {:.2}  (goal <= 1.5)",
        b.as_secs_f64() / a.as_secs_f64()
    );
}

/// Cold compile, cache hit and memory hit of trino-drain.
fn load_times() {
    // Load times of the trino-drain plugin.
    let trino = common::plugin_bytes("trino-drain");
    let mut cold = Vec::new();
    for _ in 0..5 {
        let fresh = Sandbox::new(SandboxConfig::default()).unwrap();
        let start = Instant::now();
        let (_, source) = fresh.load_with_source(&trino).unwrap();
        cold.push(start.elapsed());
        assert_eq!(source, LoadSource::Compiled);
    }
    cold.sort();
    let dir = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..SandboxConfig::default()
    };
    Sandbox::new(config.clone()).unwrap().load(&trino).unwrap();
    let mut hits = Vec::new();
    for _ in 0..11 {
        let fresh = Sandbox::new(config.clone()).unwrap();
        let start = Instant::now();
        let (_, source) = fresh.load_with_source(&trino).unwrap();
        hits.push(start.elapsed());
        assert_eq!(source, LoadSource::DiskCache);
    }
    hits.sort();
    let memory = {
        let sandbox = Sandbox::new(SandboxConfig::default()).unwrap();
        sandbox.load(&trino).unwrap();
        let start = Instant::now();
        let (_, source) = sandbox.load_with_source(&trino).unwrap();
        assert_eq!(source, LoadSource::Memory);
        start.elapsed()
    };
    println!(
        "trino-drain ({} bytes): cold compile {:.1} ms (median of 5), cache-hit load {:.2} ms (median of 11), memory hit {:.1} µs",
        trino.len(),
        millis(cold[2]),
        millis(hits[5]),
        micros(memory)
    );
}
