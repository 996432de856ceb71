#![doc = include_str!("../README.md")]

pub mod data;
#[cfg(feature = "torch")]
pub mod loss;
#[cfg(feature = "torch")]
pub mod model;
pub mod score;
