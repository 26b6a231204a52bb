//! The answer cache: a plain query (one question, standard flags) is looked up by its
//! question and answered from the encoded answer of the current revision (a few shuffled
//! variants; id, flags and the question's case patched in), without parsing the packet.

use std::sync::Arc;

/// What an encoded answer depends on besides the registry: the question (lowercase wire
/// name, type, class), the transport and the client's EDNS size.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CacheKey {
    pub(super) name: Vec<u8>,
    pub(super) qtype: u16,
    pub(super) qclass: u16,
    pub(super) edns: Option<u16>,
    pub(super) udp: bool,
}

#[derive(Default)]
pub(super) struct AnswerCache {
    pub(super) entries: std::collections::HashMap<CacheKey, Arc<Cached>>,
    pub(super) bytes: usize,
}

/// Differently shuffled encodings of one answer, built at one revision.
pub(super) struct Cached {
    pub(super) revision: waggle_core::Revision,
    pub(super) variants: Vec<Vec<u8>>,
    /// Bytes it holds (key included), for the cache's budget.
    pub(super) size: usize,
}

/// Shuffled encodings kept per question; a query gets one at random.
pub(super) const VARIANTS: usize = 8;
/// Questions cached at most, and their encodings' total size: the cache starts over when
/// either is reached. Only positive answers are cached, so random names cannot fill it.
pub(super) const MAX_CACHED: usize = 4096;
pub(super) const MAX_CACHED_BYTES: usize = 32 << 20;
/// The largest UDP answer (the 2020 DNS flag day's size: no IP fragmentation); larger answers
/// are truncated and the client retries over TCP.
pub(super) const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP answer size for a client's EDNS buffer size: 1232 if it takes that much, else the
/// classic 512 (two sizes only, so the cache keeps at most two encodings per question).
pub(super) fn udp_limit(asked: u16) -> u16 {
    if asked >= MAX_UDP_PAYLOAD { MAX_UDP_PAYLOAD } else { 512 }
}

/// A plain query (one question, no answer / authority records, at most an OPT record without
/// options): the question's end offset and the answer's cache key.
pub(super) fn plain_query(packet: &[u8], udp: bool) -> Option<(usize, CacheKey)> {
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
