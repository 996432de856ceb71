//! `affect-train ablate` (skeleton: to be implemented).

/// Flags of `affect-train ablate`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train ablate`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train ablate is not implemented yet")
}
