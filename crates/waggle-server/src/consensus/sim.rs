//! Deterministic simulation of a three-member cluster: the real openraft core and Waggle's
//! state machine (registry, read model), over an in-memory network that injects crashes,
//! partitions and message delays chosen by a seeded RNG, on a single-threaded tokio runtime
//! with paused (virtual) time. Nothing reads the wall clock or the OS RNG: each member's
//! election timeout is fixed by the seed (openraft draws it from a one-value range), so a seed
//! replays the same run, event for event.
//!
//! Checked on every run:
//! - election safety: at most one leader per term;
//! - no acknowledged write is lost: after healing, every member holds every acknowledged
//!   registration, and all members hold the same state at the same revision.
//!
//! Replay a seed: `WAGGLE_SIM_SEED=1234 cargo test -p waggle-server sim::`; run more seeds
//! with `WAGGLE_SIM_SEEDS=200`. A failure names its seed and ends with the run's trace.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{
    BasicNode, Config, Entry, LogId, LogState, RaftLogReader, RaftNetwork, RaftNetworkFactory, ServerState,
    SnapshotPolicy, StorageError, Vote,
    error::{InstallSnapshotError, RPCError, RaftError, RemoteError},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
        VoteResponse,
    },
    storage::{LogFlushed, RaftLogStorage},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use waggle_core::{Command, InstanceSpec, SessionId, Ttl};

use super::{CommandBatch, Raft, StateMachine, TypeConfig, storage::Storage};
use crate::state::{LocalState, ReadLimits, ReadModel};

const MEMBERS: [u64; 3] = [1, 2, 3];
/// Virtual time with faults, then healed time for the cluster to converge.
const FAULTY: Duration = Duration::from_secs(20);
const HEALED: Duration = Duration::from_secs(6);

/// A member's durable log: survives its crashes (the harness keeps it).
#[derive(Clone, Default)]
struct MemLog(Arc<Mutex<MemLogState>>);

#[derive(Default)]
struct MemLogState {
    vote: Option<Vote<u64>>,
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    purged: Option<LogId<u64>>,
}

impl MemLog {
    fn state(&self) -> std::sync::MutexGuard<'_, MemLogState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        Ok(self.state().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let state = self.state();
        let last = state.entries.values().next_back().map(|e| e.log_id).or(state.purged);
        Ok(LogState { last_purged_log_id: state.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.state().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        Ok(self.state().vote)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.state();
        for entry in entries {
            state.entries.insert(entry.log_id.index, entry);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.state().entries.retain(|&i, _| i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let mut state = self.state();
        state.entries.retain(|&i, _| i > log_id.index);
        state.purged = Some(log_id);
        Ok(())
    }
}

/// The simulated network: who runs, who is cut off from whom, and how late messages are.
struct Net {
    rafts: Mutex<BTreeMap<u64, Raft>>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
}

#[derive(Default)]
struct Faults {
    isolated: BTreeSet<u64>,
    max_delay_ms: u64,
}

impl Net {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A message's delay (drawn from the seeded RNG), or `None` if it cannot get through.
    fn route(&self, from: u64, to: u64) -> Option<(Duration, Raft)> {
        let faults = Self::lock(&self.faults);
        if faults.isolated.contains(&from) || faults.isolated.contains(&to) {
            return None;
        }
        let raft = Self::lock(&self.rafts).get(&to).cloned()?;
        let delay = Self::lock(&self.rng).random_range(0..=faults.max_delay_ms);
        Some((Duration::from_millis(delay), raft))
    }
}

struct SimNetwork {
    from: u64,
    net: Arc<Net>,
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimPeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> SimPeer {
        SimPeer { from: self.from, to: target, net: self.net.clone() }
    }
}

struct SimPeer {
    from: u64,
    to: u64,
    net: Arc<Net>,
}

type Remote<E> = RPCError<u64, BasicNode, RaftError<u64, E>>;

impl SimPeer {
    /// Delivers a request after its delay and the answer after another, unless either way is
    /// cut (a dropped message looks like an unreachable peer).
    async fn deliver<T, E, F>(&self, call: impl FnOnce(Raft) -> F) -> Result<T, Remote<E>>
    where
        E: std::error::Error,
        F: std::future::Future<Output = Result<T, RaftError<u64, E>>>,
    {
        let (there, raft) = self.net.route(self.from, self.to).ok_or_else(|| super::network::unreachable("cut"))?;
        tokio::time::sleep(there).await;
        let answer = call(raft).await;
        let (back, _) = self.net.route(self.to, self.from).ok_or_else(|| super::network::unreachable("cut"))?;
        tokio::time::sleep(back).await;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))
    }
}

impl RaftNetwork<TypeConfig> for SimPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.deliver(|raft| async move { raft.append_entries(rpc).await }).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.deliver(|raft| async move { raft.install_snapshot(rpc).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.deliver(|raft| async move { raft.vote(rpc).await }).await
    }
}

/// One member's durable parts, kept across its crashes.
struct Member {
    id: u64,
    log: MemLog,
    storage: Arc<Storage>,
    read_model: Arc<ReadModel>,
    election_timeout_ms: u64,
    _dir: tempfile::TempDir,
}

impl Member {
    async fn boot(&mut self, net: &Arc<Net>) -> Raft {
        let config = Config {
            heartbeat_interval: 40,
            // One value: openraft draws it from this range with the OS RNG.
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.election_timeout_ms + 1,
            snapshot_policy: SnapshotPolicy::Never,
            ..Default::default()
        }
        .validate()
        .unwrap_or_else(|e| panic!("sim config: {e}"));
        // A restarted member rebuilds its state from the log, as after a real crash.
        let state = Arc::new(LocalState::new(ReadLimits { buffer: 64, history: 64, kv_quota: 1 << 30 }));
        self.read_model = state.read_model.clone();
        let sm = StateMachine::open(self.storage.clone(), state).unwrap_or_else(|e| panic!("state machine: {e}"));
        let network = SimNetwork { from: self.id, net: net.clone() };
        let raft = Raft::new(self.id, Arc::new(config), network, self.log.clone(), sm)
            .await
            .unwrap_or_else(|e| panic!("raft: {e}"));
        Net::lock(&net.rafts).insert(self.id, raft.clone());
        raft
    }
}

/// A fault the schedule injects at a virtual time.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Crash { node: u64, for_ms: u64 },
    Isolate { node: u64, for_ms: u64 },
    Delay { max_ms: u64 },
}

