//! One connection's outbound side: a queue bounded in bytes, filled by the
//! dispatcher without ever waiting, and the writer task that drains it in
//! batches (many frames fed, one flush) so each socket costs few syscalls.
//!
//! The byte bound counts the frames queued plus the batch the writer is still
//! flushing, so a peer that stops reading holds at most that much memory here
//! before it is closed with 4008 `slow_consumer`.

use std::collections::VecDeque;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{Sink, SinkExt};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::protocol::{self, close};

/// A frame waiting to be written.
#[derive(Debug, Clone)]
pub(crate) enum OutFrame {
    /// A room event; `committed_at_ms` feeds the fan-out latency histogram.
    Event {
        text: Utf8Bytes,
        committed_at_ms: i64,
    },
    /// A frame of the gateway's own (welcome, pong, error, resync).
    Control(Utf8Bytes),
    /// A WebSocket ping.
    Ping,
}

impl OutFrame {
    pub(crate) fn len(&self) -> usize {
        match self {
            OutFrame::Event { text, .. } | OutFrame::Control(text) => text.len(),
            OutFrame::Ping => 2,
        }
    }

    fn into_message(self) -> Message {
        match self {
            OutFrame::Event { text, .. } | OutFrame::Control(text) => Message::Text(text),
            OutFrame::Ping => Message::Ping(bytes::Bytes::new()),
        }
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
    Queued,
    /// The frame did not fit: the connection is now closing with 4008.
    Overflow,
    /// The connection is already closing; the frame was dropped.
    Closed,
}

#[derive(Default)]
struct State {
    queue: VecDeque<OutFrame>,
    /// Bytes in `queue`.
    queued_bytes: usize,
    /// Bytes of the batch the writer has taken and not yet flushed.
    in_flight_bytes: usize,
    closing: Option<Closing>,
}

pub(crate) struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    /// Cancelled as soon as the connection starts closing, for any reason.
    closed: CancellationToken,
    bytes_max: usize,
}

