//! `affect-train baseline` (skeleton: to be implemented).

/// Flags of `affect-train baseline`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train baseline`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train baseline is not implemented yet")
}
