//! Locks and semaphores in the state machine: grants with fencing tokens, FIFO waiters,
//! release on session end, guarded KV writes, limits, refusals and the codec.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use waggle_core::{Applied, ApplyError, Command, Guard, LockOutcome, Registry, SessionId, Ttl, Txn, codec};

fn session(r: &mut Registry, id: u64) -> SessionId {
    let s = SessionId::new(id);
    r.apply(&Command::CreateSession { session: s, ttl: Ttl::DEFAULT, options: Default::default() }).response.unwrap();
    s
}

/// The lock outcome an [`Applied`] carries, if it is a lock command's answer.
fn lock_outcome(applied: Applied) -> Option<LockOutcome> {
    match applied {
        Applied::Lock { outcome, .. } => Some(outcome),
        _ => None,
    }
}

fn acquire(r: &mut Registry, lock: &str, s: SessionId, limit: u32, wait: bool) -> Result<LockOutcome, ApplyError> {
    let command = Command::LockAcquire { lock: lock.into(), session: s, limit, wait, value: b"v".to_vec() };
    let bytes = codec::encode_commands(std::slice::from_ref(&command));
    assert_eq!(codec::decode_commands(&bytes).unwrap(), vec![command.clone()]);
    r.apply(&command).response.map(|a| lock_outcome(a).expect("a lock outcome"))
}

fn release(r: &mut Registry, lock: &str, s: SessionId) {
    r.apply(&Command::LockRelease { lock: lock.into(), session: s, waiting_only: false }).response.unwrap();
}

fn holder_token(r: &Registry, lock: &str, s: SessionId) -> Option<u64> {
    r.locks().get(lock).and_then(|l| l.held_by(s)).map(|h| h.token)
}

fn guarded_put(r: &mut Registry, lock: &str, token: u64) -> Result<(), ApplyError> {
    let txn = Txn { guard: Some(Guard { lock: lock.into(), token }), ..Txn::put("counter", "1") };
    r.apply(&Command::KvTxn { txn }).response.map(drop)
}

#[test]
fn a_mutex_grants_in_fifo_order_with_growing_tokens() {
    let mut r = Registry::new();
    let (a, b, c) = (session(&mut r, 1), session(&mut r, 2), session(&mut r, 3));
    let LockOutcome::Held { token: ta } = acquire(&mut r, "job", a, 1, true).unwrap() else { panic!("a holds") };
    assert_eq!(ta, r.revision().get(), "the token is the revision of the grant");
    assert_eq!(acquire(&mut r, "job", a, 1, true).unwrap(), LockOutcome::Held { token: ta }, "idempotent");
    assert_eq!(acquire(&mut r, "job", b, 1, false).unwrap(), LockOutcome::Busy, "try does not queue");
    assert_eq!(acquire(&mut r, "job", c, 1, true).unwrap(), LockOutcome::Waiting { position: 0 });
    assert_eq!(acquire(&mut r, "job", b, 1, true).unwrap(), LockOutcome::Waiting { position: 1 });
    assert_eq!(guarded_put(&mut r, "job", ta), Ok(()));

    // Released: the first waiter (c, not b) gets it, with a larger token; a's token is fenced.
    release(&mut r, "job", a);
    let tc = holder_token(&r, "job", c).expect("c is next");
    assert!(tc > ta);
    assert_eq!(guarded_put(&mut r, "job", ta), Err(ApplyError::Fenced { lock: "job".into(), token: ta }));
    assert_eq!(guarded_put(&mut r, "job", tc), Ok(()));
    assert_eq!(guarded_put(&mut r, "nope", tc), Err(ApplyError::Fenced { lock: "nope".into(), token: tc }));

    // The holder's session expires: its grant goes to b at once.
    r.apply(&Command::ExpireSessions { sessions: vec![c] }).response.unwrap();
    let tb = holder_token(&r, "job", b).expect("b is next");
    assert!(tb > tc);
    // The state survives a snapshot.
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
    // The holder may change its value (an election leader proclaiming); nobody else may.
    let proclaim = |r: &mut Registry, s, token| {
        let command = Command::LockProclaim { lock: "job".into(), session: s, token, value: b"new".to_vec() };
        let bytes = codec::encode_commands(std::slice::from_ref(&command));
        assert_eq!(codec::decode_commands(&bytes).unwrap(), vec![command.clone()]);
        r.apply(&command).response.map(lock_outcome)
    };
    assert_eq!(proclaim(&mut r, b, tb), Ok(Some(LockOutcome::Held { token: tb })));
    assert_eq!(&*r.locks()["job"].holders[0].value, b"new");
    assert_eq!(proclaim(&mut r, a, tb), Err(ApplyError::Fenced { lock: "job".into(), token: tb }));
    assert_eq!(proclaim(&mut r, b, ta), Err(ApplyError::Fenced { lock: "job".into(), token: ta }));
    // The last release frees the lock entirely.
    release(&mut r, "job", b);
    assert!(r.locks().is_empty());
    assert!(r.sessions().values().all(|s| s.locks.is_empty()));
}

