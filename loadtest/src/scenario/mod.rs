//! The `run` and `purchase` modes: open rooms, fund senders, connect viewers,
//! buy gifts at the scenario's rate (or in closed loop), acknowledge some as the
//! broadcaster, then verify deliveries, finance and leaderboards.
//!
//! [`run`] is the sequence of its phases, one module each: `setup` (tokens,
//! catalog, rooms, funding), `connect` (the viewers), `drive` (the
//! purchases), `drain` (until every viewer saw the last gift), `checks`
//! (deliveries, finance, leaderboards) and `summary` (the report).

mod checks;
mod connect;
mod drain;
mod drive;
mod setup;
mod summary;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use anyhow::Result;

use crate::config::{OutputOpts, Scenario};
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::report::Report;
use crate::verify::{Problem, PurchasedGift};

pub(crate) use summary::{server_stats, summarize};

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

impl Shared {
    fn new(metrics: Arc<Metrics>, rooms: usize, viewers: usize) -> Self {
        Self {
            metrics,
            sent: RwLock::default(),
            acks: Mutex::default(),
            room_logs: (0..rooms).map(|_| Mutex::default()).collect(),
            last_seq: (0..viewers).map(|_| AtomicU64::new(0)).collect(),
            sending_started: AtomicBool::new(false),
            purchases: Mutex::default(),
            problems: Mutex::default(),
        }
    }
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
    let setup = setup::Setup::new(s)?;
    let metrics = Arc::new(Metrics::default());
    let progress = Progress::start(metrics.clone(), out.quiet);
    let setup::World {
        catalog,
        mix,
        gross_before,
        rooms,
        senders,
    } = setup.open(s, &progress).await?;

    let shared = Arc::new(Shared::new(metrics, s.rooms, setup.total_viewers));
    let viewers = connect::connect(s, &setup, &rooms, &shared, &progress).await?;
    let driven = drive::drive(
        s,
        out,
        &setup,
        drive::Goods {
            rooms: &rooms,
            senders,
            mix,
            catalog: &catalog,
        },
        &shared,
        &progress,
    )
    .await?;
    let (records, pool) = drain::drain(s, &setup, &shared, viewers, &progress).await;
    driven.sampler.abort();
    let (timeline, rss_max) = driven.timeline.take();
    let verified = checks::verify(
        s,
        &setup,
        &rooms,
        &shared,
        &records,
        gross_before,
        &progress,
    )
    .await;
    progress.finish();

    Ok(summary::outcome(
        mode,
        s,
        out,
        &setup,
        &shared.metrics,
        summary::Finished {
            driven,
            timeline,
            rss_max,
            records,
            pool,
            verified,
        },
    ))
}
