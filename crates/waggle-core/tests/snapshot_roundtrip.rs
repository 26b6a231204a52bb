//! Property tests of the persisted encoding: random command histories survive a snapshot
//! round trip, a restored registry behaves exactly like the original, every command survives
//! the log encoding, and bytes from a newer format version or garbage are rejected.

use std::collections::BTreeMap;

use proptest::prelude::*;
use waggle_core::{
    Command, HealthStatus, InstanceId, InstanceSpec, KeyBehavior, Outcome, Registry, ServiceName, SessionId,
    SessionOptions, Ttl,
    codec::{self, FORMAT_VERSION},
};

// ---------------------------------------------------------------------------------------------
// Generators.
// ---------------------------------------------------------------------------------------------

const SERVICES: &[&str] = &["web", "api", "db", "cache-1"];
const IDS: &[&str] = &["a", "b", "c", "node-1", "10.0.0.1:80"];
const ADDRESSES: &[&str] = &["10.0.0.1", "10.0.0.2", "::1", "fe80::1", "db-1.internal", "localhost"];
const TAGS: &[&str] = &["blue", "green", "canary", "v2", "with space", "ünïcödé"];
const META_KEYS: &[&str] = &["version", "region", "owner", "x.y_z-1"];
const ZONES: &[&str] = &["eu-west-1a", "us_east.2", "Z"];

fn pick(items: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(items)
}

fn arb_status() -> impl Strategy<Value = HealthStatus> {
    prop_oneof![Just(HealthStatus::Passing), Just(HealthStatus::Warning), Just(HealthStatus::Critical)]
}

fn arb_ttl() -> impl Strategy<Value = Ttl> {
    prop_oneof![Just(1_000u64), Just(10_000), Just(86_400_000), 1_000u64..=86_400_000]
        .prop_map(|ms| Ttl::from_millis(ms).expect("ttl in range"))
}

/// A valid instance spec with fields drawn from small sets, so that generated histories hit
/// the same instances again (updates, idempotent re-registrations, takeovers).
fn arb_spec() -> impl Strategy<Value = InstanceSpec> {
    let port = prop_oneof![Just(80u32), Just(443), Just(8080), Just(1), Just(65_535), 1u32..=65_535];
    let tags = prop::collection::vec(pick(TAGS), 0..4);
    let meta = prop::collection::btree_map(pick(META_KEYS), "[a-z0-9 \t]{0,8}", 0..3);
    let weight = prop_oneof![Just(1u32), Just(100), Just(10_000), 1u32..=10_000];
    (
        (pick(SERVICES), prop::option::of(pick(IDS)), pick(ADDRESSES), port),
        (tags, meta, weight, prop::option::of(pick(ZONES)), arb_status()),
    )
        .prop_map(|((service, id, address, port), (tags, meta, weight, zone, status))| {
            let mut spec = InstanceSpec::new(service, address, port).expect("valid service, address and port");
            if let Some(id) = id {
                spec = spec.with_id(id).expect("valid id");
            }
            for tag in tags {
                spec = spec.with_tag(tag);
            }
            for (k, v) in meta {
                spec = spec.with_meta(k, v);
            }
            if let Some(zone) = zone {
                spec = spec.with_zone(zone).expect("valid zone");
            }
            let spec = spec.with_weight(weight).with_status(status);
            spec.validate().expect("generated specs are valid");
            spec
        })
}

/// Refers to a session: usually one that is live when the command is issued, sometimes an
/// arbitrary (most likely unknown or ended) id.
#[derive(Debug, Clone)]
enum SessionRef {
    Live(usize),
    Raw(u64),
}

fn arb_session_ref() -> impl Strategy<Value = SessionRef> {
    prop_oneof![4 => any::<usize>().prop_map(SessionRef::Live), 1 => (0u64..40).prop_map(SessionRef::Raw)]
}

/// Refers to an instance: usually one that is registered when the command is issued,
/// sometimes any service/id pair from the small sets.
#[derive(Debug, Clone)]
enum InstanceRef {
    Existing(usize),
    Any(&'static str, &'static str),
}

/// One step of a random history. Session and instance references are resolved against the
/// registry's state when the step is turned into a [`Command`], so that most commands hit.
#[derive(Debug, Clone)]
enum Op {
    Create(Ttl),
    Revoke(SessionRef),
    Expire(Vec<SessionRef>),
    Register(SessionRef, InstanceSpec),
    /// Registers a registered instance's spec again, unchanged: under its owner (`None`, an
    /// idempotent no-op) or under another session (a takeover).
    Reregister(InstanceRef, Option<SessionRef>),
    /// Registers a registered instance again under its owner with a new weight and status.
    Update(InstanceRef, u32, HealthStatus),
    Deregister(InstanceRef),
    /// Names the history (refused after the first time, and for 0).
    NameHistory(u64),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let instance_ref = prop_oneof![
        3 => any::<usize>().prop_map(InstanceRef::Existing),
        1 => (pick(SERVICES), pick(IDS)).prop_map(|(s, i)| InstanceRef::Any(s, i)),
    ];
    prop_oneof![
        3 => arb_ttl().prop_map(Op::Create),
        1 => arb_session_ref().prop_map(Op::Revoke),
        1 => prop::collection::vec(arb_session_ref(), 0..4).prop_map(Op::Expire),
        6 => (arb_session_ref(), arb_spec()).prop_map(|(s, spec)| Op::Register(s, spec)),
        1 => (any::<usize>(), prop::option::of(arb_session_ref()))
            .prop_map(|(i, s)| Op::Reregister(InstanceRef::Existing(i), s)),
        1 => (any::<usize>(), 1u32..=10_000, arb_status())
            .prop_map(|(i, weight, status)| Op::Update(InstanceRef::Existing(i), weight, status)),
        2 => instance_ref.prop_map(Op::Deregister),
        1 => prop_oneof![Just(0u64), any::<u64>()].prop_map(Op::NameHistory),
    ]
}

fn arb_ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(arb_op(), 0..max)
}

fn resolve_session(registry: &Registry, session: &SessionRef) -> SessionId {
    match *session {
        SessionRef::Live(i) if !registry.sessions().is_empty() => {
            *registry.sessions().keys().nth(i % registry.sessions().len()).expect("index in range")
        }
        SessionRef::Live(i) => SessionId::new(i as u64 % 40),
        SessionRef::Raw(id) => SessionId::new(id),
    }
}

fn resolve_instance(registry: &Registry, instance: &InstanceRef) -> (ServiceName, InstanceId) {
    let all: Vec<(ServiceName, InstanceId)> = registry
        .services()
        .iter()
        .flat_map(|(service, instances)| instances.keys().map(move |id| (service.clone(), id.clone())))
        .collect();
    match *instance {
        InstanceRef::Existing(i) if !all.is_empty() => all[i % all.len()].clone(),
        InstanceRef::Existing(_) => (ServiceName::new("web").expect("name"), InstanceId::new("a").expect("id")),
        InstanceRef::Any(service, id) => (ServiceName::new(service).expect("name"), InstanceId::new(id).expect("id")),
    }
}

