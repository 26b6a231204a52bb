//! Session use cases: open (under a random id), renew (where the deadline lives) and revoke.

use waggle_core::{Applied, Command, Revision, SessionId, SessionOptions, Ttl};

use waggle_core::acl::{Access, Resource};

use super::{Caller, Node, NodeError};
use crate::consensus::{ProposeError, RefusalKind};

impl Node {
    /// Opens a session under a random id (chosen here, outside the state machine, so ids are
    /// never reused, even across a wiped or restored data dir); a collision is retried.
    pub(crate) async fn open_session(
        &self,
        caller: &Caller,
        ttl: Ttl,
        options: SessionOptions,
    ) -> Result<(SessionId, Revision), NodeError> {
        let mut attempts = 0;
        loop {
            let session = SessionId::new(self.session_ids.next_id());
            let command = Command::CreateSession { session, ttl, options: options.clone() };
            self.precheck(caller, &command)?;
            let command = self.authorized(caller, command);
            match self.consensus.propose(command).await {
                Err(ProposeError::Refused(r)) if r.kind == RefusalKind::Conflict && attempts < 3 => attempts += 1,
                Ok(Applied::SessionCreated { revision, session }) => return Ok((session, revision)),
                Ok(_) => return Err(NodeError::Unavailable("the session was not created".into())),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Renews a session: its TTL in ms, or `None` if it is unknown where its deadline lives
    /// (the leader, asked from here if this member does not lead).
    pub(crate) async fn renew_session(&self, caller: &Caller, session: SessionId) -> Result<Option<u64>, NodeError> {
        let (_, sessions) = self.read_model().sessions();
        let name = sessions.get(&session).map(|s| s.options.name.clone()).unwrap_or_default();
        caller.check(Resource::Session, &name, Access::Write)?;
        Ok(self.leader.renew(session.get()).await?)
    }

    /// Ends a session now: its instances go, its keys are released or deleted, its locks pass on.
    pub(crate) async fn revoke_session(&self, caller: &Caller, session: SessionId) -> Result<Revision, NodeError> {
        Ok(self.write(caller, Command::RevokeSession { session }).await?.revision())
    }
}
