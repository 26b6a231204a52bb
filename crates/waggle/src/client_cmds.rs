//! Client commands: register, deregister, services, instances, watch.

use std::io::Write;

use anyhow::Context;
use futures_util::StreamExt;
use waggle_client::{ChangeKind, Client, ClientConfig, HealthFilter, HealthStatus, InstanceSpec, Ttl};

use crate::{
    Failure,
    cli::{
        DeregisterArgs, InstancesArgs, MembersAddArgs, MembersListArgs, MembersRemoveArgs, RegisterArgs, ServicesArgs,
        SnapshotSaveArgs, WatchArgs,
    },
    output,
    server_cmd::Signals,
};

/// Splits `ADDRESS:PORT` (IPv6 in brackets).
fn parse_endpoint(s: &str) -> Result<(String, u32), Failure> {
    let usage =
        || Failure::Usage(format!("invalid endpoint {s:?}: expected ADDRESS:PORT, e.g. 10.0.0.1:8080 or [::1]:8080"));
    let (host, port) = s.rsplit_once(':').ok_or_else(usage)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6,
        // An unbracketed IPv6 address is ambiguous (is the last group the port?).
        None if host.contains(':') => return Err(usage()),
        None => host,
    };
    let port: u32 = port
        .parse()
        .map_err(|_| Failure::Usage(format!("invalid port: must be between 1 and 65535 (got {port:?})")))?;
    Ok((host.to_string(), port))
}

fn build_spec(args: &RegisterArgs) -> Result<InstanceSpec, Failure> {
    let (address, port) = parse_endpoint(&args.endpoint)?;
    let mut spec = InstanceSpec::new(&args.service, &address, port)?.with_weight(args.weight);
    spec.validate_registration()?;
    if let Some(id) = &args.id {
        spec = spec.with_id(id)?;
    }
    if let Some(zone) = &args.zone {
        spec = spec.with_zone(zone)?;
    }
    for tag in &args.tags {
        spec = spec.with_tag(tag.clone());
    }
    for pair in &args.meta {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Failure::Usage(format!("invalid meta: expected KEY=VALUE (got {pair:?})")))?;
        spec = spec.with_meta(k, v);
    }
    spec = spec.with_status(args.status.parse::<HealthStatus>()?);
    spec.validate()?;
    Ok(spec)
}

/// Where client commands go, and the ACL token they carry.
pub(crate) struct Remote {
    /// Server URL(s).
    pub(crate) server: String,
    /// `--token`, `WAGGLE_TOKEN` or `CONSUL_HTTP_TOKEN`.
    pub(crate) token: Option<String>,
}

async fn connect(remote: &Remote, mut config: ClientConfig) -> Result<Client, Failure> {
    config.token = remote.token.clone();
    Ok(Client::connect_with(&remote.server, config).await?)
}

pub(crate) async fn register(remote: &Remote, args: RegisterArgs) -> Result<(), Failure> {
    let spec = build_spec(&args)?;
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_duration(args.ttl)?;
    let mut signals = Signals::install()?;
    let client = connect(remote, config).await?;
    let registration = client.register(spec).await?;
    let instance = registration.instance();
    println!(
        "registered {}/{} at {} (session {}, revision {}); press Ctrl-C to deregister",
        instance.service(),
        instance.id(),
        waggle_core::default_id(&instance.spec.address, instance.spec.port),
        instance.session,
        instance.modify_revision,
    );
    let _ = std::io::stdout().flush();
    signals.recv().await;
    let result = registration.shutdown().await;
    client.shutdown().await;
    match result {
        Ok(()) => eprintln!("deregistered"),
        // Best effort, as documented: the session expires within its TTL anyway.
        Err(e) => eprintln!("warning: could not deregister ({e}); the instance expires within the session TTL"),
    }
    Ok(())
}

pub(crate) async fn deregister(remote: &Remote, args: DeregisterArgs) -> Result<(), Failure> {
    waggle_core::ServiceName::new(&args.service)?;
    waggle_core::InstanceId::new(&args.id)?;
    let client = connect(remote, ClientConfig::default()).await?;
    client.deregister(&args.service, &args.id).await?;
    println!("deregistered {}/{}", args.service, args.id);
    Ok(())
}

