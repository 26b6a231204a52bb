//! Auth methods, binding rules, login and logout through the Consul HTTP API on a real node:
//! a JWT method with an EC P-256 key made here, a binding rule granting the service named by a
//! claim to one team, the token login creates used and logged out; adversarial logins (wrong
//! issuer, audience, key, algorithm; expired, not yet valid; a selector that does not hold; an
//! unknown method; no bearer token), and the management endpoints' checks.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{http_get, http_send};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use waggle_server::{Server, ServerConfig};

const ROOT: &str = "11111111-2222-4333-8444-555555555555";
const ISSUER: &str = "https://ci.example";

async fn start(dir: &std::path::Path) -> Server {
    let mut config = ServerConfig::ephemeral(dir);
    config.acl.enabled = true;
    config.acl.initial_management_token = Some(ROOT.to_owned());
    let server = Server::start(config).await.unwrap();
    for _ in 0..200 {
        if http_get(server.http_addr(), &format!("/v1/acl/token/self?token={ROOT}")).await.0 == 200 {
            return server;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the initial management token never worked");
}

fn with(path: &str, token: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}token={token}")
}

/// A request carrying `X-Consul-Token`: (status, body).
async fn send_as(addr: std::net::SocketAddr, method: &str, path: &str, token: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Consul-Token: {token}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.split_whitespace().nth(1).unwrap().parse().unwrap(), body.to_owned())
}

/// An EC P-256 key pair: the public key (PEM) and the signing key.
fn key_pair() -> (String, EncodingKey) {
    let pair = rcgen::KeyPair::generate().unwrap();
    let signing = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    (pair.public_key_pem(), signing)
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims of a valid token for `service` of `team` (valid from a minute ago for ten minutes).
fn claims(service: &str, team: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": ["waggle"], "sub": "job-42", "iat": now() - 60, "nbf": now() - 60,
        "exp": now() + 600, "service": service, "team": team, "groups": ["deployers", "ci"],
    })
}

fn sign(key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, key).unwrap()
}

fn method_body(public_pem: &str) -> String {
    json!({
        "Name": "ci", "Type": "jwt", "DisplayName": "CI jobs", "Description": "tokens for CI jobs",
        "MaxTokenTTL": "1h", "TokenLocality": "local",
        "Config": {
            "JWTValidationPubKeys": [public_pem], "BoundIssuer": ISSUER, "BoundAudiences": ["waggle"],
            "ClaimMappings": { "service": "service", "team": "team" },
            "ListClaimMappings": { "groups": "groups" }, "JWTSupportedAlgs": ["ES256"],
        },
    })
    .to_string()
}

const SERVICE_RULE: &str = r#"{"AuthMethod": "ci", "BindType": "service", "BindName": "${value.service}", "Selector": "value.team == \"core\""}"#;

