//! The client handle, one-shot calls, and registrations.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Endpoint;
use waggle_core::{HealthStatus, Instance, InstanceId, InstanceSpec, ServiceName, SessionId};
use waggle_proto::v1::{self, registry_client::RegistryClient};

use crate::failover::Failover;
use crate::rpc::{instance_from_wire, with_timeout};
use crate::{
    ClientConfig, Discovery, Error,
    session::{Keeper, KeeperCmd},
};

/// The largest message the SDK accepts from the server.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A connection to a Waggle server. Cheap to clone; all clones share one session, which is
/// created on the first registration and kept alive in the background (one session per client
/// process: keepalive cost scales with processes, not instances).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    rpc: RegistryClient<Failover>,
    config: ClientConfig,
    keeper: mpsc::UnboundedSender<KeeperCmd>,
    session: watch::Receiver<Option<SessionId>>,
    /// When the server last confirmed the session.
    renewed: watch::Receiver<tokio::time::Instant>,
    /// The servers calls fail over between (shared with `rpc`).
    failover: Failover,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.inner.url).field("session", &self.session()).finish()
    }
}

/// The cluster's members as one server sees them ([`Client::members`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Members {
    /// The leader's id, if there is one.
    pub leader: Option<u64>,
    /// The Raft term.
    pub term: u64,
    /// The member that answered.
    pub answered_by: u64,
    /// Every member.
    pub members: Vec<Member>,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Where it takes Raft traffic (a single node lists its client address).
    pub address: String,
    /// Where clients reach it (`None` while the answering member cannot ask it).
    pub client_url: Option<String>,
    /// `leader`, `follower` or `learner`.
    pub role: String,
    /// The highest log index known to be on it.
    pub log_index: Option<u64>,
    /// Entries behind the leader's log, when known (answers from the leader know it).
    pub lag: Option<u64>,
}

