//! The `waggle` binary: `waggle server` and the client commands.
//!
//! Exit codes: 0 success; 1 runtime failure (server unreachable, request refused); 2 usage
//! error (bad flags or argument values, detected before anything is sent).

mod acl_cmd;
mod bench_cmd;
mod cli;
mod client_cmds;
mod output;
mod server_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// A failure with the exit code it maps to.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad arguments: exit 2.
    Usage(String),
    /// Anything else: exit 1.
    Runtime(anyhow::Error),
    /// Exit with this code, saying nothing more (a child's status, from `waggle lock`).
    Exit(u8),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Runtime(e)
    }
}

impl From<waggle_client::Error> for Failure {
    fn from(e: waggle_client::Error) -> Self {
        match e {
            waggle_client::Error::Invalid(v) => Failure::Usage(v.to_string()),
            waggle_client::Error::InvalidUrl { .. } => Failure::Usage(e.to_string()),
            other => Failure::Runtime(other.into()),
        }
    }
}

impl From<waggle_core::ValidationError> for Failure {
    fn from(e: waggle_core::ValidationError) -> Self {
        Failure::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let token = cli.token.clone().or_else(|| std::env::var("CONSUL_HTTP_TOKEN").ok()).filter(|t| !t.is_empty());
    let remote = client_cmds::Remote { server: cli.server.clone(), token };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server_cmd::run(args).await,
            Command::Register(args) => client_cmds::register(&remote, args).await,
            Command::Deregister(args) => client_cmds::deregister(&remote, args).await,
            Command::Services(args) => client_cmds::services(&remote, args).await,
            Command::Instances(args) => client_cmds::instances(&remote, args).await,
            Command::Members(cli::MembersCommand::List(args)) => client_cmds::members(&remote, args).await,
            Command::Members(cli::MembersCommand::Add(args)) => client_cmds::add_member(&remote, args).await,
            Command::Members(cli::MembersCommand::Remove(args)) => client_cmds::remove_member(&remote, args).await,
            Command::Snapshot(cli::SnapshotCommand::Save(args)) => client_cmds::save_snapshot(&remote, args).await,
            Command::Snapshot(cli::SnapshotCommand::Restore(args)) => server_cmd::restore(args),
            Command::Watch(args) => client_cmds::watch(&remote, args).await,
            Command::Bench(args) => bench_cmd::run(&remote, args).await,
            Command::Kv(command) => client_cmds::kv(&remote, command).await,
            Command::Lock(args) => client_cmds::lock(&remote, args).await,
            Command::Elect(args) => client_cmds::elect(&remote, args).await,
            Command::Acl(command) => acl_cmd::run(remote.token.as_deref(), command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("error: {}", render(&e));
            ExitCode::from(1)
        }
        Err(Failure::Exit(code)) => ExitCode::from(code),
    }
}

/// The error and its causes, skipping causes whose text the message already includes (many
/// errors embed their source's text).
fn render(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn init_tracing(cli: &Cli) {
    let default = match cli.command {
        Command::Server(_) => "info,openraft=warn",
        _ => "warn,openraft=warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
