//! No double spend over HTTP, on SQLite and PostgreSQL: a wallet holding B
//! and N concurrent purchases of x (distinct keys) give exactly ⌊B/x⌋ 201s
//! and 402s for the rest, for several seeded wallets, prices and channel mixes.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::both_backends;
use crate::common::{fmt_minor, minor, Backend, Server, Store};

const STICKERS: &[(&str, i64)] = &[("heart", 10), ("rose", 99), ("coffee", 199), ("star", 499)];
const CHANNELS: &[&str] = &["apple", "google", "web"];

both_backends!(concurrent_purchases_never_overdraw);
async fn concurrent_purchases_never_overdraw(backend: Backend) {
    let s = Server::on(
        Store::new(backend).await,
        &["--gift-burst", "10000", "--gift-rate-per-s", "10000"],
    )
    .await;
    let mut gross = 0;
    for seed in [1u64, 7, 42, 2026] {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let room = s.open_room(&format!("star-{seed}")).await;
        let user = format!("fan-{seed}");
        let (sticker, price) = STICKERS[rng.random_range(0..STICKERS.len())];
        let quantity: i64 = rng.random_range(1..=3);
        let x = price * quantity;
        let n: usize = rng.random_range(50..=70);
        let k = rng.random_range(5..n as i64 - 5);
        let balance = k * x + rng.random_range(0..x);
        // Fund the wallet through several channels.
        let mut left = balance;
        while left > 0 {
            let part = if left < 50 {
                left
            } else {
                rng.random_range(1..=left)
            };
            let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
            s.top_up(&user, channel, &fmt_minor(part)).await;
            left -= part;
        }
        assert_eq!(s.balance(&user).await, balance);

        let token = s.viewer(&user);
        let body = json!({"sticker_id": sticker, "quantity": quantity});
        let tasks: Vec<_> = (0..n)
            .map(|i| s.buy_task(&token, &room, &format!("c-{seed}-{i}"), &body))
            .collect();
        let mut created = 0;
        let mut after = BTreeSet::new();
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                201 => {
                    created += 1;
                    assert_eq!(minor(r.json["amount"].as_str().unwrap()), x);
                    let b = minor(r.json["balance"].as_str().unwrap());
                    assert!(b >= 0, "a negative balance: {}", r.body);
                    assert!(after.insert(b), "two purchases saw balance {b}");
                }
                _ => r.expect_error(402, "insufficient_funds"),
            }
        }
        let expected = balance / x;
        assert_eq!(
            created, expected,
            "seed {seed}: B={balance} x={x} n={n}: {created} purchases succeeded"
        );
        // The balances after each purchase are B − x, B − 2x, … in some order.
        let want: BTreeSet<i64> = (1..=expected).map(|i| balance - i * x).collect();
        assert_eq!(after, want, "seed {seed}");
        assert_eq!(
            s.balance(&user).await,
            balance - expected * x,
            "seed {seed}"
        );
        gross += expected * x;
        let summary = s.summary().await;
        assert_eq!(
            minor(summary["gross_gifts"].as_str().unwrap()),
            gross,
            "seed {seed}"
        );
    }
    s.shutdown().await;
}

both_backends!(many_buyers_race_on_one_room);
async fn many_buyers_race_on_one_room(backend: Backend) {
    // Several wallets, each overdrawn concurrently, into one hot room.
    let s = Server::on(
        Store::new(backend).await,
        &["--gift-burst", "10000", "--gift-rate-per-s", "10000"],
    )
    .await;
    let room = s.open_room("star-hot").await;
    let buyers = 5;
    let per_buyer = 12;
    for b in 0..buyers {
        // Enough for 7 roses (6.93) and a bit.
        s.top_up(&format!("hot-{b}"), CHANNELS[b % 3], "7.50").await;
    }
    let body = json!({"sticker_id": "rose", "quantity": 1});
    let mut tasks = Vec::new();
    for i in 0..per_buyer {
        for b in 0..buyers {
            let token = s.viewer(&format!("hot-{b}"));
            tasks.push((b, s.buy_task(&token, &room, &format!("hot-{i}"), &body)));
        }
    }
    let mut created = vec![0; buyers];
    for (b, t) in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => created[b] += 1,
            _ => r.expect_error(402, "insufficient_funds"),
        }
    }
    assert_eq!(created, vec![7; buyers]);
    for b in 0..buyers {
        assert_eq!(s.balance(&format!("hot-{b}")).await, 750 - 7 * 99);
    }
    let summary = s.summary().await;
    assert_eq!(summary["gifts"], 7 * buyers as u64);
    assert_eq!(
        minor(summary["gross_gifts"].as_str().unwrap()),
        7 * 99 * buyers as i64
    );
    s.shutdown().await;
}