/// Turns a step into a concrete command against the registry's current state.
fn command_for(registry: &Registry, op: &Op) -> Command {
    match op {
        Op::Create(ttl) => Command::CreateSession {
            session: SessionId::new(registry.revision().get() * 7919 + 1),
            ttl: *ttl,
            options: Default::default(),
        },
        Op::Revoke(s) => Command::RevokeSession { session: resolve_session(registry, s) },
        Op::Expire(list) => {
            Command::ExpireSessions { sessions: list.iter().map(|s| resolve_session(registry, s)).collect() }
        }
        Op::Register(s, spec) => Command::Register { session: resolve_session(registry, s), spec: spec.clone() },
        Op::Reregister(i, s) => {
            let (service, id) = resolve_instance(registry, i);
            match registry.service(service.as_str()).and_then(|instances| instances.get(&id)) {
                Some(instance) => Command::Register {
                    session: s.as_ref().map_or(instance.session, |s| resolve_session(registry, s)),
                    spec: instance.spec.clone(),
                },
                None => Command::Deregister { service, id },
            }
        }
        Op::Update(i, weight, status) => {
            let (service, id) = resolve_instance(registry, i);
            match registry.service(service.as_str()).and_then(|instances| instances.get(&id)) {
                Some(instance) => Command::Register {
                    session: instance.session,
                    spec: instance.spec.clone().with_weight(*weight).with_status(*status),
                },
                None => Command::Deregister { service, id },
            }
        }
        Op::Deregister(i) => {
            let (service, id) = resolve_instance(registry, i);
            Command::Deregister { service, id }
        }
        Op::NameHistory(id) => Command::NameHistory { id: *id },
    }
}

/// Applies a history to `registry`, returning the concrete commands and their outcomes.
fn play(registry: &mut Registry, ops: &[Op]) -> (Vec<Command>, Vec<Outcome>) {
    ops.iter()
        .map(|op| {
            let command = command_for(registry, op);
            let outcome = registry.apply(&command);
            (command, outcome)
        })
        .unzip()
}

/// A command with arbitrary raw ids, independent of any registry state.
fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (any::<u64>(), arb_ttl(), "[a-z]{0,8}", any::<bool>(), 0u64..=60_000, any::<bool>()).prop_map(
            |(s, ttl, name, release, lock_delay_ms, no_expiry)| {
                let behavior = if release { KeyBehavior::Release } else { KeyBehavior::Delete };
                let options = SessionOptions { name, behavior, lock_delay_ms, no_expiry, checks: Vec::new() };
                Command::CreateSession { session: SessionId::new(s), ttl, options }
            }
        ),
        any::<u64>().prop_map(|s| Command::RevokeSession { session: SessionId::new(s) }),
        prop::collection::vec(any::<u64>(), 0..6)
            .prop_map(|ids| Command::ExpireSessions { sessions: ids.into_iter().map(SessionId::new).collect() }),
        (any::<u64>(), arb_spec()).prop_map(|(s, spec)| Command::Register { session: SessionId::new(s), spec }),
        (pick(SERVICES), "[!-~]{1,128}").prop_map(|(service, id)| Command::Deregister {
            service: ServiceName::new(service).expect("name"),
            id: InstanceId::new(id).expect("printable id"),
        }),
        any::<u64>().prop_map(|id| Command::NameHistory { id }),
    ]
}

/// Checks that each session's instance set lists exactly the instances it owns.
fn assert_consistent(registry: &Registry) -> Result<(), TestCaseError> {
    let mut owned: BTreeMap<SessionId, Vec<(ServiceName, InstanceId)>> = BTreeMap::new();
    for (service, instances) in registry.services() {
        prop_assert!(!instances.is_empty(), "service {service} listed without instances");
        for (id, instance) in instances.iter() {
            prop_assert_eq!(instance.service(), service);
            prop_assert_eq!(instance.id(), id);
            prop_assert!(registry.sessions().contains_key(&instance.session), "orphan instance {service}/{id}");
            prop_assert!(instance.create_revision <= instance.modify_revision);
            prop_assert!(instance.modify_revision <= registry.revision());
            owned.entry(instance.session).or_default().push((service.clone(), id.clone()));
        }
    }
    for (id, session) in registry.sessions() {
        prop_assert_eq!(session.id, *id);
        let listed: Vec<_> = session.instances.iter().cloned().collect();
        prop_assert_eq!(listed, owned.remove(id).unwrap_or_default());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties.
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn snapshot_round_trips(ops in arb_ops(60)) {
        let mut registry = Registry::new();
        let (commands, outcomes) = play(&mut registry, &ops);
        assert_consistent(&registry)?;

        let bytes = codec::encode_snapshot(&registry);
        let restored = codec::decode_snapshot(&bytes).expect("snapshot decodes");
        prop_assert_eq!(&restored, &registry);
        prop_assert_eq!(codec::encode_snapshot(&restored), bytes, "encoding is deterministic");

        for (command, outcome) in commands.iter().zip(&outcomes) {
            prop_assert_eq!(&codec::decode_command(&codec::encode_command(command)).expect("decodes"), command);
            if let Ok(applied) = &outcome.response {
                prop_assert!(applied.revision().get() >= 1);
            }
        }
    }

    #[test]
    fn every_intermediate_state_round_trips(ops in arb_ops(30)) {
        let mut registry = Registry::new();
        for op in &ops {
            let command = command_for(&registry, op);
            let before = registry.revision();
            let outcome = registry.apply(&command);
            match &outcome.response {
                Ok(applied) => {
                    prop_assert_eq!(applied.revision(), registry.revision());
                    let consumed = registry.revision().get() - before.get();
                    prop_assert!(consumed <= 1, "{:?} consumed {} revisions", command, consumed);
                    prop_assert_eq!(consumed == 1, !outcome.effects.is_empty(), "{:?}", command);
                }
                Err(_) => {
                    prop_assert_eq!(registry.revision(), before);
                    prop_assert!(outcome.effects.is_empty());
                }
            }
            assert_consistent(&registry)?;
            let restored = codec::decode_snapshot(&codec::encode_snapshot(&registry)).expect("snapshot decodes");
            prop_assert_eq!(&restored, &registry);
        }
    }

    #[test]
    fn restored_registry_behaves_like_the_original(history in arb_ops(40), future in arb_ops(40)) {
        let mut original = Registry::new();
        play(&mut original, &history);
        let mut restored = codec::decode_snapshot(&codec::encode_snapshot(&original)).expect("snapshot decodes");
        prop_assert_eq!(&restored, &original);

        for op in &future {
            let command = command_for(&original, op);
            prop_assert_eq!(&command_for(&restored, op), &command);
            let expected = original.apply(&command);
            let actual = restored.apply(&command);
            prop_assert_eq!(&actual, &expected, "{:?}", command);
            prop_assert_eq!(&restored, &original, "after {:?}", command);
        }
    }

    #[test]
    fn commands_round_trip(command in arb_command()) {
        let bytes = codec::encode_command(&command);
        prop_assert_eq!(codec::decode_command(&bytes).expect("command decodes"), command);
    }
}

/// Guards the generators: with a fixed seed, random histories must reach every interesting
/// path of the state machine, or the properties above would prove little.
#[test]
fn generated_histories_reach_every_path() {
    use proptest::{
        strategy::ValueTree,
        test_runner::{TestCaseError, TestRunner},
    };
    use waggle_core::{ApplyError, Effect};

    #[derive(Debug, Default)]
    struct Seen {
        created: usize,
        updated: usize,
        taken_over: usize,
        idempotent: usize,
        deregistered: usize,
        removed_with_session: usize,
        closed_without_instances: usize,
        session_not_found: usize,
        instance_not_found: usize,
    }

    let mut runner = TestRunner::deterministic();
    let strategy = arb_ops(60);
    let mut seen = Seen::default();
    for _ in 0..100 {
        let ops = strategy.new_tree(&mut runner).map_err(TestCaseError::fail).expect("tree").current();
        let mut registry = Registry::new();
        for op in &ops {
            let command = command_for(&registry, op);
            let previous_owner = match &command {
                Command::Register { spec, .. } => {
                    registry.service(spec.service.as_str()).and_then(|s| s.get(&spec.id)).map(|i| i.session)
                }
                _ => None,
            };
            let outcome = registry.apply(&command);
            match (&command, &outcome.response, outcome.effects.as_slice()) {
                (Command::Register { .. }, Ok(_), []) => seen.idempotent += 1,
                (Command::Register { session, .. }, Ok(_), [Effect::InstanceUpserted { created, .. }]) => {
                    match (created, previous_owner) {
                        (true, _) => seen.created += 1,
                        (false, Some(owner)) if owner == *session => seen.updated += 1,
                        (false, _) => seen.taken_over += 1,
                    }
                }
                (Command::Deregister { .. }, Ok(_), [Effect::InstanceRemoved { .. }]) => seen.deregistered += 1,
                (Command::RevokeSession { .. } | Command::ExpireSessions { .. }, Ok(_), effects) => {
                    for pair in effects.windows(2) {
                        match pair {
                            [Effect::InstanceRemoved { .. }, Effect::SessionClosed { .. }] => {
                                seen.removed_with_session += 1;
                            }
                            [Effect::SessionClosed { .. }, Effect::SessionClosed { .. }] => {
                                seen.closed_without_instances += 1;
                            }
                            _ => {}
                        }
                    }
                    if let [Effect::SessionClosed { .. }, ..] = effects {
                        seen.closed_without_instances += 1;
                    }
                }
                (_, Err(ApplyError::SessionNotFound(_)), _) => seen.session_not_found += 1,
                (_, Err(ApplyError::InstanceNotFound { .. }), _) => seen.instance_not_found += 1,
                _ => {}
            }
        }
    }
    let counts = [
        seen.created,
        seen.updated,
        seen.taken_over,
        seen.idempotent,
        seen.deregistered,
        seen.removed_with_session,
        seen.closed_without_instances,
        seen.session_not_found,
        seen.instance_not_found,
    ];
    assert!(counts.iter().all(|&n| n > 0), "{seen:#?}");
}

// ---------------------------------------------------------------------------------------------
// Versions and garbage.
// ---------------------------------------------------------------------------------------------

fn sample_commands() -> Vec<Command> {
    let spec = InstanceSpec::new("web", "10.0.0.1", 8080)
        .expect("spec")
        .with_tag("blue")
        .with_meta("version", "1")
        .with_zone("eu-1")
        .expect("zone")
        .with_status(HealthStatus::Warning);
    vec![
        Command::CreateSession { session: SessionId::new(2), ttl: Ttl::DEFAULT, options: Default::default() },
        Command::RevokeSession { session: SessionId::new(0) },
        Command::RevokeSession { session: SessionId::new(7) },
        Command::ExpireSessions { sessions: vec![] },
        Command::ExpireSessions { sessions: vec![SessionId::new(0), SessionId::new(u64::MAX)] },
        Command::Register { session: SessionId::new(0), spec: spec.clone() },
        Command::Register { session: SessionId::new(2), spec },
        Command::Deregister {
            service: ServiceName::new("web").expect("name"),
            id: InstanceId::new("10.0.0.1:8080").expect("id"),
        },
    ]
}

fn sample_registry() -> Registry {
    let mut registry = Registry::new();
    for command in [
        Command::CreateSession { session: SessionId::new(2), ttl: Ttl::DEFAULT, options: Default::default() },
        Command::Register {
            session: SessionId::new(2),
            spec: InstanceSpec::new("web", "10.0.0.1", 8080).expect("spec").with_tag("blue"),
        },
    ] {
        registry.apply(&command).response.expect("applies");
    }
    registry
}

/// Replaces the value of field 1 (the format version, a varint written first) with `version`.
fn with_version(bytes: &[u8], version: u32) -> Vec<u8> {
    assert_eq!(bytes.first(), Some(&0x08), "field 1 (varint) comes first");
    let old_len = bytes[1..].iter().position(|b| b & 0x80 == 0).expect("varint ends") + 1;
    let mut out = vec![0x08];
    let mut v = version;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&bytes[1 + old_len..]);
    out
}

