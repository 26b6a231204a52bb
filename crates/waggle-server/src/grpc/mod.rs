//! The native gRPC front-end: `waggle.v1.Registry` (`registry.rs`, watches in `watch.rs`),
//! `waggle.v1.Kv` (`kv.rs`), `waggle.v1.Lock` (`lock.rs`) and the standard gRPC health service.
//! Each call is parsed here, handed to the [`Node`], and its answer or [`NodeError`] rendered
//! (the one conversion of `NodeError` to a `tonic::Status` is in `status.rs`).

mod kv;
mod lock;
mod registry;
mod status;
mod watch;

use std::sync::Arc;

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use waggle_proto::v1;

use crate::{
    metrics::{CountLayer, RequestCounts},
    node::Node,
};

/// Serves the gRPC API on `listener` until `shutdown`, counting requests in `requests`.
pub(crate) async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    requests: Arc<RequestCounts>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    // Small request/response pairs: never wait for Nagle + delayed ACK (40 ms stalls).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    // The standard gRPC health service, for load balancers, Kubernetes probes and Waggle's
    // own gRPC checks: serving while the node runs.
    let (grpc_health, grpc_health_service) = tonic_health::server::health_reporter();
    grpc_health.set_serving::<v1::registry_server::RegistryServer<registry::RegistryService>>().await;
    let server = tonic::transport::Server::builder()
        .layer(CountLayer(requests))
        .add_service(grpc_health_service)
        .add_service(v1::kv_server::KvServer::new(kv::KvService { node: node.clone() }))
        .add_service(v1::lock_server::LockServer::new(lock::LockService { node: node.clone() }))
        .add_service(v1::registry_server::RegistryServer::new(registry::RegistryService { node }))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned());
    tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!("gRPC server failed: {e}");
        }
    })
}
