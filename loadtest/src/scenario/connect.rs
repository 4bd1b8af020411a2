//! Connect phase: the viewers, paced at the connect rate and spread over the
//! gateways, each a task that reads its room's frames until told to stop.

use std::collections::hash_map::Entry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::config::Scenario;
use crate::metrics::Metrics;
use crate::net::{connect_ws, to_ws_url, SourcePool};
use crate::progress::Progress;
use crate::scan::{fingerprint, scan_frame};
use crate::verify::{Anomaly, SeqTracker, ViewerRecord};

use super::setup::Setup;
use super::{Room, Shared};

/// Frames that arrived before their purchase's 201, kept per viewer to time later.
const PENDING_FRAMES_MAX: usize = 10_000;
/// How long a new connection may take to send its welcome frame.
const WELCOME_WAIT: Duration = Duration::from_secs(10);

/// The running viewer tasks and how to stop them.
pub(super) struct Viewers {
    pub(super) tasks: JoinSet<Option<ViewerRecord>>,
    pub(super) stop: watch::Sender<bool>,
    pub(super) pool: Arc<SourcePool>,
}

/// Starts every viewer and waits (up to 30 s) until each is connected or failed.
pub(super) async fn connect(
    s: &Scenario,
    setup: &Setup,
    rooms: &[Room],
    shared: &Arc<Shared>,
    progress: &Progress,
) -> Result<Viewers> {
    let (run_id, metrics) = (&setup.run_id, &shared.metrics);
    progress.set_phase("connecting");
    let pool = Arc::new(SourcePool::new(s.source_ips.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut viewer_tasks = JoinSet::new();
    let connect_start = Instant::now();
    for v in 0..setup.total_viewers {
        let due = connect_start + Duration::from_secs_f64(v as f64 / s.connect_rate);
        tokio::time::sleep_until(due.into()).await;
        let room = v % s.rooms;
        let gateway = to_ws_url(&s.gateways[v % s.gateways.len()]);
        let token = setup.mint.mint(
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
        if done >= setup.total_viewers as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(Viewers {
        tasks: viewer_tasks,
        stop: stop_tx,
        pool,
    })
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
