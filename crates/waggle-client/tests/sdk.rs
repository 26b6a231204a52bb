//! The SDK against an in-process server: registration, discovery, change streams, the tower
//! `Discover` view, and server restarts (the cache goes stale and recovers; registrations
//! survive or come back).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, path::Path, time::Duration};

use futures_util::StreamExt;
use tokio::time::timeout;
use waggle_client::{CacheState, ChangeKind, Client, ClientConfig, HealthFilter, HealthStatus, InstanceSpec, Ttl};
use waggle_server::{Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);

async fn start_server(dir: &Path, grpc: SocketAddr) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.grpc_addr = grpc;
    Server::start(config).await.expect("server starts")
}

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

fn fast_config(ttl_ms: u64) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_millis(ttl_ms).unwrap();
    config.backoff_base = Duration::from_millis(20);
    config.backoff_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_millis(500);
    config.seed = Some(42);
    config
}

fn url(server: &Server) -> String {
    format!("http://{}", server.grpc_addr())
}

#[tokio::test]
async fn register_discover_and_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();

    let web = client.discover("web").unwrap();
    timeout(WAIT, web.ready()).await.expect("first snapshot");
    assert_eq!(web.state(), CacheState::Fresh);
    assert!(web.instances().is_empty());
    let mut changes = web.changes();

    let a = client
        .register(InstanceSpec::new("web", "10.0.0.1", 8080).unwrap().with_tag("v1").with_weight(5))
        .await
        .unwrap();
    assert_eq!(a.instance().spec.weight, 5);
    assert!(client.session().is_some(), "registration opened a session");
    let b = client
        .register(InstanceSpec::new("web", "10.0.0.2", 8080).unwrap().with_status(HealthStatus::Critical))
        .await
        .unwrap();
    assert_eq!(a.instance().session, b.instance().session, "one session per client");

    let event = timeout(WAIT, changes.next()).await.unwrap().unwrap();
    assert_eq!((event.kind, event.instance.id().as_str()), (ChangeKind::Added, "10.0.0.1:8080"));
    let event = timeout(WAIT, changes.next()).await.unwrap().unwrap();
    assert_eq!((event.kind, event.instance.id().as_str()), (ChangeKind::Added, "10.0.0.2:8080"));

    // The cache serves passing instances by default; all of them on request.
    timeout(WAIT, web.wait_until(|i| i.len() == 1)).await.unwrap();
    assert_eq!(web.instances()[0].id().as_str(), "10.0.0.1:8080");
    assert_eq!(web.all_instances().len(), 2);
    assert_eq!(client.instances("web", HealthFilter::Passing).await.unwrap().len(), 1);
    assert_eq!(client.instances("web", HealthFilter::All).await.unwrap().len(), 2);
    let services = client.services().await.unwrap();
    assert_eq!((services.len(), services[0].instances, services[0].passing), (1, 2, 1));

    a.shutdown().await.unwrap();
    let event = timeout(WAIT, changes.next()).await.unwrap().unwrap();
    assert_eq!((event.kind, event.instance.id().as_str()), (ChangeKind::Removed, "10.0.0.1:8080"));
    assert!(client.instances("web", HealthFilter::Passing).await.unwrap().is_empty());

    // Shutting the client down revokes its session: b vanishes at once.
    drop(b);
    client.shutdown().await;
    timeout(WAIT, async {
        while !client.instances("web", HealthFilter::All).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("revoked session removes its instances");
    server.shutdown().await;
}

#[tokio::test]
async fn discover_implements_tower_discover() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let existing = client.register(InstanceSpec::new("api", "10.0.0.1", 1).unwrap()).await.unwrap();

    let api = client.discover("api").unwrap();
    let mut discover = api.discover();
    let change = timeout(WAIT, discover.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(change, tower::discover::Change::Insert(ref id, _) if id.as_str() == "10.0.0.1:1"));

    // An instance that stops passing leaves the Discover set; one that is deregistered too.
    let spec = InstanceSpec::new("api", "10.0.0.1", 1).unwrap().with_status(HealthStatus::Warning);
    let _same = client.register(spec).await.unwrap();
    let change = timeout(WAIT, discover.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(change, tower::discover::Change::Remove(ref id) if id.as_str() == "10.0.0.1:1"));
    drop(existing);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn cache_goes_stale_and_recovers_across_a_restart_and_the_session_survives() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = start_server(dir.path(), addr).await;
    let client = Client::connect_with(url(&server), fast_config(1_000)).await.unwrap();
    let registration = client.register(InstanceSpec::new("web", "10.0.0.1", 80).unwrap()).await.unwrap();
    let session = client.session().unwrap();
    let web = client.discover("web").unwrap();
    timeout(WAIT, web.wait_until(|i| i.len() == 1)).await.unwrap();

    server.shutdown().await;
    timeout(WAIT, async {
        while web.state() == CacheState::Fresh {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("cache turns stale");
    // Down for longer than the session TTL: the restarted leader grants a full TTL of grace.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(matches!(web.state(), CacheState::Stale { .. }));
    assert_eq!(web.instances().len(), 1, "last-known-good is kept during the outage");

    let server = start_server(dir.path(), addr).await;
    timeout(WAIT, async {
        while web.state() != CacheState::Fresh {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("cache turns fresh again");
    // Keepalives reach the new process in time, so the session lives on, several TTLs later.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(client.session(), Some(session));
    assert_eq!(web.instances().len(), 1);
    assert_eq!(registration.instance().create_revision, web.instances()[0].create_revision);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn registration_comes_back_when_the_session_is_lost() {
    let addr = free_addr();
    let first_dir = tempfile::tempdir().unwrap();
    let server = start_server(first_dir.path(), addr).await;
    let client = Client::connect_with(url(&server), fast_config(1_000)).await.unwrap();
    let _registration = client.register(InstanceSpec::new("web", "10.0.0.9", 80).unwrap()).await.unwrap();
    let old_session = client.session().unwrap();
    server.shutdown().await;

    // A server with an empty data dir knows nothing of the session: the SDK opens a new one
    // and registers again.
    let second_dir = tempfile::tempdir().unwrap();
    let server = start_server(second_dir.path(), addr).await;
    let observer = Client::connect(url(&server)).await.unwrap();
    let web = observer.discover("web").unwrap();
    timeout(WAIT, web.wait_until(|i| i.len() == 1)).await.expect("registration comes back");
    let new_session = web.instances()[0].session;
    assert_ne!(new_session, old_session);
    assert_eq!(client.session(), Some(new_session));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_and_bad_input_is_rejected_locally() {
    let addr = free_addr();
    let err = Client::connect_with(format!("http://{addr}"), fast_config(1_000)).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(matches!(Client::connect("not a url").await, Err(waggle_client::Error::InvalidUrl { .. })));

    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let bad = InstanceSpec::new("web", "10.0.0.1", 80).unwrap().with_weight(0);
    let err = client.register(bad).await.unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");
    assert!(client.discover("Bad_Name").is_err());
    let err = client.deregister("web", "nope").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::NotFound));
    server.shutdown().await;
}

#[tokio::test]
async fn a_discover_stream_outlives_its_discovery_handle() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    // The Discovery handle is a temporary: the stream alone must keep the watch running.
    let mut discover = client.discover("api").unwrap().discover();
    let _r = client.register(InstanceSpec::new("api", "10.0.0.7", 7).unwrap()).await.unwrap();
    let change = timeout(WAIT, discover.next()).await.expect("stream is alive").unwrap().unwrap();
    assert!(matches!(change, tower::discover::Change::Insert(ref id, _) if id.as_str() == "10.0.0.7:7"));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_deregistration_that_failed_during_an_outage_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let server = start_server(dir.path(), addr).await;
    let client = Client::connect_with(url(&server), fast_config(2_000)).await.unwrap();
    let gone = client.register(InstanceSpec::new("web", "10.0.0.1", 1).unwrap()).await.unwrap();
    let _kept = client.register(InstanceSpec::new("web", "10.0.0.2", 2).unwrap()).await.unwrap();
    server.shutdown().await;

    // The server is down: the deregistration fails, but the SDK remembers it.
    assert!(gone.shutdown().await.is_err());
    let server = start_server(dir.path(), addr).await;
    let observer = Client::connect(url(&server)).await.unwrap();
    let web = observer.discover("web").unwrap();
    timeout(WAIT, web.wait_until(|i| i.len() == 1 && i[0].id().as_str() == "10.0.0.2:2"))
        .await
        .expect("the failed deregistration is retried once the server is back");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn registry_instances_drive_a_balancer() {
    use tower::{Service, ServiceExt};
    use waggle_balance::policy::WeightedRandom;

    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let heavy = InstanceSpec::new("api", "10.0.0.1", 80).unwrap().with_weight(300).with_zone("z1").unwrap();
    let light = InstanceSpec::new("api", "10.0.0.2", 80).unwrap().with_weight(100).with_meta("version", "v2");
    let _heavy = client.register(heavy).await.unwrap();
    let light = client.register(light).await.unwrap();

    let api = client.discover("api").unwrap();
    // Each endpoint's "service" answers with its instance id.
    let endpoints = api.endpoints(|instance| {
        let id = instance.id().to_string();
        tower::service_fn(move |_: ()| std::future::ready(Ok::<_, std::convert::Infallible>(id.clone())))
    });
    let mut balance = waggle_balance::Builder::new(WeightedRandom).seed(1).build(endpoints);
    let handle = balance.handle();
    let both = async {
        while handle.endpoints().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, both).await.expect("both instances reach the balancer");
    let snapshot = handle.endpoints().await.unwrap();
    let heavy_endpoint = snapshot.iter().find(|e| e.key.as_str() == "10.0.0.1:80").unwrap();
    assert_eq!((heavy_endpoint.weight, heavy_endpoint.zone.as_deref()), (300, Some("z1")));

    let mut heavy_calls = 0;
    for _ in 0..4_000 {
        let id = balance.ready().await.unwrap().call(()).await.unwrap();
        heavy_calls += usize::from(id == "10.0.0.1:80");
    }
    let share = heavy_calls as f64 / 4_000.0;
    assert!((share - 0.75).abs() < 0.03, "weights 300 / 100 give {share}");

    // Deregistering removes the endpoint from the balancer.
    client.deregister("api", light.instance().id().as_str()).await.unwrap();
    let gone = async {
        while handle.endpoints().await.unwrap().len() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, gone).await.expect("the deregistered instance leaves the balancer");
    for _ in 0..100 {
        assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "10.0.0.1:80");
    }
}

#[tokio::test]
async fn the_service_client_retries_a_failing_instance_away_and_ejects_it() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tower::{Service, ServiceExt};
    use waggle_client::Protocol;
    use waggle_resilience::replay::ReplayBody;

    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let _good = client.register(InstanceSpec::new("api", "10.0.0.1", 80).unwrap()).await.unwrap();
    let _bad = client.register(InstanceSpec::new("api", "10.0.0.2", 80).unwrap()).await.unwrap();

    // An in-memory transport: 10.0.0.2 always answers 503, 10.0.0.1 answers with its id.
    let connect = |instance: &waggle_client::Instance| {
        let id = instance.id().to_string();
        tower::service_fn(move |_request: http::Request<ReplayBody>| {
            let status = if id == "10.0.0.2:80" { 503 } else { 200 };
            let response = http::Response::builder().status(status).body(Full::new(Bytes::from(id.clone())));
            std::future::ready(response.map_err(tower::BoxError::from))
        })
    };
    let mut api: waggle_client::ServiceClient<Full<Bytes>, Full<Bytes>> =
        client.service("api").protocol(Protocol::Http).build_with(connect).unwrap();
    let endpoints = api.endpoints().clone();
    let both = async {
        while endpoints.endpoints().await.unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(WAIT, both).await.expect("both instances discovered");

    for _ in 0..100 {
        let request = http::Request::get("/items").body(Full::new(Bytes::new())).unwrap();
        let response = api.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), 200, "a GET that hit the failing instance was retried on the other");
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "10.0.0.1:80");
    }
    let snapshot = endpoints.endpoints().await.unwrap();
    let bad = snapshot.iter().find(|e| e.key.as_str() == "10.0.0.2:80").unwrap();
    assert!(bad.ejections >= 1, "five 503s in a row eject it: {bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_cluster_fails_over_when_its_server_dies() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let peers: std::collections::BTreeMap<u64, SocketAddr> = (1..=3).map(|id| (id, free_addr())).collect();
    let starts = dirs.iter().enumerate().map(|(i, dir)| {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.node_id = i as u64 + 1;
        config.peer_addr = Some(peers[&config.node_id]);
        config.initial_cluster = peers.clone();
        async move { Server::start(config).await.expect("member starts") }
    });
    let mut servers = futures_util::future::join_all(starts).await;
    let urls: Vec<String> = servers.iter().map(url).collect();

    // The client is given one member and learns the others from the member list.
    let client = Client::connect_with(&urls[0], fast_config(1_500)).await.unwrap();
    let learned = async {
        while client.servers().len() < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, learned).await.expect("the client learns every member");
    let mut listed: Vec<String> =
        client.members().await.unwrap().members.into_iter().filter_map(|m| m.client_url).collect();
    listed.sort();
    let mut expected = urls.clone();
    expected.sort();
    assert_eq!(listed, expected, "every member's client URL is listed");
    let registration = client.register(InstanceSpec::new("web", "10.0.0.1", 80).unwrap()).await.unwrap();
    let web = client.discover("web").unwrap();
    timeout(WAIT, web.ready()).await.unwrap();
    assert_eq!(web.instances().len(), 1);

    // Its server dies: keepalives, discovery and new writes move to another member.
    let first = servers.remove(0);
    first.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1_500) * 3).await;
    let second = timeout(WAIT, client.register(InstanceSpec::new("web", "10.0.0.2", 80).unwrap()))
        .await
        .expect("a write after failover")
        .unwrap();
    let both = async {
        while web.instances().len() != 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(WAIT, both).await.expect("discovery follows on another member");
    assert_eq!(web.state(), CacheState::Fresh);
    // The first registration outlived three TTLs without its server: its session was kept
    // alive through another member.
    assert!(web.instances().iter().any(|i| i.spec.address == "10.0.0.1"));
    drop((registration, second));
}

#[tokio::test]
async fn the_key_value_store_through_the_sdk() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), free_addr()).await;
    let client = Client::connect(url(&server)).await.unwrap();
    let kv = client.kv();
    let first = kv.put("cfg/a", "1").await.unwrap();
    kv.put("cfg/b", "2").await.unwrap();
    let a = kv.get("cfg/a").await.unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.modify_revision), (&b"1"[..], first));
    assert_eq!(
        kv.list("cfg/", true).await.unwrap().iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
        ["cfg/a", "cfg/b"]
    );
    // Compare-and-set.
    let cas = |at| waggle_client::PutOptions { cas: Some(at), ..Default::default() };
    assert!(!kv.put_with("cfg/a", "x", cas(0)).await.unwrap().succeeded);
    assert!(kv.put_with("cfg/a", "x", cas(first)).await.unwrap().succeeded);
    // A transaction with a read.
    let txn = waggle_client::Txn {
        compares: vec![waggle_client::Compare {
            key: "cfg/b".into(),
            target: waggle_client::CompareTarget::Value(b"2".to_vec()),
            op: waggle_client::CompareOp::Equal,
        }],
        success: vec![waggle_client::KvOp::Get { key: "cfg/".into(), prefix: true }],
        failure: vec![],
        guard: None,
    };
    let outcome = kv.txn(&txn).await.unwrap();
    assert!(outcome.succeeded);
    assert_eq!(outcome.reads[0].len(), 2);
    // Bad input is refused before anything is sent.
    assert!(matches!(kv.put("/abs", "v").await, Err(waggle_client::Error::Invalid(_))));
    // A key bound to the client's session goes when the client shuts down.
    let _registration = client.register(InstanceSpec::new("web", "10.0.0.1", 80).unwrap()).await.unwrap();
    let session = client.session().expect("a session once registered");
    let bound = waggle_client::PutOptions { session: Some(session), ..Default::default() };
    kv.put_with("lock/leader", "me", bound).await.unwrap();
    assert_eq!(kv.get("lock/leader").await.unwrap().unwrap().session, Some(session));
    assert_eq!(kv.delete_prefix("cfg/").await.unwrap(), 2);
    client.shutdown().await;
    let other = Client::connect(url(&server)).await.unwrap();
    assert_eq!(other.kv().get("lock/leader").await.unwrap(), None, "revoked with the session");
    other.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn kv_watches_follow_a_prefix_and_resume_from_a_revision() {
    use futures_util::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    // Snapshots every few entries, so a restart's history starts at a snapshot.
    let start = || async {
        let mut config = ServerConfig::ephemeral(dir.path());
        config.grpc_addr = addr;
        config.raft.snapshot_every = 4;
        config.raft.logs_kept_after_snapshot = 0;
        Server::start(config).await.unwrap()
    };
    let server = start().await;
    let client = Client::connect(url(&server)).await.unwrap();
    let kv = client.kv();
    let mut live = Box::pin(kv.watch("cfg/", true, 0).await.unwrap());
    let first = kv.put("cfg/a", "1").await.unwrap();
    kv.put("other", "x").await.unwrap();
    kv.put("cfg/b", "2").await.unwrap();
    kv.delete("cfg/a", None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let change = timeout(WAIT, live.next()).await.unwrap().unwrap().unwrap();
        seen.push((change.key, change.entry.map(|e| e.value), change.revision));
    }
    assert_eq!(
        seen.iter().map(|(k, v, _)| (k.as_str(), v.clone())).collect::<Vec<_>>(),
        [("cfg/a", Some(b"1".to_vec())), ("cfg/b", Some(b"2".to_vec())), ("cfg/a", None)],
        "in order, other keys left out, deletes as None"
    );
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2));
    // A watch from an earlier revision replays what it missed.
    let mut replay = Box::pin(kv.watch("cfg/a", false, first).await.unwrap());
    let again = timeout(WAIT, replay.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((again.key.as_str(), again.revision), ("cfg/a", first));
    // After a restart the history starts at the last snapshot: an older start is refused
    // (read again), a later one replays from the log.
    for n in 0..8 {
        kv.put(&format!("cfg/n{n}"), "v").await.unwrap();
    }
    client.shutdown().await;
    server.shutdown().await;
    let server = start().await;
    let client = Client::connect(url(&server)).await.unwrap();
    let mut old = Box::pin(client.kv().watch("cfg/", true, first).await.unwrap());
    let refused = timeout(WAIT, old.next()).await.unwrap().unwrap().unwrap_err();
    assert!(matches!(&refused, waggle_client::Error::Rpc(s) if s.code() == tonic::Code::OutOfRange), "{refused}");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn port_less_consul_services_are_discovered_but_cannot_be_registered_natively() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "127.0.0.1:0".parse().unwrap()).await;
    // Registered through Consul's agent API without a port.
    let http = server.http_addr();
    let mut stream = tokio::net::TcpStream::connect(http).await.unwrap();
    let body = r#"{"Name":"redis","Address":"10.0.0.9"}"#;
    let request = format!(
        "PUT /v1/agent/service/register HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let client = Client::connect(url(&server)).await.unwrap();
    let found = client.instances("redis", HealthFilter::All).await.unwrap();
    assert_eq!(found.iter().map(|i| (i.spec.address.as_str(), i.spec.port)).collect::<Vec<_>>(), [("10.0.0.9", 0)]);
    // Discovered, but never handed to a balancer: it cannot take calls.
    let discovery = client.discover("redis").unwrap();
    let mut changes = discovery.changes();
    let added = timeout(WAIT, changes.next()).await.unwrap().unwrap();
    assert_eq!(added.instance.spec.port, 0);
    let mut callable = discovery.discover();
    let nothing = timeout(Duration::from_millis(300), callable.next()).await;
    assert!(
        nothing.is_err(),
        "a port-less instance reached the balancer: {:?}",
        nothing.ok().flatten().map(|c| c.is_ok())
    );
    // The SDK refuses to register one itself.
    let portless = InstanceSpec::new("cache", "10.0.0.9", 0).unwrap();
    let refused = client.register(portless).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("port"), "{refused}");
    client.shutdown().await;
    server.shutdown().await;
}
