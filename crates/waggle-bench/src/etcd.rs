//! The same workloads against etcd v3 (gRPC), for side-by-side numbers.

use std::time::Instant;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Streaming, transport::Channel};

use crate::{
    BenchConfig, Report, Worker, Workload, churn_with_watchers, drive, fanout::FanOut, instance_payload,
    one_change_at_a_time, report,
};

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

use etcdserverpb as pb;

use pb::{kv_client::KvClient, lease_client::LeaseClient, watch_client::WatchClient};

/// One connection per client.
async fn connect(config: &BenchConfig) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(config.clients);
    for _ in 0..config.clients {
        let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())?
            .tcp_nodelay(true)
            .connect()
            .await
            .with_context(|| format!("cannot connect to etcd at {}", config.endpoint))?;
        channels.push(channel);
    }
    Ok(channels)
}

async fn grant(channel: &Channel) -> anyhow::Result<i64> {
    let resp = LeaseClient::new(channel.clone()).lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 }).await?;
    Ok(resp.into_inner().id)
}

/// The key just past every key with `prefix` (etcd's range_end for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

async fn put(kv: &mut KvClient<Channel>, key: String, value: Vec<u8>, lease: i64) -> anyhow::Result<i64> {
    let resp = kv.put(pb::PutRequest { key: key.into_bytes(), value, lease }).await?;
    Ok(resp.into_inner().header.map_or(0, |h| h.revision))
}

pub(crate) async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    let channels = connect(config).await?;
    match config.workload {
        Workload::Register => {
            let mut workers = Vec::new();
            for channel in &channels {
                let lease = grant(channel).await?;
                for _ in 0..config.in_flight {
                    workers.push(PutWorker {
                        kv: KvClient::new(channel.clone()),
                        lease,
                        keys: config.instances as u64,
                    });
                }
            }
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Keepalive => {
            let mut workers = Vec::new();
            for channel in &channels {
                let lease = grant(channel).await?;
                for _ in 0..config.in_flight {
                    // etcd (grpc-go) sends response headers with the first reply, so the stream
                    // call only returns once a first request has been answered.
                    let (tx, rx) = mpsc::channel(1);
                    tx.send(pb::LeaseKeepAliveRequest { id: lease }).await?;
                    let mut replies =
                        LeaseClient::new(channel.clone()).lease_keep_alive(ReceiverStream::new(rx)).await?.into_inner();
                    replies.message().await?.context("keepalive stream ended")?;
                    workers.push(KeepAliveWorker { tx, replies, lease });
                }
            }
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Discover => {
            let mut kv = KvClient::new(channels[0].clone());
            let lease = grant(&channels[0]).await?;
            for n in 0..config.instances as u64 {
                put(&mut kv, format!("/bench/disc/i{n}"), instance_payload(n), lease).await?;
            }
            let workers: Vec<_> = channels
                .iter()
                .flat_map(|c| (0..config.in_flight).map(move |_| RangeWorker { kv: KvClient::new(c.clone()) }))
                .collect();
            let (recorder, elapsed) = drive(config, workers).await?;
            Ok(report(config, &recorder, elapsed))
        }
        Workload::Watch => watch(config, &channels).await,
        Workload::Churn => churn(config, &channels).await,
        Workload::Populate => anyhow::bail!("the populate workload is for Waggle only"),
        Workload::Lock | Workload::LockContended => {
            let mut workers = Vec::new();
            for channel in &channels {
                for _ in 0..config.in_flight {
                    // A lease per worker: a lock holder is a lease, as a Waggle holder is a session.
                    let lease = grant(channel).await?;
                    workers.push(LockWorker {
                        locks: v3lockpb::lock_client::LockClient::new(channel.clone()),
                        lease,
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
    locks: v3lockpb::lock_client::LockClient<Channel>,
    lease: i64,
    name: String,
}

impl Worker for LockWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        let request = v3lockpb::LockRequest { name: self.name.clone().into_bytes(), lease: self.lease };
        let key = self.locks.lock(request).await?.into_inner().key;
        self.locks.unlock(v3lockpb::UnlockRequest { key }).await?;
        Ok(())
    }
}

struct PutWorker {
    kv: KvClient<Channel>,
    lease: i64,
    keys: u64,
}

impl Worker for PutWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        put(&mut self.kv, format!("/bench/reg/i{}", seq % self.keys), instance_payload(seq), self.lease)
            .await
            .map(|_| ())
    }
}

struct KeepAliveWorker {
    tx: mpsc::Sender<pb::LeaseKeepAliveRequest>,
    replies: Streaming<pb::LeaseKeepAliveResponse>,
    lease: i64,
}

impl Worker for KeepAliveWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        self.tx.send(pb::LeaseKeepAliveRequest { id: self.lease }).await?;
        let reply = self.replies.message().await?.context("keepalive stream ended")?;
        anyhow::ensure!(reply.ttl > 0, "lease not found");
        Ok(())
    }
}

struct RangeWorker {
    kv: KvClient<Channel>,
}

impl Worker for RangeWorker {
    async fn op(&mut self, _seq: u64) -> anyhow::Result<()> {
        let req = pb::RangeRequest {
            key: b"/bench/disc/".to_vec(),
            range_end: prefix_end("/bench/disc/"),
            serializable: true,
            ..Default::default()
        };
        let n = self.kv.range(req).await?.into_inner().kvs.len();
        anyhow::ensure!(n > 0, "no keys");
        Ok(())
    }
}

/// Opens `n` watchers of a key prefix spread over the connections (one stream each).
async fn open_watchers(channels: &[Channel], prefix: &str, n: usize, fanout: &FanOut) -> anyhow::Result<()> {
    let (ready_tx, mut ready_rx) = mpsc::channel::<anyhow::Result<()>>(n.max(1));
    for w in 0..n {
        let mut client = WatchClient::new(channels[w % channels.len()].clone());
        let receipts = fanout.receipts();
        let ready = ready_tx.clone();
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(pb::WatchCreateRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                start_revision: 0,
            })),
        };
        tokio::spawn(async move {
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.send(create).await;
            let mut stream = match client.watch(ReceiverStream::new(rx)).await {
                Ok(s) => s.into_inner(),
                Err(e) => {
                    let _ = ready.send(Err(e.into())).await;
                    return;
                }
            };
            while let Ok(Some(msg)) = stream.message().await {
                let at = Instant::now();
                if msg.created {
                    let _ = ready.send(Ok(())).await;
                }
                for event in &msg.events {
                    let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    if receipts.send((revision, at)).is_err() {
                        drop(tx);
                        return;
                    }
                }
            }
            drop(tx);
        });
    }
    for _ in 0..n {
        ready_rx.recv().await.context("a watcher ended before it was ready")??;
    }
    Ok(())
}

