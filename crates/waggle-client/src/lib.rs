//! Waggle's Rust SDK.
//!
//! ```no_run
//! # async fn demo() -> Result<(), waggle_client::Error> {
//! use waggle_client::{Client, InstanceSpec};
//! let client = Client::connect("http://127.0.0.1:8502").await?;
//! // Registers under the client's one session, kept alive in the background.
//! let registration = client.register(InstanceSpec::new("web", "10.0.0.1", 8080)?).await?;
//! // A live cache fed by pushed deltas.
//! let web = client.discover("web")?;
//! web.ready().await;
//! for instance in web.instances().iter() {
//!     println!("{}:{}", instance.spec.address, instance.spec.port);
//! }
//! registration.shutdown().await?;
//! client.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Architecture invariant
//!
//! The SDK talks to the server only through the gRPC API (`waggle-proto`); it never depends on
//! server internals. It survives the control plane: the discovery cache keeps its
//! last-known-good set while the server is unreachable and says it is stale; it never replaces
//! a set with an empty one because of an outage.
//!
//! # API boundary
//!
//! [`Client`], [`Registration`], [`Discovery`] and their value types.

#![warn(missing_docs)]

mod backoff;
mod client;
mod config;
mod discovery;
mod election;
mod error;
mod failover;
mod kv;
mod lock;
mod rpc;
mod service;
mod session;

pub use backoff::Backoff;
pub use client::{Client, HealthFilter, Member, Members, Registration, ServiceSummary};
pub use config::ClientConfig;
pub use discovery::{CacheState, ChangeKind, DiscoverStream, Discovery, DiscoveryChanges, DiscoveryEvent, Endpoints};
pub use election::{Election, Leader, Leadership};
pub use error::Error;
pub use kv::{KeyValue, Kv, KvChange, PutOptions, TxnOutcome, Written};
pub use lock::{LockGuard, LockHandle};
pub use service::{Protocol, ServiceClient, ServiceClientBuilder};
pub use waggle_core::{Compare, CompareOp, CompareTarget, Guard, KvOp, Txn};
pub use waggle_core::{HealthStatus, Instance, InstanceId, InstanceSpec, Revision, ServiceName, SessionId, Ttl};
