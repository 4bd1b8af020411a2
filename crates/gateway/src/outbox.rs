//! One connection's outbound side: the socket's write half, a queue bounded in
//! bytes, and the writer task that drains it.
//!
//! Frames arrive already encoded (an event's frame is the same bytes for
//! every socket). While the queue is empty a frame is written straight to the
//! socket by whoever queues it, without blocking (the fan-out loop writes
//! each viewer's frame with no task wake-up); only when the socket takes less
//! than all of it (`WouldBlock` or a partial write) is the rest queued, in
//! order, for the writer task, which drains everything queued with vectored
//! writes (many frames per syscall). Every byte goes out under the queue's
//! lock and from its head, so frames are never interleaved or reordered.
//!
//! The byte bound counts the frame bytes not yet taken by the socket, so a
//! peer that stops reading holds at most that much memory here before it is
//! closed with 4008 `slow_consumer`.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::io::AsyncWrite;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::frame;
use crate::metrics::Metrics;
use crate::protocol::{self, close};

/// The socket's write half.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// Frames written by one vectored write at most (Linux allows 1,024).
const IOVECS_MAX: usize = 64;

/// A frame waiting to be written: its encoded bytes, and for a room event
/// its commit time (for the fan-out latency histogram).
#[derive(Debug, Clone)]
pub(crate) struct OutFrame {
    pub bytes: Bytes,
    pub committed_at_ms: Option<i64>,
}

impl OutFrame {
    /// A room event's frame (encoded once, shared by every connection).
    pub(crate) fn event(bytes: Bytes, committed_at_ms: i64) -> Self {
        Self {
            bytes,
            committed_at_ms: Some(committed_at_ms),
        }
    }

    /// A text frame of the gateway's own (welcome, pong, error, resync).
    pub(crate) fn control(text: &str) -> Self {
        Self {
            bytes: frame::text(text),
            committed_at_ms: None,
        }
    }

    /// A WebSocket ping.
    pub(crate) fn ping() -> Self {
        Self {
            bytes: frame::ping(),
            committed_at_ms: None,
        }
    }

    /// A WebSocket pong echoing a client's ping.
    pub(crate) fn pong(payload: &[u8]) -> Self {
        Self {
            bytes: frame::pong(payload),
            committed_at_ms: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }
}

/// How a connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closing {
    pub code: u16,
    pub reason: &'static str,
}

/// The result of queueing a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Written to the socket, or queued for the writer task.
    Queued,
    /// The frame did not fit: the connection is now closing with 4008.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

/// How frames reach the socket (see [`crate::GatewayConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteMode {
    /// Write at once from the queueing caller while the queue is empty.
    pub direct: bool,
    /// The writer drains many frames per syscall (else one write per frame).
    pub vectored: bool,
}

struct State {
    io: WriteHalf,
    /// Frames not yet wholly taken by the socket, oldest first.
    queue: VecDeque<OutFrame>,
    /// Bytes of the front frame already written.
    front_written: usize,
    /// Bytes in `queue` not yet written (what the bound counts).
    queued_bytes: usize,
    closing: Option<Closing>,
}

impl State {
    /// Marks the first `n` queued bytes as written; counts whole events.
    fn advance(&mut self, mut n: usize, metrics: &Metrics) {
        self.queued_bytes -= n;
        while n > 0 {
            let front = self.queue.front().expect("written bytes were queued");
            let left = front.len() - self.front_written;
            if n < left {
                self.front_written += n;
                return;
            }
            n -= left;
            self.front_written = 0;
            if let Some(at) = front.committed_at_ms {
                metrics.delivered(&[at]);
            }
            self.queue.pop_front();
        }
    }

    /// Writes from the head of the queue until it is empty or the socket is full.
    fn poll_drain(
        &mut self,
        cx: &mut Context<'_>,
        vectored: bool,
        metrics: &Metrics,
    ) -> Poll<io::Result<()>> {
        while !self.queue.is_empty() {
            let written = {
                let mut slices = [IoSlice::new(&[]); IOVECS_MAX];
                let mut count = 0;
                let take = if vectored { IOVECS_MAX } else { 1 };
                for (i, f) in self.queue.iter().take(take).enumerate() {
                    let start = if i == 0 { self.front_written } else { 0 };
                    slices[i] = IoSlice::new(&f.bytes[start..]);
                    count += 1;
                }
                let io = Pin::new(&mut self.io);
                let r = if count == 1 {
                    io.poll_write(cx, &slices[0])
                } else {
                    io.poll_write_vectored(cx, &slices[..count])
                };
                match r {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => n,
                }
            };
            self.advance(written, metrics);
        }
        Poll::Ready(Ok(()))
    }
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    /// Cancelled as soon as the connection starts closing, for any reason.
    closed: CancellationToken,
    bytes_max: usize,
    mode: WriteMode,
    metrics: Metrics,
}