async fn watch(config: &BenchConfig, channels: &[Channel]) -> anyhow::Result<Report> {
    let fanout = FanOut::new();
    open_watchers(channels, "/bench/watch/", config.watchers, &fanout).await?;
    let writer = WatchWriter { kv: KvClient::new(channels[0].clone()), acks: fanout.acks() };
    one_change_at_a_time(config, fanout, writer).await
}

/// Changes one key under the watched prefix.
struct WatchWriter {
    kv: KvClient<Channel>,
    acks: crate::fanout::Acks,
}

impl Worker for WatchWriter {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let revision = put(&mut self.kv, "/bench/watch/w".into(), instance_payload(seq), 0).await?;
        self.acks.ack(revision, Instant::now());
        Ok(())
    }
}

async fn churn(config: &BenchConfig, channels: &[Channel]) -> anyhow::Result<Report> {
    let fanout = FanOut::new();
    open_watchers(channels, "/bench/churn/", config.watchers, &fanout).await?;
    let mut workers = Vec::new();
    for (c, channel) in channels.iter().enumerate() {
        let lease = grant(channel).await?;
        for w in 0..config.in_flight {
            workers.push(ChurnWorker {
                kv: KvClient::new(channel.clone()),
                lease,
                key: format!("/bench/churn/c{c}-w{w}"),
                present: false,
                acks: fanout.acks(),
            });
        }
    }
    churn_with_watchers(config, fanout, workers).await
}

struct ChurnWorker {
    kv: KvClient<Channel>,
    lease: i64,
    key: String,
    present: bool,
    acks: crate::fanout::Acks,
}

impl Worker for ChurnWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let revision = if self.present {
            let req = pb::DeleteRangeRequest { key: self.key.clone().into_bytes(), range_end: Vec::new() };
            self.kv.delete_range(req).await?.into_inner().header.map_or(0, |h| h.revision)
        } else {
            put(&mut self.kv, self.key.clone(), instance_payload(seq), self.lease).await?
        };
        self.acks.ack(revision, Instant::now());
        self.present = !self.present;
        Ok(())
    }
}
