//! The gRPC surface: the only place that knows proto types (besides the client tools,
//! which use the generated clients). Services convert, call [`crate::app::App`], and map
//! errors to statuses in one place ([`error`]).

pub mod convert;
pub mod encode;
pub mod error;
pub mod frames;
pub mod pb;
pub mod services;
pub mod wire;
