//! The `waggle.v1.Kv` service on a real node: puts, reads, prefix lists, compare-and-set,
//! transactions, keys bound to sessions, restart, and refused requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::{Code, transport::Channel};
use waggle_proto::v1::{self, kv_client::KvClient, registry_client::RegistryClient};
use waggle_server::{Server, ServerConfig};

async fn kv(server: &Server) -> KvClient<Channel> {
    KvClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap()
}

fn put(key: &str, value: &str) -> v1::PutRequest {
    v1::PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn get(key: &str) -> v1::GetRequest {
    v1::GetRequest { key: key.into(), ..Default::default() }
}

fn list(prefix: &str) -> v1::GetRequest {
    v1::GetRequest { key: prefix.into(), prefix: true, ..Default::default() }
}

async fn value(client: &mut KvClient<Channel>, key: &str) -> Option<String> {
    let kvs = client.get(get(key)).await.unwrap().into_inner().kvs;
    kvs.first().map(|kv| String::from_utf8(kv.value.clone()).unwrap())
}

#[tokio::test]
async fn puts_reads_cas_transactions_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let mut c = kv(&server).await;

    let first = c.put(put("app/db", "postgres")).await.unwrap().into_inner();
    assert!(first.succeeded && first.previous.is_none());
    let second = c.put(v1::PutRequest { flags: 7, ..put("app/db", "mysql") }).await.unwrap().into_inner();
    assert_eq!(second.previous.unwrap().value, b"postgres");
    c.put(put("app/port", "5432")).await.unwrap();
    c.put(put("other", "x")).await.unwrap();
    let entry = c.get(get("app/db")).await.unwrap().into_inner().kvs.remove(0);
    assert_eq!((entry.value.as_slice(), entry.flags, entry.version), (&b"mysql"[..], 7, 2));
    assert_eq!((entry.create_revision, entry.modify_revision), (first.revision, second.revision));

    // Lists by prefix, keys only, limited; linearizable reads too.
    let listed = c.get(list("app/")).await.unwrap().into_inner();
    assert_eq!(listed.kvs.iter().map(|k| k.key.as_str()).collect::<Vec<_>>(), ["app/db", "app/port"]);
    let keys = c.get(v1::GetRequest { keys_only: true, limit: 1, ..list("") }).await.unwrap().into_inner();
    assert_eq!((keys.kvs.len(), keys.kvs[0].value.is_empty(), keys.more), (1, true, true));
    let strong = c.get(v1::GetRequest { linearizable: true, ..get("app/port") }).await.unwrap().into_inner();
    assert_eq!(strong.kvs.len(), 1);
    assert!(c.get(get("nope")).await.unwrap().into_inner().kvs.is_empty());

    // Compare-and-set: create-only, then on the modify revision.
    let taken = c.put(v1::PutRequest { cas: Some(0), ..put("app/db", "z") }).await.unwrap().into_inner();
    assert!(!taken.succeeded);
    let stale = c.put(v1::PutRequest { cas: Some(first.revision), ..put("app/db", "z") }).await.unwrap().into_inner();
    assert!(!stale.succeeded);
    let ok = c.put(v1::PutRequest { cas: Some(second.revision), ..put("app/db", "z") }).await.unwrap().into_inner();
    assert!(ok.succeeded);
    assert_eq!(value(&mut c, "app/db").await.as_deref(), Some("z"));
    let del =
        c.delete(v1::DeleteRequest { key: "app/db".into(), prefix: false, cas: Some(1), guard: None }).await.unwrap();
    assert_eq!((del.get_ref().succeeded, del.get_ref().deleted), (false, 0));

    // A transaction: move a value atomically if it is what we think.
    let txn = v1::TxnRequest {
        compares: vec![v1::Compare {
            key: "app/port".into(),
            target: v1::compare::Target::Value.into(),
            op: v1::compare::Op::Equal.into(),
            value: b"5432".to_vec(),
            number: 0,
        }],
        success: vec![
            v1::Op { op: Some(v1::op::Op::Put(put("app/port", "6432"))) },
            v1::Op {
                op: Some(v1::op::Op::Delete(v1::DeleteRequest {
                    key: "other".into(),
                    prefix: false,
                    cas: None,
                    guard: None,
                })),
            },
            v1::Op { op: Some(v1::op::Op::Get(list("app/"))) },
        ],
        failure: vec![v1::Op { op: Some(v1::op::Op::Get(get("app/port"))) }],
        guard: None,
    };
    let done = c.txn(txn.clone()).await.unwrap().into_inner();
    assert!(done.succeeded);
    assert_eq!(done.results.len(), 3);
    assert!(matches!(&done.results[2].result, Some(v1::op_response::Result::Get(g)) if g.kvs.len() == 2));
    let again = c.txn(txn).await.unwrap().into_inner();
    assert!(!again.succeeded, "the value moved on");
    assert_eq!(again.revision, done.revision, "a transaction that only reads writes nothing");
    assert_eq!(value(&mut c, "other").await, None);

    // Refused, with the reason.
    for (status, what) in [
        (c.put(put("/abs", "v")).await.unwrap_err(), "key"),
        (c.put(put("has space", "v")).await.unwrap_err(), "key"),
        (c.put(put("big", &"x".repeat(512 * 1024 + 1))).await.unwrap_err(), "value"),
        (c.get(get("")).await.unwrap_err(), "key"),
        (
            c.delete(v1::DeleteRequest { key: "a".into(), prefix: true, cas: Some(1), guard: None }).await.unwrap_err(),
            "cas",
        ),
        (
            c.txn(v1::TxnRequest {
                success: vec![v1::Op { op: Some(v1::op::Op::Put(v1::PutRequest { cas: Some(1), ..put("a", "b") })) }],
                ..Default::default()
            })
            .await
            .unwrap_err(),
            "cas",
        ),
        (c.txn(v1::TxnRequest { success: vec![v1::Op { op: None }], ..Default::default() }).await.unwrap_err(), "op"),
        (
            c.put(v1::PutRequest { session_id: 12345, ..put("a", "b") }).await.unwrap_err(),
            "session 3039 not found", // ids print in hex
        ),
    ] {
        assert!(matches!(status.code(), Code::InvalidArgument | Code::NotFound), "{status:?}");
        assert!(status.message().contains(what), "{what}: {status:?}");
    }

    // Everything survives a restart.
    let addr = server.grpc_addr();
    server.shutdown().await;
    let mut config = ServerConfig::ephemeral(dir.path());
    config.grpc_addr = addr;
    let server = Server::start(config).await.unwrap();
    let mut c = kv(&server).await;
    assert_eq!(value(&mut c, "app/port").await.as_deref(), Some("6432"));
    server.shutdown().await;
}

