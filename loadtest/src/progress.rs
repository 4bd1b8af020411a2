//! The live progress line: a spinner whose message is refreshed from the
//! shared counters a few times a second.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::metrics::Metrics;

/// Refresh period of the progress line.
const TICK: Duration = Duration::from_millis(250);

pub struct Progress {
    bar: ProgressBar,
    pub phase: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(metrics: Arc<Metrics>, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new_spinner()
        };
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                .expect("valid progress template"),
        );
        let phase = Arc::new(Mutex::new(String::from("starting")));
        let (b, p) = (bar.clone(), phase.clone());
        let task = tokio::spawn(async move {
            let mut last_deliveries = 0u64;
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let m = &metrics;
                let d = m.deliveries.load(Ordering::Relaxed);
                let rate = (d - last_deliveries) as f64 / TICK.as_secs_f64();
                last_deliveries = d;
                let phase = p.lock().expect("phase lock").clone();
                b.set_message(format!(
                    "{phase} | viewers {} (failed {}, closed {}) | gifts {} ok {} err {} retries {} | deliveries {} ({:.0}/s)",
                    m.connected.load(Ordering::Relaxed),
                    m.connect_failed.load(Ordering::Relaxed),
                    m.disconnected.load(Ordering::Relaxed),
                    m.gifts_attempted.load(Ordering::Relaxed),
                    m.gifts_created.load(Ordering::Relaxed),
                    m.gifts_rejected.load(Ordering::Relaxed) + m.gifts_unknown.load(Ordering::Relaxed),
                    m.retries.load(Ordering::Relaxed),
                    d,
                    rate,
                ));
                b.tick();
            }
        });
        Self { bar, phase, task }
    }

    pub fn set_phase(&self, phase: &str) {
        *self.phase.lock().expect("phase lock") = phase.to_owned();
    }

    pub fn finish(self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}