fn schedule(rng: &mut StdRng) -> Vec<(u64, Fault)> {
    let mut at = 1_000;
    let mut faults = Vec::new();
    while at < FAULTY.as_millis() as u64 {
        let node = MEMBERS[rng.random_range(0..MEMBERS.len())];
        let for_ms = rng.random_range(300..3_000);
        let fault = match rng.random_range(0..3) {
            0 => Fault::Crash { node, for_ms },
            1 => Fault::Isolate { node, for_ms },
            _ => Fault::Delay { max_ms: rng.random_range(0..60) },
        };
        faults.push((at, fault));
        // Faults overlap sometimes: the next may come before this one ends.
        at += rng.random_range(500..4_000);
    }
    faults
}

/// What one run observed.
struct Run {
    trace: Vec<String>,
    violations: Vec<String>,
}

fn now_ms(start: tokio::time::Instant) -> u128 {
    start.elapsed().as_millis()
}

async fn simulate(seed: u64) -> Run {
    let start = tokio::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let net = Arc::new(Net {
        rafts: Mutex::default(),
        faults: Mutex::default(),
        rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0xde1a7)),
    });
    let mut members: Vec<Member> = MEMBERS
        .iter()
        .map(|&id| {
            let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
            let storage = Arc::new(Storage::open(dir.path()).unwrap_or_else(|e| panic!("storage: {e}")));
            Member {
                id,
                log: MemLog::default(),
                storage,
                read_model: Arc::new(ReadModel::new(ReadLimits { buffer: 64, history: 64, kv_quota: 1 << 30 })),
                election_timeout_ms: rng.random_range(100..200),
                _dir: dir,
            }
        })
        .collect();
    let mut rafts = BTreeMap::new();
    for member in &mut members {
        rafts.insert(member.id, member.boot(&net).await);
    }
    let nodes: BTreeMap<u64, BasicNode> = MEMBERS.iter().map(|&id| (id, BasicNode::default())).collect();
    for raft in rafts.values() {
        let _ = raft.initialize(nodes.clone()).await;
    }
    let trace = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = |trace: &Arc<Mutex<Vec<String>>>, line: String| Net::lock(trace).push(line);
    let violations = Arc::new(Mutex::new(Vec::<String>::new()));

    // Election safety, sampled every 5 ms of virtual time.
    let monitor = {
        let (net, trace, violations) = (net.clone(), trace.clone(), violations.clone());
        tokio::spawn(async move {
            let mut leaders: BTreeMap<u64, u64> = BTreeMap::new();
            loop {
                let rafts = Net::lock(&net.rafts).clone();
                for (id, raft) in rafts {
                    let m = raft.metrics().borrow().clone();
                    if m.state == ServerState::Leader {
                        match leaders.insert(m.current_term, id) {
                            None => Net::lock(&trace).push(format!(
                                "{} leader term={} node={id}",
                                now_ms(start),
                                m.current_term
                            )),
                            Some(other) if other != id => Net::lock(&violations)
                                .push(format!("two leaders in term {}: {other} and {id}", m.current_term)),
                            Some(_) => {}
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    // The workload: one session, then a registration every 20 ms through whichever member
    // leads; a registration is acknowledged when client_write answers Ok.
    let acked = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let session = SessionId::new(1);
    let workload = {
        let (net, trace, acked) = (net.clone(), trace.clone(), acked.clone());
        tokio::spawn(async move {
            let ttl = Ttl::from_millis(86_400_000).unwrap_or_else(|e| panic!("{e}"));
            let mut n = 0u64;
            let mut opened = false;
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let leader = {
                    let rafts = Net::lock(&net.rafts);
                    rafts
                        .values()
                        .filter(|r| r.metrics().borrow().state == ServerState::Leader)
                        .max_by_key(|r| r.metrics().borrow().current_term)
                        .cloned()
                };
                let Some(leader) = leader else { continue };
                let command = if opened {
                    n += 1;
                    let spec = InstanceSpec::new("sim", &format!("10.0.{}.{}", n / 250, n % 250), 80)
                        .unwrap_or_else(|e| panic!("{e}"));
                    Command::Register { session, spec }
                } else {
                    Command::CreateSession { session, ttl, options: Default::default() }
                };
                let id = n;
                let (trace, acked) = (trace.clone(), acked.clone());
                let write = leader.client_write(CommandBatch(vec![command].into()));
                match tokio::time::timeout(Duration::from_secs(1), write).await {
                    Ok(Ok(resp)) => {
                        let ok = matches!(resp.data.0.first(), Some(super::CommandResult::Applied(_)));
                        if id == 0 {
                            opened |= ok;
                        } else if ok {
                            Net::lock(&acked).insert(format!("10.0.{}.{}:80", id / 250, id % 250));
                        }
                        Net::lock(&trace).push(format!("{} ack write={id} index={}", now_ms(start), resp.log_id.index));
                    }
                    Ok(Err(e)) => Net::lock(&trace).push(format!("{} refused write={id}: {e}", now_ms(start))),
                    Err(_) => Net::lock(&trace).push(format!("{} timeout write={id}", now_ms(start))),
                }
            }
        })
    };

    // Faults.
    let mut pending: Vec<(u64, u64, bool)> = Vec::new(); // (at, node, is_crash) to undo
    for (at, fault) in schedule(&mut rng) {
        loop {
            pending.sort();
            let next_undo = pending.first().copied().filter(|(t, ..)| *t <= at);
            let Some((t, node, crashed)) = next_undo else { break };
            pending.remove(0);
            tokio::time::sleep_until(start + Duration::from_millis(t)).await;
            undo(&mut members, &net, node, crashed, &trace, start).await;
        }
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        let busy: BTreeSet<u64> = pending.iter().map(|p| p.1).collect();
        match fault {
            Fault::Crash { node, for_ms } if busy.is_empty() => {
                let raft = Net::lock(&net.rafts).remove(&node);
                if let Some(raft) = raft {
                    let _ = raft.shutdown().await;
                }
                log(&trace, format!("{} crash node={node}", now_ms(start)));
                pending.push((at + for_ms, node, true));
            }
            Fault::Isolate { node, for_ms } if busy.is_empty() => {
                Net::lock(&net.faults).isolated.insert(node);
                log(&trace, format!("{} isolate node={node}", now_ms(start)));
                pending.push((at + for_ms, node, false));
            }
            Fault::Delay { max_ms } => {
                Net::lock(&net.faults).max_delay_ms = max_ms;
                log(&trace, format!("{} delay max={max_ms}ms", now_ms(start)));
            }
            // One member down or cut off at a time: the other two keep a quorum.
            _ => {}
        }
    }
    pending.sort();
    for (t, node, crashed) in pending {
        tokio::time::sleep_until(start + Duration::from_millis(t)).await;
        undo(&mut members, &net, node, crashed, &trace, start).await;
    }
    Net::lock(&net.faults).max_delay_ms = 0;
    tokio::time::sleep_until(start + FAULTY + HEALED / 2).await;
    workload.abort();
    tokio::time::sleep(HEALED / 2).await;
    monitor.abort();

    // Convergence: the same revision and instances everywhere, holding every acked write.
    let mut violations = Net::lock(&violations).clone();
    let acked = Net::lock(&acked).clone();
    let states: Vec<(u64, String, BTreeSet<String>)> = members
        .iter()
        .map(|m| {
            let (revision, services) = m.read_model.services();
            let held: BTreeSet<String> = services
                .iter()
                .flat_map(|(_, instances)| instances.values().map(|i| format!("{}:{}", i.spec.address, i.spec.port)))
                .collect();
            (m.id, revision.to_string(), held)
        })
        .collect();
    for (id, revision, held) in &states {
        if (revision, held) != (&states[0].1, &states[0].2) {
            violations.push(format!("member {id} differs: revision {revision} vs {}", states[0].1));
        }
        let lost: Vec<_> = acked.difference(held).collect();
        if !lost.is_empty() {
            let first: Vec<_> = lost.iter().take(5).collect();
            violations.push(format!("member {id} lost {} acknowledged writes, first {first:?}", lost.len()));
        }
    }
    if acked.len() < 50 {
        violations.push(format!("only {} writes acknowledged: the cluster made too little progress", acked.len()));
    }
    let mut trace = Net::lock(&trace).clone();
    trace.push(format!("end: {} acknowledged, revision {}", acked.len(), states[0].1));
    let rafts: Vec<Raft> = Net::lock(&net.rafts).values().cloned().collect();
    for raft in rafts {
        let _ = raft.shutdown().await;
    }
    Run { trace, violations }
}

/// Ends a crash (restart from the durable log) or an isolation.
async fn undo(
    members: &mut [Member],
    net: &Arc<Net>,
    node: u64,
    crashed: bool,
    trace: &Arc<Mutex<Vec<String>>>,
    start: tokio::time::Instant,
) {
    if crashed {
        if let Some(member) = members.iter_mut().find(|m| m.id == node) {
            member.boot(net).await;
        }
        Net::lock(trace).push(format!("{} restart node={node}", now_ms(start)));
    } else {
        Net::lock(&net.faults).isolated.remove(&node);
        Net::lock(trace).push(format!("{} heal node={node}", now_ms(start)));
    }
}

/// Runs one seed on a fresh single-threaded runtime with paused time.
fn run_seed(seed: u64) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(simulate(seed))
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("WAGGLE_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let count = std::env::var("WAGGLE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6u64);
    (0..count).collect()
}

#[test]
fn simulated_faults_keep_the_cluster_safe_and_convergent() {
    for seed in seeds() {
        let run = run_seed(seed);
        let faults = run.trace.iter().filter(|l| l.contains(" crash ") || l.contains(" isolate ")).count();
        let terms = run.trace.iter().filter(|l| l.contains(" leader term=")).count();
        eprintln!(
            "seed {seed}: {faults} crashes or isolations, {terms} leaders; {}",
            run.trace.last().map_or("", |l| l)
        );
        if !run.violations.is_empty() {
            let mut report = String::new();
            for line in &run.trace {
                let _ = writeln!(report, "  {line}");
            }
            panic!(
                "seed {seed}: {:?}\nreplay: WAGGLE_SIM_SEED={seed} cargo test -p waggle-server sim::\ntrace:\n{report}",
                run.violations
            );
        }
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    let seed = std::env::var("WAGGLE_SIM_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(42);
    let first = run_seed(seed);
    let second = run_seed(seed);
    assert!(first.trace.len() > 50, "a run with events: {}", first.trace.len());
    let diverged = first.trace.iter().zip(&second.trace).position(|(a, b)| a != b);
    assert_eq!(
        (diverged, first.trace.len()),
        (None, second.trace.len()),
        "seed {seed} diverged at event {diverged:?}: {:?} vs {:?}",
        diverged.map(|i| &first.trace[i]),
        diverged.map(|i| &second.trace[i])
    );
}
