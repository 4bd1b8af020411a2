//! The outbox's tests: every write path gives the same bytes, bounds and closes.

use super::test_socket::outbox;
use super::*;

const DIRECT: WriteMode = WriteMode {
    direct: true,
    vectored: true,
};

fn event(n: usize, i: usize) -> OutFrame {
    OutFrame::event(frame::text(&format!("{i:05}{}", "x".repeat(n))), 1)
}

fn timing() -> WriterTiming {
    WriterTiming {
        coalesce: Duration::ZERO,
        close_grace: Duration::from_secs(1),
    }
}

#[test]
fn queue_never_exceeds_its_byte_bound() {
    // A socket that takes nothing: everything stays queued.
    let (o, _socket) = outbox(1_000, 0, DIRECT);
    let mut queued = 0;
    loop {
        match o.push(event(83, queued)) {
            Push::Queued => queued += 1,
            Push::Overflow => break,
            Push::Closed => unreachable!(),
        }
        assert!(o.bytes() <= 1_000);
    }
    assert_eq!(queued, 11, "90-byte frames");
    assert!(o.is_closing());
    assert_eq!(o.push(event(1, 0)), Push::Closed);
}

#[test]
fn direct_writes_need_no_writer() {
    let (o, socket) = outbox(1 << 20, 1 << 20, DIRECT);
    for i in 0..10 {
        assert_eq!(o.push(OutFrame::control(&format!("{i}"))), Push::Queued);
    }
    assert_eq!(o.bytes(), 0);
    assert_eq!(socket.writes(), 10);
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(socket.texts(), want);
}

#[tokio::test(start_paused = true)]
async fn a_batch_partly_written_continues_in_order() {
    let (o, socket) = outbox(1 << 20, 25, DIRECT);
    let writer = tokio::spawn(run_writer(o.clone(), timing()));
    let frames: Vec<OutFrame> = (0..5).map(|i| event(10, i)).collect();
    let refs: Vec<(&Bytes, Option<i64>)> = frames
        .iter()
        .map(|f| (&f.bytes, f.committed_at_ms))
        .collect();
    // 17-byte frames: one and a bit go out at once, the rest is queued.
    assert_eq!(o.push_many(&refs, 0), Push::Queued);
    assert_eq!(o.bytes(), 5 * 17 - 25);
    assert_eq!(o.push_ref(&frames[0].bytes, None), Push::Queued);
    o.close(
        Closing {
            code: close::NORMAL,
            reason: "",
        },
        None,
    );
    let reader = {
        let socket = socket.clone();
        tokio::spawn(async move {
            loop {
                socket.read_all();
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    reader.abort();
    let mut expected: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
    expected.extend_from_slice(&frames[0].bytes);
    expected.extend_from_slice(&frame::close(close::NORMAL, ""));
    assert_eq!(socket.read_all(), expected);
}

/// The byte stream a peer receives, with the socket taking `room`
/// bytes at a time (partial writes, WouldBlock) and the writer task
/// draining the rest, in the given write mode.
async fn stream_through(room: usize, mode: WriteMode, frames: &[OutFrame]) -> (Vec<u8>, usize) {
    let (o, socket) = outbox(1 << 20, room, mode);
    let writer = tokio::spawn(run_writer(o.clone(), timing()));
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(o.push(f.clone()), Push::Queued);
        if i % 7 == 0 {
            // The peer reads now and then while the fan-out goes on.
            socket.read_all();
            tokio::task::yield_now().await;
        }
    }
    o.close(
        Closing {
            code: close::GOING_AWAY,
            reason: "going_away",
        },
        None,
    );
    let reader = {
        let socket = socket.clone();
        tokio::spawn(async move {
            loop {
                socket.read_all();
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    reader.abort();
    (socket.read_all(), socket.writes())
}

// Paused: the close grace cannot run out while a 1-byte socket drains.
#[tokio::test(start_paused = true)]
async fn every_write_path_sends_the_same_bytes() {
    let frames: Vec<OutFrame> = (0..200).map(|i| event(i * 3 % 700, i)).collect();
    let (direct, direct_writes) = stream_through(1 << 20, DIRECT, &frames).await;
    let mut expected: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
    expected.extend_from_slice(&frame::close(close::GOING_AWAY, "going_away"));
    assert_eq!(direct, expected);
    assert_eq!(direct_writes, 201, "one write per frame, none deferred");
    for room in [1, 7, 300, 4096] {
        for mode in [
            DIRECT,
            WriteMode {
                direct: false,
                vectored: true,
            },
            WriteMode {
                direct: true,
                vectored: false,
            },
        ] {
            let (got, _) = stream_through(room, mode, &frames).await;
            assert!(got == expected, "room {room}, {mode:?}: different bytes");
        }
    }
}

#[tokio::test]
async fn the_writer_drains_many_frames_per_write() {
    let (o, socket) = outbox(1 << 20, 0, DIRECT);
    let writer = tokio::spawn(run_writer(o.clone(), timing()));
    for i in 0..100 {
        o.push(event(10, i));
    }
    assert_eq!(socket.writes(), 0, "the socket took nothing yet");
    // The peer's buffer opens wide: the writer empties the queue.
    socket.set_room(1 << 20);
    o.close(
        Closing {
            code: close::NORMAL,
            reason: "",
        },
        None,
    );
    writer.await.unwrap();
    let frames = frame::split_server_frames(&socket.read_all());
    assert_eq!(frames.len(), 101);
    assert!(
        socket.writes() <= 2 + 100 / IOVECS_MAX,
        "{} writes",
        socket.writes()
    );
}

#[tokio::test(start_paused = true)]
async fn stuck_peer_is_closed_as_slow_consumer_without_growing() {
    // A peer that takes a little and then never reads again.
    let (o, socket) = outbox(2_000, 150, DIRECT);
    let writer = tokio::spawn(run_writer(
        o.clone(),
        WriterTiming {
            coalesce: Duration::from_millis(5),
            close_grace: Duration::from_millis(500),
        },
    ));
    let mut overflowed = false;
    for i in 0..1_000 {
        match o.push(event(100, i)) {
            Push::Queued => assert!(o.bytes() <= 2_000),
            Push::Overflow => {
                overflowed = true;
                break;
            }
            Push::Closed => unreachable!(),
        }
        tokio::task::yield_now().await;
    }
    assert!(overflowed);
    // The writer gives up after the grace period even though the peer never reads.
    writer.await.unwrap();
    assert!(!socket.read_all().is_empty());
}

#[tokio::test]
async fn a_partly_written_frame_is_finished_before_the_4008() {
    let (o, socket) = outbox(1_000, 50, DIRECT);
    let writer = tokio::spawn(run_writer(o.clone(), timing()));
    // 50 bytes of the first frame go out; the rest overflows.
    let mut i = 0;
    while o.push(event(90, i)) == Push::Queued {
        i += 1;
    }
    let reader = {
        let socket = socket.clone();
        tokio::spawn(async move {
            loop {
                socket.read_all();
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.unwrap();
    reader.abort();
    let frames = frame::split_server_frames(&socket.read_all());
    let (ops, payloads): (Vec<u8>, Vec<Vec<u8>>) = frames.into_iter().unzip();
    assert_eq!(ops, [1, 1, 8], "the started frame, the error, the close");
    assert!(payloads[0].starts_with(b"00000"));
    assert!(String::from_utf8_lossy(&payloads[1]).contains("slow_consumer"));
    assert_eq!(&payloads[2][..2], &close::SLOW_CONSUMER.to_be_bytes());
}
