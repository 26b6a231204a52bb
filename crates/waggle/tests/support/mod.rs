//! Helpers for end-to-end tests: spawn the real `waggle` binary, read its output line by line,
//! poll with deadlines, and kill every spawned process when the test ends.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        mpsc::{self, Receiver, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Generous bound for anything that should happen "soon" on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// How long a one-shot client command may take before the test gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_waggle")
}

/// A `Command` for the binary, isolated from the caller's `WAGGLE_*` environment.
pub fn waggle_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    isolate(&mut cmd);
    cmd
}

/// `waggle ARGS...` inside network namespace `netns` (`ip netns exec`, which execs the binary,
/// so the child's pid is the waggle process's).
pub fn waggle_in_netns(netns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, bin()]).args(args);
    isolate(&mut cmd);
    cmd
}

fn isolate(cmd: &mut Command) {
    cmd.env_remove("WAGGLE_SERVER")
        .env_remove("WAGGLE_TOKEN")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("WAGGLE_ACL_ENABLED")
        .env_remove("WAGGLE_ACL_INITIAL_MANAGEMENT_TOKEN")
        .env_remove("WAGGLE_DATA_DIR")
        .env_remove("WAGGLE_GRPC_ADDR")
        .env_remove("WAGGLE_HTTP_ADDR")
        // Test servers never take the default DNS port (8600): tests run in parallel.
        .env("WAGGLE_DNS_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// A spawned process whose stdout lines arrive on a channel and whose stderr is collected.
/// Dropping it kills (SIGKILL) and reaps the process.
pub struct Proc {
    name: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `waggle ARGS...`.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        Self::spawn_in(name, args, None)
    }

    /// Spawns `waggle ARGS...` with the given working directory.
    pub fn spawn_in(name: &str, args: &[&str], cwd: Option<&Path>) -> Proc {
        let mut cmd = waggle_command(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        Self::spawn_command(name, cmd)
    }

    /// Spawns a prepared command (see [`waggle_command`], [`waggle_in_netns`]).
    pub fn spawn_command(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: cannot spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let collected = Arc::new(Mutex::new(String::new()));
        let sink = collected.clone();
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&String::from_utf8_lossy(&buf[..n]))
                    }
                }
            }
        });
        Proc { name: name.to_string(), child, lines, seen: Vec::new(), stderr: collected, status: None }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn diagnostics(&self) -> String {
        format!("{}: stdout so far:\n{}\nstderr so far:\n{}", self.name, self.seen.join("\n"), self.stderr())
    }

    /// Waits for the next stdout line matching `pred` (skipping others); panics after `timeout`.
    pub fn expect_line(&mut self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        match self.try_expect_line(timeout, pred) {
            Some(line) => line,
            None => panic!("{}: no stdout line {what} within {timeout:?}\n{}", self.name, self.diagnostics()),
        }
    }

    /// Waits for the next stdout line matching `pred` (skipping others), up to `timeout`.
    pub fn try_expect_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None;
                }
            }
        }
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid(), "-TERM");
    }

    /// Sends SIGKILL and reaps the process.
    pub fn sigkill(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("wait for a killed child");
        self.status = Some(status);
        status
    }

    /// `Some(status)` if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!("{}: still running after {timeout:?}\n{}", self.name, self.diagnostics());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the exit; panics after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.sigterm();
        self.wait_exit(timeout)
    }

    /// Asserts the process exited with status 0.
    pub fn assert_success(&self, status: ExitStatus) {
        assert!(status.success(), "{}: exited with {status}\n{}", self.name, self.diagnostics());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The interop tier: tests against real outside programs, `#[ignore = "interop: needs ..."]`
/// so that plain `cargo test --workspace` needs only a Rust toolchain, and run by
/// `cargo test --workspace -- --include-ignored`. Once run, an interop test never passes by
/// skipping: it first checks for what it needs and fails naming what to install.
const NOT_SKIPPED: &str = "or leave the interop tier out (plain `cargo test --workspace` does)";

/// Fails the test unless `tool` is an executable on `PATH`; `install` says how to get it.
#[track_caller]
pub fn require_tool(tool: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(tool))));
    assert!(found, "{tool} not found on PATH: install it ({install}) {NOT_SKIPPED}");
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// Fails the test unless `python3` can import `module`; `install` says how to get it.
#[track_caller]
pub fn require_python_module(module: &str, install: &str) {
    require_tool("python3", "apt install python3");
    let import = Command::new("python3").args(["-c", &format!("import {module}")]).output().expect("run python3");
    assert!(
        import.status.success(),
        "python3 cannot import {module}: install it ({install}) {NOT_SKIPPED}\n{}",
        String::from_utf8_lossy(&import.stderr).trim()
    );
}

/// Fails the test unless it runs as root (effective uid 0, read from `/proc/self/status`);
/// `why` says what needs it.
#[track_caller]
pub fn require_root(why: &str) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().nth(1));
    assert!(
        euid == Some("0"),
        "not running as root (effective uid {}): {why}; run it as root {NOT_SKIPPED}",
        euid.unwrap_or("unknown: no /proc/self/status")
    );
}

/// Sends a signal (e.g. `-TERM`) with `kill(1)`.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed: {status}");
}

/// The fields of the server's ready line.
#[derive(Debug, Clone)]
pub struct Ready {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    /// `None` when DNS is off.
    pub dns: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub revision: u64,
}

