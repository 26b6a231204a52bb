//! The key/value store: entries, transactions (compare, then / else) and their limits.
//!
//! Every write is a transaction ([`Txn`]): a plain put is a transaction without compares, a
//! compare-and-set one with a compare on the key's modify revision (0: the key must not exist).
//! A transaction that writes consumes exactly one revision, shared by all its writes.

use std::sync::Arc;

use crate::{Revision, SessionId, ValidationError};

/// Limits on keys, values and transactions (documented in docs/kv.md).
pub mod kv_limits {
    /// Longest key, in bytes.
    pub const MAX_KEY: usize = 512;
    /// Largest value, in bytes.
    pub const MAX_VALUE: usize = 512 * 1024;
    /// Most compares plus operations in one transaction.
    pub const MAX_OPS: usize = 64;
    /// Largest total of keys and values in one transaction, in bytes.
    pub const MAX_TXN_BYTES: usize = 2 * 1024 * 1024;
}

use kv_limits::*;

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvEntry {
    /// The value.
    pub value: Arc<[u8]>,
    /// Opaque client flags (Consul's `Flags`).
    pub flags: u64,
    /// The revision that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision that last wrote it.
    pub modify_revision: Revision,
    /// Writes since creation (1 after the first).
    pub version: u64,
    /// The session it is bound to (Consul: the lock holder): deleted or released when that
    /// session ends, as the session's [`crate::KeyBehavior`] says.
    pub session: Option<SessionId>,
    /// How many times a session acquired it as a lock (Consul's `LockIndex`).
    pub lock_index: u64,
}

/// Checks a key: 1–512 bytes of printable ASCII (no spaces or control characters), not
/// starting with `/`.
pub fn check_key(key: &str) -> Result<(), ValidationError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ValidationError::new("key", format!("must be 1 to {MAX_KEY} bytes (got {})", key.len())));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ValidationError::new("key", format!("must be printable ASCII without spaces (got {key:?})")));
    }
    if key.starts_with('/') {
        return Err(ValidationError::new("key", format!("must not start with '/' (got {key:?})")));
    }
    Ok(())
}

/// Checks a prefix: like a key, but may be empty (everything).
pub fn check_prefix(prefix: &str) -> Result<(), ValidationError> {
    if prefix.is_empty() { Ok(()) } else { check_key(prefix) }
}

/// What a compare looks at; a missing key has revisions, version and session 0 and an empty
/// value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareTarget {
    /// The revision of the last write (0: the key does not exist).
    ModifyRevision(u64),
    /// The revision that created it.
    CreateRevision(u64),
    /// Writes since creation.
    Version(u64),
    /// The value, byte for byte (`Less` / `Greater` compare lexicographically).
    Value(Vec<u8>),
    /// The session it is bound to (0: none).
    Session(u64),
    /// The modify revision, where a missing key counts as equal to anything (Consul's
    /// `delete-cas`: deleting a key that is already gone succeeds).
    ModifyRevisionIfPresent(u64),
}

/// How a compare compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CompareOp {
    /// Equal.
    Equal,
    /// Not equal.
    NotEqual,
    /// The key's is less than the given.
    Less,
    /// The key's is greater than the given.
    Greater,
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Compare {
    /// The key looked at.
    pub key: String,
    /// What of it, and the value to compare with.
    pub target: CompareTarget,
    /// How.
    pub op: CompareOp,
}

