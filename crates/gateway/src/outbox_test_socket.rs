//! An in-memory socket for the outbox's tests: it takes at most `room`
//! bytes until the test reads them out, then wakes the writer.

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
pub(crate) fn outbox(bytes_max: usize, room: usize, mode: WriteMode) -> (Arc<Outbox>, TestSocket) {
    let socket = TestSocket::new(room);
    let outbox = Outbox::new(
        bytes_max,
        Box::new(socket.clone()),
        mode,
        Metrics::unregistered(),
    );
    (Arc::new(outbox), socket)
}
