//! The `run` and `purchase` modes: open rooms, fund senders, connect viewers,
//! buy gifts at the scenario's rate (or in closed loop), acknowledge some as the
//! broadcaster, then verify deliveries, finance and leaderboards.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use applause_core::money::AMOUNT_MINOR_MAX;
use applause_core::Currency;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::json;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{Api, GiftOutcome, StickerInfo};
use crate::auth::TokenMint;
use crate::config::{OutputOpts, Scenario};
use crate::metrics::{proc_snapshot, spawn_sampler, Metrics, Percentiles, ProcSnapshot, Timeline};
use crate::money::format_minor;
use crate::net::{connect_ws, raise_nofile_limit, to_ws_url, SourcePool};
use crate::progress::Progress;
use crate::report::{self, Report};
use crate::scan::{fingerprint, scan_frame};
use crate::verify::{self, Anomaly, Problem, PurchasedGift, SeqTracker, ViewerRecord};

/// Leaderboard rows read back for verification (SPEC: `limit=100`).
const LEADERBOARD_LIMIT: usize = 100;
/// How long the leaderboard may lag a purchase before it is a mismatch (SPEC §5: 1 s, with margin).
const LEADERBOARD_WAIT: Duration = Duration::from_secs(5);
/// Frames that arrived before their purchase's 201, kept per viewer to time later.
const PENDING_FRAMES_MAX: usize = 10_000;
/// How long a new connection may take to send its welcome frame.
const WELCOME_WAIT: Duration = Duration::from_secs(10);
/// Without seqs to wait for, the drain ends after deliveries stop for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// Channels funded round-robin.
const CHANNELS: [&str; 3] = ["apple", "google", "web"];

/// When a gift's purchase started, and whether it counts for the measurements.
#[derive(Debug, Clone, Copy)]
struct Sent {
    started: Instant,
    measured: bool,
}

struct Room {
    room_id: String,
    broadcaster_token: String,
}

/// State shared by every task of a run.
struct Shared {
    metrics: Arc<Metrics>,
    /// gift fingerprint → purchase start, filled when the 201 arrives.
    sent: RwLock<HashMap<u64, Sent>>,
    /// gift fingerprint → ack request start.
    acks: Mutex<HashMap<u64, Sent>>,
    /// Per room: seq → gift fingerprint as the first viewer saw it.
    room_logs: Vec<Mutex<HashMap<u64, u64>>>,
    /// Per viewer: highest seq seen (u64::MAX once closed), for the drain.
    last_seq: Vec<AtomicU64>,
    sending_started: AtomicBool,
    purchases: Mutex<Vec<PurchasedGift>>,
    problems: Mutex<Vec<Problem>>,
}

/// What a run produced: the report and every verification problem.
#[derive(Debug)]
pub struct Outcome {
    pub report: Report,
    pub problems: Vec<Problem>,
    /// Whether problems fail the run (fan-out mode only enforces with --strict).
    pub problems_fatal: bool,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        !self.problems_fatal || self.problems.is_empty()
    }
}

