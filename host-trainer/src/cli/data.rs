//! `affect-train data …` (skeleton: to be implemented).

/// Dataset subcommands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Summarise a dataset.
    Inspect {},
}

/// Runs a dataset subcommand.
pub fn run(_cmd: Command) -> anyhow::Result<()> {
    anyhow::bail!("affect-train data is not implemented yet")
}
