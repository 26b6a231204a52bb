//! Locks through the SDK against an in-process server: mutual exclusion of guarded
//! read-modify-write cycles, fencing of a paused ex-holder, FIFO hand-over, semaphores, and
//! a guard that notices its lock is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::Code;
use waggle_client::{Client, PutOptions};
use waggle_proto::v1::{self, lock_client::LockClient, registry_client::RegistryClient};
use waggle_server::{Server, ServerConfig};

async fn start(dir: &std::path::Path) -> Server {
    Server::start(ServerConfig::ephemeral(dir)).await.unwrap()
}

fn url(server: &Server) -> String {
    format!("http://{}", server.grpc_addr())
}

/// Waits until `n` sessions wait for `lock`.
async fn wait_in_line(server: &Server, lock: &str, n: usize) {
    let mut locks = LockClient::connect(url(server)).await.unwrap();
    let lined_up = async {
        while locks.inspect(v1::InspectRequest { name: lock.into() }).await.unwrap().into_inner().waiters.len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), lined_up).await.expect("in line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_increments_under_a_lock_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (url, tokens) = (url(&server), tokens.clone());
        workers.push(tokio::spawn(async move {
            let client = Client::connect(url).await.unwrap();
            let kv = client.kv();
            for _ in 0..5 {
                let guard = client.lock("counter-lock").acquire().await.unwrap();
                tokens.lock().unwrap().push(guard.token());
                // Read, then write through the guard: a lost lock would be refused.
                let n: u64 = match kv.get("counter").await.unwrap() {
                    Some(e) => String::from_utf8(e.value).unwrap().parse().unwrap(),
                    None => 0,
                };
                tokio::task::yield_now().await;
                let options = PutOptions { guard: Some(guard.guard()), ..Default::default() };
                kv.put_with("counter", (n + 1).to_string(), options).await.unwrap();
                guard.release().await.unwrap();
            }
            client.shutdown().await;
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let client = Client::connect(url(&server)).await.unwrap();
    let counter = client.kv().get("counter").await.unwrap().unwrap();
    assert_eq!(counter.value, b"30", "30 critical sections, 30 increments");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 30);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "tokens grow with every grant: {tokens:?}");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_holder_is_fenced_once_its_session_expires() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    // A: a raw session that never sends a keepalive (a process paused by GC, say).
    let mut registry = RegistryClient::connect(url(&server)).await.unwrap();
    let a = registry
        .create_session(v1::CreateSessionRequest { ttl_ms: Some(1_000), lock_delay_ms: None })
        .await
        .unwrap()
        .into_inner();
    let mut locks = LockClient::connect(url(&server)).await.unwrap();
    let grant = locks
        .acquire(v1::AcquireRequest { name: "job".into(), session_id: a.session_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(grant.acquired);
    // B waits in line; A's session expires and B is granted.
    let b = Client::connect(url(&server)).await.unwrap();
    let b_guard = tokio::time::timeout(Duration::from_secs(10), b.lock("job").acquire()).await.unwrap().unwrap();
    assert!(b_guard.token() > grant.token);
    // A wakes up and writes with its old token: refused.
    let old = PutOptions {
        guard: Some(waggle_client::Guard { lock: "job".into(), token: grant.token }),
        ..Default::default()
    };
    let refused = b.kv().put_with("output", "from A", old).await.unwrap_err();
    assert!(matches!(&refused, waggle_client::Error::Rpc(s) if s.code() == Code::FailedPrecondition), "{refused}");
    assert!(refused.to_string().contains("does not hold lock"), "{refused}");
    let ok = PutOptions { guard: Some(b_guard.guard()), ..Default::default() };
    b.kv().put_with("output", "from B", ok).await.unwrap();
    assert_eq!(b.kv().get("output").await.unwrap().unwrap().value, b"from B");
    b.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_delay_keeps_a_departed_holders_lock_from_the_next_waiter() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut config = waggle_client::ClientConfig::default();
    config.lock_delay = Duration::from_millis(1_500);
    let a = Client::connect_with(url(&server), config).await.unwrap();
    let a_guard = a.lock("singleton").acquire().await.unwrap();
    let b = Client::connect(url(&server)).await.unwrap();
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.lock("singleton").acquire().await.map(|g| (g.token(), std::time::Instant::now())) })
    };
    wait_in_line(&server, "singleton", 1).await;
    // A's session ends while it holds the lock: its slot stays taken for the lock-delay.
    let ended = std::time::Instant::now();
    a.shutdown().await;
    let mut locks = LockClient::connect(url(&server)).await.unwrap();
    let view = locks.inspect(v1::InspectRequest { name: "singleton".into() }).await.unwrap().into_inner();
    assert!(view.holders.is_empty() && view.waiters.len() == 1, "nobody holds it during the delay: {view:?}");
    let (token, granted) = tokio::time::timeout(Duration::from_secs(10), waiting).await.unwrap().unwrap().unwrap();
    assert!(granted.duration_since(ended) >= Duration::from_millis(1_400), "granted before the lock-delay ended");
    assert!(token > a_guard.token());
    // Out of range: refused when connecting, and by the server.
    let mut too_long = waggle_client::ClientConfig::default();
    too_long.lock_delay = Duration::from_secs(61);
    let Err(refused) = Client::connect_with(url(&server), too_long).await else {
        panic!("a 61 s lock-delay is accepted")
    };
    assert!(refused.to_string().contains("lock_delay"), "{refused}");
    let mut registry = RegistryClient::connect(url(&server)).await.unwrap();
    let status = registry
        .create_session(v1::CreateSessionRequest { ttl_ms: None, lock_delay_ms: Some(60_001) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status}");
    b.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_order_and_a_guard_notices_a_lost_lock() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let holder = Client::connect(url(&server)).await.unwrap();
    let first = holder.lock("q").acquire().await.unwrap();
    // Three clients line up, in a known order.
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiting = Vec::new();
    for n in 0..3 {
        let client = Client::connect(url(&server)).await.unwrap();
        let order = order.clone();
        waiting.push(tokio::spawn(async move {
            let guard = client.lock("q").acquire().await.unwrap();
            order.lock().unwrap().push(n);
            tokio::time::sleep(Duration::from_millis(50)).await;
            guard.release().await.unwrap();
            client.shutdown().await;
        }));
        wait_in_line(&server, "q", n + 1).await;
    }
    // A call that runs out of time with keep_waiting keeps its place; without, it leaves.
    let mut registry = RegistryClient::connect(url(&server)).await.unwrap();
    let mut raw = LockClient::connect(url(&server)).await.unwrap();
    let mut sessions = Vec::new();
    for keep_waiting in [true, false] {
        let s = registry
            .create_session(v1::CreateSessionRequest { ttl_ms: Some(60_000), lock_delay_ms: None })
            .await
            .unwrap();
        let s = s.into_inner().session_id;
        sessions.push(s);
        let req =
            v1::AcquireRequest { name: "q".into(), session_id: s, wait_ms: 100, keep_waiting, ..Default::default() };
        assert!(!raw.acquire(req).await.unwrap().into_inner().acquired);
    }
    let status = raw.inspect(v1::InspectRequest { name: "q".into() }).await.unwrap().into_inner();
    assert_eq!(status.waiters.len(), 4, "three clients and the one that kept its place: {status:?}");
    assert_eq!(status.waiters[3], sessions[0]);
    raw.release(v1::ReleaseRequest { name: "q".into(), session_id: sessions[0] }).await.unwrap();
    first.release().await.unwrap();
    for w in waiting {
        tokio::time::timeout(Duration::from_secs(10), w).await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2], "first come, first served");

    // A semaphore admits its limit.
    let pool = holder.semaphore("pool", 2);
    let other = Client::connect(url(&server)).await.unwrap();
    let third = Client::connect(url(&server)).await.unwrap();
    let _one = pool.try_acquire().await.unwrap().expect("slot 1");
    let _two = other.semaphore("pool", 2).try_acquire().await.unwrap().expect("slot 2");
    assert!(third.semaphore("pool", 2).try_acquire().await.unwrap().is_none(), "full");
    assert!(third.semaphore("pool", 3).try_acquire().await.is_err(), "every acquirer must agree on the limit");

    // The holder's session is revoked behind its back: the guard's lost() resolves.
    let guard = holder.lock("solo").acquire().await.unwrap();
    let session = guard.session();
    let mut registry = RegistryClient::connect(url(&server)).await.unwrap();
    registry.revoke_session(v1::RevokeSessionRequest { session_id: session.get() }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), guard.lost()).await.expect("the guard notices");
    for c in [holder, other, third] {
        c.shutdown().await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elections_hand_over_when_the_leader_resigns_or_dies() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let (a, b, c, watcher) = (
        Client::connect(url(&server)).await.unwrap(),
        Client::connect(url(&server)).await.unwrap(),
        Client::connect(url(&server)).await.unwrap(),
        Client::connect(url(&server)).await.unwrap(),
    );
    let election = watcher.election("primary");
    assert_eq!(election.leader().await.unwrap(), None);
    let mut changes = Box::pin(election.observe().await.unwrap());
    assert_eq!(changes.next().await.unwrap().unwrap(), None, "nobody leads yet");

    let lead_a = a.election("primary").campaign("a:1").await.unwrap();
    let seen = changes.next().await.unwrap().unwrap().unwrap();
    assert_eq!((seen.term, seen.value.as_slice()), (lead_a.term(), &b"a:1"[..]));
    // B campaigns and waits; A proclaims a new value, observers see it.
    let b_campaign = tokio::spawn(async move {
        let lead = b.election("primary").campaign("b:1").await.unwrap();
        (b, lead)
    });
    lead_a.proclaim("a:2").await.unwrap();
    wait_in_line(&server, "primary", 1).await;
    assert_eq!(changes.next().await.unwrap().unwrap().unwrap().value, b"a:2");
    // A resigns: B leads, with a larger term.
    let term_a = lead_a.term();
    lead_a.resign().await.unwrap();
    let (b, lead_b) = tokio::time::timeout(Duration::from_secs(10), b_campaign).await.unwrap().unwrap();
    assert!(lead_b.term() > term_a);
    let seen = changes.next().await.unwrap().unwrap().unwrap();
    assert_eq!((seen.term, seen.value.as_slice()), (lead_b.term(), &b"b:1"[..]));
    // B dies (its session ends): C, campaigning meanwhile, takes over.
    let c_campaign = tokio::spawn(async move { c.election("primary").campaign("c:1").await.unwrap() });
    wait_in_line(&server, "primary", 1).await;
    let term_b = lead_b.term();
    b.shutdown().await;
    let lead_c = tokio::time::timeout(Duration::from_secs(10), c_campaign).await.unwrap().unwrap();
    assert!(lead_c.term() > term_b);
    assert_eq!(election.leader().await.unwrap().unwrap().value, b"c:1");
    a.shutdown().await;
    watcher.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_prefix_reads_reach_the_sdk_and_huge_ones_are_refused_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let kv = client.kv();
    // 70 values of 500 KiB: a 6 MB read (past tonic's default 4 MiB) and a 35 MB one.
    let writes = (0..70u32).map(|n| {
        let kv = kv.clone();
        async move { kv.put(&format!("blob/{n:02}"), vec![n as u8; 500 * 1024]).await }
    });
    for written in futures_util::future::join_all(writes).await {
        written.unwrap();
    }
    let listed = kv.list("blob/0", false).await.unwrap();
    assert_eq!(listed.len(), 10);
    assert!(listed.iter().all(|e| e.value.len() == 500 * 1024));
    let refused = kv.list("blob/", false).await.unwrap_err();
    assert!(matches!(&refused, waggle_client::Error::Rpc(s) if s.code() == Code::ResourceExhausted), "{refused}");
    assert!(refused.to_string().contains("keys_only"), "{refused}");
    assert_eq!(kv.list("blob/", true).await.unwrap().len(), 70, "keys only fit");
    // So is a read-only transaction that would answer as much (it writes nothing).
    let reads = waggle_client::Txn {
        success: vec![waggle_client::KvOp::Get { key: "blob/".into(), prefix: true }],
        ..Default::default()
    };
    let refused = kv.txn(&reads).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("exceed"), "{refused}");
    client.shutdown().await;
    server.shutdown().await;
}
