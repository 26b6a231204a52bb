//! Locks and semaphores from the SDK: `client.lock(name).acquire().await` → a [`LockGuard`]
//! with its fencing token and a future that resolves if the lock is lost.

use std::time::Duration;

use waggle_core::{Guard, SessionId};
use waggle_proto::v1::{self, lock_client::LockClient};

use crate::{Client, Error, client::with_timeout, failover::Failover};

/// How long one acquire call waits in line before asking again.
const WAIT_PER_CALL: Duration = Duration::from_secs(30);

/// A lock (or semaphore) by name; see [`Client::lock`] and [`Client::semaphore`].
#[derive(Clone)]
pub struct LockHandle {
    client: Client,
    rpc: LockClient<Failover>,
    name: String,
    limit: u32,
    value: Vec<u8>,
}

impl Client {
    /// A mutex owned by this client's session: released when the session ends.
    pub fn lock(&self, name: &str) -> LockHandle {
        self.semaphore(name, 1)
    }

    /// A semaphore admitting `limit` holders at once (every acquirer must use the same limit).
    pub fn semaphore(&self, name: &str, limit: u32) -> LockHandle {
        LockHandle {
            client: self.clone(),
            rpc: LockClient::new(self.failover()),
            name: name.to_owned(),
            limit,
            value: Vec::new(),
        }
    }
}

impl LockHandle {
    /// Attaches a value to the grant (what observers see; an election's proclamation).
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// Waits in line (FIFO) until granted.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        loop {
            if let Some(guard) = self.acquire_for(WAIT_PER_CALL).await? {
                return Ok(guard);
            }
        }
    }

    /// One attempt, no waiting: `None` if taken.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        self.acquire_for(Duration::ZERO).await
    }

    /// Waits in line for at most `wait`: `None` if not granted by then.
    pub async fn acquire_for(&self, wait: Duration) -> Result<Option<LockGuard>, Error> {
        waggle_core::check_lock(&self.name, self.limit, &self.value)?;
        let session = self.client.ensure_session().await?;
        let req = v1::AcquireRequest {
            name: self.name.clone(),
            session_id: session.get(),
            limit: self.limit,
            wait_ms: wait.as_millis() as u64,
            value: self.value.clone(),
        };
        let timeout = wait + self.client.config().request_timeout;
        let resp = with_timeout(timeout, self.rpc.clone().acquire(req)).await?;
        Ok(resp.acquired.then(|| LockGuard { handle: self.clone(), session, token: resp.token }))
    }

    /// The holders (session, token, value) now.
    pub async fn holders(&self) -> Result<Vec<(SessionId, u64, Vec<u8>)>, Error> {
        let status = self.status().await?;
        Ok(status.holders.into_iter().map(|h| (SessionId::new(h.session_id), h.token, h.value)).collect())
    }

    pub(crate) async fn status(&self) -> Result<v1::LockStatus, Error> {
        waggle_core::check_key(&self.name)?;
        let req = v1::InspectRequest { name: self.name.clone() };
        self.client.call(self.rpc.clone().inspect(req)).await
    }

    pub(crate) async fn observe(&self) -> Result<tonic::Streaming<v1::LockStatus>, Error> {
        waggle_core::check_key(&self.name)?;
        let req = v1::InspectRequest { name: self.name.clone() };
        self.client.call(self.rpc.clone().observe(req)).await
    }
}

/// A held lock. Write through its [`LockGuard::guard`] to be fenced: the server refuses the
/// write once the lock has moved on. Dropping it does not release the lock (that needs the
/// server): call [`LockGuard::release`], or it goes when the client's session ends.
pub struct LockGuard {
    handle: LockHandle,
    session: SessionId,
    token: u64,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("lock", &self.handle.name).field("token", &self.token).finish()
    }
}

impl LockGuard {
    /// The fencing token: the revision of the grant (larger for every later grant).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The session holding it.
    pub fn session(&self) -> SessionId {
        self.session
    }

    /// The fencing check to attach to KV writes made under this lock.
    pub fn guard(&self) -> Guard {
        Guard { lock: self.handle.name.clone(), token: self.token }
    }

    /// Resolves when this grant is no longer held: the client's session was lost (the server
    /// released everything it held) or the lock moved on.
    pub async fn lost(&self) {
        let mut sessions = self.handle.client.session_changes();
        loop {
            let mut rpc = self.handle.rpc.clone();
            let observe = rpc.observe(v1::InspectRequest { name: self.handle.name.clone() });
            let mut stream = tokio::select! {
                opened = observe => opened.ok().map(tonic::Response::into_inner),
                _ = session_lost(&mut sessions, self.session) => return,
            };
            while let Some(s) = stream.as_mut() {
                tokio::select! {
                    message = s.message() => match message {
                        Ok(Some(status)) => {
                            if !status.holders.iter().any(|h| h.session_id == self.session.get() && h.token == self.token) {
                                return;
                            }
                        }
                        // The stream broke (server unreachable): observe again.
                        _ => stream = None,
                    },
                    _ = session_lost(&mut sessions, self.session) => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = session_lost(&mut sessions, self.session) => return,
            }
        }
    }

    pub(crate) async fn proclaim(&self, value: Vec<u8>) -> Result<(), Error> {
        let req = v1::ProclaimRequest {
            name: self.handle.name.clone(),
            session_id: self.session.get(),
            token: self.token,
            value,
        };
        self.handle.client.call(self.handle.rpc.clone().proclaim(req)).await?;
        Ok(())
    }

    /// Releases the lock (the next waiter is granted at once).
    pub async fn release(self) -> Result<(), Error> {
        let req = v1::ReleaseRequest { name: self.handle.name.clone(), session_id: self.session.get() };
        self.handle.client.call(self.handle.rpc.clone().release(req)).await?;
        Ok(())
    }
}

/// Resolves once the client's session is no longer `session`.
async fn session_lost(sessions: &mut tokio::sync::watch::Receiver<Option<SessionId>>, session: SessionId) {
    loop {
        if *sessions.borrow_and_update() != Some(session) {
            return;
        }
        if sessions.changed().await.is_err() {
            return;
        }
    }
}
