//! Auth methods and binding rules in the state machine: what the apply arms accept and refuse,
//! what deleting a method takes with it, and the permission every command needs.

use waggle_core::{
    Applied, ApplyError, Command, Effect, Registry,
    acl::{
        AuthMethod, BindType, BindingRule, DefaultPolicy, GLOBAL_MANAGEMENT_ID, Grants, JwtConfig, ServiceIdentity,
        Token,
    },
};

fn method(name: &str) -> AuthMethod {
    AuthMethod {
        name: name.into(),
        method_type: "jwt".into(),
        display_name: String::new(),
        description: String::new(),
        max_token_ttl_ms: None,
        token_locality: "local".into(),
        config: JwtConfig { validation_pub_keys: vec!["pem".into()], ..JwtConfig::default() },
        create_index: 0,
        modify_index: 0,
    }
}

fn rule(id: &str, method: &str, bind_type: BindType, bind_name: &str) -> BindingRule {
    BindingRule {
        id: id.into(),
        description: String::new(),
        auth_method: method.into(),
        selector: String::new(),
        bind_type,
        bind_name: bind_name.into(),
        bind_vars: None,
        create_index: 0,
        modify_index: 0,
    }
}

fn token(accessor: &str, secret: &str, auth_method: Option<&str>) -> Token {
    Token {
        accessor: accessor.into(),
        secret: secret.into(),
        description: String::new(),
        grants: Grants {
            service_identities: vec![ServiceIdentity { service: "web".into(), datacenters: vec![] }],
            ..Grants::default()
        },
        roles: Vec::new(),
        local: true,
        expiration_ms: None,
        create_ms: 0,
        auth_method: auth_method.map(String::from),
        create_index: 0,
        modify_index: 0,
    }
}

fn apply(registry: &mut Registry, command: Command) -> Result<Applied, ApplyError> {
    registry.apply(&command).response
}

fn ok(registry: &mut Registry, command: Command) -> Applied {
    let shown = format!("{command:?}");
    apply(registry, command).unwrap_or_else(|e| panic!("{shown}: {e}"))
}

/// A registry with the method `ci`, two of its rules, a rule of `other`, and a token of each.
fn populated() -> Registry {
    let mut registry = Registry::new();
    for command in [
        Command::AclSetAuthMethod { method: method("ci") },
        Command::AclSetAuthMethod { method: method("other") },
        Command::AclSetBindingRule { rule: rule("r-1", "ci", BindType::Service, "${value.service}") },
        Command::AclSetBindingRule { rule: rule("r-2", "ci", BindType::Role, "deployers") },
        Command::AclSetBindingRule { rule: rule("r-3", "other", BindType::Node, "node-1") },
        Command::AclSetToken { token: token("acc-ci", "sec-ci", Some("ci")) },
        Command::AclSetToken { token: token("acc-other", "sec-other", Some("other")) },
        Command::AclSetToken { token: token("acc-plain", "sec-plain", None) },
    ] {
        ok(&mut registry, command);
    }
    registry
}

#[test]
fn methods_and_rules_are_stored_with_their_revisions() {
    let mut registry = Registry::new();
    let created = ok(&mut registry, Command::AclSetAuthMethod { method: method("ci") }).revision().get();
    let stored = registry.acl().auth_methods()["ci"].clone();
    assert_eq!((stored.create_index, stored.modify_index), (created, created));
    assert_eq!(registry.acl().index(), created);

    // Replacing keeps the create index.
    let changed = AuthMethod { description: "CI jobs".into(), ..method("ci") };
    let replaced = ok(&mut registry, Command::AclSetAuthMethod { method: changed }).revision().get();
    let stored = registry.acl().auth_methods()["ci"].clone();
    assert_eq!((stored.create_index, stored.modify_index, stored.description.as_str()), (created, replaced, "CI jobs"));

    let at = ok(&mut registry, Command::AclSetBindingRule { rule: rule("r-1", "ci", BindType::Service, "web") });
    let again = ok(&mut registry, Command::AclSetBindingRule { rule: rule("r-1", "ci", BindType::Service, "api") });
    let stored = registry.acl().binding_rules()["r-1"].clone();
    assert_eq!((stored.create_index, stored.modify_index), (at.revision().get(), again.revision().get()));
    assert_eq!(stored.bind_name, "api");
    assert_eq!(registry.acl().binding_rules_of("ci").count(), 1);
    assert_eq!(registry.acl().binding_rules_of("other").count(), 0);
}

