//! Generates a client for the etcd v3 subset in `proto/etcd.proto` (protox: no protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary cached from another checkout must not point
    // at that checkout's files.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile([root.join("etcd.proto"), root.join("v3lock.proto")], [&root])?;
    tonic_prost_build::configure().build_server(false).compile_fds(fds)?;
    Ok(())
}
