//! `waggle acl ...`: the ACL system through the server's HTTP API (`/v1/acl/*`), in the shape
//! of `consul acl`: bootstrap, tokens, policies, roles. Reads print Consul's fields as
//! `Name: value` lines, or the server's JSON with `--json`.

use std::net::SocketAddr;

use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::{
    Failure,
    cli::{AclCommand, AclPolicyCommand, AclRoleCommand, AclTokenCommand, TokenFields},
};

/// One request to the HTTP API with the token, answering the JSON body; a non-2xx answer is a
/// runtime failure carrying the server's message.
async fn call(
    addr: SocketAddr,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Failure> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("cannot reach {addr}: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("{addr}: {e}")))?;
    tokio::spawn(connection);
    let mut request = http::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(token) = token {
        request = request.header("x-consul-token", token);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| Failure::Usage(format!("invalid request: {e}")))?;
    let response = sender.send_request(request).await.map_err(|e| Failure::Runtime(anyhow::anyhow!("{addr}: {e}")))?;
    let status = response.status();
    let bytes =
        response.into_body().collect().await.map_err(|e| Failure::Runtime(anyhow::anyhow!("{addr}: {e}")))?.to_bytes();
    let text = String::from_utf8_lossy(&bytes);
    if !status.is_success() {
        return Err(Failure::Runtime(anyhow::anyhow!("{} ({})", text.trim(), status.as_u16())));
    }
    serde_json::from_str(&text).map_err(|e| Failure::Runtime(anyhow::anyhow!("unexpected answer: {e}")))
}

fn print(value: &Value, json: bool, show: fn(&Value)) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(value).map_err(anyhow::Error::from)?);
    } else if let Value::Array(items) = value {
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                println!();
            }
            show(item);
        }
    } else {
        show(value);
    }
    Ok(())
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn links(value: &Value, key: &str) -> Vec<String> {
    value[key].as_array().into_iter().flatten().map(|l| format!("{} - {}", text(&l["ID"]), text(&l["Name"]))).collect()
}

fn show_token(t: &Value) {
    println!("AccessorID:       {}", text(&t["AccessorID"]));
    println!("SecretID:         {}", text(&t["SecretID"]));
    println!("Description:      {}", text(&t["Description"]));
    println!("Local:            {}", text(&t["Local"]));
    println!("Create Time:      {}", text(&t["CreateTime"]));
    if !t["ExpirationTime"].is_null() {
        println!("Expiration Time:  {}", text(&t["ExpirationTime"]));
    }
    for (title, key) in [("Policies", "Policies"), ("Roles", "Roles")] {
        let list = links(t, key);
        if !list.is_empty() {
            println!("{title}:");
            list.iter().for_each(|l| println!("   {l}"));
        }
    }
    for s in t["ServiceIdentities"].as_array().into_iter().flatten() {
        println!("Service Identity: {}", text(&s["ServiceName"]));
    }
    for n in t["NodeIdentities"].as_array().into_iter().flatten() {
        println!("Node Identity:    {} ({})", text(&n["NodeName"]), text(&n["Datacenter"]));
    }
}

fn show_policy(p: &Value) {
    println!("ID:           {}", text(&p["ID"]));
    println!("Name:         {}", text(&p["Name"]));
    println!("Description:  {}", text(&p["Description"]));
    println!("Rules:\n{}", text(&p["Rules"]));
}

fn show_role(r: &Value) {
    println!("ID:           {}", text(&r["ID"]));
    println!("Name:         {}", text(&r["Name"]));
    println!("Description:  {}", text(&r["Description"]));
    let list = links(r, "Policies");
    if !list.is_empty() {
        println!("Policies:");
        list.iter().for_each(|l| println!("   {l}"));
    }
    for s in r["ServiceIdentities"].as_array().into_iter().flatten() {
        println!("Service Identity: {}", text(&s["ServiceName"]));
    }
}

