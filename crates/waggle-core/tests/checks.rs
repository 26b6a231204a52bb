//! Health checks in the state machine: registration with checks, aggregation, transitions
//! (only real changes consume a revision), check ids unique per node, and the codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waggle_core::{
    ApplyError, CheckKind, CheckSpec, CheckUpdate, Command, Effect, HealthStatus, InstanceId, InstanceSpec, KvOp,
    Registry, ServiceName, SessionId, codec,
};

fn ttl(id: &str) -> CheckSpec {
    CheckSpec::new(id, "ttl", CheckKind::Ttl { ttl_ms: 10_000 })
}

fn spec(id: &str) -> InstanceSpec {
    InstanceSpec::new("web", "10.0.0.1", 8080).unwrap().with_id(id).unwrap()
}

fn update(instance: &str, check: &str, status: HealthStatus, output: &str) -> CheckUpdate {
    CheckUpdate {
        service: ServiceName::new("web").unwrap(),
        instance: InstanceId::new(instance).unwrap(),
        check: check.into(),
        status,
        output: output.into(),
    }
}

fn status(registry: &Registry, id: &str) -> HealthStatus {
    registry.service("web").unwrap().get(&InstanceId::new(id).unwrap()).unwrap().spec.status
}

fn apply(registry: &mut Registry, command: Command) -> Result<u64, ApplyError> {
    let outcome = registry.apply(&command);
    let bytes = codec::encode_commands(std::slice::from_ref(&command));
    assert_eq!(codec::decode_commands(&bytes).unwrap(), vec![command], "the command survives the codec");
    outcome.response.map(|a| a.revision().get())
}

#[test]
fn an_instance_is_as_bad_as_its_worst_check() {
    let mut r = Registry::new();
    let passing_first = CheckSpec { initial: HealthStatus::Passing, ..ttl("b") };
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![ttl("a"), passing_first] }).unwrap();
    assert_eq!(status(&r, "w1"), HealthStatus::Critical, "Consul's checks start critical");
    assert_eq!(r.check_owner("a").map(|(_, i)| i.as_str()), Some("w1"));

    let rev = apply(&mut r, Command::UpdateChecks { updates: vec![update("w1", "a", HealthStatus::Warning, "slow")] });
    assert_eq!(rev, Ok(3));
    assert_eq!(status(&r, "w1"), HealthStatus::Warning);
    let effects = r.apply(&Command::UpdateChecks { updates: vec![update("w1", "a", HealthStatus::Passing, "ok")] });
    assert!(matches!(&effects.effects[..], [Effect::InstanceUpserted { created: false, instance }]
        if instance.spec.status == HealthStatus::Passing && instance.checks[0].output == "ok"));

    // Repeating a state, or naming a check or instance that is gone, changes nothing.
    let before = r.clone();
    let same = apply(
        &mut r,
        Command::UpdateChecks {
            updates: vec![
                update("w1", "a", HealthStatus::Passing, "ok"),
                update("gone", "a", HealthStatus::Critical, ""),
            ],
        },
    );
    assert_eq!(same, Ok(4));
    assert_eq!(r, before, "no revision consumed");

    // Maintenance is a check: critical while present.
    let maintenance =
        CheckSpec { notes: "upgrade".into(), ..CheckSpec::new("_service_maintenance:w1", "m", CheckKind::Maintenance) };
    let (web, w1) = (ServiceName::new("web").unwrap(), InstanceId::new("w1").unwrap());
    apply(&mut r, Command::PutCheck { service: web.clone(), id: w1.clone(), check: maintenance }).unwrap();
    assert_eq!(status(&r, "w1"), HealthStatus::Critical);
    apply(
        &mut r,
        Command::RemoveCheck { service: web.clone(), id: w1.clone(), check: "_service_maintenance:w1".into() },
    )
    .unwrap();
    assert_eq!(status(&r, "w1"), HealthStatus::Passing);
    // Removing the last check leaves the instance passing (it had no other).
    let m2 = CheckSpec::new("m2", "m", CheckKind::Maintenance);
    apply(&mut r, Command::AgentRegister { spec: spec("w9"), checks: vec![] }).unwrap();
    let w9 = InstanceId::new("w9").unwrap();
    apply(&mut r, Command::PutCheck { service: web.clone(), id: w9.clone(), check: m2 }).unwrap();
    assert_eq!(status(&r, "w9"), HealthStatus::Critical);
    apply(&mut r, Command::RemoveCheck { service: web.clone(), id: w9, check: "m2".into() }).unwrap();
    assert_eq!(status(&r, "w9"), HealthStatus::Passing);
    // SDK instances have no checks: their session is their liveness.
    apply(
        &mut r,
        Command::CreateSession {
            session: SessionId::new(5),
            ttl: waggle_core::Ttl::DEFAULT,
            options: Default::default(),
        },
    )
    .unwrap();
    apply(&mut r, Command::Register { session: SessionId::new(5), spec: spec("sdk") }).unwrap();
    let refused =
        apply(&mut r, Command::PutCheck { service: web.clone(), id: InstanceId::new("sdk").unwrap(), check: ttl("s") });
    assert!(matches!(refused, Err(ApplyError::Invalid(e)) if e.field == "check"));
    assert_eq!(
        apply(&mut r, Command::RemoveCheck { service: web, id: w1, check: "nope".into() }),
        Err(ApplyError::CheckNotFound("nope".into()))
    );

    // The checks survive a snapshot.
    let restored = codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap();
    assert_eq!(restored, r);
}

