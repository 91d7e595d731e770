//! `hoist plugin ...` (filled by the sandbox issue).

/// Plugin subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Verify a plugin component and print its digest, exports and WIT version.
    Check { file: std::path::PathBuf },
}

pub fn run(_cmd: Command) -> anyhow::Result<()> {
    anyhow::bail!("hoist plugin: not built yet")
}
