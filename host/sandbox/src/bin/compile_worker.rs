//! A stand-alone compile worker ([`hoist_sandbox::compile_worker::run`]), for this crate's
//! tests and for embedders without a program of their own to run as the worker; the operator
//! runs its own binary as `hoist compile-worker` instead.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    hoist_sandbox::compile_worker::run()
}
