//! The DNS interface, Consul's forms under every configured domain
//! (`waggle.` and `consul.` by default):
//!
//! - `<service>.service.<domain>` and `<tag>.<service>.service.<domain>`: A / AAAA of the
//!   instances' addresses, SRV (priority 1, weight = instance weight, port, target);
//! - RFC 2782 `_<service>._<tag>.service.<domain>` (`_tcp` means any tag, as in Consul);
//! - `<node>.node.<domain>`: the answering member;
//! - `<hex>.addr.<domain>`: the SRV targets of instances registered by IP address (Consul's
//!   form), with their A / AAAA in the additional section of SRV answers;
//! - an optional datacenter label after `service` / `node` / `addr` (`dc1` only).
//!
//! Only passing instances are answered (warning too with `dns_allow_warning`), shuffled on
//! every query. A name with no such instance is NXDOMAIN; a name that exists without records
//! of the asked type is NODATA (NOERROR, no answer); both carry the zone's SOA, whose minimum
//! is the negative-caching TTL. Other zones are REFUSED (no recursion). UDP answers are cut
//! to 512 bytes, or the client's EDNS size, with the TC bit set; TCP answers are whole.
//! Malformed packets get FORMERR. hickory-proto parses and encodes the messages (truncation
//! included); the serving loops are ours: hickory-server's task and channel per query cost
//! half the throughput (docs/benchmarks.md).

mod answer;
mod cache;
mod question;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub(crate) use answer::{DnsSettings, Handler};

/// Binds UDP and TCP on the same address (for port 0, the port UDP got) and serves until
/// `shutdown`: one receive loop per core on the UDP socket, each answering inline (no task or
/// channel per query); TCP connections carry length-prefixed messages and close after 5 s idle.
/// Answers the bound address and the serving task.
pub(crate) async fn serve(
    addr: SocketAddr,
    handler: Handler,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut attempts = 0;
    let (udp, tcp) = loop {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, tcp),
            // Port 0: UDP's port may be taken for TCP; try another.
            Err(e) if addr.port() == 0 && attempts < 20 => {
                attempts += 1;
                tracing::debug!("DNS port {} is taken for TCP ({e}); trying another", bound.port());
            }
            Err(e) => return Err(e),
        }
    };
    let bound = udp.local_addr()?;
    let (udp, handler) = (Arc::new(udp), Arc::new(handler));
    let loops = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..loops {
        tasks.spawn(udp_loop(udp.clone(), handler.clone()));
    }
    tasks.spawn(tcp_loop(tcp, handler));
    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        tasks.shutdown().await;
    });
    Ok((bound, task))
}

async fn udp_loop(socket: Arc<tokio::net::UdpSocket>, handler: Arc<Handler>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, src) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier sends surface here on some systems: keep serving.
                tracing::debug!("DNS receive failed: {e}");
                continue;
            }
        };
        if let Some(answer) = handler.answer_packet(&buf[..n], true)
            && let Err(e) = socket.send_to(&answer, src).await
        {
            tracing::debug!("DNS answer to {src} failed: {e}");
        }
    }
}

/// TCP connections served at once; more wait in the kernel's backlog.
const MAX_TCP_CONNECTIONS: usize = 512;

async fn tcp_loop(listener: tokio::net::TcpListener, handler: Arc<Handler>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!("DNS TCP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let (mut read, mut write) = stream.into_split();
            loop {
                let idle = Duration::from_secs(5);
                let Ok(Ok(len)) = tokio::time::timeout(idle, read.read_u16()).await else { return };
                let mut packet = vec![0u8; usize::from(len)];
                if !matches!(tokio::time::timeout(idle, read.read_exact(&mut packet)).await, Ok(Ok(_))) {
                    return;
                }
                let Some(answer) = handler.answer_packet(&packet, false) else { return };
                let Ok(len) = u16::try_from(answer.len()) else { return };
                let mut framed = Vec::with_capacity(answer.len() + 2);
                framed.extend_from_slice(&len.to_be_bytes());
                framed.extend_from_slice(&answer);
                // A client that stops reading is dropped.
                if !matches!(tokio::time::timeout(idle, write.write_all(&framed)).await, Ok(Ok(()))) {
                    return;
                }
            }
        });
    }
}
