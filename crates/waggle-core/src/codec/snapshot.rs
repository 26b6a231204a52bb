//! The snapshot encoding: the whole [`Registry`] (sessions, instances, KV, locks and
//! lock-delays, the ACL state) as one record, and its validation on the way back in.

use std::collections::HashSet;

use super::{
    CheckRecord, CodecError, DelayRecord, FORMAT_VERSION, InstanceRecord, SessionOptionsRecord,
    acl::{
        AuthMethodRecord, BindingRuleRecord, PolicyRecord, RoleRecord, TokenRecord, auth_method_record,
        binding_rule_record, keyed, policy_record, record_auth_method, record_binding_rule, record_policy, record_role,
        record_token, role_record, token_record,
    },
    check_spec_record, check_version, code_status, delay_record, options_record, record_check_spec, record_options,
    record_spec, spec_record, status_code,
};
use crate::{Check, Instance, KvEntry, Registry, Revision, SessionId, Ttl, ValidationError, acl::AclState};

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
    /// ACL tokens, by accessor.
    #[prost(message, repeated, tag = "9")]
    acl_tokens: Vec<TokenRecord>,
    /// ACL policies, by id.
    #[prost(message, repeated, tag = "10")]
    acl_policies: Vec<PolicyRecord>,
    /// ACL roles, by id.
    #[prost(message, repeated, tag = "11")]
    acl_roles: Vec<RoleRecord>,
    /// The revision of the ACL bootstrap, once done.
    #[prost(uint64, optional, tag = "12")]
    acl_bootstrapped: Option<u64>,
    /// The revision of the last ACL change (0: none).
    #[prost(uint64, tag = "13")]
    acl_index: u64,
    /// ACL auth methods, by name.
    #[prost(message, repeated, tag = "14")]
    acl_auth_methods: Vec<AuthMethodRecord>,
    /// ACL binding rules, by id.
    #[prost(message, repeated, tag = "15")]
    acl_binding_rules: Vec<BindingRuleRecord>,
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

/// Encodes the whole registry as a snapshot.
pub fn encode_snapshot(registry: &Registry) -> Vec<u8> {
    let acl = registry.acl();
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
        acl_tokens: acl.tokens().values().map(|t| token_record(t)).collect(),
        acl_policies: acl.policies().values().map(|p| policy_record(p)).collect(),
        acl_roles: acl.roles().values().map(|r| role_record(r)).collect(),
        acl_bootstrapped: acl.bootstrapped(),
        acl_index: acl.index(),
        acl_auth_methods: acl.auth_methods().values().map(|m| auth_method_record(m)).collect(),
        acl_binding_rules: acl.binding_rules().values().map(|r| binding_rule_record(r)).collect(),
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
    let acl = record_acl(AclRecords {
        tokens: record.acl_tokens,
        policies: record.acl_policies,
        roles: record.acl_roles,
        auth_methods: record.acl_auth_methods,
        binding_rules: record.acl_binding_rules,
        bootstrapped: record.acl_bootstrapped,
        index: record.acl_index,
    })?;
    let mut registry = Registry::from_parts(
        Revision::new(record.revision),
        record.history,
        sessions,
        instances,
        kv,
        locks,
        key_delays,
    );
    registry.set_acl(acl);
    Ok(registry)
}

/// A snapshot's ACL records.
struct AclRecords {
    tokens: Vec<TokenRecord>,
    policies: Vec<PolicyRecord>,
    roles: Vec<RoleRecord>,
    auth_methods: Vec<AuthMethodRecord>,
    binding_rules: Vec<BindingRuleRecord>,
    bootstrapped: Option<u64>,
    index: u64,
}

/// The snapshot's ACL state; no accessor, secret, policy id, role id, auth method name or
/// binding rule id may repeat, and every binding rule's auth method exists (deleting a method
/// deletes its rules). Links to policies and roles are not checked: deleting a policy or role
/// leaves them dangling.
fn record_acl(r: AclRecords) -> Result<AclState, CodecError> {
    let invalid = |e: ValidationError| CodecError::new("snapshot", e);
    let tokens = keyed("token", r.tokens.into_iter().map(record_token), |t| &t.accessor).map_err(invalid)?;
    let mut secrets = HashSet::new();
    if !tokens.values().all(|t| secrets.insert(t.secret.as_str())) {
        // Not the secret itself: secrets are never logged.
        return Err(CodecError::new("snapshot", "two ACL tokens share a secret"));
    }
    let policies = r.policies.into_iter().map(record_policy).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    let policies = keyed("policy", policies, |p| &p.id).map_err(invalid)?;
    let roles = keyed("role", r.roles.into_iter().map(record_role), |r| &r.id).map_err(invalid)?;
    let auth_methods =
        keyed("auth method", r.auth_methods.into_iter().map(record_auth_method), |m| &m.name).map_err(invalid)?;
    let rules = r.binding_rules.into_iter().map(record_binding_rule).collect::<Result<Vec<_>, _>>().map_err(invalid)?;
    let binding_rules = keyed("binding rule", rules, |r| &r.id).map_err(invalid)?;
    if let Some(orphan) = binding_rules.values().find(|r| !auth_methods.contains_key(&r.auth_method)) {
        return Err(CodecError::new(
            "snapshot",
            format!("binding rule {:?} names a missing auth method {:?}", orphan.id, orphan.auth_method),
        ));
    }
    Ok(AclState::from_parts(tokens, policies, roles, auth_methods, binding_rules, r.bootstrapped, r.index))
}
