#![doc = include_str!("../README.md")]

pub mod faces;
pub mod report;
pub mod source;
