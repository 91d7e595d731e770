//! `hoist`: one binary for the operator and its tools.
//!
//! - `hoist run`: the operator (controllers for Scalers).
//! - `hoist crds`: print the `CustomResourceDefinitions` as YAML.
//! - `hoist plugin check|run|pack`: verify, run locally, and package hook plugins.
//! - `hoist simulate`: replay a metric trace through a builtin autoscaling algorithm.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hoist_operator::cli;

#[derive(Debug, Parser)]
#[command(
    name = "hoist",
    version,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
