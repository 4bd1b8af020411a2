//! The holds of busy and heavy rooms: how long a room's events wait, when a
//! hold ends early, that other rooms never wait for it, and that nothing
//! waits when the fan-out is behind or the room is quiet; and the gathering
//! of rounds, on tokio's paused clock.

use super::*;
use applause_core::EventEnvelope;
use tokio::sync::mpsc;

const MS: Duration = Duration::from_millis(1);

fn w(time: Duration, events: usize) -> Wait {
    Wait {
        time,
        events,
        stagger: false,
    }
}

/// A staggered heavy room's wait.
fn st(time: Duration) -> Wait {
    Wait {
        time,
        events: 2,
        stagger: true,
    }
}

fn event(room: &str, seq: u64) -> BusMessage {
    BusMessage::Event(Arc::new(EventEnvelope {
        room_id: room.into(),
        epoch: 1,
        seq,
        frame: format!("{{\"seq\":{seq}}}"),
        broadcaster_frame: None,
        broadcaster_id: "b".into(),
        committed_at_ms: 0,
        ends_room: false,
    }))
}

fn ids(batch: &[BusMessage]) -> Vec<(String, u64)> {
    batch
        .iter()
        .map(|m| match m {
            BusMessage::Event(e) => (e.room_id.clone(), e.seq),
            BusMessage::Reconnected => ("reconnected".into(), 0),
        })
        .collect()
}

/// Sends `(delay after the previous one, message)` in order from a task.
fn send_later(tx: mpsc::Sender<BusMessage>, plan: Vec<(Duration, BusMessage)>) {
    tokio::spawn(async move {
        for (after, m) in plan {
            tokio::time::sleep(after).await;
            tx.send(m).await.unwrap();
        }
        // Keep the channel open: the round must end by its own rules.
        std::future::pending::<()>().await;
    });
}

#[test]
fn the_window_follows_the_rate_within_its_bound() {
    let win = Window {
        max: 10 * MS,
        rate_min: 100,
        events: 4,
        heavy_deliveries_min: 0,
        heavy_max: Duration::ZERO,
        heavy_stagger: false,
    };
    let time = |w: &Window, per_s| w.wait_for(per_s, 0).time;
    assert_eq!(win.wait_for(0, 0), Wait::NONE, "a quiet room");
    assert_eq!(win.wait_for(99, 0), Wait::NONE, "below the busy rate");
    // Three more events take 20 ms at 150/s: the bound applies.
    assert_eq!(win.wait_for(150, 0), w(10 * MS, 4));
    assert_eq!(time(&win, 300), 10 * MS);
    // At 1,000/s three more events take 3 ms.
    assert_eq!(time(&win, 1_000), 3 * MS);
    assert!(time(&win, u32::MAX) < Duration::from_micros(1));
    let off = Window {
        max: Duration::ZERO,
        ..win
    };
    assert_eq!(off.wait_for(1_000, 0), Wait::NONE, "off");
    let every_room = Window { rate_min: 0, ..win };
    assert_eq!(time(&every_room, 0), 10 * MS, "rate_min 0: every room");
}

#[test]
fn a_heavy_room_below_the_busy_rate_waits_for_a_pair_when_it_is_due_in_time() {
    let win = Window {
        max: 20 * MS,
        rate_min: 100,
        events: 6,
        heavy_deliveries_min: 10_000,
        heavy_max: 60 * MS,
        heavy_stagger: false,
    };
    // 1,000 viewers at 20 events/s: the next event is due in 50 ms; the
    // round waits up to 60 ms (75 ms of slack, bounded) for a pair.
    assert_eq!(win.wait_for(20, 20_000), w(60 * MS, 2));
    // 40 events/s: due in 25 ms, up to 37.5 ms allowed.
    assert_eq!(
        win.wait_for(40, 40_000),
        w(Duration::from_micros(37_500), 2)
    );
    // The same rates in a room whose fan-out is cheap: no wait.
    assert_eq!(win.wait_for(20, 9_999), Wait::NONE, "not heavy");
    // Heavy, but its events come 100 ms apart: waiting would catch nothing.
    assert_eq!(win.wait_for(10, 50_000), Wait::NONE, "too far apart");
    assert_eq!(win.wait_for(0, 50_000), Wait::NONE, "no recent events");
    // A busy room keeps the busy window, heavy or not.
    assert_eq!(win.wait_for(200, 200_000), w(20 * MS, 6));
    let off = Window {
        heavy_max: Duration::ZERO,
        ..win
    };
    assert_eq!(off.wait_for(20, 20_000), Wait::NONE, "heavy window off");
    let none_heavy = Window {
        heavy_deliveries_min: 0,
        ..win
    };
    assert_eq!(
        none_heavy.wait_for(20, u32::MAX),
        Wait::NONE,
        "no room is heavy"
    );
    // Staggered: the same wait, for half the room; busy rooms unchanged.
    let staggered = Window {
        heavy_stagger: true,
        ..win
    };
    assert_eq!(staggered.wait_for(20, 20_000), st(60 * MS));
    assert_eq!(staggered.wait_for(200, 200_000), w(20 * MS, 6));
    assert_eq!(staggered.wait_for(20, 9_999), Wait::NONE, "not heavy");
}

