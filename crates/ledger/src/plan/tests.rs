//! The planner's own tests: batches planned in memory, no database.

use super::*;
use applause_core::ErrorCode;

fn room(id: &str, broadcaster: &str) -> Room {
    Room {
        room_id: id.into(),
        broadcaster_id: broadcaster.into(),
        title: "t".into(),
        epoch: 1,
        live: true,
        last_seq: 0,
        published_seq: 0,
        created_at_ms: 0,
        ended_at_ms: None,
    }
}

fn purchase(user: &str, key: &str, amount: i64) -> Command {
    Command::Purchase(
        PurchaseCmd {
            sender_id: user.into(),
            sender_name: user.into(),
            room_id: "r".into(),
            sticker_id: "rose".into(),
            quantity: 1,
            amount_minor: amount,
            message: None,
            idempotency_key: key.into(),
            request_hash: format!("h{amount}"),
        },
        format!("g-{user}-{key}"),
    )
}

#[test]
fn a_batch_never_overdraws_and_assigns_consecutive_seqs() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "b"));
    state.wallets.insert("v".into(), [0, 0, 250]);
    let cmds: Vec<_> = (0..5)
        .map(|i| purchase("v", &format!("k{i}"), 100))
        .collect();
    let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
    let charged = out
        .iter()
        .filter(|o| matches!(o, Outcome::Purchase(PurchaseOutcome::Charged(..))))
        .count();
    assert_eq!(charged, 2);
    assert_eq!(w.wallet_deltas[&("v".to_string(), Channel::Web)], -200);
    assert_eq!(
        w.events.iter().map(|e| e.envelope.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(w.idempotency.len(), 5);
    assert_eq!(w.room_updates[0].last_seq, 2);
}

#[test]
fn same_key_in_one_batch_replays_or_is_reused() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "b"));
    state.wallets.insert("v".into(), [1000, 0, 0]);
    let cmds = vec![
        purchase("v", "k", 100),
        purchase("v", "k", 100),
        purchase("v", "k", 200),
    ];
    let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
    assert!(matches!(
        out[1],
        Outcome::Purchase(PurchaseOutcome::Replay(StoredOutcome::Gift(_)))
    ));
    assert!(matches!(
        out[2],
        Outcome::Purchase(PurchaseOutcome::KeyReused)
    ));
    assert_eq!(w.gifts.len(), 1);
}

fn packet_batch(claimers: &[&str]) -> Vec<Command> {
    let mut cmds = vec![Command::Drop(
        DropCmd {
            sender_id: "s".into(),
            sender_name: "S".into(),
            room_id: "r".into(),
            mode: "fixed".into(),
            total_minor: 60,
            shares: vec![10, 20, 30],
            expires_in_ms: 1_000,
            idempotency_key: "k".into(),
            request_hash: "h".into(),
        },
        "p1".into(),
    )];
    for u in claimers {
        cmds.push(Command::Claim(ClaimCmd {
            packet_id: "p1".into(),
            user_id: (*u).into(),
            user_name: (*u).into(),
        }));
    }
    cmds
}

#[test]
fn claims_in_one_batch_are_serialized() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "b"));
    // Apple then web in escrow: web (cheapest fee) is drawn first.
    state.wallets.insert("s".into(), [40, 0, 20]);
    let cmds = packet_batch(&["a", "a", "s", "c", "d", "e"]);
    let (w, out) = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap();
    let kinds: Vec<_> = out[1..]
        .iter()
        .map(|o| match o {
            Outcome::Claim(ClaimOutcome::Claimed(c, ..)) => {
                format!("{}:{:?}", c.amount_minor, c.by_channel)
            }
            Outcome::Claim(other) => format!("{other:?}"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            "10:[0, 0, 10]",
            "AlreadyClaimed",
            "OwnPacket",
            "20:[10, 0, 10]",
            "30:[30, 0, 0]",
            "Gone"
        ]
    );
    // Written once, in its final state: emptied and settled.
    assert_eq!(w.new_packets.len(), 1);
    assert!(w.packet_updates.is_empty());
    assert_eq!(w.new_packets[0].escrow, [0, 0, 0]);
    assert!(w.new_packets[0].settled_at_ms.is_some());
    assert_eq!(w.claims.len(), 3);
    assert_eq!(w.events.len(), 4, "the drop and three claims");
}

