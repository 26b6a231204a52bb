//! The registry state machine as data: scripted command sequences are applied to a fresh
//! [`Registry`] and the responses, effects and resulting state are compared with expected values.

use std::{collections::BTreeSet, sync::Arc};

use waggle_core::{
    Applied, ApplyError, Command, Effect, HealthStatus, Instance, InstanceId, InstanceSpec, Outcome, Registry,
    Response, Revision, ServiceName, SessionId, Ttl,
};

// ---------------------------------------------------------------------------------------------
// Helpers: building commands and running scripts.
// ---------------------------------------------------------------------------------------------

/// Applies `commands` to `Registry::new()` and returns one outcome per command.
fn run(commands: &[Command]) -> Vec<Outcome> {
    run_with_state(commands).1
}

/// Like [`run`], but also returns the final registry.
fn run_with_state(commands: &[Command]) -> (Registry, Vec<Outcome>) {
    let mut registry = Registry::new();
    let outcomes = commands.iter().map(|c| apply_cmd(&mut registry, c)).collect();
    (registry, outcomes)
}

/// Applies `commands` one by one to `Registry::new()` and returns, for every step, the outcome
/// together with the registry before and after it.
fn trace(commands: &[Command]) -> Vec<(Registry, Outcome, Registry)> {
    let mut registry = Registry::new();
    commands
        .iter()
        .map(|c| {
            let before = registry.clone();
            let outcome = apply_cmd(&mut registry, c);
            (before, outcome, registry.clone())
        })
        .collect()
}

fn rev(n: u64) -> Revision {
    Revision::new(n)
}

fn sid(n: u64) -> SessionId {
    SessionId::new(n)
}

fn ttl(ms: u64) -> Ttl {
    Ttl::from_millis(ms).expect("valid ttl")
}

/// A CreateSession whose id is a placeholder (0): `apply_cmd` gives it the id of the revision
/// it will create, which keeps expected ids readable in the tables below.
fn create() -> Command {
    create_with(Ttl::DEFAULT.as_millis())
}

fn create_with(ms: u64) -> Command {
    Command::CreateSession { session: sid(0), ttl: ttl(ms), options: Default::default() }
}

/// Applies a command, first resolving a placeholder session id (see [`create`]).
fn apply_cmd(registry: &mut Registry, command: &Command) -> Outcome {
    match command {
        Command::CreateSession { session, ttl, .. } if session.get() == 0 => registry.apply(&Command::CreateSession {
            session: sid(registry.revision().get() + 1),
            ttl: *ttl,
            options: Default::default(),
        }),
        other => registry.apply(other),
    }
}

fn revoke(session: u64) -> Command {
    Command::RevokeSession { session: sid(session) }
}

fn expire(sessions: &[u64]) -> Command {
    Command::ExpireSessions { sessions: sessions.iter().copied().map(sid).collect() }
}

fn register(session: u64, spec: &InstanceSpec) -> Command {
    Command::Register { session: sid(session), spec: spec.clone() }
}

fn deregister(service: &str, id: &str) -> Command {
    Command::Deregister {
        service: ServiceName::new(service).expect("valid service"),
        id: InstanceId::new(id).expect("valid id"),
    }
}

/// A valid spec `service` / `id` at 10.0.0.1:8080.
fn spec(service: &str, id: &str) -> InstanceSpec {
    InstanceSpec::new(service, "10.0.0.1", 8080).expect("valid spec").with_id(id).expect("valid id")
}

fn instance(spec: &InstanceSpec, session: u64, create_revision: u64, modify_revision: u64) -> Arc<Instance> {
    Arc::new(Instance {
        spec: spec.clone(),
        session: sid(session),
        create_revision: rev(create_revision),
        modify_revision: rev(modify_revision),
        checks: Vec::new(),
    })
}

fn ok(revision: u64) -> Response {
    Ok(Applied::Done { revision: rev(revision) })
}

fn opened(revision: u64) -> Response {
    Ok(Applied::SessionCreated { revision: rev(revision), session: sid(revision) })
}

fn key(service: &str, id: &str) -> (ServiceName, InstanceId) {
    (ServiceName::new(service).expect("valid service"), InstanceId::new(id).expect("valid id"))
}