/// Creates the `ci` method and its service rule; answers the rule's id.
async fn set_up(http: std::net::SocketAddr, public_pem: &str) -> String {
    let (code, body) =
        http_send(http, "PUT", &with("/v1/acl/auth-method", ROOT), method_body(public_pem).as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_send(http, "PUT", &with("/v1/acl/binding-rule", ROOT), SERVICE_RULE.as_bytes()).await;
    assert_eq!(code, 200, "{body}");
    let rule: Value = serde_json::from_str(&body).unwrap();
    rule["ID"].as_str().unwrap().to_owned()
}

async fn login(http: std::net::SocketAddr, method: &str, bearer: &str) -> (u16, String) {
    let body = json!({ "AuthMethod": method, "BearerToken": bearer, "Meta": { "job": "42" } }).to_string();
    http_send(http, "POST", "/v1/acl/login", body.as_bytes()).await
}

fn register_body(service: &str) -> Vec<u8> {
    json!({ "Name": service, "Port": 80, "Address": "10.0.0.1" }).to_string().into_bytes()
}

#[tokio::test]
async fn login_grants_the_bound_service_and_logout_ends_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let (public, key) = key_pair();
    let rule_id = set_up(http, &public).await;

    // The method and the rule read back in Consul's shapes.
    let (code, body) = http_get(http, &with("/v1/acl/auth-method/ci", ROOT)).await;
    assert_eq!(code, 200, "{body}");
    let method: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((method["Type"].as_str(), method["MaxTokenTTL"].as_str()), (Some("jwt"), Some("1h0m0s")));
    assert_eq!(method["Config"]["ClaimMappings"]["service"], "service");
    assert_eq!(method["Config"]["JWTValidationPubKeys"][0].as_str(), Some(public.as_str()));
    let (code, body) = http_get(http, &with("/v1/acl/auth-methods", ROOT)).await;
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, list[0]["Name"].as_str(), list[0].get("Config")), (200, Some("ci"), None), "stubs");
    let (code, body) = http_get(http, &with(&format!("/v1/acl/binding-rule/{rule_id}"), ROOT)).await;
    let rule: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, rule["BindType"].as_str(), rule["BindName"].as_str()),
        (200, Some("service"), Some("${value.service}"))
    );
    let (_, body) = http_get(http, &with("/v1/acl/binding-rules?authmethod=ci", ROOT)).await;
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap().as_array().map(Vec::len), Some(1));
    let (_, body) = http_get(http, &with("/v1/acl/binding-rules?authmethod=other", ROOT)).await;
    assert_eq!(body, "[]");

    // Login: a token with the service identity of the claim, made by the method.
    let (code, body) = login(http, "ci", &sign(&key, &claims("web", "core"))).await;
    assert_eq!(code, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(token["AuthMethod"], "ci");
    assert_eq!(token["ServiceIdentities"], json!([{ "ServiceName": "web", "Datacenters": [] }]));
    assert_eq!(token["Local"], true);
    assert_eq!(token["Description"], r#"token created via login: {"job":"42"}"#);
    assert!(token["ExpirationTime"].is_string(), "MaxTokenTTL sets it: {token}");
    let secret = token["SecretID"].as_str().unwrap().to_owned();
    // The tokens of the method.
    let (_, body) = http_get(http, &with("/v1/acl/tokens?authmethod=ci", ROOT)).await;
    let issued: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(issued.as_array().map(Vec::len), Some(1));
    assert_eq!(issued[0]["AccessorID"], token["AccessorID"]);
    assert_eq!(http_get(http, &with("/v1/acl/tokens?authmethod=other", ROOT)).await.1, "[]");

    // It may register web, and only web.
    let (code, body) = send_as(http, "PUT", "/v1/agent/service/register", &secret, &register_body("web")).await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = send_as(http, "PUT", "/v1/agent/service/register", &secret, &register_body("api")).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("service:write"), "{body}");
    // It is not an ACL manager.
    assert_eq!(send_as(http, "GET", "/v1/acl/tokens", &secret, b"").await.0, 403);

    // Logout deletes it: then it is "ACL not found" everywhere, logout included.
    assert_eq!(send_as(http, "POST", "/v1/acl/logout", &secret, b"").await, (200, "true".into()));
    let (code, body) = send_as(http, "PUT", "/v1/agent/service/register", &secret, &register_body("web")).await;
    assert_eq!((code, body.as_str()), (403, "ACL not found"));
    assert_eq!(send_as(http, "POST", "/v1/acl/logout", &secret, b"").await, (403, "ACL not found".into()));
    server.shutdown().await;
}

