//! The greeter demo: `replica` serves the Greeter and registers itself with Waggle; `client`
//! calls it through the SDK's service client and reports what the caller saw. See
//! docs/resilience.md for the kill-a-replica walkthrough.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Request;
use waggle_client::{Client, ClientConfig, InstanceSpec, Ttl};
use waggle_resilience::Idempotency;

use waggle_greeter::Replica;
use waggle_greeter::pb::HelloRequest;
use waggle_greeter::pb::greeter_client::GreeterClient;
use waggle_greeter::pb::greeter_server::GreeterServer;

#[derive(Parser)]
#[command(about = "Waggle's greeter demo")]
struct Cli {
    /// The Waggle server's gRPC URL.
    #[arg(long, default_value = "http://127.0.0.1:8502", global = true)]
    registry: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Greeter on 127.0.0.1 and register as an instance of `greeter`.
    Replica {
        /// Port to listen on (0 picks a free one).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// The replica's name, returned in every reply.
        #[arg(long)]
        name: String,
        /// Session TTL with the registry, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
        /// Answer UNAVAILABLE between these many milliseconds after start…
        #[arg(long)]
        unavailable_from_ms: Option<u64>,
        /// …and this many.
        #[arg(long)]
        unavailable_until_ms: Option<u64>,
    },
    /// Call the greeter at a steady rate and report what the caller saw.
    Client {
        /// Calls per second.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Replica { port, name, ttl_ms, unavailable_from_ms, unavailable_until_ms } => {
            let unavailable = unavailable_from_ms
                .zip(unavailable_until_ms)
                .map(|(from, until)| (Duration::from_millis(from), Duration::from_millis(until)));
            replica(&cli.registry, port, name, ttl_ms, unavailable).await
        }
        Command::Client { rate, seconds } => client(&cli.registry, rate, Duration::from_secs(seconds)).await,
    }
}

async fn replica(
    registry: &str,
    port: u16,
    name: String,
    ttl_ms: u64,
    unavailable: Option<(Duration, Duration)>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    let service = GreeterServer::new(Replica::new(name.clone(), unavailable));
    let server = tonic::transport::Server::builder().add_service(service);
    let serving = tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_millis(ttl_ms).context("--ttl-ms")?;
    let client = Client::connect_with(registry, config).await.context("connecting to the registry")?;
    let spec = InstanceSpec::new("greeter", "127.0.0.1", u32::from(addr.port()))?.with_meta("replica", name.clone());
    // The registration lives as long as this binding: dropping it deregisters.
    let _registration = client.register(spec).await.context("registering")?;
    println!("replica {name} ready on {addr}");
    tokio::select! {
        result = serving => result??,
        _ = tokio::signal::ctrl_c() => client.shutdown().await,
    }
    Ok(())
}

async fn client(registry: &str, rate: u32, duration: Duration) -> anyhow::Result<()> {
    let client = Client::connect(registry).await.context("connecting to the registry")?;
    let service = client.service("greeter").build()?;
    let greeter = GreeterClient::new(service.clone());
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let mut calls = tokio::task::JoinSet::new();
    let mut last_report = 0;
    while started.elapsed() < duration {
        ticker.tick().await;
        let (mut greeter, ok_count, failed_count) = (greeter.clone(), ok.clone(), failed.clone());
        calls.spawn(async move {
            let mut request = Request::new(HelloRequest { name: "demo".into() });
            request.extensions_mut().insert(Idempotency::Idempotent);
            match greeter.say_hello(request).await {
                Ok(_) => ok_count.fetch_add(1, Relaxed),
                Err(status) => {
                    eprintln!("call failed: {status}");
                    failed_count.fetch_add(1, Relaxed)
                }
            };
        });
        let second = started.elapsed().as_secs();
        if second > last_report {
            last_report = second;
            println!("t={second:>3}s ok={} failed={}", ok.load(Relaxed), failed.load(Relaxed));
        }
    }
    while calls.join_next().await.is_some() {}
    println!("done: ok={} failed={}", ok.load(Relaxed), failed.load(Relaxed));
    for endpoint in service.endpoints().endpoints().await? {
        println!("  {} {:?} ok={} failed={}", endpoint.key, endpoint.state, endpoint.successes, endpoint.failures);
    }
    Ok(())
}
