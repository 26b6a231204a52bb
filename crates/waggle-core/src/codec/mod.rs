//! The persisted encoding of commands and registry snapshots.
//!
//! Log entries and snapshots outlive binaries and, in a cluster being upgraded, are read by a
//! different version, so they are protobuf messages (field numbers, unknown fields skipped)
//! with an explicit format version. Add fields with new tags; never reuse a tag.
//!
//! Commands and command batches (log entries) are encoded in `command`, snapshots in
//! `snapshot`; this module holds the format version, the error, and the records both share
//! (instances, checks, session options, lock-delays), and `acl` those of the ACL objects
//! (tokens, policies and their rules, roles, auth methods, binding rules).

mod acl;
mod command;
mod snapshot;

pub use command::{decode_command, decode_commands, encode_command, encode_commands};
pub use snapshot::{decode_snapshot, encode_snapshot};

use std::collections::BTreeMap;

use crate::{CheckKind, CheckSpec, HealthStatus, InstanceId, InstanceSpec, ServiceName, ValidationError, Zone};

/// The format version this build writes. Readers accept this version and older ones.
/// Version 2 added health checks (commands 8–11 and instances' checks): a version-1 reader
/// refuses them rather than silently dropping checks and diverging from its peers. Version 3
/// added session options (key behavior, lock-delay), lock indexes and lock-delays; version 4
/// sessions that depend on checks, and port 0 (no port) for agent registrations: a version-3
/// reader would drop the first and refuse the second where newer members apply them. Version 5
/// added ACLs: the ACL commands (17–25) and the ACL state in snapshots, which a version-4 reader
/// would drop from a snapshot and diverge. Auth methods and binding rules (commands 26–29,
/// snapshot fields 14 and 15) came without a new version: a version-5 reader refuses the
/// commands as unknown kinds, but would skip the snapshot fields (a cluster must not mix
/// versions once an auth method exists).
pub const FORMAT_VERSION: u32 = 5;

/// Bytes that are not a valid command or snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct CodecError {
    what: &'static str,
    reason: String,
}

impl CodecError {
    fn new(what: &'static str, reason: impl ToString) -> Self {
        CodecError { what, reason: reason.to_string() }
    }
}

fn check_version(what: &'static str, version: u32) -> Result<(), CodecError> {
    if version == 0 || version > FORMAT_VERSION {
        return Err(CodecError::new(
            what,
            format!("format version {version} is not supported by this build (supports 1..={FORMAT_VERSION})"),
        ));
    }
    Ok(())
}

#[derive(Clone, PartialEq, prost::Message)]
struct InstanceRecord {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, tag = "2")]
    id: String,
    #[prost(string, tag = "3")]
    address: String,
    #[prost(uint32, tag = "4")]
    port: u32,
    #[prost(string, repeated, tag = "5")]
    tags: Vec<String>,
    #[prost(btree_map = "string, string", tag = "6")]
    meta: BTreeMap<String, String>,
    #[prost(uint32, tag = "7")]
    weight: u32,
    #[prost(string, tag = "8")]
    zone: String,
    #[prost(uint32, tag = "9")]
    status: u32,
    #[prost(uint64, tag = "10")]
    session: u64,
    #[prost(uint64, tag = "11")]
    create_revision: u64,
    #[prost(uint64, tag = "12")]
    modify_revision: u64,
    #[prost(message, repeated, tag = "13")]
    checks: Vec<CheckRecord>,
}

fn spec_record(spec: &InstanceSpec) -> InstanceRecord {
    InstanceRecord {
        service: spec.service.to_string(),
        id: spec.id.to_string(),
        address: spec.address.clone(),
        port: u32::from(spec.port),
        tags: spec.tags.clone(),
        meta: spec.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        weight: spec.weight,
        zone: spec.zone.as_ref().map(|z| z.to_string()).unwrap_or_default(),
        status: status_code(spec.status),
        session: 0,
        create_revision: 0,
        modify_revision: 0,
        checks: Vec::new(),
    }
}

