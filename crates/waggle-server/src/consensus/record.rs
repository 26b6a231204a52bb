//! The on-disk encoding of Raft log entries and snapshots (prost, versioned).
//!
//! Commands inside entries use `waggle_core::codec`; openraft's own structures (membership,
//! snapshot metadata) are stored as JSON, which is self-describing and survives upgrades.

use openraft::{BasicNode, Entry, EntryPayload, LeaderId, LogId, Membership, SnapshotMeta};
use waggle_core::codec;

use super::{CommandBatch, TypeConfig};

const VERSION: u32 = 1;

#[derive(Clone, PartialEq, prost::Message)]
struct LogRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(uint64, tag = "2")]
    term: u64,
    #[prost(uint64, tag = "3")]
    leader_node: u64,
    #[prost(uint64, tag = "4")]
    index: u64,
    #[prost(oneof = "Payload", tags = "5, 6, 7, 8")]
    payload: Option<Payload>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Payload {
    #[prost(bool, tag = "5")]
    Blank(bool),
    /// One `waggle_core::codec` command (entries written before group commit), read as a
    /// batch of one.
    #[prost(bytes, tag = "6")]
    Command(Vec<u8>),
    /// A `waggle_core::codec` command batch.
    #[prost(bytes, tag = "8")]
    Commands(Vec<u8>),
    #[prost(bytes, tag = "7")]
    MembershipJson(Vec<u8>),
}

#[derive(Clone, PartialEq, prost::Message)]
struct SnapshotRecord {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(bytes, tag = "2")]
    meta_json: Vec<u8>,
    #[prost(bytes, tag = "3")]
    data: Vec<u8>,
}

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {what}: {reason}")]
pub(super) struct RecordError {
    what: &'static str,
    reason: String,
}

fn err(what: &'static str, reason: impl ToString) -> RecordError {
    RecordError { what, reason: reason.to_string() }
}

pub(super) fn encode_entry(entry: &Entry<TypeConfig>) -> Vec<u8> {
    let payload = match &entry.payload {
        EntryPayload::Blank => Payload::Blank(true),
        EntryPayload::Normal(batch) => Payload::Commands(codec::encode_commands(&batch.0)),
        EntryPayload::Membership(m) => Payload::MembershipJson(serde_json::to_vec(m).unwrap_or_default()),
    };
    prost::Message::encode_to_vec(&LogRecord {
        version: VERSION,
        term: entry.log_id.leader_id.term,
        leader_node: entry.log_id.leader_id.node_id,
        index: entry.log_id.index,
        payload: Some(payload),
    })
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<Entry<TypeConfig>, RecordError> {
    let r: LogRecord = prost::Message::decode(bytes).map_err(|e| err("log entry", e))?;
    if r.version == 0 || r.version > VERSION {
        return Err(err("log entry", format!("unsupported version {}", r.version)));
    }
    let payload = match r.payload.ok_or_else(|| err("log entry", "no payload"))? {
        Payload::Blank(_) => EntryPayload::Blank,
        Payload::Command(b) => {
            let command = codec::decode_command(&b).map_err(|e| err("log entry", e))?;
            EntryPayload::Normal(CommandBatch(vec![command].into()))
        }
        Payload::Commands(b) => {
            EntryPayload::Normal(CommandBatch(codec::decode_commands(&b).map_err(|e| err("log entry", e))?.into()))
        }
        Payload::MembershipJson(b) => {
            let m: Membership<u64, BasicNode> = serde_json::from_slice(&b).map_err(|e| err("log entry", e))?;
            EntryPayload::Membership(m)
        }
    };
    Ok(Entry { log_id: LogId::new(LeaderId { term: r.term, node_id: r.leader_node }, r.index), payload })
}

pub(super) fn encode_snapshot(meta: &SnapshotMeta<u64, BasicNode>, data: &[u8]) -> Vec<u8> {
    prost::Message::encode_to_vec(&SnapshotRecord {
        version: VERSION,
        meta_json: serde_json::to_vec(meta).unwrap_or_default(),
        data: data.to_vec(),
    })
}

pub(super) fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta<u64, BasicNode>, Vec<u8>), RecordError> {
    let r: SnapshotRecord = prost::Message::decode(bytes).map_err(|e| err("snapshot", e))?;
    if r.version == 0 || r.version > VERSION {
        return Err(err("snapshot", format!("unsupported version {}", r.version)));
    }
    let meta = serde_json::from_slice(&r.meta_json).map_err(|e| err("snapshot", e))?;
    Ok((meta, r.data))
}
