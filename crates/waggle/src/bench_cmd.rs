//! `waggle bench`: maps the flags onto `waggle_bench::BenchConfig` and prints the report.

use waggle_bench::{BenchConfig, Target};

use crate::{Failure, cli::BenchArgs};

pub(crate) async fn run(remote: &crate::client_cmds::Remote, args: BenchArgs) -> Result<(), Failure> {
    let default_endpoint = match args.target {
        Target::Waggle => remote.server.clone(),
        Target::Etcd => "http://127.0.0.1:2379".to_string(),
        Target::Zookeeper => "127.0.0.1:2181".to_string(),
    };
    let endpoint = match (args.target, args.endpoint) {
        (Target::Waggle, Some(_)) => {
            return Err(Failure::Usage("--endpoint is for etcd and zookeeper; use --server for Waggle".into()));
        }
        (_, Some(e)) => e,
        (_, None) => default_endpoint,
    };
    let mut config = BenchConfig::new(args.workload, args.target, endpoint);
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
    config.token = remote.token.clone();
    config.validate().map_err(|e| Failure::Usage(e.to_string()))?;
    let report = waggle_bench::run(config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(anyhow::Error::from)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
