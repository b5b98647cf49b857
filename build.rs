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
    with_twins(tonic_prost_build::configure())
        .build_client(true)
        .build_server(true)
        .compile_fds(fds.clone())?;

    // The server of CommissionService once more, into OUT_DIR/server, with one difference:
    // its requests are `crate::grpc::wire::ComputeRequest`, which keeps the bytes a request
    // arrived as (a replay of identical bytes is answered without decoding them). Every
    // other type is the one generated above, and nothing but this server is generated.
    let mut server_fds = fds;
    for f in &mut server_fds.file {
        if f.name() != "prorata/v1/commission.proto" {
            f.service.clear();
        }
    }
    let server_dir = out_dir.join("server");
    std::fs::create_dir_all(&server_dir)?;
    with_twins(tonic_prost_build::configure())
        .build_client(false)
        .build_server(true)
        .out_dir(&server_dir)
        .extern_path(
            ".prorata.v1.ComputeRequest",
            "crate::grpc::wire::ComputeRequest",
        )
        .extern_path(".prorata.v1", "crate::grpc::pb")
        .compile_fds(server_fds)?;
    Ok(())
}

/// Hand-written twins of generated responses that can send a stored split already encoded
/// (src/grpc/wire.rs), for clients and servers alike.
const TWINS: &[(&str, &str)] = &[
    (
        ".prorata.v1.ComputeResponse",
        "crate::grpc::wire::ComputeResponse",
    ),
    (
        ".prorata.v1.GetSplitResponse",
        "crate::grpc::wire::GetSplitResponse",
    ),
];

fn with_twins(b: tonic_prost_build::Builder) -> tonic_prost_build::Builder {
    TWINS
        .iter()
        .fold(b, |b, (proto, rust)| b.extern_path(*proto, *rust))
}