#[tokio::test]
async fn adversarial_logins_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let (public, key) = key_pair();
    set_up(http, &public).await;
    let tokens_before = http_get(http, &with("/v1/acl/tokens", ROOT)).await.1;

    let (_, other_key) = key_pair();
    let edit = |change: Value| {
        let mut c = claims("web", "core");
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("web", "core"),
        &EncodingKey::from_secret(public.as_bytes()).unwrap(),
    )
    .unwrap();
    let cases = [
        ("wrong issuer", sign(&key, &edit(json!({ "iss": "https://evil.example" }))), "iss"),
        ("no issuer", sign(&key, &edit(json!({ "iss": null }))), "iss"),
        ("wrong audience", sign(&key, &edit(json!({ "aud": "consul" }))), "aud"),
        ("no audience", sign(&key, &edit(json!({ "aud": null }))), "aud"),
        ("another key", sign(&other_key, &claims("web", "core")), "signature"),
        ("expired", sign(&key, &edit(json!({ "exp": now() - 3600, "iat": now() - 7200, "nbf": null }))), "expired"),
        ("not yet valid", sign(&key, &edit(json!({ "nbf": now() + 3600, "iat": null }))), "not valid yet"),
        ("no times", sign(&key, &edit(json!({ "nbf": null, "iat": null, "exp": null }))), "no iat"),
        ("HS256 with the public key as secret", hs256, "not accepted"),
        ("not a JWT", "not.a.jwt".to_owned(), "malformed"),
        ("a selector that does not hold", sign(&key, &claims("web", "platform")), "Permission denied"),
        ("a claim that names no valid service", sign(&key, &claims("Web Server", "core")), "bind name"),
    ];
    for (what, bearer, why) in &cases {
        let (code, body) = login(http, "ci", bearer).await;
        assert_eq!(code, 403, "{what}: {body}");
        assert!(body.starts_with("Permission denied") && body.contains(why), "{what}: {body}");
        assert!(!body.contains(bearer.as_str()), "{what}: the answer does not echo the token");
    }
    // Nothing bound at all: Consul's bare message.
    assert_eq!(login(http, "ci", &sign(&key, &claims("web", "platform"))).await, (403, "Permission denied".into()));
    // An unknown method is "ACL not found" (Consul: acl.ErrNotFound, a 403).
    let (code, body) = login(http, "nope", &sign(&key, &claims("web", "core"))).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.starts_with("ACL not found"), "{body}");
    // A request without a bearer token, or without a method, is malformed.
    for body in [
        json!({ "AuthMethod": "ci", "BearerToken": "" }),
        json!({ "AuthMethod": "ci" }),
        json!({ "BearerToken": "x" }),
        json!({ "AuthMethod": "ci", "BearerToken": "x", "Meta": { "n": 1 } }),
        json!({ "AuthMethod": "ci", "BearerToken": "x", "Extra": 1 }),
    ] {
        let (code, answer) = http_send(http, "POST", "/v1/acl/login", body.to_string().as_bytes()).await;
        assert_eq!(code, 400, "{body}: {answer}");
    }
    assert_eq!(http_get(http, &with("/v1/acl/tokens", ROOT)).await.1, tokens_before, "no token was created");
    server.shutdown().await;
}