#[test]
fn current_version_is_written_first() {
    const { assert!(FORMAT_VERSION >= 1 && FORMAT_VERSION < 0x80, "a single-byte varint") };
    let command = codec::encode_command(&Command::CreateSession {
        session: SessionId::new(2),
        ttl: Ttl::DEFAULT,
        options: Default::default(),
    });
    assert_eq!(command[..2], [0x08, FORMAT_VERSION as u8]);
    let snapshot = codec::encode_snapshot(&Registry::new());
    assert_eq!(snapshot[..2], [0x08, FORMAT_VERSION as u8]);
    // Patching in the same version is the identity.
    assert_eq!(with_version(&command, FORMAT_VERSION), command);
    assert_eq!(with_version(&snapshot, FORMAT_VERSION), snapshot);
}

#[test]
fn sample_commands_and_snapshot_round_trip() {
    for command in sample_commands() {
        assert_eq!(codec::decode_command(&codec::encode_command(&command)).expect("decodes"), command);
    }
    let registry = sample_registry();
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&registry)).expect("decodes"), registry);
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&Registry::new())).expect("decodes"), Registry::new());
}

#[test]
fn newer_format_versions_are_rejected() {
    let newer = [FORMAT_VERSION + 1, FORMAT_VERSION + 200, u32::MAX];
    for command in sample_commands() {
        let bytes = codec::encode_command(&command);
        for version in newer {
            let err = codec::decode_command(&with_version(&bytes, version)).expect_err("newer command rejected");
            assert!(err.to_string().contains(&format!("format version {version}")), "{err}");
        }
    }
    let snapshots = [codec::encode_snapshot(&Registry::new()), codec::encode_snapshot(&sample_registry())];
    for bytes in &snapshots {
        for version in newer {
            let err = codec::decode_snapshot(&with_version(bytes, version)).expect_err("newer snapshot rejected");
            assert!(err.to_string().contains(&format!("format version {version}")), "{err}");
        }
    }
    // Crafted by hand: field 1 = FORMAT_VERSION + 1 and nothing else.
    let next = u8::try_from(FORMAT_VERSION + 1).expect("small version");
    assert!(codec::decode_command(&[0x08, next]).is_err());
    assert!(codec::decode_snapshot(&[0x08, next]).is_err());
}

#[test]
fn missing_or_zero_version_is_rejected() {
    // An empty message has version 0 (the protobuf default).
    assert!(codec::decode_command(&[]).is_err());
    assert!(codec::decode_snapshot(&[]).is_err());
    let command = codec::encode_command(&Command::RevokeSession { session: SessionId::new(5) });
    assert!(codec::decode_command(&with_version(&command, 0)).is_err());
    assert!(codec::decode_command(&command[2..]).is_err(), "version field dropped");
    let snapshot = codec::encode_snapshot(&sample_registry());
    assert!(codec::decode_snapshot(&with_version(&snapshot, 0)).is_err());
    assert!(codec::decode_snapshot(&snapshot[2..]).is_err(), "version field dropped");
}

#[test]
fn hand_crafted_minimal_messages() {
    let v = u8::try_from(FORMAT_VERSION).expect("small version");
    // A snapshot holding only the version is the empty registry (revision 0 reads as 1).
    assert_eq!(codec::decode_snapshot(&[0x08, v]).expect("minimal snapshot"), Registry::new());
    // A command with a version but no kind is not a command.
    assert!(codec::decode_command(&[0x08, v]).is_err());
    // Field 3 (revoke session) = 9.
    assert_eq!(
        codec::decode_command(&[0x08, v, 0x18, 0x09]).expect("revoke"),
        Command::RevokeSession { session: SessionId::new(9) }
    );
    // Field 2 (create session) with a TTL below the minimum: 5 ms.
    assert!(codec::decode_command(&[0x08, v, 0x10, 0x05]).is_err());
}

#[test]
fn unknown_fields_are_skipped() {
    // Field 1000, varint 1: a field a newer writer of the same version might add (far above
    // the tags in use).
    let unknown = [0xc0, 0x3e, 0x01];
    for command in sample_commands() {
        let mut bytes = codec::encode_command(&command);
        bytes.extend_from_slice(&unknown);
        assert_eq!(codec::decode_command(&bytes).expect("decodes"), command);
    }
    let registry = sample_registry();
    let mut bytes = codec::encode_snapshot(&registry);
    bytes.extend_from_slice(&unknown);
    assert_eq!(codec::decode_snapshot(&bytes).expect("decodes"), registry);
}

