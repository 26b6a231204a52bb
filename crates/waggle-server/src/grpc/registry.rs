//! The `waggle.v1.Registry` service: sessions (create, the keepalive stream, revoke),
//! registration, reads and watches of services (`watch.rs`), members and snapshots.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use waggle_core::{
    HealthStatus, InstanceId, Revision, ServiceName, SessionId, Ttl,
    acl::{Access, Resource},
};
use waggle_proto::{instance_from_core, spec_from_wire, v1};

use super::{
    status::{BoxStream, caller, invalid, token_of, while_authorized},
    watch::watch_stream,
};
use crate::node::{MembershipChange, Node};

/// Keepalive answers queued per stream before the sender waits for the client.
const STREAM_BUFFER: usize = 16;

/// The `Registry` service.
pub(crate) struct RegistryService {
    pub(crate) node: Arc<Node>,
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

#[tonic::async_trait]
impl v1::registry_server::Registry for RegistryService {
    async fn create_session(
        &self,
        request: Request<v1::CreateSessionRequest>,
    ) -> Result<Response<v1::CreateSessionResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let ttl = match request.get_ref().ttl_ms {
            Some(ms) => Ttl::from_millis(ms).map_err(invalid)?,
            None => Ttl::DEFAULT,
        };
        let options = waggle_core::SessionOptions {
            lock_delay_ms: request.get_ref().lock_delay_ms.unwrap_or(0),
            ..Default::default()
        };
        options.validate().map_err(invalid)?;
        let (session, revision) = self.node.open_session(&caller, ttl, options).await?;
        Ok(Response::new(v1::CreateSessionResponse {
            session_id: session.get(),
            ttl_ms: ttl.as_millis(),
            revision: revision.get(),
        }))
    }

    type KeepAliveStream = BoxStream<v1::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<v1::KeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        // A member that does not lead passes keepalives on to the leader; a single node that
        // does not lead (its Raft core failed) refuses them.
        if !self.node.is_leader() && !self.node.clustered() {
            return Err(Status::unavailable("this node is not the leader"));
        }
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let node = self.node.clone();
        let shutdown = self.node.shutdown_token().clone();
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
                    Some(Ok(req)) => match node.renew_session(&caller, SessionId::new(req.session_id)).await {
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
        let caller = caller(&self.node, token_of(&request)).await?;
        let session = session_id(request.get_ref().session_id)?;
        let revision = self.node.revoke_session(&caller, session).await?;
        Ok(Response::new(v1::RevokeSessionResponse { revision: revision.get() }))
    }

    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        let session = session_id(req.session_id)?;
        let wire = req.instance.ok_or_else(|| Status::invalid_argument("invalid instance: required"))?;
        let spec = spec_from_wire(&wire).map_err(invalid)?;
        spec.validate_registration().map_err(invalid)?;
        let (revision, instance) = self.node.register(&caller, session, spec).await?;
        Ok(Response::new(v1::RegisterResponse {
            revision: revision.get(),
            instance: instance.map(|i| instance_from_core(&i)),
        }))
    }

    async fn deregister(
        &self,
        request: Request<v1::DeregisterRequest>,
    ) -> Result<Response<v1::DeregisterResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.get_ref();
        let service = ServiceName::new(&req.service).map_err(invalid)?;
        let id = InstanceId::new(&req.id).map_err(invalid)?;
        let revision = self.node.deregister(&caller, service, id).await?;
        Ok(Response::new(v1::DeregisterResponse { revision: revision.get() }))
    }

    async fn add_member(
        &self,
        request: Request<v1::AddMemberRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("id: member ids start at 1"));
        }
        let addr: std::net::SocketAddr = req
            .peer_address
            .parse()
            .map_err(|_| Status::invalid_argument(format!("peer_address: {:?} is not HOST:PORT", req.peer_address)))?;
        let change = MembershipChange::Add { id: req.id, addr: addr.to_string(), learner: req.learner };
        self.node.change_membership(&caller, change).await?;
        Ok(Response::new(self.member_list().await))
    }

    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let id = request.into_inner().id;
        self.node.change_membership(&caller, MembershipChange::Remove { id }).await?;
        Ok(Response::new(self.member_list().await))
    }

    type SaveSnapshotStream = BoxStream<v1::SnapshotChunk>;

    async fn save_snapshot(
        &self,
        request: Request<v1::SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        let caller = caller(&self.node, token_of(&request)).await?;
        let file = self.node.backup(&caller).await?;
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
        let caller = caller(&self.node, token_of(&request)).await?;
        if request.get_ref().linearizable {
            self.node.read_barrier().await?;
        }
        let (revision, services) = self.node.read_model().services();
        // Filtered, not refused: only the services the token may read.
        let services = services
            .into_iter()
            .filter(|(name, _)| caller.may(Resource::Service, name.as_str(), Access::Read))
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
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.get_ref();
        let service = ServiceName::new(&req.service).map_err(invalid)?;
        caller.check(Resource::Service, service.as_str(), Access::Read)?;
        if req.linearizable {
            self.node.read_barrier().await?;
        }
        // Encoded once per version of the service, then shared by every read.
        let (revision, instances, reads) = self.node.read_model().service(&service);
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
        let caller = caller(&self.node, token_of(&request)).await?;
        let req = request.get_ref();
        let service =
            if req.service.is_empty() { None } else { Some(ServiceName::new(&req.service).map_err(invalid)?) };
        // A watch of every service needs read on every service (it is not filtered).
        match &service {
            Some(name) => caller.check(Resource::Service, name.as_str(), Access::Read)?,
            None => caller.check(Resource::Service, "", Access::Read)?,
        }
        // Revisions mean the same on every member of one history, and nothing in another (a
        // wiped or restored data dir): there the watcher starts over from a snapshot.
        let history = self.node.read_model().history();
        let same_history = req.incarnation == 0 || req.incarnation == history;
        // A watch failing over from a member that was further ahead: wait (briefly) to catch
        // up rather than answer with an older snapshot, which would take the watcher back.
        if req.incarnation != 0
            && req.incarnation == history
            && req.from_revision > self.node.read_model().revision().get()
        {
            let caught_up = self.node.read_model().applied(Revision::new(req.from_revision));
            if tokio::time::timeout(std::time::Duration::from_secs(2), caught_up).await.is_err() {
                return Err(Status::unavailable("this member is behind the watcher's revision; try another"));
            }
        }
        let from = (req.from_revision > 0 && same_history).then(|| Revision::new(req.from_revision));
        let stream = watch_stream(self.node.read_model().clone(), service, from);
        let stream = Box::pin(stream.take_until(self.node.shutdown_token().clone().cancelled_owned()));
        Ok(Response::new(while_authorized(stream, self.node.clone(), caller)))
    }
}

impl RegistryService {
    /// The members as this node sees them, with the URLs clients reach them at.
    async fn member_list(&self) -> v1::ListMembersResponse {
        let (leader, term, members) = self.node.member_list().await;
        let members = members
            .into_iter()
            .map(|m| v1::Member {
                id: m.status.id,
                peer_address: m.status.peer_address,
                role: m.status.role.to_owned(),
                log_index: m.status.log_index,
                lag: m.status.lag,
                client_url: m.client_url.unwrap_or_default(),
            })
            .collect();
        v1::ListMembersResponse { leader, term, answered_by: self.node.node_id(), members }
    }
}
