//! ACLs in the state machine, as data: commands in, outcomes and state out. The key property:
//! a write carries its token's accessor into the log and is checked against the ACL state at its
//! point of the log, so a token revoked or narrowed before the write applies is refused, with
//! nothing changed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waggle_core::{
    ApplyError, Command, InstanceSpec, KvOp, Registry, SessionId, SessionOptions, Ttl, Txn,
    acl::{
        ANONYMOUS_ACCESSOR, Access, DefaultPolicy, GLOBAL_MANAGEMENT_ID, Grants, Level, Policy, Resource, Role, Rules,
        ServiceIdentity, TemplatedPolicy, Token,
    },
};

fn rules(list: &[(Resource, &str, bool, Level)]) -> Rules {
    let mut r = Rules::new();
    for (resource, name, prefix, level) in list {
        r.add(*resource, Some(name), *prefix, *level);
    }
    r
}

fn policy(id: &str, list: &[(Resource, &str, bool, Level)]) -> Policy {
    Policy {
        id: id.into(),
        name: id.into(),
        description: String::new(),
        rules_text: String::new(),
        rules: rules(list),
        datacenters: Vec::new(),
        create_index: 0,
        modify_index: 0,
    }
}

fn token(accessor: &str, grants: Grants, roles: Vec<String>) -> Token {
    Token {
        accessor: accessor.into(),
        secret: format!("secret-{accessor}"),
        description: String::new(),
        grants,
        roles,
        local: false,
        expiration_ms: None,
        create_ms: 0,
        auth_method: None,
        create_index: 0,
        modify_index: 0,
    }
}

