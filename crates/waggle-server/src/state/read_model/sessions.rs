//! The live sessions as readers see them (Consul's `/v1/session` reads, renewals of sessions
//! without a TTL), the agent's own session left out.

use std::sync::Arc;

use waggle_core::{Effect, Registry, SessionId, SessionOptions, Ttl};

use waggle_core::Revision;

/// A live session as readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionView {
    pub(crate) id: SessionId,
    pub(crate) ttl: Ttl,
    pub(crate) options: SessionOptions,
    pub(crate) create_revision: Revision,
}

/// The live sessions by id.
pub(super) type Sessions = imbl::OrdMap<SessionId, Arc<SessionView>>;

/// Takes in the sessions opened and closed by one batch of effects.
pub(super) fn publish(sessions: &mut Sessions, effects: &[Effect]) {
    for effect in effects {
        match effect {
            Effect::SessionOpened { session, ttl, options, revision } => {
                let view =
                    SessionView { id: *session, ttl: *ttl, options: options.clone(), create_revision: *revision };
                sessions.insert(*session, Arc::new(view));
            }
            Effect::SessionClosed { session } => {
                sessions.remove(session);
            }
            _ => {}
        }
    }
}

/// The registry's live sessions.
pub(super) fn of(registry: &Registry) -> Sessions {
    registry
        .sessions()
        .values()
        .filter(|s| s.id != SessionId::AGENT)
        .map(|s| {
            let view =
                SessionView { id: s.id, ttl: s.ttl, options: s.options.clone(), create_revision: s.create_revision };
            (s.id, Arc::new(view))
        })
        .collect()
}
