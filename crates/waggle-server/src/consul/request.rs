//! What every Consul endpoint shares: its error ([`ConsulError`], with the one conversion from
//! a [`NodeError`]), query parameters, blocking queries on the read model (no polling), and
//! answers with Consul's headers.

use std::time::Duration;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::Value;
use waggle_core::{Revision, ServiceName, SessionId};

pub(crate) use crate::node::DATACENTER;
use crate::node::{Caller, Node, NodeError};

/// What every Consul endpoint reads.
#[derive(Clone)]
pub(crate) struct ConsulState {
    pub(crate) node: std::sync::Arc<Node>,
    /// The HTTP listener's address (the Consul node address).
    pub(crate) http_addr: std::net::SocketAddr,
}

/// Blocking queries wait this long by default, and at most `MAX_WAIT`.
pub(super) const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub(super) const MAX_WAIT: Duration = Duration::from_secs(600);

/// A Consul-shaped error: status code and a plain-text message.
pub(crate) struct ConsulError(pub(crate) StatusCode, pub(crate) String);

impl IntoResponse for ConsulError {
    fn into_response(self) -> Response {
        (self.0, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], self.1).into_response()
    }
}

impl From<NodeError> for ConsulError {
    /// A failed operation as Consul answers it: the client's fault is a 4xx (404 for an
    /// unknown object, 413 when too large, else 400); anything else is the server's (500).
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::BadInput(e) => return bad_request(format!("Invalid request: {e}")),
            NodeError::NotFound(_) => StatusCode::NOT_FOUND,
            NodeError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            NodeError::Invalid(_) | NodeError::Conflict(_) | NodeError::Precondition(_) => StatusCode::BAD_REQUEST,
            NodeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            NodeError::NotLeader | NodeError::LeaderUnreachable | NodeError::Overloaded | NodeError::Unavailable(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ConsulError(code, e.to_string())
    }
}

pub(crate) fn bad_request(message: impl Into<String>) -> ConsulError {
    ConsulError(StatusCode::BAD_REQUEST, message.into())
}

/// The query parameters these endpoints understand.
#[derive(Default)]
pub(crate) struct Params {
    pub(super) index: Option<u64>,
    pub(super) wait: Option<Duration>,
    pub(super) tags: Vec<String>,
    pub(super) passing: bool,
    pub(super) consistent: bool,
    pub(super) filter: Option<String>,
}

pub(crate) fn params(raw: Option<String>) -> Result<Params, ConsulError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| bad_request(format!("malformed query string: {e}")))?;
    let mut p = Params::default();
    for (key, value) in pairs {
        match key.as_str() {
            "dc" if !value.is_empty() && value != DATACENTER => {
                return Err(ConsulError(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter".into()));
            }
            "index" => {
                p.index = Some(value.parse().map_err(|_| bad_request(format!("invalid index {value:?}")))?);
            }
            // An empty wait is no wait parameter, as in Consul.
            "wait" if value.is_empty() => {}
            "wait" => {
                let wait = go_duration(&value).ok_or_else(|| bad_request(format!("invalid wait {value:?}")))?;
                // 0 means the default, as in Consul.
                p.wait = (!wait.is_zero()).then_some(wait.min(MAX_WAIT));
            }
            "tag" => p.tags.push(value),
            "passing" => p.passing = value.is_empty() || value == "true" || value == "1",
            "consistent" => p.consistent = true,
            "filter" => p.filter = Some(value),
            _ => {}
        }
    }
    Ok(p)
}

/// Parses a Go duration (`300ms`, `1.5s`, `2h45m`), as Consul's `?wait=` takes them.
pub(crate) fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    if text.is_empty() {
        return None;
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

/// Refuses `?filter=` where the endpoint does not apply it (rather than ignore it).
pub(super) fn unfiltered(p: Params) -> Result<Params, ConsulError> {
    match p.filter {
        Some(_) => Err(bad_request("filter is not supported on this endpoint")),
        None => Ok(p),
    }
}

/// The query of an endpoint that takes no `tag` or `filter`: parsed, then blocked on.
pub(super) async fn plain_query(state: &ConsulState, raw: Option<String>) -> Result<Revision, ConsulError> {
    blocking(state, &unfiltered(params(raw)?)?).await
}

/// Runs a blocking query: if `?index` is at or past the current revision, waits until the
/// registry changes or the wait (plus up to 1/16 jitter) ends. Then reads.
pub(crate) async fn blocking(state: &ConsulState, p: &Params) -> Result<Revision, ConsulError> {
    if p.consistent {
        state.node.read_barrier().await?;
    }
    let current = state.node.read_model().revision();
    // An index past ours (a restored registry, another cluster's index) is answered at once, so
    // the client resets to ours rather than block on a number it will not see soon.
    if let Some(index) = p.index
        && index == current.get()
    {
        let wait = p.wait.unwrap_or(DEFAULT_WAIT);
        let jitter = wait / 16;
        let jitter = Duration::from_millis(rand_below(jitter.as_millis() as u64 + 1));
        let changed = state.node.read_model().applied(Revision::new(index.saturating_add(1)));
        let _ = tokio::time::timeout(wait + jitter, changed).await;
    }
    Ok(state.node.read_model().revision())
}

/// A random number below `n` (jitter only: std's per-instance random hasher keys suffice).
pub(super) fn rand_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(n) % n.max(1)
}

/// JSON with Consul's headers.
pub(crate) fn answer(state: &ConsulState, index: Revision, body: Value) -> Response {
    answer_text(state, index, body.to_string())
}

/// Rendered JSON with Consul's headers.
pub(super) fn answer_text(state: &ConsulState, index: Revision, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("X-Consul-Index", HeaderValue::from(index.get().max(1)));
    let known = state.node.leader_known();
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static(if known { "true" } else { "false" }));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    (headers, body).into_response()
}

