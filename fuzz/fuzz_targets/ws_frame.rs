//! WebSocket client frames (`ClientFrame::parse`): never a panic; a refusal
//! is `invalid_json` or `invalid_request`; an accepted frame, written back as
//! JSON, parses to the same frame.
#![no_main]

use applause_gateway::protocol::ClientFrame;
use libfuzzer_sys::fuzz_target;

fn to_json(frame: &ClientFrame) -> String {
    match frame {
        ClientFrame::Ping => serde_json::json!({"type": "ping"}),
        ClientFrame::Resume { epoch, since_seq } => {
            serde_json::json!({"type": "resume", "epoch": epoch, "since_seq": since_seq})
        }
        ClientFrame::Ack { gift_id, text } => {
            serde_json::json!({"type": "ack", "gift_id": gift_id, "text": text})
        }
    }
    .to_string()
}

fuzz_target!(|data: &[u8]| {
    // The gateway only parses text frames, which are UTF-8 by the protocol.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ClientFrame::parse(text) {
        Ok(frame) => assert_eq!(ClientFrame::parse(&to_json(&frame)), Ok(frame)),
        Err(e) => {
            assert!(
                matches!(e.code, "invalid_json" | "invalid_request"),
                "{}",
                e.code
            );
            assert!(!e.message.is_empty());
        }
    }
});
