//! One WebSocket connection after the upgrade: registers with its room (the
//! welcome is queued first), spawns the writer, and runs the read loop —
//! client frames, server pings, the idle timeout and every way of closing.
//! Written against generic `AsyncRead`/`AsyncWrite` halves so tests drive it
//! through an in-memory duplex pipe with a real WebSocket client on the other
//! end (the gateway frames its own writes, see `outbox`).

use std::sync::Arc;

use applause_bus::History;
use applause_web::Principal;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior};

use crate::frame::{DecodeError, Decoder, Inbound};
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
pub(crate) async fn run<R, W>(mut session: Session, mut reader: R, writer: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let config = &session.inner.config;
    let outbox = Arc::new(Outbox::new(
        config.outbound_queue_bytes_max,
        Box::new(writer),
        config.write_mode(),
        session.inner.metrics.clone(),
    ));
    let writer = session.inner.tasks.spawn(run_writer(
        outbox.clone(),
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
            Some(&protocol::error(
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
    conn.read_loop(&mut reader).await;
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

/// What the read loop does with the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// Decoding frames.
    Frames,
    /// After a frame that cannot be read past (too big, a protocol error):
    /// bytes are read and dropped, so that closing the socket later does not
    /// reset the connection before the peer has read our close frame.
    Discard,
}

struct Conn<'a> {
    session: &'a Session,
    outbox: &'a Arc<Outbox>,
    malformed: u32,
    /// Live events are held since the welcome (see `resume_grace_ms`).
    held: bool,
}

impl Conn<'_> {
    async fn read_loop<R>(&mut self, reader: &mut R)
    where
        R: AsyncRead + Unpin,
    {
        let inner = &self.session.inner;
        let config = &inner.config;
        let chunk = config.read_buffer_bytes;
        let mut buf = BytesMut::with_capacity(chunk);
        let mut decoder = Decoder::new(config.inbound_frame_bytes_max);
        let mut reading = Reading::Frames;
        let mut last_seen = Instant::now();
        let mut ticker = tokio::time::interval_at(
            Instant::now() + config.ping_interval(),
            config.ping_interval(),
        );
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Once closing, keep reading (the peer's close reply) until this deadline.
        let mut closing_until: Option<Instant> = None;
        let grace_until = Instant::now() + config.resume_grace();
        loop {
            let deadline = closing_until.unwrap_or_else(|| Instant::now() + config.idle_timeout());
            if buf.capacity() - buf.len() < 64 {
                buf.reserve(chunk);
            }
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
                        self.outbox.push(OutFrame::ping());
                    }
                }
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        last_seen = Instant::now();
                        if reading == Reading::Discard {
                            buf.clear();
                            continue;
                        }
                        loop {
                            match decoder.next(&mut buf) {
                                Ok(Some(Inbound::Close(code))) => {
                                    // The peer's close, or its reply to ours.
                                    if closing_until.is_none() {
                                        self.outbox.close(Closing {
                                            code: code.filter(|c| is_sendable(*c)).unwrap_or(close::NORMAL),
                                            reason: "",
                                        }, None);
                                    }
                                    return;
                                }
                                Ok(Some(m)) => {
                                    if closing_until.is_none() {
                                        self.on_message(m).await;
                                    }
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    self.refuse(e);
                                    reading = Reading::Discard;
                                    buf.clear();
                                    closing_until = Some(Instant::now() + config.close_grace());
                                    break;
                                }
                            }
                        }
                        // A large frame grew the buffer; an idle connection should not keep it.
                        if buf.is_empty() && buf.capacity() > 4 * chunk {
                            buf = BytesMut::with_capacity(chunk);
                        }
                    }
                },
            }
        }
    }

    /// A client stream that cannot be read further closes with the code
    /// RFC 6455 names for it.
    fn refuse(&self, e: DecodeError) {
        match e {
            DecodeError::TooBig => self.too_big(),
            DecodeError::InvalidUtf8 => {
                self.count_error("invalid_utf8");
                self.close(close::INVALID_DATA, "invalid_utf8", None);
            }
            DecodeError::Protocol(why) => {
                tracing::debug!(why, "WebSocket protocol error");
                self.count_error("protocol_error");
                self.close(close::PROTOCOL_ERROR, "protocol_error", None);
            }
        }
    }

    fn close(&self, code: u16, reason: &'static str, error: Option<(&str, &str)>) {
        let frame = error.map(|(c, m)| protocol::error(c, m));
        self.outbox
            .close(Closing { code, reason }, frame.as_deref());
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
                .push(OutFrame::control(&protocol::error(code, message)));
        }
    }

    async fn on_message(&mut self, msg: Inbound) {
        match msg {
            Inbound::Text(text) => match ClientFrame::parse(&text) {
                Ok(frame) => self.on_frame(frame).await,
                Err(e) => self.malformed(e.code, &e.message),
            },
            Inbound::Binary => self.malformed("invalid_request", "binary frames are not supported"),
            Inbound::Ping(payload) => {
                self.outbox.push(OutFrame::pong(&payload));
            }
            // Any frame already counts as life; closes are handled by the loop.
            Inbound::Pong | Inbound::Close(_) => {}
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
                self.outbox.push(OutFrame::control(protocol::pong()));
            }
            ClientFrame::Resume { epoch, since_seq } => self.resume(epoch, since_seq).await,
            ClientFrame::Ack { gift_id, text } => {
                let Some(who) = &self.session.principal else {
                    self.count_error("unauthorized");
                    self.outbox.push(OutFrame::control(&protocol::error(
                        "unauthorized",
                        "sign in to acknowledge gifts",
                    )));
                    return;
                };
                if let Err(e) = self.session.inner.acks.ack(who, &gift_id, &text).await {
                    self.count_error(e.code.as_str());
                    self.outbox.push(OutFrame::control(&protocol::error(
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
                        .push(OutFrame::control(protocol::resync_required()));
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

/// Close codes a server may echo (RFC 6455 §7.4): not the reserved ones.
fn is_sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    //! The connection loop driven through channels instead of a socket, on
    //! tokio's paused clock (timeouts pass without waiting).

    use super::*;
    use crate::GatewayConfig;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::tungstenite::Message;

    type Client = tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>;

    /// Starts a connection on an in-memory pipe; returns a WebSocket client
    /// on its other end.
    async fn start(config: GatewayConfig) -> Client {
        let client = start_raw(config).await;
        tokio_tungstenite::WebSocketStream::from_raw_socket(client, Role::Client, None).await
    }

    /// The same, returning the client's end of the pipe as bytes.
    async fn start_raw(config: GatewayConfig) -> tokio::io::DuplexStream {
        let gw = crate::test_gateway::gateway(config);
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
        let (server, client) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(server);
        tokio::spawn(run(session, r, w));
        client
    }

    async fn next(c: &mut Client) -> Option<Message> {
        c.next().await.map(|m| m.expect("a valid frame"))
    }

    fn text(m: Option<Message>) -> serde_json::Value {
        match m {
            Some(Message::Text(t)) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pings_then_closes_a_silent_peer() {
        // A peer that never reads, so it answers no ping either (a
        // WebSocket client library would answer them as it reads).
        let mut c = start_raw(GatewayConfig {
            ping_interval_ms: 1_000,
            idle_timeout_ms: 2_500,
            ..GatewayConfig::default()
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut bytes)
            .await
            .unwrap();
        let frames = crate::frame::split_server_frames(&bytes);
        let ops: Vec<u8> = frames.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, [0x1, 0x9, 0x9, 0x8], "welcome, two pings, the close");
        let (_, close_payload) = &frames[3];
        assert_eq!(&close_payload[..2], &close::NORMAL.to_be_bytes());
        assert_eq!(&close_payload[2..], b"idle_timeout");
    }

    #[tokio::test(start_paused = true)]
    async fn answers_pings_and_closes_after_repeated_garbage() {
        let mut c = start(GatewayConfig {
            malformed_frames_max: 2,
            ..GatewayConfig::default()
        })
        .await;
        assert_eq!(text(next(&mut c).await)["type"], "welcome");
        c.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        assert_eq!(text(next(&mut c).await)["type"], "pong");
        // A WebSocket ping is answered with its payload.
        c.send(Message::Ping(b"hey".to_vec().into())).await.unwrap();
        match next(&mut c).await {
            Some(Message::Pong(p)) => assert_eq!(&p[..], b"hey"),
            other => panic!("expected a pong, got {other:?}"),
        }
        c.send(Message::text("{")).await.unwrap();
        assert_eq!(text(next(&mut c).await)["code"], "invalid_json");
        c.send(Message::binary(vec![0])).await.unwrap();
        assert_eq!(text(next(&mut c).await)["code"], "invalid_request");
        match next(&mut c).await {
            Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), close::POLICY),
            other => panic!("expected a 1008 close, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_close_is_echoed_and_ends_the_connection() {
        let mut c = start(GatewayConfig::default()).await;
        assert_eq!(text(next(&mut c).await)["type"], "welcome");
        c.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
            code: 4000.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
        match next(&mut c).await {
            Some(Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 4000),
            other => panic!("expected the echoed close, got {other:?}"),
        }
        assert!(next(&mut c).await.is_none(), "the server ends the stream");
    }
}
