//! Cluster administration through the real binary: `waggle snapshot save | restore` and
//! `waggle members add | remove` with `waggle server --join`, including the errors a user
//! gets for bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{PATIENCE, Proc, Server, client, free_port, instances, poll, run};
use tempfile::TempDir;

fn start_register(url: &str, args: &[&str]) -> Proc {
    let mut full = vec!["--server", url, "register"];
    full.extend_from_slice(args);
    let mut proc = Proc::spawn("register", &full);
    proc.expect_line("'registered ...'", PATIENCE, |l| l.starts_with("registered "));
    proc
}

#[test]
fn snapshot_save_then_restore_into_a_fresh_data_dir() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    let url = server.url();
    let _a = start_register(&url, &["api", "10.0.0.1:80", "--ttl", "60s"]);
    let _b = start_register(&url, &["api", "10.0.0.2:80", "--ttl", "60s"]);

    let file = dir.path().join("backup.wgl");
    let file_arg = file.to_str().unwrap();
    let saved = client(&url, &["snapshot", "save", file_arg]);
    assert_eq!(saved.code, Some(0), "{saved:?}");
    assert!(saved.stdout.starts_with("saved "), "{saved:?}");
    assert!(!dir.path().join("backup.wgl.part").exists());

    let restored_dir = dir.path().join("restored");
    let restored_arg = restored_dir.to_str().unwrap();
    let restored = run(&["snapshot", "restore", file_arg, "--data-dir", restored_arg]);
    assert_eq!(restored.code, Some(0), "{restored:?}");
    assert!(restored.stdout.contains("2 instances"), "{restored:?}");
    // Revisions (and so fencing tokens) go on far ahead of the backup's.
    let revision: u64 = restored.stdout.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(revision > 1_000_000_000, "{restored:?}");
    let other = dir.path().join("restored-small-bump");
    let small = run(&["snapshot", "restore", file_arg, "--data-dir", other.to_str().unwrap(), "--bump-revision", "7"]);
    assert_eq!(small.code, Some(0), "{small:?}");
    let small_revision: u64 = small.stdout.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(small_revision, revision - 1_000_000_000 + 7, "{small:?}");
    // A second restore into the same data dir would overwrite a node: refused.
    let again = run(&["snapshot", "restore", file_arg, "--data-dir", restored_arg]);
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("fresh"), "{again:?}");

    let node = Server::start(&restored_dir, "127.0.0.1:0");
    let list = instances(&node.url(), "api");
    assert_eq!(list.len(), 2, "{list:?}");

    // Damaged and missing files are refused with a message, and write nothing.
    let damaged = dir.path().join("damaged.wgl");
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    let target = dir.path().join("never");
    let refused = run(&["snapshot", "restore", damaged.to_str().unwrap(), "--data-dir", target.to_str().unwrap()]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("checksum"), "{refused:?}");
    assert!(!target.exists());
    let missing = run(&["snapshot", "restore", "/nonexistent/backup", "--data-dir", target.to_str().unwrap()]);
    assert_ne!(missing.code, Some(0));
    assert!(missing.stderr.contains("cannot read"), "{missing:?}");

    // A single node has no members to change.
    let single = client(&url, &["members", "add", "2", "127.0.0.1:1"]);
    assert_ne!(single.code, Some(0));
    assert!(single.stderr.contains("single node"), "{single:?}");
}

fn members(url: &str) -> Value {
    let out = client(url, &["members", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn role(list: &Value, id: u64) -> Option<String> {
    list["members"].as_array()?.iter().find(|m| m["id"] == id).map(|m| m["role"].as_str().unwrap().to_owned())
}

#[test]
fn a_joining_node_is_added_as_a_voter_and_removed() {
    let dir = TempDir::new().unwrap();
    let peers: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let cluster = (1..=3).map(|i| format!("{i}=127.0.0.1:{}", peers[i - 1])).collect::<Vec<_>>().join(",");
    let node_args = |i: usize| {
        let data = dir.path().join(format!("n{i}"));
        vec![
            "server".to_owned(),
            "--data-dir".to_owned(),
            data.to_str().unwrap().to_owned(),
            "--node-id".to_owned(),
            i.to_string(),
            "--grpc-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--http-addr".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]
    };
    let mut procs: Vec<Proc> = (1..=3)
        .map(|i| {
            let mut args = node_args(i);
            args.extend(["--initial-cluster".to_owned(), cluster.clone()]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Proc::spawn(&format!("node{i}"), &args)
        })
        .collect();
    let urls: Vec<String> = procs
        .iter_mut()
        .map(|p| {
            let line = p.expect_line("ready", PATIENCE, |l| l.starts_with("waggle server ready"));
            format!("http://{}", support::parse_ready(&line).grpc)
        })
        .collect();
    let url = urls.join(",");

    // The fourth node serves its peer address and waits to be added. (The bootstrap members
    // took theirs from --initial-cluster.)
    let mut args = node_args(4);
    args.extend(["--peer-addr".to_owned(), format!("127.0.0.1:{}", peers[3]), "--join".to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut joining = Proc::spawn("node4", &args);
    let peer4 = format!("127.0.0.1:{}", peers[3]);

    // Bad input is a usage error that names the problem.
    let bad = client(&url, &["members", "add", "0", &peer4]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let bad = client(&url, &["members", "add", "4", "nowhere"]);
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let unknown = client(&url, &["members", "remove", "9"]);
    assert_ne!(unknown.code, Some(0));
    assert!(unknown.stderr.contains("not in the cluster"), "{unknown:?}");

    // Retried while node 4 is still starting ("nothing answers at ...").
    let added = poll(PATIENCE, Duration::from_millis(50), || {
        let out = client(&url, &["members", "add", "4", &peer4, "--json"]);
        (out.code == Some(0) || !out.stderr.contains("nothing answers")).then_some(out)
    })
    .expect("node 4 answers");
    assert_eq!(added.code, Some(0), "{added:?}");
    let list: Value = serde_json::from_str(&added.stdout).unwrap();
    assert_eq!(list["members"].as_array().unwrap().len(), 4, "{list}");
    assert_ne!(role(&list, 4).as_deref(), Some("learner"), "{list}");
    let line = joining.expect_line("ready", PATIENCE, |l| l.starts_with("waggle server ready"));
    let url4 = format!("http://{}", support::parse_ready(&line).grpc);
    // The new member serves clients: a write through it reaches the others.
    let _r = start_register(&url4, &["web", "10.4.0.1:80", "--ttl", "60s"]);
    let seen = poll(PATIENCE, Duration::from_millis(50), || (instances(&urls[0], "web").len() == 1).then_some(()));
    assert!(seen.is_some(), "a write through the new member is replicated");
    assert_eq!(members(&url4)["members"].as_array().unwrap().len(), 4);

    let removed = client(&url, &["members", "remove", "4", "--json"]);
    assert_eq!(removed.code, Some(0), "{removed:?}");
    let list: Value = serde_json::from_str(&removed.stdout).unwrap();
    assert_eq!(list["members"].as_array().unwrap().len(), 3, "{list}");
    assert_eq!(role(&list, 4), None);
    let gone = poll(PATIENCE, Duration::from_millis(50), || role(&members(&urls[1]), 4).is_none().then_some(()));
    assert!(gone.is_some(), "every member sees the removal");
    // The removed member's server notices and exits (status 1, saying why).
    let status = joining.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(1));
    assert!(joining.stderr().contains("removed from the cluster"), "{}", joining.stderr());
}
