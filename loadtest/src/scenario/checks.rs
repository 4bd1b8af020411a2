//! Verify phase: every gift reached every viewer once and in order, the
//! finance summary and revenue report grew by exactly what was bought, and
//! each room's leaderboard matches the purchases.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::api::Api;
use crate::config::Scenario;
use crate::progress::Progress;
use crate::verify::{self, Problem, PurchasedGift, ViewerRecord};

use super::setup::Setup;
use super::{Room, Shared};

/// Leaderboard rows read back for verification (SPEC: `limit=100`).
const LEADERBOARD_LIMIT: usize = 100;
/// How long the leaderboard may lag a purchase before it is a mismatch (SPEC §5: 1 s, with margin).
const LEADERBOARD_WAIT: Duration = Duration::from_secs(5);

/// What the verification found.
pub(super) struct Verified {
    pub(super) purchases: Vec<PurchasedGift>,
    pub(super) problems: Vec<Problem>,
    /// Minor units bought by the created gifts.
    pub(super) bought: i64,
    /// Purchases whose outcome stayed unknown after the retries.
    pub(super) unknown: u64,
}

/// Runs every check on what the run recorded.
pub(super) async fn verify(
    s: &Scenario,
    setup: &Setup,
    rooms: &[Room],
    shared: &Shared,
    records: &[ViewerRecord],
    gross_before: Result<i64>,
    progress: &Progress,
) -> Verified {
    let (api, finance, run_id) = (&setup.api, &setup.finance, &setup.run_id);
    progress.set_phase("verifying");
    let purchases = std::mem::take(&mut *shared.purchases.lock().expect("purchases lock"));
    let mut problems = std::mem::take(&mut *shared.problems.lock().expect("problems lock"));
    let logs: Vec<HashMap<u64, u64>> = shared
        .room_logs
        .iter()
        .map(|l| std::mem::take(&mut *l.lock().expect("room log lock")))
        .collect();
    problems.extend(verify::verify_deliveries(&purchases, &logs, records));
    let bought: i64 = purchases.iter().map(|p| p.amount_minor).sum();
    let unknown = shared.metrics.gifts_unknown.load(Ordering::Relaxed);
    if unknown > 0 {
        problems.push(Problem::UnknownOutcome { count: unknown });
    }
    if !s.shared_deployment {
        problems.extend(check_finance(api, finance, gross_before, bought).await);
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
    problems.extend(check_revenue(api, finance, setup.started_day, &by_broadcaster).await);
    for (r, room) in rooms.iter().enumerate() {
        let mut tallies = BTreeMap::new();
        for p in purchases.iter().filter(|p| p.room == r) {
            *tallies.entry(p.sender_id.clone()).or_insert(0i64) += p.amount_minor;
        }
        problems.extend(check_leaderboard(api, &room.room_id, &tallies).await);
    }
    Verified {
        purchases,
        problems,
        bought,
        unknown,
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