fn record_spec(r: InstanceRecord) -> Result<InstanceSpec, ValidationError> {
    let status = code_status(r.status)?;
    let spec = InstanceSpec {
        service: ServiceName::new(&r.service)?,
        id: InstanceId::new(&r.id)?,
        address: r.address,
        port: u16::try_from(r.port).map_err(|_| ValidationError::new("port", format!("{} is out of range", r.port)))?,
        tags: r.tags,
        meta: r.meta.into_iter().collect(),
        weight: r.weight,
        zone: if r.zone.is_empty() { None } else { Some(Zone::new(&r.zone)?) },
        status,
    };
    Ok(spec)
}

fn status_code(status: HealthStatus) -> u32 {
    match status {
        HealthStatus::Passing => 0,
        HealthStatus::Warning => 1,
        HealthStatus::Critical => 2,
    }
}

fn code_status(code: u32) -> Result<HealthStatus, ValidationError> {
    match code {
        0 => Ok(HealthStatus::Passing),
        1 => Ok(HealthStatus::Warning),
        2 => Ok(HealthStatus::Critical),
        n => Err(ValidationError::new("status", format!("unknown status code {n}"))),
    }
}

/// A check definition, and in instances and snapshots its state (`status`, `output`).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckRecord {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(string, tag = "3")]
    notes: String,
    /// 1 ttl, 2 http, 3 tcp, 4 grpc, 5 maintenance, 6 static.
    #[prost(uint32, tag = "4")]
    kind: u32,
    #[prost(uint64, tag = "5")]
    ttl_ms: u64,
    #[prost(string, tag = "6")]
    url: String,
    #[prost(string, tag = "7")]
    method: String,
    #[prost(message, repeated, tag = "8")]
    headers: Vec<HeaderRecord>,
    #[prost(string, tag = "9")]
    body: String,
    #[prost(bool, tag = "10")]
    tls_skip_verify: bool,
    /// TCP / gRPC `host:port`.
    #[prost(string, tag = "11")]
    address: String,
    #[prost(string, tag = "12")]
    grpc_service: String,
    #[prost(bool, tag = "13")]
    grpc_tls: bool,
    #[prost(uint64, tag = "14")]
    interval_ms: u64,
    #[prost(uint64, tag = "15")]
    timeout_ms: u64,
    #[prost(uint32, tag = "16")]
    success_before_passing: u32,
    #[prost(uint32, tag = "17")]
    failures_before_critical: u32,
    #[prost(uint64, tag = "18")]
    deregister_after_ms: u64,
    #[prost(uint32, tag = "19")]
    initial: u32,
    #[prost(uint32, tag = "20")]
    status: u32,
    #[prost(string, tag = "21")]
    output: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

fn check_spec_record(spec: &CheckSpec) -> CheckRecord {
    let mut r = CheckRecord {
        id: spec.id.clone(),
        name: spec.name.clone(),
        notes: spec.notes.clone(),
        interval_ms: spec.interval_ms,
        timeout_ms: spec.timeout_ms,
        success_before_passing: spec.success_before_passing,
        failures_before_critical: spec.failures_before_critical,
        deregister_after_ms: spec.deregister_after_ms,
        initial: status_code(spec.initial),
        ..Default::default()
    };
    match &spec.kind {
        CheckKind::Ttl { ttl_ms } => {
            r.kind = 1;
            r.ttl_ms = *ttl_ms;
        }
        CheckKind::Http { url, method, headers, body, tls_skip_verify } => {
            r.kind = 2;
            r.url = url.clone();
            r.method = method.clone();
            r.headers =
                headers.iter().map(|(name, value)| HeaderRecord { name: name.clone(), value: value.clone() }).collect();
            r.body = body.clone();
            r.tls_skip_verify = *tls_skip_verify;
        }
        CheckKind::Tcp { address } => {
            r.kind = 3;
            r.address = address.clone();
        }
        CheckKind::Grpc { address, service, tls } => {
            r.kind = 4;
            r.address = address.clone();
            r.grpc_service = service.clone();
            r.grpc_tls = *tls;
        }
        CheckKind::Maintenance => r.kind = 5,
        CheckKind::Static => r.kind = 6,
    }
    r
}