/// The `(service, id)` keys of every instance in the registry.
fn instance_keys(registry: &Registry) -> BTreeSet<(ServiceName, InstanceId)> {
    registry
        .services()
        .iter()
        .flat_map(|(service, instances)| instances.keys().map(move |id| (service.clone(), id.clone())))
        .collect()
}

fn service_names(registry: &Registry) -> Vec<&str> {
    registry.services().keys().map(ServiceName::as_str).collect()
}

/// The expected answer to one command, for table-driven tests.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Applied; the registry is at this revision afterwards.
    Ok(u64),
    /// A session was created with this id (= revision).
    Opened(u64),
    /// Refused: unknown session.
    SessionNotFound(u64),
    /// Refused: unknown instance.
    InstanceNotFound(&'static str, &'static str),
    /// Refused: the named field is invalid.
    Invalid(&'static str),
}

fn check(step: usize, response: &Response, expect: Expect) {
    match (expect, response) {
        (Expect::Ok(r), actual) => assert_eq!(actual, &ok(r), "step {step}"),
        (Expect::Opened(r), actual) => assert_eq!(actual, &opened(r), "step {step}"),
        (Expect::SessionNotFound(s), actual) => {
            assert_eq!(actual, &Err(ApplyError::SessionNotFound(sid(s))), "step {step}");
        }
        (Expect::InstanceNotFound(service, id), actual) => {
            let (service, id) = key(service, id);
            assert_eq!(actual, &Err(ApplyError::InstanceNotFound { service, id }), "step {step}");
        }
        (Expect::Invalid(field), Err(ApplyError::Invalid(e))) => {
            assert_eq!(e.field, field, "step {step}: {e}")
        }
        (Expect::Invalid(field), actual) => {
            panic!("step {step}: expected invalid {field}, got {actual:?}")
        }
    }
}

/// Runs a table of `(command, expected response)` rows and checks, for every row, the response
/// and the revision accounting: a refused command leaves the state untouched and emits nothing;
/// a command that changes state moves the revision forward by exactly one; a command that
/// changes nothing keeps the revision and emits nothing.
fn run_table(table: &[(Command, Expect)]) -> Registry {
    let commands: Vec<Command> = table.iter().map(|(c, _)| c.clone()).collect();
    let steps = trace(&commands);
    for (i, ((before, outcome, after), (_, expect))) in steps.iter().zip(table).enumerate() {
        check(i, &outcome.response, *expect);
        assert!(after.revision().get() >= 1, "step {i}: revision 0");
        match &outcome.response {
            Err(_) => {
                assert_eq!(after, before, "step {i}: a refused command changed the state");
                assert!(outcome.effects.is_empty(), "step {i}: a refused command emitted effects");
            }
            Ok(applied) => {
                assert_eq!(applied.revision(), after.revision(), "step {i}: response revision");
                if after == before {
                    assert_eq!(after.revision(), before.revision(), "step {i}");
                    assert!(outcome.effects.is_empty(), "step {i}: a no-op emitted effects");
                } else {
                    assert_eq!(after.revision().get(), before.revision().get() + 1, "step {i}: not one revision");
                    assert!(!outcome.effects.is_empty(), "step {i}: a state change emitted no effect");
                }
            }
        }
    }
    steps.into_iter().last().map_or_else(Registry::new, |(_, _, after)| after)
}

// ---------------------------------------------------------------------------------------------
// Revisions.
// ---------------------------------------------------------------------------------------------

#[test]
fn revision_starts_at_one_and_is_never_zero() {
    assert_eq!(Registry::new().revision(), Revision::INITIAL);
    assert_eq!(Registry::new().revision().get(), 1);
    assert_eq!(Registry::default(), Registry::new());
    assert_eq!(Revision::default(), Revision::INITIAL);
    assert_eq!(Revision::new(0).get(), 1, "0 maps to the initial revision");
    assert_eq!(Revision::new(1), Revision::INITIAL);
    assert_eq!(Revision::new(7).get(), 7);

    // Every revision reported by a script, in responses and effects, is at least 1.
    let script = [create(), register(2, &spec("web", "a")), deregister("web", "a"), revoke(2), expire(&[2])];
    for outcome in run(&script) {
        if let Ok(applied) = &outcome.response {
            assert!(applied.revision().get() >= 1);
        }
        for effect in &outcome.effects {
            if let Effect::InstanceRemoved { revision, instance } = effect {
                assert!(revision.get() >= 1);
                assert!(instance.create_revision.get() >= 1 && instance.modify_revision.get() >= 1);
            }
        }
    }
}

