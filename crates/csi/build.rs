//! Compiles the CSI spec's `csi.proto` (v1.9.0, see `proto/README.md`) with protoc
//! (`apt-get install protobuf-compiler`, which also brings the well-known types).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/csi/v1/csi.proto";
    tonic_prost_build::configure().compile_protos(&[proto], &["proto/csi/v1"])?;
    println!("cargo:rerun-if-changed={proto}");
    Ok(())
}
