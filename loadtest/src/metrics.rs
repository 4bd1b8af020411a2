//! Measurements: HDR histograms (microseconds), counters, errors by code, the
//! per-second timeline, and the server's CPU and RSS from /proc.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks, in microseconds (larger values saturate).
const LATENCY_US_MAX: u64 = 120_000_000;
/// Shards of the gift-to-screen histogram: viewers record on many tasks at once.
const SCREEN_SHARDS: usize = 32;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

/// A histogram with a whole-run part and a per-second part.
#[derive(Debug)]
pub struct TimedHist {
    pub total: Histogram<u64>,
    pub interval: Histogram<u64>,
}

impl Default for TimedHist {
    fn default() -> Self {
        Self {
            total: new_histogram(),
            interval: new_histogram(),
        }
    }
}

/// Sharded latency recorder: shard by viewer index, so concurrent viewers
/// rarely contend on one lock.
#[derive(Debug)]
pub struct ShardedHist {
    shards: Vec<Mutex<TimedHist>>,
}

impl Default for ShardedHist {
    fn default() -> Self {
        Self {
            shards: (0..SCREEN_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ShardedHist {
    pub fn record(&self, shard: usize, us: u64) {
        let mut h = self.shards[shard % SCREEN_SHARDS]
            .lock()
            .expect("histogram lock");
        h.total.saturating_record(us.max(1));
        h.interval.saturating_record(us.max(1));
    }

    /// Takes and resets the per-second part of every shard.
    pub fn take_interval(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in &self.shards {
            let mut h = s.lock().expect("histogram lock");
            out.add(&h.interval).expect("same bounds");
            h.interval.reset();
        }
        out
    }

    pub fn total(&self) -> Histogram<u64> {
        let mut out = new_histogram();
        for s in &self.shards {
            out.add(&s.lock().expect("histogram lock").total)
                .expect("same bounds");
        }
        out
    }
}

/// Everything counted during a run, shared by all tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    /// False during warm-up: latencies are only recorded while measuring.
    pub measuring: AtomicBool,
    pub screen: ShardedHist,
    pub purchase: Mutex<TimedHist>,
    pub ack: Mutex<TimedHist>,
    pub connect: Mutex<TimedHist>,
    pub deliveries: AtomicU64,
    pub deliveries_measured: AtomicU64,
    pub gifts_attempted: AtomicU64,
    pub gifts_created: AtomicU64,
    /// Gifts created whose purchase started after warm-up.
    pub gifts_measured: AtomicU64,
    pub gifts_rejected: AtomicU64,
    pub gifts_unknown: AtomicU64,
    pub retries: AtomicU64,
    pub acks_sent: AtomicU64,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub disconnected: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    pub fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    pub fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(code.to_owned())
            .or_default() += 1;
    }

    pub fn record(h: &Mutex<TimedHist>, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let mut h = h.lock().expect("histogram lock");
        h.total.saturating_record(us.max(1));
        h.interval.saturating_record(us.max(1));
    }

    pub fn delivered(&self) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        if self.is_measuring() {
            self.deliveries_measured.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Percentiles of one histogram in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub gifts: u64,
    pub deliveries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// CPU time (user + system) and RSS of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcSnapshot {
    pub cpu: Duration,
    pub rss_kib: u64,
}

/// Reads /proc/PID/stat (utime, stime) and /proc/PID/status (VmRSS).
pub fn proc_snapshot(pid: u32) -> Option<ProcSnapshot> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state is the first, utime
    // the 12th and stime the 13th (fields 14 and 15 of proc(5)).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // /proc reports in USER_HZ clock ticks, fixed at 100 per second on Linux.
    let cpu = Duration::from_millis((utime + stime) * 10);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSnapshot { cpu, rss_kib })
}

/// The per-second samples of a run and the largest server RSS seen.
#[derive(Debug, Default)]
pub struct Timeline {
    samples: Mutex<Vec<Sample>>,
    rss_kib_max: AtomicU64,
}

impl Timeline {
    pub fn take(&self) -> (Vec<Sample>, u64) {
        let samples = std::mem::take(&mut *self.samples.lock().expect("timeline lock"));
        (samples, self.rss_kib_max.load(Ordering::Relaxed))
    }
}

/// Every second: gifts, deliveries and gift-to-screen percentiles of that second.
pub fn spawn_sampler(
    metrics: Arc<Metrics>,
    timeline: Arc<Timeline>,
    start: Instant,
    pid: Option<u32>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let m = &metrics;
        let (mut gifts, mut deliveries) = (0u64, 0u64);
        let mut tick = tokio::time::interval_at(
            (start + Duration::from_secs(1)).into(),
            Duration::from_secs(1),
        );
        loop {
            tick.tick().await;
            let g = m.gifts_created.load(Ordering::Relaxed);
            let d = m.deliveries.load(Ordering::Relaxed);
            let p = Percentiles::of(&m.screen.take_interval());
            let rss = pid.and_then(proc_snapshot).map_or(0, |s| s.rss_kib);
            timeline
                .samples
                .lock()
                .expect("timeline lock")
                .push(Sample {
                    t_s: start.elapsed().as_secs_f64().round(),
                    gifts: g - gifts,
                    deliveries: d - deliveries,
                    p50_ms: p.p50_ms,
                    p99_ms: p.p99_ms,
                    max_ms: p.max_ms,
                });
            timeline.rss_kib_max.fetch_max(rss, Ordering::Relaxed);
            (gifts, deliveries) = (g, d);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let s = proc_snapshot(std::process::id()).expect("own /proc entry");
        assert!(s.rss_kib > 0);
    }

    #[test]
    fn sharded_histograms_merge() {
        let h = ShardedHist::default();
        h.record(0, 1000);
        h.record(5, 3000);
        assert_eq!(h.take_interval().len(), 2);
        assert_eq!(h.take_interval().len(), 0);
        assert_eq!(h.total().len(), 2);
        let p = Percentiles::of(&h.total());
        assert!(p.max_ms >= 2.9 && p.max_ms <= 3.1);
    }
}