fn record_check_spec(r: &CheckRecord) -> Result<CheckSpec, ValidationError> {
    let kind = match r.kind {
        1 => CheckKind::Ttl { ttl_ms: r.ttl_ms },
        2 => CheckKind::Http {
            url: r.url.clone(),
            method: r.method.clone(),
            headers: r.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
            body: r.body.clone(),
            tls_skip_verify: r.tls_skip_verify,
        },
        3 => CheckKind::Tcp { address: r.address.clone() },
        4 => CheckKind::Grpc { address: r.address.clone(), service: r.grpc_service.clone(), tls: r.grpc_tls },
        5 => CheckKind::Maintenance,
        6 => CheckKind::Static,
        n => return Err(ValidationError::new("check", format!("unknown check kind {n}"))),
    };
    Ok(CheckSpec {
        id: r.id.clone(),
        name: r.name.clone(),
        notes: r.notes.clone(),
        kind,
        interval_ms: r.interval_ms,
        timeout_ms: r.timeout_ms,
        success_before_passing: r.success_before_passing,
        failures_before_critical: r.failures_before_critical,
        deregister_after_ms: r.deregister_after_ms,
        initial: code_status(r.initial)?,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionOptionsRecord {
    #[prost(string, tag = "1")]
    name: String,
    /// 0 delete, 1 release.
    #[prost(uint32, tag = "2")]
    behavior: u32,
    #[prost(uint64, tag = "3")]
    lock_delay_ms: u64,
    #[prost(bool, tag = "4")]
    no_expiry: bool,
    #[prost(string, repeated, tag = "5")]
    checks: Vec<String>,
}

fn options_record(o: &crate::SessionOptions) -> Option<SessionOptionsRecord> {
    (*o != crate::SessionOptions::default()).then(|| SessionOptionsRecord {
        name: o.name.clone(),
        behavior: match o.behavior {
            crate::KeyBehavior::Delete => 0,
            crate::KeyBehavior::Release => 1,
        },
        lock_delay_ms: o.lock_delay_ms,
        no_expiry: o.no_expiry,
        checks: o.checks.clone(),
    })
}

fn record_options(r: Option<SessionOptionsRecord>) -> Result<crate::SessionOptions, ValidationError> {
    let Some(r) = r else { return Ok(Default::default()) };
    let behavior = match r.behavior {
        0 => crate::KeyBehavior::Delete,
        1 => crate::KeyBehavior::Release,
        n => return Err(ValidationError::new("behavior", format!("unknown key behavior {n}"))),
    };
    let options = crate::SessionOptions {
        name: r.name,
        behavior,
        lock_delay_ms: r.lock_delay_ms,
        no_expiry: r.no_expiry,
        checks: r.checks,
    };
    options.validate()?;
    Ok(options)
}

/// A lock-delay: a key (`lock` empty; `token` is the revision it began at) or a lock's slot
/// (`lock`, `token`), for `ms`.
#[derive(Clone, PartialEq, prost::Message)]
struct DelayRecord {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    lock: String,
    #[prost(uint64, tag = "3")]
    token: u64,
    #[prost(uint64, tag = "4")]
    ms: u64,
}

fn delay_record(target: &crate::DelayTarget, ms: u64) -> DelayRecord {
    match target {
        crate::DelayTarget::Key { key, since } => {
            DelayRecord { key: key.clone(), token: *since, ms, ..Default::default() }
        }
        crate::DelayTarget::Lock { lock, token } => {
            DelayRecord { lock: lock.clone(), token: *token, ms, ..Default::default() }
        }
    }
}

fn record_delay(r: &DelayRecord) -> crate::DelayTarget {
    if r.lock.is_empty() {
        crate::DelayTarget::Key { key: r.key.clone(), since: r.token }
    } else {
        crate::DelayTarget::Lock { lock: r.lock.clone(), token: r.token }
    }
}