#[test]
fn re_registration_keeps_unchanged_checks_and_ids_stay_unique() {
    let mut r = Registry::new();
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![ttl("a")] }).unwrap();
    apply(&mut r, Command::UpdateChecks { updates: vec![update("w1", "a", HealthStatus::Passing, "")] }).unwrap();
    let rev = r.revision();
    // The same registration again: idempotent, the check keeps its status.
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![ttl("a")] }).unwrap();
    assert_eq!(r.revision(), rev);
    assert_eq!(status(&r, "w1"), HealthStatus::Passing);
    // A changed definition starts over.
    let longer = CheckSpec { kind: CheckKind::Ttl { ttl_ms: 20_000 }, ..ttl("a") };
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![longer] }).unwrap();
    assert_eq!(status(&r, "w1"), HealthStatus::Critical);

    // Another instance cannot take check id "a"; duplicates and bad definitions are refused.
    assert_eq!(
        apply(&mut r, Command::AgentRegister { spec: spec("w2"), checks: vec![ttl("a")] }),
        Err(ApplyError::CheckIdTaken("a".into()))
    );
    let twice = apply(&mut r, Command::AgentRegister { spec: spec("w2"), checks: vec![ttl("b"), ttl("b")] });
    assert!(matches!(twice, Err(ApplyError::Invalid(e)) if e.field == "check.id"));
    let bad = CheckSpec::new("c", "", CheckKind::Tcp { address: "nowhere".into() });
    assert!(matches!(
        apply(&mut r, Command::AgentRegister { spec: spec("w2"), checks: vec![bad] }),
        Err(ApplyError::Invalid(_))
    ));

    // Deregistering frees the id; registering without checks drops them.
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![] }).unwrap();
    assert_eq!(status(&r, "w1"), HealthStatus::Passing);
    assert_eq!(r.check_owner("a"), None);
    apply(&mut r, Command::AgentRegister { spec: spec("w2"), checks: vec![ttl("a")] }).unwrap();
    apply(
        &mut r,
        Command::Deregister { service: ServiceName::new("web").unwrap(), id: InstanceId::new("w2").unwrap() },
    )
    .unwrap();
    assert_eq!(r.check_owner("a"), None);
    assert!(r.sessions().contains_key(&SessionId::AGENT));
}

