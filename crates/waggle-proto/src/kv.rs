//! Conversions between the KV wire messages and core transactions.

use waggle_core::{
    Compare, CompareOp, CompareTarget, KvEntry, KvOp, OpResult, SessionId, Txn, TxnResult, ValidationError,
};

use crate::v1;

/// A stored entry as a wire message (`keys_only`: without its value).
pub fn kv_from_core(key: &str, e: &KvEntry, keys_only: bool) -> v1::KeyValue {
    v1::KeyValue {
        key: key.to_owned(),
        value: if keys_only { Vec::new() } else { e.value.to_vec() },
        flags: e.flags,
        create_revision: e.create_revision.get(),
        modify_revision: e.modify_revision.get(),
        version: e.version,
        session_id: e.session.map_or(0, SessionId::get),
    }
}

fn session(raw: u64) -> Option<SessionId> {
    (raw != 0).then(|| SessionId::new(raw))
}

fn guard(g: &Option<v1::Guard>) -> Option<waggle_core::Guard> {
    g.as_ref().map(|g| waggle_core::Guard { lock: g.lock.clone(), token: g.token })
}

/// A put as a transaction: with `cas`, guarded by a compare on the modify revision.
pub fn put_txn(req: &v1::PutRequest) -> Txn {
    Txn {
        guard: guard(&req.guard),
        compares: req.cas.map(|cas| modify_is(&req.key, cas)).into_iter().collect(),
        success: vec![put_op(req)],
        failure: Vec::new(),
    }
}

/// A delete as a transaction (see [`put_txn`]).
pub fn delete_txn(req: &v1::DeleteRequest) -> Result<Txn, ValidationError> {
    if req.cas.is_some() && req.prefix {
        return Err(ValidationError::new("cas", "cannot be used with prefix"));
    }
    Ok(Txn {
        guard: guard(&req.guard),
        compares: req.cas.map(|cas| modify_is(&req.key, cas)).into_iter().collect(),
        success: vec![KvOp::Delete { key: req.key.clone(), prefix: req.prefix }],
        failure: Vec::new(),
    })
}

fn modify_is(key: &str, revision: u64) -> Compare {
    Compare { key: key.to_owned(), target: CompareTarget::ModifyRevision(revision), op: CompareOp::Equal }
}

fn put_op(req: &v1::PutRequest) -> KvOp {
    KvOp::Put { key: req.key.clone(), value: req.value.clone(), flags: req.flags, session: session(req.session_id) }
}

/// A wire transaction as a core one, validated.
pub fn txn_from_wire(req: &v1::TxnRequest) -> Result<Txn, ValidationError> {
    let op = |op: &v1::Op| -> Result<KvOp, ValidationError> {
        let inner_guard = match &op.op {
            Some(v1::op::Op::Put(p)) => p.guard.is_some(),
            Some(v1::op::Op::Delete(d)) => d.guard.is_some(),
            _ => false,
        };
        if inner_guard {
            return Err(ValidationError::new("guard", "not allowed on an operation: set the transaction's"));
        }
        match &op.op {
            Some(v1::op::Op::Put(p)) if p.cas.is_some() => {
                Err(ValidationError::new("cas", "not allowed inside a transaction: use a compare"))
            }
            Some(v1::op::Op::Delete(d)) if d.cas.is_some() => {
                Err(ValidationError::new("cas", "not allowed inside a transaction: use a compare"))
            }
            Some(v1::op::Op::Put(p)) => Ok(put_op(p)),
            Some(v1::op::Op::Delete(d)) => Ok(KvOp::Delete { key: d.key.clone(), prefix: d.prefix }),
            Some(v1::op::Op::Get(g)) => Ok(KvOp::Get { key: g.key.clone(), prefix: g.prefix }),
            None => Err(ValidationError::new("op", "required")),
        }
    };
    let compares = req
        .compares
        .iter()
        .map(|c| {
            use v1::compare::{Op, Target};
            let target = match Target::try_from(c.target) {
                Ok(Target::ModifyRevision) => CompareTarget::ModifyRevision(c.number),
                Ok(Target::CreateRevision) => CompareTarget::CreateRevision(c.number),
                Ok(Target::Version) => CompareTarget::Version(c.number),
                Ok(Target::Value) => CompareTarget::Value(c.value.clone()),
                Ok(Target::Session) => CompareTarget::Session(c.number),
                Err(_) => return Err(ValidationError::new("compare.target", format!("unknown target {}", c.target))),
            };
            let op = match Op::try_from(c.op) {
                Ok(Op::Equal) => CompareOp::Equal,
                Ok(Op::NotEqual) => CompareOp::NotEqual,
                Ok(Op::Less) => CompareOp::Less,
                Ok(Op::Greater) => CompareOp::Greater,
                Err(_) => return Err(ValidationError::new("compare.op", format!("unknown op {}", c.op))),
            };
            Ok(Compare { key: c.key.clone(), target, op })
        })
        .collect::<Result<_, _>>()?;
    let txn = Txn {
        guard: guard(&req.guard),
        compares,
        success: req.success.iter().map(op).collect::<Result<_, _>>()?,
        failure: req.failure.iter().map(op).collect::<Result<_, _>>()?,
    };
    txn.validate()?;
    Ok(txn)
}