#[test]
fn expiry_returns_the_rest_once_in_a_batch() {
    let fresh = || {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "b"));
        state.wallets.insert("s".into(), [0, 0, 60]);
        state
    };
    let usd = Currency::usd();
    let policy = SplitPolicy::default();
    // Before its expiry a packet is not returned.
    let mut cmds = packet_batch(&["a"]);
    cmds.push(Command::Expire("p1".into()));
    let (dropped, out) = plan(&cmds, fresh(), 1, &usd, &policy).unwrap();
    assert!(matches!(out[2], Outcome::Expire(ExpireOutcome::NotDue)));
    // Past it, asked twice in one batch: returned once.
    let mut state = fresh();
    state
        .packets
        .insert("p1".into(), dropped.new_packets[0].clone());
    let cmds = vec![Command::Expire("p1".into()), Command::Expire("p1".into())];
    let (w, out) = plan(&cmds, state, 10_000, &usd, &policy).unwrap();
    assert!(matches!(
        out[0],
        Outcome::Expire(ExpireOutcome::Returned(50, _))
    ));
    assert!(matches!(
        out[1],
        Outcome::Expire(ExpireOutcome::AlreadySettled)
    ));
    assert_eq!(w.wallet_deltas[&("s".to_string(), Channel::Web)], 50);
    assert_eq!(w.packet_updates.len(), 1);
    assert_eq!(w.packet_updates[0].returned_minor, 50);
}

#[test]
fn self_gifts_and_ended_rooms_are_refused_and_remembered() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "v"));
    state.wallets.insert("v".into(), [1000, 0, 0]);
    let (w, out) = plan(
        &[purchase("v", "k", 100)],
        state,
        1,
        &Currency::usd(),
        &SplitPolicy::default(),
    )
    .unwrap();
    assert!(matches!(
        out[0],
        Outcome::Purchase(PurchaseOutcome::Rejected(ErrorCode::SelfGift))
    ));
    assert!(w.entries.is_empty());
    assert_eq!(w.idempotency.len(), 1);
}

#[test]
fn planning_twice_gives_the_same_rows_with_the_commands_ids() {
    let fresh = || {
        let mut state = Loaded::default();
        state.rooms.insert("r".into(), room("r", "b"));
        state.wallets.insert("v".into(), [500, 0, 0]);
        state
    };
    let cmds = vec![purchase("v", "k1", 100), purchase("v", "k2", 200)];
    let usd = Currency::usd();
    let policy = SplitPolicy::default();
    let (a, _) = plan(&cmds, fresh(), 7, &usd, &policy).unwrap();
    let (b, _) = plan(&cmds, fresh(), 7, &usd, &policy).unwrap();
    assert_eq!(a.gifts, b.gifts);
    assert_eq!(a.entries, b.entries);
    assert_eq!(a.events, b.events);
    assert_eq!(a.gifts[0].gift_id, "g-v-k1");
    assert!(a.gifts.iter().all(|g| g.created_at_ms == 7));
}

#[test]
fn a_broken_invariant_refuses_the_batch_with_a_typed_error() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "b"));
    state.wallets.insert("s".into(), [0, 0, 100]);
    let mut cmds = packet_batch(&[]);
    if let Command::Drop(d, _) = &mut cmds[0] {
        d.total_minor = 61;
    }
    let err = plan(&cmds, state, 1, &Currency::usd(), &SplitPolicy::default()).unwrap_err();
    assert_eq!(
        err,
        PlanError::BadAllocation {
            packet_id: "p1".into()
        }
    );
}

#[test]
fn an_expired_key_is_forgotten_before_a_later_command_uses_it() {
    let mut state = Loaded::default();
    state.rooms.insert("r".into(), room("r", "b"));
    state.wallets.insert("v".into(), [500, 0, 0]);
    let old = IdempotencyRecord {
        user_id: "v".into(),
        key: "k".into(),
        request_hash: "h100".into(),
        outcome: StoredOutcome::Gift("g-old".into()),
        created_at_ms: 5,
    };
    state.idempotency.insert(("v".into(), "k".into()), old);
    state.expirable = vec![("v".into(), "k".into(), 5), ("w".into(), "x".into(), 9)];
    let cmds = vec![
        purchase("v", "k", 100),
        Command::ExpireIdempotency {
            before_ms: 9,
            limit: 10,
        },
        purchase("v", "k", 100),
    ];
    let (w, out) = plan(&cmds, state, 20, &Currency::usd(), &SplitPolicy::default()).unwrap();
    assert!(matches!(
        out[0],
        Outcome::Purchase(PurchaseOutcome::Replay(_))
    ));
    // Only the record older than the cutoff goes.
    assert!(matches!(out[1], Outcome::IdempotencyExpired(1)));
    assert!(matches!(
        out[2],
        Outcome::Purchase(PurchaseOutcome::Charged(..))
    ));
    assert_eq!(w.expired_keys, vec![("v".to_string(), "k".to_string())]);
    assert_eq!(w.idempotency.len(), 1);
}
