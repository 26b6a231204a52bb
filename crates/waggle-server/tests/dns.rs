//! The DNS interface on a real node, over UDP and TCP: every name form, record type and
//! response code, truncation, shuffling, health filtering and malformed packets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waggle_server::{Server, ServerConfig};

mod common;
use common::http_send;

fn query(name: &str, qtype: RecordType, edns: bool) -> Vec<u8> {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(4096);
        message.set_edns(e);
    }
    message.to_vec().unwrap()
}

async fn udp_raw(dns: SocketAddr, packet: &[u8]) -> Message {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, dns).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, _) =
        tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf)).await.expect("an answer").unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

async fn udp(dns: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp_raw(dns, &query(name, qtype, false)).await
}

async fn tcp(dns: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut stream = tokio::net::TcpStream::connect(dns).await.unwrap();
    let packet = query(name, qtype, false);
    stream.write_all(&(packet.len() as u16).to_be_bytes()).await.unwrap();
    stream.write_all(&packet).await.unwrap();
    let len = stream.read_u16().await.unwrap();
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.unwrap();
    Message::from_vec(&buf).unwrap()
}

/// The answers' addresses, in order.
fn ip_list(message: &Message) -> Vec<IpAddr> {
    message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn ips(message: &Message) -> BTreeSet<IpAddr> {
    ip_list(message).into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<IpAddr> {
    items.iter().map(|i| i.parse().unwrap()).collect()
}

async fn register(http: SocketAddr, body: &str) {
    let (code, answer) = http_send(http, "PUT", "/v1/agent/service/register", body.as_bytes()).await;
    assert_eq!(code, 200, "{body}: {answer}");
}

fn is_negative(message: &Message, code: ResponseCode) -> bool {
    message.metadata.response_code == code
        && message.answers.is_empty()
        && message.authorities.iter().any(|r| r.record_type() == RecordType::SOA)
}

#[tokio::test]
async fn dns_answers_every_form_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let (http, dns) = (server.http_addr(), server.dns_addr().unwrap());
    register(
        http,
        r#"{"Name":"web","ID":"w1","Address":"10.0.0.1","Port":8080,"Tags":["v1"],"Weights":{"Passing":7}}"#,
    )
    .await;
    register(http, r#"{"Name":"web","ID":"w2","Address":"10.0.0.2","Port":8081,"Tags":["v2"]}"#).await;
    register(http, r#"{"Name":"web","ID":"w3","Address":"2001:db8::3","Port":8082,"Tags":["v1"]}"#).await;
    register(http, r#"{"Name":"web","ID":"w4","Address":"db.example.net","Port":8083}"#).await;
    // Critical (a TTL check never passed) and warning instances are left out.
    register(http, r#"{"Name":"web","ID":"w5","Address":"10.0.0.5","Port":1,"Check":{"TTL":"60s"}}"#).await;
    register(
        http,
        r#"{"Name":"web","ID":"w6","Address":"10.0.0.6","Port":1,"Check":{"TTL":"60s","Status":"warning"}}"#,
    )
    .await;
    register(http, r#"{"Name":"down","Address":"10.0.0.9","Port":1,"Check":{"TTL":"60s"}}"#).await;

    // A, in both zones, any case, with or without the datacenter.
    let answer = udp(dns, "web.service.waggle.", RecordType::A).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
    assert!(answer.metadata.authoritative);
    assert!(!answer.metadata.recursion_available);
    assert_eq!(ips(&answer), set(&["10.0.0.1", "10.0.0.2"]));
    assert_eq!(answer.answers[0].ttl, 0, "Consul's default TTL");
    assert_eq!(ips(&udp(dns, "WEB.Service.Consul.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2"]));
    assert_eq!(ips(&udp(dns, "web.service.dc1.consul.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2"]));
    assert!(is_negative(&udp(dns, "web.service.dc2.consul.", RecordType::A).await, ResponseCode::NXDomain));
    // AAAA; ANY gives both families.
    assert_eq!(ips(&udp(dns, "web.service.waggle.", RecordType::AAAA).await), set(&["2001:db8::3"]));
    assert_eq!(
        ips(&udp(dns, "web.service.waggle.", RecordType::ANY).await),
        set(&["10.0.0.1", "10.0.0.2", "2001:db8::3"])
    );
    // Tags, the standard and the RFC 2782 way (`_tcp`: any tag).
    assert_eq!(ips(&udp(dns, "v1.web.service.waggle.", RecordType::A).await), set(&["10.0.0.1"]));
    assert_eq!(ips(&udp(dns, "v1.web.service.waggle.", RecordType::AAAA).await), set(&["2001:db8::3"]));
    assert_eq!(ips(&udp(dns, "_web._v2.service.waggle.", RecordType::A).await), set(&["10.0.0.2"]));
    assert_eq!(ips(&udp(dns, "_web._tcp.service.waggle.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2"]));

    // SRV: weight and port per instance, targets with their addresses in the additional section.
    let srv = udp(dns, "_web._tcp.service.waggle.", RecordType::SRV).await;
    let mut records: Vec<(u16, u16, u16, String)> = srv
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::SRV(s) => (s.priority, s.weight, s.port, s.target.to_string()),
            other => panic!("not SRV: {other:?}"),
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        [
            // Registered without weights: Consul's default, 1.
            (1, 1, 8081, "0a000002.addr.waggle.".to_owned()),
            (1, 1, 8082, "20010db8000000000000000000000003.addr.waggle.".to_owned()),
            (1, 1, 8083, "db.example.net.".to_owned()),
            (1, 7, 8080, "0a000001.addr.waggle.".to_owned()),
        ]
    );
    let glue: BTreeSet<(String, String)> = srv
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((r.name.to_string(), a.0.to_string())),
            RData::AAAA(a) => Some((r.name.to_string(), a.0.to_string())),
            _ => None,
        })
        .collect();
    assert!(glue.contains(&("0a000001.addr.waggle.".to_owned(), "10.0.0.1".to_owned())), "{glue:?}");
    assert_eq!(glue.len(), 3);
    // The targets resolve.
    assert_eq!(ips(&udp(dns, "0a000001.addr.waggle.", RecordType::A).await), set(&["10.0.0.1"]));

    // The node.
    let node = udp(dns, "waggle-1.node.waggle.", RecordType::A).await;
    assert_eq!(ips(&node), set(&["127.0.0.1"]));

    // NODATA: the name exists, not the type. NXDOMAIN: no such name (or nothing healthy).
    assert!(is_negative(&udp(dns, "v2.web.service.waggle.", RecordType::AAAA).await, ResponseCode::NoError));
    assert!(is_negative(&udp(dns, "web.service.waggle.", RecordType::TXT).await, ResponseCode::NoError));
    assert!(is_negative(&udp(dns, "waggle.", RecordType::A).await, ResponseCode::NoError));
    assert!(is_negative(&udp(dns, "nope.service.waggle.", RecordType::A).await, ResponseCode::NXDomain));
    assert!(is_negative(&udp(dns, "down.service.waggle.", RecordType::A).await, ResponseCode::NXDomain));
    assert!(is_negative(&udp(dns, "v9.web.service.waggle.", RecordType::A).await, ResponseCode::NXDomain));
    assert!(is_negative(&udp(dns, "what.waggle.", RecordType::A).await, ResponseCode::NXDomain));
    assert!(is_negative(&udp(dns, "other.node.waggle.", RecordType::A).await, ResponseCode::NXDomain));
    assert!(is_negative(&udp(dns, "service.waggle.", RecordType::A).await, ResponseCode::NoError), "RFC 8020");
    assert_eq!(
        ips(&udp(dns, "V1.web.service.waggle.", RecordType::A).await),
        set(&["10.0.0.1"]),
        "tags match in any case"
    );
    // EDNS versions other than 0 get BADVERS; classes other than IN are refused.
    let mut message = Message::new(7, MessageType::Query, OpCode::Query);
    message.add_query(Query::query(Name::from_ascii("web.service.waggle.").unwrap(), RecordType::A));
    let mut v1 = Edns::new();
    v1.set_version(1);
    message.set_edns(v1);
    // BADVERS is 16 (hickory decodes 16 as BADSIG, which shares the number).
    assert_eq!(u16::from(udp_raw(dns, &message.to_vec().unwrap()).await.metadata.response_code), 16);
    let mut chaos = Query::query(Name::from_ascii("web.service.waggle.").unwrap(), RecordType::A);
    chaos.query_class = hickory_proto::rr::DNSClass::CH;
    let mut message = Message::new(8, MessageType::Query, OpCode::Query);
    message.add_query(chaos);
    assert_eq!(udp_raw(dns, &message.to_vec().unwrap()).await.metadata.response_code, ResponseCode::Refused);
    let soa = udp(dns, "waggle.", RecordType::SOA).await;
    assert_eq!(soa.answers.len(), 1);
    // Other zones are refused: no recursion.
    let refused = udp(dns, "example.com.", RecordType::A).await;
    assert_eq!(refused.metadata.response_code, ResponseCode::Refused);
    assert!(refused.answers.is_empty());

    // Answers are cached per question until the registry changes; a cached answer still
    // echoes the question as asked (resolvers randomise its case) and the query's id.
    let mixed = udp(dns, "wEb.SeRvIcE.wAgGlE.", RecordType::A).await;
    assert_eq!(mixed.queries[0].name.to_string(), "wEb.SeRvIcE.wAgGlE.");
    assert_eq!(mixed.metadata.id, 0x4242);
    assert_eq!(ips(&mixed), set(&["10.0.0.1", "10.0.0.2"]));
    register(http, r#"{"Name":"web","ID":"w7","Address":"10.0.0.7","Port":1}"#).await;
    assert_eq!(ips(&udp(dns, "web.service.waggle.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2", "10.0.0.7"]));
    http_send(http, "PUT", "/v1/agent/service/deregister/w7", b"").await;
    assert_eq!(ips(&udp(dns, "web.service.waggle.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2"]));

    // Malformed packets: FORMERR (or silence for a packet shorter than a header), and the
    // server keeps answering.
    let mut garbage = query("web.service.waggle.", RecordType::A, false);
    garbage.truncate(20);
    assert_eq!(udp_raw(dns, &garbage).await.metadata.response_code, ResponseCode::FormErr);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&[1, 2, 3], dns).await.unwrap();
    assert_eq!(ips(&udp(dns, "web.service.waggle.", RecordType::A).await), set(&["10.0.0.1", "10.0.0.2"]));
    server.shutdown().await;
}

#[tokio::test]
async fn big_answers_are_truncated_on_udp_whole_on_tcp_and_shuffled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig::ephemeral(dir.path())).await.unwrap();
    let (http, dns) = (server.http_addr(), server.dns_addr().unwrap());
    for n in 1..=60 {
        register(http, &format!(r#"{{"Name":"big","ID":"b{n}","Address":"10.1.0.{n}","Port":80}}"#)).await;
    }
    // 60 A records do not fit in 512 bytes: TC set, fewer answers.
    let cut = udp(dns, "big.service.waggle.", RecordType::A).await;
    assert!(cut.metadata.truncation, "TC bit on a cut UDP answer");
    assert!(!cut.answers.is_empty() && cut.answers.len() < 60, "{}", cut.answers.len());
    // With EDNS (4096 asked, 1232 given: no fragmentation) they fit; over TCP always.
    let edns = udp_raw(dns, &query("big.service.waggle.", RecordType::A, true)).await;
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 60);
    assert_eq!(edns.edns.as_ref().map(Edns::max_payload), Some(1232), "our buffer size");
    // 200 do not fit in 1232 bytes: truncated even with EDNS, whole over TCP.
    for n in 61..=200 {
        register(http, &format!(r#"{{"Name":"big","ID":"b{n}","Address":"10.2.0.{}","Port":80}}"#, n - 60)).await;
    }
    let cut = udp_raw(dns, &query("big.service.waggle.", RecordType::A, true)).await;
    assert!(cut.metadata.truncation && cut.answers.len() < 200);
    assert_eq!(tcp(dns, "big.service.waggle.", RecordType::A).await.answers.len(), 200);
    let whole = tcp(dns, "big.service.waggle.", RecordType::A).await;
    assert!(!whole.metadata.truncation);
    assert_eq!(ips(&whole).len(), 200);
    // Every query shuffles: across 10 TCP queries, the first answer varies.
    let mut firsts = BTreeSet::new();
    for _ in 0..10 {
        firsts.insert(ip_list(&tcp(dns, "big.service.waggle.", RecordType::A).await)[0]);
    }
    assert!(firsts.len() > 1, "answers are shuffled: {firsts:?}");
    server.shutdown().await;
}
