//! A client that stops reading is closed with 4008 once its queue passes the
//! byte bound, while the other viewers keep receiving everything promptly.

use std::time::{Duration, Instant};

use applause_bus::HistoryBounds;
use tokio::net::TcpSocket;
use tokio_tungstenite::MaybeTlsStream;

use crate::common::*;

const FRAME_PAD: usize = 4_000;
const EVENTS_MAX: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_reader_is_closed_4008_and_others_keep_up() {
    let h = Harness::with(
        config(|c| {
            c.outbound_queue_bytes_max = 128 * 1024;
            c.close_grace_ms = 5_000;
        }),
        HistoryBounds::default(),
    )
    .await;

    // The slow client: a tiny receive buffer, and it never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(h.addr).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(h.url(ROOM, None), MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    let mut slow = Client { ws };

    let mut fast = Vec::new();
    for _ in 0..3 {
        fast.push(h.connect(ROOM, None).await.0);
    }
    let (tx, mut progress) = tokio::sync::watch::channel(0u64);
    let tx = std::sync::Arc::new(tx);
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut next = 1;
                loop {
                    let v = c.next_json().await;
                    assert_eq!(v["seq"], next, "{v}");
                    tx.send_modify(|n| *n = (*n).max(next));
                    next += 1;
                    if v["last"] == true {
                        return next - 1;
                    }
                }
            })
        })
        .collect();

    let started = Instant::now();
    let mut seq = 0;
    while h.metric("applause_gateway_slow_consumer_closes_total") < 1.0 {
        seq += 1;
        assert!(seq < EVENTS_MAX, "the stalled client was never closed");
        h.publish(&[padded(ROOM, seq, FRAME_PAD)]).await;
        if seq % 4 == 0 {
            // Pace the publisher to the fast readers (at most ~12 events,
            // 48 KB, behind) so only the stalled client overflows: on 2
            // shared cores a publisher that never yields would starve them.
            let target = seq.saturating_sub(8);
            let _ = tokio::time::timeout(WAIT, progress.wait_for(|n| *n >= target)).await;
        }
    }
    let mut last = padded(ROOM, seq + 1, 0);
    last.frame = last.frame.replacen('{', r#"{"last":true,"#, 1);
    h.publish(&[last]).await;
    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .expect("fast viewers finish promptly")
            .unwrap();
        assert_eq!(got, seq + 1);
    }
    let elapsed = started.elapsed();

    // Now the slow client reads: what was buffered, then the error and 4008.
    let (frames, closed) = slow.until_close().await;
    assert_eq!(
        closed,
        Closed {
            code: 4008,
            reason: "slow_consumer".into()
        }
    );
    let last_frame = frames.last().unwrap();
    assert_eq!(last_frame["code"], "slow_consumer");
    let delivered = frames.iter().filter(|f| f["type"] == "gift").count() as u64;
    assert!(
        delivered < seq,
        "the slow client fell behind ({delivered} of {seq})"
    );
    assert_eq!(h.metric("applause_gateway_slow_consumer_closes_total"), 1.0);
    eprintln!(
        "{seq} events of ~4 KiB to 3 fast viewers in {elapsed:?}; the slow one got {delivered}"
    );
}
