//! The native gRPC API (`waggle.v1.Registry`).

use std::{collections::VecDeque, pin::Pin, sync::Arc};

use futures_util::{Stream, StreamExt};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use waggle_core::{Command, HealthStatus, InstanceId, Revision, ServiceName, SessionId, Ttl, ValidationError};
use waggle_proto::{instance_from_core, spec_from_wire, v1};

use crate::{
    consensus::{Consensus, MembershipChange, RefusalKind},
    error::ProposeError,
    sessions::SessionClock,
    watch::{Batch, ChangeKind, Start, WatchHub},
};

/// Keepalive answers queued per stream before the sender waits for the client.
const STREAM_BUFFER: usize = 16;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The `Registry` service.
pub(crate) struct RegistryService {
    pub(crate) consensus: Arc<Consensus>,
    pub(crate) hub: Arc<WatchHub>,
    pub(crate) clock: Arc<SessionClock>,
    pub(crate) session_ids: Arc<SessionIds>,
    pub(crate) shutdown: CancellationToken,
}

/// Opens a session under a random id (chosen here, outside the state machine, so ids are never
/// reused, even across a wiped or restored data dir); a collision is refused and retried.
pub(crate) async fn open_session(
    consensus: &Consensus,
    ids: &SessionIds,
    ttl: Ttl,
    options: waggle_core::SessionOptions,
) -> Result<waggle_core::Applied, ProposeError> {
    let mut attempts = 0;
    loop {
        let command = Command::CreateSession { session: ids.next(), ttl, options: options.clone() };
        match consensus.propose(command).await {
            Err(ProposeError::Refused(r)) if r.kind == RefusalKind::Conflict && attempts < 3 => attempts += 1,
            other => return other,
        }
    }
}

/// Draws random, non-zero session ids.
pub(crate) struct SessionIds(std::sync::Mutex<rand::rngs::SmallRng>);

impl SessionIds {
    /// Seeded for reproducible tests, or from the OS.
    pub(crate) fn new(seed: Option<u64>) -> Self {
        use rand::SeedableRng;
        let rng = match seed {
            Some(s) => rand::rngs::SmallRng::seed_from_u64(s),
            None => rand::rngs::SmallRng::from_os_rng(),
        };
        SessionIds(std::sync::Mutex::new(rng))
    }

    fn next(&self) -> SessionId {
        SessionId::new(self.next_id())
    }

    /// A random id, never 0.
    pub(crate) fn next_id(&self) -> u64 {
        use rand::Rng;
        let mut rng = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        rng.random_range(1..=u64::MAX)
    }
}

