//! The DNS interface (hickory-server), Consul's forms under every configured domain
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
//! Malformed packets get FORMERR from hickory.

use std::{
    cell::RefCell,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use hickory_server::{
    net::runtime::Time,
    proto::{
        op::{Edns, MessageType, Metadata, OpCode, ResponseCode},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, AAAA, SOA, SRV},
        },
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use rand::{SeedableRng, seq::SliceRandom};
use tokio_util::sync::CancellationToken;
use waggle_core::{HealthStatus, Instance, ServiceName};

use crate::watch::WatchHub;

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

/// Answers queries from the watch hub's current view (no I/O, no lock held across awaits).
pub(crate) struct Handler {
    hub: Arc<WatchHub>,
    settings: DnsSettings,
    zones: Vec<Name>,
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
    Service { name: String, tag: Option<String> },
    Node(String),
    Addr(IpAddr),
    Nothing,
}

impl Question {
    /// Parses the labels left of the zone (lowercase, left to right).
    fn parse(labels: &[String]) -> Question {
        let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if labels.is_empty() {
            return Question::Apex;
        }
        // An optional datacenter after the kind label: ours only.
        if labels.len() >= 2 && ["service", "node", "addr"].contains(&labels[labels.len() - 2]) {
            if labels[labels.len() - 1] != crate::consul::DATACENTER {
                return Question::Nothing;
            }
            labels.pop();
        }
        match labels.as_slice() {
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
    pub(crate) fn new(hub: Arc<WatchHub>, settings: DnsSettings) -> Self {
        let zones = settings
            .domains
            .iter()
            .filter_map(|d| Name::from_ascii(format!("{d}.")).ok())
            .map(|n| n.to_lowercase())
            .collect();
        Handler { hub, settings, zones }
    }

    fn soa(&self, zone: &Name) -> Record {
        let host = |label: &str| Name::from_ascii(label).ok().and_then(|n| n.append_domain(zone).ok());
        let (mname, rname) =
            (host("ns").unwrap_or_else(|| zone.clone()), host("hostmaster").unwrap_or_else(|| zone.clone()));
        // Serial: the registry's revision (it only grows); minimum: the negative-caching TTL.
        let serial = self.hub.revision().get() as u32;
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
        let (_, instances, _) = self.hub.service(&service);
        let healthy = |i: &&std::sync::Arc<Instance>| match i.spec.status {
            HealthStatus::Passing => true,
            HealthStatus::Warning => self.settings.allow_warning,
            HealthStatus::Critical => false,
        };
        let mut chosen: Vec<&std::sync::Arc<Instance>> = instances
            .values()
            .filter(healthy)
            .filter(|i| tag.is_none_or(|t| i.spec.tags.iter().any(|x| x == t)))
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

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let mut edns = None;
        if let Some(asked) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(asked.max_payload().max(512));
            ours.set_version(0);
            edns = Some(ours);
        }
        let builder = || {
            let mut b = MessageResponseBuilder::from_message_request(request);
            if let Some(e) = &edns {
                b.edns(e);
            }
            b
        };
        let answer = if request.metadata.message_type != MessageType::Query {
            Answer { code: ResponseCode::FormErr, ..Default::default() }
        } else if request.metadata.op_code != OpCode::Query {
            Answer { code: ResponseCode::NotImp, ..Default::default() }
        } else {
            match request.request_info() {
                Ok(info) => self.answer(info.query.name(), info.query.query_type()),
                Err(_) => Answer { code: ResponseCode::FormErr, ..Default::default() },
            }
        };
        metadata.response_code = answer.code;
        if answer.code == ResponseCode::Refused {
            metadata.authoritative = false;
        }
        let soa: Vec<Record> = answer.soa_zone.iter().map(|z| self.soa(z)).collect();
        let message =
            builder().build(metadata, answer.answers.iter(), std::iter::empty(), soa.iter(), answer.additionals.iter());
        match response.send_response(message).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!("sending a DNS answer failed: {e}");
                let mut failed = Metadata::response_from_request(&request.metadata);
                failed.response_code = ResponseCode::ServFail;
                ResponseInfo::from(hickory_server::proto::op::Header { metadata: failed, counts: Default::default() })
            }
        }
    }
}

/// Binds UDP and TCP on the same address (for port 0, the port UDP got) and serves until
/// `shutdown`. Answers the bound address and the serving task.
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
    let mut server = hickory_server::Server::new(handler);
    server.register_socket(udp);
    // Idle TCP connections are closed after 5 s.
    server.register_listener(tcp, Duration::from_secs(5), 64);
    let task = tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = server.shutdown_gracefully().await;
            }
            result = server.block_until_done() => {
                if let Err(e) = result {
                    tracing::error!("DNS server failed: {e}");
                }
            }
        }
    });
    Ok((bound, task))
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
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(decode_addr(&encode_addr(v6)), Some(v6));
    }
}