/// Runs the scenario (`mode` is "run" or "purchase" for the report).
pub async fn run(s: &Scenario, out: &OutputOpts, mode: &str) -> Result<Outcome> {
    let run_id = format!("{:06x}", rand::rng().random::<u32>() & 0xff_ffff);
    let started_at = chrono::Utc::now().to_rfc3339();
    let started_day = chrono::Utc::now().date_naive();
    let total_viewers = s.rooms * s.viewers_per_room;
    if total_viewers > 0 {
        let limit = raise_nofile_limit(total_viewers as u64 + 4096);
        if limit < total_viewers as u64 + 256 {
            eprintln!("warning: open-file limit {limit} is below {total_viewers} viewers");
        }
    }
    let currency = Currency::new("USD", s.currency_decimals).map_err(anyhow::Error::msg)?;
    let api = Api::new(&s.http_base, s.request_timeout, s.retries, currency.clone())?;
    let mint = TokenMint::new(&s.jwt_secret);
    let admin = mint.mint(&format!("lt{run_id}-admin"), "admin", "loadtest admin")?;
    let finance = mint.mint(
        &format!("lt{run_id}-finance"),
        "finance",
        "loadtest finance",
    )?;

    let metrics = Arc::new(Metrics::default());
    let progress = Progress::start(metrics.clone(), out.quiet);

    progress.set_phase("catalog");
    let catalog = api.stickers().await?;
    let mix = build_mix(s, &catalog)?;
    let gross_before = api.gross_gifts(&finance).await;

    progress.set_phase("rooms");
    let mut rooms = Vec::with_capacity(s.rooms);
    for r in 0..s.rooms {
        let sub = format!("lt{run_id}-b{r}");
        let token = mint.mint(&sub, "broadcaster", &format!("broadcaster {r}"))?;
        let created = api
            .create_room(&token, &format!("loadtest {run_id} room {r}"))
            .await?;
        rooms.push(Room {
            room_id: created.room_id,
            broadcaster_token: token,
        });
    }

    progress.set_phase("funding");
    let senders: Vec<(String, String)> = (0..s.senders)
        .map(|i| {
            let sub = format!("lt{run_id}-s{i}");
            let token = mint.mint(&sub, "viewer", &format!("sender {i}"))?;
            Ok((sub, token))
        })
        .collect::<Result<_>>()?;
    let topup = match &s.topup {
        Some(t) => crate::money::parse_minor(&currency, t)?,
        None => default_topup(s, &catalog, &mix),
    };
    let fund = futures_util::stream::iter(senders.iter().enumerate().map(|(i, (sub, _))| {
        let (api, admin) = (&api, &admin);
        let receipt = format!("lt{run_id}-topup-{i}");
        async move {
            api.topup(admin, sub, CHANNELS[i % CHANNELS.len()], topup, &receipt)
                .await
        }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    for r in fund {
        r.context("funding senders")?;
    }

    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        sent: RwLock::default(),
        acks: Mutex::default(),
        room_logs: (0..s.rooms).map(|_| Mutex::default()).collect(),
        last_seq: (0..total_viewers).map(|_| AtomicU64::new(0)).collect(),
        sending_started: AtomicBool::new(false),
        purchases: Mutex::default(),
        problems: Mutex::default(),
    });

    // Viewers, paced at the connect rate and spread over the gateways.
    progress.set_phase("connecting");
    let pool = Arc::new(SourcePool::new(s.source_ips.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut viewer_tasks = JoinSet::new();
    let connect_start = Instant::now();
    for v in 0..total_viewers {
        let due = connect_start + Duration::from_secs_f64(v as f64 / s.connect_rate);
        tokio::time::sleep_until(due.into()).await;
        let room = v % s.rooms;
        let gateway = to_ws_url(&s.gateways[v % s.gateways.len()]);
        let token = mint.mint(
            &format!("lt{run_id}-v{v}"),
            "viewer",
            &format!("viewer {v}"),
        )?;
        let url = format!(
            "{gateway}/v1/ws?room={}&access_token={token}",
            rooms[room].room_id
        );
        let (shared, pool, stop) = (shared.clone(), pool.clone(), stop_rx.clone());
        viewer_tasks.spawn(viewer(shared, v, room, url, pool, stop));
    }
    let settle_deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < settle_deadline {
        let done = metrics.connected.load(Ordering::Relaxed)
            + metrics.connect_failed.load(Ordering::Relaxed);
        if done >= total_viewers as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Sending.
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
        api: api.clone(),
        shared: shared.clone(),
        rooms: rooms
            .iter()
            .map(|r| (r.room_id.clone(), r.broadcaster_token.clone()))
            .collect(),
        senders,
        mix,
        catalog: catalog
            .iter()
            .map(|c| (c.id.clone(), c.price_minor))
            .collect(),
        quantity: s.quantity,
        message_share: s.message_share,
        ack_share: s.ack_share,
        run_id: run_id.clone(),
        viewers_per_room: s.viewers_per_room,
    });
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
    progress.set_phase("finishing purchases");
    while inflight.join_next().await.is_some() {}
    let (measure_start, cpu_start, own_start) = warm.await.unwrap_or((Instant::now(), None, None));
    metrics.measuring.store(false, Ordering::SeqCst);
    let measured = measure_start.elapsed();
    let cpu_end = out.server_pid.and_then(proc_snapshot);
    let own_end = proc_snapshot(std::process::id());

    // Drain: wait until every open viewer has seen its room's last purchased seq.
    progress.set_phase("draining");
    let mut room_target = vec![0u64; s.rooms];
    let mut seqs_missing = false;
    for p in shared.purchases.lock().expect("purchases lock").iter() {
        match p.seq {
            Some(seq) => room_target[p.room] = room_target[p.room].max(seq),
            None => seqs_missing = true,
        }
    }
    // Without seqs in the 201s there is no target: wait for deliveries to
    // go quiet instead.
    let quiet_needed = if seqs_missing && total_viewers > 0 {
        DRAIN_QUIET
    } else {
        Duration::ZERO
    };
    let drain_deadline = Instant::now() + s.drain;
    let (mut last_count, mut last_change) = (u64::MAX, Instant::now());
    while Instant::now() < drain_deadline {
        let count = metrics.deliveries.load(Ordering::Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        let behind = shared
            .last_seq
            .iter()
            .enumerate()
            .any(|(v, last)| last.load(Ordering::Relaxed) < room_target[v % s.rooms]);
        if !behind && last_change.elapsed() >= quiet_needed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    let mut records = Vec::with_capacity(total_viewers);
    while let Some(r) = viewer_tasks.join_next().await {
        if let Ok(Some(rec)) = r {
            records.push(rec);
        }
    }
    records.sort_by_key(|r| r.viewer);
    sampler.abort();
    let (timeline, rss_max) = timeline.take();

    // Verification.
    progress.set_phase("verifying");
    let purchases = std::mem::take(&mut *shared.purchases.lock().expect("purchases lock"));
    let mut problems = std::mem::take(&mut *shared.problems.lock().expect("problems lock"));
    let logs: Vec<HashMap<u64, u64>> = shared
        .room_logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().expect("room log lock")))
        .collect();
    problems.extend(verify::verify_deliveries(&purchases, &logs, &records));
    let bought: i64 = purchases.iter().map(|p| p.amount_minor).sum();
    let unknown = metrics.gifts_unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        problems.push(Problem::UnknownOutcome { count: unknown });
    }
    if !s.shared_deployment {
        problems.extend(check_finance(&api, &finance, gross_before, bought).await);
    }
    let mut by_broadcaster = BTreeMap::new();
    for r in 0..rooms.len() {
        let gross: i64 = purchases
            .iter()
            .filter(|p| p.room == r)
            .map(|p| p.amount_minor)
            .sum();
        by_broadcaster.insert(format!("lt{run_id}-b{r}"), gross);
    }
    problems.extend(check_revenue(&api, &finance, started_day, &by_broadcaster).await);
    for (r, room) in rooms.iter().enumerate() {
        let mut tallies = BTreeMap::new();
        for p in purchases.iter().filter(|p| p.room == r) {
            *tallies.entry(p.sender_id.clone()).or_insert(0i64) += p.amount_minor;
        }
        problems.extend(check_leaderboard(&api, &room.room_id, &tallies).await);
    }
    progress.finish();

    let throughout = records.iter().filter(|r| r.throughout).count() as u64;
    let m = &metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let measured_s = measured.as_secs_f64().max(1e-9);
    let deliveries_measured = load(&m.deliveries_measured);
    let mut report = Report {
        mode: mode.to_owned(),
        run_id,
        started_at,
        scenario: scenario_summary(s),
        measured_s,
        ..Report::default()
    };
    report.gifts = report::GiftCounts {
        attempted: load(&m.gifts_attempted),
        created: load(&m.gifts_created),
        rejected: load(&m.gifts_rejected),
        unknown,
        retries: load(&m.retries),
        acks_sent: load(&m.acks_sent),
        per_s: load(&m.gifts_measured) as f64 / measured_s,
        amount: format_minor(&currency, bought),
    };
    report.deliveries = report::Deliveries {
        total: load(&m.deliveries),
        measured: deliveries_measured,
        per_s: deliveries_measured as f64 / measured_s,
    };
    report.viewers = report::ViewerCounts {
        target: total_viewers as u64,
        connected: load(&m.connected),
        connect_failed: load(&m.connect_failed),
        disconnected: load(&m.disconnected),
        source_addresses_used: if total_viewers > 0 { pool.in_use() } else { 0 },
    };
    report.latency = report::Latencies {
        gift_to_screen: Percentiles::of(&m.screen.total()),
        purchase: Percentiles::of(&m.purchase.lock().expect("lock").total),
        ack_round_trip: Percentiles::of(&m.ack.lock().expect("lock").total),
        connect: Percentiles::of(&m.connect.lock().expect("lock").total),
    };
    report.errors = m.errors.lock().expect("errors lock").clone();
    report.server = server_stats(
        out.server_pid,
        cpu_start,
        cpu_end,
        rss_max,
        deliveries_measured,
        load(&m.gifts_measured),
    );
    report.client = server_stats(
        Some(std::process::id()),
        own_start,
        own_end,
        0,
        deliveries_measured,
        load(&m.gifts_measured),
    );
    report.timeline = timeline;
    report.verification = summarize(&problems, throughout, purchases.len() as u64);
    Ok(Outcome {
        report,
        problems,
        problems_fatal: true,
    })
}

pub(crate) fn server_stats(
    pid: Option<u32>,
    start: Option<ProcSnapshot>,
    end: Option<ProcSnapshot>,
    rss_max: u64,
    deliveries: u64,
    gifts: u64,
) -> Option<report::ServerStats> {
    let pid = pid?;
    let (start, end) = (start?, end?);
    let cpu = end.cpu.saturating_sub(start.cpu).as_secs_f64();
    let per = |n: u64| (n > 0).then(|| cpu * 1e6 / n as f64);
    Some(report::ServerStats {
        pid,
        cpu_s: cpu,
        cpu_us_per_delivery: per(deliveries),
        cpu_us_per_gift: per(gifts),
        rss_kib_end: end.rss_kib,
        rss_kib_max: rss_max.max(end.rss_kib),
    })
}

pub(crate) fn summarize(problems: &[Problem], viewers: u64, gifts: u64) -> report::Verification {
    let mut by_kind = BTreeMap::new();
    for p in problems {
        *by_kind.entry(p.kind().to_owned()).or_insert(0u64) += p.weight();
    }
    report::Verification {
        performed: true,
        ok: problems.is_empty(),
        viewers_checked: viewers,
        gifts_checked: gifts,
        problems_total: problems.iter().map(Problem::weight).sum(),
        problems_by_kind: by_kind,
        problems: problems
            .iter()
            .take(report::PROBLEMS_LISTED_MAX)
            .map(ToString::to_string)
            .collect(),
    }
}

fn scenario_summary(s: &Scenario) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), v);
    };
    put("http_base", s.http_base.clone());
    put("gateways", s.gateways.join(","));
    put("rooms", s.rooms.to_string());
    put("viewers_per_room", s.viewers_per_room.to_string());
    put("senders", s.senders.to_string());
    put(
        "rate",
        s.rate_end.map_or("closed-loop".into(), |r| r.to_string()),
    );
    put(
        "ramp_from",
        s.rate_start.map_or("-".into(), |r| r.to_string()),
    );
    put("quantity", s.quantity.to_string());
    put("message_share", s.message_share.to_string());
    put("ack_share", s.ack_share.to_string());
    put("duration_s", s.duration.as_secs_f64().to_string());
    put("warmup_s", s.warmup.as_secs_f64().to_string());
    put("concurrency", s.concurrency.to_string());
    m
}