impl Compare {
    /// Evaluates the compare against the key's entry (`None`: missing).
    pub fn holds(&self, entry: Option<&KvEntry>) -> bool {
        use std::cmp::Ordering;
        let ordering = match &self.target {
            CompareTarget::ModifyRevision(v) => entry.map_or(0, |e| e.modify_revision.get()).cmp(v),
            CompareTarget::CreateRevision(v) => entry.map_or(0, |e| e.create_revision.get()).cmp(v),
            CompareTarget::Version(v) => entry.map_or(0, |e| e.version).cmp(v),
            CompareTarget::Session(v) => entry.and_then(|e| e.session).map_or(0, SessionId::get).cmp(v),
            CompareTarget::Value(v) => entry.map_or(&[][..], |e| &e.value[..]).cmp(&v[..]),
            CompareTarget::ModifyRevisionIfPresent(v) => {
                entry.map_or(Ordering::Equal, |e| e.modify_revision.get().cmp(v))
            }
        };
        match self.op {
            CompareOp::Equal => ordering == Ordering::Equal,
            CompareOp::NotEqual => ordering != Ordering::Equal,
            CompareOp::Less => ordering == Ordering::Less,
            CompareOp::Greater => ordering == Ordering::Greater,
        }
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KvOp {
    /// Writes a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Client flags.
        flags: u64,
        /// Bind the key to this session (deleted when it ends); `None` unbinds it.
        session: Option<SessionId>,
    },
    /// Deletes a key, or every key under a prefix.
    Delete {
        /// The key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
    /// Reads a key, or every key under a prefix, as of this point of the transaction.
    Get {
        /// The key or prefix.
        key: String,
        /// Treat `key` as a prefix.
        prefix: bool,
    },
    /// Writes a key's value and flags, keeping its session and lock index (Consul's `set`).
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Client flags.
        flags: u64,
    },
    /// Takes a key as a lock for `session` and writes value and flags (Consul's `acquire`);
    /// **aborts** the transaction if another session holds the key or a lock-delay is in force.
    /// A new holder increments the lock index; the holder acquiring again does not.
    Acquire {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Client flags.
        flags: u64,
        /// The acquiring session.
        session: SessionId,
    },
    /// Releases `session`'s hold on a key and writes value and flags (Consul's `release`);
    /// **aborts** the transaction unless `session` holds the key.
    Release {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// Client flags.
        flags: u64,
        /// The releasing session.
        session: SessionId,
    },
    /// **Aborts** the transaction unless the compare holds at this point of it.
    Assert(Compare),
}

impl KvOp {
    /// The key and value it writes, for a put, set, acquire or release.
    pub fn written(&self) -> Option<(&str, &[u8])> {
        match self {
            KvOp::Put { key, value, .. }
            | KvOp::Set { key, value, .. }
            | KvOp::Acquire { key, value, .. }
            | KvOp::Release { key, value, .. } => Some((key, value)),
            KvOp::Delete { .. } | KvOp::Get { .. } | KvOp::Assert(_) => None,
        }
    }
}

/// A transaction: if every compare holds, `success` runs, else `failure`, in order and
/// atomically. With a `guard`, it is refused outright unless the guard's fencing token holds
/// its lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Txn {
    /// Refuse unless this fencing token holds this lock now.
    pub guard: Option<crate::Guard>,
    /// The conditions (all must hold).
    pub compares: Vec<Compare>,
    /// Run when they hold.
    pub success: Vec<KvOp>,
    /// Run when one does not.
    pub failure: Vec<KvOp>,
}

impl Txn {
    /// A transaction of one put.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        let op = KvOp::Put { key: key.into(), value: value.into(), flags: 0, session: None };
        Txn { success: vec![op], ..Default::default() }
    }

    /// Whether it only reads (compares, gets, asserts): then [`read_only_txn`] answers it from a
    /// copy of the store exactly as applying it would, without a log write.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| matches!(op, KvOp::Get { .. } | KvOp::Assert(_)))
    }

    /// Checks every key, value and the limits: at most [`MAX_OPS`] compares and operations,
    /// not counting asserts (Consul's checks), of which there may be as many again.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let all = || self.success.iter().chain(&self.failure);
        let asserts = all().filter(|op| matches!(op, KvOp::Assert(_))).count();
        let ops = self.compares.len() + self.success.len() + self.failure.len() - asserts;
        if ops > MAX_OPS || asserts > MAX_OPS {
            return Err(ValidationError::new("txn", format!("at most {MAX_OPS} compares and operations (got {ops})")));
        }
        let mut bytes = 0usize;
        if let Some(guard) = &self.guard {
            crate::check_key(&guard.lock).map_err(|e| ValidationError::new("guard.lock", e.rule))?;
        }
        for compare in &self.compares {
            check_key(&compare.key)?;
            bytes += compare.key.len();
            if let CompareTarget::Value(v) = &compare.target {
                if v.len() > MAX_VALUE {
                    return Err(ValidationError::new("value", format!("at most {MAX_VALUE} bytes (got {})", v.len())));
                }
                bytes += v.len();
            }
        }
        for op in self.success.iter().chain(&self.failure) {
            match op {
                KvOp::Put { key, value, .. }
                | KvOp::Set { key, value, .. }
                | KvOp::Acquire { key, value, .. }
                | KvOp::Release { key, value, .. } => {
                    check_key(key)?;
                    if value.len() > MAX_VALUE {
                        let rule = format!("at most {MAX_VALUE} bytes (got {})", value.len());
                        return Err(ValidationError::new("value", rule));
                    }
                    bytes += key.len() + value.len();
                }
                KvOp::Delete { key, prefix } | KvOp::Get { key, prefix } => {
                    if *prefix {
                        check_prefix(key)?
                    } else {
                        check_key(key)?
                    }
                    bytes += key.len();
                }
                KvOp::Assert(compare) => {
                    check_key(&compare.key)?;
                    bytes += compare.key.len();
                    if let CompareTarget::Value(v) = &compare.target {
                        bytes += v.len();
                    }
                }
            }
        }
        if bytes > MAX_TXN_BYTES {
            return Err(ValidationError::new("txn", format!("at most {MAX_TXN_BYTES} bytes of keys and values")));
        }
        Ok(())
    }
}

