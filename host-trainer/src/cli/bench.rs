//! `affect-train bench` (skeleton: to be implemented).

/// Flags of `affect-train bench`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train bench`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train bench is not implemented yet")
}