/// The weighted sticker mix as (sticker id, price, cumulative weight).
fn build_mix(s: &Scenario, catalog: &[StickerInfo]) -> Result<Vec<(String, u64)>> {
    if catalog.is_empty() {
        bail!("the sticker catalog is empty");
    }
    let mut out = Vec::new();
    let mut cumulative = 0u64;
    match &s.mix {
        None => {
            for c in catalog {
                cumulative += 1;
                out.push((c.id.clone(), cumulative));
            }
        }
        Some(mix) => {
            for m in mix.iter().filter(|m| m.weight > 0) {
                if !catalog.iter().any(|c| c.id == m.sticker_id) {
                    bail!("sticker {:?} is not in the server's catalog", m.sticker_id);
                }
                cumulative += u64::from(m.weight);
                out.push((m.sticker_id.clone(), cumulative));
            }
        }
    }
    Ok(out)
}

/// Enough money per sender for the whole run with a wide margin.
fn default_topup(s: &Scenario, catalog: &[StickerInfo], mix: &[(String, u64)]) -> i64 {
    let max_price = mix
        .iter()
        .filter_map(|(id, _)| catalog.iter().find(|c| &c.id == id))
        .map(|c| c.price_minor)
        .max()
        .unwrap_or(0);
    let total = s.warmup + s.duration;
    // Closed loop has no rate: budget for a generous 20,000 gifts/s.
    let gifts = s
        .gifts_due(total)
        .unwrap_or((20_000.0 * total.as_secs_f64()) as u64);
    let per_sender = gifts / s.senders as u64 + 16;
    let amount = (per_sender as i64)
        .saturating_mul(max_price)
        .saturating_mul(i64::from(s.quantity))
        .saturating_mul(2);
    amount.clamp(100, AMOUNT_MINOR_MAX / 1000)
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

/// One viewer connection: connect, then read frames until told to stop.
async fn viewer(
    shared: Arc<Shared>,
    v: usize,
    room: usize,
    url: String,
    pool: Arc<SourcePool>,
    mut stop: watch::Receiver<bool>,
) -> Option<ViewerRecord> {
    let m = &shared.metrics;
    let t0 = Instant::now();
    let mut ws = match connect_ws(&url, &pool).await {
        Ok(ws) => ws,
        Err(e) => {
            m.connect_failed.fetch_add(1, Ordering::Relaxed);
            m.error(&connect_error_code(&e));
            shared.last_seq[v].store(u64::MAX, Ordering::Relaxed);
            return None;
        }
    };
    // A viewer counts as connected once welcomed: the welcome's seq is where
    // its obligation to see every later event starts.
    let mut tracker = SeqTracker::default();
    let welcome = tokio::time::timeout(WELCOME_WAIT, ws.next()).await;
    let welcomed = match welcome {
        Ok(Some(Ok(Message::Text(text)))) => {
            let f = scan_frame(&text);
            (f.kind == "welcome").then(|| {
                tracker.welcome(f.seq.unwrap_or(0), f.epoch);
                shared.last_seq[v].store(f.seq.unwrap_or(0), Ordering::Relaxed);
            })
        }
        _ => None,
    };
    if welcomed.is_none() {
        m.connect_failed.fetch_add(1, Ordering::Relaxed);
        m.error("no_welcome");
        shared.last_seq[v].store(u64::MAX, Ordering::Relaxed);
        return None;
    }
    Metrics::record(&m.connect, t0.elapsed());
    m.connected.fetch_add(1, Ordering::Relaxed);
    let welcomed_in_time = !shared.sending_started.load(Ordering::SeqCst);
    let mut open = true;
    let mut pending: Vec<(u64, Instant)> = Vec::new();
    // One stop future for the whole loop: creating it per frame would
    // re-register a waker on the shared channel for every received frame.
    let stopped = stop.changed();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let now = Instant::now();
                    let f = scan_frame(&text);
                    if f.kind == "welcome" {
                        m.error("second_welcome");
                        continue;
                    }
                    if let Some(code) = f.code {
                        m.error(&format!("ws_{code}"));
                    }
                    let Some(seq) = f.seq else { continue };
                    let fresh = tracker.observe(seq, f.epoch);
                    shared.last_seq[v].fetch_max(seq, Ordering::Relaxed);
                    let Some(gift_id) = f.gift_id else { continue };
                    let fp = fingerprint(gift_id);
                    if f.kind == "gift" {
                        match shared.room_logs[room].lock().expect("room log lock").entry(seq) {
                            Entry::Vacant(e) => {
                                e.insert(fp);
                            }
                            Entry::Occupied(e) => {
                                if *e.get() != fp {
                                    tracker.anomalies.push(Anomaly::WrongGift(seq));
                                }
                            }
                        }
                        if fresh {
                            m.delivered();
                            if pending.len() < PENDING_FRAMES_MAX {
                                pending.push((fp, now));
                            }
                            resolve_pending(&shared, v, &mut pending);
                        }
                    } else if f.kind == "ack" {
                        let started = shared.acks.lock().expect("acks lock").remove(&fp);
                        if let Some(s) = started.filter(|s| s.measured) {
                            Metrics::record(&m.ack, now - s.started);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    m.error(&format!("ws_close_{code}"));
                    open = false;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    m.error("ws_connection_lost");
                    open = false;
                    break;
                }
            }
        }
    }
    if !open {
        m.disconnected.fetch_add(1, Ordering::Relaxed);
        shared.last_seq[v].store(u64::MAX, Ordering::Relaxed);
    }
    resolve_pending(&shared, v, &mut pending);
    if open {
        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    }
    Some(ViewerRecord {
        viewer: v,
        room,
        throughout: welcomed_in_time && open,
        tracker,
    })
}

