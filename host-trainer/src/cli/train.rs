//! `affect-train train` (skeleton: to be implemented).

/// Flags of `affect-train train`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train train`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train train is not implemented yet")
}
