//! The key/value store in the state machine: puts, compare-and-set, prefix deletes, reads in
//! transactions, keys bound to sessions, revisions, refusals, and the codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waggle_core::{
    Applied, ApplyError, Command, Compare, CompareOp, CompareTarget, Effect, KvOp, OpResult, Registry, SessionId, Ttl,
    Txn, TxnResult, codec,
};

fn run(r: &mut Registry, txn: Txn) -> Result<(u64, TxnResult), ApplyError> {
    let command = Command::KvTxn { txn };
    let bytes = codec::encode_commands(std::slice::from_ref(&command));
    assert_eq!(codec::decode_commands(&bytes).unwrap(), vec![command.clone()], "the command survives the codec");
    let outcome = r.apply(&command);
    outcome.response.map(|a| (a.revision().get(), txn_result(a)))
}

/// The transaction result an [`Applied`] carries (a `KvTxn` always answers one).
fn txn_result(applied: Applied) -> TxnResult {
    match applied {
        Applied::Txn { result, .. } => result,
        other => panic!("a txn result, not {other:?}"),
    }
}

fn put(key: &str, value: &str) -> KvOp {
    KvOp::Put { key: key.into(), value: value.as_bytes().to_vec(), flags: 0, session: None }
}

fn get(key: &str, prefix: bool) -> KvOp {
    KvOp::Get { key: key.into(), prefix }
}

fn modified(key: &str, revision: u64) -> Compare {
    Compare { key: key.into(), target: CompareTarget::ModifyRevision(revision), op: CompareOp::Equal }
}

fn value(r: &Registry, key: &str) -> Option<String> {
    r.kv().get(key).map(|e| String::from_utf8(e.value.to_vec()).unwrap())
}

#[test]
fn puts_cas_deletes_and_reads() {
    let mut r = Registry::new();
    let (rev, result) = run(&mut r, Txn::put("app/a", "1")).unwrap();
    assert_eq!((rev, result.succeeded), (2, true), "the registry starts at revision 1");
    let entry = r.kv().get("app/a").unwrap().clone();
    assert_eq!((entry.create_revision.get(), entry.modify_revision.get(), entry.version), (2, 2, 1));

    // Create-only: modify revision 0 means "must not exist".
    let create = |v: &str| Txn {
        guard: None,
        compares: vec![modified("app/a", 0)],
        success: vec![put("app/a", v)],
        failure: vec![get("app/a", false)],
    };
    let (rev, result) = run(&mut r, create("2")).unwrap();
    assert_eq!(rev, 2, "a failed compare that only reads consumes no revision");
    assert!(!result.succeeded);
    assert!(matches!(&result.results[0], OpResult::Get { entries } if entries.len() == 1));
    // CAS on the current modify revision; a stale one fails.
    let cas = |at: u64, v: &str| Txn {
        guard: None,
        compares: vec![modified("app/a", at)],
        success: vec![put("app/a", v)],
        failure: vec![],
    };
    assert_eq!(run(&mut r, cas(2, "2")).unwrap().0, 3);
    assert!(!run(&mut r, cas(2, "3")).unwrap().1.succeeded);
    assert_eq!(value(&r, "app/a").as_deref(), Some("2"));
    let entry = r.kv().get("app/a").unwrap().clone();
    assert_eq!((entry.create_revision.get(), entry.modify_revision.get(), entry.version), (2, 3, 2));

    // Several writes in one transaction share one revision; a get sees the earlier ops.
    let many = Txn {
        success: vec![put("app/b", "x"), put("app/c", "y"), put("other", "z"), get("app/", true)],
        ..Default::default()
    };
    let (rev, result) = run(&mut r, many).unwrap();
    assert_eq!(rev, 4);
    assert!(matches!(&result.results[3], OpResult::Get { entries }
        if entries.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>() == ["app/a", "app/b", "app/c"]));
    assert_eq!(r.kv().get("app/c").unwrap().modify_revision.get(), 4);

    // A prefix delete removes exactly the keys under it.
    let outcome = r.apply(&Command::KvTxn {
        txn: Txn { success: vec![KvOp::Delete { key: "app/".into(), prefix: true }], ..Default::default() },
    });
    assert_eq!(outcome.response.as_ref().unwrap().revision().get(), 5);
    assert_eq!(outcome.effects.iter().filter(|e| matches!(e, Effect::KvChanged { entry: None, .. })).count(), 3);
    assert_eq!(r.kv().keys().collect::<Vec<_>>(), ["other"]);
    // Deleting nothing consumes no revision.
    let nothing = Txn { success: vec![KvOp::Delete { key: "app/".into(), prefix: true }], ..Default::default() };
    assert_eq!(run(&mut r, nothing).unwrap().0, 5);

    // Refused: bad keys, too many operations; nothing changes.
    let before = r.clone();
    assert!(matches!(run(&mut r, Txn::put("/abs", "v")), Err(ApplyError::Invalid(e)) if e.field == "key"));
    let big = Txn { success: vec![get("a", false); 65], ..Default::default() };
    assert!(matches!(run(&mut r, big), Err(ApplyError::Invalid(e)) if e.field == "txn"));
    assert_eq!(r, before);

    // The store survives a snapshot.
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
}

