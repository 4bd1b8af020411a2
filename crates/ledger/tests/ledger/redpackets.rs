//! Red packets on both backends: concurrent claims never hand out more than
//! the total or the count, escrow ends at zero, claims carry channels, and
//! the return at expiry happens exactly once — with two ledgers (two
//! committers, as two gift nodes) sweeping and a restart in between.

use std::sync::Arc;

use applause_core::{redpacket, Channel, Clock, ErrorCode};
use applause_ledger::*;

use crate::both;
use crate::common::*;

fn drop_cmd(sender: &str, room: &str, shares: Vec<i64>, key: &str, expires_in_ms: i64) -> DropCmd {
    DropCmd {
        sender_id: sender.into(),
        sender_name: sender.to_uppercase(),
        room_id: room.into(),
        mode: "fixed".into(),
        total_minor: shares.iter().sum(),
        shares,
        expires_in_ms,
        idempotency_key: key.into(),
        request_hash: format!("h-{key}"),
    }
}

fn claim_cmd(packet: &str, user: &str) -> ClaimCmd {
    ClaimCmd {
        packet_id: packet.into(),
        user_id: user.into(),
        user_name: user.to_uppercase(),
    }
}

/// The `type` of a room event's frame.
fn event_type(ev: &Option<applause_core::EventEnvelope>) -> String {
    let ev = ev.as_ref().expect("a room event");
    let v: serde_json::Value = serde_json::from_str(&ev.frame).unwrap();
    v["type"].as_str().unwrap().to_owned()
}

async fn dropped(ledger: &Ledger, cmd: DropCmd) -> RedPacket {
    match ledger.drop_red_packet(cmd).await.unwrap() {
        DropOutcome::Dropped(p, ev) => {
            assert_eq!(event_type(&ev), "red_packet");
            *p
        }
        other => panic!("not dropped: {other:?}"),
    }
}

