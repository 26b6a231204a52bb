//! Leader election on a lock: `client.election(name).campaign(value)` blocks until this client
//! leads; the leader's term is its fencing token, so every later leader has a larger one.

use futures_util::{Stream, StreamExt};
use waggle_core::SessionId;
use waggle_proto::v1;

use crate::{Client, Error, LockGuard, LockHandle};

/// A named election; see [`Client::election`].
#[derive(Clone)]
pub struct Election {
    handle: LockHandle,
}

/// Who leads an election.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's session.
    pub session: SessionId,
    /// Its term: the fencing token of its grant.
    pub term: u64,
    /// What it proclaimed.
    pub value: Vec<u8>,
}

/// This client's leadership, from a won campaign.
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Client {
    /// The election `name` (a lock underneath: campaigning queues in FIFO order).
    pub fn election(&self, name: &str) -> Election {
        Election { handle: self.lock(name) }
    }
}

fn leader_of(status: &v1::LockStatus) -> Option<Leader> {
    status.holders.first().map(|h| Leader {
        session: SessionId::new(h.session_id),
        term: h.token,
        value: h.value.clone(),
    })
}

impl Election {
    /// Campaigns with `value`: returns once this client leads.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership, Error> {
        let guard = self.handle.clone().with_value(value).acquire().await?;
        Ok(Leadership { guard })
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Leader>, Error> {
        Ok(leader_of(&self.handle.status().await?))
    }

    /// The leader now, then every change of leader, term or proclaimed value.
    pub async fn observe(&self) -> Result<impl Stream<Item = Result<Option<Leader>, Error>> + use<>, Error> {
        let stream = self.handle.observe().await?;
        let mut last: Option<Option<Leader>> = None;
        Ok(stream.filter_map(move |status| {
            let item = match status {
                Ok(status) => {
                    let leader = leader_of(&status);
                    if last.as_ref() == Some(&leader) {
                        None
                    } else {
                        last = Some(leader.clone());
                        Some(Ok(leader))
                    }
                }
                Err(e) => Some(Err(Error::Rpc(e))),
            };
            std::future::ready(item)
        }))
    }
}

impl Leadership {
    /// The term: larger for every later leader (use [`Leadership::guard`] to fence writes).
    pub fn term(&self) -> u64 {
        self.guard.token()
    }

    /// The fencing check for KV writes made as leader.
    pub fn guard(&self) -> waggle_core::Guard {
        self.guard.guard()
    }

    /// Replaces the proclaimed value (observers see it).
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<(), Error> {
        self.guard.proclaim(value.into()).await
    }

    /// Resolves when this client no longer leads (session lost, or deposed).
    pub async fn lost(&self) {
        self.guard.lost().await;
    }

    /// Steps down: the next candidate in line leads at once.
    pub async fn resign(self) -> Result<(), Error> {
        self.guard.release().await
    }
}
