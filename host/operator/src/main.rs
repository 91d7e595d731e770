//! `hoist`: one binary for the operator and its tools.
//!
//! - `hoist run`: the operator (controllers for Scalers).
//! - `hoist crds`: print the `CustomResourceDefinitions` as YAML.
//! - `hoist plugin check|run|pack`: verify, run locally, and package hook plugins.
//! - `hoist simulate`: replay a metric trace through a builtin autoscaling algorithm.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hoist_operator::{REVISION, cli};

#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    about = "A safe, programmable gate between desired and actual replicas"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the operator (controllers for Scalers).
    Run(cli::run::Args),
    /// Print the CustomResourceDefinitions hoist serves, as YAML.
    Crds(cli::crds::Args),
    /// Work with hook plugins: check, run locally, pack into a ConfigMap.
    #[command(subcommand)]
    Plugin(cli::plugin::Command),
    /// Replay a metric trace through a builtin autoscaling algorithm and plot the replicas.
    Simulate(Box<cli::simulate::Args>),
    /// Internal: compile one plugin component read from stdin, under the limits the request
    /// line sets, and write the precompiled code to stdout (run by hoist's own sandbox).
    #[command(name = cli::COMPILE_WORKER_SUBCOMMAND, hide = true)]
    CompileWorker,
}

fn main() -> ExitCode {
    // Once per process: clap wants the version for the process's life.
    let version: &'static str =
        Box::leak(format!("{} (revision {REVISION})", env!("CARGO_PKG_VERSION")).into_boxed_str());
    let matches = Cli::command().version(version).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::CompileWorker => return hoist_sandbox::compile_worker::run(),
        Command::Run(args) => cli::run::run(&args),
        Command::Crds(args) => cli::crds::run(&args),
        Command::Plugin(cmd) => cli::plugin::run(cmd),
        Command::Simulate(args) => cli::simulate::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hoist: {err:#}");
            ExitCode::FAILURE
        }
    }
}