/// What one operation of a transaction did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OpResult {
    /// A put: the entry before it, if any.
    Put {
        /// The previous entry.
        previous: Option<Arc<KvEntry>>,
    },
    /// A delete: how many keys it removed.
    Delete {
        /// Keys removed.
        deleted: u64,
    },
    /// A get: the entries, in key order.
    Get {
        /// (key, entry) pairs.
        entries: Vec<(String, Arc<KvEntry>)>,
    },
    /// A set, acquire, release or assert: the key's entry after it (`None`: missing).
    Entry {
        /// The entry.
        entry: Option<Arc<KvEntry>>,
    },
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnResult {
    /// Whether the compares held (so `success` ran) and nothing aborted.
    pub succeeded: bool,
    /// One result per operation run (none when aborted).
    pub results: Vec<OpResult>,
    /// The index, in the branch that ran, of the operation that aborted the transaction
    /// (an [`KvOp::Acquire`], [`KvOp::Release`] or [`KvOp::Assert`] that failed); nothing
    /// was changed.
    pub aborted: Option<usize>,
}

/// The store's map (persistent: a copy costs a pointer).
pub type KvMap = imbl::OrdMap<String, Arc<KvEntry>>;

/// Whether `guard` holds its lock now (`None`: no guard).
pub(crate) fn guard_holds(guard: Option<&crate::Guard>, locks: &imbl::OrdMap<String, Arc<crate::LockState>>) -> bool {
    guard.is_none_or(|g| locks.get(&g.lock).is_some_and(|s| s.token_held(g.token)))
}

/// The entries a get reads: a key, or every key under a prefix.
pub(crate) fn get_entries(kv: &KvMap, key: &str, prefix: bool) -> Vec<(String, Arc<KvEntry>)> {
    if prefix {
        kv.range(key.to_owned()..)
            .take_while(|(k, _)| k.starts_with(key))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    } else {
        kv.get(key).map(|e| vec![(key.to_owned(), e.clone())]).unwrap_or_default()
    }
}

/// An assert's result: the key's entry if the compare holds, `None` (abort) if not.
pub(crate) fn assert_entry(kv: &KvMap, compare: &Compare) -> Option<OpResult> {
    let entry = kv.get(&compare.key).cloned();
    compare.holds(entry.as_deref()).then_some(OpResult::Entry { entry })
}

/// Answers a read-only transaction ([`Txn::is_read_only`]) from a copy of the store and the
/// locks, exactly as applying it at that revision would.
pub fn read_only_txn(
    txn: &Txn,
    kv: &KvMap,
    locks: &imbl::OrdMap<String, Arc<crate::LockState>>,
) -> Result<TxnResult, crate::ApplyError> {
    txn.validate()?;
    if !txn.is_read_only() {
        return Err(ValidationError::new("txn", "writes: it must go through the log").into());
    }
    if let Some(guard) = txn.guard.as_ref().filter(|g| !guard_holds(Some(g), locks)) {
        return Err(crate::ApplyError::Fenced { lock: guard.lock.clone(), token: guard.token });
    }
    let succeeded = txn.compares.iter().all(|c| c.holds(kv.get(&c.key).map(|e| &**e)));
    let ops = if succeeded { &txn.success } else { &txn.failure };
    let mut results = Vec::with_capacity(ops.len());
    for (index, op) in ops.iter().enumerate() {
        let result = match op {
            KvOp::Get { key, prefix } => Some(OpResult::Get { entries: get_entries(kv, key, *prefix) }),
            KvOp::Assert(compare) => assert_entry(kv, compare),
            _ => None,
        };
        match result {
            Some(result) => results.push(result),
            None => return Ok(TxnResult { succeeded: false, results: Vec::new(), aborted: Some(index) }),
        }
    }
    Ok(TxnResult { succeeded, results, aborted: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_limits_are_checked() {
        assert!(check_key("app/config/db.url").is_ok());
        for bad in ["", "/abs", "has space", "tab\t", "é"] {
            assert_eq!(check_key(bad).expect_err(bad).field, "key", "{bad:?}");
        }
        assert!(check_key(&"k".repeat(512)).is_ok());
        assert!(check_key(&"k".repeat(513)).is_err());
        assert!(check_prefix("").is_ok());
        let big = Txn::put("k", vec![0u8; MAX_VALUE + 1]);
        assert_eq!(big.validate().expect_err("value").field, "value");
        let many = Txn { success: vec![KvOp::Get { key: "a".into(), prefix: false }; 65], ..Default::default() };
        assert_eq!(many.validate().expect_err("ops").field, "txn");
    }

    #[test]
    fn compares_treat_a_missing_key_as_zero() {
        let create_only = Compare { key: "k".into(), target: CompareTarget::ModifyRevision(0), op: CompareOp::Equal };
        assert!(create_only.holds(None));
        let entry = KvEntry {
            value: Arc::from(&b"b"[..]),
            flags: 0,
            create_revision: Revision::new(3),
            modify_revision: Revision::new(5),
            version: 2,
            session: None,
            lock_index: 0,
        };
        assert!(!create_only.holds(Some(&entry)));
        let newer = Compare { key: "k".into(), target: CompareTarget::ModifyRevision(4), op: CompareOp::Greater };
        assert!(newer.holds(Some(&entry)));
        let value = Compare { key: "k".into(), target: CompareTarget::Value(b"a".to_vec()), op: CompareOp::Greater };
        assert!(value.holds(Some(&entry)));
        assert!(!value.holds(None));
    }
}
