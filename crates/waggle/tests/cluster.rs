//! A three-member cluster of real `waggle server` processes under steady registration load:
//! `kill -9` of the leader, five times, restarting it each time. Every acknowledged
//! registration must be on every member afterwards, and a session that kept sending
//! keepalives must never expire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{PATIENCE, Proc, free_port};
use waggle_client::{Client, ClientConfig, HealthFilter, InstanceSpec, Ttl};

struct Member {
    args: Vec<String>,
    proc: Option<Proc>,
    url: String,
}

impl Member {
    fn spawn(&mut self, id: u64) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.proc = Some(Proc::spawn(&format!("node{id}"), &args));
    }

    fn wait_ready(&mut self) {
        let proc = self.proc.as_mut().unwrap();
        proc.expect_line("ready", PATIENCE, |line| line.starts_with("waggle server ready"));
    }
}

async fn register_until_acked(client: &Client, spec: InstanceSpec) -> waggle_client::Registration {
    let attempt = async {
        loop {
            match client.register(spec.clone()).await {
                Ok(registration) => return registration,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(PATIENCE, attempt).await.expect("a registration is acknowledged within the patience")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn killing_the_leader_five_times_loses_no_acknowledged_write() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<(u16, u16, u16)> = (0..3).map(|_| (free_port(), free_port(), free_port())).collect();
    let cluster: Vec<String> = ports.iter().enumerate().map(|(i, p)| format!("{}=127.0.0.1:{}", i + 1, p.2)).collect();
    let cluster = cluster.join(",");
    let mut members: Vec<Member> = dirs
        .iter()
        .zip(&ports)
        .enumerate()
        .map(|(i, (dir, (grpc, http, peer)))| {
            let args = [
                "server",
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--node-id",
                &(i + 1).to_string(),
                "--peer-addr",
                &format!("127.0.0.1:{peer}"),
                "--initial-cluster",
                &cluster,
                "--grpc-addr",
                &format!("127.0.0.1:{grpc}"),
                "--http-addr",
                &format!("127.0.0.1:{http}"),
            ];
            Member { args: args.map(str::to_owned).to_vec(), proc: None, url: format!("http://127.0.0.1:{grpc}") }
        })
        .collect();
    tokio::task::block_in_place(|| {
        for (i, member) in members.iter_mut().enumerate() {
            member.spawn(i as u64 + 1);
        }
        for member in &mut members {
            member.wait_ready();
        }
    });
    let urls = members.iter().map(|m| m.url.clone()).collect::<Vec<_>>().join(",");
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_millis(3_000).unwrap();
    config.backoff_max = Duration::from_millis(500);
    let client = Client::connect_with(&urls, config.clone()).await.unwrap();
    // A registration whose session keeps sending keepalives through every failover.
    let keeper = register_until_acked(&client, InstanceSpec::new("keep", "10.9.9.9", 1).unwrap()).await;

    // A watcher that fails over with the client: the revision its cache reports never goes
    // back, and at the end it holds every acknowledged registration.
    let discovery = client.discover("load").unwrap();
    let revisions = {
        let (discovery, stop) = (discovery.clone(), Arc::new(AtomicBool::new(false)));
        let handle = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut seen = Vec::new();
                while !stop.load(SeqCst) {
                    if let Some(revision) = discovery.revision() {
                        seen.push(revision.get());
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            }
        });
        (handle, stop)
    };

    // Steady load: one registration after another, each retried until acknowledged.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut registrations = Vec::new();
            let mut n = 0u32;
            while !stop.load(SeqCst) {
                n += 1;
                let address = format!("10.1.{}.{}", n / 250, n % 250);
                let spec = InstanceSpec::new("load", &address, 80).unwrap();
                registrations.push(register_until_acked(&client, spec).await);
                acked.lock().unwrap().push(format!("{address}:80"));
            }
            registrations
        })
    };

    for round in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let find_leader = async {
            loop {
                if let Ok(members) = client.members().await
                    && let Some(leader) = members.leader
                {
                    return leader;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let leader = tokio::time::timeout(PATIENCE, find_leader).await.expect("a leader");
        let member = &mut members[leader as usize - 1];
        tokio::task::block_in_place(|| {
            member.proc.as_mut().unwrap().sigkill();
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| {
            member.spawn(leader);
            member.wait_ready();
        });
        println!(
            "round {round}: killed and restarted node {leader}; {} registrations so far",
            acked.lock().unwrap().len()
        );
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, SeqCst);
    let registrations = load.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20, "the load kept going through the failovers: {}", acked.len());

    // Every member has every acknowledged registration, and the kept-alive session survived.
    for member in &members {
        let one = Client::connect_with(&member.url, config.clone()).await.unwrap();
        let check = async {
            loop {
                let load = one.instances("load", HealthFilter::All).await.unwrap_or_default();
                let ids: std::collections::HashSet<String> = load.iter().map(|i| i.id().to_string()).collect();
                let keep = one.instances("keep", HealthFilter::All).await.unwrap_or_default();
                if acked.iter().all(|id| ids.contains(id)) && keep.len() == 1 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(PATIENCE, check)
            .await
            .unwrap_or_else(|_| panic!("{} is missing acknowledged writes", member.url));
    }
    println!("{} acknowledged registrations, all present on all three members", acked.len());
    let cached = async {
        loop {
            let ids: std::collections::HashSet<String> =
                discovery.all_instances().iter().map(|i| i.id().to_string()).collect();
            if acked.iter().all(|id| ids.contains(id)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(PATIENCE, cached).await.expect("the failed-over watcher holds every acknowledged write");
    revisions.1.store(true, SeqCst);
    let seen = revisions.0.await.unwrap();
    assert!(seen.len() > 100, "the watcher was sampled throughout: {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "the watcher's revision went back: {seen:?}");
    drop((registrations, keeper));
}