impl Outbox {
    /// The byte bound of this queue.
    pub(crate) fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    pub(crate) fn new(bytes_max: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            closed: CancellationToken::new(),
            bytes_max,
        }
    }

    /// Queues a frame without waiting. Past the byte bound the queue is
    /// dropped and the connection closes as a slow consumer.
    pub(crate) fn push(&self, frame: OutFrame) -> Push {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return Push::Closed;
        }
        let len = frame.len();
        if s.queued_bytes + s.in_flight_bytes + len > self.bytes_max {
            s.queue.clear();
            s.queued_bytes = 0;
            // The error frame is the only thing still sent; it is tiny and
            // outside the bound on purpose.
            s.queue.push_back(OutFrame::Control(protocol::error(
                "slow_consumer",
                "the connection fell behind; reconnect and resume",
            )));
            s.closing = Some(Closing {
                code: close::SLOW_CONSUMER,
                reason: "slow_consumer",
            });
            drop(s);
            self.wake.notify_one();
            self.closed.cancel();
            return Push::Overflow;
        }
        let was_empty = s.queue.is_empty();
        s.queue.push_back(frame);
        s.queued_bytes += len;
        drop(s);
        // A non-empty queue already has a wake-up pending or being served.
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Starts closing: frames already queued are still written, then an
    /// optional error frame, then the close frame. Returns false when the
    /// connection was already closing.
    pub(crate) fn close(&self, closing: Closing, error: Option<Utf8Bytes>) -> bool {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return false;
        }
        if let Some(e) = error {
            s.queue.push_back(OutFrame::Control(e));
        }
        s.closing = Some(closing);
        drop(s);
        self.wake.notify_one();
        self.closed.cancel();
        true
    }

    #[cfg(test)]
    pub(crate) fn is_closing(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Resolves once the connection starts closing.
    pub(crate) async fn closing(&self) {
        self.closed.cancelled().await
    }

    /// Bytes counted against the bound right now (queued plus in flight).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        let s = self.state.lock();
        s.queued_bytes + s.in_flight_bytes
    }

    /// Waits for work and swaps the whole queue into `batch` (which must be
    /// empty); returns the batch's bytes and whether the connection is closing.
    async fn next_batch(&self, batch: &mut VecDeque<OutFrame>) -> (usize, Option<Closing>) {
        loop {
            {
                let mut s = self.state.lock();
                if !s.queue.is_empty() || s.closing.is_some() {
                    std::mem::swap(&mut s.queue, batch);
                    let bytes = std::mem::take(&mut s.queued_bytes);
                    s.in_flight_bytes += bytes;
                    return (bytes, s.closing);
                }
            }
            self.wake.notified().await;
        }
    }

    /// Appends what was queued meanwhile to a batch already taken; returns
    /// the bytes added (now in flight).
    fn take_more(&self, batch: &mut VecDeque<OutFrame>) -> usize {
        let mut s = self.state.lock();
        if s.closing.is_some() {
            return 0;
        }
        batch.extend(s.queue.drain(..));
        let bytes = std::mem::take(&mut s.queued_bytes);
        s.in_flight_bytes += bytes;
        bytes
    }

    /// The texts queued so far, taken out of the queue (unit tests).
    #[cfg(test)]
    pub(crate) fn take_texts(&self) -> Vec<String> {
        let mut batch = VecDeque::new();
        let bytes = self.take_more(&mut batch);
        self.release(bytes);
        batch
            .into_iter()
            .filter_map(|f| match f {
                OutFrame::Event { text, .. } | OutFrame::Control(text) => Some(text.to_string()),
                OutFrame::Ping => None,
            })
            .collect()
    }

    fn release(&self, bytes: usize) {
        let mut s = self.state.lock();
        s.in_flight_bytes = s.in_flight_bytes.saturating_sub(bytes);
    }

    fn closing_state(&self) -> Option<Closing> {
        self.state.lock().closing
    }

    fn take_rest(&self, batch: &mut VecDeque<OutFrame>) {
        let mut s = self.state.lock();
        batch.extend(s.queue.drain(..));
        s.queued_bytes = 0;
    }
}

/// Feeds every frame of `batch` (popping each only once the sink took it, so
/// a cancelled call loses nothing) and flushes once.
async fn write_batch<S>(
    sink: &mut S,
    batch: &mut VecDeque<OutFrame>,
    stamps: &mut Vec<i64>,
) -> Result<(), S::Error>
where
    S: Sink<Message> + Unpin,
{
    while let Some(frame) = batch.front() {
        futures_util::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).await?;
        if let OutFrame::Event {
            committed_at_ms, ..
        } = frame
        {
            stamps.push(*committed_at_ms);
        }
        let frame = batch.pop_front().expect("front was Some");
        sink.start_send_unpin(frame.into_message())?;
    }
    sink.flush().await
}

/// The writer's timings (see [`crate::GatewayConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterTiming {
    pub coalesce: Duration,
    pub close_grace: Duration,
}

