//! Locks and semaphores from the SDK: `client.lock(name).acquire().await` → a [`LockGuard`]
//! with its fencing token and a future that resolves if the lock is lost.

use std::time::Duration;

use waggle_core::{Guard, SessionId};
use waggle_proto::v1::{self, lock_client::LockClient};

use crate::{Client, Error, failover::Failover, rpc::with_timeout};

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

    /// Waits in line (FIFO) until granted. Each call to the server waits a while; between
    /// calls this client keeps its place in line.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        loop {
            if let Some(guard) = self.request(WAIT_PER_CALL, true).await? {
                return Ok(guard);
            }
        }
    }

    /// One attempt, no waiting: `None` if taken.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        self.acquire_for(Duration::ZERO).await
    }

    /// Waits in line for at most `wait`: `None` if not granted by then (and out of line).
    pub async fn acquire_for(&self, wait: Duration) -> Result<Option<LockGuard>, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // The server waits at most 10 minutes per call; keep the place until the last one.
            let last = left <= WAIT_PER_CALL;
            if let Some(guard) = self.request(left.min(WAIT_PER_CALL), !last).await? {
                return Ok(Some(guard));
            }
            if last {
                return Ok(None);
            }
        }
    }

    async fn request(&self, wait: Duration, keep_waiting: bool) -> Result<Option<LockGuard>, Error> {
        waggle_core::check_lock(&self.name, self.limit, &self.value)?;
        let session = self.client.ensure_session().await?;
        let req = v1::AcquireRequest {
            name: self.name.clone(),
            session_id: session.get(),
            limit: self.limit,
            wait_ms: wait.as_millis() as u64,
            value: self.value.clone(),
            keep_waiting,
        };
        let timeout = wait + self.client.config().request_timeout;
        let resp = with_timeout(timeout, self.rpc.clone().acquire(req)).await?;
        Ok(resp.acquired.then(|| LockGuard {
            handle: self.clone(),
            session,
            token: resp.token,
            revision: resp.revision,
        }))
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
    /// The revision the grant was answered at: older views of the lock are ignored.
    revision: u64,
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

    /// Resolves when this grant may no longer be held: the client's session was lost (the
    /// server released everything it held), the server has not confirmed the session for a
    /// whole TTL (cut off from the leader, which may have expired it and granted the lock to
    /// someone else), or the lock moved on.
    pub async fn lost(&self) {
        let client = &self.handle.client;
        let mut sessions = client.session_changes();
        let mut renewals = client.session_renewals();
        let ttl = client.config().session_ttl.as_duration();
        let gone = async {
            tokio::select! {
                () = session_lost(&mut sessions, self.session) => {}
                () = renewal_overdue(&mut renewals, ttl) => {}
            }
        };
        tokio::pin!(gone);
        loop {
            let mut rpc = self.handle.rpc.clone();
            let observe = rpc.observe(v1::InspectRequest { name: self.handle.name.clone() });
            let mut stream = tokio::select! {
                opened = observe => opened.ok().map(tonic::Response::into_inner),
                () = &mut gone => return,
            };
            while let Some(s) = stream.as_mut() {
                tokio::select! {
                    message = s.message() => match message {
                        // A member that has not applied the grant yet says nothing about it.
                        Ok(Some(status)) if status.revision < self.revision => {}
                        Ok(Some(status)) => {
                            if !status.holders.iter().any(|h| h.session_id == self.session.get() && h.token == self.token) {
                                return;
                            }
                        }
                        // The stream broke (server unreachable): observe again.
                        _ => stream = None,
                    },
                    () = &mut gone => return,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = &mut gone => return,
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

/// Resolves once the server has not confirmed the session for `ttl`.
async fn renewal_overdue(renewals: &mut tokio::sync::watch::Receiver<tokio::time::Instant>, ttl: Duration) {
    loop {
        let last = *renewals.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep_until(last + ttl) => return,
            changed = renewals.changed() => if changed.is_err() { return },
        }
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
