//! `affect-train score`: CCC and MSE of two `valence,arousal` files, as one JSON object.

use std::path::PathBuf;

use super::bad_input;

/// Flags of `affect-train score`.
#[derive(clap::Args)]
pub struct Args {
    /// Predictions: header `valence,arousal`, one row per frame.
    #[arg(long)]
    pred: PathBuf,
    /// Ground truth in the same format; rows with -5 are skipped.
    #[arg(long)]
    truth: PathBuf,
}

/// Prints `{"valence":{"ccc":…,"mse":…},"arousal":{…},"frames":n}`; bad files exit with code 2.
pub fn run(args: Args) -> anyhow::Result<()> {
    let score = affect_trainer::score::score_files(&args.pred, &args.truth).map_err(bad_input)?;
    println!("{}", serde_json::to_string(&score)?);
    Ok(())
}
