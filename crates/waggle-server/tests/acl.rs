//! ACLs through the Consul HTTP API and gRPC on a real node: deny by default, the initial
//! management token, bootstrap once, policies in HCL and JSON, KV and service rules with their
//! precedence, a KV transaction with one forbidden op, revoked and unknown tokens, escalation
//! attempts, filtered reads, and gRPC metadata.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{http_get, http_get_with_head, http_send};
use serde_json::{Value, json};
use waggle_server::{Server, ServerConfig};

const ROOT: &str = "11111111-2222-4333-8444-555555555555";

async fn start(dir: &std::path::Path, initial: Option<&str>) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.acl.enabled = true;
    config.acl.initial_management_token = initial.map(str::to_owned);
    Server::start(config).await.unwrap()
}

/// Waits until the initial management token works.
async fn root_ready(http: std::net::SocketAddr) {
    for _ in 0..200 {
        if http_get(http, &format!("/v1/acl/token/self?token={ROOT}")).await.0 == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the initial management token never worked");
}

fn with(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

/// Creates a policy and a token linked to it: the token's secret.
async fn token_with_rules(http: std::net::SocketAddr, name: &str, rules: &str) -> String {
    let policy = json!({ "Name": name, "Rules": rules }).to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/acl/policy", ROOT), policy.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let token = json!({ "Description": name, "Policies": [{ "Name": name }] }).to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/acl/token", ROOT), token.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    token["SecretID"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn deny_by_default_and_bootstrap_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), None).await;
    let http = server.http_addr();
    // No token: the anonymous token, which may do nothing.
    let (code, body) = http_send(http, "PUT", "/v1/kv/a", b"1").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("Permission denied") && body.contains("key:write"), "{body}");
    assert_eq!(http_get(http, "/v1/acl/tokens").await.0, 403, "acl:read needed");
    // An unknown secret is "ACL not found".
    let (code, body) = http_send(http, "PUT", &with("/v1/kv/a", "00000000-0000-4000-8000-00000000dead"), b"1").await;
    assert_eq!((code, body.as_str()), (403, "ACL not found"));
    // Bootstrap works once.
    let (code, body) = http_send(http, "PUT", "/v1/acl/bootstrap", b"").await;
    assert_eq!(code, 200, "{body}");
    let root: Value = serde_json::from_str(&body).unwrap();
    let secret = root["SecretID"].as_str().unwrap();
    assert_eq!(root["Policies"][0]["Name"], "global-management");
    let (code, body) = http_send(http, "PUT", "/v1/acl/bootstrap", b"").await;
    assert_eq!((code, body.contains("ACL bootstrap no longer allowed")), (403, true), "{body}");
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/a", secret), b"1").await, (200, "true".into()));
    // The token reads itself; the list shows it.
    let (code, body) = http_get(http, &with("/v1/acl/token/self", secret)).await;
    assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap()["SecretID"].as_str()), (200, Some(secret)));
    server.shutdown().await;
}

#[tokio::test]
async fn rules_apply_with_consuls_precedence_on_kv_and_services() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    let http = server.http_addr();
    root_ready(http).await;
    let hcl = r#"
