//! `waggle server`.

use std::io::Write;

use anyhow::Context;
use waggle_server::{Server, ServerConfig};

use crate::{
    Failure,
    cli::{ServerArgs, SnapshotRestoreArgs},
};

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
    config.dns_addr = args.dns_addr.0;
    if !args.dns_domains.is_empty() {
        config.dns_domains = args.dns_domains.clone();
    }
    config.kv_quota_bytes = args.kv_quota;
    config.acl.enabled = args.acl_enabled;
    config.acl.default_policy = match args.acl_default_policy.as_str() {
        "allow" => waggle_core::acl::DefaultPolicy::Allow,
        _ => waggle_core::acl::DefaultPolicy::Deny,
    };
    config.acl.initial_management_token = args.acl_initial_management_token.clone();
    config.acl.metrics_public = args.metrics_public;
    if config.acl.initial_management_token.is_some() && !config.acl.enabled {
        return Err(Failure::Usage("--acl-initial-management-token needs --acl-enabled".into()));
    }
    config.dns_ttl =
        u32::try_from(args.dns_ttl.as_secs()).map_err(|_| Failure::Usage("--dns-ttl must be at most 86400s".into()))?;
    config.dns_allow_warning = args.dns_allow_warning;
    config.raft.snapshot_every = args.snapshot_every;
    config.raft.election_timeout = args.election_timeout;
    config.raft.heartbeat_interval = args.heartbeat_interval;
    args.member.apply(&mut config);
    config.join = args.join;
    config.validate().map_err(|e| Failure::Usage(e.to_string()))?;
    let mut signals = Signals::install()?;
    // A joining node waits to be added for as long as it takes; a signal must still stop it.
    let server = tokio::select! {
        started = Server::start(config) => started.map_err(|e| Failure::Runtime(e.into()))?,
        _ = signals.recv() => return Ok(()),
    };
    println!(
        "waggle server ready grpc={} http={} dns={} data-dir={} revision={}",
        server.grpc_addr(),
        server.http_addr(),
        server.dns_addr().map_or_else(|| "off".to_owned(), |a| a.to_string()),
        server.data_dir().display(),
        server.revision()
    );
    let _ = std::io::stdout().flush();
    let failure = tokio::select! {
        _ = signals.recv() => None,
        reason = server.failed() => Some(reason),
    };
    tracing::info!("shutting down");
    server.shutdown().await;
    match failure {
        None => Ok(()),
        Some(reason) => Err(Failure::Runtime(anyhow::anyhow!("consensus stopped: {reason}"))),
    }
}

/// `waggle snapshot restore`: a backup into a fresh data dir (no server runs).
pub(crate) fn restore(args: SnapshotRestoreArgs) -> Result<(), Failure> {
    let mut config = ServerConfig::new(&args.data_dir);
    args.member.apply(&mut config);
    config.validate().map_err(|e| Failure::Usage(e.to_string()))?;
    let restored = waggle_server::restore_snapshot_with(&args.file, &config, args.bump_revision)
        .map_err(|e| Failure::Runtime(e.into()))?;
    println!(
        "restored revision {} ({} services, {} instances, {} sessions) into {}",
        restored.revision,
        restored.services,
        restored.instances,
        restored.sessions,
        args.data_dir.display()
    );
    Ok(())
}

/// SIGINT / SIGTERM handlers, installed before anything is announced so that a signal sent
/// right after a ready line is never lost (tokio drops signals nobody listens for).
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn install() -> Result<Self, Failure> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install a SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("cannot install a SIGINT handler")?,
        })
    }

    /// Waits for the next SIGINT or SIGTERM; answers the exit code a shell reports for a
    /// process it ended (130, 143).
    pub(crate) async fn recv(&mut self) -> u8 {
        tokio::select! {
            _ = self.term.recv() => 143,
            _ = self.int.recv() => 130,
        }
    }
}