/// Drains the outbox into the socket until the connection closes, then sends
/// the close frame, giving the peer the close grace to take what is left.
pub(crate) async fn run_writer<S>(
    mut sink: S,
    outbox: Arc<Outbox>,
    metrics: Metrics,
    timing: WriterTiming,
) where
    S: Sink<Message> + Unpin,
    S::Error: Display,
{
    let mut batch = VecDeque::new();
    let mut stamps = Vec::new();
    loop {
        let (mut bytes, closing) = outbox.next_batch(&mut batch).await;
        if closing.is_some() {
            // What was queued at the close is written below, under the grace.
            break;
        }
        if !timing.coalesce.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(timing.coalesce) => bytes += outbox.take_more(&mut batch),
                _ = outbox.closing() => {}
            }
        }
        let written = tokio::select! {
            r = write_batch(&mut sink, &mut batch, &mut stamps) => Some(r),
            // A peer that stops reading would hold this flush forever; the
            // close (e.g. slow consumer) must still get through.
            _ = outbox.closing() => None,
        };
        match written {
            Some(Ok(())) => {
                outbox.release(bytes);
                metrics.delivered(&stamps);
                stamps.clear();
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "write failed");
                outbox.close(
                    Closing {
                        code: close::NORMAL,
                        reason: "",
                    },
                    None,
                );
                return;
            }
            None => {
                stamps.clear();
                // A slow consumer's backlog is dropped; a graceful close
                // still writes the rest of this batch below.
                if outbox
                    .closing_state()
                    .is_some_and(|c| c.code == close::SLOW_CONSUMER)
                {
                    batch.clear();
                }
                break;
            }
        }
        // A burst grew the buffers; an idle connection should not keep them.
        if batch.capacity() > 256 {
            batch.shrink_to(16);
        }
    }
    let Some(closing) = outbox.closing_state() else {
        return;
    };
    outbox.take_rest(&mut batch);
    let finish = async {
        write_batch(&mut sink, &mut batch, &mut stamps).await?;
        let frame = CloseFrame {
            code: closing.code,
            reason: Utf8Bytes::from_static(closing.reason),
        };
        sink.send(Message::Close(Some(frame))).await
    };
    match tokio::time::timeout(timing.close_grace, finish).await {
        Ok(Ok(())) => metrics.delivered(&stamps),
        Ok(Err(e)) => tracing::debug!(error = %e, "close not sent"),
        Err(_) => tracing::debug!("peer did not take the close frame in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> OutFrame {
        OutFrame::Event {
            text: "x".repeat(n).into(),
            committed_at_ms: 1,
        }
    }

    #[test]
    fn queue_never_exceeds_its_byte_bound() {
        let o = Outbox::new(1_000);
        let mut queued = 0;
        loop {
            match o.push(event(90)) {
                Push::Queued => queued += 1,
                Push::Overflow => break,
                Push::Closed => unreachable!(),
            }
            assert!(o.bytes() <= 1_000);
        }
        assert_eq!(queued, 11);
        assert!(o.is_closing());
        assert_eq!(o.bytes(), 0, "an overflowing queue is dropped");
        assert_eq!(o.push(event(1)), Push::Closed);
    }

    #[tokio::test]
    async fn writer_sends_in_order_then_closes() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(100);
        let tx = tokio_util::sync::PollSender::new(tx);
        let o = Arc::new(Outbox::new(1 << 20));
        for i in 0..10 {
            o.push(OutFrame::Control(format!("{i}").into()));
        }
        let writer = tokio::spawn(run_writer(
            tx.sink_map_err(|e| e.to_string()),
            o.clone(),
            Metrics::unregistered(),
            WriterTiming {
                coalesce: Duration::ZERO,
                close_grace: Duration::from_secs(1),
            },
        ));
        for i in 0..10 {
            assert_eq!(rx.recv().await, Some(Message::Text(format!("{i}").into())));
        }
        o.close(
            Closing {
                code: close::GOING_AWAY,
                reason: "going_away",
            },
            None,
        );
        writer.await.unwrap();
        match rx.recv().await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, close::GOING_AWAY),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_peer_is_closed_as_slow_consumer_without_growing() {
        // A sink that takes one frame and then never again: a peer that stopped reading.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(1);
        let tx = tokio_util::sync::PollSender::new(tx);
        let o = Arc::new(Outbox::new(2_000));
        let writer = tokio::spawn(run_writer(
            tx.sink_map_err(|e| e.to_string()),
            o.clone(),
            Metrics::unregistered(),
            WriterTiming {
                coalesce: Duration::from_millis(5),
                close_grace: Duration::from_millis(500),
            },
        ));
        let mut overflowed = false;
        for _ in 0..1_000 {
            match o.push(event(100)) {
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
        assert!(rx.recv().await.is_some());
    }
}
