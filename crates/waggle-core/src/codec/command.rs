//! The log encoding of commands and command batches: one protobuf record per [`Command`]
//! kind, tagged in a oneof.

use super::{
    CheckRecord, CodecError, DelayRecord, FORMAT_VERSION, InstanceRecord, SessionOptionsRecord,
    acl::{
        AuthMethodRecord, BindingRuleRecord, PolicyRecord, RoleRecord, TokenRecord, auth_method_record,
        binding_rule_record, code_default_policy, default_policy_code, policy_record, record_auth_method,
        record_binding_rule, record_policy, record_role, record_token, role_record, token_record,
    },
    check_spec_record, check_version, code_status, delay_record, options_record, record_check_spec, record_delay,
    record_options, record_spec, spec_record, status_code,
};
use crate::{
    CheckUpdate, Command, Compare, CompareOp, CompareTarget, InstanceId, KvOp, ServiceName, SessionId, Ttl, Txn,
    ValidationError,
};

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
struct CommandRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(
        oneof = "CommandKind",
        tags = "2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29"
    )]
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
    #[prost(message, tag = "17")]
    Authorized(AuthorizedRecord),
    #[prost(message, tag = "18")]
    AclBootstrap(TokenRecord),
    #[prost(message, tag = "19")]
    AclSetToken(TokenRecord),
    /// The accessor.
    #[prost(string, tag = "20")]
    AclDeleteToken(String),
    #[prost(message, tag = "21")]
    AclSetPolicy(PolicyRecord),
    /// The policy id.
    #[prost(string, tag = "22")]
    AclDeletePolicy(String),
    #[prost(message, tag = "23")]
    AclSetRole(RoleRecord),
    /// The role id.
    #[prost(string, tag = "24")]
    AclDeleteRole(String),
    #[prost(message, tag = "25")]
    AclExpireTokens(AccessorList),
    #[prost(message, tag = "26")]
    AclSetAuthMethod(AuthMethodRecord),
    /// The method's name.
    #[prost(string, tag = "27")]
    AclDeleteAuthMethod(String),
    #[prost(message, tag = "28")]
    AclSetBindingRule(BindingRuleRecord),
    /// The rule's id.
    #[prost(string, tag = "29")]
    AclDeleteBindingRule(String),
}

/// A command run for a token: the nested command is a whole record (with its own version).
#[derive(Clone, PartialEq, prost::Message)]
struct AuthorizedRecord {
    #[prost(string, tag = "1")]
    accessor: String,
    /// 1 allow, 2 deny.
    #[prost(uint32, tag = "2")]
    default: u32,
    #[prost(message, optional, boxed, tag = "3")]
    command: Option<Box<CommandRecord>>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AccessorList {
    #[prost(string, repeated, tag = "1")]
    accessors: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct DelayList {
    #[prost(message, repeated, tag = "1")]
    delays: Vec<DelayRecord>,
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
        Command::Authorized { accessor, default, command } => CommandKind::Authorized(AuthorizedRecord {
            accessor: accessor.clone(),
            default: default_policy_code(*default),
            command: Some(Box::new(command_record(command))),
        }),
        Command::AclBootstrap { token } => CommandKind::AclBootstrap(token_record(token)),
        Command::AclSetToken { token } => CommandKind::AclSetToken(token_record(token)),
        Command::AclDeleteToken { accessor } => CommandKind::AclDeleteToken(accessor.clone()),
        Command::AclSetPolicy { policy } => CommandKind::AclSetPolicy(policy_record(policy)),
        Command::AclDeletePolicy { id } => CommandKind::AclDeletePolicy(id.clone()),
        Command::AclSetRole { role } => CommandKind::AclSetRole(role_record(role)),
        Command::AclDeleteRole { id } => CommandKind::AclDeleteRole(id.clone()),
        Command::AclSetAuthMethod { method } => CommandKind::AclSetAuthMethod(auth_method_record(method)),
        Command::AclDeleteAuthMethod { name } => CommandKind::AclDeleteAuthMethod(name.clone()),
        Command::AclSetBindingRule { rule } => CommandKind::AclSetBindingRule(binding_rule_record(rule)),
        Command::AclDeleteBindingRule { id } => CommandKind::AclDeleteBindingRule(id.clone()),
        Command::AclExpireTokens { accessors } => {
            CommandKind::AclExpireTokens(AccessorList { accessors: accessors.clone() })
        }
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
        // The nested command is decoded whatever it is (a nested `Authorized` included: the
        // state machine refuses that deterministically); prost bounds the nesting depth.
        CommandKind::Authorized(r) => Command::Authorized {
            accessor: r.accessor,
            default: code_default_policy(r.default).map_err(invalid)?,
            command: Box::new(command_from_record(
                *r.command.ok_or_else(|| CodecError::new("command", "authorized without a command"))?,
            )?),
        },
        CommandKind::AclBootstrap(r) => Command::AclBootstrap { token: record_token(r) },
        CommandKind::AclSetToken(r) => Command::AclSetToken { token: record_token(r) },
        CommandKind::AclDeleteToken(accessor) => Command::AclDeleteToken { accessor },
        CommandKind::AclSetPolicy(r) => Command::AclSetPolicy { policy: record_policy(r).map_err(invalid)? },
        CommandKind::AclDeletePolicy(id) => Command::AclDeletePolicy { id },
        CommandKind::AclSetRole(r) => Command::AclSetRole { role: record_role(r) },
        CommandKind::AclDeleteRole(id) => Command::AclDeleteRole { id },
        CommandKind::AclExpireTokens(r) => Command::AclExpireTokens { accessors: r.accessors },
        CommandKind::AclSetAuthMethod(r) => Command::AclSetAuthMethod { method: record_auth_method(r) },
        CommandKind::AclDeleteAuthMethod(name) => Command::AclDeleteAuthMethod { name },
        CommandKind::AclSetBindingRule(r) => {
            Command::AclSetBindingRule { rule: record_binding_rule(r).map_err(invalid)? }
        }
        CommandKind::AclDeleteBindingRule(id) => Command::AclDeleteBindingRule { id },
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