fn policies(ids: &[&str]) -> Grants {
    Grants { policies: ids.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

fn as_token(accessor: &str, command: Command) -> Command {
    Command::Authorized { accessor: accessor.into(), default: DefaultPolicy::Deny, command: Box::new(command) }
}

fn put(key: &str) -> Command {
    Command::KvTxn { txn: Txn::put(key, b"v".to_vec()) }
}

fn ok(r: &mut Registry, command: Command) {
    let outcome = r.apply(&command);
    assert!(outcome.response.is_ok(), "{command:?}: {:?}", outcome.response);
}

/// Applies a command that must be refused with `expected`, changing nothing.
fn refused(r: &mut Registry, command: Command, expected: fn(&ApplyError) -> bool) {
    let before = r.clone();
    let outcome = r.apply(&command);
    match &outcome.response {
        Err(e) => assert!(expected(e), "{command:?}: unexpected {e:?}"),
        Ok(applied) => panic!("{command:?} was applied: {applied:?}"),
    }
    assert_eq!(*r, before, "state unchanged by a refused {command:?}");
    assert!(outcome.effects.is_empty());
}

fn denied(e: &ApplyError) -> bool {
    matches!(e, ApplyError::PermissionDenied(_))
}

/// A registry with a management token `root` and a token `dev` on policy `p` (key_prefix a/
/// write, key a/secret deny).
fn setup() -> Registry {
    let mut r = Registry::new();
    ok(&mut r, Command::AclBootstrap { token: token("root", policies(&[GLOBAL_MANAGEMENT_ID]), vec![]) });
    let p = policy("p", &[(Resource::Key, "a/", true, Level::Write), (Resource::Key, "a/secret", false, Level::Deny)]);
    ok(&mut r, as_token("root", Command::AclSetPolicy { policy: p }));
    ok(&mut r, as_token("root", Command::AclSetToken { token: token("dev", policies(&["p"]), vec![]) }));
    r
}

#[test]
fn writes_follow_the_rules_with_consuls_precedence() {
    let mut r = setup();
    ok(&mut r, as_token("dev", put("a/x")));
    refused(&mut r, as_token("dev", put("a/secret")), denied);
    refused(&mut r, as_token("dev", put("ab")), denied);
    refused(&mut r, as_token("nobody", put("a/x")), |e| matches!(e, ApplyError::TokenNotFound));
    refused(&mut r, as_token(ANONYMOUS_ACCESSOR, put("a/x")), denied);
    // The message is Consul's.
    let e = r.apply(&as_token("dev", put("ab"))).response.unwrap_err();
    assert_eq!(e.to_string(), "Permission denied: token with AccessorID 'dev' lacks permission 'key:write' on \"ab\"");
}

#[test]
fn a_token_revoked_before_its_write_applies_is_refused() {
    let mut r = setup();
    let write = as_token("dev", put("a/x"));
    ok(&mut r, as_token("root", Command::AclDeleteToken { accessor: "dev".into() }));
    refused(&mut r, write, |e| matches!(e, ApplyError::TokenNotFound));
}

#[test]
fn a_policy_narrowed_before_the_write_applies_refuses_it() {
    let mut r = setup();
    let write = as_token("dev", put("a/x"));
    let narrowed = policy("p", &[(Resource::Key, "a/", true, Level::Read)]);
    ok(&mut r, as_token("root", Command::AclSetPolicy { policy: narrowed }));
    refused(&mut r, write, denied);
}

#[test]
fn a_transaction_with_one_forbidden_op_is_refused_whole() {
    let mut r = setup();
    let revision = r.revision();
    let txn = Txn {
        success: vec![
            KvOp::Put { key: "a/1".into(), value: b"1".to_vec(), flags: 0, session: None },
            KvOp::Put { key: "b/1".into(), value: b"1".to_vec(), flags: 0, session: None },
        ],
        ..Default::default()
    };
    refused(&mut r, as_token("dev", Command::KvTxn { txn }), denied);
    assert_eq!(r.revision(), revision, "no revision consumed");
    assert!(r.kv().get("a/1").is_none(), "nothing written");
    // A recursive delete needs write on every key below its prefix.
    let delete = Txn { success: vec![KvOp::Delete { key: "a/".into(), prefix: true }], ..Default::default() };
    refused(&mut r, as_token("dev", Command::KvTxn { txn: delete }), denied);
}

#[test]
fn sessions_locks_and_guarded_writes_need_their_names() {
    let mut r = setup();
    let session = SessionId::new(7);
    let named = |name: &str| SessionOptions { name: name.into(), ..Default::default() };
    refused(
        &mut r,
        as_token("dev", Command::CreateSession { session, ttl: Ttl::DEFAULT, options: named("app") }),
        denied,
    );
    ok(&mut r, Command::CreateSession { session, ttl: Ttl::DEFAULT, options: named("app") });
    let acquire =
        |lock: &str| Command::LockAcquire { lock: lock.into(), session, limit: 1, wait: false, value: Vec::new() };
    ok(&mut r, as_token("dev", acquire("a/lock")));
    refused(&mut r, as_token("dev", acquire("other/lock")), denied);
    let guarded = Txn {
        guard: Some(waggle_core::Guard { lock: "other/lock".into(), token: 1 }),
        success: vec![KvOp::Put { key: "a/g".into(), value: b"1".to_vec(), flags: 0, session: None }],
        ..Default::default()
    };
    refused(&mut r, as_token("dev", Command::KvTxn { txn: guarded }), denied);
}

#[test]
fn identities_roles_and_templated_policies_grant_what_consuls_do() {
    let mut r = setup();
    let identity = Grants {
        service_identities: vec![ServiceIdentity { service: "web".into(), datacenters: vec![] }],
        ..Default::default()
    };
    ok(&mut r, as_token("root", Command::AclSetToken { token: token("web", identity, vec![]) }));
    let register = |service: &str| Command::AgentRegister {
        spec: InstanceSpec::new(service, "10.0.0.1", 80).unwrap(),
        checks: Vec::new(),
    };
    ok(&mut r, as_token("web", register("web")));
    ok(&mut r, as_token("web", register("web-sidecar-proxy")));
    refused(&mut r, as_token("web", register("api")), denied);
    let authorizer = r.acl().authorizer("web", DefaultPolicy::Deny).unwrap();
    assert!(authorizer.allowed(Resource::Service, "api", Access::Read), "reads every service");
    assert!(authorizer.allowed(Resource::Node, "n1", Access::Read), "and every node");
    // A role links the policy; a token links the role.
    let role = Role {
        id: "r".into(),
        name: "r".into(),
        description: String::new(),
        grants: policies(&["p"]),
        create_index: 0,
        modify_index: 0,
    };
    ok(&mut r, as_token("root", Command::AclSetRole { role }));
    ok(
        &mut r,
        as_token("root", Command::AclSetToken { token: token("via-role", Grants::default(), vec!["r".into()]) }),
    );
    ok(&mut r, as_token("via-role", put("a/role")));
    // builtin/dns reads services, nodes and queries; builtin/node writes its node.
    let templated = Grants {
        templated_policies: vec![
            TemplatedPolicy { template: "builtin/dns".into(), name: None, datacenters: vec![] },
            TemplatedPolicy { template: "builtin/node".into(), name: Some("n1".into()), datacenters: vec![] },
        ],
        ..Default::default()
    };
    ok(&mut r, as_token("root", Command::AclSetToken { token: token("dns", templated, vec![]) }));
    let dns = r.acl().authorizer("dns", DefaultPolicy::Deny).unwrap();
    assert!(dns.allowed(Resource::Service, "x", Access::Read) && dns.allowed(Resource::Query, "q", Access::Read));
    assert!(dns.allowed(Resource::Node, "n1", Access::Write) && !dns.allowed(Resource::Node, "n2", Access::Write));
    assert!(!dns.allowed(Resource::Service, "x", Access::Write));
}

#[test]
fn acl_management_needs_acl_write_and_cannot_be_escalated() {
    let mut r = setup();
    let reader = policy("reader", &[(Resource::Acl, "", false, Level::Read), (Resource::Key, "", true, Level::Write)]);
    ok(&mut r, as_token("root", Command::AclSetPolicy { policy: reader }));
    ok(&mut r, as_token("root", Command::AclSetToken { token: token("reader", policies(&["reader"]), vec![]) }));
    // acl:read may not create a management token, nor give itself the management policy.
    let grab = token("mine", policies(&[GLOBAL_MANAGEMENT_ID]), vec![]);
    refused(&mut r, as_token("reader", Command::AclSetToken { token: grab }), denied);
    let mut own = r.acl().token("reader").unwrap().as_ref().clone();
    own.grants.policies.push(GLOBAL_MANAGEMENT_ID.into());
    refused(&mut r, as_token("reader", Command::AclSetToken { token: own }), denied);
    // Default allow does not open ACL management.
    let allow = Command::Authorized {
        accessor: ANONYMOUS_ACCESSOR.into(),
        default: DefaultPolicy::Allow,
        command: Box::new(Command::AclDeletePolicy { id: "p".into() }),
    };
    refused(&mut r, allow, denied);
    let allowed_write = Command::Authorized {
        accessor: ANONYMOUS_ACCESSOR.into(),
        default: DefaultPolicy::Allow,
        command: Box::new(put("z")),
    };
    ok(&mut r, allowed_write);
    // An authorized command cannot nest another (to borrow its token).
    refused(&mut r, as_token("dev", as_token("root", put("z"))), |e| matches!(e, ApplyError::Invalid(_)));
}

#[test]
fn acl_objects_keep_consuls_rules() {
    let mut r = setup();
    refused(&mut r, Command::AclBootstrap { token: token("again", policies(&[GLOBAL_MANAGEMENT_ID]), vec![]) }, |e| {
        matches!(e, ApplyError::AclBootstrapped)
    });
    let mut stolen = token("other", Grants::default(), vec![]);
    stolen.secret = "secret-dev".into();
    refused(&mut r, as_token("root", Command::AclSetToken { token: stolen }), |e| {
        matches!(e, ApplyError::AclConflict(_))
    });
    let mut changed = r.acl().token("dev").unwrap().as_ref().clone();
    changed.secret = "new".into();
    refused(&mut r, as_token("root", Command::AclSetToken { token: changed }), |e| matches!(e, ApplyError::Invalid(_)));
    let mut clash = policy("q", &[]);
    clash.name = "p".into();
    refused(&mut r, as_token("root", Command::AclSetPolicy { policy: clash }), |e| {
        matches!(e, ApplyError::AclConflict(_))
    });
    refused(&mut r, as_token("root", Command::AclDeletePolicy { id: GLOBAL_MANAGEMENT_ID.into() }), |e| {
        matches!(e, ApplyError::Invalid(_))
    });
    refused(&mut r, as_token("root", Command::AclDeleteToken { accessor: ANONYMOUS_ACCESSOR.into() }), |e| {
        matches!(e, ApplyError::Invalid(_))
    });
    refused(
        &mut r,
        as_token("root", Command::AclSetToken { token: token("t", policies(&["missing"]), vec![]) }),
        |e| matches!(e, ApplyError::AclNotFound(_)),
    );
    // Updates keep the create index and move the modify index and the ACL index.
    let created = r.acl().token("dev").unwrap().create_index;
    let mut described = r.acl().token("dev").unwrap().as_ref().clone();
    described.description = "updated".into();
    let index_before = r.acl().index();
    let outcome = r.apply(&as_token("root", Command::AclSetToken { token: described }));
    assert!(outcome.response.is_ok());
    assert!(outcome.effects.iter().any(|e| matches!(e, waggle_core::Effect::AclChanged { .. })));
    let updated = r.acl().token("dev").unwrap();
    assert_eq!(updated.create_index, created);
    assert!(updated.modify_index > created && r.acl().index() > index_before);
    // Expiry removes tokens and ignores unknown ones.
    ok(&mut r, Command::AclExpireTokens { accessors: vec!["dev".into(), "unknown".into()] });
    assert!(r.acl().token("dev").is_none() && r.acl().token_by_secret("secret-dev").is_none());
}

#[test]
fn an_exact_rule_on_a_prefix_does_not_cover_the_keys_below_it() {
    let mut r = setup();
    let exact = policy("exact", &[(Resource::Key, "d/", false, Level::Write)]);
    ok(&mut r, as_token("root", Command::AclSetPolicy { policy: exact }));
    ok(&mut r, as_token("root", Command::AclSetToken { token: token("t-exact", policies(&["exact"]), vec![]) }));
    ok(&mut r, as_token("t-exact", put("d/")));
    refused(&mut r, as_token("t-exact", put("d/1")), denied);
    let delete = Txn { success: vec![KvOp::Delete { key: "d/".into(), prefix: true }], ..Default::default() };
    refused(&mut r, as_token("t-exact", Command::KvTxn { txn: delete }), denied);
}

#[test]
fn rule_precedence_table() {
    use Level::*;
    use Resource::*;
    let r = rules(&[
        (Key, "", true, Read),
        (Key, "app/", true, Write),
        (Key, "app/cfg/", true, Deny),
        (Key, "app/cfg/public", false, Read),
        (Key, "logs/", true, List),
    ]);
    for (name, level) in [
        ("x", Some(Read)),
        ("app/x", Some(Write)),
        ("app/cfg/secret", Some(Deny)),
        ("app/cfg/public", Some(Read)),
        ("app/cfg/public/2", Some(Deny)),
        ("logs/1", Some(List)),
    ] {
        assert_eq!(r.level(Key, name), level, "{name}");
    }
    assert!(List.grants(Access::List) && !List.grants(Access::Read));
    let mut merged = rules(&[(Service, "web", false, Write)]);
    merged.merge(&rules(&[(Service, "web", false, Read)]));
    assert_eq!(merged.level(Service, "web"), Some(Write), "the broader wins");
    merged.merge(&rules(&[(Service, "web", false, Deny)]));
    assert_eq!(merged.level(Service, "web"), Some(Deny), "deny wins");
    let mut unnamed = Rules::new();
    unnamed.add(Operator, Some("ignored"), false, Write);
    assert_eq!(unnamed.level(Operator, "anything"), Some(Write));
}
