//! The [`Handler`]: a query answered from the read model — records for the question, NXDOMAIN
//! or NODATA with the zone's SOA, truncation for UDP, FORMERR for malformed packets — through the
//! answer cache when it can be.

use std::{cell::RefCell, net::IpAddr, sync::Arc};

use hickory_proto::{
    op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, SOA, SRV},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};
use rand::{SeedableRng, seq::SliceRandom};
use waggle_core::{HealthStatus, Instance, ServiceName};

use super::{
    cache::{AnswerCache, Cached, MAX_CACHED, MAX_CACHED_BYTES, MAX_UDP_PAYLOAD, VARIANTS, plain_query, udp_limit},
    question::{Question, encode_addr},
};
use waggle_core::acl::{Access, Resource};

use crate::{node::Node, state::ReadModel};

thread_local! {
    static SHUFFLE: RefCell<rand::rngs::SmallRng> = RefCell::new(rand::rngs::SmallRng::from_os_rng());
}

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
    /// Resolves the anonymous token's rights (what DNS may show with ACLs on).
    node: Arc<Node>,
    settings: DnsSettings,
    zones: Vec<Name>,
    /// Encoded answers by question, valid while the registry's revision stays the same.
    cache: std::sync::Mutex<AnswerCache>,
}

/// An answer before encoding.
#[derive(Debug, Default)]
pub(super) struct Answer {
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
pub(super) fn address_record(name: &Name, ttl: u32, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

pub(super) fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

impl Handler {
    pub(crate) fn new(node: &Arc<Node>, settings: DnsSettings) -> Self {
        let read_model = node.read_model().clone();
        let zones = settings
            .domains
            .iter()
            .filter_map(|d| Name::from_ascii(format!("{d}.")).ok())
            .map(|n| n.to_lowercase())
            .collect();
        Handler { read_model, node: node.clone(), settings, zones, cache: Default::default() }
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
        // DNS carries no token: the anonymous token's read rights apply, as in Consul.
        let visible = self.node.caller(None).is_ok_and(|c| c.may(Resource::Service, service.as_str(), Access::Read));
        if !visible {
            return false;
        }
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

pub(super) fn error_response(id: u16, code: ResponseCode) -> Vec<u8> {
    let mut message = Message::new(id, MessageType::Response, OpCode::Query);
    message.metadata.response_code = code;
    message.to_vec().unwrap_or_default()
}
