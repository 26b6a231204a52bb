//! Generates the gRPC code from `proto/waggle/v1/*.proto` with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script binary cached from another checkout must not point
    // at that checkout's files.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("waggle/v1/registry.proto"),
        root.join("waggle/v1/raft.proto"),
        root.join("waggle/v1/kv.proto"),
        root.join("waggle/v1/lock.proto"),
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        // Hand-written, so the server can answer with pre-encoded instances (see encoded.rs).
        .extern_path(".waggle.v1.GetServiceResponse", "crate::GetServiceResponse")
        .extern_path(".waggle.v1.WatchResponse", "crate::WatchResponse")
        .compile_fds(fds)?;
    Ok(())
}
