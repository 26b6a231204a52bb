//! The key/value store from the SDK: `client.kv()`.

use waggle_core::{SessionId, Txn};
use waggle_proto::v1::{self, kv_client::KvClient};

use crate::{Client, Error, failover::Failover};

/// One key as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value (empty when listed with keys only).
    #[serde(serialize_with = "as_text")]
    pub value: Vec<u8>,
    /// Client flags.
    pub flags: u64,
    /// The revision that created it.
    pub create_revision: u64,
    /// The revision that last wrote it.
    pub modify_revision: u64,
    /// Writes since creation.
    pub version: u64,
    /// The session it is bound to.
    pub session: Option<SessionId>,
}

fn as_text<S: serde::Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(value))
}

impl From<v1::KeyValue> for KeyValue {
    fn from(w: v1::KeyValue) -> Self {
        KeyValue {
            key: w.key,
            value: w.value,
            flags: w.flags,
            create_revision: w.create_revision,
            modify_revision: w.modify_revision,
            version: w.version,
            session: (w.session_id != 0).then(|| SessionId::new(w.session_id)),
        }
    }
}

/// Options of [`Kv::put_with`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Client flags stored with the value.
    pub flags: u64,
    /// Write only if the key's modify revision is this (0: only if the key does not exist).
    pub cas: Option<u64>,
    /// Bind the key to this session: it is deleted when the session ends.
    pub session: Option<SessionId>,
    /// Refuse the write (`FAILED_PRECONDITION`) unless this fencing token holds its lock now.
    pub guard: Option<waggle_core::Guard>,
}

fn guard_to_wire(guard: Option<&waggle_core::Guard>) -> Option<v1::Guard> {
    guard.map(|g| v1::Guard { lock: g.lock.clone(), token: g.token })
}

/// What a conditional write did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written {
    /// The revision after it.
    pub revision: u64,
    /// False when the compare-and-set did not match (nothing was written).
    pub succeeded: bool,
}

/// What a transaction did ([`Kv::txn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TxnOutcome {
    /// The revision after it.
    pub revision: u64,
    /// Whether the compares held (so the success branch ran).
    pub succeeded: bool,
    /// What each `Get` of the branch that ran read, in order.
    pub reads: Vec<Vec<KeyValue>>,
}

/// One change a KV watch reports ([`Kv::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvChange {
    /// The key.
    pub key: String,
    /// Its entry after the change; `None` when it was deleted.
    pub entry: Option<KeyValue>,
    /// The revision of the change.
    pub revision: u64,
}

/// The key/value store (see `docs/kv.md`). Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    client: Client,
    rpc: KvClient<Failover>,
}

impl Client {
    /// The key/value store, through the same servers and failover as every other call.
    pub fn kv(&self) -> Kv {
        // A prefix read can carry up to the server's 32 MiB answer limit.
        let rpc = KvClient::new(self.failover()).max_decoding_message_size(crate::client::MAX_MESSAGE_BYTES);
        Kv { client: self.clone(), rpc }
    }
}

impl Kv {
    /// Writes `key`. Returns the revision of the write.
    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<u64, Error> {
        Ok(self.put_with(key, value, PutOptions::default()).await?.revision)
    }

    /// Writes `key` with flags, a compare-and-set or a session binding.
    pub async fn put_with(&self, key: &str, value: impl Into<Vec<u8>>, options: PutOptions) -> Result<Written, Error> {
        waggle_core::check_key(key)?;
        let value = value.into();
        if value.len() > waggle_core::kv_limits::MAX_VALUE {
            let rule = format!("at most {} bytes", waggle_core::kv_limits::MAX_VALUE);
            return Err(waggle_core::ValidationError::new("value", rule).into());
        }
        let req = v1::PutRequest {
            key: key.to_owned(),
            value,
            flags: options.flags,
            session_id: options.session.map_or(0, SessionId::get),
            cas: options.cas,
            guard: guard_to_wire(options.guard.as_ref()),
        };
        let resp = self.client.call(self.rpc.clone().put(req)).await?;
        Ok(Written { revision: resp.revision, succeeded: resp.succeeded })
    }

    /// Reads `key`.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>, Error> {
        waggle_core::check_key(key)?;
        let req = v1::GetRequest { key: key.to_owned(), ..Default::default() };
        Ok(self.client.call(self.rpc.clone().get(req)).await?.kvs.into_iter().next().map(KeyValue::from))
    }

    /// Every key under `prefix`, in key order (`keys_only`: without values).
    pub async fn list(&self, prefix: &str, keys_only: bool) -> Result<Vec<KeyValue>, Error> {
        waggle_core::check_prefix(prefix)?;
        let req = v1::GetRequest { key: prefix.to_owned(), prefix: true, keys_only, ..Default::default() };
        Ok(self.client.call(self.rpc.clone().get(req)).await?.kvs.into_iter().map(KeyValue::from).collect())
    }

    /// Deletes `key` (with `cas`, only at that modify revision). Returns the keys deleted.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<u64, Error> {
        self.delete_guarded(key, cas, None).await
    }

    /// Deletes `key`, refused unless `guard`'s fencing token holds its lock now.
    pub async fn delete_guarded(
        &self,
        key: &str,
        cas: Option<u64>,
        guard: Option<&waggle_core::Guard>,
    ) -> Result<u64, Error> {
        waggle_core::check_key(key)?;
        let req = v1::DeleteRequest { key: key.to_owned(), prefix: false, cas, guard: guard_to_wire(guard) };
        Ok(self.client.call(self.rpc.clone().delete(req)).await?.deleted)
    }

    /// Deletes every key under `prefix`. Returns how many.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, Error> {
        waggle_core::check_prefix(prefix)?;
        let req = v1::DeleteRequest { key: prefix.to_owned(), prefix: true, cas: None, guard: None };
        Ok(self.client.call(self.rpc.clone().delete(req)).await?.deleted)
    }

    /// The changes of `key` (or of every key under it, with `prefix`) from revision `from`
    /// on (0: from now), in order. A start older than the history the server keeps fails with
    /// OUT_OF_RANGE: read again and watch from the read's revision + 1.
    pub async fn watch(
        &self,
        key: &str,
        prefix: bool,
        from: u64,
    ) -> Result<impl futures_util::Stream<Item = Result<KvChange, Error>> + use<>, Error> {
        use futures_util::StreamExt;
        if prefix { waggle_core::check_prefix(key) } else { waggle_core::check_key(key) }?;
        let req = v1::WatchKvRequest { key: key.to_owned(), prefix, from_revision: from };
        let stream = self.client.call(self.rpc.clone().watch(req)).await?;
        Ok(stream.flat_map(|message| {
            let changes: Vec<Result<KvChange, Error>> = match message {
                Ok(m) => m
                    .events
                    .into_iter()
                    .map(|e| Ok(KvChange { key: e.key, entry: e.kv.map(KeyValue::from), revision: e.revision }))
                    .collect(),
                Err(status) => vec![Err(Error::Rpc(status))],
            };
            futures_util::stream::iter(changes)
        }))
    }

    /// Runs a transaction.
    pub async fn txn(&self, txn: &Txn) -> Result<TxnOutcome, Error> {
        txn.validate()?;
        let resp = self.client.call(self.rpc.clone().txn(waggle_proto::txn_to_wire(txn)?)).await?;
        let reads = resp
            .results
            .into_iter()
            .filter_map(|r| match r.result {
                Some(v1::op_response::Result::Get(g)) => Some(g.kvs.into_iter().map(KeyValue::from).collect()),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome { revision: resp.revision, succeeded: resp.succeeded, reads })
    }
}
