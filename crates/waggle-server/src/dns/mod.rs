//! The DNS interface, Consul's forms under every configured domain
//! (`waggle.` and `consul.` by default):
//!
//! - `<service>.service.<domain>` and `<tag>.<service>.service.<domain>`: A / AAAA of the
//!   instances' addresses, SRV (priority 1, weight = instance weight, port, target);
//! - RFC 2782 `_<service>._<tag>.service.<domain>` (`_tcp` means any tag, as in Consul);
//! - `<node>.node.<domain>`: the answering member;
//! - `<hex>.addr.<domain>`: the SRV targets of instances registered by IP address (Consul's
//!   form), with their A / AAAA in the additional section of SRV answers;
//! - an optional datacenter label after `service` / `node` / `addr` (`dc1` only).
//!
//! Only passing instances are answered (warning too with `dns_allow_warning`), shuffled on
//! every query. A name with no such instance is NXDOMAIN; a name that exists without records
//! of the asked type is NODATA (NOERROR, no answer); both carry the zone's SOA, whose minimum
//! is the negative-caching TTL. Other zones are REFUSED (no recursion). UDP answers are cut
//! to 512 bytes, or the client's EDNS size, with the TC bit set; TCP answers are whole.
//! Malformed packets get FORMERR. hickory-proto parses and encodes the messages (truncation
//! included); the serving loops are ours: hickory-server's task and channel per query cost
//! half the throughput (docs/benchmarks.md).

use std::{
    cell::RefCell,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, SOA, SRV},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};
use rand::{SeedableRng, seq::SliceRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use waggle_core::{HealthStatus, Instance, ServiceName};

use crate::{node::Node, state::ReadModel};

/// What the DNS interface answers with.
#[derive(Debug, Clone)]
pub(crate) struct DnsSettings {
    /// Zones served (lowercase, without the trailing dot).
    pub(crate) domains: Vec<String>,
    /// TTL of answers (Consul's default is 0: no caching).
    pub(crate) ttl: u32,
    /// Answer warning instances too.
    pub(crate) allow_warning: bool,
    /// The answering member's node name and address.
    pub(crate) node: String,
    pub(crate) node_ip: IpAddr,
}

/// Answers queries from the read model's current view (no I/O, no lock held across awaits).
pub(crate) struct Handler {
    read_model: Arc<ReadModel>,
    settings: DnsSettings,
    zones: Vec<Name>,
    /// Encoded answers by question, valid while the registry's revision stays the same.
    cache: std::sync::Mutex<AnswerCache>,
}

/// What an encoded answer depends on besides the registry: the question (lowercase wire
/// name, type, class), the transport and the client's EDNS size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    name: Vec<u8>,
    qtype: u16,
    qclass: u16,
    edns: Option<u16>,
    udp: bool,
}

#[derive(Default)]
struct AnswerCache {
    entries: std::collections::HashMap<CacheKey, Arc<Cached>>,
    bytes: usize,
}

/// Differently shuffled encodings of one answer, built at one revision.
struct Cached {
    revision: waggle_core::Revision,
    variants: Vec<Vec<u8>>,
    /// Bytes it holds (key included), for the cache's budget.
    size: usize,
}

/// Shuffled encodings kept per question; a query gets one at random.
const VARIANTS: usize = 8;
/// Questions cached at most, and their encodings' total size: the cache starts over when
/// either is reached. Only positive answers are cached, so random names cannot fill it.
const MAX_CACHED: usize = 4096;
const MAX_CACHED_BYTES: usize = 32 << 20;
/// The largest UDP answer (the 2020 DNS flag day's size: no IP fragmentation); larger answers
/// are truncated and the client retries over TCP.
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP answer size for a client's EDNS buffer size: 1232 if it takes that much, else the
/// classic 512 (two sizes only, so the cache keeps at most two encodings per question).
fn udp_limit(asked: u16) -> u16 {
    if asked >= MAX_UDP_PAYLOAD { MAX_UDP_PAYLOAD } else { 512 }
}

