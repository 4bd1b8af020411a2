//! One WebSocket connection after the upgrade: registers with its room (the
//! welcome is queued first), spawns the writer, and runs the read loop —
//! client frames, server pings, the idle timeout and every way of closing.
//! Written against generic `Sink`/`Stream` so tests can drive it with channels.

use std::fmt::Display;
use std::sync::Arc;

use applause_bus::History;
use applause_web::Principal;
use axum::extract::ws::Message;
use futures_util::{Sink, Stream, StreamExt};
use tokio::time::{Instant, MissedTickBehavior};

use crate::gateway::Inner;
use crate::outbox::{run_writer, Closing, OutFrame, Outbox, WriterTiming};
use crate::ports::RoomInfo;
use crate::protocol::{self, close, ClientFrame};
use crate::room::{Delivered, ResumeStep, Room};

/// Everything a connection needs, decided before the upgrade.
pub(crate) struct Session {
    pub inner: Arc<Inner>,
    pub room: Arc<Room>,
    pub info: RoomInfo,
    pub principal: Option<Principal>,
    pub id: u64,
}

/// Serves one connection until it closes.
pub(crate) async fn run<S, R, E>(mut session: Session, sink: S, mut stream: R)
where
    S: Sink<Message> + Send + Unpin + 'static,
    S::Error: Display,
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: Display,
{
    let config = &session.inner.config;
    let outbox = Arc::new(Outbox::new(config.outbound_queue_bytes_max));
    let writer = tokio::spawn(run_writer(
        sink,
        outbox.clone(),
        session.inner.metrics.clone(),
        WriterTiming {
            coalesce: config.write_coalesce(),
            close_grace: config.close_grace(),
        },
    ));
    if !register(&mut session, &outbox).await {
        outbox.close(
            Closing {
                code: 1011,
                reason: "unavailable",
            },
            Some(protocol::error(
                "unavailable",
                "the room is not available; retry",
            )),
        );
        let _ = writer.await;
        return;
    }
    let mut conn = Conn {
        session: &session,
        outbox: &outbox,
        malformed: 0,
        held: session.inner.config.resume_grace_ms > 0,
    };
    conn.read_loop(&mut stream).await;
    session.room.unregister(session.id);
    outbox.close(
        Closing {
            code: close::NORMAL,
            reason: "",
        },
        None,
    );
    let _ = writer.await;
}

/// Registers with the room, looking it up again if it was retired meanwhile.
async fn register(session: &mut Session, outbox: &Arc<Outbox>) -> bool {
    let broadcaster = session
        .principal
        .as_ref()
        .is_some_and(|p| p.user_id == session.room.broadcaster_id);
    let hold = session.inner.config.resume_grace_ms > 0;
    for _ in 0..3 {
        let now = applause_web::rfc3339_ms(applause_web::now_ms());
        if session
            .room
            .register(session.id, outbox.clone(), broadcaster, &now, hold)
            .is_ok()
        {
            return true;
        }
        match session.inner.joined_room(&session.info).await {
            Ok(room) => session.room = room,
            Err(_) => return false,
        }
    }
    false
}

struct Conn<'a> {
    session: &'a Session,
    outbox: &'a Arc<Outbox>,
    malformed: u32,
    /// Live events are held since the welcome (see `resume_grace_ms`).
    held: bool,
}

