//! `waggle server`.

use std::io::Write;

use anyhow::Context;
use waggle_server::{Server, ServerConfig};

use crate::{Failure, cli::ServerArgs};

pub(crate) async fn run(args: ServerArgs) -> Result<(), Failure> {
    // In --dev mode the temporary dir lives as long as this function (deleted on clean exit).
    let dev_dir = if args.dev {
        Some(tempfile::Builder::new().prefix("waggle-dev-").tempdir().context("cannot create a temporary data dir")?)
    } else {
        None
    };
    let data_dir = dev_dir.as_ref().map_or_else(|| args.data_dir.clone(), |d| d.path().to_path_buf());
    let mut config = ServerConfig::new(data_dir);
    config.grpc_addr = args.grpc_addr;
    config.http_addr = args.http_addr;
    config.raft.snapshot_every = args.snapshot_every;
    let server = Server::start(config).await.map_err(|e| Failure::Runtime(e.into()))?;
    println!(
        "waggle server ready grpc={} http={} data-dir={} revision={}",
        server.grpc_addr(),
        server.http_addr(),
        server.data_dir().display(),
        server.revision()
    );
    let _ = std::io::stdout().flush();
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
