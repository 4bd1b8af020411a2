//! Drain phase: wait until every open viewer has seen its room's last
//! purchased seq (or deliveries went quiet), then stop and collect the viewers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Scenario;
use crate::net::SourcePool;
use crate::progress::Progress;
use crate::verify::ViewerRecord;

use super::connect::Viewers;
use super::setup::Setup;
use super::Shared;

/// Without seqs to wait for, the drain ends after deliveries stop for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

/// The viewers' records in viewer order, and the source pool they used.
pub(super) async fn drain(
    s: &Scenario,
    setup: &Setup,
    shared: &Shared,
    viewers: Viewers,
    progress: &Progress,
) -> (Vec<ViewerRecord>, Arc<SourcePool>) {
    let (metrics, total_viewers) = (&shared.metrics, setup.total_viewers);
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
    let Viewers {
        mut tasks,
        stop,
        pool,
    } = viewers;
    let _ = stop.send(true);
    let mut records = Vec::with_capacity(total_viewers);
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some(rec)) = r {
            records.push(rec);
        }
    }
    records.sort_by_key(|r| r.viewer);
    (records, pool)
}