#[test]
fn every_change_is_an_acl_change() {
    let mut registry = populated();
    for command in [
        Command::AclSetAuthMethod { method: method("third") },
        Command::AclSetBindingRule { rule: rule("r-9", "third", BindType::Policy, "readers") },
        Command::AclDeleteBindingRule { id: "r-9".into() },
        Command::AclDeleteAuthMethod { name: "third".into() },
    ] {
        let outcome = registry.apply(&command);
        let revision = outcome.response.as_ref().expect("applies").revision();
        assert_eq!(outcome.effects, [Effect::AclChanged { revision }], "{command:?}");
        assert_eq!(registry.acl().index(), revision.get());
    }
}

#[test]
fn bad_methods_are_refused_and_change_nothing() {
    let mut registry = populated();
    let before = registry.clone();
    for bad in [
        method(""),
        AuthMethod { method_type: "kubernetes".into(), ..method("k8s") },
        AuthMethod { method_type: String::new(), ..method("none") },
        AuthMethod { token_locality: "regional".into(), ..method("ci") },
        AuthMethod { token_locality: String::new(), ..method("ci") },
        AuthMethod { config: JwtConfig::default(), ..method("ci") },
    ] {
        let err = apply(&mut registry, Command::AclSetAuthMethod { method: bad.clone() }).expect_err("refused");
        assert!(matches!(err, ApplyError::Invalid(_)), "{bad:?}: {err}");
        assert_eq!(registry, before);
    }
}

#[test]
fn bad_binding_rules_are_refused_and_change_nothing() {
    let mut registry = populated();
    let before = registry.clone();
    let templated = |name: &str, vars: Option<&str>| BindingRule {
        bind_vars: vars.map(String::from),
        ..rule("r-t", "ci", BindType::TemplatedPolicy, name)
    };
    for (bad, not_found) in [
        (rule("", "ci", BindType::Service, "web"), false),
        (rule("r-9", "ci", BindType::Service, ""), false),
        (rule("r-9", "missing", BindType::Service, "web"), true),
        (rule("r-9", "", BindType::Service, "web"), true),
        // A rule cannot move to another method.
        (rule("r-1", "other", BindType::Service, "web"), false),
        (templated("builtin/unknown", Some("x")), false),
        (templated("builtin/service", None), false),
        (templated("builtin/node", None), false),
        (BindingRule { bind_vars: Some("x".into()), ..rule("r-9", "ci", BindType::Service, "web") }, false),
    ] {
        let err = apply(&mut registry, Command::AclSetBindingRule { rule: bad.clone() }).expect_err("refused");
        assert_eq!(matches!(err, ApplyError::AclNotFound(_)), not_found, "{bad:?}: {err}");
        assert!(not_found || matches!(err, ApplyError::Invalid(_)), "{bad:?}: {err}");
        assert_eq!(registry, before);
    }
    // The templated policies that take no variable, or get one.
    ok(&mut registry, Command::AclSetBindingRule { rule: templated("builtin/dns", None) });
    ok(&mut registry, Command::AclSetBindingRule { rule: templated("builtin/service", Some("${value.service}")) });
    ok(&mut registry, Command::AclSetBindingRule { rule: templated("builtin/node", Some("n")) });
}