/// A plain query (one question, no answer / authority records, at most an OPT record without
/// options): the question's end offset and the answer's cache key.
fn plain_query(packet: &[u8], udp: bool) -> Option<(usize, CacheKey)> {
    let word = |at: usize| packet.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    // QR = 0, opcode QUERY; one question; no answers or authorities; 0 or 1 additional.
    if packet.len() < 12 || packet[2] & 0xf8 != 0 || word(4)? != 1 || word(6)? != 0 || word(8)? != 0 {
        return None;
    }
    let additional = word(10)?;
    let mut at = 12;
    let mut name = Vec::with_capacity(64);
    loop {
        let len = usize::from(*packet.get(at)?);
        if len > 63 {
            return None; // compression or extended labels: not in a plain question
        }
        name.push(len as u8);
        name.extend(packet.get(at + 1..at + 1 + len)?.iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
        if len == 0 {
            break;
        }
        if name.len() > 255 {
            return None;
        }
    }
    let (qtype, qclass) = (word(at)?, word(at + 2)?);
    let end = at + 4;
    let edns = match additional {
        0 if packet.len() == end => None,
        // Root name, type OPT (41), class = UDP size, TTL, RDLENGTH 0.
        // Only version 0 (byte end + 6); the size matters on UDP only.
        1 if packet.len() == end + 11
            && packet[end] == 0
            && word(end + 1)? == 41
            && packet[end + 6] == 0
            && word(end + 9)? == 0 =>
        {
            Some(if udp { udp_limit(word(end + 3)?) } else { 0 })
        }
        _ => return None,
    };
    Some((end, CacheKey { name, qtype, qclass, edns, udp }))
}

/// An answer before encoding.
#[derive(Debug, Default)]
struct Answer {
    code: ResponseCode,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// The zone whose SOA goes in the authority section (negative answers).
    soa_zone: Option<Name>,
}

impl Answer {
    fn refused() -> Self {
        Answer { code: ResponseCode::Refused, ..Default::default() }
    }
}

/// What a name under one of our zones asks for.
#[derive(Debug, PartialEq, Eq)]
enum Question {
    Apex,
    Service {
        name: String,
        tag: Option<String>,
    },
    Node(String),
    Addr(IpAddr),
    /// A name that exists only because names exist below it.
    Empty,
    Nothing,
}

impl Question {
    /// Parses the labels left of the zone (lowercase, left to right).
    fn parse(labels: &[String]) -> Question {
        let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if labels.is_empty() {
            return Question::Apex;
        }
        const KINDS: [&str; 3] = ["service", "node", "addr"];
        // An optional datacenter after the kind label: ours only. (A last label that is a kind
        // is the kind: `v1.node.service` is tag v1 of service `node`.)
        let last = labels[labels.len() - 1];
        if labels.len() >= 2 && KINDS.contains(&labels[labels.len() - 2]) && !KINDS.contains(&last) {
            if last != crate::consul::DATACENTER {
                return Question::Nothing;
            }
            labels.pop();
        }
        match labels.as_slice() {
            // Names with names below them exist (NODATA, not NXDOMAIN: RFC 8020).
            [kind] if KINDS.contains(kind) || *kind == crate::consul::DATACENTER => Question::Empty,
            [service, "service"] => Question::Service { name: (*service).to_owned(), tag: None },
            [a, b, "service"] if a.starts_with('_') && b.starts_with('_') => {
                let tag = &b[1..];
                Question::Service { name: a[1..].to_owned(), tag: (tag != "tcp").then(|| tag.to_owned()) }
            }
            [tag, service, "service"] => {
                Question::Service { name: (*service).to_owned(), tag: Some((*tag).to_owned()) }
            }
            [node, "node"] => Question::Node((*node).to_owned()),
            [hex, "addr"] => decode_addr(hex).map_or(Question::Nothing, Question::Addr),
            _ => Question::Nothing,
        }
    }
}

/// Consul's `<hex>.addr` encoding of an IP address.
fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
    match bytes?.as_slice() {
        b if b.len() == 4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        b if b.len() == 16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

thread_local! {
    static SHUFFLE: RefCell<rand::rngs::SmallRng> = RefCell::new(rand::rngs::SmallRng::from_os_rng());
}

fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

impl Handler {
    pub(crate) fn new(node: &Node, settings: DnsSettings) -> Self {
        let read_model = node.read_model().clone();
        let zones = settings
            .domains
            .iter()
            .filter_map(|d| Name::from_ascii(format!("{d}.")).ok())
            .map(|n| n.to_lowercase())
            .collect();
        Handler { read_model, settings, zones, cache: Default::default() }
    }

    /// Answers a DNS message, from the cache when it is a plain query asked before at this
    /// revision: a cached encoding gets the query's id, RD / CD bits and question (its case
    /// preserved) patched in. Anything else goes through [`Handler::respond`].
    pub(crate) fn answer_packet(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let Some((end, key)) = plain_query(packet, udp) else {
            return self.respond(packet, udp);
        };
        let revision = self.read_model.revision();
        let cached = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entries.get(&key).cloned();
        let cached = match cached {
            Some(c) if c.revision == revision => c,
            _ => {
                // The same query, lowercase, answered VARIANTS times (each shuffles).
                let mut canonical = packet.to_vec();
                canonical[12..end - 4].copy_from_slice(&key.name);
                let first = self.respond(&canonical, udp)?;
                // Negative and empty answers are not cached (rcode in byte 3, ANCOUNT 6..8).
                if first.len() < 12 || first[3] & 0x0f != 0 || first[6..8] == [0, 0] {
                    return self.respond(packet, udp);
                }
                let mut variants = vec![first];
                variants.extend((1..VARIANTS).filter_map(|_| self.respond(&canonical, udp)));
                let size: usize = variants.iter().map(Vec::len).sum::<usize>() + key.name.len();
                let fresh = Arc::new(Cached { revision, variants, size });
                let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.entries.len() >= MAX_CACHED || cache.bytes + size > MAX_CACHED_BYTES {
                    cache.entries.clear();
                    cache.bytes = 0;
                }
                if let Some(old) = cache.entries.insert(key, fresh.clone()) {
                    cache.bytes = cache.bytes.saturating_sub(old.size);
                }
                cache.bytes += size;
                fresh
            }
        };
        let pick = SHUFFLE.with(|rng| rand::Rng::random_range(&mut *rng.borrow_mut(), 0..cached.variants.len().max(1)));
        let mut answer = cached.variants.get(pick)?.clone();
        // A response to a plain query starts with the header and the question, as asked.
        if answer.len() < end || !answer[12..end].eq_ignore_ascii_case(&packet[12..end]) {
            return self.respond(packet, udp);
        }
        answer[0..2].copy_from_slice(&packet[0..2]);
        answer[2] = (answer[2] & !0x01) | (packet[2] & 0x01); // RD
        answer[3] = (answer[3] & !0x10) | (packet[3] & 0x10); // CD
        answer[12..end].copy_from_slice(&packet[12..end]);
        Some(answer)
    }

    fn soa(&self, zone: &Name) -> Record {
        let host = |label: &str| Name::from_ascii(label).ok().and_then(|n| n.append_domain(zone).ok());
        let (mname, rname) =
            (host("ns").unwrap_or_else(|| zone.clone()), host("hostmaster").unwrap_or_else(|| zone.clone()));
        // Serial: the registry's revision (it only grows); minimum: the negative-caching TTL.
        let serial = self.read_model.revision().get() as u32;
        let soa = SOA::new(mname, rname, serial, 3600, 600, 86_400, self.settings.ttl);
        Record::from_rdata(zone.clone(), self.settings.ttl, RData::SOA(soa))
    }

    /// Answers one question.
    fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let qname = qname.to_lowercase();
        let Some(zone) = self.zones.iter().find(|z| z.zone_of(&qname)) else {
            return Answer::refused();
        };
        let prefix = usize::from(qname.num_labels() - zone.num_labels());
        let labels: Vec<String> = qname.iter().take(prefix).map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        let ttl = self.settings.ttl;
        let mut out = Answer { soa_zone: Some(zone.clone()), ..Default::default() };
        let found = match Question::parse(&labels) {
            Question::Apex => {
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    out.answers.push(self.soa(zone));
                    out.soa_zone = None;
                }
                true
            }
            Question::Nothing => false,
            Question::Empty => true,
            Question::Node(node) => {
                let ip = self.settings.node_ip;
                if node == self.settings.node.to_lowercase() && wants(qtype, ip) {
                    out.answers.push(address_record(&qname, ttl, ip));
                }
                node == self.settings.node.to_lowercase()
            }
            Question::Addr(ip) => {
                if wants(qtype, ip) {
                    out.answers.push(address_record(&qname, ttl, ip));
                }
                true
            }
            Question::Service { name, tag } => self.service(&qname, zone, qtype, &name, tag.as_deref(), &mut out),
        };
        if !found {
            out.code = ResponseCode::NXDomain;
        }
        if !out.answers.is_empty() {
            out.soa_zone = None;
        }
        out
    }

    /// A service lookup; false if no instance answers (NXDOMAIN).
    fn service(
        &self,
        qname: &Name,
        zone: &Name,
        qtype: RecordType,
        name: &str,
        tag: Option<&str>,
        out: &mut Answer,
    ) -> bool {
        let Ok(service) = ServiceName::new(name) else { return false };
        let (_, instances, _) = self.read_model.service(&service);
        let healthy = |i: &&std::sync::Arc<Instance>| match i.spec.status {
            HealthStatus::Passing => true,
            HealthStatus::Warning => self.settings.allow_warning,
            HealthStatus::Critical => false,
        };
        let mut chosen: Vec<&std::sync::Arc<Instance>> = instances
            .values()
            .filter(healthy)
            .filter(|i| tag.is_none_or(|t| i.spec.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
            .collect();
        if chosen.is_empty() {
            return false;
        }
        SHUFFLE.with(|rng| chosen.shuffle(&mut *rng.borrow_mut()));
        let ttl = self.settings.ttl;
        for instance in chosen {
            let ip = instance.spec.address.parse::<IpAddr>().ok();
            match qtype {
                RecordType::SRV => {
                    let target = match ip {
                        Some(ip) => Name::from_ascii(format!("{}.addr", encode_addr(ip)))
                            .ok()
                            .and_then(|n| n.append_domain(zone).ok()),
                        None => Name::from_ascii(format!("{}.", instance.spec.address.trim_end_matches('.'))).ok(),
                    };
                    let Some(target) = target else { continue };
                    let weight = u16::try_from(instance.spec.weight).unwrap_or(u16::MAX);
                    let srv = SRV::new(1, weight, instance.spec.port, target.clone());
                    out.answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                    if let Some(ip) = ip {
                        out.additionals.push(address_record(&target, ttl, ip));
                    }
                }
                _ => {
                    if let Some(ip) = ip.filter(|ip| wants(qtype, *ip)) {
                        out.answers.push(address_record(qname, ttl, ip));
                    }
                }
            }
        }
        true
    }
}

impl Handler {
    /// Answers one DNS message: the encoded response, or `None` for a packet too short to
    /// carry a header (nothing to answer to). UDP answers are cut to 512 bytes, or the
    /// client's EDNS size, with the TC bit set.
    pub(crate) fn respond(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        if packet.len() < 12 {
            return None;
        }
        let id = u16::from_be_bytes([packet[0], packet[1]]);
        let request = match Message::from_vec(packet) {
            Ok(m) => m,
            // Never answer what claims to be a response.
            Err(_) if packet[2] & 0x80 != 0 => return None,
            Err(_) => return Some(error_response(id, ResponseCode::FormErr)),
        };
        if request.metadata.message_type != MessageType::Query {
            return None; // never answer a response
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut response = Message::new(id, MessageType::Response, request.metadata.op_code);
        let mut max_size = if udp { 512 } else { u16::MAX };
        let mut bad_version = false;
        if let Some(asked) = &request.edns {
            let mut ours = Edns::new();
            // What we accept; answers are cut to what the client accepts, at most this.
            ours.set_max_payload(MAX_UDP_PAYLOAD);
            ours.set_version(0);
            if udp {
                max_size = udp_limit(asked.max_payload());
            }
            bad_version = asked.version() > 0;
            response.set_edns(ours);
        }
        let answer = if request.metadata.op_code != OpCode::Query {
            Answer { code: ResponseCode::NotImp, ..Default::default() }
        } else if bad_version {
            Answer { code: ResponseCode::BADVERS, ..Default::default() }
        } else if request.queries.len() != 1 {
            Answer { code: ResponseCode::FormErr, ..Default::default() }
        } else if !matches!(u16::from(request.queries[0].query_class), 1 | 255) {
            // Only the IN class (and ANY) is served.
            response.add_query(request.queries[0].clone());
            Answer { code: ResponseCode::Refused, ..Default::default() }
        } else {
            let query = &request.queries[0];
            response.add_query(query.clone());
            self.answer(&query.name, query.query_type)
        };
        metadata.response_code = answer.code;
        metadata.authoritative = matches!(answer.code, ResponseCode::NoError | ResponseCode::NXDomain);
        response.metadata = metadata;
        response.answers = answer.answers;
        response.additionals = answer.additionals;
        if let Some(zone) = &answer.soa_zone {
            response.authorities.push(self.soa(zone));
        }
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        match response.emit(&mut encoder) {
            Ok(()) => Some(bytes),
            Err(e) => {
                tracing::debug!("encoding a DNS answer failed: {e}");
                Some(error_response(id, ResponseCode::ServFail))
            }
        }
    }
}

fn error_response(id: u16, code: ResponseCode) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.metadata.response_code = code;
    message.to_vec().unwrap_or_default()
}

/// Binds UDP and TCP on the same address (for port 0, the port UDP got) and serves until
/// `shutdown`: one receive loop per core on the UDP socket, each answering inline (no task or
/// channel per query); TCP connections carry length-prefixed messages and close after 5 s idle.
/// Answers the bound address and the serving task.
pub(crate) async fn serve(
    addr: SocketAddr,
    handler: Handler,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut attempts = 0;
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp),
            // Port 0: UDP's port may be taken for TCP; try another.
            Err(e) if addr.port() == 0 && attempts < 20 => {
                attempts += 1;
                tracing::debug!("DNS port {} is taken for TCP ({e}); trying another", bound.port());
            }
            Err(e) => return Err(e),
        }
    };
    let bound = udp.local_addr()?;
    let (udp, handler) = (Arc::new(udp), Arc::new(handler));
    let loops = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops {
        tasks.spawn(udp_loop(udp.clone(), handler.clone()));
    }
    tasks.spawn(tcp_loop(tcp, handler));
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tasks.shutdown().await;
    });
    Ok((bound, task))
}

