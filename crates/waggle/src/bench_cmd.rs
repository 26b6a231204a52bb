//! `waggle bench`: maps the flags onto `waggle_bench::BenchConfig` and prints the report.

use waggle_bench::{BenchConfig, Target, Workload};

use crate::{
    Failure,
    cli::{BenchArgs, BenchTarget, BenchWorkload},
};

pub(crate) async fn run(server: &str, args: BenchArgs) -> Result<(), Failure> {
    let workload = match args.workload {
        BenchWorkload::Register => Workload::Register,
        BenchWorkload::Keepalive => Workload::Keepalive,
        BenchWorkload::Discover => Workload::Discover,
        BenchWorkload::Watch => Workload::Watch,
        BenchWorkload::Churn => Workload::Churn,
        BenchWorkload::Populate => Workload::Populate,
    };
    let (target, default_endpoint) = match args.target {
        BenchTarget::Waggle => (Target::Waggle, server.to_string()),
        BenchTarget::Etcd => (Target::Etcd, "http://127.0.0.1:2379".to_string()),
        BenchTarget::Zookeeper => (Target::Zookeeper, "127.0.0.1:2181".to_string()),
    };
    let endpoint = match (args.target, args.endpoint) {
        (BenchTarget::Waggle, Some(_)) => {
            return Err(Failure::Usage("--endpoint is for etcd and zookeeper; use --server for Waggle".into()));
        }
        (_, Some(e)) => e,
        (_, None) => default_endpoint,
    };
    let mut config = BenchConfig::new(workload, target, endpoint);
    config.clients = args.clients;
    config.in_flight = args.in_flight;
    config.duration = args.duration;
    config.total = args.total;
    config.instances = args.instances;
    if let Some(w) = args.watchers {
        config.watchers = w;
    }
    config.sessions = args.sessions;
    config.quiet = args.quiet;
    config.validate().map_err(|e| Failure::Usage(e.to_string()))?;
    let report = waggle_bench::run(config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(anyhow::Error::from)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