/// Times frames whose purchase start is known by now (the frame can beat the 201).
fn resolve_pending(shared: &Shared, v: usize, pending: &mut Vec<(u64, Instant)>) {
    if pending.is_empty() {
        return;
    }
    let sent = shared.sent.read().expect("sent lock");
    pending.retain(|(fp, arrived)| match sent.get(fp) {
        Some(s) => {
            if s.measured {
                let us = arrived.saturating_duration_since(s.started).as_micros() as u64;
                shared.metrics.screen.record(v, us);
            }
            false
        }
        None => true,
    });
}

fn connect_error_code(e: &anyhow::Error) -> String {
    let text = e.to_string().to_lowercase();
    if text.contains("refused") {
        "connect_refused".into()
    } else if text.contains("out of ports") {
        "connect_out_of_ports".into()
    } else if text.contains("http error") || text.contains("status") {
        "connect_rejected".into()
    } else {
        "connect_failed".into()
    }
}

/// Runs a finance check up to three times, half a second apart, until it
/// finds nothing. The ledger commits before the 201, so one read should do;
/// the retries cover a report served from a short-lived cache.
async fn settled<F, Fut>(mut check: F) -> Vec<Problem>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Vec<Problem>>,
{
    let mut last = Vec::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        last = check().await;
        if last.is_empty() {
            break;
        }
    }
    last
}

