//! The coalescing window, on tokio's paused clock: how long a round waits,
//! when it ends early, and that it never waits when the fan-out is behind
//! or the room is quiet.

use super::*;
use applause_core::EventEnvelope;
use tokio::sync::mpsc;

const MS: Duration = Duration::from_millis(1);

fn w(time: Duration, events: usize) -> Wait {
    Wait { time, events }
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
}

#[tokio::test(start_paused = true)]
async fn a_heavy_round_ends_with_the_pair() {
    let (tx, mut rx) = mpsc::channel(64);
    send_later(
        tx,
        vec![
            (MS, event("r1", 1)),
            (50 * MS, event("r1", 2)),
            (MS, event("r1", 3)),
        ],
    );
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, |_| w(60 * MS, 2))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        51 * MS,
        "the pair is there 50 ms after the first"
    );
    assert_eq!(round.waited, 50 * MS);
    assert_eq!(ids(&batch), [("r1".into(), 1), ("r1".into(), 2)]);
}

#[tokio::test(start_paused = true)]
async fn an_idle_round_of_a_busy_room_waits_its_window_once() {
    let (tx, mut rx) = mpsc::channel(64);
    send_later(
        tx,
        vec![
            (MS, event("r1", 1)),
            (4 * MS, event("r1", 2)),
            (20 * MS, event("r1", 3)),
        ],
    );
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, |_| w(10 * MS, 4))
        .await
        .unwrap();
    // The first event came at 1 ms, the window closed 10 ms later.
    assert_eq!(start.elapsed(), 11 * MS);
    assert_eq!(round.waited, 10 * MS);
    assert!(!round.behind);
    assert_eq!(ids(&batch), [("r1".into(), 1), ("r1".into(), 2)]);
    // The next round starts with the next event: its own window, not more.
    batch.clear();
    let round = gather(&mut rx, &mut batch, 64, None, |_| w(10 * MS, 4))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), 35 * MS);
    assert_eq!(round.waited, 10 * MS);
    assert_eq!(ids(&batch), [("r1".into(), 3)]);
}

#[tokio::test(start_paused = true)]
async fn the_window_ends_once_the_round_holds_enough_events() {
    let (tx, mut rx) = mpsc::channel(64);
    let plan = (1..=6).map(|s| (MS, event("r1", s))).collect();
    send_later(tx, plan);
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, |_| w(10 * MS, 4))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), 4 * MS, "the fourth event ended the wait");
    assert_eq!(round.waited, 3 * MS);
    assert_eq!(batch.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_backlog_older_than_the_window_never_waits() {
    let (tx, mut rx) = mpsc::channel(64);
    let previous = Instant::now();
    // The previous round took 12 ms to write; these came meanwhile.
    tokio::time::advance(12 * MS).await;
    for s in 1..=3 {
        tx.send(event("r1", s)).await.unwrap();
    }
    send_later(tx, vec![(MS, event("r1", 4))]);
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, Some(previous), |_| w(10 * MS, 8))
        .await
        .unwrap();
    assert!(round.behind);
    assert_eq!(round.waited, Duration::ZERO);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batch.len(), 3, "what had queued up, at once");
}

