//! `affect-train eval` (skeleton: to be implemented).

/// Flags of `affect-train eval`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train eval`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train eval is not implemented yet")
}