#[test]
fn keys_bound_to_a_session_go_with_it() {
    let mut r = Registry::new();
    let s = SessionId::new(9);
    r.apply(&Command::CreateSession { session: s, ttl: Ttl::DEFAULT, options: Default::default() }).response.unwrap();
    let bound = |key: &str, session| Txn {
        success: vec![KvOp::Put { key: key.into(), value: b"v".to_vec(), flags: 7, session }],
        ..Default::default()
    };
    run(&mut r, bound("lock/a", Some(s))).unwrap();
    run(&mut r, bound("lock/b", Some(s))).unwrap();
    run(&mut r, bound("lock/b", None)).unwrap(); // unbound again: survives the session
    assert_eq!(r.kv().get("lock/a").unwrap().flags, 7);
    // A session that does not exist (or the agent's) is refused.
    assert_eq!(run(&mut r, bound("x", Some(SessionId::new(4)))), Err(ApplyError::SessionNotFound(SessionId::new(4))));
    assert!(run(&mut r, bound("x", Some(SessionId::AGENT))).is_err());
    let compare_session = Txn {
        compares: vec![Compare { key: "lock/a".into(), target: CompareTarget::Session(9), op: CompareOp::Equal }],
        ..Default::default()
    };
    assert!(run(&mut r, compare_session).unwrap().1.succeeded);
    // The snapshot keeps the binding.
    let mut restored = codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap();
    assert_eq!(restored, r);

    let outcome = r.apply(&Command::ExpireSessions { sessions: vec![s] });
    assert!(outcome.effects.iter().any(|e| matches!(e, Effect::KvChanged { key, entry: None, .. } if key == "lock/a")));
    assert_eq!(r.kv().keys().collect::<Vec<_>>(), ["lock/b"]);
    restored.apply(&Command::RevokeSession { session: s }).response.unwrap();
    assert_eq!(restored.kv().keys().collect::<Vec<_>>(), ["lock/b"], "revoking does the same");
}

fn consul_session(r: &mut Registry, id: u64, behavior: waggle_core::KeyBehavior, lock_delay_ms: u64) -> SessionId {
    let s = SessionId::new(id);
    let options = waggle_core::SessionOptions { behavior, lock_delay_ms, ..Default::default() };
    r.apply(&Command::CreateSession { session: s, ttl: Ttl::DEFAULT, options }).response.unwrap();
    s
}

fn acquire(key: &str, value: &str, session: SessionId) -> Txn {
    let op = KvOp::Acquire { key: key.into(), value: value.into(), flags: 0, session };
    Txn { success: vec![op], ..Default::default() }
}

fn release(key: &str, session: SessionId) -> Txn {
    let op = KvOp::Release { key: key.into(), value: Vec::new(), flags: 3, session };
    Txn { success: vec![op], ..Default::default() }
}