#[tokio::test(start_paused = true)]
async fn an_event_that_came_during_the_last_round_waits_only_the_rest_of_its_window() {
    let (tx, mut rx) = mpsc::channel(64);
    let previous = Instant::now();
    tokio::time::advance(4 * MS).await;
    tx.send(event("r1", 1)).await.unwrap();
    send_later(
        tx,
        vec![(2 * MS, event("r1", 2)), (20 * MS, event("r1", 3))],
    );
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, Some(previous), |_| w(10 * MS, 4))
        .await
        .unwrap();
    // It may have come right after the last round: 10 ms from then at most.
    assert!(round.behind);
    assert_eq!(start.elapsed(), 6 * MS);
    assert_eq!(round.waited, 6 * MS);
    assert_eq!(batch.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn after_a_round_cut_by_the_batch_bound_the_next_does_not_wait() {
    let (tx, mut rx) = mpsc::channel(64);
    for s in 1..=5 {
        tx.send(event("r1", s)).await.unwrap();
    }
    send_later(tx, vec![(MS, event("r1", 6))]);
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 3, None, |_| w(10 * MS, 4))
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(round.ended, None, "cut by the bound");
    batch.clear();
    let start = Instant::now();
    let mut asked = false;
    let round = gather(&mut rx, &mut batch, 3, round.ended, |_| {
        asked = true;
        w(10 * MS, 4)
    })
    .await
    .unwrap();
    assert!(!asked, "no window is even looked up");
    assert_eq!(round.waited, Duration::ZERO);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(batch.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_room_is_fanned_out_at_once() {
    let (tx, mut rx) = mpsc::channel(64);
    send_later(tx, vec![(MS, event("r1", 1)), (MS, event("r1", 2))]);
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, |_| w(Duration::ZERO, 4))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), MS);
    assert_eq!(round.waited, Duration::ZERO);
    assert_eq!(batch.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn other_messages_join_the_round_in_order_but_do_not_end_it() {
    let (tx, mut rx) = mpsc::channel(64);
    send_later(
        tx,
        vec![
            (MS, event("hot", 1)),
            (MS, event("other", 7)),
            (MS, BusMessage::Reconnected),
            (MS, event("other", 8)),
            (MS, event("hot", 2)),
        ],
    );
    let start = Instant::now();
    let mut batch = Vec::new();
    let round = gather(&mut rx, &mut batch, 64, None, |m| match m {
        BusMessage::Event(e) if e.room_id == "hot" => w(10 * MS, 2),
        _ => Wait::NONE,
    })
    .await
    .unwrap();
    assert_eq!(start.elapsed(), 5 * MS, "the hot room's second event");
    assert_eq!(round.waited, 4 * MS);
    assert_eq!(
        ids(&batch),
        [
            ("hot".into(), 1),
            ("other".into(), 7),
            ("reconnected".into(), 0),
            ("other".into(), 8),
            ("hot".into(), 2),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_round_never_exceeds_the_batch_bound() {
    let (tx, mut rx) = mpsc::channel(64);
    let plan = (1..=10).map(|s| (MS, event("r1", s))).collect();
    send_later(tx, plan);
    let mut batch = Vec::new();
    let start = Instant::now();
    gather(&mut rx, &mut batch, 3, None, |_| w(10 * MS, 8))
        .await
        .unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(start.elapsed(), 3 * MS);
}

#[tokio::test(start_paused = true)]
async fn a_closed_bus_ends_the_dispatcher() {
    let (tx, mut rx) = mpsc::channel::<BusMessage>(4);
    tx.send(event("r1", 1)).await.unwrap();
    drop(tx);
    let mut batch = Vec::new();
    // What was sent is still taken; then the end.
    assert!(gather(&mut rx, &mut batch, 64, None, |_| w(10 * MS, 4))
        .await
        .is_some());
    batch.clear();
    assert!(gather(&mut rx, &mut batch, 64, None, |_| w(10 * MS, 4))
        .await
        .is_none());
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

/// The rooms and seqs of each step.
fn shape(steps: &[Step]) -> Vec<Vec<(String, u64)>> {
    steps
        .iter()
        .map(|s| match s {
            Step::Events(run) => run.iter().map(|e| (e.room_id.clone(), e.seq)).collect(),
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
    let s = |room: &str, seq| (room.to_string(), seq);
    assert_eq!(
        shape(&steps(round.into_iter())),
        [
            vec![s("a", 1), s("a", 2), s("a", 3)],
            vec![s("b", 7), s("b", 8)],
            vec![s("c", 3)],
            vec![s("reconnected", 0)],
            vec![s("b", 9), s("b", 10)],
            vec![s("a", 4)],
        ]
    );
    assert!(steps(std::iter::empty()).is_empty());
}
