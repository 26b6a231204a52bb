//! Balances HTTP requests from a hyper client over three servers on loopback, first with
//! least request, then with ring hash on a user header (sticky sessions).
//!
//! `cargo run -p waggle-balance --example hyper`

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderName, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use waggle_balance::policy::{LeastRequest, RingHash};
use waggle_balance::{Balance, Builder, Endpoint, HeaderHash};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Three HTTP servers that answer with their own name.
    let mut servers = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        servers.push(listener.local_addr()?);
        let app = Router::new().route("/", get(move || async move { name }));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    // One shared hyper client; each endpoint is that client aimed at one server.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let endpoints = || {
        servers.iter().map(|addr| {
            let addr = *addr;
            let to_server = client.clone().map_request(move |request: Request<Full<Bytes>>| aim(request, addr));
            (addr, Endpoint::new(to_server))
        })
    };

    let mut spread: Balance<SocketAddr, _, Request<Full<Bytes>>> =
        Builder::new(LeastRequest::new()).build_static(endpoints());
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(get_text(&mut spread, Request::new(Full::default())).await?);
    }
    println!("least request: {answers:?}");

    let user = HeaderName::from_static("x-user");
    let mut sticky: Balance<SocketAddr, _, Request<Full<Bytes>>> =
        Builder::new(RingHash::new()).request_hash(HeaderHash::new(user.clone())).build_static(endpoints());
    for name in ["ann", "bob", "cat", "dan", "ann", "bob", "cat", "dan"] {
        let request = Request::builder().header(&user, name).body(Full::default())?;
        println!("ring hash, user {name}: {}", get_text(&mut sticky, request).await?);
    }
    Ok(())
}

/// Points a request at one server, keeping its path and query.
fn aim(mut request: Request<Full<Bytes>>, addr: SocketAddr) -> Request<Full<Bytes>> {
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = format!("http://{addr}{path}").parse().expect("an address and a path form a URI");
    request
}

async fn get_text<S>(balance: &mut S, request: Request<Full<Bytes>>) -> Result<String, Error>
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<hyper::body::Incoming>, Error = tower::BoxError>,
{
    let response = balance.ready().await?.call(request).await?;
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