pub(crate) async fn services(remote: &Remote, args: ServicesArgs) -> Result<(), Failure> {
    let client = connect(remote, ClientConfig::default()).await?;
    let services = client.services().await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&services).map_err(anyhow::Error::from)?);
    } else {
        let rows: Vec<Vec<String>> = services
            .iter()
            .map(|s| {
                let tags = if s.tags.is_empty() { "-".to_string() } else { s.tags.join(",") };
                vec![s.name.clone(), s.instances.to_string(), s.passing.to_string(), tags]
            })
            .collect();
        print!("{}", output::table(&["SERVICE", "INSTANCES", "PASSING", "TAGS"], &rows));
    }
    Ok(())
}

pub(crate) async fn members(remote: &Remote, args: MembersListArgs) -> Result<(), Failure> {
    let client = connect(remote, ClientConfig::default()).await?;
    print_members(&client.members().await?, args.json)
}

pub(crate) async fn add_member(remote: &Remote, args: MembersAddArgs) -> Result<(), Failure> {
    let client = connect(remote, ClientConfig::default()).await?;
    print_members(&client.add_member(args.id, &args.peer_addr.to_string(), args.learner).await?, args.json)
}

pub(crate) async fn remove_member(remote: &Remote, args: MembersRemoveArgs) -> Result<(), Failure> {
    let client = connect(remote, ClientConfig::default()).await?;
    print_members(&client.remove_member(args.id).await?, args.json)
}

pub(crate) async fn save_snapshot(remote: &Remote, args: SnapshotSaveArgs) -> Result<(), Failure> {
    let client = connect(remote, ClientConfig::default()).await?;
    let file = client.save_snapshot().await?;
    let mut part = args.file.clone().into_os_string();
    part.push(".part");
    let part = std::path::PathBuf::from(part);
    let write = || -> std::io::Result<()> {
        let mut out = std::fs::File::create(&part)?;
        out.write_all(&file)?;
        out.sync_all()?;
        std::fs::rename(&part, &args.file)
    };
    write().with_context(|| format!("cannot write {}", args.file.display()))?;
    println!("saved {} bytes to {}", file.len(), args.file.display());
    Ok(())
}

fn print_members(members: &waggle_client::Members, json: bool) -> Result<(), Failure> {
    if json {
        println!("{}", serde_json::to_string_pretty(members).map_err(anyhow::Error::from)?);
    } else {
        let number = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
        let rows: Vec<Vec<String>> = members
            .members
            .iter()
            .map(|m| {
                let url = m.client_url.clone().unwrap_or_else(|| "-".to_owned());
                vec![m.id.to_string(), m.address.clone(), url, m.role.clone(), number(m.log_index), number(m.lag)]
            })
            .collect();
        print!("{}", output::table(&["ID", "PEER ADDRESS", "CLIENT URL", "ROLE", "LOG INDEX", "LAG"], &rows));
    }
    Ok(())
}

pub(crate) async fn instances(remote: &Remote, args: InstancesArgs) -> Result<(), Failure> {
    waggle_core::ServiceName::new(&args.service)?;
    let client = connect(remote, ClientConfig::default()).await?;
    let filter = if args.all { HealthFilter::All } else { HealthFilter::Passing };
    let instances = if args.linearizable {
        client.instances_linearizable(&args.service, filter).await?
    } else {
        client.instances(&args.service, filter).await?
    };
    if args.json {
        let list: Vec<_> = instances.iter().map(output::instance_json).collect();
        println!("{}", serde_json::to_string_pretty(&list).map_err(anyhow::Error::from)?);
    } else {
        let rows: Vec<Vec<String>> = instances.iter().map(output::instance_row).collect();
        print!("{}", output::table(output::INSTANCE_HEADER, &rows));
    }
    Ok(())
}