#[test]
fn state_changes_consume_one_revision_and_refusals_none() {
    let web_a = spec("web", "a");
    let api_b = spec("api", "b");
    let registry = run_table(&[
        (create(), Expect::Opened(2)),
        (register(2, &web_a), Expect::Ok(3)),
        (register(2, &web_a), Expect::Ok(3)), // idempotent
        (register(99, &spec("web", "b")), Expect::SessionNotFound(99)),
        (register(2, &web_a.clone().with_weight(0)), Expect::Invalid("weight")),
        (deregister("web", "nope"), Expect::InstanceNotFound("web", "nope")),
        (deregister("nope", "a"), Expect::InstanceNotFound("nope", "a")),
        (revoke(99), Expect::SessionNotFound(99)),
        (expire(&[99, 100]), Expect::Ok(3)),
        (expire(&[]), Expect::Ok(3)),
        (create_with(1_000), Expect::Opened(4)),
        (register(4, &api_b), Expect::Ok(5)),
        (register(4, &api_b.clone().with_tag("blue")), Expect::Ok(6)),
        (deregister("api", "b"), Expect::Ok(7)),
        (deregister("api", "b"), Expect::InstanceNotFound("api", "b")),
        (expire(&[2, 4, 77]), Expect::Ok(8)),
        (revoke(2), Expect::SessionNotFound(2)),
        (expire(&[2, 4]), Expect::Ok(8)),
        (create(), Expect::Opened(9)),
        (revoke(9), Expect::Ok(10)),
    ]);
    assert_eq!(registry.revision(), rev(10));
    assert!(registry.sessions().is_empty());
    assert!(registry.services().is_empty());
}

#[test]
fn applying_is_deterministic() {
    let script = [
        create(),
        create_with(2_000),
        register(2, &spec("web", "a")),
        register(3, &spec("web", "b").with_tag("canary")),
        register(3, &spec("web", "a")),
        deregister("web", "b"),
        expire(&[3, 2]),
    ];
    let (first_state, first) = run_with_state(&script);
    let (second_state, second) = run_with_state(&script);
    assert_eq!(first, second);
    assert_eq!(first_state, second_state);
}

// ---------------------------------------------------------------------------------------------
// Sessions.
// ---------------------------------------------------------------------------------------------

#[test]
fn create_session_uses_the_new_revision_as_id() {
    let (registry, outcomes) = run_with_state(&[create_with(1_000), create(), create_with(86_400_000)]);
    let expected = [(2, ttl(1_000)), (3, Ttl::DEFAULT), (4, ttl(86_400_000))];
    assert_eq!(outcomes.len(), expected.len());
    for (outcome, (id, ttl)) in outcomes.iter().zip(expected) {
        assert_eq!(outcome.response, opened(id));
        assert_eq!(
            outcome.effects,
            vec![Effect::SessionOpened {
                session: sid(id),
                ttl,
                options: Default::default(),
                revision: Revision::new(id)
            }]
        );
        let session = registry.sessions().get(&sid(id)).expect("session recorded");
        assert_eq!(session.id, sid(id));
        assert_eq!(session.ttl, ttl);
        assert_eq!(session.create_revision, rev(id));
        assert!(session.instances.is_empty());
    }
    assert_eq!(registry.revision(), rev(4));
    assert_eq!(registry.sessions().keys().copied().collect::<Vec<_>>(), vec![sid(2), sid(3), sid(4)]);
}

#[test]
fn register_under_an_unknown_session_is_refused() {
    let web = spec("web", "a");
    // (script leading up to the registration, session used, revision the registry is at)
    let cases: &[(&str, Vec<Command>, u64, u64)] = &[
        ("empty registry", vec![], 2, 1),
        ("never created", vec![create()], 42, 2),
        ("session id 0", vec![create()], 0, 2),
        ("revoked", vec![create(), revoke(2)], 2, 3),
        ("expired", vec![create(), expire(&[2])], 2, 3),
        ("revoked after registering", vec![create(), register(2, &web), revoke(2)], 2, 4),
    ];
    for (name, script, session, revision) in cases {
        let mut script = script.clone();
        script.push(register(*session, &web));
        let (registry, outcomes) = run_with_state(&script);
        let last = outcomes.last().expect("one outcome per command");
        assert_eq!(last.response, Err(ApplyError::SessionNotFound(sid(*session))), "{name}");
        assert!(last.effects.is_empty(), "{name}");
        assert_eq!(registry.revision(), rev(*revision), "{name}");
        assert!(registry.services().is_empty(), "{name}");
    }
}

