//! Latency recording (HDR histograms, microsecond resolution) and the report.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Records latencies from 1 µs to 60 s with 3 significant digits.
#[derive(Clone)]
pub(crate) struct Recorder {
    histogram: Histogram<u64>,
    pub(crate) errors: u64,
}

impl Recorder {
    pub(crate) fn new() -> Self {
        // Constant, valid bounds: construction cannot fail.
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Recorder { histogram, errors: 0 }
    }

    pub(crate) fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).clamp(1, 60_000_000);
        let _ = self.histogram.record(us);
    }

    pub(crate) fn merge(&mut self, other: &Recorder) {
        let _ = self.histogram.add(&other.histogram);
        self.errors += other.errors;
    }

    pub(crate) fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub(crate) fn summary(&self) -> Latency {
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: self.histogram.len(),
            mean_ms: self.histogram.mean() / 1000.0,
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.histogram.max() as f64 / 1000.0,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// How many samples.
    pub samples: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

/// The result of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The workload.
    pub workload: String,
    /// The system under test.
    pub target: String,
    /// Connections.
    pub clients: usize,
    /// Outstanding requests per connection.
    pub in_flight: usize,
    /// Watchers (watch / churn).
    pub watchers: usize,
    /// Instances (register key space / discover data size).
    pub instances: usize,
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time of the measured phase, seconds.
    pub seconds: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Per-operation latency (for watch: write acknowledgement to watcher receipt).
    pub latency: Latency,
    /// For churn: write acknowledgement to watcher receipt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<Latency>,
}

impl Report {
    /// A human-readable block.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{} on {}: {} clients x {} in flight{}\n  ops {}  errors {}  time {:.2}s  throughput {:.0}/s\n",
            self.workload,
            self.target,
            self.clients,
            self.in_flight,
            if self.watchers > 0 { format!(", {} watchers", self.watchers) } else { String::new() },
            self.ops,
            self.errors,
            self.seconds,
            self.throughput
        );
        let line = |name: &str, l: &Latency| {
            format!(
                "  {name:<9} p50 {:.3}ms  p90 {:.3}ms  p99 {:.3}ms  p99.9 {:.3}ms  max {:.3}ms  (n={})\n",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
            )
        };
        out.push_str(&line(if self.workload == "watch" { "delivery" } else { "latency" }, &self.latency));
        if let Some(d) = &self.delivery {
            out.push_str(&line("delivery", d));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merging() {
        let mut a = Recorder::new();
        for ms in 1..=100u64 {
            a.record(Duration::from_millis(ms));
        }
        let mut b = Recorder::new();
        b.record(Duration::from_secs(120)); // clamped to the 60 s ceiling
        b.errors = 2;
        a.merge(&b);
        let s = a.summary();
        assert_eq!((s.samples, a.errors), (101, 2));
        assert!((s.p50_ms - 51.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 100.0).abs() < 0.1, "{}", s.p99_ms);
        assert!((s.max_ms - 60_000.0).abs() < 60.0, "{}", s.max_ms);
    }
}