fn finance_unavailable(e: anyhow::Error) -> Vec<Problem> {
    vec![Problem::FinanceUnavailable {
        error: format!("{e:#}"),
    }]
}

/// The finance summary's gross gifts grew by exactly what this run bought.
async fn check_finance(api: &Api, finance: &str, before: Result<i64>, bought: i64) -> Vec<Problem> {
    let before = match before {
        Ok(b) => b,
        Err(e) => return finance_unavailable(e),
    };
    settled(|| async {
        match api.gross_gifts(finance).await {
            Ok(after) => verify::verify_finance(before, after, bought)
                .into_iter()
                .collect(),
            Err(e) => finance_unavailable(e),
        }
    })
    .await
}

/// This run's broadcasters in the revenue report (UTC days from the start of
/// the run through today) grossed exactly what was bought in their rooms:
/// unlike the summary's growth, other traffic on the deployment cannot blur it.
async fn check_revenue(
    api: &Api,
    finance: &str,
    started_day: chrono::NaiveDate,
    expected: &BTreeMap<String, i64>,
) -> Vec<Problem> {
    let from = started_day.format("%Y-%m-%d").to_string();
    let to = (chrono::Utc::now().date_naive() + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    settled(|| async {
        match api.gross_by_broadcaster(finance, &from, &to).await {
            Ok(report) => verify::verify_revenue(expected, &report),
            Err(e) => finance_unavailable(e),
        }
    })
    .await
}

async fn check_leaderboard(
    api: &Api,
    room_id: &str,
    tallies: &BTreeMap<String, i64>,
) -> Vec<Problem> {
    let deadline = Instant::now() + LEADERBOARD_WAIT;
    loop {
        let problems = match api.leaderboard(room_id, LEADERBOARD_LIMIT).await {
            Ok(entries) => {
                verify::verify_leaderboard(room_id, tallies, &entries, LEADERBOARD_LIMIT)
            }
            Err(e) => vec![Problem::LeaderboardUnavailable {
                room_id: room_id.to_owned(),
                error: format!("{e:#}"),
            }],
        };
        if problems.is_empty() || Instant::now() >= deadline {
            return problems;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
