//! Workloads against a Waggle server (native gRPC API).

use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};
use waggle_proto::v1::{self, registry_client::RegistryClient, watch_response::Event};

use crate::{
    BenchConfig, Report, Worker, Workload, churn_with_watchers, drive, fanout::FanOut, one_change_at_a_time, report,
};

/// A connection whose requests carry the run's ACL token, if it has one.
type Conn = tonic::service::interceptor::InterceptedService<Channel, TokenHeader>;
type Rpc = RegistryClient<Conn>;

/// Adds `x-consul-token` to every request (nothing without a token).
#[derive(Clone)]
struct TokenHeader(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for TokenHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("x-consul-token", token.clone());
        }
        Ok(request)
    }
}

fn token_header(config: &BenchConfig) -> anyhow::Result<TokenHeader> {
    let value = config.token.as_deref().map(str::parse).transpose().context("the token is not a valid header value")?;
    Ok(TokenHeader(value))
}

/// One connection per client.
async fn connect(config: &BenchConfig) -> anyhow::Result<Vec<Rpc>> {
    let mut clients = Vec::with_capacity(config.clients);
    for _ in 0..config.clients {
        let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", config.endpoint))?;
        clients.push(RegistryClient::with_interceptor(channel, token_header(config)?));
    }
    Ok(clients)
}

async fn session(rpc: &mut Rpc) -> anyhow::Result<u64> {
    let resp = rpc.create_session(v1::CreateSessionRequest { ttl_ms: Some(60_000), lock_delay_ms: None }).await?;
    Ok(resp.into_inner().session_id)
}

fn instance(service: &str, n: u64, id: String) -> v1::Instance {
    let mut i = v1::Instance {
        service: service.to_string(),
        id,
        address: format!("10.0.{}.{}", (n / 250) % 250, n % 250 + 1),
        port: 1 + (n % 60_000) as u32,
        tags: vec!["v1".into()],
        zone: "z1".into(),
        ..Default::default()
    };
    i.meta.insert("seq".into(), n.to_string());
    i
}

async fn register(rpc: &mut Rpc, session_id: u64, instance: v1::Instance) -> anyhow::Result<u64> {
    let req = v1::RegisterRequest { session_id, instance: Some(instance) };
    Ok(rpc.register(req).await?.into_inner().revision)
}