/// The policies, roles and identities of a token or role, as Consul's body.
fn grants_body(fields: &TokenFields, body: &mut serde_json::Map<String, Value>) -> Result<(), Failure> {
    let mut policies: Vec<Value> = fields.policy_name.iter().map(|n| json!({ "Name": n })).collect();
    policies.extend(fields.policy_id.iter().map(|id| json!({ "ID": id })));
    if !policies.is_empty() {
        body.insert("Policies".into(), Value::Array(policies));
    }
    let mut roles: Vec<Value> = fields.role_name.iter().map(|n| json!({ "Name": n })).collect();
    roles.extend(fields.role_id.iter().map(|id| json!({ "ID": id })));
    if !roles.is_empty() {
        body.insert("Roles".into(), Value::Array(roles));
    }
    if !fields.service_identity.is_empty() {
        let list = fields.service_identity.iter().map(|s| json!({ "ServiceName": s })).collect();
        body.insert("ServiceIdentities".into(), Value::Array(list));
    }
    if !fields.node_identity.is_empty() {
        let mut list = Vec::new();
        for spec in &fields.node_identity {
            let (node, dc) = spec
                .split_once(':')
                .ok_or_else(|| Failure::Usage(format!("--node-identity {spec:?}: expected NODE:DATACENTER")))?;
            list.push(json!({ "NodeName": node, "Datacenter": dc }));
        }
        body.insert("NodeIdentities".into(), Value::Array(list));
    }
    if let Some(description) = &fields.description {
        body.insert("Description".into(), json!(description));
    }
    Ok(())
}