impl Outbox {
    pub(crate) fn new(bytes_max: usize, io: WriteHalf, mode: WriteMode, metrics: Metrics) -> Self {
        Self {
            state: Mutex::new(State {
                io,
                queue: VecDeque::new(),
                front_written: 0,
                queued_bytes: 0,
                closing: None,
            }),
            wake: Notify::new(),
            closed: CancellationToken::new(),
            bytes_max,
            mode,
            metrics,
        }
    }

    /// The byte bound of this queue.
    pub(crate) fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Queues a frame without waiting (see [`Outbox::push_ref`]).
    pub(crate) fn push(&self, frame: OutFrame) -> Push {
        self.push_ref(&frame.bytes, frame.committed_at_ms)
    }

    /// Writes a frame at once when nothing is queued and the socket takes it
    /// whole (the bytes are then not even cloned); otherwise queues what the
    /// socket did not take for the writer task. Past the byte bound the queue
    /// is dropped and the connection closes as a slow consumer.
    pub(crate) fn push_ref(&self, bytes: &Bytes, committed_at_ms: Option<i64>) -> Push {
        self.push_many(&[(bytes, committed_at_ms)])
    }

    /// [`Outbox::push_ref`] for several frames in order: while nothing is
    /// queued they go out in one vectored write.
    pub(crate) fn push_many(&self, frames: &[(&Bytes, Option<i64>)]) -> Push {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return Push::Closed;
        }
        let len: usize = frames.iter().map(|(b, _)| b.len()).sum();
        if s.queued_bytes + len > self.bytes_max {
            drop(s);
            self.overflow();
            return Push::Overflow;
        }
        let was_empty = s.queue.is_empty();
        let mut written = 0;
        if was_empty && self.mode.direct {
            // A no-op waker: if the socket is full, the writer task polls it
            // again with its own waker before it waits, so no wake-up is lost.
            let mut cx = Context::from_waker(Waker::noop());
            let io = Pin::new(&mut s.io);
            let r = if let [(bytes, _)] = frames {
                io.poll_write(&mut cx, bytes)
            } else {
                let mut slices = [IoSlice::new(&[]); IOVECS_MAX];
                let n = frames.len().min(IOVECS_MAX);
                for (slot, (b, _)) in slices.iter_mut().zip(frames) {
                    *slot = IoSlice::new(b);
                }
                io.poll_write_vectored(&mut cx, &slices[..n])
            };
            match r {
                Poll::Ready(Ok(n)) => written = n,
                Poll::Pending => {}
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "write failed");
                    drop(s);
                    self.fail();
                    return Push::Closed;
                }
            }
        }
        let mut done = 0;
        for (b, at) in frames {
            if written < b.len() {
                break;
            }
            written -= b.len();
            done += 1;
            if let Some(at) = at {
                self.metrics.delivered(&[*at]);
            }
        }
        let rest = &frames[done..];
        if rest.is_empty() {
            return Push::Queued;
        }
        for (b, at) in rest {
            s.queue.push_back(OutFrame {
                bytes: (*b).clone(),
                committed_at_ms: *at,
            });
        }
        if was_empty {
            // `written` is now the part of the first queued frame already sent.
            s.front_written = written;
        }
        s.queued_bytes += rest.iter().map(|(b, _)| b.len()).sum::<usize>() - written;
        drop(s);
        self.metrics.frames_queued.inc_by(rest.len() as u64);
        // A non-empty queue already has a wake-up pending or being served.
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Drops the backlog (all but a partly written frame, which must finish
    /// for the stream to stay valid) and closes with 4008.
    fn overflow(&self) {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return;
        }
        let keep = usize::from(s.front_written > 0);
        let kept_bytes = s
            .queue
            .front()
            .filter(|_| keep == 1)
            .map_or(0, |f| f.len() - s.front_written);
        s.queue.truncate(keep);
        s.queued_bytes = kept_bytes;
        drop(s);
        // The error frame is the only thing still sent; it is tiny and
        // outside the bound on purpose.
        self.close(
            Closing {
                code: close::SLOW_CONSUMER,
                reason: "slow_consumer",
            },
            Some(&protocol::error(
                "slow_consumer",
                "the connection fell behind; reconnect and resume",
            )),
        );
    }

    /// Starts closing: frames already queued are still written, then an
    /// optional error frame, then the close frame. Returns false when the
    /// connection was already closing.
    pub(crate) fn close(&self, closing: Closing, error: Option<&str>) -> bool {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return false;
        }
        for f in error.map(OutFrame::control).into_iter().chain([OutFrame {
            bytes: frame::close(closing.code, closing.reason),
            committed_at_ms: None,
        }]) {
            s.queued_bytes += f.len();
            s.queue.push_back(f);
        }
        s.closing = Some(closing);
        drop(s);
        self.wake.notify_one();
        self.closed.cancel();
        true
    }

    /// After a write error: nothing more can be sent.
    fn fail(&self) {
        let mut s = self.state.lock();
        s.queue.clear();
        s.queued_bytes = 0;
        s.front_written = 0;
        s.closing.get_or_insert(Closing {
            code: close::NORMAL,
            reason: "",
        });
        drop(s);
        self.wake.notify_one();
        self.closed.cancel();
    }

    #[cfg(test)]
    pub(crate) fn is_closing(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves once the connection starts closing.
    pub(crate) async fn closing(&self) {
        self.closed.cancelled().await
    }

    /// Bytes counted against the bound right now.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.state.lock().queued_bytes
    }

    /// Waits until something is queued or the connection is closing;
    /// returns whether it is closing.
    async fn wait_work(&self) -> bool {
        loop {
            {
                let s = self.state.lock();
                if s.closing.is_some() {
                    return true;
                }
                if !s.queue.is_empty() {
                    return false;
                }
            }
            self.wake.notified().await;
        }
    }

    /// Writes everything queued (also what is queued meanwhile).
    async fn drain(&self) -> io::Result<()> {
        poll_fn(|cx| {
            self.state
                .lock()
                .poll_drain(cx, self.mode.vectored, &self.metrics)
        })
        .await
    }

    async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut self.state.lock().io).poll_shutdown(cx)).await
    }

    fn shrink(&self) {
        let mut s = self.state.lock();
        // A burst grew the queue; an idle connection should not keep it.
        if s.queue.is_empty() && s.queue.capacity() > 64 {
            s.queue = VecDeque::new();
        }
    }
}

