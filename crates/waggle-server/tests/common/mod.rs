//! Helpers shared by the HTTP tests: plain HTTP/1.1 requests over a TCP stream.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

/// A plain HTTP/1.1 GET: (status, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let (code, _, body) = http_get_with_head(addr, path).await;
    (code, body)
}

/// A plain HTTP/1.1 GET: (status, head, body).
pub async fn http_get_with_head(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Small bodies: axum answers with a Content-Length, not chunks.
    (code, head.to_owned(), body.to_owned())
}

pub fn consul_index(head: &str) -> u64 {
    head.lines()
        .find_map(|l| l.strip_prefix("x-consul-index: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no X-Consul-Index in {head}"))
}

/// A request with a body: (status, body).
pub async fn http_send(addr: std::net::SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // A server may answer (413) before reading a large body; that is fine.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.split_whitespace().nth(1).unwrap_or("0").parse().unwrap(), body.to_owned())
}
