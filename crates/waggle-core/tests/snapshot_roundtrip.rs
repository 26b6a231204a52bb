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
