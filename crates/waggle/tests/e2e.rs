//! End-to-end tests: the real `waggle` binary as server, registrar, watcher and one-shot client.
//!
//! Every server binds 127.0.0.1 (port 0 unless a test needs a stable port), keeps its data in a
//! `TempDir`, and every spawned process is killed when its guard drops. Waits poll with
//! generous deadlines; the only timing bound asserted is the one the spec gives (a SIGKILLed
//! registrar's instance disappears within TTL + 1 s).

#![allow(clippy::unwrap_used)]

mod support;

use std::{
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{PATIENCE, Proc, Server, client, http_get, ids, instances, poll};
use tempfile::TempDir;

/// Polling period for "eventually" checks.
const TICK: Duration = Duration::from_millis(50);

/// A server on ports picked by the OS, with its data in a fresh temporary dir.
fn start_server() -> (TempDir, Server) {
    let dir = TempDir::new().unwrap();
    let server = Server::start(&dir.path().join("data"), "127.0.0.1:0");
    (dir, server)
}

/// Starts `waggle register ARGS...` against `url` and waits for its `registered` line.
fn start_register(url: &str, args: &[&str]) -> (Proc, String) {
    let mut full = vec!["--server", url, "register"];
    full.extend_from_slice(args);
    let mut proc = Proc::spawn(&format!("register {}", args.join(" ")), &full);
    let line = proc.expect_line("'registered ...'", PATIENCE, |l| l.starts_with("registered "));
    (proc, line)
}

/// Parses one `watch --json` line.
fn watch_event(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("watch line is not JSON ({e}): {line}"))
}

fn is_event(line: &str, kind: &str, id: &str) -> bool {
    serde_json::from_str::<Value>(line).is_ok_and(|v| v["event"] == kind && v["instance"]["id"] == id)
}

#[test]
fn register_instances_watch_roundtrip() {
    let (_dir, server) = start_server();
    let url = server.url();

    // The watcher starts first; it reports the instance as added whether it connects before
    // or after the registration (existing instances are replayed as `added`).
    let mut watch = Proc::spawn("watch", &["--server", &url, "watch", "web", "--json"]);

    let (mut register, line) = start_register(
        &url,
        &["web", "127.0.0.1:9001", "--tag", "v1", "--meta", "version=2", "--weight", "7", "--zone", "z1"],
    );
    assert!(line.starts_with("registered web/127.0.0.1:9001 at 127.0.0.1:9001 "), "registered line: {line}");

    // The registration is durable and visible as soon as `registered` is printed.
    let list = instances(&url, "web");
    assert_eq!(list.len(), 1, "one instance expected: {list:?}");
    let inst = list[0].as_object().unwrap();
    let mut keys: Vec<&str> = inst.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected_keys = vec![
        "id",
        "service",
        "address",
        "port",
        "tags",
        "meta",
        "weight",
        "zone",
        "status",
        "create_revision",
        "modify_revision",
    ];
    expected_keys.sort_unstable();
    assert_eq!(keys, expected_keys, "instance JSON keys: {inst:?}");
    assert_eq!(inst["id"], "127.0.0.1:9001");
    assert_eq!(inst["service"], "web");
    assert_eq!(inst["address"], "127.0.0.1");
    assert_eq!(inst["port"], 9001);
    assert_eq!(inst["tags"], serde_json::json!(["v1"]));
    assert_eq!(inst["meta"], serde_json::json!({"version": "2"}));
    assert_eq!(inst["weight"], 7);
    assert_eq!(inst["zone"], "z1");
    assert_eq!(inst["status"], "passing");
    let create = inst["create_revision"].as_u64().unwrap();
    let modify = inst["modify_revision"].as_u64().unwrap();
    assert!(create >= 2, "create_revision {create}");
    assert!(modify >= create, "modify_revision {modify} < create {create}");

    let services = client(&url, &["services", "--json"]);
    assert_eq!(services.code, Some(0), "services: {services:?}");
    let services: Value = serde_json::from_str(&services.stdout).unwrap();
    let names: Vec<&str> = services.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web"], "services: {services}");

    let added = watch.expect_line("'added 127.0.0.1:9001'", PATIENCE, |l| is_event(l, "added", "127.0.0.1:9001"));
    let added = watch_event(&added);
    assert_eq!(added["instance"]["port"], 9001);
    assert_eq!(added["instance"]["weight"], 7);
    assert!(added["revision"].as_u64().unwrap() >= create);

    // SIGTERM: the registrar deregisters, then exits 0; the instance is gone at once.
    let status = register.terminate(PATIENCE);
    register.assert_success(status);
    let gone = poll(Duration::from_secs(1), TICK, || instances(&url, "web").is_empty().then_some(()));
    assert!(gone.is_some(), "instance still listed after the registrar exited: {:?}", instances(&url, "web"));

    let removed = watch.expect_line("'removed 127.0.0.1:9001'", PATIENCE, |l| is_event(l, "removed", "127.0.0.1:9001"));
    let removed = watch_event(&removed);
    assert!(removed["revision"].as_u64().unwrap() > added["revision"].as_u64().unwrap());

    // The watcher also exits cleanly on SIGTERM.
    let status = watch.terminate(PATIENCE);
    watch.assert_success(status);
}

