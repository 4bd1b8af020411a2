//! The WebSocket framing of RFC 6455 as the gateway needs it: server frames
//! encoded once into shared bytes (unmasked, so one event's frame is the same
//! bytes for every socket), and an incremental decoder of client frames that
//! unmasks, reassembles fragments and refuses anything over the inbound limit
//! before reading it.

use bytes::{Buf, Bytes, BytesMut};

const FIN: u8 = 0x80;
const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// The largest header a server frame has: 2 bytes plus a 64-bit length.
const HEADER_MAX: usize = 10;

/// One whole, final, unmasked frame: header and payload in one buffer.
fn encode(opcode: u8, payload: &[u8]) -> Bytes {
    let len = payload.len();
    let mut out = Vec::with_capacity(len + HEADER_MAX);
    out.push(FIN | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(short) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&short.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// A text frame.
pub(crate) fn text(payload: &str) -> Bytes {
    encode(OP_TEXT, payload.as_bytes())
}

/// A ping with no payload.
pub(crate) fn ping() -> Bytes {
    Bytes::from_static(&[FIN | OP_PING, 0])
}

/// The pong answering a ping (control payloads are at most 125 bytes, which
/// the decoder enforces).
pub(crate) fn pong(payload: &[u8]) -> Bytes {
    encode(OP_PONG, payload)
}

/// A close frame with a code and a short reason.
pub(crate) fn close(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    // A control frame carries at most 125 bytes; our reasons are short names.
    let room = 123.min(reason.len());
    payload.extend_from_slice(&reason.as_bytes()[..room]);
    encode(OP_CLOSE, &payload)
}

/// A complete message from the client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inbound {
    Text(String),
    /// A binary message (refused by the protocol; only its arrival matters).
    Binary,
    Ping(Bytes),
    Pong,
    /// The peer's close, with its code when it sent one.
    Close(Option<u16>),
}

/// Why the client's byte stream cannot be read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A frame or message over the inbound limit (close 1009).
    TooBig,
    /// Invalid text (close 1007).
    InvalidUtf8,
    /// Anything else RFC 6455 forbids (close 1002).
    Protocol(&'static str),
}

/// Decodes client frames from a byte buffer, one message at a time.
pub(crate) struct Decoder {
    max: usize,
    /// A fragmented message in progress: whether it is text, and its bytes.
    partial: Option<(bool, Vec<u8>)>,
}

impl Decoder {
    /// A decoder refusing messages (and frames) over `max` payload bytes.
    pub(crate) fn new(max: usize) -> Self {
        Self { max, partial: None }
    }

    /// Takes the next complete message out of `buf`. `Ok(None)` means more
    /// bytes are needed (the buffer is then reserved for the frame in
    /// progress). After an error the stream cannot be decoded further.
    pub(crate) fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, DecodeError> {
        loop {
            let Some((head, len)) = header(buf)? else {
                return Ok(None);
            };
            let b0 = buf[0];
            let fin = b0 & FIN != 0;
            let opcode = b0 & 0x0F;
            if b0 & 0x70 != 0 {
                return Err(DecodeError::Protocol("reserved bits set"));
            }
            if buf[1] & 0x80 == 0 {
                return Err(DecodeError::Protocol("client frames must be masked"));
            }
            let control = opcode & 0x08 != 0;
            if control {
                if !fin || len > 125 {
                    return Err(DecodeError::Protocol("invalid control frame"));
                }
            } else {
                let before = self.partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
                if before + len > self.max as u64 {
                    return Err(DecodeError::TooBig);
                }
            }
            // Both bounded above (control ≤ 125, data ≤ max), so this fits.
            let total = head + len as usize;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            let mask = [buf[head - 4], buf[head - 3], buf[head - 2], buf[head - 1]];
            buf.advance(head);
            let mut payload = buf.split_to(len as usize);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            match opcode {
                OP_PING => return Ok(Some(Inbound::Ping(payload.freeze()))),
                OP_PONG => return Ok(Some(Inbound::Pong)),
                OP_CLOSE => {
                    return match payload.len() {
                        0 => Ok(Some(Inbound::Close(None))),
                        1 => Err(DecodeError::Protocol("invalid close frame")),
                        _ => Ok(Some(Inbound::Close(Some(u16::from_be_bytes([
                            payload[0], payload[1],
                        ]))))),
                    };
                }
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(DecodeError::Protocol(
                            "a new message inside a fragmented one",
                        ));
                    }
                    if fin {
                        return finish(opcode == OP_TEXT, payload.to_vec()).map(Some);
                    }
                    self.partial = Some((opcode == OP_TEXT, payload.to_vec()));
                }
                OP_CONTINUATION => {
                    let Some((_, bytes)) = self.partial.as_mut() else {
                        return Err(DecodeError::Protocol("a continuation without a message"));
                    };
                    bytes.extend_from_slice(&payload);
                    if fin {
                        let (is_text, bytes) = self.partial.take().expect("checked above");
                        return finish(is_text, bytes).map(Some);
                    }
                }
                _ => return Err(DecodeError::Protocol("unknown opcode")),
            }
        }
    }
}

