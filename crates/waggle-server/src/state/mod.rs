//! What a node keeps of the applied state besides the registry itself, fed by the state
//! machine's effects: the [`ReadModel`] every front-end reads (services, KV, locks, sessions and
//! their change signals), the [`SessionClock`] (session and lock-delay deadlines) and the
//! [`CheckTable`] (every check, with what only the leader times).
//!
//! # Architecture invariant
//!
//! Below consensus: the state machine adapter pushes into these, and nothing here proposes,
//! forwards or knows Raft. What acts on them (expiring sessions, running checks) is the
//! `leader` module's.

pub(crate) mod checks;
pub(crate) mod read_model;
pub(crate) mod session_clock;

use std::sync::Arc;

use waggle_core::{Effect, Registry};

pub(crate) use checks::CheckTable;
pub(crate) use read_model::{ReadLimits, ReadModel};
pub(crate) use session_clock::SessionClock;

/// The three, as the state machine feeds them.
pub(crate) struct LocalState {
    pub(crate) read_model: Arc<ReadModel>,
    pub(crate) clock: Arc<SessionClock>,
    pub(crate) checks: Arc<CheckTable>,
}

impl LocalState {
    /// Empty state with the read model's limits.
    pub(crate) fn new(limits: ReadLimits) -> Self {
        LocalState {
            read_model: Arc::new(ReadModel::new(limits)),
            clock: Arc::new(SessionClock::new()),
            checks: Arc::new(CheckTable::new()),
        }
    }

    /// Replaces everything with the registry's (a restore or an installed snapshot), granting
    /// every session and lock-delay a full term from now.
    pub(crate) fn reset(&self, registry: &Registry) {
        self.read_model.reset(registry);
        self.clock.reset(registry.sessions().values().filter(|s| !s.options.no_expiry).map(|s| (s.id, s.ttl)));
        self.clock.reset_delays(registry.lock_delays().into_iter());
        self.checks.reset(registry);
    }

    /// Takes in what one batch of commands did (`registry` is the state after it).
    pub(crate) fn publish(&self, registry: &Registry, effects: &[Effect]) {
        for effect in effects {
            match effect {
                Effect::SessionOpened { session, ttl, options, .. } => {
                    if !options.no_expiry {
                        self.clock.track(*session, *ttl);
                    }
                }
                Effect::SessionClosed { session } => self.clock.forget(*session),
                Effect::LockDelayStarted { target, ms } => self.clock.track_delay(target.clone(), *ms),
                Effect::LockDelayLifted { target } => self.clock.forget_delay(target),
                Effect::InstanceUpserted { .. }
                | Effect::InstanceRemoved { .. }
                | Effect::KvChanged { .. }
                | Effect::LockChanged { .. }
                | Effect::AclChanged { .. } => {}
            }
        }
        self.checks.observe(effects);
        self.read_model.publish(registry, effects);
    }
}