#[test]
fn revoke_removes_all_session_instances_in_one_revision() {
    let owned = [spec("web", "a"), spec("web", "b"), spec("api", "a")];
    let other = spec("web", "c");
    let mut script = vec![create(), create()];
    script.extend(owned.iter().map(|s| register(2, s)));
    script.push(register(3, &other));
    script.push(revoke(2));
    let (registry, outcomes) = run_with_state(&script);

    let last = outcomes.last().expect("outcome");
    assert_eq!(last.response, ok(8), "revoking consumes exactly one revision");
    let (closed, removed) = last.effects.split_last().expect("effects");
    assert_eq!(closed, &Effect::SessionClosed { session: sid(2) }, "SessionClosed comes last");
    assert_eq!(removed.len(), owned.len());
    let mut removed_keys = BTreeSet::new();
    for effect in removed {
        let Effect::InstanceRemoved { instance, revision } = effect else {
            panic!("expected InstanceRemoved, got {effect:?}");
        };
        assert_eq!(*revision, rev(8), "every removal carries the revocation's revision");
        assert_eq!(instance.session, sid(2));
        removed_keys.insert((instance.service().clone(), instance.id().clone()));
    }
    assert_eq!(removed_keys, BTreeSet::from([key("web", "a"), key("web", "b"), key("api", "a")]));

    assert_eq!(registry.revision(), rev(8));
    assert!(!registry.sessions().contains_key(&sid(2)));
    assert_eq!(instance_keys(&registry), BTreeSet::from([key("web", "c")]));
    assert_eq!(service_names(&registry), vec!["web"]);
    assert_eq!(registry.service("web").expect("web")[&InstanceId::new("c").expect("id")], instance(&other, 3, 7, 7));
}

#[test]
fn expiring_several_sessions_takes_one_revision() {
    let script = [
        create(),
        create(),
        create(),
        register(2, &spec("web", "a")),
        register(3, &spec("web", "b")),
        register(4, &spec("web", "c")),
        expire(&[3, 99, 2]),
    ];
    let (registry, outcomes) = run_with_state(&script);
    let last = outcomes.last().expect("outcome");
    assert_eq!(last.response, ok(8));
    assert_eq!(
        last.effects,
        vec![
            Effect::InstanceRemoved { instance: instance(&spec("web", "b"), 3, 6, 6), revision: rev(8) },
            Effect::SessionClosed { session: sid(3) },
            Effect::InstanceRemoved { instance: instance(&spec("web", "a"), 2, 5, 5), revision: rev(8) },
            Effect::SessionClosed { session: sid(2) },
        ]
    );
    assert_eq!(registry.sessions().keys().copied().collect::<Vec<_>>(), vec![sid(4)]);
    assert_eq!(instance_keys(&registry), BTreeSet::from([key("web", "c")]));
}

#[test]
fn expire_sessions_ignores_unknown_ids() {
    // (sessions to expire after creating sessions 2 and 3, expected revision, sessions closed)
    let cases: &[(&[u64], u64, &[u64])] = &[
        (&[], 3, &[]),
        (&[0], 3, &[]),
        (&[1], 3, &[]),
        (&[4, 99, u64::MAX], 3, &[]),
        (&[99, 3], 4, &[3]),
        (&[2, 2], 4, &[2]),
        (&[3, 2], 4, &[3, 2]),
    ];
    for (ids, revision, closed) in cases {
        let (registry, outcomes) = run_with_state(&[create(), create(), expire(ids)]);
        let last = outcomes.last().expect("outcome");
        assert_eq!(last.response, ok(*revision), "{ids:?}");
        let expected: Vec<Effect> = closed.iter().map(|&s| Effect::SessionClosed { session: sid(s) }).collect();
        assert_eq!(last.effects, expected, "{ids:?}");
        assert_eq!(registry.revision(), rev(*revision), "{ids:?}");
        let live: BTreeSet<u64> = registry.sessions().keys().map(|s| s.get()).collect();
        let expected_live: BTreeSet<u64> = [2, 3].into_iter().filter(|s| !closed.contains(s)).collect();
        assert_eq!(live, expected_live, "{ids:?}");
    }
}

