//! Reports after a randomized run: every row balances and the totals are the
//! purchases.

use std::collections::HashMap;

use applause_core::Channel;
use applause_ledger::*;
use rand::{Rng, SeedableRng};

use crate::both;
use crate::common::*;

async fn randomized(store: &TestStore) {
    let ledger = store.open().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let rooms = [
        room(&ledger, "b1").await,
        room(&ledger, "b2").await,
        room(&ledger, "b3").await,
    ];
    let viewers = ["v1", "v2", "v3", "v4"];
    for v in viewers {
        for c in Channel::ALL {
            fund(&ledger, v, c, rng.random_range(0..5_000)).await;
        }
    }
    let mut bought = 0i64;
    let mut by_broadcaster: HashMap<String, i64> = HashMap::new();
    for i in 0..300 {
        let v = viewers[rng.random_range(0..viewers.len())];
        let r = &rooms[rng.random_range(0..rooms.len())];
        let amount = [1, 10, 99, 199, 499, 999][rng.random_range(0..6)];
        if let PurchaseOutcome::Charged(g, _) = ledger
            .purchase(buy(v, &r.room_id, amount, &format!("k{i}")))
            .await
            .unwrap()
        {
            bought += g.amount_minor;
            *by_broadcaster.entry(g.broadcaster_id.clone()).or_default() += g.amount_minor;
        }
    }
    assert!(bought > 0);
    for group_by in [
        GroupBy::Day,
        GroupBy::Channel,
        GroupBy::Broadcaster,
        GroupBy::Sticker,
    ] {
        let (rows, total) = ledger.revenue(0, i64::MAX, group_by).await.unwrap();
        for row in rows.iter().chain(std::iter::once(&total)) {
            assert_eq!(
                row.gross,
                row.store_fees + row.broadcaster_earnings + row.platform_revenue,
                "{group_by:?} {row:?}"
            );
        }
        assert_eq!(total.gross, bought);
        assert_eq!(
            rows.iter().map(|r| r.gross).sum::<i64>(),
            bought,
            "{group_by:?}"
        );
        if group_by == GroupBy::Broadcaster {
            for row in &rows {
                assert_eq!(row.gross, by_broadcaster[&row.key]);
            }
        }
    }
    // An empty interval has no rows.
    let (rows, total) = ledger.revenue(0, 1, GroupBy::Day).await.unwrap();
    assert!(rows.is_empty() && total.gross == 0);
    let s = ledger.summary().await.unwrap();
    assert_eq!(s.gross_gifts, bought);
    assert_eq!(
        s.store_fees_by_channel.iter().sum::<i64>() + s.broadcaster_payable + s.platform_revenue,
        bought
    );
    assert_check(&ledger).await;
}
both!(randomized_reports_balance, randomized);