pub(crate) fn node_name(state: &ConsulState) -> String {
    format!("waggle-{}", state.node.node_id())
}

pub(super) fn node_address(state: &ConsulState) -> String {
    state.http_addr.ip().to_string()
}

pub(super) fn service_name(name: &str) -> Result<ServiceName, ConsulError> {
    ServiceName::new(name).map_err(|e| bad_request(format!("invalid service name: {e}")))
}

pub(crate) fn canonical(key: &str) -> String {
    key.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// A write naming a session that does not exist: the client's mistake (Consul: "invalid
/// session").
pub(super) fn invalid_session(e: ConsulError) -> ConsulError {
    if e.0 == StatusCode::NOT_FOUND { bad_request(format!("invalid session: {}", e.1)) } else { e }
}

/// A session id as Consul shows it: a UUID carrying the 64-bit id.
pub(crate) fn session_uuid(id: SessionId) -> String {
    let raw = id.get();
    format!("{:08x}-{:04x}-{:04x}-0000-000000000000", raw >> 32, (raw >> 16) & 0xffff, raw & 0xffff)
}

/// Parses a session id in either form (a UUID from [`session_uuid`], or plain hex).
pub(crate) fn parse_session(text: &str) -> Option<SessionId> {
    let hex = match text.len() {
        36 => {
            let b = text.as_bytes();
            if [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') || &text[19..] != "0000-000000000000" {
                return None;
            }
            format!("{}{}{}", &text[..8], &text[9..13], &text[14..18])
        }
        1..=16 => text.to_owned(),
        _ => return None,
    };
    if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let raw = u64::from_str_radix(&hex, 16).ok()?;
    (raw != 0 && raw != SessionId::AGENT.get()).then(|| SessionId::new(raw))
}

/// Marks an answer that left out what the token may not read, as Consul does.
pub(crate) fn filtered_by_acls(mut response: Response, filtered: bool) -> Response {
    if filtered {
        response.headers_mut().insert("X-Consul-Results-Filtered-By-ACLs", HeaderValue::from_static("true"));
    }
    response
}

/// The caller of a Consul request, from its token: the `X-Consul-Token` header,
/// `Authorization: Bearer <secret>`, or the deprecated `?token=` (in that order). An unknown
/// or expired token is refused with 403 "ACL not found" before the endpoint runs.
pub(crate) struct Auth(pub(crate) Caller);

impl axum::extract::FromRequestParts<ConsulState> for Auth {
    type Rejection = ConsulError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &ConsulState,
    ) -> Result<Self, Self::Rejection> {
        let token = request_token(&parts.headers, &parts.uri);
        Ok(Auth(state.node.resolve(token.as_deref()).await?))
    }
}

/// The token an HTTP request carries: `X-Consul-Token`, `Authorization: Bearer <secret>`, or
/// the deprecated `?token=`, in that order.
pub(crate) fn request_token(headers: &axum::http::HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let query = uri.query().and_then(|q| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(q)
            .ok()?
            .into_iter()
            .find_map(|(k, v)| (k == "token").then_some(v))
    });
    header("x-consul-token").map(str::to_owned).or(bearer.map(str::to_owned)).or(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse_as_go_durations() {
        assert_eq!(go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(go_duration("2h45m"), Some(Duration::from_secs(9900)));
        assert_eq!(go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "soon", "5", "1.2.3s", "5x", "1e3s"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }
}
