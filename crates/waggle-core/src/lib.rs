//! Waggle's registry model and deterministic state machine.
//!
//! This crate owns the vocabulary of the registry — service names, instances, sessions,
//! revisions — together with the validation rules for every field and the replicated state
//! machine ([`Registry`]) that turns [`Command`]s into state changes and [`Effect`]s.
//!
//! # Architecture invariant
//!
//! `waggle-core` knows nothing about tokio, tonic, openraft, clocks, randomness or I/O.
//! [`Registry::apply`] is a pure function of the current state and the command, which is what
//! makes log replay, snapshots and simulation exact. Anything time-dependent (for example the
//! decision that a session has expired) is decided outside and written into the command.
//!
//! # API boundary
//!
//! The public types below; the persisted encoding lives in [`codec`] and is versioned.

#![warn(missing_docs)]

pub mod acl;
mod check;
pub mod codec;
mod command;
mod error;
mod instance;
mod kv;
mod lock;
mod metadata;
mod name;
mod registry;
mod revision;
mod session;
mod validate;

pub use check::{Check, CheckKind, CheckSpec, CheckUpdate, aggregate, check_limits, truncate_output};
pub use command::{Applied, Command, Effect, Outcome, Response};
pub use error::{ApplyError, ValidationError};
pub use instance::{HealthStatus, Instance, InstanceSpec, default_id};
pub use kv::{
    Compare, CompareOp, CompareTarget, KvEntry, KvMap, KvOp, OpResult, Txn, TxnResult, check_key, check_prefix,
    kv_limits, read_only_txn,
};
pub use lock::{
    DelayTarget, Guard, LockHolder, LockOutcome, LockState, LockWaiter, MAX_LOCK_LIMIT, MAX_LOCK_VALUE,
    MAX_LOCK_WAITERS, check_lock,
};
pub use metadata::Metadata;
pub use name::{InstanceId, ServiceName, Zone};
pub use registry::{Registry, ServiceInstances, authorize};
pub use revision::Revision;
pub use session::{KeyBehavior, MAX_LOCK_DELAY_MS, Session, SessionId, SessionOptions, Ttl};
pub use validate::limits;
