//! Three nodes on loopback, replicated by openraft over the peer protocol: a write through
//! the leader reaches every node, losing the leader leaves a working cluster, and a write sent
//! to a follower is forwarded to the leader.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::timeout;
use tonic::transport::Channel;
use waggle_proto::v1::{self, registry_client::RegistryClient};
use waggle_server::{Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(15);

/// A free address for a peer listener bound later.
fn free_addr() -> SocketAddr {
    // Below the kernel's ephemeral range (32768 and up): no outgoing connection can take the
    // port between this check and the server's bind. A counter keeps this process's parallel
    // tests apart; the process id spreads consecutive test binaries.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 40) * 300;
    loop {
        let port = (base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 300) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("local addr");
        }
    }
}

async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    start_cluster_with(dirs, |_| {}).await
}

/// [`start_cluster`] with every member's configuration adjusted by `configure`.
async fn start_cluster_with(dirs: &[tempfile::TempDir], configure: impl Fn(&mut ServerConfig)) -> Vec<Server> {
    let peers: BTreeMap<u64, SocketAddr> = (1..=dirs.len() as u64).map(|id| (id, free_addr())).collect();
    let starts = dirs.iter().enumerate().map(|(i, dir)| {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.node_id = i as u64 + 1;
        config.peer_addr = Some(peers[&config.node_id]);
        config.initial_cluster = peers.clone();
        config.seed = Some(i as u64);
        configure(&mut config);
        async move { Server::start(config).await.expect("node starts") }
    });
    futures_util::future::join_all(starts).await
}

async fn rpc(server: &Server) -> RegistryClient<Channel> {
    RegistryClient::connect(format!("http://{}", server.grpc_addr())).await.expect("connects")
}

fn leader_of(servers: &[Server]) -> Option<usize> {
    servers.iter().position(|s| {
        let status = s.status();
        status.leader == Some(status.node_id)
    })
}