/// A service as listed by [`Client::services`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ServiceSummary {
    /// The service name.
    pub name: String,
    /// How many instances it has.
    pub instances: u32,
    /// How many of them are passing.
    pub passing: u32,
    /// The union of their tags.
    pub tags: Vec<String>,
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:8502`, or the members of a cluster separated
    /// by commas: `http://10.0.0.1:8502,http://10.0.0.2:8502`) with default settings and checks
    /// that a server answers.
    pub async fn connect(url: impl Into<String>) -> Result<Client, Error> {
        Self::connect_with(url, ClientConfig::default()).await
    }

    /// Connects with explicit settings and checks that the server answers.
    pub async fn connect_with(url: impl Into<String>, config: ClientConfig) -> Result<Client, Error> {
        let client = Self::connect_lazy_with(url, config)?;
        client.services().await.map_err(|e| Error::Connect { url: client.inner.url.clone(), reason: e.to_string() })?;
        Ok(client)
    }

    /// Creates a client that connects on first use (and reconnects on its own). Must be called
    /// inside a tokio runtime.
    pub fn connect_lazy_with(url: impl Into<String>, config: ClientConfig) -> Result<Client, Error> {
        let url = url.into();
        config.validate()?;
        // Several servers (the members of a cluster) are separated by commas; calls fail over
        // between them.
        let mut channels = Vec::new();
        for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            channels.push((one.to_owned(), channel(one, &config)?));
        }
        if channels.is_empty() {
            return Err(Error::InvalidUrl { url, reason: "no server URL given".into() });
        }
        let token = config
            .token
            .as_deref()
            .map(http::HeaderValue::from_str)
            .transpose()
            .map_err(|_| Error::Invalid(waggle_core::ValidationError::new("token", "must be printable ASCII")))?;
        let failover = Failover::new(channels, token);
        // Large services exceed tonic's default 4 MiB message limit; allow 64 MiB.
        let rpc = RegistryClient::new(failover.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        // Unbounded: a dropped Registration must never lose its deregistration to a full queue.
        let (keeper_tx, keeper_rx) = mpsc::unbounded_channel();
        let (session_tx, session_rx) = watch::channel(None);
        let (renewed_tx, renewed) = watch::channel(tokio::time::Instant::now());
        tokio::spawn(Keeper::new(rpc.clone(), config.clone(), keeper_rx, session_tx, renewed_tx).run());
        let inner = Arc::new(Inner { url, rpc, config, keeper: keeper_tx, session: session_rx, renewed, failover });
        tokio::spawn(learn_members(Arc::downgrade(&inner)));
        Ok(Client { inner })
    }

    /// The server URLs calls may fail over to: those given, then the cluster's other members
    /// as learned from the member list.
    pub fn servers(&self) -> Vec<String> {
        self.inner.failover.urls()
    }

    /// The server URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The client's current session, if it has one.
    pub fn session(&self) -> Option<SessionId> {
        *self.inner.session.borrow()
    }

    /// The client's session, created (and then kept alive) if it has none yet. Locks and
    /// session-bound keys hang off it: when it is lost, so are they.
    pub async fn ensure_session(&self) -> Result<SessionId, Error> {
        let (reply, rx) = oneshot::channel();
        self.inner.keeper.send(KeeperCmd::Session { reply }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Follows the client's session (it changes when a lost session is replaced).
    pub(crate) fn session_changes(&self) -> watch::Receiver<Option<SessionId>> {
        self.inner.session.clone()
    }

    /// Follows when the server last confirmed the session.
    pub(crate) fn session_renewals(&self) -> watch::Receiver<tokio::time::Instant> {
        self.inner.renewed.clone()
    }

    pub(crate) fn rpc(&self) -> RegistryClient<Failover> {
        self.inner.rpc.clone()
    }

    pub(crate) fn failover(&self) -> Failover {
        self.inner.failover.clone()
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Runs a unary call with the configured request timeout.
    pub(crate) async fn call<T, F>(&self, call: F) -> Result<T, Error>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        with_timeout(self.inner.config.request_timeout, call).await
    }

    /// Registers an instance under the client's session and returns a handle that keeps it
    /// registered: the session is kept alive, and if the session is lost (for example the
    /// server was down longer than its TTL) a new one is created and the instance registered
    /// again. Returns once the registration is durable on the server.
    pub async fn register(&self, spec: InstanceSpec) -> Result<Registration, Error> {
        spec.validate_registration()?;
        let (reply, rx) = oneshot::channel();
        self.inner.keeper.send(KeeperCmd::Register { spec, reply }).map_err(|_| Error::Closed)?;
        let instance = rx.await.map_err(|_| Error::Closed)??;
        Ok(Registration { client: self.clone(), instance, active: true })
    }

    /// Deregisters an instance (any instance, not only this client's). Deregistering an
    /// instance that does not exist is an error (`not found`).
    pub async fn deregister(&self, service: &str, id: &str) -> Result<(), Error> {
        let service = ServiceName::new(service)?;
        let id = InstanceId::new(id)?;
        let (reply, rx) = oneshot::channel();
        self.inner.keeper.send(KeeperCmd::Deregister { service, id, reply: Some(reply) }).map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Lists the services that have instances.
    pub async fn services(&self) -> Result<Vec<ServiceSummary>, Error> {
        let resp = self.call(self.rpc().list_services(v1::ListServicesRequest { linearizable: false })).await?;
        Ok(resp
            .services
            .into_iter()
            .map(|s| ServiceSummary { name: s.name, instances: s.instances, passing: s.passing, tags: s.tags })
            .collect())
    }

    /// The cluster's members as the server this client uses sees them.
    pub async fn members(&self) -> Result<Members, Error> {
        let resp = self.call(self.rpc().list_members(v1::ListMembersRequest {})).await?;
        Ok(members_from_wire(resp))
    }

    /// Adds member `id`, listening for peers at `peer_address`: it joins as a learner, catches
    /// up, then becomes a voter (unless `learner`). The new node must already run with
    /// `waggle server --join`. Returns the members once the change is committed.
    pub async fn add_member(&self, id: u64, peer_address: &str, learner: bool) -> Result<Members, Error> {
        let req = v1::AddMemberRequest { id, peer_address: peer_address.to_owned(), learner };
        // Catching up may take a while (a large snapshot): not bounded by the request timeout.
        Ok(members_from_wire(with_timeout(ADMIN_TIMEOUT, self.rpc().add_member(req)).await?))
    }

    /// Removes member `id` (voter or learner). Returns the members once the change is committed.
    pub async fn remove_member(&self, id: u64) -> Result<Members, Error> {
        let req = v1::RemoveMemberRequest { id };
        Ok(members_from_wire(with_timeout(ADMIN_TIMEOUT, self.rpc().remove_member(req)).await?))
    }

    /// A backup of everything the server has applied: it builds a fresh snapshot and sends it.
    /// Write the bytes to a file; `waggle snapshot restore` checks and restores it.
    pub async fn save_snapshot(&self) -> Result<Vec<u8>, Error> {
        let save = async {
            let mut stream = self.rpc().save_snapshot(v1::SaveSnapshotRequest {}).await?.into_inner();
            let mut file = Vec::new();
            while let Some(chunk) = stream.message().await? {
                file.extend_from_slice(&chunk.data);
            }
            Ok::<_, tonic::Status>(tonic::Response::new(file))
        };
        with_timeout(ADMIN_TIMEOUT, save).await
    }

    /// A service's instances: passing ones, or all of them with `HealthFilter::All`, as the
    /// member that answers has applied them (in a cluster, possibly a moment behind the
    /// leader; see [`Client::instances_linearizable`]).
    pub async fn instances(&self, service: &str, filter: HealthFilter) -> Result<Vec<Instance>, Error> {
        self.get_service(service, filter, false).await
    }

    /// Like [`Client::instances`], but linearizable: the answer includes every write
    /// acknowledged before the call, whichever member answers (read-index: a quorum round
    /// trip through the leader).
    pub async fn instances_linearizable(&self, service: &str, filter: HealthFilter) -> Result<Vec<Instance>, Error> {
        self.get_service(service, filter, true).await
    }

    async fn get_service(
        &self,
        service: &str,
        filter: HealthFilter,
        linearizable: bool,
    ) -> Result<Vec<Instance>, Error> {
        let service = ServiceName::new(service)?;
        let req = v1::GetServiceRequest {
            service: service.to_string(),
            include_unhealthy: matches!(filter, HealthFilter::All),
            linearizable,
        };
        let resp = self.call(self.rpc().get_service(req)).await?;
        resp.into_instances().iter().map(instance_from_wire).collect()
    }

    /// A live cache of one service's instances, fed by a watch stream.
    pub fn discover(&self, service: &str) -> Result<Discovery, Error> {
        let service = ServiceName::new(service)?;
        Ok(Discovery::start(self.clone(), service))
    }

    /// Revokes the session (its instances vanish at once) and stops the background task.
    /// Best effort: if the server is unreachable the session expires after its TTL.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.inner.keeper.send(KeeperCmd::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Which instances a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthFilter {
    /// Passing instances only.
    #[default]
    Passing,
    /// Every instance, whatever its status.
    All,
}

/// A lazily connected channel to one server.
fn channel(url: &str, config: &ClientConfig) -> Result<tonic::transport::Channel, Error> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| Error::InvalidUrl { url: url.to_owned(), reason: e.to_string() })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    if endpoint.uri().scheme_str().is_none_or(|s| s != "http" && s != "https") {
        return Err(Error::InvalidUrl { url: url.to_owned(), reason: "the scheme must be http or https".into() });
    }
    Ok(endpoint.connect_lazy())
}

