//! Balances gRPC calls over three tonic servers on loopback with peak-EWMA P2C, then prints
//! what the balancer knows about each endpoint.
//!
//! `cargo run -p waggle-balance --example tonic`

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Endpoint as TonicEndpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use waggle_balance::policy::PeakEwma;
use waggle_balance::{Balance, Builder, Endpoint};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Three gRPC servers, each in its own zone.
    let mut servers = Vec::new();
    for zone in ["zone-a", "zone-b", "zone-c"] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        servers.push((listener.local_addr()?, zone));
        let (_reporter, health) = tonic_health::server::health_reporter();
        let server = Server::builder().add_service(health);
        tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    }

    // One lazily connected channel per server; the balancer picks one per call.
    let mut endpoints = Vec::new();
    for (addr, zone) in &servers {
        let channel = TonicEndpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
        endpoints.push((*addr, Endpoint::new(channel).zone(*zone)));
    }
    let balance: Balance<SocketAddr, Channel, http::Request<tonic::body::Body>> =
        Builder::new(PeakEwma::new()).build_static(endpoints);
    let handle = balance.handle();

    // Any generated tonic client takes the balancer in place of a channel.
    let mut client = HealthClient::new(balance);
    for _ in 0..300 {
        client.check(HealthCheckRequest { service: String::new() }).await?;
    }

    for endpoint in handle.endpoints().await? {
        println!(
            "{} ({}): {:?}, {} calls, latency estimate {:?}",
            endpoint.key,
            endpoint.zone.unwrap_or_default(),
            endpoint.state,
            endpoint.successes,
            endpoint.latency.unwrap_or_default()
        );
    }
    Ok(())
}
