//! `hoist crds`: print the `CustomResourceDefinitions` hoist serves, as one YAML stream.
//!
//! The output is byte for byte what `crds/` holds (`crds/check` compares the two).

use std::io::Write;

/// Arguments of `hoist crds`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    let yaml = hoist_api::crd_yaml()?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(yaml.as_bytes())?;
    stdout.flush()?;
    Ok(())
}