/// The writer's timings (see [`crate::GatewayConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterTiming {
    pub coalesce: Duration,
    pub close_grace: Duration,
}

/// Drains what the direct path could not write until the connection closes,
/// then writes the rest and the close frame, giving the peer the close grace
/// to take them, and shuts the write side down.
pub(crate) async fn run_writer(outbox: Arc<Outbox>, timing: WriterTiming) {
    loop {
        if outbox.wait_work().await {
            break;
        }
        if !timing.coalesce.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(timing.coalesce) => {}
                _ = outbox.closing() => {}
            }
        }
        let written = tokio::select! {
            r = outbox.drain() => Some(r),
            // A peer that stops reading would hold this write forever; the
            // close (e.g. slow consumer) must still get through.
            _ = outbox.closing() => None,
        };
        match written {
            Some(Ok(())) => outbox.shrink(),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                outbox.fail();
                return;
            }
            None => break,
        }
    }
    let finish = async {
        outbox.drain().await?;
        outbox.shutdown().await
    };
    match tokio::time::timeout(timing.close_grace, finish).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "close not sent"),
        Err(_) => tracing::debug!("peer did not take the close frame in time"),
    }
}

/// An in-memory socket for tests: it takes at most `room` bytes until the
/// test reads them out, then wakes the writer (a peer with a small buffer).
#[cfg(test)]
pub(crate) mod test_socket {
    use super::*;

    #[derive(Default)]
    struct Shared {
        written: Vec<u8>,
        /// Bytes the "kernel" holds and the "peer" has not read yet.
        unread: usize,
        room: usize,
        waker: Option<Waker>,
        writes: usize,
    }

    #[derive(Clone)]
    pub(crate) struct TestSocket(Arc<Mutex<Shared>>);

    impl TestSocket {
        pub(crate) fn new(room: usize) -> Self {
            Self(Arc::new(Mutex::new(Shared {
                room,
                ..Shared::default()
            })))
        }

        /// The peer reads everything buffered; the writer may go on.
        pub(crate) fn read_all(&self) -> Vec<u8> {
            let mut s = self.0.lock();
            s.unread = 0;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
            s.written.clone()
        }

        /// Grows (or shrinks) the peer's buffer and wakes the writer.
        pub(crate) fn set_room(&self, room: usize) {
            let mut s = self.0.lock();
            s.room = room;
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }

        /// Write calls that took bytes.
        pub(crate) fn writes(&self) -> usize {
            self.0.lock().writes
        }

        /// The text frames written so far (the peer reads them all).
        pub(crate) fn texts(&self) -> Vec<String> {
            frame::split_server_frames(&self.read_all())
                .into_iter()
                .filter(|(op, _)| *op == 1)
                .map(|(_, p)| String::from_utf8(p).unwrap())
                .collect()
        }
    }

    impl AsyncWrite for TestSocket {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut s = self.0.lock();
            let free = s.room.saturating_sub(s.unread);
            if free == 0 {
                s.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(free - n);
                s.written.extend_from_slice(&b[..take]);
                n += take;
                if n == free {
                    break;
                }
            }
            s.unread += n;
            s.writes += 1;
            Poll::Ready(Ok(n))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// An outbox on a socket with `room` bytes of buffer.
    pub(crate) fn outbox(
        bytes_max: usize,
        room: usize,
        mode: WriteMode,
    ) -> (Arc<Outbox>, TestSocket) {
        let socket = TestSocket::new(room);
        let outbox = Outbox::new(
            bytes_max,
            Box::new(socket.clone()),
            mode,
            Metrics::unregistered(),
        );
        (Arc::new(outbox), socket)
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(o.push_many(&refs), Push::Queued);
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
}
