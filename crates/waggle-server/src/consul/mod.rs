//! The Consul-compatible HTTP API, so Consul's clients and tools (py-consul, Prometheus'
//! `consul_sd_configs`, vmagent, lock recipes) work unchanged: catalog (`catalog.rs`), health
//! (`health.rs`), agent (`agent.rs`, registrations in `registration.rs`, checks in `checks.rs`),
//! status (`status.rs`), KV (`kv.rs`), transactions (`txn.rs`) and sessions (`session.rs`), with
//! blocking queries (`?index=&wait=`) served by the read model (no polling), Consul's headers
//! (`request.rs`) and `?filter=` (the crate's `filter.rs`). What is supported is listed in
//! docs/compatibility.md.
//!
//! Mapping: every instance is a Consul service instance on one node, the server answering
//! (`waggle-<id>`, datacenter `dc1`), which carries the node-level `serfHealth` check
//! (`render.rs`). `X-Consul-Index` is the registry revision (starts at 1, never 0, only grows).
//!
//! Endpoints parse and render; every use case is the [`Node`]'s. Helpers are shared downward
//! (`request`, `fields`, `render`, `registration`), never between endpoint files.

mod acl;
mod acl_auth;
mod agent;
mod catalog;
mod checks;
mod fields;
mod health;
mod kv;
mod registration;
mod render;
mod request;
mod session;
mod status;
mod txn;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, put},
};
use waggle_core::HealthStatus;

use crate::node::Node;
use request::ConsulState;
pub(crate) use request::{ConsulError, request_token};

/// The largest request body accepted (documented in docs/compatibility.md).
pub(crate) const MAX_BODY: usize = 512 * 1024;

/// The Consul API's routes, answering as the node whose HTTP listener is `http_addr`.
pub(crate) fn router(node: Arc<Node>, http_addr: SocketAddr) -> Router {
    let state = ConsulState { node, http_addr };
    Router::new()
        .route("/v1/catalog/services", get(catalog::catalog_services))
        .route("/v1/catalog/service/{name}", get(catalog::catalog_service))
        .route("/v1/catalog/datacenters", get(status::datacenters))
        .route("/v1/health/service/{name}", get(health::health_service))
        .route("/v1/status/leader", get(status::status_leader))
        .route("/v1/status/peers", get(status::status_peers))
        .route("/v1/agent/self", get(agent::agent_self))
        .route("/v1/agent/service/register", put(agent::agent_register))
        .route("/v1/agent/service/deregister/{id}", put(agent::agent_deregister))
        .route("/v1/agent/services", get(agent::agent_services))
        .route("/v1/agent/service/{id}", get(agent::agent_service))
        .route("/v1/agent/checks", get(agent::agent_checks))
        .route("/v1/agent/members", get(agent::agent_members))
        .route("/v1/agent/health/service/name/{name}", get(agent::agent_health_by_name))
        .route("/v1/agent/health/service/id/{id}", get(agent::agent_health_by_id))
        .route("/v1/catalog/nodes", get(catalog::catalog_nodes))
        .route("/v1/catalog/register", put(catalog::catalog_register))
        .route("/v1/catalog/deregister", put(catalog::catalog_deregister))
        .route("/v1/catalog/node/{node}", get(catalog::catalog_node))
        .route("/v1/health/checks/{service}", get(health::health_checks))
        .route("/v1/health/node/{node}", get(health::health_node))
        .route("/v1/health/state/{state}", get(health::health_state))
        .route("/v1/agent/check/register", put(checks::check_register))
        .route("/v1/agent/check/deregister/{id}", put(checks::check_deregister))
        .route("/v1/agent/check/pass/{id}", checks::ttl_route(HealthStatus::Passing))
        .route("/v1/agent/check/warn/{id}", checks::ttl_route(HealthStatus::Warning))
        .route("/v1/agent/check/fail/{id}", checks::ttl_route(HealthStatus::Critical))
        .route("/v1/agent/check/update/{id}", put(checks::check_update))
        .route("/v1/agent/service/maintenance/{id}", put(checks::service_maintenance))
        .route("/v1/kv/{*key}", get(kv::kv_get).put(kv::kv_put).delete(kv::kv_delete))
        .route("/v1/kv/", get(kv::kv_get).delete(kv::kv_delete))
        .route("/v1/txn", put(txn::txn))
        .route("/v1/session/create", put(session::session_create))
        .route("/v1/session/destroy/{id}", put(session::session_destroy))
        .route("/v1/session/renew/{id}", put(session::session_renew))
        .route("/v1/session/info/{id}", get(session::session_info))
        .route("/v1/session/list", get(session::session_list))
        .route("/v1/session/node/{node}", get(session::session_node))
        .route("/v1/acl/bootstrap", put(acl::bootstrap))
        .route("/v1/acl/token", put(acl::token_create))
        .route("/v1/acl/token/self", get(acl::token_self))
        .route("/v1/acl/token/{id}", get(acl::token_read).put(acl::token_update).delete(acl::token_delete))
        .route("/v1/acl/token/{id}/clone", put(acl::token_clone))
        .route("/v1/acl/tokens", get(acl::token_list))
        .route("/v1/acl/policy", put(acl::policy_create))
        .route("/v1/acl/policy/name/{name}", get(acl::policy_read_by_name))
        .route("/v1/acl/policy/{id}", get(acl::policy_read).put(acl::policy_update).delete(acl::policy_delete))
        .route("/v1/acl/policies", get(acl::policy_list))
        .route("/v1/acl/role", put(acl::role_create))
        .route("/v1/acl/role/name/{name}", get(acl::role_read_by_name))
        .route("/v1/acl/role/{id}", get(acl::role_read).put(acl::role_update).delete(acl::role_delete))
        .route("/v1/acl/roles", get(acl::role_list))
        .route("/v1/acl/templated-policies", get(acl::templated_policies))
        .route("/v1/acl/templated-policy/name/{*name}", get(acl::templated_policy))
        .route("/v1/acl/templated-policy/preview/{*name}", axum::routing::post(acl::templated_policy_preview))
        .route("/v1/acl/auth-method", put(acl_auth::method_create))
        .route(
            "/v1/acl/auth-method/{name}",
            get(acl_auth::method_read).put(acl_auth::method_update).delete(acl_auth::method_delete),
        )
        .route("/v1/acl/auth-methods", get(acl_auth::method_list))
        .route("/v1/acl/binding-rule", put(acl_auth::rule_create))
        .route(
            "/v1/acl/binding-rule/{id}",
            get(acl_auth::rule_read).put(acl_auth::rule_update).delete(acl_auth::rule_delete),
        )
        .route("/v1/acl/binding-rules", get(acl_auth::rule_list))
        .route("/v1/acl/login", axum::routing::post(acl_auth::login))
        .route("/v1/acl/logout", axum::routing::post(acl_auth::logout))
        .route("/v1/agent/token/{kind}", put(acl::agent_token))
        // Registration bodies are small; Consul's own limit is larger, ours is documented.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// The path and status code of an unknown endpoint, Consul-style.
pub(crate) async fn not_found() -> impl IntoResponse {
    request::ConsulError(StatusCode::NOT_FOUND, "unsupported endpoint (see docs/compatibility.md)\n".into())
}