#[test]
fn acquire_and_release_keep_a_lock_index_and_abort_when_refused() {
    use waggle_core::KeyBehavior::Release;
    let mut r = Registry::new();
    let (a, b) = (consul_session(&mut r, 1, Release, 0), consul_session(&mut r, 2, Release, 0));
    let (rev, result) = run(&mut r, acquire("leader", "a", a)).unwrap();
    assert!(result.succeeded && result.aborted.is_none());
    let entry = r.kv().get("leader").unwrap().clone();
    assert_eq!((entry.session, entry.lock_index, entry.modify_revision.get()), (Some(a), 1, rev));
    // The holder may acquire again (new value, same lock index); another session may not.
    run(&mut r, acquire("leader", "a2", a)).unwrap();
    assert_eq!((value(&r, "leader").as_deref(), r.kv()["leader"].lock_index), (Some("a2"), 1));
    let before = r.clone();
    let (rev_b, refused) = run(&mut r, acquire("leader", "b", b)).unwrap();
    assert_eq!((refused.succeeded, refused.aborted, rev_b), (false, Some(0), r.revision().get()));
    assert_eq!(r, before, "a refused acquire changes nothing");
    // Releasing needs the holder; a release writes the value and flags and keeps the index.
    assert_eq!(run(&mut r, release("leader", b)).unwrap().1.aborted, Some(0));
    assert_eq!(run(&mut r, release("missing", a)).unwrap().1.aborted, Some(0));
    assert!(run(&mut r, release("leader", a)).unwrap().1.succeeded);
    let entry = r.kv()["leader"].clone();
    assert_eq!((entry.session, entry.lock_index, entry.flags, entry.value.len()), (None, 1, 3, 0));
    assert!(r.sessions()[&a].keys.is_empty(), "the release unbinds the key from the session");
    assert!(run(&mut r, acquire("leader", "b", b)).unwrap().1.succeeded);
    assert_eq!(r.kv()["leader"].lock_index, 2, "a new holder increments the lock index");
    // A plain set keeps the holder; an acquire for a missing session is an error.
    let set = KvOp::Set { key: "leader".into(), value: b"x".to_vec(), flags: 0 };
    run(&mut r, Txn { success: vec![set], ..Default::default() }).unwrap();
    assert_eq!((r.kv()["leader"].session, r.kv()["leader"].lock_index), (Some(b), 2));
    assert_eq!(
        run(&mut r, acquire("k", "v", SessionId::new(77))),
        Err(ApplyError::SessionNotFound(SessionId::new(77)))
    );
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
}

#[test]
fn an_abort_rolls_back_the_whole_branch() {
    let mut r = Registry::new();
    let a = consul_session(&mut r, 1, waggle_core::KeyBehavior::Release, 0);
    run(&mut r, Txn::put("x", "1")).unwrap();
    let before = r.clone();
    let txn = Txn {
        success: vec![
            KvOp::Put { key: "bound".into(), value: b"v".to_vec(), flags: 0, session: Some(a) },
            KvOp::Delete { key: "x".into(), prefix: false },
            KvOp::Assert(modified("x", 1)),
        ],
        ..Default::default()
    };
    let command = Command::KvTxn { txn };
    let outcome = r.apply(&command);
    let result = txn_result(outcome.response.unwrap());
    assert_eq!((result.succeeded, result.aborted, result.results.len()), (false, Some(2), 0));
    assert!(outcome.effects.is_empty(), "no effects from an aborted transaction");
    assert_eq!(r, before, "nothing changed: store, session bindings, revision");
    // The same assert at the right revision lets it through.
    let x_rev = r.kv()["x"].modify_revision.get();
    let ok = Txn { success: vec![KvOp::Assert(modified("x", x_rev)), put("y", "2")], ..Default::default() };
    let (_, result) = run(&mut r, ok).unwrap();
    assert!(matches!(&result.results[0], OpResult::Entry { entry: Some(e) } if e.modify_revision.get() == x_rev));
}

