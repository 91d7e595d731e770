//! `hoist crds`: print the CRDs (filled by the Scaler resource issue).

/// Arguments of `hoist crds`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args) -> anyhow::Result<()> {
    anyhow::bail!("hoist crds: not built yet")
}