async fn udp_loop(socket: Arc<tokio::net::UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep serving.
                tracing::debug!("DNS receive failed: {e}");
                continue;
            }
        };
        if let Some(answer) = handler.answer_packet(&buf[..n], true)
            && let Err(e) = socket.send_to(&answer, src).await
        {
            tracing::debug!("DNS answer to {src} failed: {e}");
        }
    }
}

/// TCP connections served at once; more wait in the kernel's backlog.
const MAX_TCP_CONNECTIONS: usize = 512;

async fn tcp_loop(listener: tokio::net::TcpListener, handler: Arc<Handler>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!("DNS TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let (mut read, mut write) = stream.into_split();
            loop {
                let idle = Duration::from_secs(5);
                let Ok(Ok(len)) = tokio::time::timeout(idle, read.read_u16()).await else { return };
                let mut packet = vec![0u8; usize::from(len)];
                if !matches!(tokio::time::timeout(idle, read.read_exact(&mut packet)).await, Ok(Ok(_))) {
                    return;
                }
                let Some(answer) = handler.answer_packet(&packet, false) else { return };
                let Ok(len) = u16::try_from(answer.len()) else { return };
                let mut framed = Vec::with_capacity(answer.len() + 2);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&answer);
                // A client that stops reading is dropped.
                if !matches!(tokio::time::timeout(idle, write.write_all(&framed)).await, Ok(Ok(()))) {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Question {
        let labels: Vec<String> = name.split('.').filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Question::parse(&labels)
    }

    #[test]
    fn names_parse_like_consuls() {
        let service = |n: &str, t: Option<&str>| Question::Service { name: n.into(), tag: t.map(Into::into) };
        assert_eq!(parse(""), Question::Apex);
        assert_eq!(parse("web.service"), service("web", None));
        assert_eq!(parse("web.service.dc1"), service("web", None));
        assert_eq!(parse("web.service.dc2"), Question::Nothing);
        assert_eq!(parse("v1.web.service"), service("web", Some("v1")));
        assert_eq!(parse("_web._tcp.service"), service("web", None));
        assert_eq!(parse("_web._v1.service"), service("web", Some("v1")));
        assert_eq!(parse("waggle-1.node"), Question::Node("waggle-1".into()));
        assert_eq!(parse("7f000001.addr"), Question::Addr(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(parse("7f0001.addr"), Question::Nothing);
        assert_eq!(parse("a.b.c.service"), Question::Nothing);
        assert_eq!(parse("web"), Question::Nothing);
        assert_eq!(parse("v1.node.service"), service("node", Some("v1")), "a kind label last is the kind");
        assert_eq!(parse("node.service.dc1"), service("node", None));
        assert_eq!(parse("service"), Question::Empty, "exists: names exist below it");
        assert_eq!(parse("dc1"), Question::Empty);
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(decode_addr(&encode_addr(v6)), Some(v6));
    }
}