/// How often the client refreshes the member list it fails over to.
const MEMBER_REFRESH: Duration = Duration::from_secs(30);

/// Learns the cluster's members from the member list, so a client given one URL can fail over
/// to the others: at once (retrying every second until a server answers), then every
/// `MEMBER_REFRESH`. Ends when the client is dropped. Members are only ever added: a URL that
/// stops answering is skipped by the failover like any other.
async fn learn_members(inner: std::sync::Weak<Inner>) {
    let mut wait = Duration::ZERO;
    loop {
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut rpc = inner.rpc.clone();
        let listed = with_timeout(inner.config.request_timeout, rpc.list_members(v1::ListMembersRequest {})).await;
        wait = match listed {
            Ok(members) => {
                for member in members.members.iter().filter(|m| !m.client_url.is_empty()) {
                    let config = &inner.config;
                    if inner.failover.add(&member.client_url, || channel(&member.client_url, config).ok()) {
                        tracing::debug!(url = %member.client_url, "learned a cluster member");
                    }
                }
                MEMBER_REFRESH
            }
            Err(_) => Duration::from_secs(1),
        };
    }
}

/// How long membership changes and backups may take (catch-up, snapshot building).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

pub(crate) fn is_passing(i: &Instance) -> bool {
    i.spec.status == HealthStatus::Passing
}

/// A registered instance. Keeps it registered until [`Registration::shutdown`] (or, best
/// effort, until dropped).
pub struct Registration {
    client: Client,
    instance: Instance,
    active: bool,
}

impl Registration {
    /// The instance as the server stored it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Deregisters the instance now.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        self.active = false;
        match self.client.deregister(self.instance.service().as_str(), self.instance.id().as_str()).await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.active {
            let _ = self.client.inner.keeper.send(KeeperCmd::Deregister {
                service: self.instance.service().clone(),
                id: self.instance.id().clone(),
                reply: None,
            });
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration").field("instance", &self.instance).finish()
    }
}

fn members_from_wire(resp: v1::ListMembersResponse) -> Members {
    let members = resp
        .members
        .into_iter()
        .map(|m| Member {
            id: m.id,
            address: m.peer_address,
            client_url: (!m.client_url.is_empty()).then_some(m.client_url),
            role: m.role,
            log_index: m.log_index,
            lag: m.lag,
        })
        .collect();
    Members { leader: resp.leader, term: resp.term, answered_by: resp.answered_by, members }
}
