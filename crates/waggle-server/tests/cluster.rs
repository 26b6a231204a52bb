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

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn start_cluster(dirs: &[tempfile::TempDir]) -> Vec<Server> {
    let peers: BTreeMap<u64, SocketAddr> = (1..=dirs.len() as u64).map(|id| (id, free_addr())).collect();
    let starts = dirs.iter().enumerate().map(|(i, dir)| {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.node_id = i as u64 + 1;
        config.peer_addr = Some(peers[&config.node_id]);
        config.initial_cluster = peers.clone();
        config.seed = Some(i as u64);
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
                let session = client.create_session(v1::CreateSessionRequest { ttl_ms: Some(30_000) }).await;
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
    let request = v1::GetServiceRequest { service: service.into(), include_unhealthy: true };
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
    let session = client.create_session(v1::CreateSessionRequest { ttl_ms: Some(30_000) }).await.expect("forwarded");
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
    let session = client.create_session(v1::CreateSessionRequest { ttl_ms: Some(1_000) }).await.expect("forwarded");
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
    let leader = leader_of(&servers).expect("a leader");
    let replicated = async {
        loop {
            let answer = rpc(&servers[leader]).await.list_members(v1::ListMembersRequest {}).await.unwrap();
            let answer = answer.into_inner();
            if answer.members.iter().all(|m| m.lag == Some(0)) {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let answer = timeout(WAIT, replicated).await.expect("every member catches up");
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
