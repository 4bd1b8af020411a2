//! Drive phase: the purchases, open loop at the scenario's rate (ramped) or
//! closed loop at its concurrency, through a warm-up into the measured
//! window, with some gifts acknowledged by the broadcaster.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::Rng;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{Api, GiftOutcome, StickerInfo};
use crate::config::{OutputOpts, Scenario};
use crate::metrics::{proc_snapshot, spawn_sampler, Metrics, ProcSnapshot, Timeline};
use crate::progress::Progress;
use crate::scan::fingerprint;
use crate::verify::{Problem, PurchasedGift};

use super::setup::Setup;
use super::{Room, Sent, Shared};

/// What the purchases are made of.
pub(super) struct Goods<'a> {
    pub(super) rooms: &'a [Room],
    /// (user id, token)
    pub(super) senders: Vec<(String, String)>,
    /// (sticker id, cumulative weight)
    pub(super) mix: Vec<(String, u64)>,
    pub(super) catalog: &'a [StickerInfo],
}

/// The measured window and the resource samples around it.
pub(super) struct Driven {
    pub(super) measured: Duration,
    pub(super) cpu_start: Option<ProcSnapshot>,
    pub(super) cpu_end: Option<ProcSnapshot>,
    pub(super) own_start: Option<ProcSnapshot>,
    pub(super) own_end: Option<ProcSnapshot>,
    /// Samples the timeline until the caller aborts it (after the drain).
    pub(super) sampler: tokio::task::JoinHandle<()>,
    pub(super) timeline: Arc<Timeline>,
}

/// Sends for warm-up + duration, then waits for the purchases in flight.
pub(super) async fn drive(
    s: &Scenario,
    out: &OutputOpts,
    setup: &Setup,
    goods: Goods<'_>,
    shared: &Arc<Shared>,
    progress: &Progress,
) -> Result<Driven> {
    let metrics = &shared.metrics;
    progress.set_phase("warm-up");
    shared.sending_started.store(true, Ordering::SeqCst);
    let send_start = Instant::now();
    let send_total = s.warmup + s.duration;
    let timeline = Arc::new(Timeline::default());
    let sampler = spawn_sampler(
        metrics.clone(),
        timeline.clone(),
        send_start,
        out.server_pid,
    );
    let warm = {
        let (metrics, pid, warmup) = (metrics.clone(), out.server_pid, s.warmup);
        let phase = progress.phase.clone();
        tokio::spawn(async move {
            tokio::time::sleep(warmup).await;
            let snap = pid.and_then(proc_snapshot);
            let own = proc_snapshot(std::process::id());
            metrics.measuring.store(true, Ordering::SeqCst);
            *phase.lock().expect("phase lock") = "measuring".into();
            (Instant::now(), snap, own)
        })
    };
    let ctx = Arc::new(SendCtx {
        // Its own pool: the buyers run on their own runtime (below).
        api: setup.api.fresh()?,
        shared: shared.clone(),
        rooms: goods
            .rooms
            .iter()
            .map(|r| (r.room_id.clone(), r.broadcaster_token.clone()))
            .collect(),
        senders: goods.senders,
        mix: goods.mix,
        catalog: goods
            .catalog
            .iter()
            .map(|c| (c.id.clone(), c.price_minor))
            .collect(),
        quantity: s.quantity,
        message_share: s.message_share,
        ack_share: s.ack_share,
        run_id: setup.run_id.clone(),
        viewers_per_room: s.viewers_per_room,
    });
    // The buyers (and the broadcaster's acks) get a thread and runtime of
    // their own, as real buyers have devices of their own: on the viewers'
    // runtime a purchase's answer waited behind every viewer frame that had
    // come before it — with thousands of viewers, tens of milliseconds
    // that are the generator's, not the server's.
    // Of the same kind and size as the viewers' (`--worker-threads`), so a
    // closed loop of many buyers has as many threads as before.
    let current = tokio::runtime::Handle::current();
    let mut builder = match current.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(current.metrics().num_workers())
                .thread_name("buyers");
            b
        }
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let (scenario, phase) = (s.clone(), progress.phase.clone());
    let buyers =
        std::thread::Builder::new()
            .name("buyers".into())
            .spawn(move || -> Result<()> {
                let runtime = builder.enable_all().build()?;
                runtime.block_on(buy_all(&scenario, ctx, send_start, send_total))?;
                *phase.lock().expect("phase lock") = "finishing purchases".into();
                Ok(())
            })?;
    let bought = tokio::task::spawn_blocking(move || buyers.join()).await?;
    bought.map_err(|_| anyhow::anyhow!("the buyers' thread panicked"))??;
    let (measure_start, cpu_start, own_start) = warm.await.unwrap_or((Instant::now(), None, None));
    metrics.measuring.store(false, Ordering::SeqCst);
    let measured = measure_start.elapsed();
    let cpu_end = out.server_pid.and_then(proc_snapshot);
    let own_end = proc_snapshot(std::process::id());
    Ok(Driven {
        measured,
        cpu_start,
        cpu_end,
        own_start,
        own_end,
        sampler,
        timeline,
    })
}