#[test]
fn revoke_of_an_unknown_session_is_refused() {
    for (script, session) in
        [(vec![], 1), (vec![create()], 3), (vec![create(), revoke(2)], 2), (vec![create(), expire(&[2])], 2)]
    {
        let mut script = script;
        script.push(revoke(session));
        let steps = trace(&script);
        let (before, outcome, after) = steps.last().expect("step");
        assert_eq!(outcome.response, Err(ApplyError::SessionNotFound(sid(session))));
        assert!(outcome.effects.is_empty());
        assert_eq!(after, before);
    }
}

// ---------------------------------------------------------------------------------------------
// Registration.
// ---------------------------------------------------------------------------------------------

#[test]
fn register_creates_then_updates_keeping_create_revision() {
    let v1 = spec("web", "a");
    let v2 = v1.clone().with_weight(200).with_tag("canary");
    let v3 = v2.clone().with_status(HealthStatus::Warning);
    let (registry, outcomes) = run_with_state(&[create(), register(2, &v1), register(2, &v2), register(2, &v3)]);
    let expected: [(Response, Vec<Effect>); 4] = [
        (
            opened(2),
            vec![Effect::SessionOpened {
                session: sid(2),
                ttl: Ttl::DEFAULT,
                options: Default::default(),
                revision: Revision::new(2),
            }],
        ),
        (ok(3), vec![Effect::InstanceUpserted { instance: instance(&v1, 2, 3, 3), created: true }]),
        (ok(4), vec![Effect::InstanceUpserted { instance: instance(&v2, 2, 3, 4), created: false }]),
        (ok(5), vec![Effect::InstanceUpserted { instance: instance(&v3, 2, 3, 5), created: false }]),
    ];
    assert_eq!(outcomes.len(), expected.len());
    for (i, (outcome, (response, effects))) in outcomes.iter().zip(expected).enumerate() {
        assert_eq!(outcome.response, response, "step {i}");
        assert_eq!(outcome.effects, effects, "step {i}");
    }

    let web = registry.service("web").expect("web registered");
    assert_eq!(web.len(), 1);
    assert_eq!(web[&InstanceId::new("a").expect("id")], instance(&v3, 2, 3, 5));
    assert_eq!(registry.sessions()[&sid(2)].instances, BTreeSet::from([key("web", "a")]));
}

#[test]
fn same_id_in_another_service_is_another_instance() {
    let (registry, outcomes) =
        run_with_state(&[create(), register(2, &spec("web", "a")), register(2, &spec("api", "a"))]);
    for outcome in &outcomes[1..] {
        assert!(matches!(outcome.effects.as_slice(), [Effect::InstanceUpserted { created: true, .. }]), "{outcome:?}");
    }
    assert_eq!(service_names(&registry), vec!["api", "web"]);
    assert_eq!(registry.sessions()[&sid(2)].instances, BTreeSet::from([key("web", "a"), key("api", "a")]));
}

#[test]
fn default_instance_id_is_address_and_port() {
    let v4 = InstanceSpec::new("web", "10.0.0.1", 8080).expect("spec");
    let v6 = InstanceSpec::new("web", "fe80::1", 443).expect("spec");
    let host = InstanceSpec::new("web", "db-1.internal", 5432).expect("spec");
    let registry = run_table(&[
        (create(), Expect::Opened(2)),
        (register(2, &v4), Expect::Ok(3)),
        (register(2, &v6), Expect::Ok(4)),
        (register(2, &host), Expect::Ok(5)),
    ]);
    let ids: Vec<&str> = registry.service("web").expect("web").keys().map(InstanceId::as_str).collect();
    assert_eq!(ids, vec!["10.0.0.1:8080", "[fe80::1]:443", "db-1.internal:5432"]);
}

