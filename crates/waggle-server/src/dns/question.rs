//! A DNS name as a question of Consul's forms: `<service>.service`, `<tag>.<service>.service`,
//! RFC 2782 `_<service>._<tag>.service`, `<node>.node`, `<hex>.addr`, with an optional
//! datacenter label, below one of the configured domains.

use std::net::IpAddr;

use crate::node::DATACENTER;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Question {
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
    pub(super) fn parse(labels: &[String]) -> Question {
        let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        if labels.is_empty() {
            return Question::Apex;
        }
        const KINDS: [&str; 3] = ["service", "node", "addr"];
        // An optional datacenter after the kind label: ours only. (A last label that is a kind
        // is the kind: `v1.node.service` is tag v1 of service `node`.)
        let last = labels[labels.len() - 1];
        if labels.len() >= 2 && KINDS.contains(&labels[labels.len() - 2]) && !KINDS.contains(&last) {
            if last != DATACENTER {
                return Question::Nothing;
            }
            labels.pop();
        }
        match labels.as_slice() {
            // Names with names below them exist (NODATA, not NXDOMAIN: RFC 8020).
            [kind] if KINDS.contains(kind) || *kind == DATACENTER => Question::Empty,
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
pub(super) fn encode_addr(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

pub(super) fn decode_addr(hex: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> =
        (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok())).collect();
    match bytes?.as_slice() {
        b if b.len() == 4 => Some(IpAddr::from([b[0], b[1], b[2], b[3]])),
        b if b.len() == 16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse(name: &str) -> Question {
        let labels: Vec<String> = name.split('.').filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Question::parse(&labels)
    }

    #[test]
    pub(super) fn names_parse_like_consuls() {
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
