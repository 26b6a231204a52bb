//! A node through its gRPC API: durability across restarts, snapshots and log purge,
//! session expiry in one revision, lagging watchers, and input validation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use tokio::time::timeout;
use tonic::{Code, transport::Channel};
use waggle_proto::v1::{self, registry_client::RegistryClient, watch_response::Event};
use waggle_server::{Server, ServerConfig};

mod common;
use common::{consul_index, http_get, http_get_with_head, http_send};

const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.seed = Some(7);
    tweak(&mut config);
    Server::start(config).await.expect("server starts")
}

async fn rpc(server: &Server) -> RegistryClient<Channel> {
    RegistryClient::connect(format!("http://{}", server.grpc_addr())).await.expect("connects")
}

fn instance(service: &str, address: &str, port: u32) -> v1::Instance {
    v1::Instance { service: service.into(), address: address.into(), port, ..Default::default() }
}

async fn session(client: &mut RegistryClient<Channel>, ttl_ms: u64) -> u64 {
    client
        .create_session(v1::CreateSessionRequest { ttl_ms: Some(ttl_ms), lock_delay_ms: None })
        .await
        .unwrap()
        .into_inner()
        .session_id
}

async fn register(client: &mut RegistryClient<Channel>, session_id: u64, instance: v1::Instance) -> u64 {
    let req = v1::RegisterRequest { session_id, instance: Some(instance) };
    client.register(req).await.unwrap().into_inner().revision
}

/// Everything a client can read, for comparing states.
async fn dump(client: &mut RegistryClient<Channel>) -> BTreeMap<String, Vec<v1::Instance>> {
    let services =
        client.list_services(v1::ListServicesRequest { linearizable: false }).await.unwrap().into_inner().services;
    let mut out = BTreeMap::new();
    for s in services {
        let req = v1::GetServiceRequest { service: s.name.clone(), include_unhealthy: true, linearizable: false };
        out.insert(s.name, client.get_service(req).await.unwrap().into_inner().into_instances());
    }
    out
}

#[tokio::test]
async fn restart_replays_to_the_same_state_through_snapshots_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let small_snapshots = |c: &mut ServerConfig| {
        c.raft.snapshot_every = 25;
        c.raft.logs_kept_after_snapshot = 5;
        c.raft.purge_batch = 1;
    };
    let server = start(dir.path(), small_snapshots).await;
    let mut client = rpc(&server).await;
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(session(&mut client, 60_000).await);
    }
    for n in 0..60u32 {
        let mut i = instance(["web", "api", "db"][n as usize % 3], "10.0.0.1", 1000 + n);
        i.tags = vec![format!("t{}", n % 4)];
        i.meta.insert("n".into(), n.to_string());
        i.weight = Some(1 + n);
        register(&mut client, sessions[n as usize % 4], i).await;
    }
    client.deregister(v1::DeregisterRequest { service: "web".into(), id: "10.0.0.1:1000".into() }).await.unwrap();
    client.revoke_session(v1::RevokeSessionRequest { session_id: sessions[1] }).await.unwrap();
    let before = dump(&mut client).await;
    let revision = server.revision();
    let status = server.status();
    assert!(status.snapshot_index.is_some(), "snapshots were taken: {status:?}");
    assert!(status.log_entries() <= 25 + 5 + 1, "the log was purged behind snapshots: {status:?}");
    server.shutdown().await;

    let server = start(dir.path(), small_snapshots).await;
    let mut client = rpc(&server).await;
    assert_eq!(server.revision(), revision);
    assert_eq!(dump(&mut client).await, before);
    assert_eq!(before.values().map(Vec::len).sum::<usize>(), 60 - 1 - 15);
    // Sessions survive too: a keepalive for a live session finds it; the revoked one is gone.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replies = client.keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(v1::KeepAliveRequest { session_id: sessions[0] }).await.unwrap();
    assert!(replies.message().await.unwrap().unwrap().found);
    tx.send(v1::KeepAliveRequest { session_id: sessions[1] }).await.unwrap();
    assert!(!replies.message().await.unwrap().unwrap().found);
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_session_takes_its_instances_in_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let sid = session(&mut client, 1_000).await;
    for port in 1..=3 {
        register(&mut client, sid, instance("web", "10.0.0.1", port)).await;
    }
    let mut watch = client
        .watch(v1::WatchRequest { service: "web".into(), from_revision: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Snapshot(ref s)) if s.instances.len() == 3));
    // No keepalives: the session expires after its TTL and all three go in one batch.
    let next = timeout(WAIT, watch.message()).await.expect("expiry within the TTL").unwrap().unwrap();
    let Some(Event::Deltas(batch)) = next.event else { panic!("expected deltas, got {next:?}") };
    assert_eq!(batch.deltas.len(), 3);
    assert!(batch.deltas.iter().all(|d| d.kind == v1::DeltaKind::Removed as i32));
    assert_eq!(batch.revision, server.revision().get());
    server.shutdown().await;
}