/// `--rules` as given, or the file after `@`.
fn rules_text(rules: &Option<String>) -> Result<Option<String>, Failure> {
    match rules.as_deref() {
        Some(file) if file.starts_with('@') => {
            std::fs::read_to_string(&file[1..]).map(Some).map_err(|e| Failure::Usage(format!("--rules {file}: {e}")))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// Runs `waggle acl ...`.
pub(crate) async fn run(token: Option<&str>, command: AclCommand) -> Result<(), Failure> {
    match command {
        AclCommand::Bootstrap(args) => {
            let token = call(args.http_addr, None, "PUT", "/v1/acl/bootstrap", None).await?;
            print(&token, args.json, show_token)
        }
        AclCommand::Token(command) => token_command(token, command).await,
        AclCommand::Policy(command) => policy_command(token, command).await,
        AclCommand::Role(command) => role_command(token, command).await,
    }
}

async fn token_command(token: Option<&str>, command: AclTokenCommand) -> Result<(), Failure> {
    match command {
        AclTokenCommand::Create(args) => {
            let mut body = serde_json::Map::new();
            grants_body(&args.fields, &mut body)?;
            if let Some(id) = &args.accessor {
                body.insert("AccessorID".into(), json!(id));
            }
            if let Some(secret) = &args.secret {
                body.insert("SecretID".into(), json!(secret));
            }
            if let Some(ttl) = &args.expires_ttl {
                body.insert("ExpirationTTL".into(), json!(format!("{}s", ttl.as_secs())));
            }
            let created = call(args.http.http_addr, token, "PUT", "/v1/acl/token", Some(Value::Object(body))).await?;
            print(&created, args.http.json, show_token)
        }
        AclTokenCommand::Update(args) => {
            let path = format!("/v1/acl/token/{}", args.id);
            let current = call(args.http.http_addr, token, "GET", &path, None).await?;
            let mut body = serde_json::Map::new();
            body.insert("Description".into(), current["Description"].clone());
            for key in ["Policies", "Roles", "ServiceIdentities", "NodeIdentities", "TemplatedPolicies"] {
                if !current[key].is_null() {
                    body.insert(key.into(), current[key].clone());
                }
            }
            grants_body(&args.fields, &mut body)?;
            let updated = call(args.http.http_addr, token, "PUT", &path, Some(Value::Object(body))).await?;
            print(&updated, args.http.json, show_token)
        }
        AclTokenCommand::Read(args) => {
            let path = if args.self_ {
                "/v1/acl/token/self".to_owned()
            } else {
                format!("/v1/acl/token/{}", args.id.unwrap_or_default())
            };
            let found = call(args.http.http_addr, token, "GET", &path, None).await?;
            print(&found, args.http.json, show_token)
        }
        AclTokenCommand::List(args) => {
            let list = call(args.http_addr, token, "GET", "/v1/acl/tokens", None).await?;
            print(&list, args.json, show_token)
        }
        AclTokenCommand::Clone(args) => {
            let body = args.description.map(|d| json!({ "Description": d }));
            let path = format!("/v1/acl/token/{}/clone", args.id);
            let cloned = call(args.http.http_addr, token, "PUT", &path, body).await?;
            print(&cloned, args.http.json, show_token)
        }
        AclTokenCommand::Delete(args) => {
            call(args.http.http_addr, token, "DELETE", &format!("/v1/acl/token/{}", args.id), None).await?;
            println!("deleted token {}", args.id);
            Ok(())
        }
    }
}

async fn policy_command(token: Option<&str>, command: AclPolicyCommand) -> Result<(), Failure> {
    match command {
        AclPolicyCommand::Create(args) | AclPolicyCommand::Update(args) => {
            let rules = rules_text(&args.rules)?;
            let mut body = json!({ "Name": args.name, "Description": args.description.unwrap_or_default() });
            if let Some(rules) = rules {
                body["Rules"] = json!(rules);
            }
            let (method, path) = match &args.id {
                Some(id) => ("PUT", format!("/v1/acl/policy/{id}")),
                None => ("PUT", "/v1/acl/policy".to_owned()),
            };
            let policy = call(args.http.http_addr, token, method, &path, Some(body)).await?;
            print(&policy, args.http.json, show_policy)
        }
        AclPolicyCommand::Read(args) => {
            let path = match (args.id, args.name) {
                (Some(id), _) => format!("/v1/acl/policy/{id}"),
                (None, Some(name)) => format!("/v1/acl/policy/name/{name}"),
                (None, None) => return Err(Failure::Usage("give --id or --name".into())),
            };
            let policy = call(args.http.http_addr, token, "GET", &path, None).await?;
            print(&policy, args.http.json, show_policy)
        }
        AclPolicyCommand::List(args) => {
            let list = call(args.http_addr, token, "GET", "/v1/acl/policies", None).await?;
            print(&list, args.json, show_policy)
        }
        AclPolicyCommand::Delete(args) => {
            call(args.http.http_addr, token, "DELETE", &format!("/v1/acl/policy/{}", args.id), None).await?;
            println!("deleted policy {}", args.id);
            Ok(())
        }
    }
}

async fn role_command(token: Option<&str>, command: AclRoleCommand) -> Result<(), Failure> {
    match command {
        AclRoleCommand::Create(args) => {
            if !args.fields.role_name.is_empty() || !args.fields.role_id.is_empty() {
                return Err(Failure::Usage("a role links policies and identities, not roles".into()));
            }
            let mut body = serde_json::Map::new();
            body.insert("Name".into(), json!(args.name));
            grants_body(&args.fields, &mut body)?;
            let role = call(args.http.http_addr, token, "PUT", "/v1/acl/role", Some(Value::Object(body))).await?;
            print(&role, args.http.json, show_role)
        }
        AclRoleCommand::Read(args) => {
            let path = match (args.id, args.name) {
                (Some(id), _) => format!("/v1/acl/role/{id}"),
                (None, Some(name)) => format!("/v1/acl/role/name/{name}"),
                (None, None) => return Err(Failure::Usage("give --id or --name".into())),
            };
            let role = call(args.http.http_addr, token, "GET", &path, None).await?;
            print(&role, args.http.json, show_role)
        }
        AclRoleCommand::List(args) => {
            let list = call(args.http_addr, token, "GET", "/v1/acl/roles", None).await?;
            print(&list, args.json, show_role)
        }
        AclRoleCommand::Delete(args) => {
            call(args.http.http_addr, token, "DELETE", &format!("/v1/acl/role/{}", args.id), None).await?;
            println!("deleted role {}", args.id);
            Ok(())
        }
    }
}