/// Waits (at most `WAIT`) until one of `servers` leads, and returns its index.
async fn wait_for_leader(servers: &[Server]) -> usize {
    let elected = async {
        loop {
            if let Some(leader) = leader_of(servers) {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, elected).await.expect("a leader")
}

/// Registers `address` through whichever node leads, retrying while an election settles
/// (what a client does: a node that does not lead refuses writes).
async fn register_via_leader(servers: &[Server], address: &str) {
    let attempt = async {
        loop {
            if let Some(leader) = leader_of(servers) {
                let mut client = rpc(&servers[leader]).await;
                let session =
                    client.create_session(v1::CreateSessionRequest { ttl_ms: Some(30_000), lock_delay_ms: None }).await;
                if let Ok(session) = session {
                    let session_id = session.into_inner().session_id;
                    let instance =
                        v1::Instance { service: "web".into(), address: address.into(), port: 80, ..Default::default() };
                    if client.register(v1::RegisterRequest { session_id, instance: Some(instance) }).await.is_ok() {
                        return;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, attempt).await.expect("a leader accepts the write");
}

async fn instances(server: &Server, service: &str) -> Vec<v1::Instance> {
    let request = v1::GetServiceRequest { service: service.into(), include_unhealthy: true, linearizable: false };
    match rpc(server).await.get_service(request).await {
        Ok(answer) => answer.into_inner().into_instances(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_and_survive_losing_the_leader() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = start_cluster(&dirs).await;
    assert!(leader_of(&servers).is_some(), "a leader after start-up");

    // A write through the leader is applied on every node.
    register_via_leader(&servers, "10.0.0.1").await;
    for server in &servers {
        let replicated = async {
            while instances(server, "web").await.len() != 1 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(WAIT, replicated).await.expect("the write reaches every node");
    }

    // Losing the leader: the other two elect a new one, which takes writes and still has the
    // instance.
    let leader = leader_of(&servers).expect("a leader");
    let old = servers.remove(leader);
    old.shutdown().await;
    let new = wait_for_leader(&servers).await;
    assert_eq!(instances(&servers[new], "web").await.len(), 1);
    register_via_leader(&servers, "10.0.0.2").await;

    // A write sent to a follower is forwarded to the leader.
    let new = leader_of(&servers).expect("a leader");
    let follower = &servers[1 - new];
    let mut client = rpc(follower).await;
    let session = client
        .create_session(v1::CreateSessionRequest { ttl_ms: Some(30_000), lock_delay_ms: None })
        .await
        .expect("forwarded");
    let session_id = session.into_inner().session_id;
    let instance = v1::Instance { service: "web".into(), address: "10.0.0.3".into(), port: 80, ..Default::default() };
    client.register(v1::RegisterRequest { session_id, instance: Some(instance) }).await.expect("forwarded");
    for server in &servers {
        let replicated = async {
            while instances(server, "web").await.len() != 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        timeout(WAIT, replicated).await.expect("the writes reach both survivors");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_sent_to_a_follower_keep_the_session_alive() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let follower = &servers[(leader + 1) % 3];
    let mut client = rpc(follower).await;
    // A 1 s session, created and kept alive through a follower for 3 s.
    let session = client
        .create_session(v1::CreateSessionRequest { ttl_ms: Some(1_000), lock_delay_ms: None })
        .await
        .expect("forwarded");
    let session_id = session.into_inner().session_id;
    let instance = v1::Instance { service: "api".into(), address: "10.0.0.9".into(), port: 80, ..Default::default() };
    client.register(v1::RegisterRequest { session_id, instance: Some(instance) }).await.expect("forwarded");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = client.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    for _ in 0..10 {
        tx.send(v1::KeepAliveRequest { session_id }).await.unwrap();
        let answer = answers.message().await.unwrap().expect("an answer");
        assert!(answer.found, "the leader knows the session");
        assert_eq!(answer.ttl_ms, 1_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(instances(&servers[leader], "api").await.len(), 1, "kept alive for 3 s with a 1 s TTL");
    // Without keepalives it expires on the leader, everywhere.
    drop(tx);
    let expired = async {
        while !instances(follower, "api").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(WAIT, expired).await.expect("the session expires once keepalives stop");
}

#[tokio::test]
async fn a_data_dir_refuses_a_conflicting_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    server.shutdown().await;

    let mut wrong_id = ServerConfig::ephemeral(dir.path());
    wrong_id.node_id = 2;
    let error = Server::start(wrong_id).await.err().expect("refused").to_string();
    assert!(error.contains("belongs to node 1"), "{error}");

    let mut now_clustered = ServerConfig::ephemeral(dir.path());
    now_clustered.peer_addr = Some(free_addr());
    now_clustered.initial_cluster = BTreeMap::from([(1, now_clustered.peer_addr.unwrap()), (2, free_addr())]);
    let error = Server::start(now_clustered).await.err().expect("refused").to_string();
    assert!(error.contains("bootstrapped as a single node") && error.contains("members 1,2"), "{error}");

    // The same configuration as before starts, with its data.
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.expect("same identity starts");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_member_lists_the_members_and_the_leader_knows_their_lag() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    register_via_leader(&servers, "10.0.0.1").await;
    // Only the leader knows replication progress; ask whichever member leads now (a loaded
    // machine may see an election meanwhile).
    let replicated = async {
        loop {
            let leader = wait_for_leader(&servers).await;
            let answer = rpc(&servers[leader]).await.list_members(v1::ListMembersRequest {}).await.unwrap();
            let answer = answer.into_inner();
            if answer.members.iter().all(|m| m.lag == Some(0)) && answer.leader == Some(leader as u64 + 1) {
                return (leader, answer);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (leader, answer) = timeout(WAIT, replicated).await.expect("every member catches up");
    assert_eq!(answer.members.len(), 3);
    assert_eq!(answer.members.iter().filter(|m| m.role == "leader").count(), 1);
    assert_eq!(answer.members.iter().filter(|m| m.role == "follower").count(), 2);
    assert_eq!(answer.answered_by, servers[leader].status().node_id);
    // A follower answers too, naming the same leader.
    let follower = &servers[(leader + 1) % 3];
    let seen = rpc(follower).await.list_members(v1::ListMembersRequest {}).await.unwrap().into_inner();
    assert_eq!(seen.leader, answer.leader);
    assert_eq!(seen.members.len(), 3);
}

/// Starts a node that joins a running cluster (`--join`) in the background: it serves its
/// peer address at once and finishes starting once the cluster adds it.
fn start_joining(dir: &tempfile::TempDir, node_id: u64, peer: SocketAddr) -> tokio::task::JoinHandle<Server> {
    let mut config = ServerConfig::ephemeral(dir.path());
    config.node_id = node_id;
    config.peer_addr = Some(peer);
    config.join = true;
    tokio::spawn(async move { Server::start(config).await.expect("the joining node starts") })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, waited).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn roles(members: &v1::ListMembersResponse) -> BTreeMap<u64, String> {
    members.members.iter().map(|m| (m.id, m.role.clone())).collect()
}

async fn wait_for_instances(server: &Server, n: usize) {
    let caught_up = async {
        while instances(server, "web").await.len() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, caught_up)
        .await
        .unwrap_or_else(|_| panic!("node {} never held {n} instances", server.status().node_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_added_through_a_snapshot_removed_and_re_added_after_a_wipe() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Snapshot every 20 entries and keep no log behind it: a new member can only catch up
    // from a snapshot.
    let peers: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts = dirs.iter().enumerate().map(|(i, dir)| {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.node_id = i as u64 + 1;
        config.peer_addr = Some(peers[&config.node_id]);
        config.initial_cluster = peers.clone();
        config.raft.snapshot_every = 20;
        config.raft.logs_kept_after_snapshot = 0;
        config.raft.purge_batch = 1;
        async move { Server::start(config).await.expect("node starts") }
    });
    let mut servers = futures_util::future::join_all(starts).await;
    let leader = wait_for_leader(&servers).await;
    for i in 0..60 {
        register_via_leader(&servers, &format!("10.1.0.{i}")).await;
    }
    wait_until("the leader to purge its log", || servers[leader].status().purged_index.is_some()).await;

    // Bad requests are refused with a clear status.
    let follower = (leader + 1) % 3;
    let mut client = rpc(&servers[follower]).await;
    let add =
        |id: u64, peer_address: &str| v1::AddMemberRequest { id, peer_address: peer_address.into(), learner: false };
    let code = |r: Result<tonic::Response<v1::ListMembersResponse>, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(client.add_member(add(0, "127.0.0.1:1")).await), tonic::Code::InvalidArgument);
    assert_eq!(code(client.add_member(add(4, "nowhere")).await), tonic::Code::InvalidArgument);
    assert_eq!(code(client.add_member(add(3, "127.0.0.1:1")).await), tonic::Code::AlreadyExists);
    assert_eq!(code(client.remove_member(v1::RemoveMemberRequest { id: 9 }).await), tonic::Code::NotFound);

    // A fourth node joins through a follower (forwarded to the leader): learner, then voter,
    // catching up from a snapshot because the log it needs is gone.
    let dir4 = tempfile::tempdir().unwrap();
    let peer4 = free_addr();
    let joining = start_joining(&dir4, 4, peer4);
    // Under the wrong id it is refused: whoever answers at the address must be that node.
    let wrong = timeout(WAIT, async {
        loop {
            match client.add_member(add(5, &peer4.to_string())).await {
                Err(status) if status.code() == tonic::Code::AlreadyExists => return status,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await
    .expect("adding node 4 as node 5 is refused");
    assert!(wrong.message().contains("is node 4"), "{wrong:?}");
    let added = client.add_member(add(4, &peer4.to_string())).await.expect("member 4 added").into_inner();
    assert_eq!(roles(&added).len(), 4);
    assert_ne!(roles(&added)[&4], "learner", "promoted to voter: {added:?}");
    let node4 = timeout(WAIT, joining).await.expect("node 4 finishes starting").unwrap();
    wait_for_instances(&node4, 60).await;
    assert!(node4.status().snapshot_index.is_some(), "node 4 installed a snapshot: {:?}", node4.status());
    servers.push(node4);

    // Remove a follower (not node 4), then wipe it.
    let victim = (leader + 2) % 3;
    let victim_id = servers[victim].status().node_id;
    let after = rpc(&servers[leader])
        .await
        .remove_member(v1::RemoveMemberRequest { id: victim_id })
        .await
        .expect("member removed")
        .into_inner();
    assert_eq!(roles(&after).len(), 3);
    assert!(!roles(&after).contains_key(&victim_id));
    servers.remove(victim).shutdown().await;
    std::fs::remove_dir_all(dirs[victim].path()).unwrap();
    // Three voters (one of them node 4) still commit writes.
    register_via_leader(&servers, "10.2.0.1").await;

    // The wiped member comes back under its old id and address and catches up.
    let rejoining = start_joining(&dirs[victim], victim_id, peers[&victim_id]);
    let leader = wait_for_leader(&servers).await;
    let mut client = rpc(&servers[leader]).await;
    // Until the new process listens, the cluster answers UNAVAILABLE ("nothing answers").
    let back = timeout(WAIT, async {
        loop {
            match client.add_member(add(victim_id, &peers[&victim_id].to_string())).await {
                Err(status) if status.code() == tonic::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                answer => return answer,
            }
        }
    })
    .await
    .expect("the wiped member answers")
    .expect("wiped member re-added")
    .into_inner();
    assert_eq!(roles(&back).len(), 4);
    let rejoined = timeout(WAIT, rejoining).await.expect("the wiped member finishes starting").unwrap();
    wait_for_instances(&rejoined, 61).await;
    assert!(rejoined.status().snapshot_index.is_some(), "{:?}", rejoined.status());
    for server in servers {
        wait_for_instances(&server, 61).await;
        server.shutdown().await;
    }
    rejoined.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_restores_into_every_member_of_a_new_cluster() {
    // Back up a single node with some state.
    let source = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(source.path())).await.unwrap();
    register_via_leader(std::slice::from_ref(&server), "10.3.0.1").await;
    register_via_leader(std::slice::from_ref(&server), "10.3.0.2").await;
    let mut stream = rpc(&server).await.save_snapshot(v1::SaveSnapshotRequest {}).await.unwrap().into_inner();
    let mut file = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        file.extend_from_slice(&chunk.data);
    }
    drop(stream);
    let revision = server.revision();
    server.shutdown().await;
    let path = source.path().join("backup");
    std::fs::write(&path, file).unwrap();

    // Restore the same file into three members of a new cluster, then start them.
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let configs: Vec<ServerConfig> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let mut config = ServerConfig::ephemeral(dir.path());
            config.node_id = i as u64 + 1;
            config.peer_addr = Some(peers[&config.node_id]);
            config.initial_cluster = peers.clone();
            let summary = waggle_server::restore_snapshot(&path, &config).expect("restores");
            assert_eq!(summary.instances, 2);
            config
        })
        .collect();
    let servers =
        futures_util::future::join_all(configs.into_iter().map(|c| async move { Server::start(c).await.unwrap() }))
            .await;
    wait_for_leader(&servers).await;
    for server in &servers {
        // Far ahead of the backup's, the same on every member: tokens never repeat the old
        // cluster's.
        assert_eq!(server.revision().get(), revision.get() + 1_000_000_000);
        assert_eq!(instances(server, "web").await.len(), 2);
    }
    // The new cluster replicates new writes everywhere.
    register_via_leader(&servers, "10.3.0.3").await;
    for server in &servers {
        wait_for_instances(server, 3).await;
    }
    for server in servers {
        server.shutdown().await;
    }
}

/// Reads watch messages until one carries deltas up to `revision`; returns (history id,
/// revisions of the delta messages seen, whether a snapshot arrived).
async fn read_watch(stream: &mut tonic::Streaming<v1::WatchResponse>, revision: u64) -> (u64, Vec<u64>, bool) {
    let mut seen = Vec::new();
    let mut snapshot = false;
    let mut history = 0;
    let read = async {
        loop {
            let message = stream.message().await.unwrap().expect("the watch stays open");
            history = message.incarnation;
            match message.event.unwrap() {
                v1::watch_response::Event::Snapshot(s) => {
                    snapshot = true;
                    if s.revision >= revision && !s.continued {
                        return;
                    }
                }
                v1::watch_response::Event::Deltas(d) => {
                    seen.push(d.revision);
                    if d.revision >= revision {
                        return;
                    }
                }
            }
        }
    };
    timeout(WAIT, read).await.expect("watch messages arrive");
    (history, seen, snapshot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_resumes_on_another_member_without_a_gap_or_a_duplicate() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    register_via_leader(&servers, "10.5.0.1").await;
    let first = servers[leader].revision().get();
    for server in &servers {
        wait_for_instances(server, 1).await;
    }
    // Watch member A from the start: a snapshot, then deltas.
    let a = &servers[(leader + 1) % 3];
    let request = |from_revision, incarnation| v1::WatchRequest { service: "web".into(), from_revision, incarnation };
    let mut watch = rpc(a).await.watch(request(0, 0)).await.unwrap().into_inner();
    // A second watcher that never goes away sees what the resumed one must see.
    let mut steady = rpc(a).await.watch(request(0, 0)).await.unwrap().into_inner();
    let (mut history, _, snapshot) = read_watch(&mut watch, first).await;
    assert!(snapshot);
    // The first leader names the history right after it is elected; a message sent before
    // that is stamped 0.
    let mut n = 0;
    while history == 0 {
        n += 1;
        assert!(n < 50, "the first leader named the history");
        register_via_leader(&servers, &format!("10.5.1.{n}")).await;
        history = read_watch(&mut watch, servers[leader].revision().get()).await.0;
    }
    register_via_leader(&servers, "10.5.0.2").await;
    let (_, seen, _) = read_watch(&mut watch, first + 1).await;
    let last = *seen.last().unwrap();
    drop(watch);

    // Changes made while the watcher is away, then it resumes on member B.
    register_via_leader(&servers, "10.5.0.3").await;
    register_via_leader(&servers, "10.5.0.4").await;
    let b = &servers[(leader + 2) % 3];
    wait_for_instances(b, 4 + n).await;
    let now = b.revision().get();
    let mut resumed = rpc(b).await.watch(request(last, history)).await.unwrap().into_inner();
    let (same, seen, snapshot) = read_watch(&mut resumed, now).await;
    assert_eq!(same, history);
    assert!(!snapshot, "resumed from the revision, not from a snapshot");
    let (_, all, _) = read_watch(&mut steady, now).await;
    let expected: Vec<u64> = all.into_iter().filter(|r| *r > last).collect();
    assert_eq!(seen, expected, "no gap and no duplicate");
    assert_eq!(seen.len(), 2);

    // Another history (any other cluster) resyncs with a snapshot instead.
    let mut foreign = rpc(b).await.watch(request(last, history ^ 1)).await.unwrap().into_inner();
    let (_, _, snapshot) = read_watch(&mut foreign, now).await;
    assert!(snapshot);
    drop((resumed, foreign, steady));
    for server in servers {
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_follower_sees_every_acknowledged_write() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let mut writer = rpc(&servers[leader]).await;
    let session =
        writer.create_session(v1::CreateSessionRequest { ttl_ms: Some(30_000), lock_delay_ms: None }).await.unwrap();
    let session_id = session.into_inner().session_id;
    let mut readers = [rpc(&servers[(leader + 1) % 3]).await, rpc(&servers[(leader + 2) % 3]).await];
    for i in 0..20u32 {
        let instance =
            v1::Instance { service: "lin".into(), address: format!("10.6.0.{i}"), port: 80, ..Default::default() };
        writer.register(v1::RegisterRequest { session_id, instance: Some(instance) }).await.unwrap();
        // Acknowledged by the leader; a follower's linearizable read must include it at once.
        let reader = &mut readers[i as usize % 2];
        let req = v1::GetServiceRequest { service: "lin".into(), include_unhealthy: true, linearizable: true };
        let seen = reader.get_service(req).await.expect("a linearizable read").into_inner().into_instances();
        assert_eq!(seen.len(), i as usize + 1, "read {i} missed an acknowledged write");
        let all = reader.list_services(v1::ListServicesRequest { linearizable: true }).await.unwrap().into_inner();
        assert!(all.services.iter().any(|s| s.name == "lin" && s.instances == i + 1));
    }
    drop((writer, readers));
    for server in servers {
        server.shutdown().await;
    }
}

#[path = "common/mod.rs"]
mod common;

async fn check_status(server: &Server, service: &str) -> Option<(String, String)> {
    let (_, body) = common::http_get(server.http_addr(), &format!("/v1/health/checks/{service}")).await;
    let checks: serde_json::Value = serde_json::from_str(&body).ok()?;
    let first = checks.as_array()?.first()?;
    Some((first["Status"].as_str()?.to_owned(), first["Output"].as_str()?.to_owned()))
}

async fn wait_for_check(server: &Server, service: &str, status: &str) -> String {
    let reached = async {
        loop {
            if let Some((s, output)) = check_status(server, service).await
                && s == status
            {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(WAIT, reached).await.unwrap_or_else(|_| panic!("{service} never became {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_reports_sent_to_a_follower_reach_the_leader_and_checks_follow_leadership() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let follower = (leader + 1) % 3;
    let http = servers[follower].http_addr();
    let body = br#"{"Name":"cron","ID":"cron-1","Port":1,"Address":"10.0.0.1","Check":{"TTL":"1s"}}"#;
    let (code, answer) = common::http_send(http, "PUT", "/v1/agent/service/register", body).await;
    assert_eq!(code, 200, "{answer}");
    // Reports to the follower renew the leader's deadline: passing for 3 s with a 1 s TTL.
    for _ in 0..10 {
        let (code, answer) = common::http_send(http, "PUT", "/v1/agent/check/pass/service:cron-1?note=tick", b"").await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(check_status(&servers[follower], "cron").await, Some(("passing".into(), "tick".into())));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(wait_for_check(&servers[follower], "cron", "critical").await, "TTL expired");

    // The leader goes; the new one runs the check, and reports reach it.
    servers.remove(leader).shutdown().await;
    let survivor = &servers[0];
    let (code, answer) =
        common::http_send(survivor.http_addr(), "PUT", "/v1/agent/check/pass/service:cron-1", b"").await;
    assert_eq!(code, 200, "{answer}");
    wait_for_check(&servers[1], "cron", "passing").await;
    assert_eq!(wait_for_check(&servers[1], "cron", "critical").await, "TTL expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_writes_through_any_member_and_linearizable_reads_see_them() {
    use waggle_proto::v1::kv_client::KvClient;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let mut writer = KvClient::connect(format!("http://{}", servers[a].grpc_addr())).await.unwrap();
    let mut reader = KvClient::connect(format!("http://{}", servers[b].grpc_addr())).await.unwrap();
    for n in 0..20u32 {
        let put = v1::PutRequest { key: format!("k/{n}"), value: n.to_string().into_bytes(), ..Default::default() };
        let written = writer.put(put).await.expect("forwarded to the leader").into_inner();
        // Through another follower, a linearizable read sees the acknowledged write at once.
        let read = v1::GetRequest { key: format!("k/{n}"), linearizable: true, ..Default::default() };
        let got = reader.get(read).await.unwrap().into_inner();
        assert!(got.revision >= written.revision);
        assert_eq!(got.kvs[0].value, n.to_string().into_bytes());
    }
    let cas = v1::PutRequest { key: "k/0".into(), value: b"x".to_vec(), cas: Some(0), ..Default::default() };
    assert!(!writer.put(cas).await.unwrap().into_inner().succeeded, "create-only fails on an existing key");
    // A read-only transaction on a follower (answered there after a read barrier, without a
    // log write) sees a write acknowledged through the other follower just before.
    for n in 0..10u32 {
        let put = v1::PutRequest { key: "k/last".into(), value: n.to_string().into_bytes(), ..Default::default() };
        let written = writer.put(put).await.unwrap().into_inner();
        let get = v1::Op { op: Some(v1::op::Op::Get(v1::GetRequest { key: "k/last".into(), ..Default::default() })) };
        let read = reader.txn(v1::TxnRequest { success: vec![get], ..Default::default() }).await.unwrap().into_inner();
        assert!(read.revision >= written.revision);
        let Some(v1::op_response::Result::Get(got)) = &read.results[0].result else { panic!("a get result") };
        assert_eq!(got.kvs[0].value, n.to_string().into_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_sessions_work_through_a_follower_and_a_new_leader_lifts_lock_delays() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let follower = servers[(leader + 1) % 3].http_addr();
    let put = |path: String, body: &'static str| async move {
        let (code, answer) = common::http_send(follower, "PUT", &path, body.as_bytes()).await;
        assert_eq!(code, 200, "{path}: {answer}");
        answer
    };
    let id = |answer: String| {
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        v["ID"].as_str().unwrap().to_owned()
    };
    // Created, renewed and used on a follower: forwarded to the leader.
    let a = id(put("/v1/session/create".into(), r#"{"TTL":"20s","LockDelay":"2s"}"#).await);
    let b = id(put("/v1/session/create".into(), r#"{"LockDelay":"0s"}"#).await);
    assert!(put(format!("/v1/session/renew/{a}"), "").await.contains(&a));
    // A session without a TTL created on the leader renews on a follower at once.
    let leader_http = servers[leader].http_addr();
    let (_, created) = common::http_send(leader_http, "PUT", "/v1/session/create", b"{}").await;
    let c = id(created);
    assert!(put(format!("/v1/session/renew/{c}"), "").await.contains(&c));
    assert_eq!(put(format!("/v1/kv/job?acquire={a}"), "a").await, "true");
    assert_eq!(put(format!("/v1/kv/job?acquire={b}"), "b").await, "false");
    assert_eq!(put(format!("/v1/session/destroy/{a}"), "").await, "true");
    assert_eq!(put(format!("/v1/kv/job?acquire={b}"), "b").await, "false", "under a's lock-delay");
    // The leader that timed the delay goes; the next one lifts it (after a full delay).
    servers.remove(leader).shutdown().await;
    let survivor = servers.iter().find(|s| s.http_addr() == follower).unwrap_or(&servers[0]).http_addr();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, answer) = common::http_send(survivor, "PUT", &format!("/v1/kv/job?acquire={b}"), b"b").await;
        if code == 200 && answer == "true" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never acquired: {code} {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_written_at_once_through_a_follower_replicate_everywhere() {
    use waggle_proto::v1::kv_client::KvClient;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster(&dirs).await;
    let leader = wait_for_leader(&servers).await;
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let writer = KvClient::connect(format!("http://{}", servers[a].grpc_addr())).await.unwrap();
    // 16 values of 400 KiB (6.4 MB) at once: they must be cut into entries and AppendEntries
    // small enough to replicate within the heartbeat timeout, or leadership churns and the
    // writes never get through. (A machine starved of CPU can still lose a leader on the way;
    // then a write is retried, as the SDK would.)
    let writes = (0..16u8).map(|n| {
        let mut writer = writer.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let put = v1::PutRequest { key: format!("big/{n}"), value: vec![n; 400 * 1024], ..Default::default() };
                match writer.put(put).await {
                    Err(s) if s.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    other => break other.map(|r| r.into_inner().revision),
                }
            }
        }
    });
    let revisions = futures_util::future::join_all(writes).await;
    let last = revisions.into_iter().map(|r| r.expect("written through the follower")).max().unwrap();
    let mut reader = KvClient::connect(format!("http://{}", servers[b].grpc_addr())).await.unwrap();
    for n in 0..16u8 {
        let read = v1::GetRequest { key: format!("big/{n}"), linearizable: true, ..Default::default() };
        let got = reader.get(read).await.unwrap().into_inner();
        assert!(got.revision >= last);
        let value = &got.kvs[0].value;
        assert!(value.len() == 400 * 1024 && value.iter().all(|b| *b == n), "big/{n} is intact");
    }
}

#[tokio::test]
async fn acl_tokens_work_on_every_member_at_once_and_a_revoke_through_a_follower_holds_everywhere() {
    use common::{http_get, http_send};
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let servers = start_cluster_with(&dirs, |config| {
        config.acl.enabled = true;
        config.acl.initial_management_token = Some(ROOT.into());
    })
    .await;
    let leader = wait_for_leader(&servers).await;
    let (a, b) = ((leader + 1) % 3, (leader + 2) % 3);
    let http = |i: usize| servers[i].http_addr();
    for _ in 0..200 {
        if http_get(http(leader), &format!("/v1/acl/token/self?token={ROOT}")).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Created through one follower, the token works on the other at once.
    let body = serde_json::json!({ "ServiceIdentities": [{ "ServiceName": "web" }] }).to_string();
    let (code, created) = http_send(http(a), "PUT", &format!("/v1/acl/token?token={ROOT}"), body.as_bytes()).await;
    assert_eq!(code, 200, "{created}");
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let (accessor, secret) = (created["AccessorID"].as_str().unwrap(), created["SecretID"].as_str().unwrap());
    let web = serde_json::json!({ "Name": "web", "Port": 80, "Address": "10.0.0.1" }).to_string();
    let register = format!("/v1/agent/service/register?token={secret}");
    assert_eq!(http_send(http(b), "PUT", &register, web.as_bytes()).await.0, 200, "works on another member at once");
    let api = serde_json::json!({ "Name": "api", "Port": 80, "Address": "10.0.0.1" }).to_string();
    assert_eq!(http_send(http(b), "PUT", &register, api.as_bytes()).await.0, 403, "only its own service");
    // Revoked through a follower: refused by every member from then on.
    let delete = format!("/v1/acl/token/{accessor}?token={ROOT}");
    assert_eq!(http_send(http(b), "DELETE", &delete, b"").await, (200, "true".into()));
    for i in [leader, a, b] {
        let (code, body) = http_send(http(i), "PUT", &register, web.as_bytes()).await;
        assert_eq!((code, body.as_str()), (403, "ACL not found"), "member {i}");
    }
    for server in servers {
        server.shutdown().await;
    }
}
