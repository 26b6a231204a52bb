//! Pick cost per policy at 10 / 100 / 1,000 / 10,000 endpoints, Maglev's table build, and a
//! full request through `Balance` next to tower's P2C balancer as the reference.
//!
//! `cargo bench -p waggle-balance --bench pick`

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::future::Future;
use tower::Service;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use waggle_balance::policy::{
    Candidate, LeastRequest, Maglev, PeakEwma, PickContext, Policy, Random, RingHash, RoundRobin,
    SmoothWeightedRoundRobin, WeightedRandom,
};
use waggle_balance::{Balance, Builder, Endpoint, EndpointStats};

const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

/// Endpoints with weights 1..=10 (so weighted policies take their weighted paths) and a
/// little load (so P2C compares real numbers).
fn candidates(n: usize) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let stats = Arc::new(EndpointStats::new());
            for _ in 0..(i % 3) {
                stats.start();
            }
            stats.observe_rtt(
                Duration::from_secs(1),
                Duration::from_micros(500 + (i % 7) as u64 * 100),
                Duration::from_secs(10),
            );
            Candidate::new((1 + i % 10) as f64, waggle_balance::stable_hash(&i), stats)
        })
        .collect()
}

fn policies() -> Vec<Box<dyn Policy>> {
    vec![
        Box::new(RoundRobin),
        Box::new(Random),
        Box::new(WeightedRandom),
        Box::new(SmoothWeightedRoundRobin),
        Box::new(LeastRequest::new()),
        Box::new(PeakEwma::new()),
        Box::new(RingHash::new()),
        Box::new(Maglev::new()),
    ]
}

fn pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in SIZES {
        let candidates = candidates(n);
        for policy in policies() {
            let mut rng = SmallRng::seed_from_u64(1);
            let picker = policy.build(&candidates, &mut rng);
            let mut key = 0u64;
            let now = Duration::from_secs(2);
            group.bench_with_input(BenchmarkId::new(policy.name(), n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let mut cx = PickContext::new(&candidates, &mut rng, now).with_request_hash(Some(key));
                    black_box(picker.pick(&mut cx))
                })
            });
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    for n in [100, 1_000] {
        let candidates = candidates(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(Maglev::new().table(&candidates)))
        });
    }
    group.finish();
}

#[derive(Clone)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

/// One request through a balancer whose endpoints answer at once: poll_ready, call, poll
/// the response.
fn one_request<S: Service<u64>>(balance: &mut S, cx: &mut Context<'_>, request: u64) {
    assert!(balance.poll_ready(cx).is_ready());
    let response = std::pin::pin!(balance.call(request));
    assert!(black_box(response.poll(cx)).is_ready());
}

fn balancers(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let _entered = runtime.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("request");
    for n in SIZES {
        let mut tower_p2c = tower::balance::p2c::Balance::new(ServiceList::new(
            (0..n).map(|_| PendingRequests::new(Echo, CompleteOnResponse::default())),
        ));
        group.bench_with_input(BenchmarkId::new("tower_p2c", n), &n, |b, _| {
            b.iter(|| one_request(&mut tower_p2c, &mut cx, 1))
        });
        let mut waggle: Balance<usize, Echo, u64> =
            Builder::new(LeastRequest::new()).seed(1).build_static((0..n).map(|i| (i, Endpoint::new(Echo))));
        runtime.block_on(async {
            while waggle.len() < n {
                tokio::task::yield_now().await;
            }
        });
        group.bench_with_input(BenchmarkId::new("waggle_least_request", n), &n, |b, _| {
            b.iter(|| one_request(&mut waggle, &mut cx, 1))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = pick, maglev_build, balancers
}
criterion_main!(benches);
