//! `affect-train synth` (skeleton: to be implemented).

/// Flags of `affect-train synth`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `affect-train synth`.
pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("affect-train synth is not implemented yet")
}
