//! Subcommands of `affect-train`: each turns parsed flags into calls of the library.

#[cfg(feature = "torch")]
pub mod ablate;
#[cfg(feature = "torch")]
pub mod bench;
pub mod data;
#[cfg(feature = "torch")]
pub mod eval;
#[cfg(feature = "torch")]
pub mod export;
pub mod score;
pub mod synth;
#[cfg(feature = "torch")]
pub mod train;

use std::process::ExitCode;

/// Marks an error as the user's input being wrong (bad file, bad flag, bad model): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub anyhow::Error);

/// Wraps any error as [`BadInput`].
pub fn bad_input(err: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(err.into()))
}

/// Logs to stderr; `RUST_LOG` selects the level (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Prints the error chain and maps it to the documented exit codes: 2 bad input, 1 other failure.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {}",
                affect_shared::report_error::error_chain(err.as_ref())
            );
            if err.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