#[test]
fn identical_reregistration_is_idempotent() {
    let base = spec("web", "a").with_tag("blue").with_meta("version", "1").with_zone("eu-1").expect("zone");
    // (description, re-registered spec, whether it changes the instance)
    let cases: Vec<(&str, InstanceSpec, bool)> = vec![
        ("identical", base.clone(), false),
        (
            "rebuilt identically",
            {
                let s = InstanceSpec::new("web", "10.0.0.1", 8080).expect("spec").with_id("a").expect("id");
                s.with_tag("blue").with_meta("version", "1").with_zone("eu-1").expect("zone")
            },
            false,
        ),
        ("extra tag", base.clone().with_tag("green"), true),
        ("meta value", base.clone().with_meta("version", "2"), true),
        ("meta key", base.clone().with_meta("owner", "team"), true),
        ("weight", base.clone().with_weight(1), true),
        ("zone", base.clone().with_zone("eu-2").expect("zone"), true),
        ("status", base.clone().with_status(HealthStatus::Critical), true),
        (
            "port",
            {
                let mut s = base.clone();
                s.port = 9090;
                s
            },
            true,
        ),
        (
            "address",
            {
                let mut s = base.clone();
                s.address = "10.0.0.2".to_string();
                s
            },
            true,
        ),
    ];
    for (name, again, changes) in cases {
        let steps = trace(&[create(), register(2, &base), register(2, &again)]);
        let (before, outcome, after) = steps.last().expect("step");
        if changes {
            assert_eq!(outcome.response, ok(4), "{name}");
            assert_eq!(
                outcome.effects,
                vec![Effect::InstanceUpserted { instance: instance(&again, 2, 3, 4), created: false }],
                "{name}"
            );
        } else {
            assert_eq!(outcome.response, ok(3), "{name}: no revision consumed");
            assert!(outcome.effects.is_empty(), "{name}: no effects");
            assert_eq!(after, before, "{name}: state unchanged");
        }
    }
}

#[test]
fn registration_from_another_session_takes_the_instance_over() {
    let web_a = spec("web", "a");
    let script = [
        create(),            // session 2, rev 2
        create(),            // session 3, rev 3
        register(2, &web_a), // rev 4
        register(3, &web_a), // identical spec, other session: rev 5, takeover
        revoke(2),           // rev 6: the old owner's revoke no longer removes it
        revoke(3),           // rev 7: the new owner's revoke does
    ];
    let steps = trace(&script);
    let outcomes: Vec<&Outcome> = steps.iter().map(|(_, o, _)| o).collect();

    assert_eq!(outcomes[3].response, ok(5), "takeover is not idempotent");
    assert_eq!(
        outcomes[3].effects,
        vec![Effect::InstanceUpserted { instance: instance(&web_a, 3, 4, 5), created: false }]
    );
    let after_takeover = &steps[3].2;
    assert!(after_takeover.sessions()[&sid(2)].instances.is_empty());
    assert_eq!(after_takeover.sessions()[&sid(3)].instances, BTreeSet::from([key("web", "a")]));

    assert_eq!(outcomes[4].response, ok(6));
    assert_eq!(outcomes[4].effects, vec![Effect::SessionClosed { session: sid(2) }]);
    let after_old_revoke = &steps[4].2;
    assert_eq!(
        after_old_revoke.service("web").expect("still registered")[&InstanceId::new("a").expect("id")],
        instance(&web_a, 3, 4, 5)
    );

    assert_eq!(outcomes[5].response, ok(7));
    assert_eq!(
        outcomes[5].effects,
        vec![
            Effect::InstanceRemoved { instance: instance(&web_a, 3, 4, 5), revision: rev(7) },
            Effect::SessionClosed { session: sid(3) },
        ]
    );
    assert!(steps[5].2.services().is_empty());
}

#[test]
fn takeover_then_expiry_of_the_old_session_keeps_the_instance() {
    let web_a = spec("web", "a");
    let (registry, outcomes) = run_with_state(&[
        create(),
        create(),
        register(2, &web_a),
        register(3, &web_a.clone().with_weight(5)),
        expire(&[2]),
    ]);
    assert_eq!(outcomes[4].effects, vec![Effect::SessionClosed { session: sid(2) }]);
    assert_eq!(instance_keys(&registry), BTreeSet::from([key("web", "a")]));
    assert_eq!(registry.service("web").expect("web")[&InstanceId::new("a").expect("id")].session, sid(3));
}