#[test]
fn garbage_is_rejected() {
    let garbage: &[&[u8]] = &[
        &[0xff],
        &[0xff; 16],
        &[0x08],                   // truncated varint
        &[0x08, 0x80],             // unterminated varint
        &[0x0a, 0x05, 0x01],       // field 1 with the wrong wire type and a short length
        &[0x08, 0x01, 0x22, 0x10], // field 4 length 16 with no payload
        &[0x00, 0x00],             // field number 0
        b"hello, world",
    ];
    for bytes in garbage {
        assert!(codec::decode_command(bytes).is_err(), "command {bytes:?}");
        assert!(codec::decode_snapshot(bytes).is_err(), "snapshot {bytes:?}");
    }
    // A valid encoding cut short.
    for command in sample_commands() {
        let bytes = codec::encode_command(&command);
        if bytes.len() > 3 {
            assert!(codec::decode_command(&bytes[..bytes.len() - 1]).is_err(), "{command:?}");
        }
    }
    let snapshot = codec::encode_snapshot(&sample_registry());
    assert!(codec::decode_snapshot(&snapshot[..snapshot.len() - 1]).is_err());
}

#[test]
fn invalid_fields_in_a_snapshot_are_rejected() {
    // A snapshot whose session TTL breaks the model's rules: session {id 2, ttl_ms 5}.
    let v = u8::try_from(FORMAT_VERSION).expect("small version");
    let bytes = [0x08, v, 0x1a, 0x04, 0x08, 0x02, 0x10, 0x05];
    assert!(codec::decode_snapshot(&bytes).is_err());
    // The same with a valid TTL (1000 ms = varint e8 07) decodes.
    let bytes = [0x08, v, 0x1a, 0x05, 0x08, 0x02, 0x10, 0xe8, 0x07];
    let registry = codec::decode_snapshot(&bytes).expect("valid snapshot");
    assert_eq!(registry.sessions().keys().copied().collect::<Vec<_>>(), vec![SessionId::new(2)]);
}

// ---------------------------------------------------------------------------------------------
// ACLs: the ACL commands and the ACL state in snapshots.
// ---------------------------------------------------------------------------------------------

use waggle_core::{
    ApplyError, Compare, CompareOp, CompareTarget, Guard, KvOp, Txn,
    acl::{
        ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET, AuthMethod, BindType, BindingRule, DefaultPolicy, GLOBAL_MANAGEMENT_ID,
        Grants, JwtConfig, Level, NodeIdentity, Policy, Resource, Role, Rules, ServiceIdentity, TemplatedPolicy, Token,
    },
};

fn acl_token(accessor: &str, secret: &str) -> Token {
    Token {
        accessor: accessor.into(),
        secret: secret.into(),
        description: String::new(),
        grants: Grants::default(),
        roles: Vec::new(),
        local: false,
        expiration_ms: None,
        create_ms: 0,
        auth_method: None,
        create_index: 0,
        modify_index: 0,
    }
}

/// Exact, prefix and unnamed-resource rules.
fn sample_rules() -> Rules {
    let mut rules = Rules::new();
    rules.add(Resource::Key, Some("app/"), true, Level::Write);
    rules.add(Resource::Key, Some("app/secret"), false, Level::Deny);
    rules.add(Resource::Key, Some(""), true, Level::List);
    rules.add(Resource::Service, Some("web"), false, Level::Write);
    rules.add(Resource::Service, Some(""), true, Level::Read);
    rules.add(Resource::Operator, None, false, Level::Read);
    rules.add(Resource::Acl, None, false, Level::Write);
    rules.add(Resource::Peering, None, false, Level::Deny);
    rules
}

fn sample_policy(id: &str, name: &str, rules: Rules) -> Policy {
    Policy {
        id: id.into(),
        name: name.into(),
        description: "writes app/ keys".into(),
        rules_text: r#"key_prefix "app/" { policy = "write" }"#.into(),
        rules,
        datacenters: vec!["dc1".into(), "dc2".into()],
        create_index: 3,
        modify_index: 9,
    }
}

fn sample_grants() -> Grants {
    Grants {
        policies: vec!["p-1".into(), GLOBAL_MANAGEMENT_ID.into()],
        service_identities: vec![
            ServiceIdentity { service: "web".into(), datacenters: vec!["dc1".into()] },
            ServiceIdentity { service: "api".into(), datacenters: vec![] },
        ],
        node_identities: vec![NodeIdentity { node: "node-1".into(), datacenter: "dc1".into() }],
        templated_policies: vec![
            TemplatedPolicy { template: "builtin/service".into(), name: Some("db".into()), datacenters: vec![] },
            TemplatedPolicy { template: "builtin/dns".into(), name: None, datacenters: vec!["dc2".into()] },
            TemplatedPolicy { template: "builtin/node".into(), name: Some(String::new()), datacenters: vec![] },
        ],
    }
}

fn sample_full_token() -> Token {
    Token {
        description: "ci deployer".into(),
        grants: sample_grants(),
        roles: vec!["r-1".into(), "r-missing".into()],
        local: true,
        expiration_ms: Some(1_700_000_000_000),
        create_ms: 1_600_000_000_000,
        auth_method: Some("oidc".into()),
        create_index: 4,
        modify_index: u64::MAX,
        ..acl_token("acc-1", "sec-1")
    }
}

/// An auth method with every field set (`name`).
fn sample_auth_method(name: &str) -> AuthMethod {
    AuthMethod {
        name: name.into(),
        method_type: "jwt".into(),
        display_name: "CI".into(),
        description: "tokens for CI jobs".into(),
        max_token_ttl_ms: Some(3_600_000),
        token_locality: "global".into(),
        config: JwtConfig {
            validation_pub_keys: vec![
                "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n".into(),
                "k2".into(),
            ],
            bound_issuer: "https://issuer.example".into(),
            bound_audiences: vec!["waggle".into(), "consul".into()],
            claim_mappings: [("service".into(), "service".into()), ("/nested/team".into(), "team".into())].into(),
            list_claim_mappings: [("groups".into(), "groups".into())].into(),
            supported_algs: vec!["RS256".into(), "ES256".into()],
            clock_skew_leeway_ms: -1,
            expiration_leeway_ms: 150_000,
            not_before_leeway_ms: i64::MIN,
        },
        create_index: 7,
        modify_index: 8,
    }
}

/// A binding rule of `method` (`bind_type` and what goes with it).
fn sample_binding_rule(id: &str, method: &str, bind_type: BindType) -> BindingRule {
    let (bind_name, bind_vars) = match bind_type {
        BindType::TemplatedPolicy => ("builtin/service".to_owned(), Some("${value.service}".to_owned())),
        _ => ("${value.service}".to_owned(), None),
    };
    BindingRule {
        id: id.into(),
        description: "services of the core team".into(),
        auth_method: method.into(),
        selector: r#"value.team == "core" and "admins" in list.groups"#.into(),
        bind_type,
        bind_name,
        bind_vars,
        create_index: 9,
        modify_index: 10,
    }
}

const BIND_TYPES: [BindType; 5] =
    [BindType::Service, BindType::Node, BindType::Role, BindType::Policy, BindType::TemplatedPolicy];

fn sample_kv_txn() -> Txn {
    Txn {
        guard: Some(Guard { lock: "locks/leader".into(), token: 7 }),
        compares: vec![Compare { key: "app/x".into(), target: CompareTarget::Version(0), op: CompareOp::Equal }],
        success: vec![
            KvOp::Put { key: "app/x".into(), value: b"1".to_vec(), flags: 2, session: None },
            KvOp::Delete { key: "app/tmp/".into(), prefix: true },
        ],
        failure: vec![KvOp::Get { key: "app/x".into(), prefix: false }],
    }
}

