#![doc = include_str!("../README.md")]

pub mod data;
#[cfg(feature = "torch")]
pub mod export;
#[cfg(feature = "torch")]
pub mod model;
pub mod score;
#[cfg(feature = "torch")]
pub mod train;
