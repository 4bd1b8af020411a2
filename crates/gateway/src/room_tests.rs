//! The room's tests: fan-out order, gaps, holds and resume.

use super::*;

fn info() -> RoomInfo {
    RoomInfo {
        room_id: "r1".into(),
        broadcaster_id: "b".into(),
        epoch: 1,
        live: true,
        published_seq: 0,
    }
}

/// An outbox writing to an in-memory socket with room for everything.
fn outbox() -> (Arc<Outbox>, crate::outbox::test_socket::TestSocket) {
    crate::outbox::test_socket::outbox(
        1 << 20,
        1 << 20,
        crate::outbox::WriteMode {
            direct: true,
            vectored: true,
        },
    )
}

fn ev(seq: u64) -> Arc<Delivered> {
    event(seq, false)
}

/// An event of `r1`; `ends_room` ends the room.
fn event(seq: u64, ends_room: bool) -> Arc<Delivered> {
    Arc::new(Delivered::new(&EventEnvelope {
        room_id: "r1".into(),
        epoch: 1,
        seq,
        frame: format!("{{\"seq\":{seq}}}"),
        broadcaster_frame: Some(format!("{{\"seq\":{seq},\"split\":1}}")),
        broadcaster_id: "b".into(),
        committed_at_ms: 0,
        ends_room,
    }))
}

#[tokio::test]
async fn applies_only_the_next_seq_and_bounds_the_ring() {
    let room = Room::new(&info(), 3, Duration::from_secs(60));
    room.set_cursor(10);
    assert!(room.apply(ev(10)).is_none(), "duplicate");
    assert!(room.apply(ev(12)).is_none(), "gap");
    for s in 11..=15 {
        assert!(room.apply(ev(s)).is_some());
    }
    assert_eq!(room.last_seq(), Some(15));
    assert_eq!(room.ring_len(), 3);
}

#[tokio::test]
async fn resume_replays_from_the_ring_or_asks_for_history() {
    let room = Room::new(&info(), 5, Duration::from_secs(60));
    room.set_cursor(0);
    for s in 1..=8 {
        room.apply(ev(s));
    }
    let (o, _socket) = outbox();
    assert_eq!(room.register(7, o.clone(), false, "t", false), Ok(8));
    assert!(matches!(
        room.resume_from_ring(7, 5),
        ResumeStep::Replayed(3)
    ));
    assert!(matches!(
        room.resume_from_ring(7, 8),
        ResumeStep::Replayed(0)
    ));
    assert!(matches!(
        room.resume_from_ring(7, 2),
        ResumeStep::NeedHistory
    ));
    // While paused, live events are held back and come after the replay.
    room.apply(ev(9));
    let older: Vec<_> = (3..=4).map(ev).collect();
    // The gap 3..=8 (3..=4 from the bus, 5..=8 from the ring), then the
    // held live event 9.
    assert!(matches!(
        room.resume_with_history(7, 2, Some(older)),
        ResumeStep::Replayed(6)
    ));
    assert!(matches!(
        room.resume_from_ring(7, 0),
        ResumeStep::NeedHistory
    ));
    assert!(matches!(
        room.resume_with_history(7, 0, None),
        ResumeStep::Resync
    ));
}

fn seqs(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .map(|t| match t.find("\"seq\":") {
            Some(i) => t[i + 6..]
                .trim_end_matches(['}', ','])
                .split([',', '}'])
                .next()
                .unwrap_or("")
                .to_owned(),
            None => t.clone(),
        })
        .collect()
}

#[tokio::test]
async fn a_run_of_events_goes_out_in_one_write_and_stops_at_a_gap() {
    let room = Room::new(&info(), 100, Duration::from_secs(60));
    room.set_cursor(0);
    let (o, socket) = outbox();
    room.register(1, o.clone(), false, "t", false).unwrap();
    let writes = socket.writes();
    // 1..=3 continue the room; 5 leaves a gap and 4 is never reached.
    let run: Vec<_> = [1, 2, 3, 5, 4].into_iter().map(ev).collect();
    let (applied, _) = room.apply_many(&run, false);
    assert_eq!(applied, 3);
    assert_eq!(socket.writes(), writes + 1, "one write for the run");
    assert_eq!(room.last_seq(), Some(3));
    assert_eq!(
        room.apply_many(&run[3..], false).0,
        0,
        "a gap applies nothing"
    );
    assert_eq!(room.apply_many(&run[4..], false).0, 1);
    let texts = socket.texts();
    assert_eq!(seqs(&texts[1..]), ["1", "2", "3", "4"]);
    // A member held since its welcome holds the run, in order.
    let (o2, socket2) = outbox();
    room.register(2, o2, false, "t", true).unwrap();
    let run: Vec<_> = (5..=7).map(ev).collect();
    assert_eq!(room.apply_many(&run, false).0, 3);
    room.release(2);
    assert_eq!(seqs(&socket2.texts()[1..]), ["5", "6", "7"]);
    assert_eq!(
        seqs(&socket.texts()[1..]),
        ["1", "2", "3", "4", "5", "6", "7"]
    );
}

