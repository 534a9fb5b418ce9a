//! Compiles the control-API protos with protoc (`apt-get install protobuf-compiler`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/shorthorn/v1/replica.proto",
        "proto/shorthorn/v1/engine.proto",
    ];
    tonic_prost_build::configure().compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
