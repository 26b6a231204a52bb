//! Registers one instance and follows the service it joined, until Ctrl-C.
//!
//! Run a server (`cargo run -p waggle -- server --dev`), then:
//! `cargo run -p waggle-client --example register_and_discover`.

use futures_util::StreamExt;
use waggle_client::{ChangeKind, Client, InstanceSpec};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("WAGGLE_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8502".into());
    let client = Client::connect(url).await?;

    // One session per process, kept alive in the background; re-registered if it is lost.
    let me = InstanceSpec::new("hello", "127.0.0.1", 3000)?.with_tag("example").with_meta("version", "1");
    let registration = client.register(me).await?;
    println!("registered {} (session {})", registration.instance().id(), registration.instance().session);

    // A live cache: cheap reads, a change stream, and Fresh/Stale state.
    let hello = client.discover("hello")?;
    hello.ready().await;
    println!("{} passing instance(s), cache {:?}", hello.instances().len(), hello.state());
    let mut changes = hello.changes();
    loop {
        tokio::select! {
            Some(event) = changes.next() => {
                let verb = match event.kind {
                    ChangeKind::Added => "added",
                    ChangeKind::Updated => "updated",
                    ChangeKind::Removed => "removed",
                };
                println!("{verb} {}", event.instance.id());
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    registration.shutdown().await?;
    client.shutdown().await;
    Ok(())
}
