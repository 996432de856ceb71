//! `affect-train score` (skeleton: to be implemented).

/// Flags of `affect-train score`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train score`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train score is not implemented yet")
}
