//! Generates a client for the etcd v3 subset in `proto/etcd.proto` (protox: no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile([root.join("etcd.proto")], [&root])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
