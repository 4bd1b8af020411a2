//! Report phase: the counters, latencies, resource use and verification of
//! a run, as the report the binary prints.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::config::{OutputOpts, Scenario};
use crate::metrics::{Metrics, Percentiles, ProcSnapshot, Sample};
use crate::money::format_minor;
use crate::net::SourcePool;
use crate::report::{self, Report};
use crate::verify::{Problem, ViewerRecord};

use super::checks::Verified;
use super::drive::Driven;
use super::setup::Setup;
use super::Outcome;

/// What the phases after the setup produced.
pub(super) struct Finished {
    pub(super) driven: Driven,
    pub(super) timeline: Vec<Sample>,
    pub(super) rss_max: u64,
    pub(super) records: Vec<ViewerRecord>,
    pub(super) pool: Arc<SourcePool>,
    pub(super) verified: Verified,
}

/// The run's report and problems.
pub(super) fn outcome(
    mode: &str,
    s: &Scenario,
    out: &OutputOpts,
    setup: &Setup,
    metrics: &Metrics,
    finished: Finished,
) -> Outcome {
    let Finished {
        driven,
        timeline,
        rss_max,
        records,
        pool,
        verified,
    } = finished;
    let Verified {
        purchases,
        problems,
        bought,
        unknown,
    } = verified;
    let total_viewers = setup.total_viewers;
    let throughout = records.iter().filter(|r| r.throughout).count() as u64;
    let m = metrics;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let measured_s = driven.measured.as_secs_f64().max(1e-9);
    let deliveries_measured = load(&m.deliveries_measured);
    let mut report = Report {
        mode: mode.to_owned(),
        run_id: setup.run_id.clone(),
        started_at: setup.started_at.clone(),
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
        amount: format_minor(&setup.currency, bought),
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
        driven.cpu_start,
        driven.cpu_end,
        rss_max,
        deliveries_measured,
        load(&m.gifts_measured),
    );
    report.client = server_stats(
        Some(std::process::id()),
        driven.own_start,
        driven.own_end,
        0,
        deliveries_measured,
        load(&m.gifts_measured),
    );
    report.timeline = timeline;
    report.verification = summarize(&problems, throughout, purchases.len() as u64);
    Outcome {
        report,
        problems,
        problems_fatal: true,
    }
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