/// Parses `waggle server ready grpc=A http=B dns=C|off data-dir=D revision=N`.
pub fn parse_ready(line: &str) -> Ready {
    let rest = line.strip_prefix("waggle server ready ").unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    let field = |key: &str| -> &str {
        let start =
            rest.find(&format!("{key}=")).unwrap_or_else(|| panic!("no {key}= in ready line {line:?}")) + key.len() + 1;
        let tail = &rest[start..];
        // data-dir may contain spaces in theory; it is followed by " revision=".
        let end = if key == "data-dir" {
            tail.rfind(" revision=").unwrap_or(tail.len())
        } else {
            tail.find(' ').unwrap_or(tail.len())
        };
        &tail[..end]
    };
    Ready {
        grpc: field("grpc").parse().expect("grpc address"),
        http: field("http").parse().expect("http address"),
        dns: match field("dns") {
            "off" => None,
            addr => Some(addr.parse().expect("dns address")),
        },
        data_dir: PathBuf::from(field("data-dir")),
        revision: field("revision").parse().expect("revision"),
    }
}

/// A running `waggle server`.
pub struct Server {
    pub proc: Proc,
    pub ready: Ready,
}

impl Server {
    /// Starts `waggle server` with the given data dir and gRPC address (HTTP on port 0) and
    /// waits for its ready line.
    pub fn start(data_dir: &Path, grpc_addr: &str) -> Server {
        let dir = data_dir.to_str().expect("utf-8 data dir");
        Self::start_with(&["server", "--data-dir", dir, "--grpc-addr", grpc_addr, "--http-addr", "127.0.0.1:0"])
    }

    /// Starts `waggle ARGS...` (a server command line) and waits for its ready line.
    pub fn start_with(args: &[&str]) -> Server {
        let mut proc = Proc::spawn("server", args);
        let line = proc.expect_line("'waggle server ready'", PATIENCE, |l| l.starts_with("waggle server ready "));
        let ready = parse_ready(&line);
        Server { proc, ready }
    }

    /// Starts `waggle server` with ACLs on and `root` as its initial management token (the
    /// data dir in `dir`, every listener on a free loopback port), and waits until the leader
    /// has created that token.
    pub fn start_with_acl(dir: &Path, root: &str) -> Server {
        let data = dir.join("data");
        let data = data.to_str().expect("utf-8 data dir");
        let server = Self::start_with(&[
            "server",
            "--data-dir",
            data,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--acl-enabled",
            "--acl-initial-management-token",
            root,
        ]);
        let http = server.ready.http;
        let ready = poll(PATIENCE, Duration::from_millis(50), || {
            (http_get(http, &format!("/v1/acl/token/self?token={root}")).0 == 200).then_some(())
        });
        assert!(ready.is_some(), "the initial management token never worked");
        server
    }

    /// The URL client commands use.
    pub fn url(&self) -> String {
        format!("http://{}", self.ready.grpc)
    }
}

/// A child process of another program (Prometheus, vmagent), killed and reaped when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on 127.0.0.1 for a process started later.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up): no outgoing connection can take the
    // port between this check and the server's bind. A counter keeps this process's parallel
    // tests apart; the process id spreads consecutive test binaries.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 40) * 300;
    loop {
        let port = (base + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 300) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().expect("local addr").port();
        }
    }
}

/// The result of a one-shot command.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `waggle ARGS...` to completion; panics (and kills it) after [`COMMAND_TIMEOUT`].
pub fn run(args: &[&str]) -> Output {
    finish(Proc::spawn(&format!("waggle {}", args.join(" ")), args))
}

/// Waits for a one-shot command to finish and collects its output.
pub fn finish(mut proc: Proc) -> Output {
    let status = proc.wait_exit(COMMAND_TIMEOUT);
    // The reader threads finish at EOF, right after the exit.
    let mut stdout = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(line) = proc.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        stdout.push(line);
    }
    // Give the stderr thread a moment to drain the pipe after the exit.
    let mut stderr = proc.stderr();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until && Arc::strong_count(&proc.stderr) > 1 {
        thread::sleep(Duration::from_millis(5));
        stderr = proc.stderr();
    }
    Output { code: status.code(), stdout: stdout.join("\n"), stderr }
}

/// Runs a client command against `server` (prefixing `--server URL`).
pub fn client(server: &str, args: &[&str]) -> Output {
    let mut full = vec!["--server", server];
    full.extend_from_slice(args);
    run(&full)
}

/// `waggle instances SERVICE --json [extra...]`, which must succeed; returns the array.
pub fn instances(server: &str, service: &str) -> Vec<Value> {
    let out = client(server, &["instances", service, "--json"]);
    assert_eq!(out.code, Some(0), "instances {service} failed: {out:?}");
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(list)) => list,
        other => panic!("instances {service}: not a JSON array: {other:?} from {out:?}"),
    }
}

/// The ids in an `instances --json` answer.
pub fn ids(list: &[Value]) -> Vec<String> {
    list.iter().map(|i| i["id"].as_str().expect("id is a string").to_string()).collect()
}

/// Calls `f` every `every` until it returns `Some`, or gives up after `timeout`.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(every);
    }
}

/// A plain HTTP/1.1 GET with `Connection: close`; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, "")
}

/// A plain HTTP/1.1 request with a body and `Connection: close`: (status code, body).
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("malformed HTTP response: {text:?}"));
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let chunked = head.lines().any(|h| {
        h.to_ascii_lowercase().starts_with("transfer-encoding:") && h.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