#[tokio::test]
async fn a_held_welcome_replays_first_and_never_twice() {
    let room = Room::new(&info(), 100, Duration::from_secs(60));
    room.set_cursor(0);
    for s in 1..=10 {
        room.apply(ev(s));
    }
    let (o, socket) = outbox();
    assert_eq!(room.register(7, o.clone(), false, "t", true), Ok(10));
    // Live events arrive between the welcome and the client's resume.
    room.apply(ev(11));
    room.apply(ev(12));
    assert!(matches!(
        room.resume_from_ring(7, 6),
        ResumeStep::Replayed(4)
    ));
    room.apply(ev(13));
    let texts = socket.texts();
    assert!(texts[0].contains("welcome"), "{texts:?}");
    assert_eq!(seqs(&texts[1..]), ["7", "8", "9", "10", "11", "12", "13"]);

    // Without a resume, the hold ends and the held events follow in order.
    let (o2, socket2) = outbox();
    assert_eq!(room.register(8, o2.clone(), false, "t", true), Ok(13));
    room.apply(ev(14));
    room.release(8);
    room.apply(ev(15));
    let texts = socket2.texts();
    assert_eq!(seqs(&texts[1..]), ["14", "15"]);

    // A resume later on (not held any more) replays every event after
    // `since`, as the client asked.
    assert!(matches!(
        room.resume_from_ring(8, 11),
        ResumeStep::Replayed(4)
    ));
    let texts = socket2.texts();
    assert_eq!(seqs(&texts[texts.len() - 4..]), ["12", "13", "14", "15"]);
}