impl Conn<'_> {
    async fn read_loop<R, E>(&mut self, stream: &mut R)
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: Display,
    {
        let inner = &self.session.inner;
        let config = &inner.config;
        let mut last_seen = Instant::now();
        let mut ticker = tokio::time::interval_at(
            Instant::now() + config.ping_interval(),
            config.ping_interval(),
        );
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Once closing, keep reading (the peer's close reply) until this deadline.
        let mut closing_until: Option<Instant> = None;
        let grace_until = Instant::now() + config.resume_grace();
        let mut reading = true;
        loop {
            let deadline = closing_until.unwrap_or_else(|| Instant::now() + config.idle_timeout());
            tokio::select! {
                biased;
                _ = inner.shutdown.cancelled(), if closing_until.is_none() => {
                    self.close(close::GOING_AWAY, "going_away", None);
                    closing_until = Some(Instant::now() + config.close_grace() * 2);
                }
                _ = self.outbox.closing(), if closing_until.is_none() => {
                    closing_until = Some(Instant::now() + config.close_grace() * 2);
                }
                _ = tokio::time::sleep_until(deadline), if closing_until.is_some() => break,
                _ = tokio::time::sleep_until(grace_until), if self.held => self.release(),
                _ = ticker.tick(), if closing_until.is_none() => {
                    if last_seen.elapsed() > config.idle_timeout() {
                        self.close(close::NORMAL, "idle_timeout", None);
                    } else {
                        self.outbox.push(OutFrame::Ping);
                    }
                }
                msg = stream.next(), if reading => match msg {
                    None => break,
                    Some(Err(e)) => {
                        // tungstenite refuses a frame past its size limit before
                        // reading it; its error type is not ours to match on.
                        if !e.to_string().contains("Space limit exceeded") {
                            break;
                        }
                        self.too_big();
                        // The stream cannot be read past this error, and the
                        // rest of the frame is still unread in the socket:
                        // closing now would reset the connection before the
                        // peer reads our close frame. Hold it for the grace.
                        reading = false;
                        closing_until = Some(Instant::now() + config.close_grace());
                    }
                    Some(Ok(m)) => {
                        last_seen = Instant::now();
                        if closing_until.is_none() {
                            self.on_message(m).await;
                        }
                    }
                },
            }
        }
    }

    fn close(&self, code: u16, reason: &'static str, error: Option<(&str, &str)>) {
        let frame = error.map(|(c, m)| protocol::error(c, m));
        self.outbox.close(Closing { code, reason }, frame);
    }

    fn too_big(&self) {
        let max = self.session.inner.config.inbound_frame_bytes_max;
        self.count_error("payload_too_large");
        self.close(
            close::TOO_BIG,
            "payload_too_large",
            Some((
                "payload_too_large",
                &format!("frames are limited to {max} bytes"),
            )),
        );
    }

    fn count_error(&self, code: &str) {
        self.session
            .inner
            .metrics
            .protocol_errors
            .with_label_values(&[code])
            .inc();
    }

    /// A malformed frame gets an error frame; the last one allowed closes 1008.
    fn malformed(&mut self, code: &'static str, message: &str) {
        self.count_error(code);
        self.malformed += 1;
        if self.malformed >= self.session.inner.config.malformed_frames_max {
            self.close(
                close::POLICY,
                "too_many_malformed_frames",
                Some((code, message)),
            );
        } else {
            self.outbox
                .push(OutFrame::Control(protocol::error(code, message)));
        }
    }

    async fn on_message(&mut self, msg: Message) {
        let max = self.session.inner.config.inbound_frame_bytes_max;
        match msg {
            Message::Text(text) if text.len() > max => self.too_big(),
            Message::Binary(b) if b.len() > max => self.too_big(),
            Message::Text(text) => match ClientFrame::parse(&text) {
                Ok(frame) => self.on_frame(frame).await,
                Err(e) => self.malformed(e.code, &e.message),
            },
            Message::Binary(_) => {
                self.malformed("invalid_request", "binary frames are not supported")
            }
            // tungstenite answers pings itself; any frame already counts as life.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }

    /// Ends the hold after the welcome: live delivery starts.
    fn release(&mut self) {
        if std::mem::take(&mut self.held) {
            self.session.room.release(self.session.id);
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) {
        if matches!(frame, ClientFrame::Resume { .. }) {
            // The resume itself ends the hold, after queueing the replay.
            self.held = false;
        } else {
            self.release();
        }
        match frame {
            ClientFrame::Ping => {
                self.outbox.push(OutFrame::Control(protocol::pong()));
            }
            ClientFrame::Resume { epoch, since_seq } => self.resume(epoch, since_seq).await,
            ClientFrame::Ack { gift_id, text } => {
                let Some(who) = &self.session.principal else {
                    self.count_error("unauthorized");
                    self.outbox.push(OutFrame::Control(protocol::error(
                        "unauthorized",
                        "sign in to acknowledge gifts",
                    )));
                    return;
                };
                if let Err(e) = self.session.inner.acks.ack(who, &gift_id, &text).await {
                    self.count_error(e.code.as_str());
                    self.outbox.push(OutFrame::Control(protocol::error(
                        e.code.as_str(),
                        &e.message,
                    )));
                }
            }
        }
    }

    async fn resume(&mut self, epoch: u64, since: u64) {
        let s = self.session;
        let step = if epoch != s.room.epoch {
            ResumeStep::Resync
        } else {
            match s.room.resume_from_ring(s.id, since) {
                ResumeStep::NeedHistory => self.resume_from_bus(since).await,
                step => step,
            }
        };
        let outcome = match step {
            ResumeStep::Resync => {
                if epoch != s.room.epoch {
                    self.outbox
                        .push(OutFrame::Control(protocol::resync_required()));
                    // A foreign epoch replays nothing: live delivery starts now.
                    s.room.release(s.id);
                }
                "resync"
            }
            ResumeStep::Replayed(n) => {
                tracing::debug!(since, replayed = n, "resumed");
                "replayed"
            }
            ResumeStep::NeedHistory => "replayed",
        };
        s.inner.metrics.resumes.with_label_values(&[outcome]).inc();
    }

    /// The ring starts after the client's position: fetch the gap from the
    /// bus (live delivery to this connection is paused meanwhile).
    async fn resume_from_bus(&self, since: u64) -> ResumeStep {
        let s = self.session;
        let last = s.room.last_seq().unwrap_or(0);
        let want = usize::try_from(last.saturating_sub(since))
            .unwrap_or(usize::MAX)
            .min(s.inner.config.history_events_max);
        let older = match s.inner.bus.history(&s.room.id, since, want).await {
            Ok(History::Events(events)) => Some(
                events
                    .iter()
                    .filter(|e| e.epoch == s.room.epoch)
                    .map(|e| Arc::new(Delivered::new(e)))
                    .collect(),
            ),
            Ok(History::Gone) => None,
            Err(e) => {
                tracing::warn!(room = %s.room.id, conn = s.id, error = %e, "bus history unavailable for a resume");
                None
            }
        };
        s.room.resume_with_history(s.id, since, older)
    }
}

#[cfg(test)]
mod tests {
    //! The connection loop driven through channels instead of a socket, on
    //! tokio's paused clock (timeouts pass without waiting).

    use super::*;
    use crate::ports::{AckHandler, RoomDirectory};
    use crate::{Gateway, GatewayConfig};
    use applause_web::{ApiError, Authenticator};
    use futures_util::SinkExt;
    use tokio::sync::mpsc;

    struct Rooms;

    #[async_trait::async_trait]
    impl RoomDirectory for Rooms {
        async fn room(&self, _: &str) -> Result<Option<RoomInfo>, ApiError> {
            Ok(None)
        }
    }

    struct Acks;

    #[async_trait::async_trait]
    impl AckHandler for Acks {
        async fn ack(&self, _: &Principal, _: &str, _: &str) -> Result<(), ApiError> {
            Ok(())
        }
    }

    /// Starts a connection; returns the client's sending side and what the
    /// server writes.
    async fn start(
        config: GatewayConfig,
    ) -> (
        mpsc::Sender<Result<Message, String>>,
        mpsc::Receiver<Message>,
    ) {
        let gw = Gateway::new(
            config,
            Authenticator::new(&[1u8; 32]).unwrap(),
            Arc::new(applause_bus::InProcessBus::default()),
            Arc::new(Rooms),
            Arc::new(Acks),
            &prometheus::Registry::new(),
        )
        .unwrap();
        let info = RoomInfo {
            room_id: "r".into(),
            broadcaster_id: "b".into(),
            epoch: 1,
            live: true,
            published_seq: 0,
        };
        let room = gw.inner.joined_room(&info).await.unwrap();
        let session = Session {
            inner: gw.inner.clone(),
            room,
            info,
            principal: None,
            id: 1,
        };
        let (in_tx, mut in_rx) = mpsc::channel::<Result<Message, String>>(16);
        let (out_tx, out_rx) = mpsc::channel::<Message>(16);
        let stream = futures_util::stream::poll_fn(move |cx| in_rx.poll_recv(cx));
        let sink = tokio_util::sync::PollSender::new(out_tx).sink_map_err(|e| e.to_string());
        tokio::spawn(run(session, sink, stream));
        (in_tx, out_rx)
    }

    fn text(m: Option<Message>) -> serde_json::Value {
        match m {
            Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_then_closes_a_silent_peer() {
        let (_tx, mut rx) = start(GatewayConfig {
            ping_interval_ms: 1_000,
            idle_timeout_ms: 2_500,
            ..GatewayConfig::default()
        })
        .await;
        assert_eq!(text(rx.recv().await)["type"], "welcome");
        let mut pings = 0;
        loop {
            match rx.recv().await {
                Some(Message::Ping(_)) => pings += 1,
                Some(Message::Close(Some(f))) => {
                    assert_eq!((f.code, f.reason.as_str()), (close::NORMAL, "idle_timeout"));
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(pings, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_pings_and_closes_after_repeated_garbage() {
        let (tx, mut rx) = start(GatewayConfig {
            malformed_frames_max: 2,
            ..GatewayConfig::default()
        })
        .await;
        assert_eq!(text(rx.recv().await)["type"], "welcome");
        tx.send(Ok(Message::text(r#"{"type":"ping"}"#)))
            .await
            .unwrap();
        assert_eq!(text(rx.recv().await)["type"], "pong");
        tx.send(Ok(Message::text("{"))).await.unwrap();
        assert_eq!(text(rx.recv().await)["code"], "invalid_json");
        tx.send(Ok(Message::binary(vec![0]))).await.unwrap();
        assert_eq!(text(rx.recv().await)["code"], "invalid_request");
        match rx.recv().await {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, close::POLICY),
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }
}
