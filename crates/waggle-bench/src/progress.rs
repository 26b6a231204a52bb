//! Progress while a benchmark runs: a bar on a terminal, plain lines otherwise (stderr).

use std::{
    io::IsTerminal,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shared operation counter plus the task that displays it.
pub(crate) struct Progress {
    pub(crate) done: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

/// What the run is bounded by.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bound {
    Duration(Duration),
    Total(u64),
}

impl Progress {
    pub(crate) fn start(label: String, bound: Bound, quiet: bool) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let counter = done.clone();
        let task = tokio::spawn(async move {
            if quiet {
                return;
            }
            let started = Instant::now();
            let terminal = std::io::stderr().is_terminal();
            let bar = match bound {
                Bound::Duration(d) => ProgressBar::new(d.as_millis() as u64),
                Bound::Total(n) => ProgressBar::new(n),
            };
            if terminal {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.set_style(
                    ProgressStyle::with_template("{prefix} [{bar:40}] {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.clone());
            } else {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            }
            let mut tick = tokio::time::interval(Duration::from_millis(if terminal { 200 } else { 1000 }));
            loop {
                tick.tick().await;
                let n = counter.load(Ordering::Relaxed);
                let elapsed = started.elapsed();
                let rate = n as f64 / elapsed.as_secs_f64().max(1e-9);
                match bound {
                    Bound::Duration(_) => bar.set_position(elapsed.as_millis() as u64),
                    Bound::Total(_) => bar.set_position(n),
                }
                let msg = format!("{n} ops, {rate:.0}/s");
                if terminal {
                    bar.set_message(msg);
                } else {
                    eprintln!("{label}: {:.0}s {msg}", elapsed.as_secs_f64());
                }
            }
        });
        Progress { done, task }
    }

    pub(crate) fn finish(self) {
        self.task.abort();
    }
}
