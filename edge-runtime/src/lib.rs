#![doc = include_str!("../README.md")]

pub mod backend;
pub mod backoff;
pub mod batch;
pub mod config;
pub mod doctor;
pub mod faces;
pub mod http;
pub mod models;
pub mod pipeline;
pub mod report;
pub mod runner;
pub mod service;
pub mod source;
pub mod telemetry;
pub mod timing;
pub mod tracker;
