//! Code generated from `proto/prorata/v1` by build.rs.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("prorata.v1");

pub use super::wire::{ComputeResponse, GetSplitResponse};

/// The server of `CommissionService` whose requests keep their bytes
/// ([`super::wire::ComputeRequest`]); build.rs generates it apart from the types above.
pub mod server {
    include!(concat!(env!("OUT_DIR"), "/server/prorata.v1.rs"));
}

/// The encoded descriptor set of every prorata proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/prorata_descriptor.bin"));
