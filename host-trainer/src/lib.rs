#![doc = include_str!("../README.md")]

pub mod data;
#[cfg(feature = "torch")]
pub mod loss;
pub mod score;
