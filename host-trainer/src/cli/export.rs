//! `affect-train export` (skeleton: to be implemented).

/// Flags of `affect-train export`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train export`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train export is not implemented yet")
}