fn invalid(e: ValidationError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn session_id(raw: u64) -> Result<SessionId, Status> {
    if raw == 0 {
        return Err(Status::invalid_argument("invalid session_id: required (create a session first)"));
    }
    if raw == SessionId::AGENT.get() {
        // Reserved for the Consul-compatible agent API: its instances never expire.
        return Err(Status::invalid_argument("invalid session_id: reserved for the agent API"));
    }
    Ok(SessionId::new(raw))
}

/// A batch as a watch message. The event is encoded once per batch and shared by every
/// watcher of the topic (zero-copy fan-out).
fn deltas_message(batch: &Batch) -> v1::WatchResponse {
    let encoded = batch.wire.get_or_init(|| {
        let deltas = batch
            .changes
            .iter()
            .map(|c| v1::Delta {
                kind: match c.kind {
                    ChangeKind::Added => v1::DeltaKind::Added,
                    ChangeKind::Updated => v1::DeltaKind::Updated,
                    ChangeKind::Removed => v1::DeltaKind::Removed,
                } as i32,
                instance: Some(instance_from_core(&c.instance)),
            })
            .collect();
        let event = v1::watch_response::Event::Deltas(v1::Deltas { revision: batch.revision.get(), deltas });
        waggle_proto::EncodedEvent::encode(&event)
    });
    v1::WatchResponse::pre_encoded(encoded.clone())
}

/// Target size of one snapshot message; instances are at most ~20 KiB, so no message comes
/// near gRPC's usual 4 MiB limit.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A snapshot as one or more messages (see `Snapshot.continued`).
fn snapshot_messages(revision: Revision, instances: &[Arc<waggle_core::Instance>]) -> Vec<v1::WatchResponse> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for instance in instances {
        let wire = instance_from_core(instance);
        let len = prost::Message::encoded_len(&wire);
        if size + len > SNAPSHOT_CHUNK_BYTES && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(chunk) = chunks.last_mut() {
            chunk.push(wire);
        }
    }
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(idx, instances)| {
            v1::WatchResponse::new(v1::watch_response::Event::Snapshot(v1::Snapshot {
                revision: revision.get(),
                instances,
                continued: idx + 1 < n,
            }))
        })
        .collect()
}

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryService {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::CreateSessionResponse>, Status> {
        let ttl = match request.get_ref().ttl_ms {
            Some(ms) => Ttl::from_millis(ms).map_err(invalid)?,
            None => Ttl::DEFAULT,
        };
        let options = waggle_core::SessionOptions {
            lock_delay_ms: request.get_ref().lock_delay_ms.unwrap_or(0),
            ..Default::default()
        };
        options.validate().map_err(invalid)?;
        let applied = open_session(&self.consensus, &self.session_ids, ttl, options).await?;
        let session = applied.session.ok_or_else(|| Status::internal("session was not created"))?;
        Ok(Response::new(v1::CreateSessionResponse {
            session_id: session.get(),
            ttl_ms: ttl.as_millis(),
            revision: applied.revision.get(),
        }))
    }

    type KeepAliveStream = BoxStream<v1::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<v1::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // A member that does not lead passes keepalives on to the leader; a single node that
        // does not lead (its Raft core failed) refuses them.
        if !self.consensus.is_leader() && !self.consensus.clustered() {
            return Err(Status::unavailable("this node is not the leader"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let clock = self.clock.clone();
        let consensus = self.consensus.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    msg = inbound.next() => msg,
                };
                let reply = match msg {
                    None => return,
                    Some(Err(_)) => return,
                    Some(Ok(req)) if req.session_id == 0 => {
                        Err(Status::invalid_argument("invalid session_id: required"))
                    }
                    // Only a running leader holds deadlines; a deposed or failed node must not
                    // pretend to renew: a cluster member asks the leader, a lone node refuses.
                    Some(Ok(req)) => match renew(&consensus, &clock, req.session_id).await {
                        Ok(ttl) => Ok(v1::KeepAliveResponse {
                            session_id: req.session_id,
                            found: ttl.is_some(),
                            ttl_ms: ttl.unwrap_or(0),
                        }),
                        Err(_) => {
                            let _ = tx.send(Err(Status::unavailable("this node is not the leader"))).await;
                            return;
                        }
                    },
                };
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn revoke_session(
        &self,
        request: Request<v1::RevokeSessionRequest>,
    ) -> Result<Response<v1::RevokeSessionResponse>, Status> {
        let session = session_id(request.get_ref().session_id)?;
        let applied = self.consensus.propose(Command::RevokeSession { session }).await?;
        Ok(Response::new(v1::RevokeSessionResponse { revision: applied.revision.get() }))
    }

    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let req = request.into_inner();
        let session = session_id(req.session_id)?;
        let wire = req.instance.ok_or_else(|| Status::invalid_argument("invalid instance: required"))?;
        let spec = spec_from_wire(&wire).map_err(invalid)?;
        spec.validate_registration().map_err(invalid)?;
        let (service, id) = (spec.service.clone(), spec.id.clone());
        let applied = self.consensus.propose(Command::Register { session, spec }).await?;
        let (_, instances, _) = self.hub.service(&service);
        Ok(Response::new(v1::RegisterResponse {
            revision: applied.revision.get(),
            instance: instances.get(&id).map(|i| instance_from_core(i)),
        }))
    }

    async fn deregister(
        &self,
        request: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        let req = request.get_ref();
        let service = ServiceName::new(&req.service).map_err(invalid)?;
        let id = InstanceId::new(&req.id).map_err(invalid)?;
        let applied = self.consensus.propose(Command::Deregister { service, id }).await?;
        Ok(Response::new(v1::DeregisterResponse { revision: applied.revision.get() }))
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let req = request.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("id: member ids start at 1"));
        }
        let addr: std::net::SocketAddr = req
            .peer_address
            .parse()
            .map_err(|_| Status::invalid_argument(format!("peer_address: {:?} is not HOST:PORT", req.peer_address)))?;
        let change = MembershipChange::Add { id: req.id, addr: addr.to_string(), learner: req.learner };
        self.consensus.change_membership(change).await?;
        Ok(Response::new(self.member_list().await))
    }

    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let id = request.into_inner().id;
        self.consensus.change_membership(MembershipChange::Remove { id }).await?;
        Ok(Response::new(self.member_list().await))
    }

    type SaveSnapshotStream = BoxStream<v1::SnapshotChunk>;

    async fn save_snapshot(
        &self,
        _request: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let file = self.consensus.backup().await?;
        let chunks: Vec<Result<v1::SnapshotChunk, Status>> =
            file.chunks(1 << 20).map(|chunk| Ok(v1::SnapshotChunk { data: chunk.to_vec() })).collect();
        Ok(Response::new(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn list_members(
        &self,
        _request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        Ok(Response::new(self.member_list().await))
    }

    async fn list_services(
        &self,
        request: Request<v1::ListServicesRequest>,
    ) -> Result<Response<v1::ListServicesResponse>, Status> {
        if request.get_ref().linearizable {
            self.consensus.read_barrier().await?;
        }
        let (revision, services) = self.hub.services();
        let services = services
            .into_iter()
            .map(|(name, instances)| {
                let mut tags: Vec<String> = instances.values().flat_map(|i| i.spec.tags.iter().cloned()).collect();
                tags.sort();
                tags.dedup();
                v1::ServiceSummary {
                    name: name.to_string(),
                    instances: instances.len() as u32,
                    passing: instances.values().filter(|i| i.spec.status == HealthStatus::Passing).count() as u32,
                    tags,
                }
            })
            .collect();
        Ok(Response::new(v1::ListServicesResponse { revision: revision.get(), services }))
    }

    async fn get_service(
        &self,
        request: Request<v1::GetServiceRequest>,
    ) -> Result<Response<waggle_proto::GetServiceResponse>, Status> {
        let req = request.get_ref();
        let service = ServiceName::new(&req.service).map_err(invalid)?;
        if req.linearizable {
            self.consensus.read_barrier().await?;
        }
        // Encoded once per version of the service, then shared by every read.
        let (revision, instances, reads) = self.hub.service(&service);
        let include_unhealthy = req.include_unhealthy;
        let cell = if include_unhealthy { &reads.all } else { &reads.passing };
        let encoded = cell.get_or_init(|| {
            let wire: Vec<v1::Instance> = instances
                .values()
                .filter(|i| include_unhealthy || i.spec.status == HealthStatus::Passing)
                .map(|i| instance_from_core(i))
                .collect();
            waggle_proto::EncodedInstances::encode(&wire)
        });
        Ok(Response::new(waggle_proto::GetServiceResponse::pre_encoded(revision.get(), encoded.clone())))
    }

    type WatchStream = BoxStream<v1::WatchResponse>;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.get_ref();
        let service =
            if req.service.is_empty() { None } else { Some(ServiceName::new(&req.service).map_err(invalid)?) };
        // Revisions mean the same on every member of one history, and nothing in another (a
        // wiped or restored data dir): there the watcher starts over from a snapshot.
        let history = self.hub.history();
        let same_history = req.incarnation == 0 || req.incarnation == history;
        // A watch failing over from a member that was further ahead: wait (briefly) to catch
        // up rather than answer with an older snapshot, which would take the watcher back.
        if req.incarnation != 0 && req.incarnation == history && req.from_revision > self.hub.revision().get() {
            let caught_up = self.hub.applied(Revision::new(req.from_revision));
            if tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await.is_err() {
                return Err(Status::unavailable("this member is behind the watcher's revision; try another"));
            }
        }
        let from = (req.from_revision > 0 && same_history).then(|| Revision::new(req.from_revision));
        let stream = watch_stream(self.hub.clone(), service, from);
        Ok(Response::new(Box::pin(stream.take_until(self.shutdown.clone().cancelled_owned()))))
    }
}

/// One watcher's position: its subscription, the revision it is up to date with, and the
/// messages ready to go.
struct Watcher {
    hub: Arc<WatchHub>,
    service: Option<ServiceName>,
    /// Where to resume on the next (re)subscription; `None` means start with a snapshot.
    from: Option<Revision>,
    rx: Option<broadcast::Receiver<Arc<Batch>>>,
    last: Revision,
    ready: VecDeque<v1::WatchResponse>,
}

impl Watcher {
    /// Subscribes and queues the start: a snapshot, or the missed batches plus one message at
    /// the current revision (so a resumed watcher learns it is up to date even if nothing
    /// changed while it was away).
    fn subscribe(&mut self) {
        let sub = self.hub.subscribe(self.service.as_ref(), self.from);
        self.rx = Some(sub.rx);
        self.last = match sub.start {
            Start::Snapshot { revision, instances } => {
                self.ready.extend(snapshot_messages(revision, &instances));
                revision
            }
            Start::Replay { current, batches } => {
                self.ready.extend(batches.iter().map(|b| deltas_message(b)));
                if batches.last().is_none_or(|b| b.revision < current) {
                    self.ready.push_back(deltas_message(&Batch::new(current, Vec::new(), false)));
                }
                current
            }
        };
    }

    /// The next message, or `None` when the hub is gone.
    async fn next(&mut self) -> Option<v1::WatchResponse> {
        loop {
            if let Some(mut message) = self.ready.pop_front() {
                message.incarnation = self.hub.history();
                return Some(message);
            }
            let Some(rx) = &mut self.rx else {
                self.subscribe();
                continue;
            };
            match rx.recv().await {
                Ok(batch) if batch.resync => self.resync(),
                Ok(batch) if batch.revision > self.last => {
                    self.last = batch.revision;
                    self.ready.push_back(deltas_message(&batch));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "watcher lagged; resyncing with a snapshot");
                    self.resync();
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    fn resync(&mut self) {
        self.from = None;
        self.rx = None;
    }
}

/// Renews a session where its deadline lives: here if this node leads, otherwise on the
/// leader. During an election (a few hundred milliseconds) it follows leadership for up to a
/// second rather than failing the client's keepalive stream.
pub(crate) async fn renew(
    consensus: &Consensus,
    clock: &SessionClock,
    session: u64,
) -> Result<Option<u64>, ProposeError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let answer = if consensus.leads_with_quorum() {
            Ok(clock.keepalive(SessionId::new(session)).map(Ttl::as_millis))
        } else if consensus.clustered() {
            consensus.forward_keepalive(session).await
        } else {
            Err(ProposeError::NotLeader)
        };
        let settling = matches!(answer, Err(ProposeError::NotLeader | ProposeError::LeaderUnreachable));
        if !settling || !consensus.clustered() || tokio::time::Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A watch as a stream that tonic polls directly: no task and no channel per watcher, so a
/// change reaches each watcher with one wake-up, and a departed client simply drops it.
fn watch_stream(
    hub: Arc<WatchHub>,
    service: Option<ServiceName>,
    from: Option<Revision>,
) -> impl Stream<Item = Result<v1::WatchResponse, Status>> + Send {
    let watcher = Watcher { hub, service, from, rx: None, last: Revision::INITIAL, ready: VecDeque::new() };
    futures_util::stream::unfold(watcher, |mut w| async move { w.next().await.map(|m| (Ok(m), w)) })
}

impl RegistryService {
    /// The members as this node sees them, with the URLs clients reach them at.
    async fn member_list(&self) -> v1::ListMembersResponse {
        let (leader, term, statuses) = self.consensus.members();
        // Asked of every member at once (each at most 500 ms, once per member).
        let urls = futures_util::future::join_all(
            statuses.iter().map(|m| self.consensus.client_url_of(m.id, &m.peer_address)),
        )
        .await;
        let members = statuses
            .into_iter()
            .zip(urls)
            .map(|(m, client_url)| v1::Member {
                id: m.id,
                peer_address: m.peer_address,
                role: m.role.to_owned(),
                log_index: m.log_index,
                lag: m.lag,
                client_url: client_url.unwrap_or_default(),
            })
            .collect();
        v1::ListMembersResponse { leader, term, answered_by: self.consensus.status().node_id, members }
    }
}
