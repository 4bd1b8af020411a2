//! Randomised comparison: seeded sequences of gifts, refunds, duplicates and
//! retries, applied in random batches to both twins, must give identical
//! answers to every read, and the tops must equal an independent model.

use applause_leaderboard::{BoardUpdate, Leaderboard};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::common::{self, DAY_MS, HOUR_MS};

const CASES: u64 = 24;

fn random_case(seed: u64, base: i64) -> (Vec<BoardUpdate>, Vec<(String, String)>, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Few users, rooms and amounts, so ties and collisions are common.
    let users: Vec<String> = ["a", "aa", "B", "b", "_x", "z-1", "Zed", "0"]
        .iter()
        .take(rng.random_range(2..=8))
        .map(|s| (*s).to_owned())
        .collect();
    let rooms: Vec<(String, String)> = (0..rng.random_range(1..=4))
        .map(|i| (format!("r{i}"), format!("b{}", i % 2)))
        .collect();
    let mut updates: Vec<BoardUpdate> = Vec::new();
    for i in 0..rng.random_range(1..150) {
        let roll = rng.random_range(0..10);
        if roll == 0 && !updates.is_empty() {
            // A retry of an earlier update, possibly with a newer name.
            let mut again = updates[rng.random_range(0..updates.len())].clone();
            again.sender_name = format!("renamed {i}");
            updates.push(again);
            continue;
        }
        let (room, bc) = rooms[rng.random_range(0..rooms.len())].clone();
        let sender = users[rng.random_range(0..users.len())].clone();
        let amount = if roll == 1 {
            -[5i64, 10, 50][rng.random_range(0..3)]
        } else {
            [5i64, 10, 50][rng.random_range(0..3)]
        };
        // Around a Sunday/Monday midnight and the ISO week boundary.
        let at =
            base + rng.random_range(-2 * HOUR_MS..2 * HOUR_MS) + DAY_MS * rng.random_range(-1..=1);
        updates.push(BoardUpdate {
            update_id: format!("p{seed}-{i}"),
            room_id: room,
            broadcaster_id: bc,
            sender_name: format!("{sender} #{i}"),
            sender_id: sender,
            amount_minor: amount,
            at_ms: at,
        });
    }
    (updates, rooms, users)
}

#[tokio::test]
async fn memory_and_redis_agree_on_random_sequences() {
    let base = common::monday_ms();
    let nows: Vec<i64> = [-DAY_MS - 1, -1, 0, DAY_MS - 1, DAY_MS]
        .iter()
        .map(|d| base + d)
        .collect();
    for seed in 0..CASES {
        let (updates, rooms, users) = random_case(seed, base);
        let (memory, redis) = common::twins().await;
        // Odd seeds use cluster-safe scripts (one hash-tag slot each).
        let redis = redis.with_slot_scripts(seed % 2 == 1);
        let mut rng = StdRng::seed_from_u64(seed ^ 0xB0A4D);
        let mut model = common::Model::default();
        let mut rest = updates.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len().min(20));
            let (batch, tail) = rest.split_at(n);
            let from_memory = memory.apply_batch(batch).await.unwrap();
            let from_redis = redis.apply_batch(batch).await.unwrap();
            assert_eq!(from_memory, from_redis, "seed {seed}: apply reports differ");
            for u in batch {
                model.apply(u);
            }
            rest = tail;
        }
        let seen_by_memory = common::snapshot(&memory, &rooms, &users, &nows).await;
        let seen_by_redis = common::snapshot(&redis, &rooms, &users, &nows).await;
        assert_eq!(
            seen_by_memory, seen_by_redis,
            "seed {seed}: the twins disagree"
        );
        assert_eq!(
            common::board_tops(&redis, &rooms, &nows).await,
            common::model_tops(&model, &rooms, &nows),
            "seed {seed}: the boards differ from the model"
        );
        common::delete_prefix(redis.key_prefix()).await;
    }
}