#[test]
fn deleting_a_method_deletes_its_rules_and_tokens_only() {
    let mut registry = populated();
    ok(&mut registry, Command::AclDeleteAuthMethod { name: "ci".into() });
    let acl = registry.acl();
    assert_eq!(acl.auth_methods().keys().collect::<Vec<_>>(), ["other"]);
    assert_eq!(acl.binding_rules().keys().collect::<Vec<_>>(), ["r-3"]);
    assert_eq!(acl.tokens().keys().collect::<Vec<_>>(), ["acc-other", "acc-plain"]);
    assert!(acl.token_by_secret("sec-ci").is_none(), "its secret is gone too");
    assert!(acl.token_by_secret("sec-other").is_some());

    // Deleting what does not exist is refused and changes nothing.
    let before = registry.clone();
    let err = apply(&mut registry, Command::AclDeleteAuthMethod { name: "ci".into() }).expect_err("gone");
    assert!(matches!(err, ApplyError::AclNotFound(_)), "{err}");
    let err = apply(&mut registry, Command::AclDeleteBindingRule { id: "r-1".into() }).expect_err("gone");
    assert!(matches!(err, ApplyError::AclNotFound(_)), "{err}");
    assert_eq!(registry, before);

    // A rule deleted alone leaves its method and tokens.
    ok(&mut registry, Command::AclDeleteBindingRule { id: "r-3".into() });
    assert!(registry.acl().binding_rules().is_empty());
    assert_eq!(registry.acl().tokens().len(), 2);
}

#[test]
fn a_login_token_needs_its_method() {
    // A login racing the deletion of its method creates nothing.
    let mut registry = populated();
    let before = registry.clone();
    let err = apply(&mut registry, Command::AclSetToken { token: token("acc-2", "sec-2", Some("gone")) })
        .expect_err("no such method");
    assert!(matches!(err, ApplyError::AclNotFound(_)), "{err}");
    assert_eq!(registry, before);
    ok(&mut registry, Command::AclSetToken { token: token("acc-2", "sec-2", Some("ci")) });
    assert_eq!(registry.acl().token("acc-2").and_then(|t| t.auth_method.as_deref()), Some("ci"));
}

#[test]
fn managing_methods_and_rules_needs_acl_write() {
    let mut registry = populated();
    let management = Token {
        grants: Grants { policies: vec![GLOBAL_MANAGEMENT_ID.into()], ..Grants::default() },
        ..token("root", "root-secret", None)
    };
    ok(&mut registry, Command::AclSetToken { token: management });
    let as_token = |accessor: &str, command: Command| Command::Authorized {
        accessor: accessor.into(),
        default: DefaultPolicy::Allow,
        command: Box::new(command),
    };
    let commands = [
        Command::AclSetAuthMethod { method: method("third") },
        Command::AclSetBindingRule { rule: rule("r-9", "third", BindType::Service, "web") },
        Command::AclDeleteBindingRule { id: "r-9".into() },
        Command::AclDeleteAuthMethod { name: "third".into() },
    ];
    for command in &commands {
        // A token with a service identity only (and the default policy allow, which never
        // grants ACL management): refused.
        let before = registry.clone();
        let err = apply(&mut registry, as_token("acc-plain", command.clone())).expect_err("no acl:write");
        assert!(matches!(err, ApplyError::PermissionDenied(_)), "{err}");
        assert!(err.to_string().contains("acl:write"), "{err}");
        assert_eq!(registry, before);
        // A token the method issued is no better.
        assert!(apply(&mut registry, as_token("acc-ci", command.clone())).is_err());
        // The management token may.
        ok(&mut registry, as_token("root", command.clone()));
    }
    // Policy checks of the node: `authorize` says the same.
    let authorizer = registry.acl().authorizer("acc-plain", DefaultPolicy::Allow).expect("token");
    for command in &commands {
        assert!(waggle_core::authorize(&authorizer, command, |_| String::new()).is_err(), "{command:?}");
    }
}