pub(crate) async fn watch(remote: &Remote, args: WatchArgs) -> Result<(), Failure> {
    waggle_core::ServiceName::new(&args.service)?;
    let client = connect(remote, ClientConfig::default()).await?;
    let mut signals = Signals::install()?;
    let discovery = client.discover(&args.service)?;
    let mut changes = discovery.changes();
    loop {
        let event = tokio::select! {
            event = changes.next() => event,
            _ = signals.recv() => return Ok(()),
        };
        let Some(event) = event else { return Ok(()) };
        let kind = match event.kind {
            ChangeKind::Added => "added",
            ChangeKind::Updated => "updated",
            ChangeKind::Removed => "removed",
        };
        let revision = discovery.revision().map_or(0, |r| r.get());
        let i = &event.instance;
        if args.json {
            let line = serde_json::json!({ "event": kind, "revision": revision, "instance": output::instance_json(i) });
            println!("{line}");
        } else {
            println!(
                "{kind:<8} {}/{} {}:{} {} revision={revision}",
                i.service(),
                i.id(),
                i.spec.address,
                i.spec.port,
                i.spec.status
            );
        }
        let _ = std::io::stdout().flush();
    }
}

pub(crate) async fn kv(remote: &Remote, command: crate::cli::KvCommand) -> Result<(), Failure> {
    use crate::cli::KvCommand;
    let client = connect(remote, ClientConfig::default()).await?;
    let kv = client.kv();
    match command {
        KvCommand::Get { key, json } => {
            let entry = kv.get(&key).await?.ok_or_else(|| Failure::Runtime(anyhow::anyhow!("no key {key:?}")))?;
            if json {
                println!("{}", serde_json::to_string(&entry).map_err(anyhow::Error::from)?);
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&entry.value).and_then(|()| out.write_all(b"\n")).context("cannot write")?;
            }
        }
        KvCommand::Put { key, value, cas, flags } => {
            let options = waggle_client::PutOptions { flags, cas, ..Default::default() };
            let written = kv.put_with(&key, value.into_bytes(), options).await?;
            if !written.succeeded {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "not written: {key:?} is not at modify revision {}",
                    cas.unwrap_or_default()
                )));
            }
            println!("written {key} revision={}", written.revision);
        }
        KvCommand::Delete { key, prefix, cas } => {
            let deleted = if prefix { kv.delete_prefix(&key).await? } else { kv.delete(&key, cas).await? };
            if cas.is_some() && deleted == 0 {
                return Err(Failure::Runtime(anyhow::anyhow!("not deleted: {key:?} is missing or was modified")));
            }
            println!("deleted {deleted}");
        }
        KvCommand::Watch { key, prefix, from, json } => {
            let mut signals = crate::server_cmd::Signals::install()?;
            let mut changes = Box::pin(kv.watch(&key, prefix, from).await?);
            loop {
                let change = tokio::select! {
                    change = changes.next() => change,
                    _ = signals.recv() => break,
                };
                let Some(change) = change else {
                    return Err(Failure::Runtime(anyhow::anyhow!("the watch ended (server stopped)")));
                };
                let change = change?;
                if json {
                    let line = serde_json::json!({
                        "key": change.key,
                        "revision": change.revision,
                        "value": change.entry.as_ref().map(|e| String::from_utf8_lossy(&e.value).into_owned()),
                    });
                    println!("{line}");
                } else {
                    match &change.entry {
                        Some(e) => {
                            println!(
                                "put {}={} revision={}",
                                change.key,
                                String::from_utf8_lossy(&e.value),
                                change.revision
                            )
                        }
                        None => println!("delete {} revision={}", change.key, change.revision),
                    }
                }
                let _ = std::io::stdout().flush();
            }
        }
        KvCommand::List { prefix, keys, json } => {
            let entries = kv.list(&prefix, keys).await?;
            if json {
                println!("{}", serde_json::to_string(&entries).map_err(anyhow::Error::from)?);
            } else {
                for e in entries {
                    if keys {
                        println!("{}", e.key);
                    } else {
                        println!("{}:{}", e.key, String::from_utf8_lossy(&e.value));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Sends `signal` to the process group `pgid` (the command and everything it started).
fn signal_group(pgid: u32, signal: &str) {
    let _ = std::process::Command::new("kill").args([signal, "--", &format!("-{pgid}")]).status();
}

/// `waggle lock NAME -- COMMAND...`.
pub(crate) async fn lock(remote: &Remote, args: crate::cli::LockArgs) -> Result<(), Failure> {
    waggle_core::check_lock(&args.name, args.limit, &[])?;
    let mut signals = crate::server_cmd::Signals::install()?;
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_duration(args.ttl)?;
    config.lock_delay = args.lock_delay;
    let client = connect(remote, config).await?;
    let handle = client.semaphore(&args.name, args.limit);
    let acquired = tokio::select! {
        acquired = async {
            match args.timeout {
                Some(wait) => handle.acquire_for(wait).await,
                None => handle.acquire().await.map(Some),
            }
        } => acquired?,
        code = signals.recv() => {
            client.shutdown().await;
            return Err(Failure::Exit(code));
        }
    };
    let Some(guard) = acquired else {
        client.shutdown().await;
        return Err(Failure::Runtime(anyhow::anyhow!("lock {:?} not granted within the timeout", args.name)));
    };
    eprintln!("acquired lock {} token={}", args.name, guard.token());
    let (program, rest) = args.command.split_first().ok_or_else(|| Failure::Usage("a command is required".into()))?;
    // Its own process group, so stopping it stops whatever it started too.
    let spawned = tokio::process::Command::new(program)
        .args(rest)
        .env("WAGGLE_LOCK_NAME", &args.name)
        .env("WAGGLE_LOCK_TOKEN", guard.token().to_string())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: cannot run {program:?}: {e}");
            let _ = guard.release().await;
            client.shutdown().await;
            return Err(Failure::Exit(127));
        }
    };
    let pgid = child.id().unwrap_or_default();
    let outcome = tokio::select! {
        status = child.wait() => Ok(status.context("waiting for the command")?),
        () = guard.lost() => Err(None),
        code = signals.recv() => Err(Some(code)),
    };
    let code = match outcome {
        Ok(status) => {
            let _ = guard.release().await;
            // A signal's death is reported as 128 + signal, as shells do.
            status.code().unwrap_or_else(|| 128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0))
        }
        Err(None) => {
            // The lock is lost: the command may no longer act under it. Stop it at once.
            signal_group(pgid, "-KILL");
            let _ = child.wait().await;
            eprintln!("error: lost lock {}: the command was killed", args.name);
            client.shutdown().await;
            return Err(Failure::Exit(1));
        }
        Err(Some(code)) => {
            // Asked to stop: give the command 5 s to finish, then release the lock.
            signal_group(pgid, "-TERM");
            if tokio::time::timeout(std::time::Duration::from_secs(5), child.wait()).await.is_err() {
                signal_group(pgid, "-KILL");
                let _ = child.wait().await;
            }
            let _ = guard.release().await;
            i32::from(code)
        }
    };
    client.shutdown().await;
    if code == 0 { Ok(()) } else { Err(Failure::Exit(u8::try_from(code).unwrap_or(1))) }
}

/// `waggle elect NAME VALUE`.
pub(crate) async fn elect(remote: &Remote, args: crate::cli::ElectArgs) -> Result<(), Failure> {
    waggle_core::check_lock(&args.name, 1, args.value.as_bytes())?;
    let mut signals = crate::server_cmd::Signals::install()?;
    let mut config = ClientConfig::default();
    config.session_ttl = Ttl::from_duration(args.ttl)?;
    config.lock_delay = args.lock_delay;
    let client = connect(remote, config).await?;
    let election = client.election(&args.name);
    let leadership = tokio::select! {
        won = election.campaign(args.value.clone().into_bytes()) => won?,
        _ = signals.recv() => {
            client.shutdown().await;
            return Ok(());
        }
    };
    println!("elected {} term={}", args.name, leadership.term());
    let _ = std::io::stdout().flush();
    let result = tokio::select! {
        _ = signals.recv() => leadership.resign().await.map_err(Failure::from),
        () = leadership.lost() => {
            eprintln!("error: lost the leadership of {}", args.name);
            Err(Failure::Exit(1))
        }
    };
    client.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert!(matches!(parse_endpoint("10.0.0.1:80"), Ok((ref h, 80)) if h == "10.0.0.1"));
        assert!(matches!(parse_endpoint("[::1]:8080"), Ok((ref h, 8080)) if h == "::1"));
        assert!(matches!(parse_endpoint("nohost"), Err(Failure::Usage(_))));
        assert!(matches!(parse_endpoint("fe80::1:8080"), Err(Failure::Usage(_))));
        assert!(matches!(parse_endpoint("h:99999999999"), Err(Failure::Usage(m)) if m.contains("port")));
    }
}
