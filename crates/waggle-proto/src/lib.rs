//! Waggle's gRPC API (`proto/waggle/v1`): generated messages, client and server, and
//! conversions between wire messages and `waggle-core` types.
//!
//! # Architecture invariant
//!
//! This crate knows the wire format and the core model, nothing of the server's internals.
//! Every conversion from the wire validates: a wire message that breaks a model rule becomes a
//! `ValidationError` naming the field.

#![warn(missing_docs)]

mod convert;
mod encoded;
mod kv;

/// Generated code for `waggle.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("waggle.v1");

    // Hand-written messages (see `encoded.rs`), re-exported where the generated ones would be.
    pub use crate::encoded::{GetServiceResponse, WatchResponse};

    /// The `event` oneof of `WatchResponse`.
    pub mod watch_response {
        pub use crate::encoded::Event;
    }
}

pub use convert::{instance_from_core, instance_from_wire, spec_from_wire, status_from_core, status_to_core};
pub use encoded::{EncodedEvent, EncodedInstances, GetServiceResponse, WatchResponse};
pub use kv::{delete_txn, kv_from_core, put_txn, txn_from_wire, txn_result_to_wire, txn_to_wire};
