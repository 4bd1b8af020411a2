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
    fn advance(&mut self, mut n: usize, metrics: &Metrics, now_ms: i64) {
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
            metrics.delivered(now_ms, front.committed_at_ms.into_iter());
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
        let now_ms = crate::metrics::now_ms();
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
            metrics.socket_writes.inc();
            self.advance(written, metrics, now_ms);
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
        let now_ms = committed_at_ms.map_or(0, |_| crate::metrics::now_ms());
        self.push_many(&[(bytes, committed_at_ms)], now_ms)
    }

    /// [`Outbox::push_ref`] for several frames in order: while nothing is
    /// queued they go out in one vectored write. `now_ms` is the time the
    /// fan-out round read once, for the latency of what is written at once.
    pub(crate) fn push_many(&self, frames: &[(&Bytes, Option<i64>)], now_ms: i64) -> Push {
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
                Poll::Ready(Ok(n)) => {
                    self.metrics.socket_writes.inc();
                    written = n;
                }
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
        for (b, _) in frames {
            if written < b.len() {
                break;
            }
            written -= b.len();
            done += 1;
        }
        self.metrics
            .delivered(now_ms, frames[..done].iter().filter_map(|(_, at)| *at));
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
#[path = "outbox_test_socket.rs"]
pub(crate) mod test_socket;

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