pub(crate) async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    let clients = connect(config).await?;
    match config.workload {
        Workload::Register => {
            let mut workers = Vec::new();
            for mut rpc in clients {
                let session_id = session(&mut rpc).await?;
                for _ in 0..config.in_flight {
                    workers.push(RegisterWorker { rpc: rpc.clone(), session_id, keys: config.instances as u64 });
                }
            }
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Keepalive => {
            let mut workers = Vec::new();
            for mut rpc in clients {
                let session_id = session(&mut rpc).await?;
                for _ in 0..config.in_flight {
                    let (tx, rx) = mpsc::channel(1);
                    let replies = rpc.keep_alive(ReceiverStream::new(rx)).await?.into_inner();
                    workers.push(KeepAliveWorker { tx, replies, session_id });
                }
            }
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Discover => {
            let mut setup = clients[0].clone();
            let session_id = session(&mut setup).await?;
            for n in 0..config.instances as u64 {
                register(&mut setup, session_id, instance("bench-disc", n, format!("i{n}"))).await?;
            }
            let workers: Vec<_> = clients
                .iter()
                .flat_map(|rpc| (0..config.in_flight).map(move |_| DiscoverWorker { rpc: rpc.clone() }))
                .collect();
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Watch => watch(config, clients).await,
        Workload::Churn => churn(config, clients).await,
        Workload::Populate => populate(config, clients).await,
        Workload::Lock | Workload::LockContended => {
            let mut workers = Vec::new();
            for mut rpc in clients {
                let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                for _ in 0..config.in_flight {
                    // A session per worker: a lock holder is a session.
                    let session_id = session(&mut rpc).await?;
                    workers.push(LockWorker {
                        locks: v1::lock_client::LockClient::with_interceptor(channel.clone(), token_header(config)?),
                        session_id,
                        name: crate::lock_name(config, workers.len()),
                    });
                }
            }
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
    }
}

struct LockWorker {
    locks: v1::lock_client::LockClient<Conn>,
    session_id: u64,
    name: String,
}

impl Worker for LockWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        let request = v1::AcquireRequest {
            name: self.name.clone(),
            session_id: self.session_id,
            wait_ms: 60_000,
            ..Default::default()
        };
        let granted = self.locks.acquire(request).await?.into_inner();
        anyhow::ensure!(granted.acquired, "lock {} not granted", self.name);
        self.locks.release(v1::ReleaseRequest { name: self.name.clone(), session_id: self.session_id }).await?;
        Ok(())
    }
}

/// Services the populate workload spreads instances over.
const POPULATE_SERVICES: u64 = 1_000;

async fn populate(config: &BenchConfig, clients: Vec<Rpc>) -> anyhow::Result<Report> {
    // Watchers first, so that every registration also fans out.
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(config.watchers.max(1));
    for w in 0..config.watchers {
        let mut rpc = clients[w % clients.len()].clone();
        let service = format!("svc-{}", w as u64 % POPULATE_SERVICES);
        let ready = ready_tx.clone();
        tokio::spawn(async move {
            let req = v1::WatchRequest { service, from_revision: 0, incarnation: 0 };
            let Ok(stream) = rpc.watch(req).await else { return };
            let mut stream = stream.into_inner();
            let _ = ready.send(()).await;
            // Keep the stream open and drained until the process exits.
            while let Ok(Some(_)) = stream.message().await {}
        });
    }
    for _ in 0..config.watchers {
        ready_rx.recv().await.context("a watcher failed to start")?;
    }
    let mut sessions = Vec::with_capacity(config.sessions);
    for s in 0..config.sessions {
        let rpc = &mut clients[s % clients.len()].clone();
        let resp = rpc.create_session(v1::CreateSessionRequest { ttl_ms: Some(600_000), lock_delay_ms: None }).await?;
        sessions.push(resp.into_inner().session_id);
    }
    let sessions = std::sync::Arc::new(sessions);
    let mut workers = Vec::new();
    for rpc in &clients {
        for _ in 0..config.in_flight {
            workers.push(PopulateWorker { rpc: rpc.clone(), sessions: sessions.clone() });
        }
    }
    let hold = config.duration;
    let mut config = config.clone();
    config.total = Some(config.instances as u64);
    let (recorder, elapsed) = drive(&config, workers).await?;
    // Keep the watchers attached while the server is measured.
    eprintln!("populated {} instances; holding {} watchers for {:?}", recorder.count(), config.watchers, hold);
    tokio::time::sleep(hold).await;
    Ok(report(&config, &recorder, elapsed))
}

struct PopulateWorker {
    rpc: Rpc,
    sessions: std::sync::Arc<Vec<u64>>,
}

impl Worker for PopulateWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let session = self.sessions[(seq % self.sessions.len() as u64) as usize];
        let service = format!("svc-{}", seq % POPULATE_SERVICES);
        register(&mut self.rpc, session, instance(&service, seq, format!("i{seq}"))).await.map(|_| ())
    }
}

struct RegisterWorker {
    rpc: Rpc,
    session_id: u64,
    keys: u64,
}

impl Worker for RegisterWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let i = instance("bench-reg", seq, format!("i{}", seq % self.keys));
        register(&mut self.rpc, self.session_id, i).await.map(|_| ())
    }
}

struct KeepAliveWorker {
    tx: mpsc::Sender<v1::KeepAliveRequest>,
    replies: Streaming<v1::KeepAliveResponse>,
    session_id: u64,
}

impl Worker for KeepAliveWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        self.tx.send(v1::KeepAliveRequest { session_id: self.session_id }).await?;
        let reply = self.replies.message().await?.context("keepalive stream ended")?;
        anyhow::ensure!(reply.found, "session not found");
        Ok(())
    }
}