#[tokio::test]
async fn writes_past_the_kv_quota_are_refused_and_deletes_free_space() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::ephemeral(dir.path());
    config.kv_quota_bytes = 10_000;
    let server = Server::start(config).await.unwrap();
    let mut c = kv(&server).await;
    let put = |key: &str, len: usize| v1::PutRequest { key: key.into(), value: vec![b'x'; len], ..Default::default() };
    for n in 0..4 {
        c.put(put(&format!("k{n}"), 2_000)).await.unwrap();
    }
    let full = c.put(put("k4", 2_100)).await.unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("8008 of its 10000 bytes"), "{full:?}");
    // Consul's API is held to the same quota.
    let (code, body) = common::http_send(server.http_addr(), "PUT", "/v1/kv/k4", &[b'x'; 2_100]).await;
    assert_eq!(code, 413, "{body}");
    // Deletes always pass and make room; reads and small writes that fit go on.
    c.delete(v1::DeleteRequest { key: "k0".into(), ..Default::default() }).await.unwrap();
    c.put(put("k4", 2_100)).await.unwrap();
    assert_eq!(value(&mut c, "k4").await.map(|v| v.len()), Some(2_100));
    // At the quota, writes that do not grow the store still pass (a release, a shrink).
    assert_eq!(c.put(put("k5", 2_000)).await.unwrap_err().code(), Code::ResourceExhausted);
    c.put(put("k1", 2_000)).await.unwrap();
    c.put(put("k1", 100)).await.unwrap();
    // The count survives a restart (rebuilt from the store).
    let addr = server.grpc_addr();
    server.shutdown().await;
    let mut config = ServerConfig::ephemeral(dir.path());
    config.grpc_addr = addr;
    config.kv_quota_bytes = 10_000;
    let server = Server::start(config).await.unwrap();
    let mut c = kv(&server).await;
    assert_eq!(c.put(put("k5", 4_000)).await.unwrap_err().code(), Code::ResourceExhausted);
    c.put(put("k5", 3_000)).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn keys_bound_to_a_session_are_deleted_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let mut c = kv(&server).await;
    let mut registry = RegistryClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let session = |ttl| v1::CreateSessionRequest { ttl_ms: Some(ttl), lock_delay_ms: None };
    let revoked = registry.create_session(session(60_000)).await.unwrap().into_inner().session_id;
    let expiring = registry.create_session(session(1_000)).await.unwrap().into_inner().session_id;
    c.put(v1::PutRequest { session_id: revoked, ..put("lock/a", "me") }).await.unwrap();
    c.put(v1::PutRequest { session_id: expiring, ..put("lock/b", "me") }).await.unwrap();
    c.put(put("lock/c", "free")).await.unwrap();
    let entry = c.get(get("lock/a")).await.unwrap().into_inner().kvs.remove(0);
    assert_eq!(entry.session_id, revoked);

    registry.revoke_session(v1::RevokeSessionRequest { session_id: revoked }).await.unwrap();
    assert_eq!(value(&mut c, "lock/a").await, None, "deleted with its revoked session");
    // Without keepalives the other session expires, and its key goes with it.
    let gone = async {
        while value(&mut c, "lock/b").await.is_some() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), gone).await.expect("the key goes with its session");
    assert_eq!(value(&mut c, "lock/c").await.as_deref(), Some("free"));
    server.shutdown().await;
}

