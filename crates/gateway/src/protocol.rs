//! The wire protocol of SPEC §4 as the gateway speaks it: client frames it
//! parses, the server's own frames (welcome, pong, resync, error) and close codes.
//! Room events are not here: they arrive pre-rendered and travel as opaque text.

use serde::Deserialize;

/// Close codes the gateway sends.
pub mod close {
    /// The room ended, or the peer was idle past the timeout.
    pub const NORMAL: u16 = 1000;
    /// The gateway is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Repeated malformed frames.
    pub const POLICY: u16 = 1008;
    /// An inbound frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The client broke RFC 6455 (e.g. an unmasked frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The connection's outbound queue overflowed; the client may resume.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A frame a client may send.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Resume { epoch: u64, since_seq: u64 },
    Ack { gift_id: String, text: String },
    Ping,
}

/// Why a client frame was refused: the `code` of the `error` frame and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
}

impl ClientFrame {
    /// Parses a text frame; not JSON → `invalid_json`, JSON that is not one
    /// of the client frames → `invalid_request`.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| FrameError {
            code: "invalid_json",
            message: "frame is not valid JSON".into(),
        })?;
        // serde also reads a tagged enum from an array (`["ping"]`); the
        // protocol's frames are objects only.
        if !value.is_object() {
            return Err(FrameError {
                code: "invalid_request",
                message: "a frame is a JSON object".into(),
            });
        }
        serde_json::from_value(value).map_err(|e| FrameError {
            code: "invalid_request",
            message: format!("unsupported frame: {e}"),
        })
    }
}

/// `{"type":"welcome",…}`, the first frame of every connection.
pub fn welcome(room_id: &str, epoch: u64, seq: u64, server_time: &str) -> String {
    serde_json::json!({
        "type": "welcome",
        "room_id": room_id,
        "epoch": epoch,
        "seq": seq,
        "server_time": server_time,
    })
    .to_string()
}

/// `{"type":"pong"}`.
pub fn pong() -> &'static str {
    r#"{"type":"pong"}"#
}

/// `{"type":"resync_required"}`: the events after the client's position are gone.
pub fn resync_required() -> &'static str {
    r#"{"type":"resync_required"}"#
}

/// `{"type":"error","code","message"}`.
pub fn error(code: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "code": code, "message": message}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<ClientFrame, &str>) {
        let got = ClientFrame::parse(input).map_err(|e| e.code);
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn parses_client_frames() {
        check(r#"{"type":"ping"}"#, Ok(ClientFrame::Ping));
        check(
            r#"{"type":"resume","epoch":2,"since_seq":10}"#,
            Ok(ClientFrame::Resume {
                epoch: 2,
                since_seq: 10,
            }),
        );
        check(
            r#"{"type":"ack","gift_id":"g1","text":"thanks!"}"#,
            Ok(ClientFrame::Ack {
                gift_id: "g1".into(),
                text: "thanks!".into(),
            }),
        );
        check("not json", Err("invalid_json"));
        check(r#"{"type":"dance"}"#, Err("invalid_request"));
        check(
            r#"{"type":"resume","epoch":-1,"since_seq":1}"#,
            Err("invalid_request"),
        );
        check(r#"{"type":"ack","gift_id":"g1"}"#, Err("invalid_request"));
        check(r#"[1,2]"#, Err("invalid_request"));
        // Found by the frame property test: the array form of a frame.
        check(r#"["ping"]"#, Err("invalid_request"));
        check(r#"["resume",1,2]"#, Err("invalid_request"));
        check(r#"["ack","g1","thanks"]"#, Err("invalid_request"));
    }

    #[test]
    fn server_frames_are_json() {
        let w: serde_json::Value = serde_json::from_str(&welcome("r", 1, 5, "t")).unwrap();
        assert_eq!(w["type"], "welcome");
        assert_eq!(w["seq"], 5);
        let e: serde_json::Value =
            serde_json::from_str(&error("x", "a \"quoted\" message")).unwrap();
        assert_eq!(e["code"], "x");
        for f in [pong(), resync_required()] {
            serde_json::from_str::<serde_json::Value>(f).unwrap();
        }
    }
}
