//! Leaderboard benchmark (not a test): applies many updates in batches from
//! several concurrent writers while a reader polls top-10 boards, then reads
//! top-10 boards on the idle store. Reports updates/s, apply lag (update
//! created → batch applied) and top-10 read latency percentiles.
//!
//! ```text
//! cargo run --release -p applause-leaderboard --example lb_bench -- \
//!     --updates 200000 --batch 500 --writers 4 --reads 20000
//! ```
//! Options: `--backend redis|memory`, `--redis-url`, `--rooms`,
//! `--broadcasters`, `--senders`, `--rate <updates/s>` (paced writers: each
//! sends a batch on a fixed schedule and the lag is measured from the
//! scheduled time, so falling behind shows up as lag; 0 = unthrottled),
//! `--slot-scripts 1` (cluster-safe scripts, one hash-tag slot each). Keys go under a random `lbbench:<hex>`
//! prefix that is deleted at the end (SCAN + UNLINK, never FLUSHDB).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use applause_leaderboard::{BoardUpdate, Leaderboard, MemoryBoards, RedisBoards, Window};
use hdrhistogram::Histogram;
use rand::{rngs::StdRng, Rng, SeedableRng};

struct Options {
    backend: String,
    redis_url: String,
    updates: usize,
    batch: usize,
    writers: usize,
    reads: usize,
    rooms: usize,
    broadcasters: usize,
    senders: usize,
    /// Target updates/s over all writers; 0 = as fast as possible.
    rate: usize,
    /// 1 = cluster-safe scripts, one slot each.
    slot_scripts: bool,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut o = Options {
            backend: "redis".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            updates: 200_000,
            batch: 500,
            writers: 4,
            reads: 20_000,
            rooms: 1_000,
            broadcasters: 300,
            senders: 100_000,
            rate: 0,
            slot_scripts: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .with_context(|| format!("{flag} {value}"))
            };
            match flag.as_str() {
                "--backend" => o.backend = value.clone(),
                "--redis-url" => o.redis_url = value.clone(),
                "--updates" => o.updates = number()?,
                "--batch" => o.batch = number()?.clamp(1, 10_000),
                "--writers" => o.writers = number()?.max(1),
                "--reads" => o.reads = number()?,
                "--rooms" => o.rooms = number()?.max(1),
                "--broadcasters" => o.broadcasters = number()?.max(1),
                "--senders" => o.senders = number()?.max(1),
                "--rate" => o.rate = number()?,
                "--slot-scripts" => o.slot_scripts = number()? == 1,
                other => bail!("unknown option {other}"),
            }
        }
        Ok(o)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn room(o: &Options, i: usize) -> (String, String) {
    (format!("room{i}"), format!("bc{}", i % o.broadcasters))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

fn line(name: &str, h: &Histogram<u64>) {
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "{name:<28} n={:<9} p50={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms  p999={:>8.3} ms  max={:>8.3} ms",
        h.len(),
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
}

async fn read_once(b: &dyn Leaderboard, o: &Options, rng: &mut StdRng) -> Result<Duration> {
    let (room_id, bc) = room(o, rng.random_range(0..o.rooms));
    let window = Window::ALL[rng.random_range(0..4)];
    let started = Instant::now();
    if rng.random_ratio(1, 10) {
        let w = if window == Window::Live {
            Window::All
        } else {
            window
        };
        b.top_broadcasters(w, 10, now_ms()).await?;
    } else {
        b.top(&room_id, &bc, window, 10, now_ms()).await?;
    }
    Ok(started.elapsed())
}

#[tokio::main]
async fn main() -> Result<()> {
    let o = Arc::new(Options::parse()?);
    let prefix = format!("lbbench:{:016x}", rand::random::<u64>());
    let boards: Arc<dyn Leaderboard> = match o.backend.as_str() {
        "redis" => Arc::new(
            RedisBoards::connect(&o.redis_url, &prefix)
                .await?
                .with_slot_scripts(o.slot_scripts),
        ),
        "memory" => Arc::new(MemoryBoards::new()),
        other => bail!("unknown backend {other}"),
    };
    boards.rebuild(&[], now_ms()).await?;
    println!(
        "backend={} slot_scripts={} updates={} batch={} writers={} rate={} rooms={} broadcasters={} senders={}",
        o.backend, o.slot_scripts, o.updates, o.batch, o.writers, o.rate, o.rooms, o.broadcasters, o.senders
    );

    // A reader polls top-10 boards while the writers run.
    let writing = Arc::new(AtomicBool::new(true));
    let reader = {
        let (b, o, writing) = (Arc::clone(&boards), Arc::clone(&o), Arc::clone(&writing));
        tokio::spawn(async move {
            let mut h = histogram();
            let mut rng = StdRng::seed_from_u64(99);
            while writing.load(Ordering::Relaxed) {
                let took = read_once(b.as_ref(), &o, &mut rng).await?;
                h.saturating_record(took.as_micros() as u64);
                // The memory twin never awaits: without this the reader
                // would spin on one worker thread and starve the writers.
                tokio::task::yield_now().await;
            }
            anyhow::Ok(h)
        })
    };

    let per_writer = o.updates.div_ceil(o.writers);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..o.writers {
        let (b, o) = (Arc::clone(&boards), Arc::clone(&o));
        writers.push(tokio::spawn(async move {
            let mut lag = histogram();
            let mut rng = StdRng::seed_from_u64(w as u64);
            let mut applied = 0u64;
            let mut sent = 0usize;
            let period = (o.rate > 0).then(|| {
                Duration::from_secs_f64(o.batch as f64 * o.writers as f64 / o.rate as f64)
            });
            let first = Instant::now();
            let mut batches = 0u32;
            while sent < per_writer {
                let n = o.batch.min(per_writer - sent);
                let created = match period {
                    Some(p) => {
                        let due = first + p * batches;
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                batches += 1;
                let at_ms = now_ms();
                let batch: Vec<BoardUpdate> = (0..n)
                    .map(|i| {
                        let (room_id, broadcaster_id) = room(&o, rng.random_range(0..o.rooms));
                        let sender = rng.random_range(0..o.senders);
                        BoardUpdate {
                            update_id: format!("w{w}-{}", sent + i),
                            room_id,
                            broadcaster_id,
                            sender_id: format!("user{sender}"),
                            sender_name: format!("User {sender}"),
                            amount_minor: [99i64, 199, 499, 999, 4999][rng.random_range(0..5)],
                            at_ms,
                        }
                    })
                    .collect();
                let report = b.apply_batch(&batch).await?;
                applied += u64::from(report.applied);
                let took = created.elapsed().as_micros() as u64;
                lag.record_n(took.max(1), n as u64)?;
                sent += n;
            }
            anyhow::Ok((lag, applied))
        }));
    }
    let mut lag = histogram();
    let mut applied = 0;
    for writer in writers {
        let (h, n) = writer.await??;
        lag.add(&h)?;
        applied += n;
    }
    let elapsed = started.elapsed();
    writing.store(false, Ordering::Relaxed);
    let reads_under_load = reader.await??;

    let mut idle = histogram();
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..o.reads {
        let took = read_once(boards.as_ref(), &o, &mut rng).await?;
        idle.saturating_record(took.as_micros() as u64);
    }

    println!(
        "applied {applied} updates in {:.3} s = {:.0} updates/s",
        elapsed.as_secs_f64(),
        applied as f64 / elapsed.as_secs_f64()
    );
    line("apply lag (per update)", &lag);
    line("top-10 read, under writes", &reads_under_load);
    line("top-10 read, idle", &idle);

    if o.backend == "redis" {
        let removed = delete_prefix(&o.redis_url, &prefix).await?;
        println!("removed {removed} keys under {prefix}");
    }
    Ok(())
}

async fn delete_prefix(url: &str, prefix: &str) -> Result<usize> {
    let mut con = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor: u64 = 0;
    let mut removed = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut con)
                .await?;
            removed += keys.len();
        }
        cursor = next;
        if cursor == 0 {
            return Ok(removed);
        }
    }
}
