//! Compiles the etcd v3 `.proto` files with `protox` (pure Rust), so that
//! building this crate never needs `protoc`.

use std::path::Path;

const ROOT: &str = "proto";
const FILES: [&str; 5] = [
    "etcd/api/mvccpb/kv.proto",
    "etcd/api/authpb/auth.proto",
    "etcd/api/etcdserverpb/rpc.proto",
    "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
    "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={ROOT}");
    let files: Vec<_> = FILES.iter().map(|f| Path::new(ROOT).join(f)).collect();
    let descriptors = protox::compile(&files, [ROOT])?;
    tonic_prost_build::configure()
        // Values and keys are shared between the store, watch events and
        // responses; `Bytes` makes those copies reference counts.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