fn sample_acl_commands() -> Vec<Command> {
    let role = Role {
        id: "r-1".into(),
        name: "deployers".into(),
        description: "deploys".into(),
        grants: sample_grants(),
        create_index: 5,
        modify_index: 6,
    };
    vec![
        Command::AclBootstrap { token: Token { grants: sample_grants(), ..acl_token("root", "root-secret") } },
        Command::AclBootstrap { token: acl_token("", "") },
        Command::AclSetToken { token: sample_full_token() },
        Command::AclSetToken {
            token: Token { expiration_ms: Some(0), auth_method: Some(String::new()), ..acl_token("a", "s") },
        },
        Command::AclDeleteToken { accessor: "acc-1".into() },
        Command::AclDeleteToken { accessor: String::new() },
        Command::AclSetPolicy { policy: sample_policy("p-1", "kv", sample_rules()) },
        Command::AclSetPolicy { policy: sample_policy("p-2", "empty", Rules::new()) },
        Command::AclDeletePolicy { id: "p-1".into() },
        Command::AclSetRole { role: role.clone() },
        Command::AclSetRole { role: Role { grants: Grants::default(), ..role } },
        Command::AclDeleteRole { id: "r-1".into() },
        Command::AclExpireTokens { accessors: vec![] },
        Command::AclExpireTokens { accessors: vec!["acc-1".into(), "acc-2".into()] },
        Command::AclSetAuthMethod { method: sample_auth_method("ci") },
        Command::AclSetAuthMethod {
            method: AuthMethod { max_token_ttl_ms: None, config: JwtConfig::default(), ..sample_auth_method("") },
        },
        Command::AclDeleteAuthMethod { name: "ci".into() },
        Command::AclDeleteAuthMethod { name: String::new() },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-1", "ci", BindType::Service) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-2", "ci", BindType::TemplatedPolicy) },
        Command::AclSetBindingRule {
            rule: BindingRule { selector: String::new(), ..sample_binding_rule("", "", BindType::Role) },
        },
        Command::AclDeleteBindingRule { id: "b-1".into() },
        Command::Authorized {
            accessor: "acc-1".into(),
            default: DefaultPolicy::Deny,
            command: Box::new(Command::AclSetBindingRule { rule: sample_binding_rule("b-3", "ci", BindType::Node) }),
        },
        Command::Authorized {
            accessor: "acc-1".into(),
            default: DefaultPolicy::Deny,
            command: Box::new(Command::KvTxn { txn: sample_kv_txn() }),
        },
        Command::Authorized {
            accessor: ANONYMOUS_ACCESSOR.into(),
            default: DefaultPolicy::Allow,
            command: Box::new(Command::AclSetPolicy { policy: sample_policy("p-3", "p3", sample_rules()) }),
        },
        Command::Authorized {
            accessor: "outer".into(),
            default: DefaultPolicy::Allow,
            command: Box::new(Command::Authorized {
                accessor: "inner".into(),
                default: DefaultPolicy::Deny,
                command: Box::new(Command::RevokeSession { session: SessionId::new(3) }),
            }),
        },
    ]
}

#[test]
fn acl_commands_round_trip_alone_and_in_batches() {
    let commands = sample_acl_commands();
    for command in &commands {
        let bytes = codec::encode_command(command);
        assert_eq!(&codec::decode_command(&bytes).expect("decodes"), command);
        // With the unknown field a newer writer might add.
        let mut extended = bytes.clone();
        extended.extend_from_slice(&[0xc0, 0x3e, 0x01]);
        assert_eq!(&codec::decode_command(&extended).expect("decodes"), command);
        // Cut short.
        assert!(codec::decode_command(&bytes[..bytes.len() - 1]).is_err(), "{command:?}");
    }
    let mut mixed = sample_commands();
    mixed.extend(commands.iter().cloned());
    mixed.extend(sample_commands());
    for batch in [&commands[..], &mixed[..], &commands[..1], &[]] {
        assert_eq!(codec::decode_commands(&codec::encode_commands(batch)).expect("batch decodes"), batch);
    }
}

#[test]
fn older_format_versions_are_still_read() {
    for command in sample_commands() {
        let bytes = codec::encode_command(&command);
        for version in 1..FORMAT_VERSION {
            assert_eq!(codec::decode_command(&with_version(&bytes, version)).expect("older command"), command);
        }
    }
    let registry = sample_registry();
    let bytes = codec::encode_snapshot(&registry);
    for version in 1..FORMAT_VERSION {
        assert_eq!(codec::decode_snapshot(&with_version(&bytes, version)).expect("older snapshot"), registry);
    }
}

#[test]
fn acl_commands_from_a_newer_version_are_rejected() {
    for command in sample_acl_commands() {
        let bytes = codec::encode_command(&command);
        let err = codec::decode_command(&with_version(&bytes, FORMAT_VERSION + 1)).expect_err("newer command");
        assert!(err.to_string().contains(&format!("format version {}", FORMAT_VERSION + 1)), "{err}");
    }
}

/// A registry with ACL state: a bootstrap, policies (exact, prefix and unnamed-resource rules),
/// roles, tokens (one linking a deleted policy, one expired), and ordinary writes in between.
fn acl_registry() -> Registry {
    let mut registry = sample_registry();
    let kv_token = Token {
        description: "kv".into(),
        grants: Grants { policies: vec!["p-kv".into(), "p-gone".into()], ..sample_grants() },
        roles: vec!["r-ops".into()],
        local: true,
        expiration_ms: Some(4_000_000_000_000),
        create_ms: 1_000,
        auth_method: Some("oidc".into()),
        ..acl_token("acc-kv", "sec-kv")
    };
    let role = Role {
        id: "r-ops".into(),
        name: "ops".into(),
        description: "operators".into(),
        grants: Grants { policies: vec!["p-kv".into()], ..sample_grants() },
        create_index: 0,
        modify_index: 0,
    };
    let commands = [
        Command::AclBootstrap {
            token: Token {
                grants: Grants { policies: vec![GLOBAL_MANAGEMENT_ID.into()], ..Grants::default() },
                ..acl_token("acc-root", "sec-root")
            },
        },
        // Auth methods with binding rules of every kind; one deleted with its rules and tokens.
        Command::AclSetAuthMethod { method: sample_auth_method("oidc") },
        Command::AclSetAuthMethod { method: AuthMethod { max_token_ttl_ms: None, ..sample_auth_method("gone") } },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-service", "oidc", BindType::Service) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-node", "oidc", BindType::Node) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-role", "oidc", BindType::Role) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-policy", "oidc", BindType::Policy) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-templated", "oidc", BindType::TemplatedPolicy) },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-gone", "gone", BindType::Service) },
        Command::AclSetToken { token: Token { auth_method: Some("gone".into()), ..acl_token("acc-gone", "sec-gone") } },
        Command::AclDeleteAuthMethod { name: "gone".into() },
        Command::AclSetPolicy { policy: sample_policy("p-kv", "kv", sample_rules()) },
        Command::AclSetPolicy { policy: sample_policy("p-gone", "gone", Rules::new()) },
        Command::AclSetRole { role },
        Command::AclSetToken { token: kv_token },
        Command::AclSetToken { token: acl_token(ANONYMOUS_ACCESSOR, ANONYMOUS_SECRET) },
        Command::AclSetToken { token: acl_token("acc-old", "sec-old") },
        Command::AclDeletePolicy { id: "p-gone".into() },
        Command::AclExpireTokens { accessors: vec!["acc-old".into()] },
        Command::Authorized {
            accessor: "acc-kv".into(),
            default: DefaultPolicy::Deny,
            command: Box::new(Command::KvTxn { txn: Txn::put("app/x", b"1".to_vec()) }),
        },
    ];
    for command in commands {
        registry.apply(&command).response.unwrap_or_else(|e| panic!("{command:?}: {e}"));
    }
    registry
}

