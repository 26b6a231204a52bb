//! The session keeper: one background task per client that owns the session, keeps it alive
//! (a keepalive every TTL/3 on one stream), reconnects with jittered back-off, and when the
//! session is lost creates a new one and registers every instance again.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::ControlFlow,
};

use futures_util::StreamExt;

use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use waggle_core::{Instance, InstanceId, InstanceSpec, ServiceName, SessionId};
use waggle_proto::v1::{self, registry_client::RegistryClient};

use crate::failover::Failover;
use crate::rpc::{instance_from_wire, with_timeout};
use crate::{Backoff, ClientConfig, Error};

/// Requests from client handles to the keeper.
pub(crate) enum KeeperCmd {
    Register {
        spec: InstanceSpec,
        reply: oneshot::Sender<Result<Instance, Error>>,
    },
    Deregister {
        service: ServiceName,
        id: InstanceId,
        reply: Option<oneshot::Sender<Result<(), Error>>>,
    },
    /// The current session, created if there is none (for locks and session-bound keys).
    Session {
        reply: oneshot::Sender<Result<SessionId, Error>>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// Why the keepalive loop ended.
enum Ended {
    /// The server no longer knows the session: make a new one.
    SessionLost,
    /// The stream broke: reconnect after a back-off, keeping the session.
    Disconnected,
    /// The session changed underneath (re-established by a command): reopen the stream.
    Restart,
}

type Key = (ServiceName, InstanceId);

pub(crate) struct Keeper {
    rpc: RegistryClient<Failover>,
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<KeeperCmd>,
    session: Option<SessionId>,
    session_tx: watch::Sender<Option<SessionId>>,
    /// When the server last confirmed the session (created or renewed): a session not
    /// confirmed for a whole TTL may have expired on the leader, whatever this client thinks.
    renewed: watch::Sender<Instant>,
    registered: BTreeMap<Key, InstanceSpec>,
    /// Deregistrations that failed (server unreachable): retried after every reconnect, so an
    /// instance the application gave up is never kept alive by our session.
    unregistered: BTreeSet<Key>,
    backoff: Backoff,
}

/// Re-registrations in flight at once after a session loss.
const REREGISTER_CONCURRENCY: usize = 32;

impl Keeper {
    pub(crate) fn new(
        rpc: RegistryClient<Failover>,
        config: ClientConfig,
        commands: mpsc::UnboundedReceiver<KeeperCmd>,
        session_tx: watch::Sender<Option<SessionId>>,
        renewed: watch::Sender<Instant>,
    ) -> Self {
        let backoff = config.backoff();
        Keeper {
            rpc,
            config,
            commands,
            session: None,
            session_tx,
            renewed,
            registered: BTreeMap::new(),
            unregistered: BTreeSet::new(),
            backoff,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            if self.session.is_none() && self.registered.is_empty() {
                // Nothing to keep alive: wait for work.
                match self.commands.recv().await {
                    Some(cmd) => {
                        if self.handle(cmd).await.is_break() {
                            return;
                        }
                    }
                    None => return self.close().await,
                }
                continue;
            }
            if self.session.is_none()
                && let Err(e) = self.establish().await
            {
                tracing::warn!("cannot establish a session: {e}");
                if self.pause().await.is_break() {
                    return;
                }
                continue;
            }
            let Some(session) = self.session else {
                continue;
            };
            match self.keep_alive(session).await {
                ControlFlow::Break(()) => return,
                ControlFlow::Continue(Ended::Restart) => {}
                ControlFlow::Continue(Ended::SessionLost) => {
                    tracing::warn!(%session, "session lost; creating a new one and registering again");
                    self.set_session(None);
                }
                ControlFlow::Continue(Ended::Disconnected) => {
                    if self.pause().await.is_break() {
                        return;
                    }
                }
            }
        }
    }

    fn set_session(&mut self, session: Option<SessionId>) {
        self.session = session;
        if session.is_some() {
            self.renewed.send_replace(Instant::now());
        }
        self.session_tx.send_replace(session);
    }

    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, Error> {
        with_timeout(self.config.request_timeout, call).await
    }

    /// Creates a session and registers every known instance under it.
    async fn establish(&mut self) -> Result<SessionId, Error> {
        let lock_delay_ms = self.config.lock_delay_ms();
        let req = v1::CreateSessionRequest {
            ttl_ms: Some(self.config.session_ttl.as_millis()),
            lock_delay_ms: (lock_delay_ms > 0).then_some(lock_delay_ms),
        };
        let resp = self.call(self.rpc.clone().create_session(req)).await?;
        let session = SessionId::new(resp.session_id);
        self.set_session(Some(session));
        tracing::debug!(%session, "session created");
        // Concurrently, so that many instances are back well within one TTL.
        let specs: Vec<InstanceSpec> = self.registered.values().cloned().collect();
        let this = &*self;
        let results: Vec<(InstanceSpec, Result<Instance, Error>)> = futures_util::stream::iter(specs)
            .map(|spec| async move {
                let result = this.register_rpc(session, &spec).await;
                (spec, result)
            })
            .buffer_unordered(REREGISTER_CONCURRENCY)
            .collect()
            .await;
        for (spec, result) in results {
            match result {
                Ok(_) => {}
                Err(e) if e.code() == Some(tonic::Code::NotFound) => {
                    self.set_session(None);
                    return Err(e);
                }
                Err(e) if e.code() == Some(tonic::Code::InvalidArgument) => {
                    tracing::error!(service = %spec.service, id = %spec.id, "dropping registration: {e}");
                    self.registered.remove(&(spec.service.clone(), spec.id.clone()));
                }
                Err(e) => return Err(e),
            }
        }
        self.backoff.reset();
        Ok(session)
    }

    async fn register_rpc(&self, session: SessionId, spec: &InstanceSpec) -> Result<Instance, Error> {
        let mut wire = waggle_proto::instance_from_core(&Instance {
            spec: spec.clone(),
            session,
            create_revision: waggle_core::Revision::INITIAL,
            modify_revision: waggle_core::Revision::INITIAL,
            checks: Vec::new(),
        });
        wire.session_id = 0;
        wire.create_revision = 0;
        wire.modify_revision = 0;
        let req = v1::RegisterRequest { session_id: session.get(), instance: Some(wire) };
        let resp = self.call(self.rpc.clone().register(req)).await?;
        let instance = resp.instance.ok_or_else(|| Error::Protocol("register returned no instance".into()))?;
        instance_from_wire(&instance)
    }

    async fn register(&mut self, spec: InstanceSpec) -> Result<Instance, Error> {
        let session = match self.session {
            Some(s) => s,
            None => self.establish().await?,
        };
        let result = match self.register_rpc(session, &spec).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {
                // The session expired while we were not looking: start a new one, once.
                self.set_session(None);
                let session = self.establish().await?;
                self.register_rpc(session, &spec).await
            }
            other => other,
        };
        if result.is_ok() {
            let key = (spec.service.clone(), spec.id.clone());
            self.unregistered.remove(&key);
            self.registered.insert(key, spec);
        }
        result
    }

    async fn handle(&mut self, cmd: KeeperCmd) -> ControlFlow<()> {
        match cmd {
            KeeperCmd::Register { spec, reply } => {
                let result = self.register(spec).await;
                let _ = reply.send(result);
            }
            KeeperCmd::Deregister { service, id, reply } => {
                let key = (service.clone(), id.clone());
                self.registered.remove(&key);
                let result = self.deregister_rpc(&key).await;
                if let Err(e) = &result
                    && !matches!(e.code(), Some(tonic::Code::NotFound | tonic::Code::InvalidArgument))
                {
                    // Unreachable: retry after reconnecting (the instance must not outlive us).
                    self.unregistered.insert(key);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                } else if let Err(e) = result {
                    tracing::debug!(%service, %id, "best-effort deregistration failed: {e}");
                }
            }
            KeeperCmd::Session { reply } => {
                let result = match self.session {
                    Some(s) => Ok(s),
                    None => self.establish().await,
                };
                let _ = reply.send(result);
            }
            KeeperCmd::Shutdown { reply } => {
                self.close().await;
                let _ = reply.send(());
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    async fn deregister_rpc(&self, (service, id): &Key) -> Result<(), Error> {
        let req = v1::DeregisterRequest { service: service.to_string(), id: id.to_string() };
        self.call(self.rpc.clone().deregister(req)).await.map(|_| ())
    }

    /// Retries deregistrations that failed while the server was unreachable.
    async fn retry_deregistrations(&mut self) {
        let keys: Vec<Key> = self.unregistered.iter().cloned().collect();
        for key in keys {
            match self.deregister_rpc(&key).await {
                Ok(()) => {}
                Err(e) if matches!(e.code(), Some(tonic::Code::NotFound | tonic::Code::InvalidArgument)) => {}
                Err(_) => continue,
            }
            self.unregistered.remove(&key);
        }
    }

    /// Revokes the session, if any (best effort).
    async fn close(&mut self) {
        self.registered.clear();
        self.unregistered.clear();
        if let Some(session) = self.session.take() {
            let req = v1::RevokeSessionRequest { session_id: session.get() };
            if let Err(e) = self.call(self.rpc.clone().revoke_session(req)).await {
                tracing::debug!(%session, "revoking the session failed: {e}");
            }
            self.session_tx.send_replace(None);
        }
    }

    /// Waits one back-off delay while still serving commands.
    async fn pause(&mut self) -> ControlFlow<()> {
        // Never wait longer than a keepalive period: after a server restart the session has one
        // TTL of grace, and reconnecting late would waste it.
        let delay = self.backoff.next_delay().min(self.config.session_ttl.as_duration() / 3);
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return ControlFlow::Continue(()),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await?,
                    None => {
                        self.close().await;
                        return ControlFlow::Break(());
                    }
                },
            }
        }
    }

    /// Sends a keepalive every TTL/3 on one stream until something ends it.
    async fn keep_alive(&mut self, session: SessionId) -> ControlFlow<(), Ended> {
        let ttl = self.config.session_ttl.as_duration();
        let period = ttl / 3;
        let (tx, rx) = mpsc::channel(4);
        let ping = v1::KeepAliveRequest { session_id: session.get() };
        let _ = tx.try_send(ping);
        let mut rpc = self.rpc.clone();
        let opened = tokio::time::timeout(self.config.connect_timeout, rpc.keep_alive(ReceiverStream::new(rx))).await;
        let mut stream = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!("keepalive stream refused: {status}");
                return ControlFlow::Continue(Ended::Disconnected);
            }
            Err(_) => return ControlFlow::Continue(Ended::Disconnected),
        };
        let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
        // Without an answer for a whole TTL the server is gone (or hung): reconnect.
        let mut answered_by = Instant::now() + ttl;
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if tx.send(ping).await.is_err() {
                        return ControlFlow::Continue(Ended::Disconnected);
                    }
                }
                _ = tokio::time::sleep_until(answered_by) => {
                    tracing::warn!(%session, "no keepalive answer within the TTL; reconnecting");
                    return ControlFlow::Continue(Ended::Disconnected);
                }
                msg = stream.message() => match msg {
                    Ok(Some(resp)) if resp.found => {
                        self.backoff.reset();
                        answered_by = Instant::now() + ttl;
                        self.renewed.send_replace(Instant::now());
                        if !self.unregistered.is_empty() {
                            self.retry_deregistrations().await;
                        }
                    }
                    Ok(Some(_)) => return ControlFlow::Continue(Ended::SessionLost),
                    Ok(None) | Err(_) => return ControlFlow::Continue(Ended::Disconnected),
                },
                cmd = self.commands.recv() => {
                    match cmd {
                        Some(cmd) => self.handle(cmd).await?,
                        None => {
                            self.close().await;
                            return ControlFlow::Break(());
                        }
                    }
                    if self.session != Some(session) {
                        return ControlFlow::Continue(Ended::Restart);
                    }
                }
            }
        }
    }
}
