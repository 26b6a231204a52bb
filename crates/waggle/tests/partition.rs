//! A minority partition on a real network: three `waggle server` processes, each in a network
//! namespace of its own joined by a bridge (10.77.0.1–3), and a client namespace (10.77.0.100)
//! that reaches all of them. The leader is cut off from the other two members (blackhole
//! routes both ways) while the client still reaches it:
//!
//! - the isolated old leader acknowledges no write, and expires no session even though the
//!   sessions' keepalives no longer reach it;
//! - the majority elects a leader and keeps acknowledging writes;
//! - after healing, every member converges on the same state, with every acknowledged write.
//!
//! Needs root (CAP_NET_ADMIN) and iproute2; the namespaces are this test's own and are deleted
//! when it ends. Every address used lives inside them. Interop tier: run by
//! `cargo test --workspace -- --include-ignored` as root, where missing root or `ip` fails it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{PATIENCE, Proc, finish, waggle_in_netns};
use tempfile::TempDir;

const SUBNET: &str = "10.77.0";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("iproute2's `ip` runs (apt-get install iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (this test needs root to create network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test's namespaces: a switch, three members and a client. Deleted on drop.
struct Net {
    prefix: String,
}

impl Net {
    fn new() -> Net {
        let net = Net { prefix: format!("wgl{}", std::process::id()) };
        let switch = net.ns("s");
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (host, addr) in [("1", "1"), ("2", "2"), ("3", "3"), ("c", "100")] {
            let ns = net.ns(host);
            let port = format!("p{host}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &switch]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch, "link", "set", &port, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{SUBNET}.{addr}/24"), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        net
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Cuts (or heals) the links between member `a` and member `b`, both ways.
    fn cut(&self, a: u64, b: u64, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        ip(&["-n", &self.ns(&a.to_string()), "route", verb, "blackhole", &format!("{SUBNET}.{b}/32")]);
        ip(&["-n", &self.ns(&b.to_string()), "route", verb, "blackhole", &format!("{SUBNET}.{a}/32")]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for host in ["1", "2", "3", "c", "s"] {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(host)]).output();
        }
    }
}

fn url(id: u64) -> String {
    format!("http://{SUBNET}.{id}:8502")
}

/// A one-shot client command run from the client namespace.
fn client(net: &Net, servers: &str, args: &[&str]) -> support::Output {
    let mut full = vec!["--server", servers];
    full.extend_from_slice(args);
    finish(Proc::spawn_command("client", waggle_in_netns(&net.ns("c"), &full)))
}

/// `waggle register` from the client namespace; `Some` once it printed `registered`.
fn register(net: &Net, servers: &str, address: &str, ttl: &str, within: Duration) -> Option<Proc> {
    let args = ["--server", servers, "register", "svc", address, "--ttl", ttl];
    let mut proc = Proc::spawn_command(&format!("register {address}"), waggle_in_netns(&net.ns("c"), &args));
    proc.try_expect_line(within, |l| l.starts_with("registered ")).map(|_| proc)
}

/// The instance addresses member `id` holds in its local state.
fn addresses(net: &Net, id: u64) -> Option<Vec<String>> {
    let out = client(net, &url(id), &["instances", "svc", "--all", "--json"]);
    let list: Value = serde_json::from_str(&out.stdout).ok()?;
    let mut found: Vec<String> =
        list.as_array()?.iter().map(|i| format!("{}:{}", i["address"].as_str().unwrap_or(""), i["port"])).collect();
    found.sort();
    Some(found)
}

#[test]
#[ignore = "interop: needs root and iproute2"]
fn an_isolated_leader_acknowledges_nothing_expires_nothing_and_rejoins() {
    support::require_tool("ip", "apt install iproute2");
    support::require_root("the partition test creates network namespaces (`ip netns add`)");
    let net = Net::new();
    let dir = TempDir::new().unwrap();
    let cluster = (1..=3).map(|i| format!("{i}={SUBNET}.{i}:8300")).collect::<Vec<_>>().join(",");
    let mut members: Vec<Proc> = (1..=3u64)
        .map(|i| {
            let data = dir.path().join(format!("n{i}"));
            let args = [
                "server",
                "--data-dir",
                data.to_str().unwrap(),
                "--node-id",
                &i.to_string(),
                "--peer-addr",
                &format!("{SUBNET}.{i}:8300"),
                "--initial-cluster",
                &cluster,
                "--grpc-addr",
                &format!("{SUBNET}.{i}:8502"),
                "--http-addr",
                &format!("{SUBNET}.{i}:8500"),
            ];
            Proc::spawn_command(&format!("node{i}"), waggle_in_netns(&net.ns(&i.to_string()), &args))
        })
        .collect();
    for member in &mut members {
        member.expect_line("ready", PATIENCE, |l| l.starts_with("waggle server ready"));
    }
    let all = (1..=3).map(url).collect::<Vec<_>>().join(",");
    let listed = client(&net, &all, &["members", "list", "--json"]);
    let leader = serde_json::from_str::<Value>(&listed.stdout).unwrap()["leader"].as_u64().expect("a leader");
    let others: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    let majority = others.iter().map(|i| url(*i)).collect::<Vec<_>>().join(",");

    // Before the partition: a session with a short TTL whose keepalives go to the majority,
    // and an ordinary registration.
    let mut acked = Vec::new();
    let short = register(&net, &majority, "10.0.0.1:80", "2s", PATIENCE).expect("acknowledged before the partition");
    acked.push("10.0.0.1:80".to_owned());
    let before = register(&net, &all, "10.0.0.2:80", "60s", PATIENCE).expect("acknowledged before the partition");
    acked.push("10.0.0.2:80".to_owned());
    let converged =
        support::poll(PATIENCE, Duration::from_millis(100), || (addresses(&net, leader)? == acked).then_some(()));
    assert!(converged.is_some(), "the leader holds both registrations before the partition");

    for other in &others {
        net.cut(leader, *other, true);
    }
    let cut_at = Instant::now();

    // The isolated old leader acknowledges no write.
    let refused = register(&net, &url(leader), "10.0.0.3:80", "60s", Duration::from_secs(3));
    assert!(refused.is_none(), "the isolated old leader acknowledged a write");
    // The majority elects a leader of its own and acknowledges writes.
    let during = register(&net, &majority, "10.0.0.4:80", "60s", PATIENCE).expect("the majority takes writes");
    acked.push("10.0.0.4:80".to_owned());
    // Well past the short session's TTL without a keepalive reaching the isolated node: it
    // still expires nothing (it cannot commit, so it must not act on its clock).
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed()));
    let isolated = addresses(&net, leader).expect("the isolated node still answers reads");
    assert!(isolated.contains(&"10.0.0.1:80".to_owned()), "the isolated node expired a session: {isolated:?}");
    assert!(isolated.contains(&"10.0.0.2:80".to_owned()), "{isolated:?}");
    assert!(!isolated.contains(&"10.0.0.4:80".to_owned()), "the isolated node cannot know later writes");
    // A linearizable read cannot be served by the isolated node (no quorum confirms it), but
    // is by the majority, and includes the write the isolated node does not know.
    let stale = client(&net, &url(leader), &["instances", "svc", "--linearizable"]);
    assert_ne!(stale.code, Some(0), "the isolated node served a linearizable read: {stale:?}");
    eprintln!("isolated linearizable read: {}", stale.stderr.trim());
    let fresh = client(&net, &majority, &["instances", "svc", "--all", "--json", "--linearizable"]);
    assert_eq!(fresh.code, Some(0), "{fresh:?}");
    assert!(fresh.stdout.contains("10.0.0.4"), "{fresh:?}");

    for other in &others {
        net.cut(leader, *other, false);
    }
    // After healing: every member converges on one state holding every acknowledged write.
    let healed = support::poll(PATIENCE, Duration::from_millis(200), || {
        let states: Vec<Vec<String>> = (1..=3).map(|i| addresses(&net, i)).collect::<Option<_>>()?;
        let agree = states.iter().all(|s| *s == states[0]);
        (agree && acked.iter().all(|a| states[0].contains(a))).then_some(states[0].clone())
    });
    let state = healed.unwrap_or_else(|| {
        let states: Vec<_> = (1..=3).map(|i| addresses(&net, i)).collect();
        panic!("the members did not converge on every acknowledged write {acked:?}: {states:?}")
    });
    assert!(!state.contains(&"10.0.0.3:80".to_owned()), "the unacknowledged write appeared: {state:?}");
    drop((short, before, during, members));
}
