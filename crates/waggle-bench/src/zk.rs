//! Ephemeral registrations against ZooKeeper (ephemeral sequential znodes), for
//! side-by-side numbers. ZooKeeper has no explicit keepalive, no prefix read of values and
//! different watch semantics, so only `register` is offered.

use anyhow::Context;
use zookeeper_client as zk;

use crate::{BenchConfig, Report, Worker, Workload, drive, instance_payload, report};

pub(crate) async fn run(config: &BenchConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.workload == Workload::Register,
        "the zookeeper target supports only the register workload (ephemeral znodes)"
    );
    let mut workers = Vec::new();
    for c in 0..config.clients {
        let client = zk::Client::connect(&config.endpoint)
            .await
            .with_context(|| format!("cannot connect to ZooKeeper at {}", config.endpoint))?;
        if c == 0 {
            let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            match client.create("/bench-reg", &[], &options).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for _ in 0..config.in_flight {
            workers.push(CreateWorker { client: client.clone() });
        }
    }
    let (recorder, elapsed) = drive(config, workers).await?;
    Ok(report(config, &recorder, elapsed))
}

struct CreateWorker {
    client: zk::Client,
}

impl Worker for CreateWorker {
    async fn op(&mut self, seq: u64) -> anyhow::Result<()> {
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        self.client.create("/bench-reg/i-", &instance_payload(seq), &options).await?;
        Ok(())
    }
}
