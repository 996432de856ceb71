#![doc = include_str!("../README.md")]

#[cfg(feature = "torch")]
pub mod loss;
pub mod data;
pub mod export;
pub mod score;