#[test]
fn acl_state_round_trips_through_a_snapshot() {
    let registry = acl_registry();
    let acl = registry.acl();
    assert!(acl.bootstrapped().is_some() && acl.index() > 0);
    assert_eq!(acl.tokens().len(), 3);
    assert_eq!(acl.policies().len(), 1);
    assert_eq!(acl.roles().len(), 1);
    assert_eq!(acl.auth_methods().keys().collect::<Vec<_>>(), ["oidc"]);
    assert_eq!(acl.binding_rules().len(), BIND_TYPES.len());
    assert!(acl.binding_rules_of("oidc").all(|r| r.create_index > 0 && r.modify_index == r.create_index));
    assert_eq!(registry.kv().len(), 1);

    let bytes = codec::encode_snapshot(&registry);
    let restored = codec::decode_snapshot(&bytes).expect("snapshot decodes");
    assert_eq!(restored, registry);
    assert_eq!(codec::encode_snapshot(&restored), bytes, "encoding is deterministic");
    // The secrets index is rebuilt.
    for (secret, accessor) in [("sec-root", "acc-root"), ("sec-kv", "acc-kv"), (ANONYMOUS_SECRET, ANONYMOUS_ACCESSOR)] {
        assert_eq!(restored.acl().token_by_secret(secret).map(|t| t.accessor.as_str()), Some(accessor));
    }
    assert!(restored.acl().token_by_secret("sec-old").is_none());
    assert!(restored.acl().token_by_secret("sec-gone").is_none(), "deleted with its auth method");
    assert_eq!(restored.acl().auth_methods()["oidc"].config, sample_auth_method("oidc").config);
}

#[test]
fn restored_acl_state_decides_like_the_original() {
    let mut original = acl_registry();
    let mut restored = codec::decode_snapshot(&codec::encode_snapshot(&original)).expect("snapshot decodes");
    let authorized = |accessor: &str, command: Command| Command::Authorized {
        accessor: accessor.into(),
        default: DefaultPolicy::Deny,
        command: Box::new(command),
    };
    let put = |key: &str| Command::KvTxn { txn: Txn::put(key, b"v".to_vec()) };
    let future = [
        authorized("acc-kv", put("app/y")),
        authorized("acc-kv", put("app/secret")),
        authorized("acc-kv", put("other")),
        authorized(ANONYMOUS_ACCESSOR, put("app/z")),
        authorized("acc-old", put("app/z")),
        authorized("acc-root", put("anything")),
        authorized("acc-kv", authorized("acc-root", put("app/w"))),
        Command::AclBootstrap { token: acl_token("again", "again") },
        Command::AclSetToken { token: acl_token("acc-new", "sec-kv") },
        Command::AclDeleteToken { accessor: "acc-kv".into() },
        authorized("acc-kv", put("app/y")),
        Command::AclSetToken { token: acl_token("acc-new", "sec-kv") },
        // Auth methods: a token of a missing method, a rule of a missing method, a deletion.
        Command::AclSetToken { token: Token { auth_method: Some("gone".into()), ..acl_token("acc-l", "sec-l") } },
        Command::AclSetBindingRule { rule: sample_binding_rule("b-x", "gone", BindType::Service) },
        authorized("acc-kv", Command::AclSetBindingRule { rule: sample_binding_rule("b-x", "oidc", BindType::Node) }),
        Command::AclSetToken { token: Token { auth_method: Some("oidc".into()), ..acl_token("acc-l", "sec-l") } },
        Command::AclDeleteAuthMethod { name: "oidc".into() },
        Command::AclDeleteBindingRule { id: "b-service".into() },
        authorized("acc-l", put("app/y")),
    ];
    let mut refused = 0;
    for command in &future {
        let expected = original.apply(command);
        let actual = restored.apply(command);
        assert_eq!(actual, expected, "{command:?}");
        assert_eq!(restored, original, "after {command:?}");
        refused += usize::from(expected.response.is_err());
    }
    assert!(refused >= 10, "the sequence exercises refusals ({refused})");
    assert!(matches!(original.apply(&authorized("acc-kv", put("x"))).response, Err(ApplyError::TokenNotFound)));
}

#[test]
fn a_snapshot_without_acl_state_is_unchanged_but_for_its_version() {
    // The ACL fields (tags 9-13) are absent when there is no ACL state: such a snapshot is the
    // version-4 bytes with a new version number.
    let v = u8::try_from(FORMAT_VERSION).expect("small version");
    // The empty registry: the version and revision 1.
    assert_eq!(codec::encode_snapshot(&Registry::new()), [0x08, v, 0x10, 0x01]);
    let registry = sample_registry();
    assert_eq!(registry.acl(), &Default::default());
    let bytes = codec::encode_snapshot(&registry);
    assert!(top_level_fields(&bytes).iter().all(|tag| *tag <= 8), "{:?}", top_level_fields(&bytes));
    assert_eq!(codec::decode_snapshot(&with_version(&bytes, 4)).expect("version 4"), registry);
    // With ACL state, they are there (auth methods and binding rules: 14, 15).
    let fields = top_level_fields(&codec::encode_snapshot(&acl_registry()));
    assert!((9..=15).all(|tag| fields.contains(&tag)), "{fields:?}");
}

/// The field numbers of a message's top-level fields, in order.
fn top_level_fields(mut bytes: &[u8]) -> Vec<u64> {
    fn read_varint(bytes: &mut &[u8]) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let (byte, rest) = bytes.split_first().expect("varint");
            *bytes = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    let mut tags = Vec::new();
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes);
        tags.push(key >> 3);
        match key & 7 {
            0 => {
                read_varint(&mut bytes);
            }
            2 => {
                let len = usize::try_from(read_varint(&mut bytes)).expect("length");
                bytes = &bytes[len..];
            }
            wire => panic!("unexpected wire type {wire}"),
        }
    }
    tags
}

// Hand-made protobuf, to write records this build would never produce.

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn field_varint(tag: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(tag << 3, &mut out);
    varint(v, &mut out);
    out
}

