#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]

pub mod contract;
pub mod metrics;
pub mod wire;

#[cfg(feature = "std")]
pub mod deploy;
#[cfg(feature = "std")]
pub mod files;
#[cfg(feature = "std")]
pub mod metadata;
#[cfg(feature = "std")]
pub mod preprocess;
#[cfg(feature = "std")]
pub mod report_error;
#[cfg(feature = "std")]
pub mod score;
#[cfg(feature = "std")]
pub mod status;
#[cfg(feature = "std")]
pub mod synth;
