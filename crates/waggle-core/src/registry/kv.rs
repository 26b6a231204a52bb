//! The key/value store: transactions of compares and operations, and keys bound to sessions.

use std::sync::Arc;

use super::Registry;
use crate::{Applied, ApplyError, Effect, KvEntry, KvOp, OpResult, SessionId, Txn, TxnResult};

impl Registry {
    /// The key/value store.
    pub fn kv(&self) -> &imbl::OrdMap<String, Arc<KvEntry>> {
        &self.kv
    }
}

// The apply arms and their helpers, called from `Registry::apply`.
impl Registry {
    /// Keys under `prefix`, in order.
    fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.kv.range(prefix.to_owned()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect()
    }

    /// Moves `key`'s session binding from `from` to `to`.
    fn rebind(&mut self, key: &str, from: Option<SessionId>, to: Option<SessionId>) {
        if from == to {
            return;
        }
        if let Some(old) = from.and_then(|s| self.sessions.get_mut(&s)) {
            old.keys.remove(key);
        }
        if let Some(new) = to.and_then(|s| self.sessions.get_mut(&s)) {
            new.keys.insert(key.to_owned());
        }
    }

    /// Runs a transaction: the compares against the current entries, then one branch. It
    /// consumes one revision if it wrote anything. An operation that aborts (a failed acquire,
    /// release or assert) undoes the branch: nothing changes and no revision is consumed.
    pub(super) fn kv_txn(&mut self, txn: &Txn, effects: &mut Vec<Effect>) -> Result<Applied, ApplyError> {
        txn.validate()?;
        if let Some(guard) = txn.guard.as_ref().filter(|g| !crate::kv::guard_holds(Some(g), &self.locks)) {
            return Err(ApplyError::Fenced { lock: guard.lock.clone(), token: guard.token });
        }
        let succeeded = txn.compares.iter().all(|c| c.holds(self.kv.get(&c.key).map(|e| &**e)));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        // Refuse before changing anything: a put or acquire for a session that does not exist.
        for op in ops {
            if let KvOp::Put { session: Some(s), .. } | KvOp::Acquire { session: s, .. } = op
                && (*s == SessionId::AGENT || !self.sessions.contains_key(s))
            {
                return Err(ApplyError::SessionNotFound(*s));
            }
        }
        let next = self.revision.next();
        // The store is persistent: keeping the old version to roll back to costs a pointer.
        let before = self.kv.clone();
        let effects_before = effects.len();
        // Session bindings change only once the branch has run to the end.
        let mut rebinds: Vec<(String, Option<SessionId>, Option<SessionId>)> = Vec::new();
        let mut write = |registry: &mut Self, key: &str, entry: Option<Arc<KvEntry>>, effects: &mut Vec<Effect>| {
            let previous = match &entry {
                Some(entry) => registry.kv.insert(key.to_owned(), entry.clone()),
                None => registry.kv.remove(key),
            };
            let (from, to) = (previous.as_ref().and_then(|p| p.session), entry.as_ref().and_then(|e| e.session));
            if from != to {
                rebinds.push((key.to_owned(), from, to));
            }
            effects.push(Effect::KvChanged { key: key.to_owned(), entry, revision: next });
        };
        let stored = |previous: Option<&Arc<KvEntry>>, value: &[u8], flags: u64, session: Option<SessionId>| KvEntry {
            value: Arc::from(value),
            flags,
            create_revision: previous.map_or(next, |p| p.create_revision),
            modify_revision: next,
            version: previous.map_or(1, |p| p.version + 1),
            session,
            lock_index: previous.map_or(0, |p| p.lock_index),
        };
        let mut wrote = false;
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.iter().enumerate() {
            let result = match op {
                KvOp::Put { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    let entry = Arc::new(stored(previous.as_ref(), value, *flags, *session));
                    write(self, key, Some(entry), effects);
                    wrote = true;
                    Some(OpResult::Put { previous })
                }
                KvOp::Set { key, value, flags } => {
                    let previous = self.kv.get(key).cloned();
                    let session = previous.as_ref().and_then(|p| p.session);
                    let entry = Arc::new(stored(previous.as_ref(), value, *flags, session));
                    write(self, key, Some(entry.clone()), effects);
                    wrote = true;
                    Some(OpResult::Entry { entry: Some(entry) })
                }
                KvOp::Acquire { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    let holder = previous.as_ref().and_then(|p| p.session);
                    if self.key_delays.contains_key(key) || holder.is_some_and(|h| h != *session) {
                        None
                    } else {
                        let mut entry = stored(previous.as_ref(), value, *flags, Some(*session));
                        if holder.is_none() {
                            entry.lock_index += 1;
                        }
                        let entry = Arc::new(entry);
                        write(self, key, Some(entry.clone()), effects);
                        wrote = true;
                        Some(OpResult::Entry { entry: Some(entry) })
                    }
                }
                KvOp::Release { key, value, flags, session } => {
                    let previous = self.kv.get(key).cloned();
                    if previous.as_ref().and_then(|p| p.session) != Some(*session) {
                        None
                    } else {
                        let entry = Arc::new(stored(previous.as_ref(), value, *flags, None));
                        write(self, key, Some(entry.clone()), effects);
                        wrote = true;
                        Some(OpResult::Entry { entry: Some(entry) })
                    }
                }
                KvOp::Assert(compare) => crate::kv::assert_entry(&self.kv, compare),
                KvOp::Delete { key, prefix } => {
                    let keys = if *prefix { self.keys_under(key) } else { vec![key.clone()] };
                    let mut deleted = 0;
                    for key in keys {
                        if self.kv.contains_key(&key) {
                            write(self, &key, None, effects);
                            deleted += 1;
                        }
                    }
                    wrote |= deleted > 0;
                    Some(OpResult::Delete { deleted })
                }
                KvOp::Get { key, prefix } => {
                    Some(OpResult::Get { entries: crate::kv::get_entries(&self.kv, key, *prefix) })
                }
            };
            match result {
                Some(result) => results.push(result),
                None => {
                    self.kv = before;
                    effects.truncate(effects_before);
                    let txn = TxnResult { succeeded: false, results: Vec::new(), aborted: Some(index) };
                    return Ok(Applied::Txn { revision: self.revision, result: txn });
                }
            }
        }
        for (key, from, to) in rebinds {
            self.rebind(&key, from, to);
        }
        if wrote {
            self.revision = next;
        }
        let txn = TxnResult { succeeded, results, aborted: None };
        Ok(Applied::Txn { revision: self.revision, result: txn })
    }
}