struct DiscoverWorker {
    rpc: Rpc,
}

impl Worker for DiscoverWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        let req = v1::GetServiceRequest { service: "bench-disc".into(), include_unhealthy: false, linearizable: false };
        let n = self.rpc.get_service(req).await?.into_inner().into_instances().len();
        anyhow::ensure!(n > 0, "no instances");
        Ok(())
    }
}

/// Opens `n` watchers of `service` spread over the connections; each reports receipts of
/// delta revisions. Returns once every watcher has its initial snapshot.
async fn open_watchers(clients: &[Rpc], service: &str, n: usize, fanout: &FanOut) -> anyhow::Result<()> {
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(n.max(1));
    for w in 0..n {
        let mut rpc = clients[w % clients.len()].clone();
        let receipts = fanout.receipts();
        let ready = ready_tx.clone();
        let service = service.to_string();
        tokio::spawn(async move {
            let req = v1::WatchRequest { service, from_revision: 0, incarnation: 0 };
            let mut stream = match rpc.watch(req).await {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = ready.send(Err(e.into())).await;
                    return;
                }
            };
            let mut announced = false;
            while let Ok(Some(msg)) = stream.message().await {
                let at = Instant::now();
                match msg.event {
                    Some(Event::Snapshot(s)) if !s.continued && !announced => {
                        announced = true;
                        let _ = ready.send(Ok(())).await;
                    }
                    Some(Event::Deltas(d))
                        if !d.deltas.is_empty() && receipts.send((d.revision as i64, at)).is_err() =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
        });
    }
    for _ in 0..n {
        ready_rx.recv().await.context("a watcher ended before it was ready")??;
    }
    Ok(())
}

/// One change at a time to a service watched by `watchers` watchers.
async fn watch(config: &BenchConfig, clients: Vec<Rpc>) -> anyhow::Result<Report> {
    let fanout = FanOut::new();
    open_watchers(&clients, "bench-watch", config.watchers, &fanout).await?;
    let mut rpc = clients[0].clone();
    let session_id = session(&mut rpc).await?;
    let writer = WatchWriter { rpc, session_id, acks: fanout.acks() };
    one_change_at_a_time(config, fanout, writer).await
}

/// Changes one instance of the watched service.
struct WatchWriter {
    rpc: Rpc,
    session_id: u64,
    acks: crate::fanout::Acks,
}

impl Worker for WatchWriter {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let revision = register(&mut self.rpc, self.session_id, instance("bench-watch", seq, "w".into())).await?;
        self.acks.ack(revision as i64, Instant::now());
        Ok(())
    }
}

/// Writers register and deregister their own instance in a loop while watchers follow.
async fn churn(config: &BenchConfig, clients: Vec<Rpc>) -> anyhow::Result<Report> {
    let fanout = FanOut::new();
    open_watchers(&clients, "bench-churn", config.watchers, &fanout).await?;
    let mut workers = Vec::new();
    for (c, mut rpc) in clients.into_iter().enumerate() {
        let session_id = session(&mut rpc).await?;
        for w in 0..config.in_flight {
            let id = format!("c{c}-w{w}");
            workers.push(ChurnWorker { rpc: rpc.clone(), session_id, id, registered: false, acks: fanout.acks() });
        }
    }
    churn_with_watchers(config, fanout, workers).await
}

struct ChurnWorker {
    rpc: Rpc,
    session_id: u64,
    id: String,
    registered: bool,
    acks: crate::fanout::Acks,
}

impl Worker for ChurnWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let revision = if self.registered {
            let req = v1::DeregisterRequest { service: "bench-churn".into(), id: self.id.clone() };
            self.rpc.deregister(req).await?.into_inner().revision
        } else {
            register(&mut self.rpc, self.session_id, instance("bench-churn", seq, self.id.clone())).await?
        };
        self.acks.ack(revision as i64, Instant::now());
        self.registered = !self.registered;
        Ok(())
    }
}
