//! Compiles `proto/` without a system `protoc`: protox parses the files, tonic-prost-build generates
//! the code, and the descriptor set is kept for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "tuikuan/accounting/v1/accounting.proto",
    "tuikuan/clearing/v1/clearing.proto",
    "tuikuan/business/v1/business.proto",
    "tuikuan/refund/v1/refund.proto",
    "tuikuan/refund/v1/batch.proto",
    "tuikuan/payout/v1/payout.proto",
    "tuikuan/reconciliation/v1/reconciliation.proto",
    "tuikuan/bank/v1/bank.proto",
    "tuikuan/staff/v1/staff.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tuikuan_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