#[test]
fn sigkill_of_register_expires_within_ttl() {
    let (_dir, server) = start_server();
    let url = server.url();
    let (mut register, _) = start_register(&url, &["web", "127.0.0.1:9010", "--ttl", "2s"]);
    assert_eq!(ids(&instances(&url, "web")), ["127.0.0.1:9010"]);

    register.sigkill();
    let killed = Instant::now();
    // Poll every 100 ms; stop at a generous bound so a failure reports the real delay.
    let emptied = poll(Duration::from_secs(15), Duration::from_millis(100), || {
        instances(&url, "web").is_empty().then(Instant::now)
    });
    let emptied = emptied.expect("the SIGKILLed registrar's instance never expired");
    let elapsed = emptied - killed;
    eprintln!("instance expired {elapsed:?} after SIGKILL (TTL 2 s)");
    assert!(
        elapsed <= Duration::from_secs(3),
        "instance expired {elapsed:?} after SIGKILL; TTL 2 s + 1 s allows at most 3 s"
    );
}

#[test]
fn server_kill9_restart_keeps_registrations_and_session() {
    let dir = TempDir::new().unwrap();
    let data = dir.path().join("data");
    // The registrar reconnects to the same URL, so the gRPC port must survive the restart.
    let grpc = format!("127.0.0.1:{}", support::free_port());
    let mut server = Server::start(&data, &grpc);
    let url = server.url();

    let (mut live, _) = start_register(&url, &["web", "127.0.0.1:9002", "--ttl", "3s"]);
    let (mut gone, _) = start_register(&url, &["web", "127.0.0.1:9003"]);
    assert_eq!(ids(&instances(&url, "web")), ["127.0.0.1:9002", "127.0.0.1:9003"]);
    let status = gone.terminate(PATIENCE);
    gone.assert_success(status);
    let before = instances(&url, "web");
    assert_eq!(ids(&before), ["127.0.0.1:9002"]);

    let status = server.proc.sigkill();
    assert!(!status.success(), "server was SIGKILLed: {status}");
    drop(server);

    let server = Server::start(&data, &grpc);
    assert_eq!(server.url(), url);
    let after = instances(&url, "web");
    assert_eq!(after, before, "the registry must come back from disk exactly as it was");

    // Across two TTLs the live session is kept alive by the registrar's keepalives (which
    // reach the restarted server) and nothing expires or re-registers it.
    let ttl = Duration::from_secs(3);
    let until = Instant::now() + 2 * ttl + Duration::from_millis(500);
    while Instant::now() < until {
        let list = instances(&url, "web");
        assert_eq!(
            list,
            before,
            "after restart the live instance must stay, unchanged, and the deregistered one stay gone\nregistrar stderr:\n{}",
            live.stderr()
        );
        assert!(live.try_status().is_none(), "registrar exited: {}", live.stderr());
        thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(after[0]["create_revision"], before[0]["create_revision"], "nothing re-registered the live instance");

    // The restarted server does track the restored session: once its keepalives stop, it
    // expires (so the instance staying above was the keepalives' doing, not a forgotten
    // session).
    live.sigkill();
    let expired = poll(PATIENCE, Duration::from_millis(100), || instances(&url, "web").is_empty().then_some(()));
    assert!(expired.is_some(), "the restored session never expired after its registrar was killed");
    drop(server);
}

#[test]
fn invalid_input_is_rejected_naming_the_field() {
    let (_dir, server) = start_server();
    let url = server.url();
    let cases: &[(&[&str], &str)] = &[
        (&["register", "Web", "127.0.0.1:80"], "service"),
        (&["register", "web", "127.0.0.1:0"], "port"),
        (&["register", "web", "127.0.0.1:70000"], "port"),
        (&["register", "web", "127.0.0.1:80", "--meta", "bad key=1"], "meta"),
        (&["register", "web", "127.0.0.1:80", "--meta", "novalue"], "meta"),
        (&["register", "web", "127.0.0.1:80", "--ttl", "500ms"], "ttl"),
        (&["register", "web", "127.0.0.1:80", "--ttl", "25h"], "ttl"),
        (&["register", "web", "127.0.0.1:80", "--weight", "0"], "weight"),
        (&["register", "web", "bad_host:80"], "address"),
        (&["instances", "UPPER"], "service"),
    ];
    for (args, field) in cases {
        let out = client(&url, args);
        assert_eq!(out.code, Some(2), "{args:?} must be a usage error: {out:?}");
        assert!(
            out.stderr.contains(&format!("invalid {field}")),
            "{args:?}: stderr must name the field {field:?}: {out:?}"
        );
    }
    // Nothing was registered by any of them.
    assert!(instances(&url, "web").is_empty());

    let out = client(&url, &["services", "--bogus"]);
    assert_eq!(out.code, Some(2), "unknown flag: {out:?}");
    assert!(out.stderr.contains("--bogus"), "{out:?}");

    let out = client("http://127.0.0.1:1", &["services"]);
    assert_eq!(out.code, Some(1), "unreachable server: {out:?}");
    assert!(out.stderr.contains("error"), "{out:?}");
}

#[test]
fn deregister_command_and_not_found() {
    let (_dir, server) = start_server();
    let url = server.url();
    let (mut register, _) = start_register(&url, &["web", "127.0.0.1:9005"]);
    assert_eq!(ids(&instances(&url, "web")), ["127.0.0.1:9005"]);

    let out = client(&url, &["deregister", "web", "127.0.0.1:9005"]);
    assert_eq!(out.code, Some(0), "deregister: {out:?}");
    assert!(out.stdout.contains("deregistered web/127.0.0.1:9005"), "{out:?}");
    assert!(instances(&url, "web").is_empty());

    let out = client(&url, &["deregister", "web", "127.0.0.1:9005"]);
    assert_eq!(out.code, Some(1), "second deregister: {out:?}");
    assert!(out.stderr.contains("not found"), "{out:?}");

    // The registrar whose instance was removed under it still exits cleanly on SIGTERM.
    let status = register.terminate(PATIENCE);
    register.assert_success(status);
    assert!(instances(&url, "web").is_empty());
}

#[test]
fn dev_mode_and_health() {
    let cwd = TempDir::new().unwrap();
    let mut proc = Proc::spawn_in(
        "dev server",
        &["server", "--dev", "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"],
        Some(cwd.path()),
    );
    let line = proc.expect_line("'waggle server ready'", PATIENCE, |l| l.starts_with("waggle server ready "));
    let ready = support::parse_ready(&line);
    assert_ne!(ready.grpc.port(), 0);
    assert_ne!(ready.http.port(), 0);
    assert!(ready.data_dir.is_dir(), "dev data dir {:?} exists while running", ready.data_dir);

    let (code, body) = http_get(ready.http, "/health");
    assert_eq!(code, 200, "GET /health: {body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    // The dev server serves clients like any other.
    let url = format!("http://{}", ready.grpc);
    let out = client(&url, &["services", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");

    let status = proc.terminate(PATIENCE);
    proc.assert_success(status);
    assert!(!ready.data_dir.exists(), "dev data dir {:?} must be deleted on exit", ready.data_dir);
    // --dev must not create the default ./waggle-data either.
    assert!(std::fs::read_dir(cwd.path()).unwrap().next().is_none(), "dev mode wrote into its working directory");
}

#[test]
fn kv_commands_and_their_exit_codes() {
    let (_dir, server) = start_server();
    let url = server.url();
    let ok = |args: &[&str]| {
        let out = client(&url, args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        out.stdout
    };
    assert!(ok(&["kv", "put", "app/db", "postgres://db:5432"]).starts_with("written app/db revision="));
    ok(&["kv", "put", "app/port", "5432", "--flags", "9"]);
    assert_eq!(ok(&["kv", "get", "app/db"]), "postgres://db:5432");
    let entry: Value = serde_json::from_str(&ok(&["kv", "get", "app/port", "--json"])).unwrap();
    assert_eq!(
        (entry["value"].as_str(), entry["flags"].as_u64(), entry["version"].as_u64()),
        (Some("5432"), Some(9), Some(1))
    );
    assert_eq!(ok(&["kv", "list", "app/"]), "app/db:postgres://db:5432\napp/port:5432");
    assert_eq!(ok(&["kv", "list", "--keys"]), "app/db\napp/port");
    let revision = entry["modify_revision"].as_u64().unwrap().to_string();
    ok(&["kv", "put", "app/port", "6432", "--cas", &revision]);

    // Runtime failures exit 1, usage errors 2.
    for (args, code, text) in [
        (&["kv", "put", "app/port", "7432", "--cas", "1"][..], 1, "not written"),
        (&["kv", "put", "app/new", "x", "--cas", "0"][..], 0, ""),
        (&["kv", "get", "missing"][..], 1, "no key"),
        (&["kv", "put", "/abs", "x"][..], 2, "invalid key"),
        (&["kv", "delete", "app/", "--prefix", "--cas", "3"][..], 2, "cannot be used"),
        (&["kv", "delete", "app/db", "--cas", "1"][..], 1, "not deleted"),
    ] {
        let out = client(&url, args);
        assert_eq!(out.code, Some(code), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(text), "{args:?}: {}", out.stderr);
    }
    // A watch prints every change under its prefix as it happens.
    let mut watch = Proc::spawn("kv watch", &["--server", &url, "kv", "watch", "app/", "--prefix"]);
    std::thread::sleep(Duration::from_millis(300));
    ok(&["kv", "put", "app/x", "1"]);
    ok(&["kv", "put", "other", "2"]);
    ok(&["kv", "delete", "app/x"]);
    assert!(watch.expect_line("put", PATIENCE, |l| l.starts_with("put ")).starts_with("put app/x=1 revision="));
    assert!(watch.expect_line("delete", PATIENCE, |l| l.starts_with("delete ")).starts_with("delete app/x revision="));
    watch.sigterm();
    assert_eq!(watch.wait_exit(PATIENCE).code(), Some(0));
    assert_eq!(ok(&["kv", "delete", "app/", "--prefix"]), "deleted 3");
    assert_eq!(ok(&["kv", "list"]), "other:2");
}

#[test]
fn waggle_lock_runs_the_command_under_the_lock_and_hands_it_over() {
    let (_dir, server) = start_server();
    let url = server.url();
    // The command sees its fencing token and its exit status becomes ours.
    let out = client(&url, &["lock", "job", "--", "sh", "-c", "echo token=$WAGGLE_LOCK_TOKEN; exit 3"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    let token: u64 = out.stdout.trim().strip_prefix("token=").unwrap().parse().unwrap();
    assert!(token > 0);

    // A holder runs; a second `waggle lock` waits for it.
    let mut first =
        Proc::spawn("lock 1", &["--server", &url, "lock", "job", "--", "sh", "-c", "echo running; exec sleep 30"]);
    first.expect_line("running", PATIENCE, |l| l == "running");
    let mut second =
        Proc::spawn("lock 2", &["--server", &url, "lock", "job", "--", "sh", "-c", "echo second=$WAGGLE_LOCK_TOKEN"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.try_status().is_none(), "the second waits for the lock");
    // SIGTERM stops the holder's command and releases the lock: the second runs, with a
    // larger token.
    first.sigterm();
    let status = first.wait_exit(PATIENCE);
    assert_eq!(status.code(), Some(143), "{}", first.stderr());
    let line = second.expect_line("second=", PATIENCE, |l| l.starts_with("second="));
    let second_token: u64 = line.strip_prefix("second=").unwrap().parse().unwrap();
    assert!(second_token > token);
    assert_eq!(second.wait_exit(PATIENCE).code(), Some(0));

    // A timeout gives up with exit 1; bad arguments exit 2.
    let mut holder =
        Proc::spawn("lock 3", &["--server", &url, "lock", "job", "--", "sh", "-c", "echo held; exec sleep 30"]);
    holder.expect_line("held", PATIENCE, |l| l == "held");
    let out = client(&url, &["lock", "job", "--timeout", "200ms", "--", "true"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("not granted"), "{}", out.stderr);
    holder.sigterm();
    holder.wait_exit(PATIENCE);
    // A holder killed with SIGKILL frees the lock when its session expires (TTL 2 s), after
    // its lock-delay (1 s).
    let mut doomed = Proc::spawn(
        "lock 4",
        &[
            "--server",
            &url,
            "lock",
            "job",
            "--ttl",
            "2s",
            "--lock-delay",
            "1s",
            "--",
            "sh",
            "-c",
            "echo pid=$$; exec sleep 30",
        ],
    );
    let pid = doomed.expect_line("pid=", PATIENCE, |l| l.starts_with("pid=")).trim_start_matches("pid=").to_owned();
    let killed = std::time::Instant::now();
    doomed.sigkill();
    let out = client(&url, &["lock", "job", "--timeout", "10s", "--", "true"]);
    assert_eq!(out.code, Some(0), "granted once the killed holder's session expired: {}", out.stderr);
    assert!(killed.elapsed() >= std::time::Duration::from_secs(2), "granted before TTL + lock-delay");
    support::signal(pid.parse().unwrap(), "-KILL"); // its orphaned command
    assert_eq!(client(&url, &["lock", "/bad", "--", "true"]).code, Some(2));
    assert_eq!(client(&url, &["lock", "job"]).code, Some(2), "a command is required");
    assert_eq!(client(&url, &["lock", "job", "--lock-delay", "61s", "--", "true"]).code, Some(2));
}

#[test]
fn waggle_elect_campaigns_resigns_and_hands_over() {
    let (_dir, server) = start_server();
    let url = server.url();
    let elected = |p: &mut Proc| -> u64 {
        let line = p.expect_line("elected", PATIENCE, |l| l.starts_with("elected "));
        line.rsplit("term=").next().unwrap().parse().unwrap()
    };
    let mut a = Proc::spawn("elect a", &["--server", &url, "elect", "primary", "10.0.0.1:80"]);
    let term_a = elected(&mut a);
    let mut b = Proc::spawn("elect b", &["--server", &url, "elect", "primary", "10.0.0.2:80", "--ttl", "2s"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(b.try_status().is_none());
    // A resigns on SIGTERM (exit 0): B leads with a larger term.
    a.sigterm();
    assert_eq!(a.wait_exit(PATIENCE).code(), Some(0), "{}", a.stderr());
    let term_b = elected(&mut b);
    assert!(term_b > term_a);
    // B is SIGKILLed: C leads once B's session expires (TTL 2 s).
    let mut c = Proc::spawn("elect c", &["--server", &url, "elect", "primary", "10.0.0.3:80"]);
    b.sigkill();
    let term_c = elected(&mut c);
    assert!(term_c > term_b);
    c.sigterm();
    assert_eq!(c.wait_exit(PATIENCE).code(), Some(0));
    assert_eq!(client(&url, &["elect", "/bad", "x"]).code, Some(2));
}

#[test]
fn client_commands_carry_the_acl_token() {
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dir = tempfile::TempDir::new().unwrap();
    let server = support::Server::start_with_acl(dir.path(), ROOT);
    let url = server.url();
    let put = |value: &str, token: Option<(&str, &str)>| {
        let mut cmd = support::waggle_command(&["--server", &url, "kv", "put", "k", value]);
        if let Some((how, secret)) = token {
            match how {
                "flag" => {
                    cmd.args(["--token", secret]);
                }
                env => {
                    cmd.env(env, secret);
                }
            }
        }
        cmd.output().expect("waggle runs")
    };
    // The leader creates the initial management token right after start.
    let root_works = support::poll(support::PATIENCE, std::time::Duration::from_millis(50), || {
        put("0", Some(("flag", ROOT))).status.success().then_some(())
    });
    assert!(root_works.is_some(), "the initial management token never worked");
    let denied = put("1", None);
    assert_eq!(denied.status.code(), Some(1), "no token: a runtime failure");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("Permission denied"), "{denied:?}");
    for how in ["flag", "WAGGLE_TOKEN", "CONSUL_HTTP_TOKEN"] {
        let out = put("2", Some((how, ROOT)));
        assert!(out.status.success(), "{how}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn acl_commands_manage_policies_and_tokens() {
    const ROOT: &str = "11111111-2222-4333-8444-555555555555";
    let dir = tempfile::TempDir::new().unwrap();
    let server = support::Server::start_with_acl(dir.path(), ROOT);
    let (url, http) = (server.url(), server.ready.http.to_string());
    let waggle = |token: &str, args: &[&str]| {
        let mut all = vec!["--server", &url, "--token", token];
        all.extend_from_slice(args);
        let out = support::waggle_command(&all).output().expect("waggle runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let root_works = support::poll(support::PATIENCE, std::time::Duration::from_millis(50), || {
        (waggle(ROOT, &["acl", "token", "read", "--self", "--http-addr", &http]).0 == Some(0)).then_some(())
    });
    assert!(root_works.is_some(), "the initial management token never worked");
    let (code, _, err) = waggle(ROOT, &["acl", "bootstrap", "--http-addr", &http]);
    assert_eq!(code, Some(1), "bootstrapped already");
    assert!(err.contains("ACL bootstrap no longer allowed"), "{err}");
    let rules = dir.path().join("app.hcl");
    std::fs::write(&rules, "key_prefix \"app/\" { policy = \"write\" }\n").unwrap();
    let at_rules = format!("@{}", rules.display());
    let (code, out, err) =
        waggle(ROOT, &["acl", "policy", "create", "--name", "app", "--rules", &at_rules, "--http-addr", &http]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Name:         app") && out.contains("key_prefix"), "{out}");
    let (code, out, err) = waggle(
        ROOT,
        &["acl", "token", "create", "--policy-name", "app", "--description", "ci", "--json", "--http-addr", &http],
    );
    assert_eq!(code, Some(0), "{err}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (accessor, secret) = (token["AccessorID"].as_str().unwrap(), token["SecretID"].as_str().unwrap());
    assert_eq!(waggle(secret, &["kv", "put", "app/x", "1"]).0, Some(0));
    let (code, _, err) = waggle(secret, &["kv", "put", "other", "1"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("Permission denied"), "{err}");
    let (code, out, _) = waggle(ROOT, &["acl", "token", "list", "--http-addr", &http]);
    assert!(code == Some(0) && out.contains(accessor), "{out}");
    assert_eq!(waggle(ROOT, &["acl", "token", "delete", "--id", accessor, "--http-addr", &http]).0, Some(0));
    let (code, _, err) = waggle(secret, &["kv", "put", "app/y", "1"]);
    assert!(code == Some(1) && err.contains("ACL not found"), "{err}");
    let (code, _, err) =
        waggle(ROOT, &["acl", "role", "create", "--name", "r", "--role-name", "x", "--http-addr", &http]);
    assert_eq!(code, Some(2), "usage: {err}");
}
