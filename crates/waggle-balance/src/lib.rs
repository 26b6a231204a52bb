//! Load balancing for tower services: every policy production users expect, weight-correct.
//!
//! `waggle-balance` spreads requests over a changing set of endpoints. It works with any
//! [`tower::discover::Discover`] (a registry watch, a static list, a channel) and any
//! cloneable tower [`Service`](tower::Service) (a tonic `Channel`, a hyper client, a
//! `BoxCloneService`).
//!
//! * [`policy`]: the pick algorithms — round robin, random, weighted random (alias method),
//!   smooth weighted round robin, least request / weighted P2C, peak-EWMA P2C, ring hash and
//!   Maglev — behind one [`Policy`] trait. Policies are pure: the caller hands them the RNG and
//!   the time, so they can be tested and benchmarked without a runtime.
//! * [`Balance`]: the tower service. It picks per request (so hash policies see the request),
//!   keeps each endpoint in a state machine (connecting → ready → ejected → probation →
//!   ready), prefers the local zone with spill-over, ramps new endpoints up (slow start),
//!   balances over everything when too few endpoints are healthy (panic threshold), and can
//!   report why it chose an endpoint ([`PickRecord`]).
//!
//! Architecture invariant: this crate knows nothing about the Waggle registry, gRPC or any
//! wire format. Endpoints are described by [`Endpoint`] (weight, zone, tags, metadata); the
//! SDK maps registry instances onto it.

#![warn(missing_docs)]

pub mod balance;
mod endpoint;
mod hash;
pub mod policy;
mod rng;
mod stats;

pub use balance::{
    Balance, BalanceLayer, Builder, EndpointSnapshot, EndpointState, Handle, PickRecord, RecordedCandidate,
};
pub use endpoint::Endpoint;
pub use hash::{ClientIpHash, HeaderHash, PathHash, RequestHash, stable_hash};
pub use policy::Policy;
pub use stats::EndpointStats;
