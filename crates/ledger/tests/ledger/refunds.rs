//! Refunds: reversal entries in one transaction, the price back into the
//! channels it came from, once per gift; after a mixed run with refunds every
//! report row balances and the summary nets out.

use applause_core::Channel;
use applause_ledger::*;
use rand::{Rng, SeedableRng};

use crate::both;
use crate::common::*;

fn refund_cmd(gift_id: &str) -> RefundCmd {
    RefundCmd {
        gift_id: gift_id.into(),
        reason: "chargeback".into(),
        refunded_by: "finance-1".into(),
    }
}

async fn refund_reverses_once(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "v", Channel::Web, 300).await;
    fund(&ledger, "v", Channel::Apple, 1_000).await;
    let before = ledger.summary().await.unwrap();
    // 500 draws web first (300), then apple (200).
    let PurchaseOutcome::Charged(g, _) = ledger
        .purchase(buy("v", &r.room_id, 500, "k1"))
        .await
        .unwrap()
    else {
        panic!("not charged")
    };
    assert_eq!(g.paid, [200, 0, 300]);
    let RefundOutcome::Refunded(refunded) = ledger.refund(refund_cmd(&g.gift_id)).await.unwrap()
    else {
        panic!("not refunded")
    };
    assert!(refunded.refunded_at_ms.is_some());
    let w = ledger.wallet("v").await.unwrap();
    assert_eq!(
        w.by_channel,
        [1_000, 0, 300],
        "each channel gets its portion back"
    );
    let after = ledger.summary().await.unwrap();
    assert_eq!(after.store_fees_by_channel, before.store_fees_by_channel);
    assert_eq!(after.broadcaster_payable, before.broadcaster_payable);
    assert_eq!(after.platform_revenue, before.platform_revenue);
    assert_eq!(after.refunds, 500);
    assert_eq!(after.gross_gifts, 500);
    // Once per gift, also from a second handle after a restart.
    assert!(matches!(
        ledger.refund(refund_cmd(&g.gift_id)).await.unwrap(),
        RefundOutcome::AlreadyRefunded(_)
    ));
    drop(ledger);
    let ledger = store.open().await;
    assert!(matches!(
        ledger.refund(refund_cmd(&g.gift_id)).await.unwrap(),
        RefundOutcome::AlreadyRefunded(_)
    ));
    assert!(matches!(
        ledger.refund(refund_cmd("gnope")).await.unwrap(),
        RefundOutcome::NotFound
    ));
    assert_eq!(
        ledger.refund_of(&g.gift_id).await.unwrap(),
        Some(("chargeback".into(), "finance-1".into()))
    );
    assert_eq!(ledger.wallet("v").await.unwrap().total(), 1_300);
    assert_check(&ledger).await;
}
both!(refund_reverses_every_part_once, refund_reverses_once);

async fn mixed_run(store: &TestStore) {
    let ledger = store.open().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rooms = [room(&ledger, "b1").await, room(&ledger, "b2").await];
    let viewers = ["v1", "v2", "v3"];
    for v in viewers {
        for c in Channel::ALL {
            fund(&ledger, v, c, rng.random_range(100..3_000)).await;
        }
    }
    let mut gifts = Vec::new();
    for i in 0..120 {
        let v = viewers[rng.random_range(0..viewers.len())];
        let r = &rooms[rng.random_range(0..rooms.len())];
        let amount = [1, 7, 99, 199, 499][rng.random_range(0..5)];
        if let PurchaseOutcome::Charged(g, _) = ledger
            .purchase(buy(v, &r.room_id, amount, &format!("k{i}")))
            .await
            .unwrap()
        {
            gifts.push(*g);
        }
    }
    // Refund about a third, some of them concurrently with their repeats.
    let mut refunded = 0i64;
    let mut tasks = Vec::new();
    for g in gifts.iter().filter(|_| rng.random_range(0..3) == 0) {
        refunded += g.amount_minor;
        for _ in 0..2 {
            let l = ledger.clone();
            let id = g.gift_id.clone();
            tasks.push(tokio::spawn(async move {
                l.refund(refund_cmd(&id)).await.unwrap()
            }));
        }
    }
    let (mut done, mut repeats) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            RefundOutcome::Refunded(_) => done += 1,
            RefundOutcome::AlreadyRefunded(_) => repeats += 1,
            RefundOutcome::NotFound => panic!("gift not found"),
        }
    }
    assert_eq!(done, repeats, "every gift refunded exactly once");
    let gross: i64 = gifts.iter().map(|g| g.amount_minor).sum();
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
            assert_eq!(row.net, row.gross - row.refunds, "{group_by:?} {row:?}");
            assert!(row.refunds <= row.gross);
        }
        assert_eq!(total.gross, gross);
        assert_eq!(total.refunds, refunded);
        assert_eq!(rows.iter().map(|r| r.refunds).sum::<i64>(), refunded);
    }
    // The summary's accounts hold the sales net of refunds.
    let s = ledger.summary().await.unwrap();
    assert_eq!(s.refunds, refunded);
    let net_parts =
        s.store_fees_by_channel.iter().sum::<i64>() + s.broadcaster_payable + s.platform_revenue;
    assert_eq!(net_parts, gross - refunded);
    assert_check(&ledger).await;
}
both!(mixed_run_with_refunds_balances_every_row, mixed_run);