// ---------------------------------------------------------------------------------------------
// Deregistration.
// ---------------------------------------------------------------------------------------------

#[test]
fn deregister_of_an_unknown_instance_is_refused() {
    let web_a = spec("web", "a");
    // (script before the deregistration, service, id)
    let cases: &[(Vec<Command>, &str, &str)] = &[
        (vec![], "web", "a"),
        (vec![create(), register(2, &web_a)], "web", "b"),
        (vec![create(), register(2, &web_a)], "api", "a"),
        (vec![create(), register(2, &web_a), deregister("web", "a")], "web", "a"),
        (vec![create(), register(2, &web_a), revoke(2)], "web", "a"),
        (vec![create(), register(2, &web_a), expire(&[2])], "web", "a"),
    ];
    for (script, service, id) in cases {
        let mut script = script.clone();
        script.push(deregister(service, id));
        let steps = trace(&script);
        let (before, outcome, after) = steps.last().expect("step");
        let (service, id) = key(service, id);
        assert_eq!(outcome.response, Err(ApplyError::InstanceNotFound { service, id }), "{script:?}");
        assert!(outcome.effects.is_empty());
        assert_eq!(after, before);
    }
}

#[test]
fn deregister_removes_the_instance_from_its_session() {
    let web_a = spec("web", "a");
    let web_b = spec("web", "b");
    let (registry, outcomes) =
        run_with_state(&[create(), register(2, &web_a), register(2, &web_b), deregister("web", "a"), revoke(2)]);
    assert_eq!(outcomes[3].response, ok(5));
    assert_eq!(
        outcomes[3].effects,
        vec![Effect::InstanceRemoved { instance: instance(&web_a, 2, 3, 3), revision: rev(5) }]
    );
    assert_eq!(outcomes[4].response, ok(6));
    assert_eq!(
        outcomes[4].effects,
        vec![
            Effect::InstanceRemoved { instance: instance(&web_b, 2, 4, 4), revision: rev(6) },
            Effect::SessionClosed { session: sid(2) },
        ],
        "the deregistered instance is not removed a second time"
    );
    assert!(registry.services().is_empty());
}

