//! The locks as readers see them: a persistent copy taken when a command changes one, and a
//! change signal per lock, created on demand and dropped once nobody listens, so a waiting
//! acquire or an observer wakes when its lock changes, not on every write.

use std::{collections::HashMap, sync::Arc};

use tokio::sync::watch;
use waggle_core::{Effect, LockState, Registry, Revision};

/// The locks and their signals.
#[derive(Default)]
pub(super) struct Locks {
    pub(super) map: imbl::OrdMap<String, Arc<LockState>>,
    signals: HashMap<String, watch::Sender<Revision>>,
}

impl Locks {
    /// Takes in the lock changes of one batch of effects at `revision`, signalling the changed
    /// locks.
    pub(super) fn publish(&mut self, registry: &Registry, effects: &[Effect], revision: Revision) {
        if !effects.iter().any(|e| matches!(e, Effect::LockChanged { .. })) {
            return;
        }
        self.map = registry.locks().clone();
        for effect in effects {
            if let Effect::LockChanged { lock, .. } = effect
                && let Some(signal) = self.signals.get(lock)
            {
                signal.send_replace(revision);
            }
        }
    }

    /// Replaces the locks with the registry's and wakes every listener.
    pub(super) fn reset(&mut self, registry: &Registry, revision: Revision) {
        self.map = registry.locks().clone();
        for signal in self.signals.values() {
            signal.send_replace(revision);
        }
    }

    /// The signal of lock `name` (created at `revision` if nobody listened yet).
    pub(super) fn signal(&mut self, name: &str, revision: Revision) -> watch::Receiver<Revision> {
        self.signals.entry(name.to_owned()).or_insert_with(|| watch::Sender::new(revision)).subscribe()
    }

    /// Drops the signals nobody listens to.
    pub(super) fn prune(&mut self) {
        self.signals.retain(|_, signal| signal.receiver_count() > 0);
    }

    #[cfg(test)]
    pub(super) fn signalled(&self) -> Vec<&String> {
        let mut names: Vec<_> = self.signals.keys().collect();
        names.sort();
        names
    }
}