#[test]
fn a_session_that_depends_on_a_check_ends_when_it_fails_or_goes() {
    use waggle_core::{KeyBehavior, SessionOptions, Ttl, Txn};
    let mut r = Registry::new();
    let passing = |id: &str| CheckSpec { initial: HealthStatus::Passing, ..ttl(id) };
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks: vec![passing("a"), passing("b"), ttl("c")] })
        .unwrap();
    let open = |r: &mut Registry, id: u64, checks: &[&str]| {
        let options = SessionOptions {
            behavior: KeyBehavior::Release,
            checks: checks.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        };
        apply(r, Command::CreateSession { session: SessionId::new(id), ttl: Ttl::DEFAULT, options })
    };
    // A check that does not exist, or is critical, cannot be depended on.
    assert!(matches!(open(&mut r, 9, &["nope"]), Err(ApplyError::Invalid(e)) if e.field == "checks"));
    assert!(matches!(open(&mut r, 9, &["c"]), Err(ApplyError::Invalid(e)) if e.field == "checks"));
    open(&mut r, 1, &["a"]).unwrap();
    open(&mut r, 2, &["b"]).unwrap();
    open(&mut r, 3, &["a", "b"]).unwrap();
    let bound = KvOp::Acquire { key: "leader".into(), value: b"1".to_vec(), flags: 0, session: SessionId::new(1) };
    apply(&mut r, Command::KvTxn { txn: Txn { success: vec![bound], ..Default::default() } }).unwrap();
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r, "the snapshot keeps the links");

    // Warning is not critical: nothing ends. Critical ends every session depending on it.
    apply(&mut r, Command::UpdateChecks { updates: vec![update("w1", "a", HealthStatus::Warning, "")] }).unwrap();
    assert_eq!(r.sessions().len(), 4, "the agent's and three");
    let outcome = r.apply(&Command::UpdateChecks { updates: vec![update("w1", "a", HealthStatus::Critical, "")] });
    let closed: Vec<u64> = outcome
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::SessionClosed { session } => Some(session.get()),
            _ => None,
        })
        .collect();
    assert_eq!(closed, [1, 3]);
    assert_eq!(r.kv()["leader"].session, None, "its lock released with it");
    assert_eq!(r.kv()["leader"].modify_revision, r.revision(), "in the same revision");
    // A check that goes away ends its sessions too.
    apply(
        &mut r,
        Command::RemoveCheck {
            service: ServiceName::new("web").unwrap(),
            id: InstanceId::new("w1").unwrap(),
            check: "b".into(),
        },
    )
    .unwrap();
    assert_eq!(r.sessions().keys().copied().collect::<Vec<_>>(), [SessionId::AGENT]);
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
}

#[test]
fn every_check_kind_survives_the_codec() {
    let kinds = [
        CheckKind::Ttl { ttl_ms: 1_000 },
        CheckKind::Http {
            url: "https://127.0.0.1:1/h".into(),
            method: "POST".into(),
            headers: vec![("X-A".into(), "1".into()), ("X-A".into(), "2".into())],
            body: "{}".into(),
            tls_skip_verify: true,
        },
        CheckKind::Tcp { address: "127.0.0.1:1".into() },
        CheckKind::Grpc { address: "127.0.0.1:1".into(), service: "svc".into(), tls: true },
        CheckKind::Maintenance,
        CheckKind::Static,
    ];
    let checks: Vec<CheckSpec> = kinds
        .into_iter()
        .enumerate()
        .map(|(n, kind)| CheckSpec {
            interval_ms: 1_000,
            timeout_ms: 500,
            success_before_passing: 2,
            failures_before_critical: 3,
            deregister_after_ms: 60_000,
            initial: HealthStatus::Warning,
            ..CheckSpec::new(format!("c{n}"), "n", kind)
        })
        .collect();
    let mut r = Registry::new();
    apply(&mut r, Command::AgentRegister { spec: spec("w1"), checks }).unwrap();
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
}
