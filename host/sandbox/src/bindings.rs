//! Host bindings generated from `wit/` (world `hoist:hooks/hook`).
//!
//! The `wasi:*` interfaces the world imports are the ones `wasmtime-wasi` and
//! `wasmtime-wasi-http` implement; they are added to the linker from those crates.

#![allow(missing_docs, missing_debug_implementations, clippy::pedantic)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "hoist:hooks/hook",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
    require_store_data_send: true,
});

pub use self::hoist::hooks::{log, secrets, types};
