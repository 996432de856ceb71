#![doc = include_str!("../README.md")]

#[cfg(feature = "torch")]
pub mod ablate;
#[cfg(feature = "torch")]
pub mod baseline;
pub mod data;
#[cfg(feature = "torch")]
pub mod eval;
pub mod export;
#[cfg(feature = "torch")]
pub mod loss;
#[cfg(feature = "torch")]
pub mod model;
pub use affect_shared::score;
#[cfg(feature = "torch")]
pub mod train;