key_prefix "app/" { policy = "write" }
key "app/secret" { policy = "deny" }
key_prefix "" { policy = "read" }
service "web" { policy = "write" }
"#;
    let dev = token_with_rules(http, "dev", hcl).await;
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/app/x", &dev), b"1").await, (200, "true".into()));
    let (code, body) = http_send(http, "PUT", &with("/v1/kv/app/secret", &dev), b"1").await;
    assert_eq!(code, 403, "exact deny beats the prefix: {body}");
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/ab", &dev), b"1").await.0, 403, "app/ does not cover ab");
    assert_eq!(http_get(http, &with("/v1/kv/app/x?raw", &dev)).await, (200, "1".into()), "read through the prefix");
    // A transaction with one forbidden op is refused whole: nothing written.
    let txn = json!([
        { "KV": { "Verb": "set", "Key": "app/y", "Value": "Mg==" } },
        { "KV": { "Verb": "set", "Key": "other", "Value": "Mg==" } },
    ])
    .to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/txn", &dev), txn.as_bytes()).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(http_get(http, &with("/v1/kv/app/y", ROOT)).await.0, 404, "nothing of it was written");
    // Services: web may be registered, api may not.
    let web = json!({ "Name": "web", "Port": 80, "Address": "10.0.0.1" }).to_string();
    assert_eq!(http_send(http, "PUT", &with("/v1/agent/service/register", &dev), web.as_bytes()).await.0, 200);
    let api = json!({ "Name": "api", "Port": 80, "Address": "10.0.0.1" }).to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/agent/service/register", &dev), api.as_bytes()).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("service:write") && body.contains("\"api\""), "{body}");
    // Reads of a prefix are filtered, and say so.
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/app/secret", ROOT), b"s").await.0, 200);
    let (code, head, body) = http_get_with_head(http, &with("/v1/kv/app/?keys", &dev)).await;
    assert_eq!(code, 200);
    assert_eq!(body, r#"["app/x"]"#, "app/secret is left out");
    assert!(head.to_ascii_lowercase().contains("x-consul-results-filtered-by-acls: true"), "{head}");
    server.shutdown().await;
}

#[tokio::test]
async fn json_rules_match_hcl_and_bad_rules_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    let http = server.http_addr();
    root_ready(http).await;
    let json_rules = r#"{"key_prefix": {"cfg/": {"policy": "write"}}}"#;
    let cfg = token_with_rules(http, "cfg", json_rules).await;
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/cfg/a", &cfg), b"1").await.0, 200);
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/other", &cfg), b"1").await.0, 403);
    let bad = json!({ "Name": "bad", "Rules": "key_prefix \"\" {\n  policy = \"rwite\"\n}" }).to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/acl/policy", ROOT), bad.as_bytes()).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("line") && body.contains("rwite"), "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn revoked_tokens_and_escalation_attempts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    let http = server.http_addr();
    root_ready(http).await;
    let reader = token_with_rules(http, "reader", "acl = \"read\"\nkey_prefix \"\" { policy = \"write\" }").await;
    // acl:read may read tokens but not create, clone or update them (no escalation).
    assert_eq!(http_get(http, &with("/v1/acl/tokens", &reader)).await.0, 200);
    let grab = json!({ "Policies": [{ "ID": "00000000-0000-0000-0000-000000000001" }] }).to_string();
    let (code, body) = http_send(http, "PUT", &with("/v1/acl/token", &reader), grab.as_bytes()).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("acl:write"), "{body}");
    let (_, own) = http_get(http, &with("/v1/acl/token/self", &reader)).await;
    let accessor = serde_json::from_str::<Value>(&own).unwrap()["AccessorID"].as_str().unwrap().to_owned();
    let path = format!("/v1/acl/token/{accessor}");
    assert_eq!(http_send(http, "PUT", &with(&path, &reader), grab.as_bytes()).await.0, 403);
    assert_eq!(http_send(http, "PUT", &with(&format!("{path}/clone"), &reader), b"").await.0, 403);
    // The token works until it is deleted, then is "ACL not found" everywhere.
    assert_eq!(http_send(http, "PUT", &with("/v1/kv/k", &reader), b"1").await.0, 200);
    assert_eq!(http_send(http, "DELETE", &with(&path, ROOT), b"").await, (200, "true".into()));
    let (code, body) = http_send(http, "PUT", &with("/v1/kv/k", &reader), b"2").await;
    assert_eq!((code, body.as_str()), (403, "ACL not found"));
    server.shutdown().await;
}

