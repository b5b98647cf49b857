//! Compiles `proto/` with protox (a pure-Rust protobuf compiler), so building needs no
//! system `protoc`. The encoded descriptor set is also written to OUT_DIR for the gRPC
//! reflection service.

use std::{env, path::PathBuf};

use prost::Message as _;

const PROTOS: &[&str] = &[
    "proto/prorata/v1/types.proto",
    "proto/prorata/v1/commission.proto",
    "proto/prorata/v1/rules.proto",
    "proto/prorata/v1/network.proto",
    "proto/prorata/v1/settlement.proto",
    "proto/prorata/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("prorata_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Hand-written twins that can send a stored split already encoded (src/grpc/wire.rs).
        .extern_path(
            ".prorata.v1.ComputeResponse",
            "crate::grpc::wire::ComputeResponse",
        )
        .extern_path(
            ".prorata.v1.GetSplitResponse",
            "crate::grpc::wire::GetSplitResponse",
        )
        .compile_fds(fds)?;
    Ok(())
}
