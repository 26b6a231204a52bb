//! The `waggle.v1.Lock` gRPC service: acquire (try, or wait in FIFO order up to a deadline),
//! release, inspect and observe. Grants are decided in the state machine; a waiting acquire
//! follows the watch hub's copy of the lock until its session is granted.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures_util::Stream;
use tonic::{Request, Response, Status};
use waggle_core::{Command, LockOutcome, LockState, Revision, SessionId};
use waggle_proto::v1::{self, lock_server::Lock};

use crate::{consensus::Consensus, watch::WatchHub};

/// The longest an acquire waits in one call (clients call again to wait longer).
const MAX_WAIT: Duration = Duration::from_secs(600);

pub(crate) struct LockService {
    pub(crate) consensus: Arc<Consensus>,
    pub(crate) hub: Arc<WatchHub>,
    /// Ends open observations when the server stops.
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

fn status(revision: Revision, state: Option<&LockState>) -> v1::LockStatus {
    v1::LockStatus {
        revision: revision.get(),
        limit: state.map_or(0, |s| s.limit),
        holders: state
            .iter()
            .flat_map(|s| &s.holders)
            .map(|h| v1::LockHolder { session_id: h.session.get(), token: h.token, value: h.value.to_vec() })
            .collect(),
        waiters: state.iter().flat_map(|s| &s.waiters).map(|w| w.session.get()).collect(),
    }
}

fn acquired(token: u64, revision: u64) -> Response<v1::AcquireResponse> {
    Response::new(v1::AcquireResponse { acquired: true, token, revision })
}

/// Gives up a wait if the acquire is dropped (the client went away): a grant that arrives
/// for a request nobody answers would otherwise be held by a session that does not know it.
struct AbandonGuard {
    consensus: Arc<Consensus>,
    lock: String,
    session: SessionId,
    armed: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            let consensus = self.consensus.clone();
            let command = Command::LockRelease { lock: self.lock.clone(), session: self.session, waiting_only: false };
            tokio::spawn(async move {
                if let Err(e) = consensus.propose(command).await {
                    tracing::debug!("giving up an abandoned lock wait failed: {e}");
                }
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn acquire(&self, request: Request<v1::AcquireRequest>) -> Result<Response<v1::AcquireResponse>, Status> {
        let req = request.into_inner();
        let limit = req.limit.max(1);
        waggle_core::check_lock(&req.name, limit, &req.value)
            .map_err(|e| Status::invalid_argument(format!("invalid request: {e}")))?;
        if req.session_id == 0 {
            return Err(Status::invalid_argument("invalid request: session_id is required"));
        }
        let session = SessionId::new(req.session_id);
        let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
        let command =
            Command::LockAcquire { lock: req.name.clone(), session, limit, wait: !wait.is_zero(), value: req.value };
        let applied = self.consensus.propose(command).await?;
        match applied.lock {
            Some(LockOutcome::Held { token }) => return Ok(acquired(token, applied.revision.get())),
            Some(LockOutcome::Waiting { .. }) => {}
            _ => {
                return Ok(Response::new(v1::AcquireResponse {
                    acquired: false,
                    token: 0,
                    revision: applied.revision.get(),
                }));
            }
        }
        let mut guard =
            AbandonGuard { consensus: self.consensus.clone(), lock: req.name.clone(), session, armed: true };
        let deadline = tokio::time::Instant::now() + wait;
        // Wait until this member has applied the queueing, then follow the lock; a member that
        // cannot catch up in time goes straight to the end (its view would be stale).
        let caught_up = tokio::time::timeout_at(deadline, self.hub.applied(applied.revision)).await.is_ok();
        if caught_up {
            // Woken when this lock changes, not on every write.
            let mut signal = self.hub.lock_signal(&req.name);
            loop {
                let (revision, state) = self.hub.lock(&req.name);
                if let Some(held) = state.as_ref().and_then(|s| s.held_by(session)) {
                    guard.armed = false;
                    return Ok(acquired(held.token, revision.get()));
                }
                if !state.as_ref().is_some_and(|s| s.waiters.iter().any(|w| w.session == session)) {
                    // No longer in line: its session ended, or it was released meanwhile.
                    guard.armed = false;
                    return Ok(Response::new(v1::AcquireResponse {
                        acquired: false,
                        token: 0,
                        revision: revision.get(),
                    }));
                }
                if !matches!(tokio::time::timeout_at(deadline, signal.changed()).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
        if req.keep_waiting {
            // The client asks again and keeps its place in line.
            guard.armed = false;
            let (revision, state) = self.hub.lock(&req.name);
            return Ok(match state.as_ref().and_then(|s| s.held_by(session)) {
                Some(held) => acquired(held.token, revision.get()),
                None => Response::new(v1::AcquireResponse { acquired: false, token: 0, revision: revision.get() }),
            });
        }
        // Out of time: leave the line, unless the grant came first. The guard stays armed
        // until the give-up is answered, so a failed or cancelled give-up is retried on drop.
        let give_up = Command::LockRelease { lock: req.name.clone(), session, waiting_only: true };
        let applied = self.consensus.propose(give_up).await?;
        guard.armed = false;
        Ok(match applied.lock {
            Some(LockOutcome::Held { token }) => acquired(token, applied.revision.get()),
            _ => Response::new(v1::AcquireResponse { acquired: false, token: 0, revision: applied.revision.get() }),
        })
    }

    async fn release(&self, request: Request<v1::ReleaseRequest>) -> Result<Response<v1::ReleaseResponse>, Status> {
        let req = request.into_inner();
        waggle_core::check_key(&req.name).map_err(|e| Status::invalid_argument(format!("invalid lock: {e}")))?;
        let command =
            Command::LockRelease { lock: req.name, session: SessionId::new(req.session_id), waiting_only: false };
        let applied = self.consensus.propose(command).await?;
        Ok(Response::new(v1::ReleaseResponse { revision: applied.revision.get() }))
    }

    async fn proclaim(&self, request: Request<v1::ProclaimRequest>) -> Result<Response<v1::ReleaseResponse>, Status> {
        let req = request.into_inner();
        waggle_core::check_lock(&req.name, 1, &req.value)
            .map_err(|e| Status::invalid_argument(format!("invalid request: {e}")))?;
        let command = Command::LockProclaim {
            lock: req.name,
            session: SessionId::new(req.session_id),
            token: req.token,
            value: req.value,
        };
        let applied = self.consensus.propose(command).await?;
        Ok(Response::new(v1::ReleaseResponse { revision: applied.revision.get() }))
    }

    async fn inspect(&self, request: Request<v1::InspectRequest>) -> Result<Response<v1::LockStatus>, Status> {
        let name = &request.get_ref().name;
        waggle_core::check_key(name).map_err(|e| Status::invalid_argument(format!("invalid lock: {e}")))?;
        let (revision, state) = self.hub.lock(name);
        Ok(Response::new(status(revision, state.as_deref())))
    }

    type ObserveStream = Pin<Box<dyn Stream<Item = Result<v1::LockStatus, Status>> + Send>>;

    async fn observe(&self, request: Request<v1::InspectRequest>) -> Result<Response<Self::ObserveStream>, Status> {
        let name = request.into_inner().name;
        waggle_core::check_key(&name).map_err(|e| Status::invalid_argument(format!("invalid lock: {e}")))?;
        let hub = self.hub.clone();
        let shutdown = self.shutdown.clone();
        // The state now, then whenever it changes (compared by value: other writes move the
        // revision without touching this lock).
        let signal = hub.lock_signal(&name);
        let start = (hub, name, shutdown, signal, None::<Option<Arc<LockState>>>);
        let stream = futures_util::stream::unfold(start, |(hub, name, shutdown, mut signal, last)| async move {
            loop {
                let (revision, state) = hub.lock(&name);
                if last.as_ref() != Some(&state) {
                    let message = status(revision, state.as_deref());
                    return Some((Ok(message), (hub, name, shutdown, signal, Some(state))));
                }
                tokio::select! {
                    changed = signal.changed() => if changed.is_err() { return None },
                    () = shutdown.cancelled() => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
