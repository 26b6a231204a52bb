//! `dig` (Debian `dnsutils`, installed by `.ci/run`) against a real server's DNS interface:
//! A, SRV, tag and RFC 2782 lookups, NXDOMAIN, REFUSED, and the TCP fallback of a truncated
//! UDP answer. Everything stays on 127.0.0.1. Interop tier: run by
//! `cargo test --workspace -- --include-ignored`, where a missing `dig` fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{collections::BTreeSet, process::Command};

use support::{Server, http_request};
use tempfile::TempDir;

fn dig(dns: std::net::SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string(), "+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (apt-get install dnsutils; .ci/run does it)");
    assert!(out.status.success(), "dig {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lines(text: &str) -> BTreeSet<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[test]
#[ignore = "interop: needs dig (dnsutils)"]
fn dig_resolves_services_tags_srv_and_falls_back_to_tcp() {
    support::require_tool("dig", "apt install dnsutils");
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let (http, dns) = (server.ready.http, server.ready.dns.expect("DNS is on"));
    let register = |body: String| {
        let (code, answer) = http_request(http, "PUT", "/v1/agent/service/register", &body);
        assert_eq!(code, 200, "{body}: {answer}");
    };
    register(
        r#"{"Name":"web","ID":"w1","Address":"10.0.0.1","Port":8080,"Tags":["v1"],"Weights":{"Passing":5}}"#.into(),
    );
    register(r#"{"Name":"web","ID":"w2","Address":"10.0.0.2","Port":8081,"Tags":["v2"]}"#.into());
    for n in 1..=40 {
        register(format!(r#"{{"Name":"big","ID":"b{n}","Address":"10.1.0.{n}","Port":80}}"#));
    }

    assert_eq!(lines(&dig(dns, &["+short", "web.service.waggle", "A"])), lines("10.0.0.1\n10.0.0.2"));
    assert_eq!(lines(&dig(dns, &["+short", "web.service.consul", "A"])), lines("10.0.0.1\n10.0.0.2"));
    assert_eq!(lines(&dig(dns, &["+short", "v1.web.service.waggle"])), lines("10.0.0.1"));
    assert_eq!(lines(&dig(dns, &["+short", "_web._v2.service.waggle", "A"])), lines("10.0.0.2"));
    assert_eq!(
        lines(&dig(dns, &["+short", "_web._tcp.service.waggle", "SRV"])),
        lines("1 5 8080 0a000001.addr.waggle.\n1 1 8081 0a000002.addr.waggle.")
    );
    let srv = dig(dns, &["web.service.waggle", "SRV"]);
    assert!(srv.contains("0a000001.addr.waggle.\t0\tIN\tA\t10.0.0.1"), "glue in the additional section: {srv}");
    assert!(srv.contains("flags: qr aa rd;"), "authoritative, no recursion: {srv}");

    let missing = dig(dns, &["nope.service.waggle", "A"]);
    assert!(missing.contains("status: NXDOMAIN") && missing.contains("IN\tSOA"), "{missing}");
    let nodata = dig(dns, &["web.service.waggle", "AAAA"]);
    assert!(nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"), "{nodata}");
    assert!(dig(dns, &["example.com", "A"]).contains("status: REFUSED"));

    // 40 A records overflow 512 bytes: without EDNS, dig sees the TC bit and retries over TCP.
    let cut = dig(dns, &["+noedns", "+ignore", "big.service.waggle", "A"]);
    assert!(cut.contains(" tc"), "truncated over UDP: {cut}");
    assert_eq!(lines(&dig(dns, &["+noedns", "+short", "big.service.waggle", "A"])).len(), 40, "TCP fallback");
    assert_eq!(lines(&dig(dns, &["+tcp", "+short", "big.service.waggle", "A"])).len(), 40);
}

#[test]
#[ignore = "interop: needs dig (dnsutils)"]
fn dig_under_deny_by_default_sees_what_the_anonymous_token_may_read() {
    support::require_tool("dig", "apt install dnsutils");
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dir = TempDir::new().unwrap();
    let server = Server::start_with_acl(dir.path(), ROOT);
    let (http, dns) = (server.ready.http, server.ready.dns.expect("DNS is on"));
    let with_root = |path: &str| format!("{path}?token={ROOT}");
    let mut registered = false;
    for _ in 0..100 {
        let body = r#"{"Name":"web","ID":"w1","Address":"10.0.0.1","Port":8080}"#;
        if http_request(http, "PUT", &with_root("/v1/agent/service/register"), body).0 == 200 {
            registered = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(registered, "the initial management token never worked");
    // Deny by default, no grant to the anonymous token: the service is not there for DNS.
    let hidden = dig(dns, &["web.service.waggle", "A"]);
    assert!(hidden.contains("status: NXDOMAIN"), "{hidden}");
    // Consul's recipe: the builtin/dns templated policy on the anonymous token.
    let grant = r#"{"TemplatedPolicies":[{"TemplateName":"builtin/dns"}]}"#;
    let path = with_root("/v1/acl/token/00000000-0000-0000-0000-000000000002");
    let (code, answer) = http_request(http, "PUT", &path, grant);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(lines(&dig(dns, &["+short", "web.service.waggle", "A"])), lines("10.0.0.1"));
}