/// The header length (mask included) and payload length of the frame at the
/// start of `buf`, once enough of it is there.
fn header(buf: &BytesMut) -> Result<Option<(usize, u64)>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (ext, len) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (2, u64::from(u16::from_be_bytes([buf[2], buf[3]])))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(b);
            if len >> 63 != 0 {
                return Err(DecodeError::Protocol("invalid frame length"));
            }
            (8, len)
        }
        n => (0, u64::from(n)),
    };
    Ok(Some((2 + ext + 4, len)))
}

fn finish(is_text: bool, bytes: Vec<u8>) -> Result<Inbound, DecodeError> {
    if !is_text {
        return Ok(Inbound::Binary);
    }
    String::from_utf8(bytes)
        .map(Inbound::Text)
        .map_err(|_| DecodeError::InvalidUtf8)
}

/// Splits a server byte stream into `(opcode, payload)` frames (tests).
#[cfg(test)]
pub(crate) fn split_server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0, "server frames are unmasked");
        let (head, len) = match bytes[1] & 0x7F {
            126 => (4, u16::from_be_bytes([bytes[2], bytes[3]]) as usize),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&bytes[2..10]);
                (10, u64::from_be_bytes(b) as usize)
            }
            n => (2, n as usize),
        };
        assert!(bytes.len() >= head + len, "a whole frame");
        out.push((bytes[0] & 0x0F, bytes[head..head + len].to_vec()));
        bytes = &bytes[head + len..];
    }
    assert!(bytes.is_empty(), "no trailing bytes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    fn tungstenite_bytes(frame: Frame) -> Vec<u8> {
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    #[test]
    fn text_frames_match_tungstenite_at_every_length_boundary() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = "a".repeat(len);
            let ours = text(&payload);
            let theirs = tungstenite_bytes(Frame::message(
                payload.clone().into_bytes(),
                OpCode::Data(Data::Text),
                true,
            ));
            assert_eq!(&ours[..], &theirs[..], "length {len}");
            let header = match len {
                0..=125 => 2,
                126..=65_535 => 4,
                _ => 10,
            };
            assert_eq!(ours.len(), len + header, "length {len}");
        }
    }

    #[test]
    fn control_frames_match_tungstenite() {
        assert_eq!(&ping()[..], &tungstenite_bytes(Frame::ping(Vec::new()))[..]);
        assert_eq!(
            &pong(b"abc")[..],
            &tungstenite_bytes(Frame::pong(b"abc".to_vec()))[..]
        );
        let theirs = tungstenite_bytes(Frame::close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 4008.into(),
                reason: "slow_consumer".into(),
            },
        )));
        assert_eq!(&close(4008, "slow_consumer")[..], &theirs[..]);
    }

    /// A client frame as tungstenite's client would send it (masked).
    fn client(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some([0x11, 0x22, 0x33, 0x44]),
            ..FrameHeader::default()
        };
        tungstenite_bytes(Frame::from_payload(header, payload.to_vec().into()))
    }

    fn decode_all(bytes: &[u8], max: usize) -> Vec<Result<Inbound, DecodeError>> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Byte by byte: every split point of every frame is exercised.
        for b in bytes {
            buf.extend_from_slice(&[*b]);
            loop {
                match d.next(&mut buf) {
                    Ok(Some(m)) => out.push(Ok(m)),
                    Ok(None) => break,
                    Err(e) => {
                        out.push(Err(e));
                        return out;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn decodes_masked_client_frames_split_anywhere() {
        let text_op = OpCode::Data(Data::Text);
        let mut stream = Vec::new();
        stream.extend(client(text_op, true, br#"{"type":"ping"}"#));
        stream.extend(client(OpCode::Control(Control::Ping), true, b"hi"));
        // A fragmented text message with a ping between its fragments.
        stream.extend(client(text_op, false, b"hel"));
        stream.extend(client(OpCode::Control(Control::Pong), true, b""));
        stream.extend(client(OpCode::Data(Data::Continue), false, b"lo "));
        stream.extend(client(
            OpCode::Data(Data::Continue),
            true,
            "wörld".as_bytes(),
        ));
        stream.extend(client(OpCode::Data(Data::Binary), true, &[1, 2, 3]));
        let long = "x".repeat(300);
        stream.extend(client(text_op, true, long.as_bytes()));
        stream.extend(client(
            OpCode::Control(Control::Close),
            true,
            &1000u16.to_be_bytes(),
        ));
        assert_eq!(
            decode_all(&stream, 4096),
            vec![
                Ok(Inbound::Text(r#"{"type":"ping"}"#.into())),
                Ok(Inbound::Ping(Bytes::from_static(b"hi"))),
                Ok(Inbound::Pong),
                Ok(Inbound::Text("hello wörld".into())),
                Ok(Inbound::Binary),
                Ok(Inbound::Text(long)),
                Ok(Inbound::Close(Some(1000))),
            ]
        );
    }

    fn first_error(bytes: Vec<u8>, max: usize) -> Option<DecodeError> {
        decode_all(&bytes, max).into_iter().find_map(Result::err)
    }

    #[test]
    fn refuses_what_rfc_6455_and_the_limit_forbid() {
        let text_op = OpCode::Data(Data::Text);
        // Over the limit in one frame: refused from the header alone.
        let big = client(text_op, true, &[b'x'; 5000]);
        assert_eq!(
            first_error(big[..8].to_vec(), 4096),
            Some(DecodeError::TooBig)
        );
        // Over the limit across fragments.
        let mut frags = client(text_op, false, &[b'x'; 3000]);
        frags.extend(client(OpCode::Data(Data::Continue), true, &[b'x'; 3000]));
        assert_eq!(first_error(frags, 4096), Some(DecodeError::TooBig));
        // Exactly at the limit is fine.
        assert_eq!(
            first_error(client(text_op, true, &[b'x'; 4096]), 4096),
            None
        );
        // Unmasked.
        assert!(matches!(
            first_error(text("hi").to_vec(), 4096),
            Some(DecodeError::Protocol(_))
        ));
        // Invalid UTF-8.
        assert_eq!(
            first_error(client(text_op, true, &[0xFF, 0xFE]), 4096),
            Some(DecodeError::InvalidUtf8)
        );
        // A fragmented control frame, a long control frame, a stray continuation.
        for bad in [
            client(OpCode::Control(Control::Ping), false, b""),
            client(OpCode::Control(Control::Ping), true, &[0; 126]),
            client(OpCode::Data(Data::Continue), true, b"x"),
            client(OpCode::Control(Control::Close), true, b"x"),
            client(OpCode::Data(Data::Reserved(3)), true, b"x"),
        ] {
            assert!(
                matches!(first_error(bad, 4096), Some(DecodeError::Protocol(_))),
                "should be refused"
            );
        }
    }

    #[test]
    fn server_frames_split_back_into_their_payloads() {
        let mut stream = Vec::new();
        for len in [0, 125, 126, 65_535, 65_536] {
            stream.extend_from_slice(&text(&"b".repeat(len)));
        }
        stream.extend_from_slice(&close(1001, "going_away"));
        let frames = split_server_frames(&stream);
        let lens: Vec<usize> = frames.iter().map(|(_, p)| p.len()).collect();
        assert_eq!(lens, [0, 125, 126, 65_535, 65_536, 12]);
        assert_eq!(frames[5].0, OP_CLOSE);
    }
}