#[test]
fn a_service_disappears_with_its_last_instance() {
    // Each row: a command and the services listed after it.
    let table: &[(Command, &[&str])] = &[
        (create(), &[]),
        (create(), &[]),
        (register(2, &spec("web", "a")), &["web"]),
        (register(2, &spec("web", "b")), &["web"]),
        (register(3, &spec("api", "a")), &["api", "web"]),
        (deregister("web", "a"), &["api", "web"]),
        (deregister("web", "b"), &["api"]),
        (register(2, &spec("db", "a")), &["api", "db"]),
        (revoke(3), &["db"]),
        (register(2, &spec("db", "b")), &["db"]),
        (expire(&[2]), &[]),
    ];
    let commands: Vec<Command> = table.iter().map(|(c, _)| c.clone()).collect();
    for (i, ((_, outcome, after), (_, services))) in trace(&commands).iter().zip(table).enumerate() {
        assert!(outcome.response.is_ok(), "step {i}: {:?}", outcome.response);
        assert_eq!(service_names(after), services.to_vec(), "step {i}");
        for name in ["web", "api", "db"] {
            assert_eq!(after.service(name).is_some(), services.contains(&name), "step {i}: {name}");
            if let Some(instances) = after.service(name) {
                assert!(!instances.is_empty(), "step {i}: {name} listed without instances");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------------

#[test]
fn apply_validates_the_spec() {
    let base = spec("web", "a");
    let with = |f: fn(&mut InstanceSpec)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    // (description, spec, rejected field)
    let cases: Vec<(&str, InstanceSpec, &str)> = vec![
        ("weight 0", base.clone().with_weight(0), "weight"),
        ("weight above max", base.clone().with_weight(10_001), "weight"),
        ("weight u32::MAX", base.clone().with_weight(u32::MAX), "weight"),
        ("empty tag", base.clone().with_tag(""), "tags"),
        ("tag with control char", base.clone().with_tag("a\nb"), "tags"),
        ("tag too long", base.clone().with_tag("t".repeat(256)), "tags"),
        ("too many tags", (0..65).fold(base.clone(), |s, i| s.with_tag(format!("t{i}"))), "tags"),
        ("meta key with space", base.clone().with_meta("bad key", "v"), "meta"),
        ("empty meta key", base.clone().with_meta("", "v"), "meta"),
        ("meta value with newline", base.clone().with_meta("k", "a\nb"), "meta"),
        ("meta too large", base.clone().with_meta("a", "v".repeat(9000)).with_meta("b", "v".repeat(9000)), "meta"),
        ("too many meta pairs", (0..65).fold(base.clone(), |s, i| s.with_meta(format!("k{i}"), "")), "meta"),
        ("bad address", with(|s| s.address = "under_score".to_string()), "address"),
        ("empty address", with(|s| s.address = String::new()), "address"),
    ];
    for (name, bad, field) in cases {
        let steps = trace(&[create(), register(2, &base), register(2, &bad)]);
        let (before, outcome, after) = steps.last().expect("step");
        match &outcome.response {
            Err(ApplyError::Invalid(e)) => assert_eq!(e.field, field, "{name}: {e}"),
            other => panic!("{name}: expected Invalid({field}), got {other:?}"),
        }
        assert!(outcome.effects.is_empty(), "{name}");
        assert_eq!(after, before, "{name}: state unchanged");
        assert_eq!(after.revision(), rev(3), "{name}: no revision consumed");
    }

    // Boundary values are accepted.
    let registry = run_table(&[
        (create(), Expect::Opened(2)),
        (register(2, &base.clone().with_weight(1)), Expect::Ok(3)),
        (register(2, &base.clone().with_weight(10_000)), Expect::Ok(4)),
        (register(2, &base.clone().with_meta("k", "tab\tis fine")), Expect::Ok(5)),
        (register(2, &(0..64).fold(base.clone(), |s, i| s.with_tag(format!("t{i}")))), Expect::Ok(6)),
        (register(2, &base.clone().with_weight(0)), Expect::Invalid("weight")),
    ]);
    assert_eq!(registry.revision(), rev(6));
}

#[test]
fn session_ids_must_be_fresh_and_non_zero() {
    let mut registry = Registry::new();
    let make = |id: u64| Command::CreateSession { session: sid(id), ttl: Ttl::DEFAULT, options: Default::default() };
    assert_eq!(registry.apply(&make(0)).response, Err(ApplyError::SessionIdTaken(sid(0))));
    assert!(registry.apply(&make(0xfeed)).response.is_ok());
    let before = registry.clone();
    let outcome = registry.apply(&make(0xfeed));
    assert_eq!(outcome.response, Err(ApplyError::SessionIdTaken(sid(0xfeed))));
    assert!(outcome.effects.is_empty());
    assert_eq!(registry, before, "a refused create changes nothing");
}

#[test]
fn the_agent_session_owns_sessionless_instances_and_never_ends() {
    let agent = SessionId::AGENT;
    let (registry, outcomes) = run_with_state(&[
        // Created with the first registration that needs it.
        Command::Register { session: agent, spec: spec("web", "a") },
        // Nobody can take its id, revoke it or expire it.
        Command::CreateSession { session: agent, ttl: Ttl::DEFAULT, options: Default::default() },
        Command::RevokeSession { session: agent },
        Command::ExpireSessions { sessions: vec![agent] },
        Command::Register { session: agent, spec: spec("web", "b") },
    ]);
    assert!(outcomes[0].response.is_ok());
    assert!(outcomes[0].effects.iter().all(|e| !matches!(e, Effect::SessionOpened { .. })), "nothing tracks it");
    assert!(matches!(outcomes[1].response, Err(ApplyError::SessionIdTaken(_))));
    assert!(matches!(outcomes[2].response, Err(ApplyError::SessionNotFound(_))));
    assert!(outcomes[3].effects.is_empty(), "expiry ignores it");
    assert!(outcomes[4].response.is_ok());
    assert_eq!(registry.service("web").map(|s| s.len()), Some(2));
    // Its instances leave one by one, by deregistration.
    let (registry, _) = run_with_state(&[
        Command::Register { session: agent, spec: spec("web", "a") },
        Command::Deregister { service: ServiceName::new("web").unwrap(), id: InstanceId::new("a").unwrap() },
    ]);
    assert!(registry.service("web").is_none());
}