#[test]
fn semaphores_admit_their_limit_and_refusals_change_nothing() {
    let mut r = Registry::new();
    let s: Vec<SessionId> = (1..=4).map(|n| session(&mut r, n)).collect();
    assert!(matches!(acquire(&mut r, "pool", s[0], 2, true).unwrap(), LockOutcome::Held { .. }));
    assert!(matches!(acquire(&mut r, "pool", s[1], 2, true).unwrap(), LockOutcome::Held { .. }));
    assert_eq!(acquire(&mut r, "pool", s[2], 2, true).unwrap(), LockOutcome::Waiting { position: 0 });
    // Giving up a wait keeps a grant that came first, and leaves the line otherwise.
    let give_up = |r: &mut Registry, s| {
        let command = Command::LockRelease { lock: "pool".into(), session: s, waiting_only: true };
        lock_outcome(r.apply(&command).response.unwrap()).unwrap()
    };
    assert!(matches!(give_up(&mut r, s[0]), LockOutcome::Held { .. }));
    assert_eq!(give_up(&mut r, s[2]), LockOutcome::Released);
    assert!(r.locks()["pool"].waiters.is_empty());
    let before = r.clone();
    // Every acquirer must agree on the limit; unknown sessions and bad names are refused.
    assert!(matches!(acquire(&mut r, "pool", s[3], 3, true), Err(ApplyError::Invalid(e)) if e.field == "limit"));
    assert!(matches!(acquire(&mut r, "pool", SessionId::new(99), 2, true), Err(ApplyError::SessionNotFound(_))));
    assert!(matches!(acquire(&mut r, "pool", SessionId::AGENT, 2, true), Err(ApplyError::SessionNotFound(_))));
    assert!(matches!(acquire(&mut r, "/bad", s[3], 1, true), Err(ApplyError::Invalid(e)) if e.field == "lock"));
    assert!(matches!(acquire(&mut r, "x", s[3], 0, true), Err(ApplyError::Invalid(e)) if e.field == "limit"));
    // Releasing what one does not hold changes nothing.
    release(&mut r, "pool", s[3]);
    assert_eq!(r, before);
    // Two holders leaving in one command: both waiters are granted, with distinct tokens.
    let mut r2 = Registry::new();
    let t: Vec<SessionId> = (1..=4).map(|n| session(&mut r2, n)).collect();
    for s in &t {
        acquire(&mut r2, "pool", *s, 2, true).unwrap();
    }
    r2.apply(&Command::ExpireSessions { sessions: vec![t[0], t[1]] }).response.unwrap();
    let tokens: Vec<u64> = r2.locks()["pool"].holders.iter().map(|h| h.token).collect();
    assert_eq!(tokens.len(), 2);
    assert!(tokens[0] < tokens[1], "unique and growing: {tokens:?}");
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r2)).unwrap(), r2);
    // Revoking a holder admits nobody new here (no waiters), and the slot is free again.
    r.apply(&Command::RevokeSession { session: s[0] }).response.unwrap();
    assert!(matches!(acquire(&mut r, "pool", s[3], 2, false).unwrap(), LockOutcome::Held { .. }));
}

#[test]
fn a_lock_delay_keeps_an_expired_holders_slot_until_lifted() {
    use waggle_core::{DelayTarget, Effect, SessionOptions};
    let mut r = Registry::new();
    let a = SessionId::new(1);
    let options = SessionOptions { lock_delay_ms: 5_000, ..Default::default() };
    r.apply(&Command::CreateSession { session: a, ttl: Ttl::DEFAULT, options }).response.unwrap();
    let b = session(&mut r, 2);
    let c = session(&mut r, 3);
    let LockOutcome::Held { token } = acquire(&mut r, "job", a, 1, false).unwrap() else { panic!("free") };
    assert_eq!(acquire(&mut r, "job", b, 1, true).unwrap(), LockOutcome::Waiting { position: 0 });
    let outcome = r.apply(&Command::ExpireSessions { sessions: vec![a] });
    let slot = DelayTarget::Lock { lock: "job".into(), token };
    assert!(outcome.effects.contains(&Effect::LockDelayStarted { target: slot.clone(), ms: 5_000 }));
    assert_eq!(holder_token(&r, "job", b), None, "the waiter is not granted during the delay");
    assert_eq!(acquire(&mut r, "job", c, 1, false).unwrap(), LockOutcome::Busy);
    assert_eq!(guarded_put(&mut r, "job", token), Err(ApplyError::Fenced { lock: "job".into(), token }));
    assert_eq!(r.lock_delays(), vec![(slot.clone(), 5_000)]);
    assert_eq!(codec::decode_snapshot(&codec::encode_snapshot(&r)).unwrap(), r);
    r.apply(&Command::LiftLockDelays { delays: vec![slot] });
    let granted = holder_token(&r, "job", b).expect("granted once lifted");
    assert!(granted > token);
    // An explicit release never delays.
    release(&mut r, "job", b);
    assert!(r.locks().get("job").is_none());
}
