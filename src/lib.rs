//! prorata: exact, explainable commission and revenue splits over gRPC.
//!
//! # Layout
//!
//! - [`domain`]: pure types and the split engine (no I/O, no async, no proto types).
#![forbid(unsafe_code)]

pub mod app;
pub mod cache;
pub mod commit;
pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod loadgen;
pub mod settlement;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod vectors;