/// Buys for `send_total` from `send_start`, open loop at the scenario's
/// rate or closed loop at its concurrency, then waits for what is in flight.
async fn buy_all(
    s: &Scenario,
    ctx: Arc<SendCtx>,
    send_start: Instant,
    send_total: Duration,
) -> Result<()> {
    let mut inflight = JoinSet::new();
    if s.rate_end.is_some() {
        let permits = Arc::new(Semaphore::new(s.concurrency));
        let mut next = 0u64;
        loop {
            let t = send_start.elapsed();
            if t >= send_total {
                break;
            }
            let due = s.gifts_due(t).unwrap_or(0);
            while next < due {
                let permit = permits.clone().acquire_owned().await?;
                let ctx = ctx.clone();
                let i = next;
                inflight.spawn(async move {
                    ctx.buy(i).await;
                    drop(permit);
                });
                next += 1;
            }
            while inflight.try_join_next().is_some() {}
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    } else {
        let counter = Arc::new(AtomicU64::new(0));
        for _ in 0..s.concurrency {
            let (ctx, counter) = (ctx.clone(), counter.clone());
            inflight.spawn(async move {
                while send_start.elapsed() < send_total {
                    ctx.buy(counter.fetch_add(1, Ordering::Relaxed)).await;
                }
            });
        }
    }
    while inflight.join_next().await.is_some() {}
    Ok(())
}

/// Everything a purchase needs.
struct SendCtx {
    api: Api,
    shared: Arc<Shared>,
    /// (room id, broadcaster token)
    rooms: Vec<(String, String)>,
    /// (user id, token)
    senders: Vec<(String, String)>,
    mix: Vec<(String, u64)>,
    catalog: HashMap<String, i64>,
    quantity: u32,
    message_share: f64,
    ack_share: f64,
    run_id: String,
    viewers_per_room: usize,
}

impl SendCtx {
    /// Buys gift number `i` and records everything about it.
    async fn buy(&self, i: u64) {
        let m = &self.shared.metrics;
        let room = (i % self.rooms.len() as u64) as usize;
        let sender = ((i / self.rooms.len() as u64) % self.senders.len() as u64) as usize;
        let (sticker, with_message, with_ack) = {
            let mut rng = rand::rng();
            let total = self.mix.last().map_or(1, |m| m.1);
            let pick = rng.random_range(0..total);
            let sticker = self
                .mix
                .iter()
                .find(|(_, c)| pick < *c)
                .map_or(self.mix[0].0.clone(), |(id, _)| id.clone());
            (
                sticker,
                rng.random_bool(self.message_share),
                rng.random_bool(self.ack_share),
            )
        };
        let mut body = json!({ "sticker_id": sticker, "quantity": self.quantity });
        if with_message {
            body["message"] = json!(format!("loadtest gift {i}"));
        }
        let key = format!("lt{}-{i}", self.run_id);
        let measured = m.is_measuring();
        m.gifts_attempted.fetch_add(1, Ordering::Relaxed);
        let (room_id, broadcaster) = &self.rooms[room];
        let (sender_id, token) = &self.senders[sender];
        let r = self.api.send_gift(token, room_id, &body, &key).await;
        m.retries.fetch_add(u64::from(r.retries), Ordering::Relaxed);
        if measured {
            Metrics::record(&m.purchase, r.finished - r.started);
        }
        let gift = match r.outcome {
            GiftOutcome::Created(g) => g,
            GiftOutcome::Rejected { code, .. } => {
                m.gifts_rejected.fetch_add(1, Ordering::Relaxed);
                m.error(&code);
                return;
            }
            GiftOutcome::Unknown { .. } => {
                m.gifts_unknown.fetch_add(1, Ordering::Relaxed);
                m.error("no_answer_after_retries");
                return;
            }
        };
        let fp = fingerprint(&gift.gift_id);
        let sent = Sent {
            started: r.started,
            measured,
        };
        self.shared
            .sent
            .write()
            .expect("sent lock")
            .insert(fp, sent);
        m.gifts_created.fetch_add(1, Ordering::Relaxed);
        if measured {
            m.gifts_measured.fetch_add(1, Ordering::Relaxed);
        }
        let expected = self.catalog.get(&sticker).copied().unwrap_or(0) * i64::from(self.quantity);
        if expected != gift.amount_minor {
            self.shared
                .problems
                .lock()
                .expect("problems lock")
                .push(Problem::AmountMismatch {
                    gift_id: gift.gift_id.clone(),
                    expected,
                    got: gift.amount_minor,
                });
        }
        let sender_id = if gift.sender_id.is_empty() {
            sender_id.clone()
        } else {
            gift.sender_id.clone()
        };
        self.shared
            .purchases
            .lock()
            .expect("purchases lock")
            .push(PurchasedGift {
                gift_id: gift.gift_id.clone(),
                room,
                sender_id,
                amount_minor: gift.amount_minor,
                seq: gift.seq,
            });
        if with_ack {
            m.acks_sent.fetch_add(1, Ordering::Relaxed);
            let ack_start = Instant::now();
            self.shared.acks.lock().expect("acks lock").insert(
                fp,
                Sent {
                    started: ack_start,
                    measured,
                },
            );
            let result = self.api.ack(broadcaster, &gift.gift_id, "thank you!").await;
            if let Err(code) = result {
                self.shared.acks.lock().expect("acks lock").remove(&fp);
                m.error(&format!("ack_{code}"));
            } else if self.viewers_per_room == 0 && measured {
                // Nobody watches: the round trip is the HTTP call alone.
                Metrics::record(&m.ack, ack_start.elapsed());
            }
        }
    }
}
