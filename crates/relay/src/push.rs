//! The live top 10: a room's board is pushed as a `leaderboard` room event
//! (through the ledger's outbox, like every event) when it changed.

use std::collections::HashMap;
use std::sync::Arc;

use applause_core::events::LeaderboardEntryView;
use applause_core::EventBody;
use applause_leaderboard::Window;

use crate::Shared;

/// A room quiet for this long is forgotten (its next push is sent even if
/// the board looks the same as the last one pushed).
const QUIET_MS: i64 = 600_000;

/// Pushes a room's live top 10 when it changed, at most once per interval per
/// room; the last push of a burst always carries the latest state because
/// every room touched since the previous tick is looked at again.
pub(crate) async fn push_loop(s: Arc<Shared>) {
    let mut last: HashMap<String, (Vec<LeaderboardEntryView>, i64)> = HashMap::new();
    let mut tick = tokio::time::interval(s.config.leaderboard_push_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let rooms: Vec<String> = {
            let mut t = s.touched_rooms.lock().unwrap_or_else(|p| p.into_inner());
            t.drain().collect()
        };
        for room_id in rooms {
            let Ok(Some(room)) = s.ledger.room(&room_id).await else {
                continue;
            };
            if !room.live {
                last.remove(&room_id);
                continue;
            }
            let Ok(top) = s
                .boards
                .top(
                    &room_id,
                    &room.broadcaster_id,
                    Window::Live,
                    10,
                    s.clock.now_ms(),
                )
                .await
            else {
                continue;
            };
            let currency = s.ledger.currency();
            let entries: Vec<LeaderboardEntryView> = top
                .iter()
                .map(|e| LeaderboardEntryView {
                    rank: e.rank,
                    user_id: e.user_id.clone(),
                    name: e.name.clone().unwrap_or_else(|| e.user_id.clone()),
                    amount: currency.format(e.amount_minor),
                })
                .collect();
            if last.get(&room_id).is_some_and(|(prev, _)| *prev == entries) {
                continue;
            }
            let body = EventBody::Leaderboard {
                window: "live".into(),
                entries: entries.clone(),
            };
            if s.ledger.append_event(&room_id, body).await.is_ok() {
                last.insert(room_id, (entries, s.clock.now_ms()));
            }
        }
        let now = s.clock.now_ms();
        last.retain(|_, (_, at)| now.saturating_sub(*at) < QUIET_MS);
    }
}