#[tokio::test(start_paused = true)]
async fn the_rate_that_decides_coalescing_counts_the_last_second() {
    let room = Room::new(&info(), 1_000, Duration::from_secs(60));
    room.set_cursor(0);
    assert_eq!(room.events_per_s(), 0, "no estimate before a second passed");
    for s in 1..=149 {
        room.apply(ev(s));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    room.apply(ev(150));
    assert_eq!(room.events_per_s(), 150);
    // A room that calms down is quiet again after the next second.
    tokio::time::advance(Duration::from_secs(1)).await;
    room.apply(ev(151));
    assert_eq!(room.events_per_s(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_delivery_rate_that_makes_a_room_heavy_counts_events_times_connections() {
    let room = Room::new(&info(), 1_000, Duration::from_secs(60));
    room.set_cursor(0);
    let sockets: Vec<_> = (0..3)
        .map(|id| {
            let (o, socket) = outbox();
            room.register(id, o, false, "t", false).unwrap();
            socket
        })
        .collect();
    for s in 1..=19 {
        room.apply(ev(s));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    room.apply(ev(20));
    assert_eq!(room.events_per_s(), 20);
    assert_eq!(room.deliveries_per_s(), 60, "20 events to each of 3");
    room.unregister(0);
    for s in 21..=30 {
        room.apply(ev(s));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    room.apply(ev(31));
    assert_eq!(room.deliveries_per_s(), 22, "11 events to each of 2");
    drop(sockets);
}

fn ev_end(seq: u64) -> Arc<Delivered> {
    event(seq, true)
}

/// `n` live members (ids 0..n: halves 0, 1, 0, 1, …) and their sockets.
fn members(room: &Room, n: u64) -> Vec<crate::outbox::test_socket::TestSocket> {
    (0..n)
        .map(|id| {
            let (o, socket) = outbox();
            room.register(id, o, false, "t", false).unwrap();
            socket
        })
        .collect()
}

/// The seqs each socket received after its welcome, and its writes.
fn received(sockets: &[crate::outbox::test_socket::TestSocket]) -> Vec<(Vec<String>, usize)> {
    sockets
        .iter()
        .map(|s| (seqs(&s.texts()[1..]), s.writes()))
        .collect()
}

fn strs(seqs: &[u64]) -> Vec<String> {
    seqs.iter().map(u64::to_string).collect()
}

#[tokio::test]
async fn staggered_events_reach_one_half_at_once_and_the_other_with_the_next() {
    let room = Room::new(&info(), 100, Duration::from_secs(60));
    room.set_cursor(0);
    let sockets = members(&room, 4);
    let welcome = sockets[0].writes();
    // 1: half 1 at once, half 0 lags.
    assert_eq!(room.apply_many(&[ev(1)], true).0, 1);
    let got = received(&sockets);
    assert_eq!(got[0], (strs(&[]), welcome), "half 0 lags");
    assert_eq!(got[1], (strs(&[1]), welcome + 1), "half 1 at once");
    // 2: half 0 gets 1 and 2 in one write; half 1 lags.
    room.apply_many(&[ev(2)], true);
    let got = received(&sockets);
    assert_eq!(got[0], (strs(&[1, 2]), welcome + 1), "a pair in one write");
    assert_eq!(got[2], (strs(&[1, 2]), welcome + 1));
    assert_eq!(got[1], (strs(&[1]), welcome + 1), "half 1 lags");
    // 3: half 1 gets 2 and 3 together; half 0 lags until it catches up.
    room.apply_many(&[ev(3)], true);
    assert_eq!(received(&sockets)[3], (strs(&[1, 2, 3]), welcome + 2));
    assert!(room.catch_up().is_some());
    assert!(room.catch_up().is_none(), "nothing lags any more");
    for (seqs, _) in received(&sockets) {
        assert_eq!(
            seqs,
            strs(&[1, 2, 3]),
            "every member: each event once, in order"
        );
    }
    // Unstaggered, everyone gets each event at once.
    room.apply_many(&[ev(4)], true);
    room.apply_many(&[ev(5)], false);
    for (seqs, _) in received(&sockets) {
        assert_eq!(seqs, strs(&[1, 2, 3, 4, 5]));
    }
    assert!(room.catch_up().is_none());
}

#[tokio::test]
async fn a_member_that_joins_or_resumes_while_its_half_lags_gets_each_event_once() {
    let room = Room::new(&info(), 100, Duration::from_secs(60));
    room.set_cursor(0);
    let mut sockets = members(&room, 2);
    room.apply_many(&[ev(1)], true); // half 0 (member 0) lags with 1
                                     // Member 2 joins half 0 after 1: its welcome says 1, so 1 is not its.
    let (o, joined) = outbox();
    assert_eq!(room.register(2, o, false, "t", false), Ok(1));
    sockets.push(joined);
    // Member 0 resumes from 0 while it lags: 1 comes from the ring.
    assert!(matches!(
        room.resume_from_ring(0, 0),
        ResumeStep::Replayed(1)
    ));
    // A member held since its welcome (half 1) while half 0 lags.
    let (o, held) = outbox();
    assert_eq!(room.register(3, o, false, "t", true), Ok(1));
    sockets.push(held);
    room.apply_many(&[ev(2)], true); // half 0 catches up, half 1 lags with 2
    room.apply_many(&[ev(3)], true); // half 1 catches up, half 0 lags with 3
    room.release(3);
    assert!(room.catch_up().is_some());
    let got: Vec<_> = received(&sockets).into_iter().map(|(s, _)| s).collect();
    assert_eq!(got[0], strs(&[1, 2, 3]), "resumed while lagging");
    assert_eq!(got[1], strs(&[1, 2, 3]));
    assert_eq!(got[2], strs(&[2, 3]), "joined after 1");
    assert_eq!(got[3], strs(&[2, 3]), "held since its welcome");
}

#[tokio::test]
async fn a_room_end_or_a_reset_brings_the_lagging_half_up_to_date_first() {
    let room = Room::new(&info(), 100, Duration::from_secs(60));
    room.set_cursor(0);
    let sockets = members(&room, 2);
    room.apply_many(&[ev(1)], true);
    room.reset();
    let texts = sockets[0].texts();
    assert_eq!(
        seqs(&texts[1..2]),
        ["1"],
        "the lagged event before the resync"
    );
    assert!(texts[2].contains("resync_required"), "{texts:?}");
    room.set_cursor(5);
    room.apply_many(&[ev(6)], true);
    // The end is never staggered: both halves get everything, then close.
    room.apply_many(&[ev_end(7)], true);
    assert!(room.catch_up().is_none());
    for s in &sockets {
        let seqs_after: Vec<_> = seqs(&s.texts())
            .into_iter()
            .filter(|q| q == "6" || q == "7")
            .collect();
        assert_eq!(seqs_after, ["6", "7"]);
    }
}
