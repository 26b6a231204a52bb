//! The load generator behind `waggle bench`.
//!
//! Every workload drives Waggle, etcd or ZooKeeper through the same code path: the same
//! number of connections (`clients`), the same number of outstanding requests per connection
//! (`in_flight`), the same closed loop (a worker issues its next request when the previous one
//! is answered), the same histograms. Only the final request differs per target.
//!
//! # Architecture invariant
//!
//! Benchmarks measure; they never assert. Nothing here runs inside `cargo test` except unit
//! tests of the statistics. All traffic goes to the endpoint given (loopback in the harness),
//! bounded by `--duration` or `--total`.

#![warn(missing_docs)]

mod etcd;
mod fanout;
mod progress;
mod stats;
mod waggle;
mod zk;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub use stats::{Latency, Report};

use crate::{progress::Bound, progress::Progress, stats::Recorder};

/// What to measure. (Also the command line's values: `waggle bench WORKLOAD`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Durable registrations under sessions (etcd: Put with a lease; ZooKeeper: ephemeral create).
    Register,
    /// Session keepalives (etcd: LeaseKeepAlive).
    Keepalive,
    /// Get-service reads (etcd: serializable prefix Range over the same data).
    Discover,
    /// Fan-out latency: one change at a time, N watchers, acknowledgement → receipt.
    Watch,
    /// Instances joining and leaving while M watchers follow.
    Churn,
    /// Uncontended lock acquire + release: every worker its own session and lock (etcd:
    /// `v3lockpb.Lock` Lock + Unlock, every worker its own lease).
    Lock,
    /// Contended hand-over: every worker acquires and releases the same lock, waiting in line
    /// (latency includes the wait).
    LockContended,
    /// Footprint set-up: `instances` instances over 1,000 services in `sessions` sessions
    /// (TTL 10 min), with `watchers` watchers attached (one per service, round robin); leaves
    /// everything in place so the server's memory and restart time can be measured.
    Populate,
}

impl Workload {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Register => "register",
            Workload::Keepalive => "keepalive",
            Workload::Discover => "discover",
            Workload::Watch => "watch",
            Workload::Churn => "churn",
            Workload::Populate => "populate",
            Workload::Lock => "lock",
            Workload::LockContended => "lock-contended",
        }
    }
}

/// The lock a lock-workload worker uses: its own, or the one everybody shares.
pub(crate) fn lock_name(config: &BenchConfig, worker: usize) -> String {
    match config.workload {
        Workload::LockContended => "bench-lock/shared".to_owned(),
        _ => format!("bench-lock/w{worker}"),
    }
}

/// The system under test. (Also the values of `waggle bench --target`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A Waggle server (gRPC, at --server).
    Waggle,
    /// etcd v3 (gRPC; default endpoint http://127.0.0.1:2379).
    Etcd,
    /// ZooKeeper (its binary protocol; default endpoint 127.0.0.1:2181; register only).
    Zookeeper,
}

impl Target {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Waggle => "waggle",
            Target::Etcd => "etcd",
            Target::Zookeeper => "zookeeper",
        }
    }
}

/// A benchmark run's settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BenchConfig {
    /// What to measure.
    pub workload: Workload,
    /// Against what.
    pub target: Target,
    /// Where: a URL for Waggle and etcd (`http://127.0.0.1:2379`), `host:port` for ZooKeeper.
    pub endpoint: String,
    /// Connections (default 4).
    pub clients: usize,
    /// Outstanding requests per connection (default 16).
    pub in_flight: usize,
    /// Run for this long (default 10 s; populate: how long to keep its watchers attached) ...
    pub duration: Duration,
    /// ... or stop after this many operations (for watch: changes).
    pub total: Option<u64>,
    /// Register: key space; discover: instances in the service read (default 100).
    pub instances: usize,
    /// Watch / churn / populate: watchers (default 1000 for watch and populate, 100 for churn).
    pub watchers: usize,
    /// Populate: sessions the instances are spread over (default 1000).
    pub sessions: usize,
    /// No progress output.
    pub quiet: bool,
    /// The ACL token Waggle requests carry (`x-consul-token`), if any.
    pub token: Option<String>,
}

impl BenchConfig {
    /// Defaults for a workload against a target at an endpoint.
    pub fn new(workload: Workload, target: Target, endpoint: impl Into<String>) -> Self {
        BenchConfig {
            workload,
            target,
            endpoint: endpoint.into(),
            clients: 4,
            in_flight: 16,
            duration: Duration::from_secs(10),
            total: None,
            instances: 100,
            watchers: if workload == Workload::Churn { 100 } else { 1000 },
            sessions: 1000,
            quiet: false,
            token: None,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.clients >= 1 && self.clients <= 1024, "--clients must be 1-1024");
        anyhow::ensure!(self.in_flight >= 1 && self.in_flight <= 4096, "--in-flight must be 1-4096");
        anyhow::ensure!(self.instances >= 1 && self.instances <= 1_000_000, "--instances must be 1-1000000");
        anyhow::ensure!(self.watchers <= 100_000, "--watchers must be at most 100000");
        anyhow::ensure!(self.sessions >= 1 && self.sessions <= 100_000, "--sessions must be 1-100000");
        anyhow::ensure!(self.total != Some(0), "--total must be at least 1");
        anyhow::ensure!(self.duration >= Duration::from_millis(100), "--duration must be at least 100ms");
        anyhow::ensure!(self.duration <= Duration::from_secs(3600), "--duration must be at most 1h");
        if matches!(self.workload, Workload::Watch | Workload::Churn) {
            anyhow::ensure!(self.watchers >= 1, "--watchers must be at least 1 for {}", self.workload.name());
        }
        Ok(())
    }