#[tokio::test]
async fn grpc_calls_carry_the_token_in_metadata() {
    use waggle_proto::v1::{self, kv_client::KvClient};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    root_ready(server.http_addr()).await;
    let mut kv = KvClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let put = || v1::PutRequest { key: "g".into(), value: b"1".to_vec(), ..Default::default() };
    let refused = kv.put(put()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut request = tonic::Request::new(put());
    request.metadata_mut().insert("x-consul-token", ROOT.parse().unwrap());
    assert!(kv.put(request).await.unwrap().into_inner().succeeded);
    let mut request = tonic::Request::new(put());
    request.metadata_mut().insert("authorization", format!("Bearer {ROOT}").parse().unwrap());
    assert!(kv.put(request).await.is_ok(), "Authorization: Bearer works too");
    server.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_ends_its_watch_and_its_blocking_query() {
    use waggle_proto::v1::{self, kv_client::KvClient};
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    let http = server.http_addr();
    root_ready(http).await;
    let reader = token_with_rules(http, "watcher", "key_prefix \"\" { policy = \"read\" }").await;
    let (_, own) = http_get(http, &with("/v1/acl/token/self", &reader)).await;
    let accessor = serde_json::from_str::<Value>(&own).unwrap()["AccessorID"].as_str().unwrap().to_owned();
    // A gRPC watch and a Consul blocking query, both waiting with the token.
    let mut kv = KvClient::connect(format!("http://{}", server.grpc_addr())).await.unwrap();
    let mut request = tonic::Request::new(v1::WatchKvRequest { key: "w/".into(), prefix: true, ..Default::default() });
    request.metadata_mut().insert("x-consul-token", reader.parse().unwrap());
    let mut watch = kv.watch(request).await.unwrap().into_inner();
    let (_, head, _) = http_get_with_head(http, &with("/v1/kv/w/?recurse", &reader)).await;
    let index = common::consul_index(&head);
    let blocked = tokio::spawn(async move {
        http_get(http, &format!("/v1/kv/w/?recurse&index={index}&wait=30s&token={reader}")).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let delete = with(&format!("/v1/acl/token/{accessor}"), ROOT);
    assert_eq!(http_send(http, "DELETE", &delete, b"").await, (200, "true".into()));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message()).await.expect("the watch ends");
    let status = ended.unwrap_err();
    assert_eq!((status.code(), status.message()), (tonic::Code::PermissionDenied, "ACL not found"));
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), blocked).await.expect("the query ends");
    assert_eq!(answer.unwrap(), (403, "ACL not found".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn token_and_role_lists_filter_by_policy_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Some(ROOT)).await;
    let http = server.http_addr();
    root_ready(http).await;
    token_with_rules(http, "one", "key \"a\" { policy = \"read\" }").await;
    token_with_rules(http, "two", "key \"b\" { policy = \"read\" }").await;
    let (_, policy) = http_get(http, &with("/v1/acl/policy/name/one", ROOT)).await;
    let policy_id = serde_json::from_str::<Value>(&policy).unwrap()["ID"].as_str().unwrap().to_owned();
    let role = json!({ "Name": "r", "Policies": [{ "ID": policy_id }] }).to_string();
    let (code, role) = http_send(http, "PUT", &with("/v1/acl/role", ROOT), role.as_bytes()).await;
    assert_eq!(code, 200, "{role}");
    let role_id = serde_json::from_str::<Value>(&role).unwrap()["ID"].as_str().unwrap().to_owned();
    let (_, list) = http_get(http, &with(&format!("/v1/acl/tokens?policy={policy_id}"), ROOT)).await;
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["Description"], "one");
    let (_, all) = http_get(http, &with("/v1/acl/tokens", ROOT)).await;
    let all: Value = serde_json::from_str(&all).unwrap();
    assert!(all.as_array().unwrap().iter().any(|t| t["AccessorID"] == "00000000-0000-0000-0000-000000000002"));
    let (_, roles) = http_get(http, &with(&format!("/v1/acl/roles?policy={policy_id}"), ROOT)).await;
    assert_eq!(serde_json::from_str::<Value>(&roles).unwrap()[0]["ID"].as_str(), Some(role_id.as_str()));
    let (_, none) = http_get(http, &with(&format!("/v1/acl/tokens?role={role_id}"), ROOT)).await;
    assert_eq!(none, "[]");
    server.shutdown().await;
}