mod common;

#[tokio::test]
async fn consul_kv_endpoints_and_their_errors() {
    use common::{consul_index, http_get, http_get_with_head, http_send};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    assert_eq!(http_send(http, "PUT", "/v1/kv/app/db", b"postgres").await, (200, "true".into()));
    assert_eq!(http_send(http, "PUT", "/v1/kv/app/cfg/a?flags=7", b"").await, (200, "true".into()));
    let (code, head, body) = http_get_with_head(http, "/v1/kv/app/db").await;
    assert_eq!(code, 200);
    let entry: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(entry[0]["Value"], "cG9zdGdyZXM=", "base64, as Consul");
    assert!(consul_index(&head) >= entry[0]["ModifyIndex"].as_u64().unwrap());
    assert_eq!(http_get(http, "/v1/kv/app/db?raw").await, (200, "postgres".into()));
    let (_, all) = http_get(http, "/v1/kv/?recurse").await;
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(
        (all[0]["Key"].as_str(), all[0]["Value"].is_null(), all[0]["Flags"].as_u64()),
        (Some("app/cfg/a"), true, Some(7))
    );
    assert_eq!(http_get(http, "/v1/kv/app/?keys&separator=/").await.1, r#"["app/cfg/","app/db"]"#);
    assert_eq!(http_get(http, "/v1/kv/nope").await.0, 404);
    // A stale cas is false; a delete with the right one is true.
    let modify = entry[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(http_send(http, "PUT", &format!("/v1/kv/app/db?cas={}", modify + 100), b"x").await.1, "false");
    assert_eq!(http_send(http, "DELETE", &format!("/v1/kv/app/db?cas={}", modify + 1), b"").await.1, "false");
    assert_eq!(http_send(http, "DELETE", &format!("/v1/kv/app/db?cas={modify}"), b"").await.1, "true");
    assert_eq!(http_send(http, "DELETE", "/v1/kv/app/db?cas=7", b"").await.1, "true", "gone already, as in Consul");
    for (method, path, body, code, text) in [
        ("PUT", "/v1/kv/app/x?cas=soon", &b"v"[..], 400, "invalid cas"),
        ("PUT", "/v1/kv/app/has%20space", b"v", 400, "Invalid key"),
        ("PUT", "/v1/kv/app/x?acquire=xyz", b"v", 400, "invalid session"),
        ("PUT", "/v1/kv/app/x?acquire=abc", b"v", 400, "invalid session"),
        ("DELETE", "/v1/kv/app?recurse&cas=1", b"", 400, "cannot be used"),
    ] {
        let (got, answer) = http_send(http, method, path, body).await;
        assert_eq!(got, code, "{method} {path}: {answer}");
        assert!(answer.contains(text), "{method} {path}: {answer}");
    }
    let huge = vec![b'x'; 600 * 1024];
    assert_eq!(http_send(http, "PUT", "/v1/kv/app/big", &huge).await.0, 413);
    assert_eq!(http_send(http, "DELETE", "/v1/kv/?recurse", b"").await.1, "true");
    assert_eq!(http_get(http, "/v1/kv/?recurse").await.0, 404);
    server.shutdown().await;
}
