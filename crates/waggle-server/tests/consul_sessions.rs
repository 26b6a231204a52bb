//! Consul sessions, locks on keys and transactions on a real node: what a session ends with
//! (behavior release / delete, lock-delay, kept across a restart), session reads, `/v1/txn`
//! results and rollback, and every refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::SocketAddr, time::Duration};

use serde_json::{Value, json};
use waggle_server::{Server, ServerConfig};

mod common;
use common::{http_get, http_send};

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

async fn put(http: SocketAddr, path: &str, body: &str) -> (u16, String) {
    http_send(http, "PUT", path, body.as_bytes()).await
}

async fn create(http: SocketAddr, body: Value) -> String {
    let (code, answer) = put(http, "/v1/session/create", &body.to_string()).await;
    assert_eq!(code, 200, "{answer}");
    parse(&answer)["ID"].as_str().unwrap().to_owned()
}

async fn key(http: SocketAddr, key: &str) -> Option<Value> {
    let (code, body) = http_get(http, &format!("/v1/kv/{key}")).await;
    match code {
        404 => None,
        200 => Some(parse(&body)[0].clone()),
        other => panic!("{other}: {body}"),
    }
}

async fn acquire(http: SocketAddr, k: &str, session: &str) -> bool {
    let (code, body) = put(http, &format!("/v1/kv/{k}?acquire={session}"), "v").await;
    assert_eq!(code, 200, "{body}");
    parse(&body).as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_release_or_delete_their_keys_under_a_lock_delay_that_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    // Consul's defaults: behavior release, lock-delay 15 s, no TTL.
    let plain = create(http, json!({})).await;
    let (_, info) = http_get(http, &format!("/v1/session/info/{plain}")).await;
    let info = parse(&info)[0].clone();
    assert_eq!((info["Behavior"].as_str(), info["TTL"].as_str()), (Some("release"), Some("")), "{info}");
    assert_eq!(info["LockDelay"], 15_000_000_000u64, "{info}");
    let short = create(http, json!({ "Name": "short", "LockDelay": "1s", "TTL": "30s" })).await;
    let zero = create(http, json!({ "TTL": "0s" })).await;
    let (_, info) = http_get(http, &format!("/v1/session/info/{zero}")).await;
    assert_eq!(parse(&info)[0]["TTL"], "", "a zero TTL is no TTL, as in Consul");
    assert_eq!(put(http, &format!("/v1/session/destroy/{zero}"), "").await.0, 200);
    let deleting = create(http, json!({ "Behavior": "delete", "LockDelay": 0 })).await;
    assert!(acquire(http, "lock/a", &short).await);
    assert!(acquire(http, "lock/b", &deleting).await);
    assert!(!acquire(http, "lock/a", &plain).await, "held by another session");
    assert_eq!(key(http, "lock/a").await.unwrap()["Session"].as_str(), Some(short.as_str()));

    // Renewing works for both kinds; a renewed session is listed with its TTL.
    let (code, renewed) = put(http, &format!("/v1/session/renew/{short}"), "").await;
    assert_eq!((code, parse(&renewed)[0]["TTL"].as_str()), (200, Some("30s")), "{renewed}");
    assert_eq!(put(http, &format!("/v1/session/renew/{plain}"), "").await.0, 200);

    assert_eq!(put(http, &format!("/v1/session/destroy/{deleting}"), "").await, (200, "true".into()));
    assert!(key(http, "lock/b").await.is_none(), "behavior delete removes the key");
    assert!(acquire(http, "lock/b", &plain).await, "no lock-delay: free at once");
    assert_eq!(put(http, &format!("/v1/session/destroy/{short}"), "").await.0, 200);
    let released = key(http, "lock/a").await.expect("behavior release keeps the key");
    assert!(released.get("Session").is_none() && released["LockIndex"] == 1, "{released}");
    assert!(!acquire(http, "lock/a", &plain).await, "under its lock-delay");

    // The delay is in the replicated state: after a restart it runs again in full.
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.shutdown().await;
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    let (_, listed) = http_get(http, "/v1/session/list").await;
    let listed = parse(&listed);
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|s| s["ID"].as_str().unwrap()).collect();
    assert_eq!(ids, [plain.as_str()], "{listed}");
    // 0.7 s + the restart + 0.3 s after the destroy: past the 1 s delay, unless the restart
    // gave it its full length again (as it must).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!acquire(http, "lock/a", &plain).await, "the restart gives the delay its full length again");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !acquire(http, "lock/a", &plain).await {
        assert!(tokio::time::Instant::now() < deadline, "the lock-delay is never lifted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(key(http, "lock/a").await.unwrap()["LockIndex"], 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_apply_atomically_and_name_the_failed_operation() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    let s = create(http, json!({ "LockDelay": "0s" })).await;
    let ops = json!([
        { "KV": { "Verb": "set", "Key": "a", "Value": "MQ==", "Flags": 5 } },
        { "KV": { "Verb": "lock", "Key": "l", "Session": s } },
        { "KV": { "Verb": "check-not-exists", "Key": "b" } },
        { "KV": { "Verb": "get-tree", "Key": "" } },
    ]);
    let (code, body) = put(http, "/v1/txn", &ops.to_string()).await;
    assert_eq!(code, 200, "{body}");
    let results = parse(&body)["Results"].clone();
    let keys: Vec<&str> = results.as_array().unwrap().iter().map(|r| r["KV"]["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "l", "a", "l"], "set, lock, then the tree: {body}");
    assert_eq!((results[0]["KV"]["Value"].clone(), results[2]["KV"]["Value"].clone()), (Value::Null, json!("MQ==")));
    let index = results[0]["KV"]["ModifyIndex"].as_u64().unwrap();

    for (failing, at) in [
        (json!({ "Verb": "cas", "Key": "a", "Index": index + 1, "Value": "Mg==" }), "index is stale"),
        (json!({ "Verb": "check-index", "Key": "a", "Index": index + 1 }), "modify index"),
        (json!({ "Verb": "unlock", "Key": "a", "Session": s }), "failed to unlock"),
        (json!({ "Verb": "get", "Key": "missing" }), "doesn't exist"),
        (json!({ "Verb": "check-not-exists", "Key": "a" }), "exists"),
        (json!({ "Verb": "delete-cas", "Key": "a", "Index": 1 }), "index is stale"),
        (json!({ "Verb": "check-index", "Key": "missing", "Index": 0 }), "doesn't exist"),
        (json!({ "Verb": "lock", "Key": "x", "Session": "0000abcd-0000-0001-0000-000000000000" }), "invalid session"),
    ] {
        let ops = json!([{ "KV": { "Verb": "delete", "Key": "l" } }, { "KV": failing }]);
        let (code, body) = put(http, "/v1/txn", &ops.to_string()).await;
        assert_eq!(code, 409, "{failing}: {body}");
        let errors = parse(&body)["Errors"].clone();
        assert_eq!(errors[0]["OpIndex"], 1, "{body}");
        assert!(errors[0]["What"].as_str().unwrap().contains(at), "{body}");
        assert!(key(http, "l").await.is_some(), "the delete before the failure is rolled back");
    }

    // Read-only transactions are answered without a write (the revision stays).
    let before = server.revision();
    let reads = json!([
        { "KV": { "Verb": "get", "Key": "a" } },
        { "KV": { "Verb": "check-session", "Key": "l", "Session": s } },
    ]);
    let (code, body) = put(http, "/v1/txn", &reads.to_string()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(parse(&body)["Results"][0]["KV"]["Value"], "MQ==", "{body}");
    let (code, body) = put(http, "/v1/txn", &json!([{ "KV": { "Verb": "get", "Key": "nope" } }]).to_string()).await;
    assert_eq!((code, parse(&body)["Errors"][0]["OpIndex"].clone()), (409, json!(0)), "{body}");
    assert_eq!(server.revision(), before, "reads write nothing");

    // Deleting a key that is already gone with delete-cas succeeds, as in Consul.
    let ops = json!([{ "KV": { "Verb": "delete-cas", "Key": "gone", "Index": 9 } }]);
    assert_eq!(put(http, "/v1/txn", &ops.to_string()).await.0, 200);

    // Refusals before anything runs.
    let too_many: Vec<Value> = (0..65).map(|i| json!({ "KV": { "Verb": "get", "Key": format!("k{i}") } })).collect();
    for (body, code) in [
        ("not json".to_owned(), 400),
        (json!({ "KV": {} }).to_string(), 400),
        (json!([{ "Node": { "Verb": "get" } }]).to_string(), 400),
        (json!([{ "KV": { "Verb": "explode", "Key": "a" } }]).to_string(), 400),
        (json!([{ "KV": { "Verb": "set", "Key": "a", "Value": "%%%" } }]).to_string(), 400),
        (json!([{ "KV": { "Verb": "set", "Key": "/abs" } }]).to_string(), 400),
        (json!([{ "KV": { "Verb": "lock", "Key": "a", "Session": "nope" } }]).to_string(), 400),
        (json!([{ "KV": { "Verb": "set", "Key": "a", "Extra": 1 } }]).to_string(), 400),
        (Value::Array(too_many).to_string(), 413),
    ] {
        let (got, answer) = put(http, "/v1/txn", &body).await;
        assert_eq!(got, code, "{body}: {answer}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_session_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    for (body, needle) in [
        (json!({ "TTL": "5s" }), "Invalid Session TTL"),
        (json!({ "TTL": "25h" }), "Invalid Session TTL"),
        (json!({ "TTL": "soon" }), "invalid TTL"),
        (json!({ "Behavior": "explode" }), "Invalid Behavior"),
        (json!({ "LockDelay": "61s" }), "at most 60s"),
        (json!({ "Node": "elsewhere" }), "Missing node registration"),
        (json!({ "Checks": ["service:web"] }), "no check"),
        (json!({ "ServiceChecks": [{ "ID": "x" }] }), "no check"),
        (json!({ "ServiceChecks": [{ "Name": "x" }] }), "unknown field"),
        (json!({ "ServiceChecks": [5] }), "expected check ids"),
        (json!({ "Namespace": "team" }), "not supported"),
        (json!({ "Nmae": "typo" }), "unknown field"),
        (json!({ "Name": 5 }), "expected a string"),
        (json!([1]), "expected an object"),
    ] {
        let (code, answer) = put(http, "/v1/session/create", &body.to_string()).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer.contains(needle), "{body}: {answer}");
    }
    let unknown = "0000abcd-0000-0001-0000-000000000000";
    assert_eq!(put(http, &format!("/v1/session/renew/{unknown}"), "").await.0, 404);
    assert_eq!(put(http, "/v1/session/renew/not-a-session", "").await.0, 400);
    assert_eq!(put(http, "/v1/session/destroy/not-a-session", "").await.0, 400);
    assert_eq!(http_get(http, "/v1/session/info/not-a-session").await, (200, "[]".into()));
    assert_eq!(put(http, "/v1/kv/k?acquire=nope", "v").await.0, 400);
    let (code, answer) = put(http, &format!("/v1/kv/k?acquire={unknown}"), "v").await;
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("invalid session"), "{answer}");
    assert_eq!(put(http, &format!("/v1/kv/k?acquire={unknown}&release={unknown}"), "v").await.0, 400);
    assert!(key(http, "k").await.is_none(), "nothing was written");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_tied_to_a_service_check_ends_when_the_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let http = server.http_addr();
    let service = json!({ "Name": "web", "ID": "web-1", "Port": 80, "Address": "10.0.0.1",
        "Check": { "TTL": "30s", "Status": "passing" } });
    assert_eq!(put(http, "/v1/agent/service/register", &service.to_string()).await.0, 200);
    let s = create(http, json!({ "ServiceChecks": [{ "ID": "service:web-1" }], "LockDelay": "0s" })).await;
    let (_, info) = http_get(http, &format!("/v1/session/info/{s}")).await;
    assert_eq!(parse(&info)[0]["ServiceChecks"], json!([{ "ID": "service:web-1", "Namespace": "" }]), "{info}");
    assert!(acquire(http, "leader", &s).await);
    // A warning keeps it; critical ends it and releases its lock.
    assert_eq!(put(http, "/v1/agent/check/warn/service:web-1", "").await.0, 200);
    assert!(http_get(http, &format!("/v1/session/info/{s}")).await.1.len() > 2, "still alive");
    assert_eq!(put(http, "/v1/agent/check/fail/service:web-1", "").await.0, 200);
    assert_eq!(http_get(http, &format!("/v1/session/info/{s}")).await, (200, "[]".into()));
    assert!(key(http, "leader").await.unwrap().get("Session").is_none());
    // A critical check cannot be depended on.
    let (code, body) = put(http, "/v1/session/create", r#"{"ServiceChecks":[{"ID":"service:web-1"}]}"#).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("critical"), "{body}");
    server.shutdown().await;
}