/// A window for the rooms named: `(room, wait)`; every other room none.
fn windows<'a>(rooms: &'a [(&'static str, Wait)]) -> impl FnMut(&str) -> Wait + 'a {
    move |room| {
        rooms
            .iter()
            .find(|(r, _)| *r == room)
            .map_or(Wait::NONE, |(_, w)| *w)
    }
}

#[test]
fn a_heavy_rooms_event_waits_for_its_pair_while_other_rooms_go_at_once() {
    let t0 = Instant::now();
    let win = [("a", w(60 * MS, 2))];
    let mut holds = Holds::default();
    let out = holds.route(
        [event("a", 1), event("b", 1)].into_iter(),
        Some(t0),
        t0,
        windows(&win),
    );
    assert_eq!(shape(&out), [vec![s("b", 1)]], "b is not held");
    assert_eq!(holds.next_deadline(), Some(t0 + 60 * MS));
    let t = t0 + 50 * MS;
    let out = holds.route(
        [event("a", 2), event("b", 2), event("a", 3)].into_iter(),
        Some(t),
        t,
        windows(&win),
    );
    // The pair goes out in one write, with the room's next event of the
    // round after it (in order); the other room's at once.
    assert_eq!(
        shape(&out),
        [vec![s("a", 1), s("a", 2), s("a", 3)], vec![s("b", 2)]]
    );
    assert_eq!(holds.next_deadline(), None);
    assert_eq!(holds.take_waits().collect::<Vec<_>>(), [50 * MS]);
}

#[test]
fn a_hold_goes_out_alone_at_its_deadline() {
    let t0 = Instant::now();
    let win = [("a", w(60 * MS, 2))];
    let mut holds = Holds::default();
    assert!(holds
        .route([event("a", 1)].into_iter(), Some(t0), t0, windows(&win))
        .is_empty());
    let early = t0 + 59 * MS;
    assert!(holds
        .route(std::iter::empty(), Some(early), early, windows(&win))
        .is_empty());
    let due = t0 + 60 * MS;
    let out = holds.route(std::iter::empty(), Some(due), due, windows(&win));
    assert_eq!(shape(&out), [vec![s("a", 1)]]);
    assert_eq!(holds.next_deadline(), None);
}

#[test]
fn a_busy_room_is_held_until_it_has_its_events_or_its_window_ends() {
    let t0 = Instant::now();
    let win = [("a", w(10 * MS, 4))];
    let mut holds = Holds::default();
    let at = |ms: u32| t0 + ms * MS;
    assert!(holds
        .route(
            [event("a", 1), event("a", 2)].into_iter(),
            Some(t0),
            t0,
            windows(&win)
        )
        .is_empty());
    assert!(holds
        .route(
            [event("a", 3)].into_iter(),
            Some(at(4)),
            at(4),
            windows(&win)
        )
        .is_empty());
    let out = holds.route(
        [event("a", 4), event("a", 5)].into_iter(),
        Some(at(6)),
        at(6),
        windows(&win),
    );
    assert_eq!(
        shape(&out),
        [vec![s("a", 1), s("a", 2), s("a", 3), s("a", 4), s("a", 5)]],
        "the fourth ends the hold early; the fifth joins the write"
    );
    // The next event begins a hold of its own, which its window ends.
    assert!(holds
        .route(
            [event("a", 6)].into_iter(),
            Some(at(7)),
            at(7),
            windows(&win)
        )
        .is_empty());
    let out = holds.route(std::iter::empty(), Some(at(17)), at(17), windows(&win));
    assert_eq!(shape(&out), [vec![s("a", 6)]]);
}

#[test]
fn a_backlog_is_never_held() {
    let t0 = Instant::now();
    let mut asked = false;
    let mut holds = Holds::default();
    let out = holds.route((1..=3).map(|n| event("a", n)), None, t0, |_: &str| {
        asked = true;
        w(10 * MS, 8)
    });
    assert!(!asked, "no window is even looked up");
    assert_eq!(shape(&out), [vec![s("a", 1), s("a", 2), s("a", 3)]]);
}

#[test]
fn an_event_that_came_during_the_last_round_is_held_only_the_rest_of_its_window() {
    let t0 = Instant::now();
    let win = [("a", w(10 * MS, 4))];
    let mut holds = Holds::default();
    // It may have come right after the last round (t0): 10 ms from then.
    let now = t0 + 4 * MS;
    assert!(holds
        .route([event("a", 1)].into_iter(), Some(t0), now, windows(&win))
        .is_empty());
    assert_eq!(holds.next_deadline(), Some(t0 + 10 * MS));
    // Past its window already: out at once.
    let mut holds = Holds::default();
    let late = t0 + 12 * MS;
    let out = holds.route([event("a", 1)].into_iter(), Some(t0), late, windows(&win));
    assert_eq!(shape(&out), [vec![s("a", 1)]]);
}

#[test]
fn a_reconnect_releases_every_hold_before_it() {
    let t0 = Instant::now();
    let win = [("a", w(60 * MS, 2)), ("c", w(60 * MS, 2))];
    let mut holds = Holds::default();
    holds.route(
        [event("a", 1), event("c", 1)].into_iter(),
        Some(t0),
        t0,
        windows(&win),
    );
    let t = t0 + 5 * MS;
    let out = holds.route(
        [
            event("b", 1),
            BusMessage::Reconnected,
            event("b", 2),
            event("a", 2),
        ]
        .into_iter(),
        Some(t),
        t,
        windows(&win),
    );
    let mut before = shape(&out[..3]);
    before.sort();
    assert_eq!(before, [vec![s("a", 1)], vec![s("b", 1)], vec![s("c", 1)]]);
    assert_eq!(
        shape(&out[3..]),
        [vec![s("reconnected", 0)], vec![s("b", 2)]]
    );
    // After the reconnect the heavy room's next event begins a new hold.
    assert_eq!(holds.next_deadline(), Some(t + 60 * MS));
}

#[test]
fn two_heavy_rooms_pair_each_on_their_own_deadline() {
    let t0 = Instant::now();
    let win = [("a", w(60 * MS, 2)), ("b", w(60 * MS, 2))];
    let mut holds = Holds::default();
    let mut at = |ms: u32, m: BusMessage| {
        let t = t0 + ms * MS;
        shape(&holds.route([m].into_iter(), Some(t), t, windows(&win)))
    };
    assert!(at(0, event("a", 1)).is_empty());
    assert!(at(20, event("b", 1)).is_empty());
    assert_eq!(at(50, event("a", 2)), [vec![s("a", 1), s("a", 2)]]);
    assert_eq!(at(70, event("b", 2)), [vec![s("b", 1), s("b", 2)]]);
}

#[test]
fn a_closed_bus_releases_every_hold() {
    let t0 = Instant::now();
    let win = [("a", w(60 * MS, 2))];
    let mut holds = Holds::default();
    holds.route([event("a", 1)].into_iter(), Some(t0), t0, windows(&win));
    assert_eq!(shape(&holds.release_all(t0)), [vec![s("a", 1)]]);
    assert_eq!(holds.next_deadline(), None);
}

#[tokio::test(start_paused = true)]
async fn an_idle_round_begins_when_its_first_message_comes_and_takes_what_queued() {
    let (tx, mut rx) = mpsc::channel(64);
    send_later(tx, vec![(MS, event("r1", 1))]);
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, Some(start), None)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), MS);
    assert_eq!(round.since, Some(start + MS), "idle: it came now");
    assert_eq!(ids(&batch), [("r1".into(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_round_that_was_waiting_began_when_the_last_one_ended() {
    let (tx, mut rx) = mpsc::channel(64);
    let previous = Instant::now();
    tokio::time::advance(12 * MS).await;
    for n in 1..=3 {
        tx.send(event("r1", n)).await.unwrap();
    }
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, Some(previous), None)
        .await
        .unwrap();
    assert_eq!(round.since, Some(previous));
    assert_eq!(batch.len(), 3, "what had queued up, at once");
}

#[tokio::test(start_paused = true)]
async fn an_idle_dispatcher_wakes_at_a_holds_deadline() {
    let (_tx, mut rx) = mpsc::channel::<BusMessage>(64);
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, Some(start + 60 * MS))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), 60 * MS);
    assert!(batch.is_empty());
    assert_eq!(round.ended, Some(start + 60 * MS));
}