/// A core transaction as a wire one (for clients). Consul's lock operations (set, acquire,
/// release, assert) exist only inside the server, for its Consul API: refused here.
pub fn txn_to_wire(txn: &Txn) -> Result<v1::TxnRequest, ValidationError> {
    let op = |op: &KvOp| -> Result<v1::Op, ValidationError> {
        Ok(v1::Op {
            op: Some(match op {
                KvOp::Put { key, value, flags, session } => v1::op::Op::Put(v1::PutRequest {
                    key: key.clone(),
                    value: value.clone(),
                    flags: *flags,
                    session_id: session.map_or(0, SessionId::get),
                    cas: None,
                    guard: None,
                }),
                KvOp::Delete { key, prefix } => {
                    v1::op::Op::Delete(v1::DeleteRequest { key: key.clone(), prefix: *prefix, cas: None, guard: None })
                }
                KvOp::Get { key, prefix } => {
                    v1::op::Op::Get(v1::GetRequest { key: key.clone(), prefix: *prefix, ..Default::default() })
                }
                KvOp::Set { .. } | KvOp::Acquire { .. } | KvOp::Release { .. } | KvOp::Assert(_) => {
                    let rule = "set, acquire, release and assert are Consul API operations: use put and compares";
                    return Err(ValidationError::new("op", rule));
                }
            }),
        })
    };
    let compares = txn
        .compares
        .iter()
        .map(|c| {
            use v1::compare::{Op, Target};
            let (target, number, value) = match &c.target {
                CompareTarget::ModifyRevision(n) => (Target::ModifyRevision, *n, Vec::new()),
                CompareTarget::CreateRevision(n) => (Target::CreateRevision, *n, Vec::new()),
                CompareTarget::Version(n) => (Target::Version, *n, Vec::new()),
                CompareTarget::Value(v) => (Target::Value, 0, v.clone()),
                CompareTarget::Session(n) => (Target::Session, *n, Vec::new()),
                CompareTarget::ModifyRevisionIfPresent(_) => {
                    return Err(ValidationError::new("compare.target", "a Consul API compare: not on the wire"));
                }
            };
            let op = match c.op {
                CompareOp::Equal => Op::Equal,
                CompareOp::NotEqual => Op::NotEqual,
                CompareOp::Less => Op::Less,
                CompareOp::Greater => Op::Greater,
            };
            Ok(v1::Compare { key: c.key.clone(), target: target.into(), op: op.into(), number, value })
        })
        .collect::<Result<_, _>>()?;
    Ok(v1::TxnRequest {
        compares,
        success: txn.success.iter().map(op).collect::<Result<_, _>>()?,
        failure: txn.failure.iter().map(op).collect::<Result<_, _>>()?,
        guard: txn.guard.as_ref().map(|g| v1::Guard { lock: g.lock.clone(), token: g.token }),
    })
}

/// A core transaction result as wire results, at `revision`.
pub fn txn_result_to_wire(revision: u64, result: &TxnResult) -> v1::TxnResponse {
    let results = result
        .results
        .iter()
        .map(|r| v1::OpResponse {
            result: Some(match r {
                OpResult::Put { previous } => v1::op_response::Result::Put(v1::PutResponse {
                    revision,
                    succeeded: true,
                    previous: previous.as_ref().map(|p| kv_from_core("", p, false)),
                }),
                OpResult::Delete { deleted } => {
                    v1::op_response::Result::Delete(v1::DeleteResponse { revision, succeeded: true, deleted: *deleted })
                }
                OpResult::Get { entries } => v1::op_response::Result::Get(v1::GetResponse {
                    revision,
                    kvs: entries.iter().map(|(k, e)| kv_from_core(k, e, false)).collect(),
                    more: false,
                }),
                // Only Consul's operations produce it (never a wire transaction); as a read.
                OpResult::Entry { entry } => v1::op_response::Result::Get(v1::GetResponse {
                    revision,
                    kvs: entry.iter().map(|e| kv_from_core("", e, false)).collect(),
                    more: false,
                }),
            }),
        })
        .collect();
    v1::TxnResponse { revision, succeeded: result.succeeded, results }
}
