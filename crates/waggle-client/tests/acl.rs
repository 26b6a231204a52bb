//! The SDK against a server with ACLs on: the configured token rides on every call (registry,
//! KV, the keepalive stream), and a call without the right token is refused as
//! PERMISSION_DENIED.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use waggle_client::{Client, ClientConfig, InstanceSpec};
use waggle_server::{Server, ServerConfig};

const ROOT: &str = "11111111-2222-4333-8444-555555555555";

async fn start(dir: &std::path::Path) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.acl.enabled = true;
    config.acl.initial_management_token = Some(ROOT.into());
    Server::start(config).await.unwrap()
}

fn with_token(token: Option<&str>) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.token = token.map(str::to_owned);
    config
}

#[tokio::test]
async fn the_token_rides_on_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let url = format!("http://{}", server.grpc_addr());
    // The leader creates the initial management token right after start.
    let root = Client::connect_with(&url, with_token(Some(ROOT))).await.unwrap();
    let mut registered = None;
    for _ in 0..100 {
        match root.register(InstanceSpec::new("web", "10.0.0.1", 80).unwrap()).await {
            Ok(registration) => {
                registered = Some(registration);
                break;
            }
            Err(e) if e.code() == Some(tonic::Code::PermissionDenied) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let registration = registered.expect("registered with the management token");
    // KV calls and the keepalive stream carry it too: the session outlives a few TTLs.
    root.kv().put("k", b"v".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let web = root.discover("web").unwrap();
    tokio::time::timeout(Duration::from_secs(5), web.ready()).await.expect("discovery answers");
    assert_eq!(web.instances().len(), 1, "still registered: keepalives were accepted");

    // No token: the anonymous token, which may do nothing with deny by default.
    let anonymous = Client::connect_with(&url, with_token(None)).await.unwrap();
    let refused = anonymous.kv().put("k", b"x".to_vec()).await.unwrap_err();
    assert_eq!(refused.code(), Some(tonic::Code::PermissionDenied), "{refused}");
    assert!(refused.to_string().contains("key:write"), "{refused}");
    // A wrong token is refused ("ACL not found") as soon as the client connects.
    let wrong = Client::connect_with(&url, with_token(Some("00000000-0000-4000-8000-00000000dead"))).await;
    let Err(refused) = wrong else { panic!("a wrong token is refused") };
    assert!(refused.to_string().contains("ACL not found"), "{refused}");
    // A token that is not a header value is refused before anything is sent.
    assert!(Client::connect_with(&url, with_token(Some("bad\ntoken"))).await.is_err());
    registration.shutdown().await.unwrap();
    server.shutdown().await;
}