#[tokio::test]
async fn a_lagging_watcher_is_resynced_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.watch_buffer = 4).await;
    let mut client = rpc(&server).await;
    let sid = session(&mut client, 60_000).await;
    let mut watch = client
        .watch(v1::WatchRequest { service: "big".into(), from_revision: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    // Large instances (~5 MB in all) overflow the HTTP/2 windows (2 MB per stream in hyper)
    // and the per-watcher queue while the watcher does not read.
    let n = 250u32;
    for port in 1..=n {
        let mut i = instance("big", "10.0.0.1", port);
        i.meta.insert("blob".into(), "x".repeat(12_000));
        register(&mut client, sid, i).await;
    }
    let final_revision = server.revision().get();
    let mut state: BTreeMap<String, v1::Instance> = BTreeMap::new();
    let mut partial: BTreeMap<String, v1::Instance> = BTreeMap::new();
    let mut snapshots = 0;
    let mut revision = 0;
    while revision < final_revision {
        let msg = timeout(WAIT, watch.message()).await.expect("watch makes progress").unwrap().unwrap();
        match msg.event {
            Some(Event::Snapshot(s)) => {
                // Chunks accumulate; the last one (continued = false) completes the snapshot.
                partial.extend(s.instances.into_iter().map(|i| (i.id.clone(), i)));
                if !s.continued {
                    snapshots += 1;
                    state = std::mem::take(&mut partial);
                    revision = s.revision;
                }
            }
            Some(Event::Deltas(d)) => {
                assert!(d.revision > revision, "deltas are never repeated");
                for delta in d.deltas {
                    let i = delta.instance.unwrap();
                    state.insert(i.id.clone(), i);
                }
                revision = d.revision;
            }
            None => {}
        }
    }
    assert!(snapshots >= 2, "the watcher fell behind and was resynced ({snapshots} snapshots)");
    assert_eq!(state.len(), n as usize, "the resynced view is complete");
    server.shutdown().await;
}

#[tokio::test]
async fn a_watch_resumes_from_its_revision_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let sid = session(&mut client, 60_000).await;
    let r1 = register(&mut client, sid, instance("web", "10.0.0.1", 1)).await;
    let mut watch = client
        .watch(v1::WatchRequest { service: "web".into(), from_revision: 0, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    drop(watch);
    let r2 = register(&mut client, sid, instance("web", "10.0.0.1", 2)).await;
    let r3 = register(&mut client, sid, instance("web", "10.0.0.1", 3)).await;
    let mut resumed = client
        .watch(v1::WatchRequest { service: "web".into(), from_revision: r1, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while seen.last() != Some(&r3) {
        let msg = timeout(WAIT, resumed.message()).await.unwrap().unwrap().unwrap();
        let Some(Event::Deltas(d)) = msg.event else { panic!("a resume within history replays deltas: {msg:?}") };
        seen.push(d.revision);
    }
    assert_eq!(seen, vec![r2, r3]);
    // Resuming when nothing changed still answers, so the watcher knows it is current.
    let mut current = client
        .watch(v1::WatchRequest { service: "web".into(), from_revision: r3, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let msg = timeout(WAIT, current.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(msg.event, Some(Event::Deltas(ref d)) if d.deltas.is_empty() && d.revision == r3));
    // A revision from another history (a wiped or restored data dir) is not trusted: the
    // watcher gets a snapshot.
    let incarnation = msg.incarnation;
    assert_ne!(incarnation, 0);
    let req = v1::WatchRequest { service: "web".into(), from_revision: r1, incarnation: incarnation ^ 1 };
    let mut foreign = client.watch(req).await.unwrap().into_inner();
    let msg = timeout(WAIT, foreign.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(msg.event, Some(Event::Snapshot(ref s)) if s.instances.len() == 3 && s.revision == r3));
    assert_eq!(msg.incarnation, incarnation);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let status =
        client.create_session(v1::CreateSessionRequest { ttl_ms: Some(500), lock_delay_ms: None }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("ttl"), "{}", status.message());

    let sid = session(&mut client, 10_000).await;
    let mut cases = vec![
        (instance("Web", "10.0.0.1", 80), "service"),
        (instance("web", "10.0.0.1", 0), "port"),
        (instance("web", "10.0.0.1", 70_000), "port"),
        (instance("web", "not_a_host", 80), "address"),
        (v1::Instance { weight: Some(0), ..instance("web", "10.0.0.1", 80) }, "weight"),
        (v1::Instance { status: 42, ..instance("web", "10.0.0.1", 80) }, "status"),
        (v1::Instance { tags: vec!["t".into(); 65], ..instance("web", "10.0.0.1", 80) }, "tags"),
        (v1::Instance { zone: "bad zone".into(), ..instance("web", "10.0.0.1", 80) }, "zone"),
    ];
    let mut big = instance("web", "10.0.0.1", 80);
    big.meta.insert("k".into(), "v".repeat(17_000));
    cases.push((big, "meta"));
    for (wire, field) in cases {
        let req = v1::RegisterRequest { session_id: sid, instance: Some(wire) };
        let status = client.register(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let req = v1::RegisterRequest { session_id: 0, instance: Some(instance("web", "10.0.0.1", 80)) };
    assert!(client.register(req).await.unwrap_err().message().contains("session_id"));
    let req = v1::RegisterRequest { session_id: sid ^ 1, instance: Some(instance("web", "10.0.0.1", 80)) };
    assert_eq!(client.register(req).await.unwrap_err().code(), Code::NotFound);
    let req = v1::DeregisterRequest { service: "web".into(), id: "nope".into() };
    assert_eq!(client.deregister(req).await.unwrap_err().code(), Code::NotFound);
    let req = v1::GetServiceRequest { service: "-x".into(), include_unhealthy: false, linearizable: false };
    assert_eq!(client.get_service(req).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(server.revision().get(), 2, "nothing but the session was written");
    server.shutdown().await;
}

#[tokio::test]
async fn concurrent_writes_share_fsyncs_but_each_gets_its_own_revision() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let sid = session(&mut client, 60_000).await;
    let before = server.revision().get();
    let mut tasks = Vec::new();
    for port in 1..=200u32 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move { register(&mut client, sid, instance("web", "10.0.0.1", port)).await }));
    }
    let mut revisions = Vec::new();
    for task in tasks {
        revisions.push(task.await.unwrap());
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 200, "every acknowledged write has a revision of its own");
    assert_eq!((revisions[0], revisions[199]), (before + 1, before + 200), "no gaps");
    let status = server.status();
    assert!(status.last_log_index < 200, "writes were grouped into fewer log entries: {status:?}");
    server.shutdown().await;

    // And all of them are durable: a restart replays the same 200 instances.
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    assert_eq!(dump(&mut client).await["web"].len(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn watching_all_services_sees_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let sid = session(&mut client, 60_000).await;
    register(&mut client, sid, instance("web", "10.0.0.1", 1)).await;
    register(&mut client, sid, instance("api", "10.0.0.2", 2)).await;
    let mut all = client.watch(v1::WatchRequest::default()).await.unwrap().into_inner();
    let first = timeout(WAIT, all.message()).await.unwrap().unwrap().unwrap();
    let Some(Event::Snapshot(snapshot)) = first.event else { panic!("expected a snapshot: {first:?}") };
    let mut services: Vec<&str> = snapshot.instances.iter().map(|i| i.service.as_str()).collect();
    services.sort_unstable();
    assert_eq!(services, ["api", "web"]);

    let r1 = register(&mut client, sid, instance("db", "10.0.0.3", 3)).await;
    client.deregister(v1::DeregisterRequest { service: "web".into(), id: "10.0.0.1:1".into() }).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = timeout(WAIT, all.message()).await.unwrap().unwrap().unwrap();
        if let Some(Event::Deltas(d)) = msg.event {
            for delta in d.deltas {
                let i = delta.instance.unwrap();
                seen.push((d.revision, i.service, delta.kind));
            }
        }
    }
    assert_eq!(seen[0], (r1, "db".to_string(), v1::DeltaKind::Added as i32));
    assert_eq!((seen[1].1.as_str(), seen[1].2), ("web", v1::DeltaKind::Removed as i32));
    assert!(seen[1].0 > r1);
    server.shutdown().await;
}

async fn save(client: &mut RegistryClient<Channel>) -> Vec<u8> {
    let mut stream = client.save_snapshot(v1::SaveSnapshotRequest {}).await.unwrap().into_inner();
    let mut file = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        file.extend_from_slice(&chunk.data);
    }
    file
}

#[tokio::test]
async fn a_saved_backup_restores_into_a_fresh_data_dir_and_refuses_damage() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |c| c.raft.snapshot_every = 1_000_000).await;
    let mut client = rpc(&server).await;
    let s = session(&mut client, 60_000).await;
    for i in 0..30 {
        register(&mut client, s, instance("api", &format!("10.0.0.{i}"), 80)).await;
    }
    // Online: the server keeps serving while it saves, and the backup holds every write so
    // far even though no snapshot was due.
    let file = save(&mut client).await;
    let state = dump(&mut client).await;
    let revision = server.revision().get();
    register(&mut client, s, instance("api", "10.9.9.9", 80)).await;
    drop(client);
    server.shutdown().await;

    let backups = tempfile::tempdir().unwrap();
    let path = backups.path().join("backup.wgl");
    std::fs::write(&path, &file).unwrap();
    let restored_dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::ephemeral(restored_dir.path().join("data"));
    let summary = waggle_server::restore_snapshot(&path, &config).expect("restores");
    // The revision moves far ahead of the backup's: fencing tokens never repeat the old node's.
    let bumped = revision + 1_000_000_000;
    assert_eq!((summary.revision, summary.instances, summary.sessions), (bumped, 30, 1));
    // Restoring twice into the same data dir is refused: it would overwrite a node.
    let again = waggle_server::restore_snapshot(&path, &config).unwrap_err().to_string();
    assert!(again.contains("fresh"), "{again}");
    // So is a dir that holds anything else.
    let cluttered = restored_dir.path().join("cluttered");
    std::fs::create_dir_all(&cluttered).unwrap();
    std::fs::write(cluttered.join("notes.txt"), "keep me").unwrap();
    let error = waggle_server::restore_snapshot(&path, &ServerConfig::ephemeral(&cluttered)).unwrap_err();
    assert!(error.to_string().contains("not empty"), "{error}");
    assert_eq!(std::fs::read_dir(&cluttered).unwrap().count(), 1, "nothing written");

    let restored = Server::start(config).await.expect("the restored node starts");
    let mut client = rpc(&restored).await;
    assert_eq!(dump(&mut client).await, state);
    assert_eq!(restored.revision().get(), bumped);
    // The restored node takes writes, continuing the revision sequence; the old session got
    // a full TTL of grace and is still alive.
    let next = register(&mut client, s, instance("api", "10.1.1.1", 80)).await;
    assert!(next > bumped);
    drop(client);
    restored.shutdown().await;

    // A damaged or truncated file is refused before anything is written.
    let mut damaged = file.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    for (name, bytes) in [("damaged", damaged), ("truncated", file[..file.len() - 10].to_vec())] {
        let path = backups.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let target = restored_dir.path().join(name);
        let error = waggle_server::restore_snapshot(&path, &ServerConfig::ephemeral(&target)).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{name}: {error}");
        assert!(!target.exists(), "{name}: nothing written");
    }
}

#[tokio::test]
async fn consul_catalog_and_health_reads_with_blocking_queries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let http = server.http_addr();
    let mut client = rpc(&server).await;
    let s = session(&mut client, 60_000).await;
    let mut tagged = instance("api", "10.0.0.1", 8080);
    tagged.tags = vec!["v1".into()];
    tagged.weight = Some(5);
    register(&mut client, s, tagged).await;
    let mut sick = instance("api", "10.0.0.2", 8080);
    sick.status = v1::HealthStatus::Critical as i32;
    register(&mut client, s, sick).await;
    register(&mut client, s, instance("db", "10.0.1.1", 5432)).await;

    let (code, head, body) = http_get_with_head(http, "/v1/catalog/services").await;
    assert_eq!(code, 200);
    assert_eq!(consul_index(&head), server.revision().get());
    assert!(head.lines().any(|l| l == "x-consul-knownleader: true"), "{head}");
    let services: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(services, serde_json::json!({ "api": ["v1"], "db": [] }));

    let (_, body) = http_get(http, "/v1/catalog/service/api?tag=v1").await;
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(catalog.as_array().unwrap().len(), 1);
    assert_eq!(catalog[0]["ServiceAddress"], "10.0.0.1");
    assert_eq!(catalog[0]["ServicePort"], 8080);
    assert_eq!(catalog[0]["ServiceWeights"]["Passing"], 5);
    assert_eq!(catalog[0]["Datacenter"], "dc1");

    // Health: every instance with the node's serfHealth and its own check; `passing` filters;
    // catalog and health list one service in the same order.
    let (_, body) = http_get(http, "/v1/health/service/api").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = health.as_array().unwrap().iter().map(|e| e["Service"]["ID"].as_str().unwrap()).collect();
    let (_, body) = http_get(http, "/v1/catalog/service/api").await;
    let catalog: serde_json::Value = serde_json::from_str(&body).unwrap();
    let catalog_ids: Vec<&str> = catalog.as_array().unwrap().iter().map(|e| e["ServiceID"].as_str().unwrap()).collect();
    assert_eq!(ids, catalog_ids);
    assert_eq!(ids.len(), 2);
    let sick = health.as_array().unwrap().iter().find(|e| e["Service"]["Address"] == "10.0.0.2").unwrap();
    assert_eq!(sick["Checks"][0]["CheckID"], "serfHealth");
    assert_eq!(sick["Checks"][1]["Status"], "critical");
    let (_, body) = http_get(http, "/v1/health/service/api?passing").await;
    let passing: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(passing.as_array().unwrap().len(), 1);

    // A blocking query at the current index times out on `wait` with the same index…
    let index = server.revision().get();
    let (_, head, _) = http_get_with_head(http, &format!("/v1/health/service/api?index={index}&wait=100ms")).await;
    assert_eq!(consul_index(&head), index);
    // …and one with a long wait is woken by a change.
    let blocked = tokio::spawn(async move {
        http_get_with_head(http, &format!("/v1/health/service/api?index={index}&wait=30s")).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    register(&mut client, s, instance("api", "10.0.0.3", 8080)).await;
    let (code, head, body) = timeout(WAIT, blocked).await.expect("woken by the change").unwrap();
    assert_eq!(code, 200);
    assert!(consul_index(&head) > index);
    assert!(body.contains("10.0.0.3"));

    // Filters: on the fields each endpoint shows.
    let (code, body) = http_get(http, "/v1/catalog/service/api?filter=ServiceTags%20contains%20v1").await;
    assert_eq!(code, 200, "{body}");
    let only: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    let path = "/v1/health/service/api?filter=Service.Address%20!%3D%20%2210.0.0.1%22%20and%20Checks.Status%20%3D%3D%20critical";
    let (code, body) = http_get(http, path).await;
    assert_eq!(code, 200, "{body}");
    let sick: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sick.as_array().unwrap().len(), 1, "{sick}");
    assert_eq!(sick[0]["Service"]["Address"], "10.0.0.2");

    // Status, datacenters and agent self.
    let (_, body) = http_get(http, "/v1/catalog/datacenters").await;
    assert_eq!(body, "[\"dc1\"]");
    let (_, leader) = http_get(http, "/v1/status/leader").await;
    let (_, peers) = http_get(http, "/v1/status/peers").await;
    let peers: Vec<String> = serde_json::from_str(&peers).unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(leader, format!("\"{}\"", peers[0]));
    let (_, me) = http_get(http, "/v1/agent/self").await;
    let me: serde_json::Value = serde_json::from_str(&me).unwrap();
    assert_eq!(me["Config"]["Datacenter"], "dc1");
    assert!(me["Config"]["NodeName"].as_str().unwrap().starts_with("waggle-"));

    // Bad input gets Consul-shaped errors.
    for (path, code, text) in [
        ("/v1/catalog/services?dc=dc2", 500, "No path to datacenter"),
        ("/v1/health/service/api?wait=soon", 400, "invalid wait"),
        ("/v1/health/service/api?index=x", 400, "invalid index"),
        ("/v1/health/service/api?filter=Service.Nope%20%3D%3D%201", 400, "not valid"),
        ("/v1/health/service/api?filter=Service.Port%20%3D", 400, "boolean expression"),
        ("/v1/catalog/services?filter=ServiceName%20%3D%3D%20api", 400, "not supported on this endpoint"),
        ("/v1/catalog/service/-bad-", 400, "invalid service name"),
        ("/v1/event/list", 404, "unsupported endpoint"),
        ("/v1/kv/x", 404, ""), // a missing key
    ] {
        let (got, body) = http_get(http, path).await;
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(text), "{path}: {body}");
    }
    drop(client);
    server.shutdown().await;
}

#[tokio::test]
async fn prometheus_metrics_and_http_service_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let mut client = rpc(&server).await;
    let s = session(&mut client, 60_000).await;
    let mut tagged = instance("api", "10.0.0.1", 8080);
    tagged.tags = vec!["v1".into(), "canary".into()];
    tagged.meta = [("team".to_owned(), "core".to_owned()), ("odd-key".to_owned(), "x".to_owned())].into();
    tagged.zone = "eu-1".into();
    register(&mut client, s, tagged).await;
    register(&mut client, s, instance("api", "::1", 8081)).await;
    let mut sick = instance("api", "10.0.0.3", 8080);
    sick.status = v1::HealthStatus::Critical as i32;
    register(&mut client, s, sick).await;
    register(&mut client, s, instance("db", "10.0.1.1", 5432)).await;
    // One refused request, counted under its status code (INVALID_ARGUMENT = 3).
    let bad = client.register(v1::RegisterRequest { session_id: s, instance: Some(instance("api", "", 0)) }).await;
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    let (code, text) = http_get(server.http_addr(), "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        "waggle_raft_is_leader 1",
        "waggle_raft_leader_known 1",
        "waggle_registry_sessions 1",
        "waggle_registry_services 2",
        "waggle_registry_instances{service=\"api\",status=\"passing\"} 2",
        "waggle_registry_instances{service=\"api\",status=\"critical\"} 1",
        "waggle_grpc_requests_total{method=\"Register\",code=\"0\"} 4",
        "waggle_grpc_requests_total{method=\"Register\",code=\"3\"} 1",
        "# TYPE waggle_grpc_requests_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    let revision = format!("waggle_registry_revision {}", server.revision().get());
    assert!(text.lines().any(|l| l == revision), "{text}");
    let (code, same) = http_get(server.http_addr(), "/v1/agent/metrics?format=prometheus").await;
    assert_eq!(code, 200);
    assert!(same.contains("waggle_raft_term"));
    assert_eq!(http_get(server.http_addr(), "/v1/agent/metrics").await.0, 400);

    // http_sd: one group per passing instance; the critical one is left out, and so is a
    // port-less one (registered through Consul's API: nothing to scrape).
    let (code, _) = common::http_send(
        server.http_addr(),
        "PUT",
        "/v1/agent/service/register",
        br#"{"Name":"redis","Address":"10.0.0.9"}"#,
    )
    .await;
    assert_eq!(code, 200);
    let (code, body) = http_get(server.http_addr(), "/v1/prometheus/sd").await;
    assert_eq!(code, 200);
    let groups: serde_json::Value = serde_json::from_str(&body).unwrap();
    let targets: Vec<&str> = groups.as_array().unwrap().iter().map(|g| g["targets"][0].as_str().unwrap()).collect();
    assert_eq!(targets.len(), 3, "{groups}");
    assert!(
        targets.contains(&"10.0.0.1:8080") && targets.contains(&"[::1]:8081") && targets.contains(&"10.0.1.1:5432")
    );
    let group = groups.as_array().unwrap().iter().find(|g| g["targets"][0] == "10.0.0.1:8080").unwrap();
    let labels = &group["labels"];
    assert_eq!(labels["__meta_waggle_service"], "api");
    assert_eq!(labels["__meta_waggle_tags"], ",v1,canary,");
    assert_eq!(labels["__meta_waggle_zone"], "eu-1");
    assert_eq!(labels["__meta_waggle_meta_team"], "core");
    assert_eq!(labels["__meta_waggle_meta_odd_key"], "x");
    let (_, only) = http_get(server.http_addr(), "/v1/prometheus/sd?service=db").await;
    let only: serde_json::Value = serde_json::from_str(&only).unwrap();
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(http_get(server.http_addr(), "/v1/prometheus/sd?service=-bad").await.0, 400);
    drop(client);
    server.shutdown().await;
}

/// A plain HTTP/1.1 request with a body: (status, body).
#[tokio::test]
async fn consul_agent_registration_and_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let http = server.http_addr();
    // Keys match case-insensitively and in snake_case, as Consul's decoder does.
    let body = br#"{"name":"web","ID":"web-1","port":8080,"Address":"10.0.0.1","tags":["v1"],"meta":{"team":"core"},"weights":{"passing":7}}"#;
    assert_eq!(http_send(http, "PUT", "/v1/agent/service/register", body).await.0, 200);
    // ID defaults to Name; Address to this node's.
    assert_eq!(http_send(http, "PUT", "/v1/agent/service/register", br#"{"Name":"db","Port":5432}"#).await.0, 200);
    let (_, services) = http_get(http, "/v1/agent/services").await;
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    assert_eq!(services["web-1"]["Weights"]["Passing"], 7);
    assert_eq!(services["web-1"]["Meta"]["team"], "core");
    assert_eq!(services["db"]["Address"], http.ip().to_string());
    let (code, one) = http_get(http, "/v1/agent/service/web-1").await;
    assert_eq!(code, 200);
    assert!(one.contains("\"Service\":\"web\""), "{one}");

    for (body, code, text) in [
        (&b"{not json"[..], 400, "Request decode failed"),
        (&b"[1,2]"[..], 400, "JSON object"),
        (&br#"{"Port":80}"#[..], 400, "missing field Name"),
        (&br#"{"Name":"web","Port":"eighty"}"#[..], 400, "Port"),
        (&br#"{"Name":"web","Tags":"v1"}"#[..], 400, "Tags"),
        (&br#"{"Name":"bad name!","Port":80}"#[..], 400, "Invalid service"),
        (&br#"{"Name":"web","Port":80,"Check":{"TTL":"soon"}}"#[..], 400, "Invalid check: TTL: invalid duration"),
        // Consul (1.7+) refuses unknown fields, and `Service` in an agent registration.
        (&br#"{"Name":"web","Port":80,"Colour":"blue"}"#[..], 400, r#"json: unknown field "Colour""#),
        (&br#"{"Service":"web","Port":80}"#[..], 400, r#"unknown field "Service""#),
        (&br#"{"Name":"web","Port":80,"Check":{"TTL":"5s","Extra":1}}"#[..], 400, r#"unknown field "Extra""#),
    ] {
        let (got, answer) = http_send(http, "PUT", "/v1/agent/service/register", body).await;
        assert_eq!(got, code, "{}: {answer}", String::from_utf8_lossy(body));
        assert!(answer.contains(text), "{}: {answer}", String::from_utf8_lossy(body));
    }
    let huge = vec![b' '; 600 * 1024];
    assert_eq!(http_send(http, "PUT", "/v1/agent/service/register", &huge).await.0, 413);
    let (code, answer) = http_send(http, "PUT", "/v1/agent/service/deregister/nope", b"").await;
    assert_eq!(code, 404, "{answer}");
    assert_eq!(http_get(http, "/v1/agent/service/nope").await.0, 404);

    // An id is unique per agent: the same id under another name replaces the old instance.
    assert_eq!(
        http_send(http, "PUT", "/v1/agent/service/register", br#"{"Name":"db2","ID":"db","Port":5432}"#).await.0,
        200
    );
    assert_eq!(http_get(http, "/v1/catalog/service/db").await.1, "[]");
    assert_eq!(http_send(http, "PUT", "/v1/agent/service/register", br#"{"Name":"db","Port":5432}"#).await.0, 200);
    // The agent session is not for gRPC clients.
    let mut client = rpc(&server).await;
    let taken = client
        .register(v1::RegisterRequest { session_id: u64::MAX, instance: Some(instance("x", "10.0.0.9", 1)) })
        .await;
    assert_eq!(taken.unwrap_err().code(), Code::InvalidArgument);
    drop(client);

    // The catalog endpoints register and deregister the same way.
    let body = br#"{"Node":"ext-1","Address":"10.9.0.1","Service":{"Service":"cache","ID":"cache-1","Port":6379}}"#;
    let (code, answer) = http_send(http, "PUT", "/v1/catalog/register", body).await;
    assert_eq!((code, answer.as_str()), (200, "true"));
    let (_, cache) = http_get(http, "/v1/catalog/service/cache").await;
    let cache: serde_json::Value = serde_json::from_str(&cache).unwrap();
    assert_eq!(cache[0]["ServiceAddress"], "10.9.0.1", "the node's address stands in for the service's");
    let with_check = br#"{"Node":"n","Address":"10.9.0.1","Check":{"Status":"passing"}}"#;
    assert_eq!(http_send(http, "PUT", "/v1/catalog/register", with_check).await.0, 400);
    assert_eq!(http_send(http, "PUT", "/v1/catalog/deregister", br#"{"Node":"ext-1"}"#).await.0, 400);
    let (code, answer) =
        http_send(http, "PUT", "/v1/catalog/deregister", br#"{"Node":"ext-1","ServiceID":"cache-1"}"#).await;
    assert_eq!((code, answer.as_str()), (200, "true"));
    assert_eq!(http_get(http, "/v1/catalog/service/cache").await.1, "[]");

    // Agent instances stay until deregistered (no session to expire), and survive a restart.
    assert_eq!(http_send(http, "PUT", "/v1/agent/service/deregister/db", b"").await.0, 200);
    let addr = server.grpc_addr();
    server.shutdown().await;
    let server = start(dir.path(), |c| c.grpc_addr = addr).await;
    let (_, services) = http_get(server.http_addr(), "/v1/agent/services").await;
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    assert_eq!(services.as_object().unwrap().keys().collect::<Vec<_>>(), ["web-1"]);
    server.shutdown().await;
}

#[tokio::test]
async fn consul_nodes_checks_states_members_and_agent_health() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), |_| {}).await;
    let http = server.http_addr();
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}")) };
    assert_eq!(
        http_send(http, "PUT", "/v1/agent/service/register", br#"{"Name":"web","ID":"w1","Port":80}"#).await.0,
        200
    );
    let mut client = rpc(&server).await;
    let s = session(&mut client, 60_000).await;
    let mut warn = instance("web", "10.0.0.2", 80);
    warn.status = v1::HealthStatus::Warning as i32;
    register(&mut client, s, warn).await;

    let (_, nodes) = http_get(http, "/v1/catalog/nodes").await;
    let nodes = json(&nodes);
    let node = nodes[0]["Node"].as_str().unwrap().to_owned();
    assert!(node.starts_with("waggle-"));
    let (_, one) = http_get(http, &format!("/v1/catalog/node/{node}")).await;
    let one = json(&one);
    assert_eq!(one["Services"].as_object().unwrap().len(), 2, "{one}");
    assert_eq!(http_get(http, "/v1/catalog/node/elsewhere").await.1, "null");

    let (_, checks) = http_get(http, "/v1/health/checks/web").await;
    assert_eq!(json(&checks).as_array().unwrap().len(), 2);
    let (_, node_checks) = http_get(http, &format!("/v1/health/node/{node}")).await;
    let node_checks = json(&node_checks);
    assert_eq!(node_checks[0]["CheckID"], "serfHealth");
    assert_eq!(node_checks.as_array().unwrap().len(), 3);
    let (_, warning) = http_get(http, "/v1/health/state/warning").await;
    assert_eq!(json(&warning).as_array().unwrap().len(), 1);
    let (_, any) = http_get(http, "/v1/health/state/any").await;
    assert_eq!(json(&any).as_array().unwrap().len(), 3);
    assert_eq!(http_get(http, "/v1/health/state/sideways").await.0, 400);
    // Endpoints that do not filter refuse a filter rather than ignore it.
    for path in ["/v1/health/state/any?filter=Status%20%3D%3D%20passing", "/v1/agent/checks?filter=x%20%3D%3D%201"] {
        assert_eq!(http_get(http, path).await.0, 400, "{path}");
    }
    // An index past the registry's (a restored registry) answers at once, with the current one.
    let ahead = format!("/v1/health/service/web?index={}&wait=60s", server.revision().get() + 1000);
    let (code, head, _) = timeout(WAIT, http_get_with_head(http, &ahead)).await.expect("answered at once");
    assert_eq!(code, 200);
    assert_eq!(consul_index(&head), server.revision().get());

    let (_, agent_checks) = http_get(http, "/v1/agent/checks").await;
    assert!(json(&agent_checks)["service:w1"]["Status"] == "passing", "{agent_checks}");
    let (_, members) = http_get(http, "/v1/agent/members").await;
    assert_eq!(json(&members)[0]["Tags"]["dc"], "dc1");
    // Agent health answers with Consul's status codes: 200 passing, 404 unknown.
    let (code, health) = http_get(http, "/v1/agent/health/service/id/w1").await;
    assert_eq!(code, 200);
    assert_eq!(json(&health)["AggregatedStatus"], "passing");
    assert_eq!(http_get(http, "/v1/agent/health/service/name/web").await.0, 200);
    assert_eq!(http_get(http, "/v1/agent/health/service/id/nope").await.0, 404);
    assert_eq!(http_get(http, "/v1/agent/health/service/name/nope").await.0, 404);
    drop(client);
    server.shutdown().await;
}