    fn bound(&self) -> Bound {
        match self.total {
            Some(n) => Bound::Total(n),
            None => Bound::Duration(self.duration),
        }
    }
}

/// Runs one benchmark and returns its report.
pub async fn run(config: BenchConfig) -> anyhow::Result<Report> {
    config.validate()?;
    match config.target {
        Target::Waggle => waggle::run(&config).await,
        Target::Etcd => etcd::run(&config).await,
        Target::Zookeeper => zk::run(&config).await,
    }
}

/// One closed-loop request issuer.
pub(crate) trait Worker: Send + 'static {
    /// Issues operation number `seq` (global across workers) and waits for its answer.
    fn op(&mut self, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The measured phase: every worker loops until the bound is reached.
pub(crate) async fn drive<W: Worker>(config: &BenchConfig, workers: Vec<W>) -> anyhow::Result<(Recorder, Duration)> {
    let bound = config.bound();
    let label = format!("{} {}", config.workload.name(), config.target.name());
    let progress = Progress::start(label, bound, config.quiet);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut tasks = Vec::with_capacity(workers.len());
    for mut worker in workers {
        let next = next.clone();
        let done = progress.done.clone();
        tasks.push(tokio::spawn(async move {
            let mut recorder = Recorder::new();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                match bound {
                    Bound::Total(n) if seq >= n => break,
                    Bound::Duration(_) if Instant::now() >= deadline => break,
                    _ => {}
                }
                let t = Instant::now();
                match worker.op(seq).await {
                    Ok(()) => recorder.record(t.elapsed()),
                    Err(e) => {
                        recorder.errors += 1;
                        if recorder.errors <= 3 {
                            eprintln!("request failed: {e:#}");
                        }
                        if recorder.errors > 1000 && recorder.count() == 0 {
                            break;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            recorder
        }));
    }
    let mut total = Recorder::new();
    for task in tasks {
        total.merge(&task.await?);
    }
    let elapsed = started.elapsed();
    progress.finish();
    Ok((total, elapsed))
}

/// The watch workload: `writer` makes one change every 100 ms (each fans out on its own before
/// the next) until the bound; the report holds acknowledgement → receipt latencies. The writer
/// records its acknowledgements in `fanout` itself.
pub(crate) async fn one_change_at_a_time<W: Worker>(
    config: &BenchConfig,
    fanout: fanout::FanOut,
    mut writer: W,
) -> anyhow::Result<Report> {
    let changes = config.total.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut n = 0u64;
    while n < changes && (config.total.is_some() || started.elapsed() < config.duration) {
        writer.op(n).await?;
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let recorder = fanout.collect(n * config.watchers as u64, Duration::from_secs(10)).await;
    let mut r = report(config, &recorder, elapsed);
    r.throughput = n as f64 / elapsed.as_secs_f64();
    Ok(r)
}

/// The churn workload: `workers` (which record their acknowledgements in `fanout`) run to the
/// bound; the report adds the watchers' delivery latencies.
pub(crate) async fn churn_with_watchers<W: Worker>(
    config: &BenchConfig,
    fanout: fanout::FanOut,
    workers: Vec<W>,
) -> anyhow::Result<Report> {
    let (recorder, elapsed) = drive(config, workers).await?;
    let delivery = fanout.collect(recorder.count() * config.watchers as u64, Duration::from_secs(10)).await;
    let mut r = report(config, &recorder, elapsed);
    r.delivery = Some(delivery.summary());
    Ok(r)
}

pub(crate) fn report(config: &BenchConfig, recorder: &Recorder, elapsed: Duration) -> Report {
    let ops = recorder.count();
    Report {
        workload: config.workload.name().to_string(),
        target: config.target.name().to_string(),
        clients: config.clients,
        in_flight: config.in_flight,
        watchers: if matches!(config.workload, Workload::Watch | Workload::Churn) { config.watchers } else { 0 },
        instances: config.instances,
        ops,
        errors: recorder.errors,
        seconds: elapsed.as_secs_f64(),
        throughput: ops as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: recorder.summary(),
        delivery: None,
    }
}

/// A value of about the size of a registered instance (address, port, tags, metadata), so
/// etcd and ZooKeeper store what Waggle stores.
pub(crate) fn instance_payload(n: u64) -> Vec<u8> {
    format!(
        r#"{{"service":"bench","id":"i{n}","address":"10.0.{}.{}","port":{},"tags":["v1"],"meta":{{"seq":"{n}"}},"weight":100,"zone":"z1"}}"#,
        (n / 250) % 250,
        n % 250 + 1,
        1 + n % 60_000
    )
    .into_bytes()
}