#[test]
fn session_behavior_and_lock_delay_decide_what_happens_to_its_keys() {
    use waggle_core::{DelayTarget, KeyBehavior};
    let mut r = Registry::new();
    let rel = consul_session(&mut r, 1, KeyBehavior::Release, 15_000);
    let del = consul_session(&mut r, 2, KeyBehavior::Delete, 0);
    let other = consul_session(&mut r, 3, KeyBehavior::Release, 0);
    run(&mut r, acquire("held/rel", "1", rel)).unwrap();
    run(&mut r, acquire("held/del", "2", del)).unwrap();
    let outcome = r.apply(&Command::ExpireSessions { sessions: vec![rel, del] });
    let kept = r.kv().get("held/rel").expect("a released key stays");
    assert_eq!((kept.session, kept.lock_index, kept.modify_revision), (None, 1, r.revision()));
    assert!(r.kv().get("held/del").is_none(), "a delete session's key goes");
    let started = DelayTarget::Key { key: "held/rel".into(), since: r.revision().get() };
    assert!(outcome.effects.contains(&Effect::LockDelayStarted { target: started.clone(), ms: 15_000 }));
    assert_eq!(r.lock_delays(), vec![(started.clone(), 15_000)]);
    // Under the delay nobody acquires it; the snapshot keeps the delay.
    assert_eq!(run(&mut r, acquire("held/rel", "x", other)).unwrap().1.aborted, Some(0));
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
    // A lift for an earlier delay of the key (another revision) leaves this one alone.
    let stale = DelayTarget::Key { key: "held/rel".into(), since: 1 };
    let before = r.clone();
    r.apply(&Command::LiftLockDelays { delays: vec![stale] });
    assert_eq!(r, before, "a stale lift changes nothing");
    let never = DelayTarget::Key { key: "never".into(), since: 1 };
    let lift = Command::LiftLockDelays { delays: vec![started.clone(), never] };
    assert_eq!(codec::decode_command(&codec::encode_command(&lift)).unwrap(), lift);
    let before = r.revision();
    let outcome = r.apply(&lift);
    assert_eq!(outcome.effects, vec![Effect::LockDelayLifted { target: started }]);
    assert_eq!(r.revision().get(), before.get() + 1);
    assert!(r.lock_delays().is_empty());
    assert!(run(&mut r, acquire("held/rel", "x", other)).unwrap().1.succeeded);
    assert_eq!(r.kv()["held/rel"].lock_index, 2);
    // Lifting again changes nothing and consumes no revision.
    let rev = r.revision();
    r.apply(&Command::LiftLockDelays { delays: vec![DelayTarget::Key { key: "held/rel".into(), since: 1 }] });
    assert_eq!(r.revision(), rev);
}

#[test]
fn read_only_transactions_answer_from_a_copy_as_applying_them_would() {
    use waggle_core::{Guard, read_only_txn};
    let mut r = Registry::new();
    let s = consul_session(&mut r, 1, waggle_core::KeyBehavior::Release, 0);
    run(&mut r, Txn::put("a/1", "x")).unwrap();
    run(&mut r, Txn::put("a/2", "y")).unwrap();
    run(&mut r, acquire("l", "v", s)).unwrap();
    let rev = r.kv()["a/1"].modify_revision.get();
    let exists = |k: &str| Compare { key: k.into(), target: CompareTarget::ModifyRevision(0), op: CompareOp::NotEqual };
    let cases = [
        Txn { success: vec![get("a/", true), get("a/1", false)], ..Default::default() },
        Txn { compares: vec![modified("a/1", rev)], success: vec![get("a/2", false)], ..Default::default() },
        Txn { compares: vec![modified("a/1", rev + 9)], failure: vec![get("missing", false)], ..Default::default() },
        Txn {
            success: vec![KvOp::Assert(exists("a/1")), KvOp::Assert(exists("nope")), get("a/", true)],
            ..Default::default()
        },
        Txn { guard: Some(Guard { lock: "none".into(), token: 3 }), ..Default::default() },
    ];
    for txn in cases {
        assert!(txn.is_read_only());
        let mut applied = r.clone();
        let expected = applied.apply(&Command::KvTxn { txn: txn.clone() }).response.map(txn_result);
        assert_eq!(applied.revision(), r.revision(), "a read-only transaction writes nothing");
        assert_eq!(read_only_txn(&txn, r.kv(), r.locks()), expected, "{txn:?}");
    }
    let writes = Txn::put("a/3", "z");
    assert!(!writes.is_read_only());
    assert!(read_only_txn(&writes, r.kv(), r.locks()).is_err(), "writes must go through the log");
}
