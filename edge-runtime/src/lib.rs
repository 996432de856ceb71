#![doc = include_str!("../README.md")]

pub mod backoff;
pub mod faces;
pub mod report;
pub mod source;
