//! The key/value store in the state machine: puts, compare-and-set, prefix deletes, reads in
//! transactions, keys bound to sessions, revisions, refusals, and the codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waggle_core::{
    ApplyError, Command, Compare, CompareOp, CompareTarget, Effect, KvOp, OpResult, Registry, SessionId, Ttl, Txn,
    TxnResult, codec,
};

fn run(r: &mut Registry, txn: Txn) -> Result<(u64, TxnResult), ApplyError> {
    let command = Command::KvTxn { txn };
    let bytes = codec::encode_commands(std::slice::from_ref(&command));
    assert_eq!(codec::decode_commands(&bytes).unwrap(), vec![command.clone()], "the command survives the codec");
    let outcome = r.apply(&command);
    outcome.response.map(|a| (a.revision.get(), a.txn.expect("a txn result")))
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
    assert_eq!(outcome.response.as_ref().unwrap().revision.get(), 5);
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
    r.apply(&Command::CreateSession { session: s, ttl: Ttl::DEFAULT }).response.unwrap();
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
