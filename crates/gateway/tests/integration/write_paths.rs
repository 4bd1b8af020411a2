//! The two ways a frame reaches a socket — written straight from the fan-out
//! while the connection's queue is empty, or queued for its writer task once
//! the socket is full — put the same bytes on the wire: a viewer that reads
//! along and one that stalls (small receive buffer, not reading) receive
//! identical byte streams after their welcomes, frame by frame.

use applause_bus::HistoryBounds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::common::*;

const EVENTS: u64 = 3_000;
/// ~9 MB in all: more than twice the kernel buffers of a stalled loopback
/// socket (a 4 MiB send buffer at most here, `tcp_wmem`, and the
/// receiver's), so most of it waits in the writer task's queue.
const PAD: usize = 3_000;
/// The stalled viewer's receive buffer: small, but not below loopback's
/// segment size (64 KiB), so the window it opens when it reads lets a
/// whole segment through; with 4 KiB the sender was left to its
/// zero-window probes, whose backoff once outlasted the read timeout on a
/// busy machine.
const STALLED_RECV_BUFFER: u32 = 64 * 1024;

/// Connects with a raw socket and completes the handshake by hand; returns
/// the stream and any frame bytes read past the response.
async fn raw_connect(h: &Harness, recv_buffer: Option<u32>) -> (TcpStream, Vec<u8>) {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let mut s = socket.connect(h.addr).await.unwrap();
    let request = format!(
        "GET /v1/ws?room={ROOM} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "the handshake response");
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&got[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    (s, got[end..].to_vec())
}

/// Reads until `bytes` holds the welcome and `events` more frames; returns
/// the bytes after the welcome (which differs per connection: its time).
async fn frames_after_welcome(s: &mut TcpStream, mut bytes: Vec<u8>, events: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let frames = split(&bytes);
        if frames.len() as u64 > events {
            let welcome_len = frames[0].0;
            let end: usize = frames.iter().take(events as usize + 1).map(|f| f.0).sum();
            return bytes[welcome_len..end].to_vec();
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("frames in time")
            .unwrap();
        assert!(n > 0, "the connection stays open");
        bytes.extend_from_slice(&buf[..n]);
    }
}

/// The complete server frames at the start of `bytes`: (length with
/// header, opcode, payload).
fn split(mut bytes: &[u8]) -> Vec<(usize, u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0, "server frames are unmasked");
        assert_eq!(bytes[0] & 0xF0, 0x80, "final, no reserved bits");
        let (head, len) = match bytes[1] & 0x7F {
            126 if bytes.len() >= 4 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 if bytes.len() >= 10 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[2..10]);
                (10, u64::from_be_bytes(b) as usize)
            }
            126 | 127 => break,
            n => (2, n as usize),
        };
        if bytes.len() < head + len {
            break;
        }
        out.push((
            head + len,
            bytes[0] & 0x0F,
            bytes[head..head + len].to_vec(),
        ));
        bytes = &bytes[head + len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_and_queued_writes_put_identical_bytes_on_the_wire() {
    let h = Harness::with(
        config(|c| {
            // Room for the whole stalled backlog: nobody is a slow consumer.
            c.outbound_queue_bytes_max = 64 * 1024 * 1024;
            c.ping_interval_ms = 600_000;
            c.idle_timeout_ms = 1_200_000;
        }),
        HistoryBounds {
            events_max: EVENTS as usize + 10,
            ..HistoryBounds::default()
        },
    )
    .await;
    let (mut reading, first) = raw_connect(&h, None).await;
    let (mut stalled, stalled_first) = raw_connect(&h, Some(STALLED_RECV_BUFFER)).await;
    let reader =
        tokio::spawn(async move { frames_after_welcome(&mut reading, first, EVENTS).await });
    for seq in 1..=EVENTS {
        h.publish(&[padded(ROOM, seq, PAD)]).await;
        if seq % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let direct = reader.await.unwrap();
    assert!(
        h.metric("applause_gateway_frames_queued_total") > 0.0,
        "the stalled viewer's frames waited for its writer task"
    );
    let queued = frames_after_welcome(&mut stalled, stalled_first, EVENTS).await;
    assert_eq!(direct.len(), queued.len(), "the same number of bytes");
    assert!(direct == queued, "the same bytes");
    // And frame by frame: every event once, in order, whole.
    let frames = split(&queued);
    assert_eq!(frames.len() as u64, EVENTS);
    for (i, (_, op, payload)) in frames.iter().enumerate() {
        assert_eq!(*op, 1, "text frames");
        let v: serde_json::Value = serde_json::from_slice(payload).unwrap();
        assert_eq!(v["seq"], i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_to_hundreds_of_viewers_writes_every_frame_directly() {
    // More connections than tokio's cooperative budget (128 I/O operations
    // per poll): the fan-out must not fall back to the writer tasks after
    // the first 128 sockets of a round.
    const VIEWERS: usize = 400;
    let h = Harness::with(config(|c| c.resume_grace_ms = 0), HistoryBounds::default()).await;
    let mut clients = Vec::new();
    for _ in 0..VIEWERS {
        clients.push(h.connect(ROOM, None).await.0);
    }
    let before = h.metric("applause_gateway_frames_queued_total");
    h.publish_range(ROOM, 1..=5).await;
    for c in &mut clients {
        assert_eq!(c.seqs(5).await, range(1, 5));
    }
    assert_eq!(
        h.metric("applause_gateway_frames_queued_total"),
        before,
        "every frame went straight to its socket"
    );
    assert_eq!(
        h.metric("applause_gateway_deliveries_total"),
        (5 * VIEWERS) as f64
    );
}