async fn concurrent_claims(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    // Two channels, so claims carry provenance from both.
    fund(&ledger, "s", Channel::Web, 3_000).await;
    fund(&ledger, "s", Channel::Apple, 7_000).await;
    let shares = redpacket::random(10_000, 50, &mut |n| (n * 7 / 10).min(n - 1)).unwrap();
    let p = dropped(&ledger, drop_cmd("s", &r.room_id, shares, "k", 3_600_000)).await;
    assert_eq!(p.escrow, [7_000, 0, 3_000]);
    assert_eq!(ledger.wallet("s").await.unwrap().total(), 0);
    assert_eq!(ledger.summary().await.unwrap().escrow_open, 10_000);
    let ledger = Arc::new(ledger);
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let l = ledger.clone();
            let id = p.packet_id.clone();
            tokio::spawn(async move {
                l.claim_red_packet(claim_cmd(&id, &format!("u{i}")))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let (mut claimed, mut gone, mut got) = (0, 0, 0i64);
    let mut positions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            ClaimOutcome::Claimed(c, _, ev) => {
                assert_eq!(event_type(&ev), "red_packet_claimed");
                assert_eq!(c.by_channel.iter().sum::<i64>(), c.amount_minor);
                claimed += 1;
                got += c.amount_minor;
                positions.push(c.idx);
            }
            ClaimOutcome::Gone => gone += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((claimed, gone), (50, 150));
    assert_eq!(got, 10_000);
    positions.sort_unstable();
    assert_eq!(positions, (0..50).collect::<Vec<_>>());
    let (packet, claims) = ledger.red_packet(&p.packet_id).await.unwrap().unwrap();
    assert_eq!(packet.claimed_count, 50);
    assert_eq!(packet.escrow, [0, 0, 0]);
    assert!(packet.settled_at_ms.is_some());
    assert_eq!(claims.len(), 50);
    // Provenance: the channels that went in came out, channel by channel.
    let mut out = [0i64; 3];
    for c in &claims {
        for ch in Channel::ALL {
            out[ch.index()] += c.by_channel[ch.index()];
        }
        let w = ledger.wallet(&c.user_id).await.unwrap();
        assert_eq!(w.by_channel, c.by_channel);
    }
    assert_eq!(out, [7_000, 0, 3_000]);
    assert_eq!(ledger.summary().await.unwrap().escrow_open, 0);
    // Nothing left to return; a sweep changes nothing.
    assert_eq!(ledger.sweep_red_packets(i64::MAX).await.unwrap(), 0);
    assert_check(&ledger).await;
}
both!(two_hundred_claim_fifty_shares, concurrent_claims);

async fn claim_rules(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "s", Channel::Google, 1_000).await;
    let before = ledger.summary().await.unwrap();
    // Not enough money: refused, remembered under the key, nothing moves.
    let big = drop_cmd("s", &r.room_id, vec![600, 600], "big", 60_000);
    assert_eq!(
        ledger.drop_red_packet(big.clone()).await.unwrap(),
        DropOutcome::Rejected(ErrorCode::InsufficientFunds)
    );
    assert_eq!(
        ledger.drop_red_packet(big).await.unwrap(),
        DropOutcome::Replay(StoredOutcome::Rejected(ErrorCode::InsufficientFunds))
    );
    assert_eq!(ledger.summary().await.unwrap(), before);
    assert_eq!(
        ledger
            .drop_red_packet(drop_cmd("s", "rnope", vec![1], "nr", 60_000))
            .await
            .unwrap(),
        DropOutcome::Rejected(ErrorCode::RoomNotFound)
    );
    let cmd = drop_cmd("s", &r.room_id, vec![300, 200], "ok", 60_000);
    let p = dropped(&ledger, cmd.clone()).await;
    // Same key, same request: the same packet, charged once.
    assert_eq!(
        ledger.drop_red_packet(cmd.clone()).await.unwrap(),
        DropOutcome::Replay(StoredOutcome::Gift(p.packet_id.clone()))
    );
    let mut other = cmd;
    other.request_hash = "different".into();
    assert_eq!(
        ledger.drop_red_packet(other).await.unwrap(),
        DropOutcome::KeyReused
    );
    assert_eq!(ledger.wallet("s").await.unwrap().total(), 500);
    // Senders do not claim their own packet; each user claims once; fixed
    // shares are handed out in order.
    assert_eq!(
        ledger
            .claim_red_packet(claim_cmd(&p.packet_id, "s"))
            .await
            .unwrap(),
        ClaimOutcome::OwnPacket
    );
    let ClaimOutcome::Claimed(c, left, _) = ledger
        .claim_red_packet(claim_cmd(&p.packet_id, "a"))
        .await
        .unwrap()
    else {
        panic!("not claimed")
    };
    assert_eq!((c.amount_minor, c.idx, left), (300, 0, 1));
    assert_eq!(c.by_channel, [0, 300, 0]);
    assert_eq!(
        ledger
            .claim_red_packet(claim_cmd(&p.packet_id, "a"))
            .await
            .unwrap(),
        ClaimOutcome::AlreadyClaimed
    );
    assert_eq!(
        ledger
            .claim_red_packet(claim_cmd("pnope", "a"))
            .await
            .unwrap(),
        ClaimOutcome::NotFound
    );
    // An ended room's packet is gone for claims (its rest returns at expiry).
    ledger.end_room(&r.room_id, "b").await.unwrap();
    assert_eq!(
        ledger
            .claim_red_packet(claim_cmd(&p.packet_id, "c"))
            .await
            .unwrap(),
        ClaimOutcome::Gone
    );
    assert_eq!(
        ledger
            .drop_red_packet(drop_cmd("s", &r.room_id, vec![1], "ended", 60_000))
            .await
            .unwrap(),
        DropOutcome::Rejected(ErrorCode::RoomNotLive)
    );
    assert_eq!(
        ledger.expire_red_packet(&p.packet_id).await.unwrap(),
        ExpireOutcome::NotDue
    );
    assert_check(&ledger).await;
}
both!(drop_and_claim_rules, claim_rules);

async fn expiry_once(store: &TestStore) {
    // Two ledgers on one store: two committers, as two gift nodes, on one
    // manual clock (moved past the expiry instead of sleeping).
    let clock = manual_clock();
    let a = store.open_with_clock(&clock).await;
    let b = store.open_with_clock(&clock).await;
    let r = room(&a, "b").await;
    fund(&a, "s", Channel::Apple, 1_000).await;
    fund(&a, "s", Channel::Web, 1_000).await;
    let mut packets = Vec::new();
    for i in 0..5 {
        let shares = redpacket::equal(200, 4).unwrap();
        packets.push(dropped(&a, drop_cmd("s", &r.room_id, shares, &format!("k{i}"), 300)).await);
    }
    // Some claims before expiry.
    for (i, p) in packets.iter().enumerate() {
        for u in 0..i.min(3) {
            assert!(matches!(
                b.claim_red_packet(claim_cmd(&p.packet_id, &format!("u{u}")))
                    .await
                    .unwrap(),
                ClaimOutcome::Claimed(..)
            ));
        }
    }
    let claimed: i64 = packets
        .iter()
        .enumerate()
        .map(|(i, _)| 50 * i.min(3) as i64)
        .sum();
    assert_eq!(
        a.sweep_red_packets(clock.now_ms()).await.unwrap(),
        0,
        "nothing is due yet"
    );
    // One millisecond before the expiry a packet is still claimable and not due.
    clock.advance_ms(299);
    assert_eq!(
        a.expire_red_packet(&packets[4].packet_id).await.unwrap(),
        ExpireOutcome::NotDue
    );
    assert_eq!(a.sweep_red_packets(clock.now_ms()).await.unwrap(), 0);
    clock.advance_ms(1);
    assert!(matches!(
        a.claim_red_packet(claim_cmd(&packets[0].packet_id, "late"))
            .await
            .unwrap(),
        ClaimOutcome::Gone
    ));
    // Both nodes sweep at once, twice.
    let now = clock.now_ms();
    let (x, y) = tokio::join!(a.sweep_red_packets(now), b.sweep_red_packets(now));
    let (x2, y2) = tokio::join!(a.sweep_red_packets(now), b.sweep_red_packets(now));
    assert_eq!(x.unwrap() + y.unwrap() + x2.unwrap() + y2.unwrap(), 5);
    // A restart, and both sweep again: nothing more comes back.
    drop(a);
    drop(b);
    let a = store.open_with_clock(&clock).await;
    let b = store.open_with_clock(&clock).await;
    let (x, y) = tokio::join!(a.sweep_red_packets(i64::MAX), b.sweep_red_packets(i64::MAX));
    assert_eq!(x.unwrap() + y.unwrap(), 0);
    for p in &packets {
        assert_eq!(
            a.expire_red_packet(&p.packet_id).await.unwrap(),
            ExpireOutcome::AlreadySettled
        );
        let (p, _) = a.red_packet(&p.packet_id).await.unwrap().unwrap();
        assert_eq!(p.escrow, [0, 0, 0]);
        assert_eq!(p.returned_minor + p.claimed_minor, 200);
    }
    assert_eq!(a.wallet("s").await.unwrap().total(), 2_000 - claimed);
    // One `red_packet_expired` room event per packet, however many sweeps.
    let expired: Vec<_> = a
        .unpublished_events(i64::MAX, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| event_type(&Some(e.envelope.clone())) == "red_packet_expired")
        .collect();
    assert_eq!(expired.len(), 5);
    assert_eq!(a.summary().await.unwrap().escrow_open, 0);
    assert_check(&a).await;
}
both!(expiry_returns_once_across_nodes_and_restarts, expiry_once);

/// `ledger check` compares each packet's stored escrow with its account.
async fn escrow_tamper(store: &TestStore) {
    let ledger = store.open().await;
    let r = room(&ledger, "b").await;
    fund(&ledger, "s", Channel::Web, 500).await;
    let p = dropped(
        &ledger,
        drop_cmd("s", &r.room_id, vec![100, 200], "k", 60_000),
    )
    .await;
    assert_check(&ledger).await;
    assert_eq!(ledger.summary().await.unwrap().escrow_open, 300);
    store
        .raw(&format!(
            "UPDATE red_packets SET escrow_web = escrow_web - 1 WHERE packet_id = '{}'",
            p.packet_id
        ))
        .await;
    let c = ledger.check().await.unwrap();
    assert!(!c.ok());
    assert_eq!(c.mismatched_escrow, vec![p.packet_id.clone()]);
}
both!(check_finds_tampered_escrow, escrow_tamper);
