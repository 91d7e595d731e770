//! Subcommands of the `hoist` binary, one module each.
pub mod crds;
pub mod plugin;
pub mod run;
pub mod simulate;
