//! The persisted encoding of commands and registry snapshots.
//!
//! Log entries and snapshots outlive binaries and, in a cluster being upgraded, are read by a
//! different version, so they are protobuf messages (field numbers, unknown fields skipped)
//! with an explicit format version. Add fields with new tags; never reuse a tag.

use std::collections::BTreeMap;

use crate::{
    Check, CheckKind, CheckSpec, CheckUpdate, Command, Compare, CompareOp, CompareTarget, HealthStatus, Instance,
    InstanceId, InstanceSpec, KvEntry, KvOp, Registry, Revision, ServiceName, SessionId, Ttl, Txn, ValidationError,
    Zone,
};

/// The format version this build writes. Readers accept this version and older ones.
/// Version 2 added health checks (commands 8–11 and instances' checks): a version-1 reader
/// refuses them rather than silently dropping checks and diverging from its peers. Version 3
/// added session options (key behavior, lock-delay), lock indexes and lock-delays; version 4
/// sessions that depend on checks, and port 0 (no port) for agent registrations: a version-3
/// reader would drop the first and refuse the second where newer members apply them.
pub const FORMAT_VERSION: u32 = 4;

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

#[derive(Clone, PartialEq, prost::Message)]
struct CommandRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(oneof = "CommandKind", tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16")]
    kind: Option<CommandKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum CommandKind {
    #[prost(message, tag = "2")]
    CreateSession(CreateSessionRecord),
    #[prost(uint64, tag = "3")]
    RevokeSession(u64),
    #[prost(message, tag = "4")]
    ExpireSessions(SessionList),
    #[prost(message, tag = "5")]
    Register(RegisterRecord),
    #[prost(message, tag = "6")]
    Deregister(InstanceKey),
    #[prost(uint64, tag = "7")]
    NameHistory(u64),
    #[prost(message, tag = "8")]
    AgentRegister(AgentRegisterRecord),
    #[prost(message, tag = "9")]
    PutCheck(CheckCommandRecord),
    #[prost(message, tag = "10")]
    RemoveCheck(CheckCommandRecord),
    #[prost(message, tag = "11")]
    UpdateChecks(CheckUpdates),
    #[prost(message, tag = "12")]
    KvTxn(TxnRecord),
    #[prost(message, tag = "13")]
    LockAcquire(LockCommandRecord),
    #[prost(message, tag = "14")]
    LockRelease(LockCommandRecord),
    /// `limit` is unused; the token rides in `token`.
    #[prost(message, tag = "15")]
    LockProclaim(LockCommandRecord),
    #[prost(message, tag = "16")]
    LiftLockDelays(DelayList),
}

#[derive(Clone, PartialEq, prost::Message)]
struct DelayList {
    #[prost(message, repeated, tag = "1")]
    delays: Vec<DelayRecord>,
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

#[derive(Clone, PartialEq, prost::Message)]
struct LockCommandRecord {
    #[prost(string, tag = "1")]
    lock: String,
    #[prost(uint64, tag = "2")]
    session: u64,
    #[prost(uint32, tag = "3")]
    limit: u32,
    #[prost(bool, tag = "4")]
    wait: bool,
    #[prost(bytes = "vec", tag = "5")]
    value: Vec<u8>,
    #[prost(uint64, tag = "6")]
    token: u64,
}

/// A lock in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
struct LockRecord {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(uint32, tag = "2")]
    limit: u32,
    #[prost(message, repeated, tag = "3")]
    holders: Vec<LockHolderRecord>,
    /// Waiters in order (token 0).
    #[prost(message, repeated, tag = "4")]
    waiters: Vec<LockHolderRecord>,
    #[prost(uint64, tag = "5")]
    last_token: u64,
    /// Slots kept by lock-delays (`token`, `ms`).
    #[prost(message, repeated, tag = "6")]
    delayed: Vec<DelayRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LockHolderRecord {
    #[prost(uint64, tag = "1")]
    session: u64,
    #[prost(uint64, tag = "2")]
    token: u64,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GuardRecord {
    #[prost(string, tag = "1")]
    lock: String,
    #[prost(uint64, tag = "2")]
    token: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TxnRecord {
    #[prost(message, repeated, tag = "1")]
    compares: Vec<CompareRecord>,
    #[prost(message, repeated, tag = "2")]
    success: Vec<KvOpRecord>,
    #[prost(message, repeated, tag = "3")]
    failure: Vec<KvOpRecord>,
    #[prost(message, optional, tag = "4")]
    guard: Option<GuardRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CompareRecord {
    #[prost(string, tag = "1")]
    key: String,
    /// 1 modify revision, 2 create revision, 3 version, 4 value, 5 session, 6 modify revision
    /// if present.
    #[prost(uint32, tag = "2")]
    target: u32,
    #[prost(uint64, tag = "3")]
    number: u64,
    #[prost(bytes = "vec", tag = "4")]
    value: Vec<u8>,
    /// 0 equal, 1 not equal, 2 less, 3 greater.
    #[prost(uint32, tag = "5")]
    op: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct KvOpRecord {
    /// 1 put, 2 delete, 3 get, 4 set, 5 acquire, 6 release, 7 assert.
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(string, tag = "2")]
    key: String,
    #[prost(bytes = "vec", tag = "3")]
    value: Vec<u8>,
    #[prost(uint64, tag = "4")]
    flags: u64,
    /// 0: none.
    #[prost(uint64, tag = "5")]
    session: u64,
    #[prost(bool, tag = "6")]
    prefix: bool,
    /// An assert's compare.
    #[prost(message, optional, tag = "7")]
    compare: Option<CompareRecord>,
}

/// A stored key in a snapshot.
#[derive(Clone, PartialEq, prost::Message)]
struct KvRecord {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(uint64, tag = "3")]
    flags: u64,
    #[prost(uint64, tag = "4")]
    create_revision: u64,
    #[prost(uint64, tag = "5")]
    modify_revision: u64,
    #[prost(uint64, tag = "6")]
    version: u64,
    #[prost(uint64, tag = "7")]
    session: u64,
    #[prost(uint64, tag = "8")]
    lock_index: u64,
}

fn txn_record(txn: &Txn) -> TxnRecord {
    let op = |op: &KvOp| match op {
        KvOp::Put { key, value, flags, session } => KvOpRecord {
            kind: 1,
            key: key.clone(),
            value: value.clone(),
            flags: *flags,
            session: session.map_or(0, SessionId::get),
            ..Default::default()
        },
        KvOp::Delete { key, prefix } => KvOpRecord { kind: 2, key: key.clone(), prefix: *prefix, ..Default::default() },
        KvOp::Get { key, prefix } => KvOpRecord { kind: 3, key: key.clone(), prefix: *prefix, ..Default::default() },
        KvOp::Set { key, value, flags } => {
            KvOpRecord { kind: 4, key: key.clone(), value: value.clone(), flags: *flags, ..Default::default() }
        }
        KvOp::Acquire { key, value, flags, session } | KvOp::Release { key, value, flags, session } => KvOpRecord {
            kind: if matches!(op, KvOp::Acquire { .. }) { 5 } else { 6 },
            key: key.clone(),
            value: value.clone(),
            flags: *flags,
            session: session.get(),
            ..Default::default()
        },
        KvOp::Assert(c) => KvOpRecord { kind: 7, compare: Some(compare_record(c)), ..Default::default() },
    };
    TxnRecord {
        compares: txn.compares.iter().map(compare_record).collect(),
        success: txn.success.iter().map(op).collect(),
        failure: txn.failure.iter().map(op).collect(),
        guard: txn.guard.as_ref().map(|g| GuardRecord { lock: g.lock.clone(), token: g.token }),
    }
}

fn compare_record(c: &Compare) -> CompareRecord {
    let (target, number, value) = match &c.target {
        CompareTarget::ModifyRevision(n) => (1, *n, Vec::new()),
        CompareTarget::CreateRevision(n) => (2, *n, Vec::new()),
        CompareTarget::Version(n) => (3, *n, Vec::new()),
        CompareTarget::Value(v) => (4, 0, v.clone()),
        CompareTarget::Session(n) => (5, *n, Vec::new()),
        CompareTarget::ModifyRevisionIfPresent(n) => (6, *n, Vec::new()),
    };
    let op = match c.op {
        CompareOp::Equal => 0,
        CompareOp::NotEqual => 1,
        CompareOp::Less => 2,
        CompareOp::Greater => 3,
    };
    CompareRecord { key: c.key.clone(), target, number, value, op }
}

fn record_compare(c: CompareRecord) -> Result<Compare, ValidationError> {
    let target = match c.target {
        1 => CompareTarget::ModifyRevision(c.number),
        2 => CompareTarget::CreateRevision(c.number),
        3 => CompareTarget::Version(c.number),
        4 => CompareTarget::Value(c.value),
        5 => CompareTarget::Session(c.number),
        6 => CompareTarget::ModifyRevisionIfPresent(c.number),
        n => return Err(ValidationError::new("txn", format!("unknown compare target {n}"))),
    };
    let op = match c.op {
        0 => CompareOp::Equal,
        1 => CompareOp::NotEqual,
        2 => CompareOp::Less,
        3 => CompareOp::Greater,
        n => return Err(ValidationError::new("txn", format!("unknown compare op {n}"))),
    };
    Ok(Compare { key: c.key, target, op })
}

fn record_txn(r: TxnRecord) -> Result<Txn, ValidationError> {
    let op = |r: KvOpRecord| -> Result<KvOp, ValidationError> {
        Ok(match r.kind {
            1 => KvOp::Put {
                key: r.key,
                value: r.value,
                flags: r.flags,
                session: (r.session != 0).then(|| SessionId::new(r.session)),
            },
            2 => KvOp::Delete { key: r.key, prefix: r.prefix },
            3 => KvOp::Get { key: r.key, prefix: r.prefix },
            4 => KvOp::Set { key: r.key, value: r.value, flags: r.flags },
            5 => KvOp::Acquire { key: r.key, value: r.value, flags: r.flags, session: SessionId::new(r.session) },
            6 => KvOp::Release { key: r.key, value: r.value, flags: r.flags, session: SessionId::new(r.session) },
            7 => KvOp::Assert(record_compare(r.compare.unwrap_or_default())?),
            n => return Err(ValidationError::new("txn", format!("unknown operation kind {n}"))),
        })
    };
    let compares = r.compares.into_iter().map(record_compare).collect::<Result<_, _>>()?;
    Ok(Txn {
        guard: r.guard.map(|g| crate::Guard { lock: g.lock, token: g.token }),
        compares,
        success: r.success.into_iter().map(op).collect::<Result<_, _>>()?,
        failure: r.failure.into_iter().map(op).collect::<Result<_, _>>()?,
    })
}

#[derive(Clone, PartialEq, prost::Message)]
struct AgentRegisterRecord {
    #[prost(message, optional, tag = "1")]
    instance: Option<InstanceRecord>,
    #[prost(message, repeated, tag = "2")]
    checks: Vec<CheckRecord>,
}

/// `PutCheck` (with `check`) or `RemoveCheck` (with `check_id`).
#[derive(Clone, PartialEq, prost::Message)]
struct CheckCommandRecord {
    #[prost(message, optional, tag = "1")]
    key: Option<InstanceKey>,
    #[prost(message, optional, tag = "2")]
    check: Option<CheckRecord>,
    #[prost(string, tag = "3")]
    check_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckUpdates {
    #[prost(message, repeated, tag = "1")]
    updates: Vec<CheckUpdateRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CheckUpdateRecord {
    #[prost(message, optional, tag = "1")]
    key: Option<InstanceKey>,
    #[prost(string, tag = "2")]
    check: String,
    #[prost(uint32, tag = "3")]
    status: u32,
    #[prost(string, tag = "4")]
    output: String,
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

/// Several commands proposed together as one log entry (group commit). Each still consumes
/// its own revision when applied, in order.
#[derive(Clone, PartialEq, prost::Message)]
struct CommandBatchRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, repeated, tag = "2")]
    commands: Vec<CommandRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CreateSessionRecord {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    ttl_ms: u64,
    #[prost(message, optional, tag = "3")]
    options: Option<SessionOptionsRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionList {
    #[prost(uint64, repeated, tag = "1")]
    ids: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RegisterRecord {
    #[prost(uint64, tag = "1")]
    session: u64,
    #[prost(message, optional, tag = "2")]
    instance: Option<InstanceRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct InstanceKey {
    #[prost(string, tag = "1")]
    service: String,
    #[prost(string, tag = "2")]
    id: String,
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

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(message, repeated, tag = "3")]
    sessions: Vec<SessionRecord>,
    #[prost(message, repeated, tag = "4")]
    instances: Vec<InstanceRecord>,
    #[prost(uint64, tag = "5")]
    history: u64,
    #[prost(message, repeated, tag = "6")]
    kv: Vec<KvRecord>,
    #[prost(message, repeated, tag = "7")]
    locks: Vec<LockRecord>,
    /// Keys under a lock-delay (`key`, `ms`).
    #[prost(message, repeated, tag = "8")]
    key_delays: Vec<DelayRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct SessionRecord {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    ttl_ms: u64,
    #[prost(uint64, tag = "3")]
    create_revision: u64,
    #[prost(message, optional, tag = "4")]
    options: Option<SessionOptionsRecord>,
}

/// Encodes a batch of commands (one log entry).
pub fn encode_commands(commands: &[Command]) -> Vec<u8> {
    let record =
        CommandBatchRecord { version: FORMAT_VERSION, commands: commands.iter().map(command_record).collect() };
    prost::Message::encode_to_vec(&record)
}

/// Decodes a batch written by [`encode_commands`] (this or an older version).
pub fn decode_commands(bytes: &[u8]) -> Result<Vec<Command>, CodecError> {
    let record: CommandBatchRecord = prost::Message::decode(bytes).map_err(|e| CodecError::new("command batch", e))?;
    check_version("command batch", record.version)?;
    record.commands.into_iter().map(command_from_record).collect()
}

/// Encodes a command for the log.
pub fn encode_command(command: &Command) -> Vec<u8> {
    prost::Message::encode_to_vec(&command_record(command))
}

fn command_record(command: &Command) -> CommandRecord {
    let kind = match command {
        Command::CreateSession { session, ttl, options } => CommandKind::CreateSession(CreateSessionRecord {
            id: session.get(),
            ttl_ms: ttl.as_millis(),
            options: options_record(options),
        }),
        Command::LiftLockDelays { delays } => {
            CommandKind::LiftLockDelays(DelayList { delays: delays.iter().map(|d| delay_record(d, 0)).collect() })
        }
        Command::RevokeSession { session } => CommandKind::RevokeSession(session.get()),
        Command::ExpireSessions { sessions } => {
            CommandKind::ExpireSessions(SessionList { ids: sessions.iter().map(|s| s.get()).collect() })
        }
        Command::Register { session, spec } => {
            CommandKind::Register(RegisterRecord { session: session.get(), instance: Some(spec_record(spec)) })
        }
        Command::Deregister { service, id } => {
            CommandKind::Deregister(InstanceKey { service: service.to_string(), id: id.to_string() })
        }
        Command::NameHistory { id } => CommandKind::NameHistory(*id),
        Command::AgentRegister { spec, checks } => CommandKind::AgentRegister(AgentRegisterRecord {
            instance: Some(spec_record(spec)),
            checks: checks.iter().map(check_spec_record).collect(),
        }),
        Command::PutCheck { service, id, check } => CommandKind::PutCheck(CheckCommandRecord {
            key: Some(InstanceKey { service: service.to_string(), id: id.to_string() }),
            check: Some(check_spec_record(check)),
            check_id: String::new(),
        }),
        Command::RemoveCheck { service, id, check } => CommandKind::RemoveCheck(CheckCommandRecord {
            key: Some(InstanceKey { service: service.to_string(), id: id.to_string() }),
            check: None,
            check_id: check.clone(),
        }),
        Command::KvTxn { txn } => CommandKind::KvTxn(txn_record(txn)),
        Command::LockAcquire { lock, session, limit, wait, value } => CommandKind::LockAcquire(LockCommandRecord {
            lock: lock.clone(),
            session: session.get(),
            limit: *limit,
            wait: *wait,
            value: value.clone(),
            token: 0,
        }),
        Command::LockProclaim { lock, session, token, value } => CommandKind::LockProclaim(LockCommandRecord {
            lock: lock.clone(),
            session: session.get(),
            token: *token,
            value: value.clone(),
            ..Default::default()
        }),
        Command::LockRelease { lock, session, waiting_only } => CommandKind::LockRelease(LockCommandRecord {
            lock: lock.clone(),
            session: session.get(),
            wait: *waiting_only,
            ..Default::default()
        }),
        Command::UpdateChecks { updates } => CommandKind::UpdateChecks(CheckUpdates {
            updates: updates
                .iter()
                .map(|u| CheckUpdateRecord {
                    key: Some(InstanceKey { service: u.service.to_string(), id: u.instance.to_string() }),
                    check: u.check.clone(),
                    status: status_code(u.status),
                    output: u.output.clone(),
                })
                .collect(),
        }),
    };
    CommandRecord { version: FORMAT_VERSION, kind: Some(kind) }
}

/// Decodes a command written by [`encode_command`] (this or an older version).
pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    let record: CommandRecord = prost::Message::decode(bytes).map_err(|e| CodecError::new("command", e))?;
    command_from_record(record)
}

fn command_from_record(record: CommandRecord) -> Result<Command, CodecError> {
    check_version("command", record.version)?;
    let invalid = |e: ValidationError| CodecError::new("command", e);
    Ok(match record.kind.ok_or_else(|| CodecError::new("command", "unknown command kind"))? {
        CommandKind::CreateSession(r) => Command::CreateSession {
            session: SessionId::new(r.id),
            ttl: Ttl::from_millis(r.ttl_ms).map_err(invalid)?,
            options: record_options(r.options).map_err(invalid)?,
        },
        CommandKind::LiftLockDelays(r) => {
            Command::LiftLockDelays { delays: r.delays.iter().map(record_delay).collect() }
        }
        CommandKind::RevokeSession(id) => Command::RevokeSession { session: SessionId::new(id) },
        CommandKind::ExpireSessions(list) => {
            Command::ExpireSessions { sessions: list.ids.into_iter().map(SessionId::new).collect() }
        }
        CommandKind::Register(r) => Command::Register {
            session: SessionId::new(r.session),
            // Not validated here: `apply` refuses a bad spec deterministically on every replica,
            // whereas a decode failure would stall the log.
            spec: record_spec(r.instance.ok_or_else(|| CodecError::new("command", "register without instance"))?)
                .map_err(invalid)?,
        },
        CommandKind::Deregister(k) => Command::Deregister {
            service: ServiceName::new(k.service).map_err(invalid)?,
            id: InstanceId::new(k.id).map_err(invalid)?,
        },
        CommandKind::NameHistory(id) => Command::NameHistory { id },
        CommandKind::AgentRegister(r) => Command::AgentRegister {
            spec: record_spec(r.instance.ok_or_else(|| CodecError::new("command", "register without instance"))?)
                .map_err(invalid)?,
            checks: r.checks.into_iter().map(|c| record_check_spec(&c)).collect::<Result<_, _>>().map_err(invalid)?,
        },
        CommandKind::PutCheck(r) => {
            let (service, id) = key_of(r.key).map_err(invalid)?;
            let check = r.check.ok_or_else(|| CodecError::new("command", "check without definition"))?;
            Command::PutCheck { service, id, check: record_check_spec(&check).map_err(invalid)? }
        }
        CommandKind::RemoveCheck(r) => {
            let (service, id) = key_of(r.key).map_err(invalid)?;
            Command::RemoveCheck { service, id, check: r.check_id }
        }
        CommandKind::KvTxn(r) => Command::KvTxn { txn: record_txn(r).map_err(invalid)? },
        CommandKind::LockAcquire(r) => Command::LockAcquire {
            lock: r.lock,
            session: SessionId::new(r.session),
            limit: r.limit,
            wait: r.wait,
            value: r.value,
        },
        CommandKind::LockProclaim(r) => {
            Command::LockProclaim { lock: r.lock, session: SessionId::new(r.session), token: r.token, value: r.value }
        }
        CommandKind::LockRelease(r) => {
            Command::LockRelease { lock: r.lock, session: SessionId::new(r.session), waiting_only: r.wait }
        }
        CommandKind::UpdateChecks(r) => Command::UpdateChecks {
            updates: r
                .updates
                .into_iter()
                .map(|u| {
                    let (service, instance) = key_of(u.key)?;
                    Ok(CheckUpdate {
                        service,
                        instance,
                        check: u.check,
                        status: code_status(u.status)?,
                        output: u.output,
                    })
                })
                .collect::<Result<_, ValidationError>>()
                .map_err(invalid)?,
        },
    })
}

fn key_of(key: Option<InstanceKey>) -> Result<(ServiceName, InstanceId), ValidationError> {
    let key = key.ok_or_else(|| ValidationError::new("instance", "missing"))?;
    Ok((ServiceName::new(key.service)?, InstanceId::new(key.id)?))
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

/// Encodes the whole registry as a snapshot.
pub fn encode_snapshot(registry: &Registry) -> Vec<u8> {
    let record = SnapshotRecord {
        version: FORMAT_VERSION,
        revision: registry.revision().get(),
        history: registry.history(),
        locks: registry
            .locks()
            .iter()
            .map(|(name, l)| LockRecord {
                name: name.clone(),
                limit: l.limit,
                holders: l
                    .holders
                    .iter()
                    .map(|h| LockHolderRecord { session: h.session.get(), token: h.token, value: h.value.to_vec() })
                    .collect(),
                waiters: l
                    .waiters
                    .iter()
                    .map(|w| LockHolderRecord { session: w.session.get(), token: 0, value: w.value.to_vec() })
                    .collect(),
                last_token: l.last_token,
                delayed: l
                    .delayed
                    .iter()
                    .map(|(token, ms)| {
                        delay_record(&crate::DelayTarget::Lock { lock: name.clone(), token: *token }, *ms)
                    })
                    .collect(),
            })
            .collect(),
        key_delays: registry
            .key_delays()
            .map(|(key, since, ms)| DelayRecord { key: key.to_owned(), token: since, ms, ..Default::default() })
            .collect(),
        kv: registry
            .kv()
            .iter()
            .map(|(key, e)| KvRecord {
                key: key.clone(),
                value: e.value.to_vec(),
                flags: e.flags,
                create_revision: e.create_revision.get(),
                modify_revision: e.modify_revision.get(),
                version: e.version,
                session: e.session.map_or(0, SessionId::get),
                lock_index: e.lock_index,
            })
            .collect(),
        sessions: registry
            .sessions()
            .values()
            .map(|s| SessionRecord {
                id: s.id.get(),
                ttl_ms: s.ttl.as_millis(),
                create_revision: s.create_revision.get(),
                options: options_record(&s.options),
            })
            .collect(),
        instances: registry
            .services()
            .values()
            .flat_map(|instances| instances.values())
            .map(|i| {
                let mut r = spec_record(&i.spec);
                r.session = i.session.get();
                r.create_revision = i.create_revision.get();
                r.modify_revision = i.modify_revision.get();
                r.checks = i
                    .checks
                    .iter()
                    .map(|c| CheckRecord {
                        status: status_code(c.status),
                        output: c.output.clone(),
                        ..check_spec_record(&c.spec)
                    })
                    .collect();
                r
            })
            .collect(),
    };
    prost::Message::encode_to_vec(&record)
}

/// Decodes a snapshot written by [`encode_snapshot`] (this or an older version).
pub fn decode_snapshot(bytes: &[u8]) -> Result<Registry, CodecError> {
    let record: SnapshotRecord = prost::Message::decode(bytes).map_err(|e| CodecError::new("snapshot", e))?;
    check_version("snapshot", record.version)?;
    let invalid = |e: ValidationError| CodecError::new("snapshot", e);
    let sessions = record
        .sessions
        .into_iter()
        .map(|s| {
            Ok((
                SessionId::new(s.id),
                Ttl::from_millis(s.ttl_ms).map_err(invalid)?,
                Revision::new(s.create_revision),
                record_options(s.options).map_err(invalid)?,
            ))
        })
        .collect::<Result<Vec<_>, CodecError>>()?;
    let instances = record
        .instances
        .into_iter()
        .map(|r| {
            let (session, create, modify) = (r.session, r.create_revision, r.modify_revision);
            let checks = r
                .checks
                .iter()
                .map(|c| {
                    Ok(Check { spec: record_check_spec(c)?, status: code_status(c.status)?, output: c.output.clone() })
                })
                .collect::<Result<Vec<_>, ValidationError>>()
                .map_err(invalid)?;
            let spec = record_spec(r).map_err(invalid)?;
            spec.validate().map_err(invalid)?;
            Ok(Instance {
                spec,
                session: SessionId::new(session),
                create_revision: Revision::new(create),
                modify_revision: Revision::new(modify),
                checks,
            })
        })
        .collect::<Result<Vec<_>, CodecError>>()?;
    let session_ids: std::collections::BTreeSet<SessionId> = sessions.iter().map(|s| s.0).collect();
    if session_ids.len() != sessions.len() {
        return Err(CodecError::new("snapshot", "duplicate session records"));
    }
    let mut keys = std::collections::BTreeSet::new();
    for i in &instances {
        if !session_ids.contains(&i.session) {
            return Err(CodecError::new("snapshot", format!("instance {} of {} has no session", i.id(), i.service())));
        }
        if !keys.insert((i.service().clone(), i.id().clone())) {
            return Err(CodecError::new("snapshot", format!("duplicate instance {} of {}", i.id(), i.service())));
        }
    }
    let mut kv = Vec::with_capacity(record.kv.len());
    for r in record.kv {
        let session = (r.session != 0).then(|| SessionId::new(r.session));
        if let Some(s) = session
            && !session_ids.contains(&s)
        {
            return Err(CodecError::new("snapshot", format!("key {:?} is bound to a missing session", r.key)));
        }
        let entry = KvEntry {
            value: std::sync::Arc::from(r.value),
            flags: r.flags,
            create_revision: Revision::new(r.create_revision),
            modify_revision: Revision::new(r.modify_revision),
            version: r.version,
            session,
            lock_index: r.lock_index,
        };
        kv.push((r.key, entry));
    }
    let mut locks = Vec::with_capacity(record.locks.len());
    for r in record.locks {
        let known = |s: u64| {
            if session_ids.contains(&SessionId::new(s)) {
                Ok(SessionId::new(s))
            } else {
                Err(CodecError::new("snapshot", format!("lock {:?} names a missing session", r.name)))
            }
        };
        let holders = r
            .holders
            .iter()
            .map(|h| {
                Ok(crate::LockHolder {
                    session: known(h.session)?,
                    token: h.token,
                    value: std::sync::Arc::from(&h.value[..]),
                })
            })
            .collect::<Result<_, CodecError>>()?;
        let waiters = r
            .waiters
            .iter()
            .map(|w| Ok(crate::LockWaiter { session: known(w.session)?, value: std::sync::Arc::from(&w.value[..]) }))
            .collect::<Result<_, CodecError>>()?;
        let delayed = r.delayed.iter().map(|d| (d.token, d.ms)).collect();
        let state = crate::LockState { limit: r.limit, holders, waiters, last_token: r.last_token, delayed };
        locks.push((r.name.clone(), state));
    }
    let key_delays = record.key_delays.into_iter().map(|d| (d.key, d.token, d.ms)).collect();
    Ok(Registry::from_parts(Revision::new(record.revision), record.history, sessions, instances, kv, locks, key_delays))
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