#[tokio::test(start_paused = true)]
async fn a_round_never_exceeds_the_batch_bound_and_then_the_next_holds_nothing() {
    let (tx, mut rx) = mpsc::channel(64);
    for n in 1..=5 {
        tx.send(event("r1", n)).await.unwrap();
    }
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 3, None, None).await.unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(round.ended, None, "cut by the bound");
    batch.clear();
    let round = gather(&mut rx, &mut batch, 3, round.ended, None)
        .await
        .unwrap();
    assert_eq!(round.since, None, "a backlog: held nowhere");
    assert_eq!(batch.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_closed_bus_ends_the_dispatcher() {
    let (tx, mut rx) = mpsc::channel::<BusMessage>(4);
    tx.send(event("r1", 1)).await.unwrap();
    drop(tx);
    let mut batch = Vec::new();
    // What was sent is still taken; then the end.
    assert!(gather(&mut rx, &mut batch, 64, None, None).await.is_some());
    batch.clear();
    assert!(
        gather(&mut rx, &mut batch, 64, None, Some(Instant::now() + MS))
            .await
            .is_none()
    );
}

fn ends_within_10_s(thread: &std::thread::JoinHandle<()>) -> bool {
    for _ in 0..1_000 {
        if thread.is_finished() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// The fan-out's own thread (on by default) ends with its gateway: at
/// shutdown, and when the runtime that built the gateway is dropped without
/// one, instead of outliving it.
#[test]
fn the_fanout_thread_ends_at_shutdown_and_with_its_runtime() {
    for shut_down in [true, false] {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gw = runtime
            .block_on(async { crate::test_gateway::gateway(crate::GatewayConfig::default()) });
        let thread = gw
            .inner
            .fanout_thread
            .lock()
            .take()
            .expect("the fan-out runs on its own thread by default");
        assert_eq!(thread.thread().name(), Some("applause-fanout"));
        assert!(!thread.is_finished());
        if shut_down {
            runtime.block_on(gw.shutdown());
            assert!(ends_within_10_s(&thread), "ended at shutdown");
            // The task standing for the thread ends with it.
            runtime.block_on(async {
                for _ in 0..1_000 {
                    if gw.tasks_running() == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            assert_eq!(gw.tasks_running(), 0);
        } else {
            drop(runtime);
            assert!(ends_within_10_s(&thread), "ended with its runtime");
        }
        thread.join().unwrap();
    }
}

/// Off, the dispatcher is a task on the caller's runtime: no thread.
#[tokio::test]
async fn the_dispatcher_can_run_as_a_task() {
    let gw = crate::test_gateway::gateway(crate::GatewayConfig {
        fanout_thread: false,
        ..crate::GatewayConfig::default()
    });
    assert!(gw.inner.fanout_thread.lock().is_none());
    assert_eq!(gw.tasks_running(), 2, "the dispatcher and the sweeper");
}

fn s(room: &str, seq: u64) -> (String, u64) {
    (room.to_string(), seq)
}

/// The rooms and seqs of each step.
fn shape(steps: &[Step]) -> Vec<Vec<(String, u64)>> {
    steps
        .iter()
        .map(|s| match s {
            Step::Events(run) => run.iter().map(|e| (e.room_id.clone(), e.seq)).collect(),
            Step::Staggered(e) => vec![(format!("{}/half", e.room_id), e.seq)],
            Step::CatchUp { room, .. } => vec![(format!("{room}/catch-up"), 0)],
            Step::Reconnected => vec![("reconnected".into(), 0)],
        })
        .collect()
}

#[test]
fn a_round_goes_out_room_by_room_in_each_rooms_order_with_reconnects_in_place() {
    let round = vec![
        event("a", 1),
        event("b", 7),
        event("a", 2),
        event("c", 3),
        event("b", 8),
        event("a", 3),
        BusMessage::Reconnected,
        event("b", 9),
        event("a", 4),
        event("b", 10),
    ];
    let now = Instant::now();
    let mut holds = Holds::default();
    assert_eq!(
        shape(&holds.route(round.into_iter(), Some(now), now, |_: &str| Wait::NONE)),
        [
            vec![s("a", 1), s("a", 2), s("a", 3)],
            vec![s("b", 7), s("b", 8)],
            vec![s("c", 3)],
            vec![s("reconnected", 0)],
            vec![s("b", 9), s("b", 10)],
            vec![s("a", 4)],
        ]
    );
    assert!(holds
        .route(std::iter::empty(), Some(now), now, |_: &str| Wait::NONE)
        .is_empty());
}

#[test]
fn a_staggered_rooms_event_goes_out_at_once_and_its_lagging_half_catches_up_with_the_next() {
    let t0 = Instant::now();
    let win = [("a", st(60 * MS))];
    let mut holds = Holds::default();
    let mut at = |ms: u32, msgs: Vec<BusMessage>| {
        let t = t0 + ms * MS;
        let out = shape(&holds.route(msgs.into_iter(), Some(t), t, windows(&win)));
        (
            out,
            holds.next_deadline(),
            holds.take_waits().collect::<Vec<_>>(),
        )
    };
    // Nothing waits for the pair: half the room gets it now.
    let (out, deadline, waits) = at(0, vec![event("a", 1), event("b", 1)]);
    assert_eq!(out, [vec![s("a/half", 1)], vec![s("b", 1)]]);
    assert_eq!(
        deadline,
        Some(t0 + 60 * MS),
        "the other half lags until then"
    );
    assert!(waits.is_empty());
    // The next event: the lagging half (waited 50 ms) gets both, the
    // other half lags now, with a new deadline.
    let (out, deadline, waits) = at(50, vec![event("a", 2)]);
    assert_eq!(out, [vec![s("a/half", 2)]]);
    assert_eq!(deadline, Some(t0 + 110 * MS));
    assert_eq!(waits, [50 * MS]);
    // No third event in time: the lagging half catches up at its deadline.
    let (out, deadline, _) = at(110, vec![]);
    assert_eq!(out, [vec![s("a/catch-up", 0)]]);
    assert_eq!(deadline, None);
}

#[test]
fn a_staggered_room_with_several_events_in_a_round_sends_them_to_everyone() {
    let t0 = Instant::now();
    let win = [("a", st(60 * MS))];
    let mut holds = Holds::default();
    let out = holds.route([event("a", 1)].into_iter(), Some(t0), t0, windows(&win));
    assert_eq!(shape(&out), [vec![s("a/half", 1)]]);
    let t = t0 + 10 * MS;
    let out = holds.route(
        [event("a", 2), event("a", 3)].into_iter(),
        Some(t),
        t,
        windows(&win),
    );
    // The run brings both halves up to date (the room writes what the
    // lagging half lacked first); the lag left behind ends at its deadline
    // with nothing to do.
    assert_eq!(shape(&out), [vec![s("a", 2), s("a", 3)]]);
    assert_eq!(holds.next_deadline(), Some(t0 + 60 * MS));
    // A backlog is never staggered.
    let out = holds.route([event("a", 4)].into_iter(), None, t, windows(&win));
    assert_eq!(shape(&out), [vec![s("a", 4)]]);
}

#[test]
fn a_reconnect_or_a_closed_bus_brings_every_lagging_half_up_to_date_first() {
    let t0 = Instant::now();
    let win = [("a", st(60 * MS)), ("c", st(60 * MS))];
    let mut holds = Holds::default();
    holds.route(
        [event("a", 1), event("c", 1)].into_iter(),
        Some(t0),
        t0,
        windows(&win),
    );
    let t = t0 + 5 * MS;
    let out = holds.route(
        [event("c", 2), BusMessage::Reconnected, event("a", 2)].into_iter(),
        Some(t),
        t,
        windows(&win),
    );
    let mut before = shape(&out[..3]);
    before.sort();
    // Both lagging halves catch up, and the event that came before the
    // reconnect goes to the whole room: none of it lags past the reconnect.
    assert_eq!(
        before,
        [
            vec![s("a/catch-up", 0)],
            vec![s("c", 2)],
            vec![s("c/catch-up", 0)]
        ]
    );
    assert_eq!(
        shape(&out[3..]),
        [vec![s("reconnected", 0)], vec![s("a/half", 2)]]
    );
    assert_eq!(shape(&holds.release_all(t)), [vec![s("a/catch-up", 0)]]);
    assert_eq!(holds.next_deadline(), None);
}