fn field_bytes(tag: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((tag << 3) | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A rule record: resource, name, prefix, level, all.
fn rule_bytes(resource: u64, name: &str, prefix: bool, level: u64, all: bool) -> Vec<u8> {
    [
        field_varint(1, resource),
        field_bytes(2, name.as_bytes()),
        field_varint(3, u64::from(prefix)),
        field_varint(4, level),
        field_varint(5, u64::from(all)),
    ]
    .concat()
}

fn policy_bytes(rules: &[Vec<u8>]) -> Vec<u8> {
    let mut out = [field_bytes(1, b"p-1"), field_bytes(2, b"kv")].concat();
    for rule in rules {
        out.extend(field_bytes(5, rule));
    }
    out
}

/// An `AclSetPolicy` command (tag 21) and a snapshot holding the policy (tag 10).
fn policy_command_and_snapshot(rules: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
    let version = field_varint(1, u64::from(FORMAT_VERSION));
    let policy = policy_bytes(rules);
    ([version.clone(), field_bytes(21, &policy)].concat(), [version, field_bytes(10, &policy)].concat())
}

#[test]
fn hand_made_acl_records_decode() {
    // Key (4) "app/" prefix write (4), and operator (7) read (3) for all.
    let (command, snapshot) =
        policy_command_and_snapshot(&[rule_bytes(4, "app/", true, 4, false), rule_bytes(7, "", false, 3, true)]);
    let mut rules = Rules::new();
    rules.add(Resource::Key, Some("app/"), true, Level::Write);
    rules.add(Resource::Operator, None, false, Level::Read);
    let Command::AclSetPolicy { policy } = codec::decode_command(&command).expect("decodes") else {
        panic!("not a policy")
    };
    assert_eq!((policy.id.as_str(), policy.name.as_str(), &policy.rules), ("p-1", "kv", &rules));
    let registry = codec::decode_snapshot(&snapshot).expect("snapshot decodes");
    assert_eq!(registry.acl().policies()["p-1"].rules, rules);
    // Every resource and level code in use decodes.
    for resource in 1..=12 {
        for level in 1..=4 {
            let (command, snapshot) = policy_command_and_snapshot(&[rule_bytes(resource, "n", false, level, false)]);
            assert!(codec::decode_command(&command).is_ok() && codec::decode_snapshot(&snapshot).is_ok());
        }
    }
}

#[test]
fn unknown_acl_codes_and_bad_records_are_rejected() {
    let bad_rules = [
        ("level 0", rule_bytes(4, "k", false, 0, false)),
        ("level 5", rule_bytes(4, "k", false, 5, false)),
        ("level u32::MAX", rule_bytes(4, "k", false, u64::from(u32::MAX), false)),
        ("resource 0", rule_bytes(0, "k", false, 3, false)),
        ("resource 13", rule_bytes(13, "k", false, 3, false)),
        ("resource 99", rule_bytes(99, "", false, 3, true)),
        ("an unnamed rule with a name", rule_bytes(7, "x", false, 3, true)),
    ];
    for (what, rule) in &bad_rules {
        let (command, snapshot) = policy_command_and_snapshot(std::slice::from_ref(rule));
        let err = codec::decode_command(&command).expect_err(what);
        assert!(err.to_string().starts_with("cannot decode command"), "{what}: {err}");
        let err = codec::decode_snapshot(&snapshot).expect_err(what);
        assert!(err.to_string().starts_with("cannot decode snapshot"), "{what}: {err}");
    }
    let (command, _) = policy_command_and_snapshot(&[rule_bytes(4, "k", false, 9, false)]);
    let err = codec::decode_command(&command).expect_err("unknown level");
    assert!(err.to_string().contains("unknown rule level 9"), "{err}");
    let (command, _) = policy_command_and_snapshot(&[rule_bytes(13, "k", false, 3, false)]);
    let err = codec::decode_command(&command).expect_err("unknown resource");
    assert!(err.to_string().contains("unknown resource code 13"), "{err}");
    // The same rule twice.
    let twice = rule_bytes(4, "k", true, 3, false);
    let (command, snapshot) = policy_command_and_snapshot(&[twice.clone(), twice]);
    assert!(codec::decode_command(&command).is_err());
    assert!(codec::decode_snapshot(&snapshot).is_err());

    // Authorized (tag 17) with an unknown default policy, or without a command.
    let version = field_varint(1, u64::from(FORMAT_VERSION));
    let inner = codec::encode_command(&Command::RevokeSession { session: SessionId::new(3) });
    let authorized = |default: u64, command: Option<&[u8]>| {
        let mut record = [field_bytes(1, b"acc"), field_varint(2, default)].concat();
        if let Some(command) = command {
            record.extend(field_bytes(3, command));
        }
        [version.clone(), field_bytes(17, &record)].concat()
    };
    assert_eq!(
        codec::decode_command(&authorized(2, Some(&inner))).expect("valid"),
        Command::Authorized {
            accessor: "acc".into(),
            default: DefaultPolicy::Deny,
            command: Box::new(Command::RevokeSession { session: SessionId::new(3) }),
        }
    );
    for default in [0, 3, 1000] {
        assert!(codec::decode_command(&authorized(default, Some(&inner))).is_err(), "default {default}");
    }
    assert!(codec::decode_command(&authorized(1, None)).is_err(), "no command");
    assert!(codec::decode_command(&authorized(1, Some(&[]))).is_err(), "a command without version or kind");
    let newer = with_version(&inner, FORMAT_VERSION + 1);
    assert!(codec::decode_command(&authorized(1, Some(&newer))).is_err(), "a nested command of a newer version");

    // A snapshot whose tokens repeat an accessor or a secret, or whose policies or roles an id.
    let token =
        |accessor: &[u8], secret: &[u8]| field_bytes(9, &[field_bytes(1, accessor), field_bytes(2, secret)].concat());
    let snapshot = |records: &[Vec<u8>]| [version.clone(), records.concat()].concat();
    let ok = snapshot(&[token(b"a", b"s1"), token(b"b", b"s2")]);
    assert_eq!(codec::decode_snapshot(&ok).expect("valid").acl().tokens().len(), 2);
    assert!(codec::decode_snapshot(&snapshot(&[token(b"a", b"s1"), token(b"a", b"s2")])).is_err());
    let err = codec::decode_snapshot(&snapshot(&[token(b"a", b"s1"), token(b"b", b"s1")])).expect_err("shared");
    assert!(!err.to_string().contains("s1"), "the secret is not in the message: {err}");
    let policy = field_bytes(10, &policy_bytes(&[]));
    assert!(codec::decode_snapshot(&snapshot(&[policy.clone(), policy])).is_err());
    let role = field_bytes(11, &field_bytes(1, b"r"));
    assert!(codec::decode_snapshot(&snapshot(&[role.clone(), role])).is_err());

    // Auth methods (14) by name, binding rules (15) by id and of an existing method, with a
    // known bind type (tag 5: 1..=5).
    let method = |name: &[u8]| field_bytes(14, &field_bytes(1, name));
    let rule = |id: &[u8], method: &[u8], bind_type: u64| {
        field_bytes(15, &[field_bytes(1, id), field_bytes(3, method), field_varint(5, bind_type)].concat())
    };
    let ok = snapshot(&[method(b"m"), rule(b"r1", b"m", 1), rule(b"r2", b"m", 5)]);
    let acl = codec::decode_snapshot(&ok).expect("valid").acl().clone();
    assert_eq!((acl.auth_methods().len(), acl.binding_rules().len()), (1, 2));
    assert_eq!(acl.binding_rules()["r2"].bind_type, BindType::TemplatedPolicy);
    assert!(codec::decode_snapshot(&snapshot(&[method(b"m"), method(b"m")])).is_err(), "a method twice");
    let twice = snapshot(&[method(b"m"), rule(b"r", b"m", 1), rule(b"r", b"m", 2)]);
    assert!(codec::decode_snapshot(&twice).is_err(), "a rule twice");
    let err = codec::decode_snapshot(&snapshot(&[method(b"m"), rule(b"r", b"other", 1)])).expect_err("orphan");
    assert!(err.to_string().contains("missing auth method"), "{err}");
    for code in [0, 6, 1000] {
        let err = codec::decode_snapshot(&snapshot(&[method(b"m"), rule(b"r", b"m", code)])).expect_err("code");
        assert!(err.to_string().contains("bind type"), "{code}: {err}");
        let command = [version.clone(), field_bytes(28, &[field_bytes(1, b"r"), field_varint(5, code)].concat())];
        assert!(codec::decode_command(&command.concat()).is_err(), "{code}");
    }
    // A method record without its config decodes to the empty one.
    let bare = codec::decode_command(&[version.clone(), field_bytes(26, &field_bytes(1, b"m"))].concat());
    let Ok(Command::AclSetAuthMethod { method }) = bare else { panic!("{bare:?}") };
    assert_eq!((method.name.as_str(), &method.config), ("m", &JwtConfig::default()));
}

#[test]
fn nested_authorized_commands_decode_and_are_refused_when_applied() {
    let inner = Command::Authorized {
        accessor: "acc-root".into(),
        default: DefaultPolicy::Allow,
        command: Box::new(Command::KvTxn { txn: Txn::put("k", b"v".to_vec()) }),
    };
    let nested =
        Command::Authorized { accessor: "acc-root".into(), default: DefaultPolicy::Allow, command: Box::new(inner) };
    let decoded = codec::decode_command(&codec::encode_command(&nested)).expect("decodes");
    assert_eq!(decoded, nested);
    let mut registry = acl_registry();
    let before = registry.clone();
    assert!(matches!(registry.apply(&decoded).response, Err(ApplyError::Invalid(_))));
    assert_eq!(registry, before);

    // Nesting is bounded by prost's recursion limit (100 messages: two per level): beyond it
    // decoding is an error, not a stack overflow.
    let nest = |depth: usize| {
        let mut deep = Command::RevokeSession { session: SessionId::new(1) };
        for _ in 0..depth {
            deep = Command::Authorized { accessor: "a".into(), default: DefaultPolicy::Deny, command: Box::new(deep) };
        }
        deep
    };
    let shallow = nest(40);
    assert_eq!(codec::decode_command(&codec::encode_command(&shallow)).expect("40 levels decode"), shallow);
    let deep = nest(120);
    assert!(codec::decode_command(&codec::encode_command(&deep)).is_err());
    assert!(codec::decode_commands(&codec::encode_commands(std::slice::from_ref(&deep))).is_err());
}

// Generated ACL commands.

const ACL_NAMES: &[&str] = &["", "a", "app/", "app/secret", "web", "ünï", "x y"];

fn arb_level() -> impl Strategy<Value = Level> {
    prop::sample::select(vec![Level::Deny, Level::List, Level::Read, Level::Write])
}

fn arb_rules() -> impl Strategy<Value = Rules> {
    prop::collection::vec(
        (prop::sample::select(Resource::ALL.to_vec()), pick(ACL_NAMES), any::<bool>(), arb_level()),
        0..12,
    )
    .prop_map(|list| {
        let mut rules = Rules::new();
        for (resource, name, prefix, level) in list {
            rules.add(resource, Some(name), prefix, level);
        }
        rules
    })
}

fn arb_strings() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(pick(ACL_NAMES).prop_map(String::from), 0..3)
}

fn arb_grants() -> impl Strategy<Value = Grants> {
    (
        arb_strings(),
        prop::collection::vec((pick(ACL_NAMES), arb_strings()), 0..3),
        prop::collection::vec((pick(ACL_NAMES), pick(ACL_NAMES)), 0..3),
        prop::collection::vec((pick(ACL_NAMES), prop::option::of(pick(ACL_NAMES)), arb_strings()), 0..3),
    )
        .prop_map(|(policies, services, nodes, templated)| Grants {
            policies,
            service_identities: services
                .into_iter()
                .map(|(s, datacenters)| ServiceIdentity { service: s.into(), datacenters })
                .collect(),
            node_identities: nodes
                .into_iter()
                .map(|(n, dc)| NodeIdentity { node: n.into(), datacenter: dc.into() })
                .collect(),
            templated_policies: templated
                .into_iter()
                .map(|(t, name, datacenters)| TemplatedPolicy {
                    template: t.into(),
                    name: name.map(String::from),
                    datacenters,
                })
                .collect(),
        })
}

fn arb_token() -> impl Strategy<Value = Token> {
    (
        (pick(ACL_NAMES), pick(ACL_NAMES), pick(ACL_NAMES), arb_grants(), arb_strings(), any::<bool>()),
        (any::<Option<u64>>(), any::<u64>(), prop::option::of(pick(ACL_NAMES)), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (accessor, secret, description, grants, roles, local),
                (expiration_ms, create_ms, auth_method, ci, mi),
            )| {
                Token {
                    accessor: accessor.into(),
                    secret: secret.into(),
                    description: description.into(),
                    grants,
                    roles,
                    local,
                    expiration_ms,
                    create_ms,
                    auth_method: auth_method.map(String::from),
                    create_index: ci,
                    modify_index: mi,
                }
            },
        )
}

fn arb_acl_command() -> impl Strategy<Value = Command> {
    let policy = (pick(ACL_NAMES), pick(ACL_NAMES), arb_rules(), arb_strings(), any::<u64>(), any::<u64>()).prop_map(
        |(id, name, rules, datacenters, ci, mi)| Policy {
            id: id.into(),
            name: name.into(),
            description: "d".into(),
            rules_text: "text".into(),
            rules,
            datacenters,
            create_index: ci,
            modify_index: mi,
        },
    );
    let role = (pick(ACL_NAMES), pick(ACL_NAMES), arb_grants(), any::<u64>(), any::<u64>()).prop_map(
        |(id, name, grants, ci, mi)| Role {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            grants,
            create_index: ci,
            modify_index: mi,
        },
    );
    let method = (
        (pick(ACL_NAMES), pick(ACL_NAMES), any::<Option<u64>>(), arb_strings(), arb_strings()),
        (
            prop::collection::btree_map(
                pick(ACL_NAMES).prop_map(String::from),
                pick(ACL_NAMES).prop_map(String::from),
                0..3,
            ),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<u64>(),
        ),
    )
        .prop_map(|((name, issuer, max_token_ttl_ms, keys, audiences), (claims, skew, exp, nbf, index))| AuthMethod {
            name: name.into(),
            method_type: "jwt".into(),
            display_name: issuer.into(),
            description: String::new(),
            max_token_ttl_ms,
            token_locality: "local".into(),
            config: JwtConfig {
                validation_pub_keys: keys,
                bound_issuer: issuer.into(),
                bound_audiences: audiences.clone(),
                claim_mappings: claims.clone(),
                list_claim_mappings: claims,
                supported_algs: audiences,
                clock_skew_leeway_ms: skew,
                expiration_leeway_ms: exp,
                not_before_leeway_ms: nbf,
            },
            create_index: index,
            modify_index: index,
        });
    let rule = (
        pick(ACL_NAMES),
        pick(ACL_NAMES),
        pick(ACL_NAMES),
        prop::sample::select(BIND_TYPES.to_vec()),
        prop::option::of(pick(ACL_NAMES)),
        any::<u64>(),
    )
        .prop_map(|(id, method, selector, bind_type, bind_vars, index)| BindingRule {
            id: id.into(),
            description: selector.into(),
            auth_method: method.into(),
            selector: selector.into(),
            bind_type,
            bind_name: method.into(),
            bind_vars: bind_vars.map(String::from),
            create_index: index,
            modify_index: index,
        });
    let flat = prop_oneof![
        method.prop_map(|method| Command::AclSetAuthMethod { method }),
        pick(ACL_NAMES).prop_map(|name| Command::AclDeleteAuthMethod { name: name.into() }),
        rule.prop_map(|rule| Command::AclSetBindingRule { rule }),
        pick(ACL_NAMES).prop_map(|id| Command::AclDeleteBindingRule { id: id.into() }),
        arb_token().prop_map(|token| Command::AclBootstrap { token }),
        arb_token().prop_map(|token| Command::AclSetToken { token }),
        pick(ACL_NAMES).prop_map(|a| Command::AclDeleteToken { accessor: a.into() }),
        policy.prop_map(|policy| Command::AclSetPolicy { policy }),
        pick(ACL_NAMES).prop_map(|id| Command::AclDeletePolicy { id: id.into() }),
        role.prop_map(|role| Command::AclSetRole { role }),
        pick(ACL_NAMES).prop_map(|id| Command::AclDeleteRole { id: id.into() }),
        arb_strings().prop_map(|accessors| Command::AclExpireTokens { accessors }),
    ];
    let wrapped = prop_oneof![flat.clone(), arb_command()];
    let default = prop::sample::select(vec![DefaultPolicy::Allow, DefaultPolicy::Deny]);
    prop_oneof![
        3 => flat,
        1 => (pick(ACL_NAMES), default, wrapped)
            .prop_map(|(accessor, default, command)| Command::Authorized {
                accessor: accessor.into(),
                default,
                command: Box::new(command),
            }),
    ]
}

proptest! {
    #[test]
    fn generated_acl_commands_round_trip(commands in prop::collection::vec(arb_acl_command(), 1..6)) {
        for command in &commands {
            prop_assert_eq!(&codec::decode_command(&codec::encode_command(command)).expect("decodes"), command);
        }
        prop_assert_eq!(codec::decode_commands(&codec::encode_commands(&commands)).expect("batch decodes"), commands);
    }
}