#[tokio::test]
async fn management_is_checked_and_deleting_a_method_ends_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let http = server.http_addr();
    let (public, key) = key_pair();

    // Managing needs acl:write; reading acl:read.
    let body = method_body(&public);
    assert_eq!(http_send(http, "PUT", "/v1/acl/auth-method", body.as_bytes()).await.0, 403);
    assert_eq!(http_get(http, "/v1/acl/auth-methods").await.0, 403);
    assert_eq!(http_get(http, "/v1/acl/binding-rules").await.0, 403);

    // Bad methods: 400 naming the problem.
    let bad_methods = [
        (json!({ "Name": "ci", "Type": "kubernetes", "Config": { "JWTValidationPubKeys": [public] } }), "Type"),
        (json!({ "Name": "c i", "Type": "jwt", "Config": { "JWTValidationPubKeys": [public] } }), "Name"),
        (json!({ "Name": "ci", "Type": "jwt", "Config": {} }), "JWTValidationPubKeys"),
        (
            json!({ "Name": "ci", "Type": "jwt", "Config": { "JWTValidationPubKeys": ["-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"] } }),
            "JWTValidationPubKeys[0]",
        ),
        (
            json!({ "Name": "ci", "Type": "jwt", "Config": { "JWTValidationPubKeys": [public], "JWTSupportedAlgs": ["HS256"] } }),
            "HS256",
        ),
        (
            json!({ "Name": "ci", "Type": "jwt", "Config": { "JWTValidationPubKeys": [public], "JWKSURL": "https://keys" } }),
            "JWKSURL",
        ),
        (
            json!({ "Name": "ci", "Type": "jwt", "MaxTokenTTL": "48h", "Config": { "JWTValidationPubKeys": [public] } }),
            "MaxTokenTTL",
        ),
        (
            json!({ "Name": "ci", "Type": "jwt", "TokenLocality": "galactic", "Config": { "JWTValidationPubKeys": [public] } }),
            "TokenLocality",
        ),
    ];
    for (bad, why) in &bad_methods {
        let (code, answer) =
            http_send(http, "PUT", &with("/v1/acl/auth-method", ROOT), bad.to_string().as_bytes()).await;
        assert_eq!(code, 400, "{bad}: {answer}");
        assert!(answer.contains(why), "{bad}: {answer}");
    }
    let rule_id = set_up(http, &public).await;

    // Bad rules: 400 naming the problem; a rule of a missing method too.
    let bad_rules = [
        (
            json!({ "AuthMethod": "ci", "BindType": "service", "BindName": "x", "Selector": "value.team ==" }),
            "Selector",
        ),
        (json!({ "AuthMethod": "ci", "BindType": "service", "BindName": "${value.nope}" }), "unknown variable"),
        (json!({ "AuthMethod": "ci", "BindType": "service", "BindName": "Web" }), "BindName"),
        (json!({ "AuthMethod": "ci", "BindType": "cluster", "BindName": "x" }), "BindType"),
        (json!({ "AuthMethod": "ci", "BindType": "templated-policy", "BindName": "builtin/service" }), "BindVars"),
        (json!({ "AuthMethod": "gone", "BindType": "service", "BindName": "x" }), "auth method"),
    ];
    for (bad, why) in &bad_rules {
        let (code, answer) =
            http_send(http, "PUT", &with("/v1/acl/binding-rule", ROOT), bad.to_string().as_bytes()).await;
        assert_eq!(code, 400, "{bad}: {answer}");
        assert!(answer.contains(why), "{bad}: {answer}");
    }
    // Missing ones are 404; deleting them is `true`.
    assert_eq!(http_get(http, &with("/v1/acl/auth-method/nope", ROOT)).await.0, 404);
    let missing = "/v1/acl/binding-rule/00000000-0000-4000-8000-000000000000";
    assert_eq!(http_get(http, &with(missing, ROOT)).await.0, 404);
    assert_eq!(http_send(http, "PUT", &with(missing, ROOT), SERVICE_RULE.as_bytes()).await.0, 404);
    assert_eq!(http_send(http, "DELETE", &with(missing, ROOT), b"").await, (200, "true".into()));

    // Roles by name from a list claim; a node identity; a templated policy.
    let role = json!({ "Name": "deployers", "ServiceIdentities": [{ "ServiceName": "deploy" }] }).to_string();
    assert_eq!(http_send(http, "PUT", &with("/v1/acl/role", ROOT), role.as_bytes()).await.0, 200);
    for rule in [
        json!({ "AuthMethod": "ci", "BindType": "role", "BindName": "deployers", "Selector": "\"deployers\" in list.groups" }),
        json!({ "AuthMethod": "ci", "BindType": "role", "BindName": "missing-role" }),
        json!({ "AuthMethod": "ci", "BindType": "node", "BindName": "node-${value.service}" }),
        json!({ "AuthMethod": "ci", "BindType": "templated-policy", "BindName": "builtin/dns" }),
    ] {
        let (code, answer) =
            http_send(http, "PUT", &with("/v1/acl/binding-rule", ROOT), rule.to_string().as_bytes()).await;
        assert_eq!(code, 200, "{rule}: {answer}");
    }
    let (code, body) = login(http, "ci", &sign(&key, &claims("api", "platform"))).await;
    assert_eq!(code, 200, "{body}");
    let token: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(token.get("ServiceIdentities"), None, "the team rule does not hold");
    assert_eq!(token["Roles"][0]["Name"], "deployers");
    assert_eq!(token["NodeIdentities"][0]["NodeName"], "node-api");
    assert_eq!(token["TemplatedPolicies"][0]["TemplateName"], "builtin/dns");
    let secret = token["SecretID"].as_str().unwrap().to_owned();
    assert_eq!(send_as(http, "PUT", "/v1/agent/service/register", &secret, &register_body("deploy")).await.0, 200);

    // Updating a rule keeps its id; one of another method may not take it over.
    let update = json!({ "AuthMethod": "ci", "BindType": "service", "BindName": "${value.service}", "Selector": "" });
    let path = with(&format!("/v1/acl/binding-rule/{rule_id}"), ROOT);
    let (code, body) = http_send(http, "PUT", &path, update.to_string().as_bytes()).await;
    assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap()["ID"].as_str()), (200, Some(rule_id.as_str())));

    // Logout refuses a token login did not create, and a request without a token.
    assert_eq!(send_as(http, "POST", "/v1/acl/logout", ROOT, b"").await.0, 403);
    assert_eq!(http_send(http, "POST", "/v1/acl/logout", b"").await, (403, "ACL not found".into()));

    // Deleting the method deletes its rules and the tokens it issued.
    assert_eq!(http_send(http, "DELETE", &with("/v1/acl/auth-method/ci", ROOT), b"").await, (200, "true".into()));
    assert_eq!(http_get(http, &with("/v1/acl/binding-rules", ROOT)).await, (200, "[]".into()));
    let (code, body) = send_as(http, "PUT", "/v1/agent/service/register", &secret, &register_body("deploy")).await;
    assert_eq!((code, body.as_str()), (403, "ACL not found"));
    assert_eq!(login(http, "ci", &sign(&key, &claims("web", "core"))).await.0, 403);
    server.shutdown().await;
}
