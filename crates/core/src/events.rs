//! Room events: what the gateway delivers to a room's connections.
//!
//! A producer (the gift service) renders each event **once** into the frame
//! viewers receive and, for gifts, a second frame for the room's broadcaster
//! (which also carries the split). The bus and the gateway move these frames
//! as opaque text; only `room_id`, `seq` and `epoch` are read on the way.

use serde::{Deserialize, Serialize};

/// A room event as it travels from the producer to the gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub room_id: String,
    pub epoch: u64,
    pub seq: u64,
    /// The JSON text frame every connection of the room receives.
    pub frame: String,
    /// The frame for the room's broadcaster, when it differs (gifts carry the split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broadcaster_frame: Option<String>,
    /// The room's broadcaster (who receives `broadcaster_frame`).
    pub broadcaster_id: String,
    /// When the event was committed, in milliseconds since the Unix epoch
    /// (for the commit-to-screen latency metric).
    pub committed_at_ms: i64,
    /// True for the last event of a room (`room_ended`).
    #[serde(default)]
    pub ends_room: bool,
}

/// The sender of a gift as viewers see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderView {
    pub id: String,
    pub name: String,
}

/// The split of a gift as its broadcaster sees it (amounts as decimal strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitView {
    pub store: String,
    pub broadcaster: String,
    pub platform: String,
}

/// The body of a room event, tagged by `type` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    Gift {
        gift_id: String,
        sender: SenderView,
        sticker_id: String,
        quantity: u32,
        amount: String,
        message: Option<String>,
        created_at: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        split: Option<SplitView>,
    },
    Ack {
        gift_id: String,
        sender_id: String,
        text: String,
        created_at: String,
    },
    Leaderboard {
        window: String,
        entries: Vec<LeaderboardEntryView>,
    },
    RedPacket {
        packet_id: String,
        sender: SenderView,
        total: String,
        count: u32,
        mode: String,
        expires_at: String,
    },
    RedPacketClaimed {
        packet_id: String,
        claimer: SenderView,
        amount: String,
        remaining_count: u32,
    },
    RedPacketExpired {
        packet_id: String,
        returned: String,
    },
    RoomEnded {
        ended_at: String,
    },
}

/// One leaderboard row as pushed to a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderboardEntryView {
    pub rank: u32,
    pub user_id: String,
    pub name: String,
    pub amount: String,
}

#[derive(Serialize)]
struct Frame<'a> {
    room_id: &'a str,
    epoch: u64,
    seq: u64,
    #[serde(flatten)]
    body: &'a EventBody,
}

/// Renders the JSON text frame of a room event.
pub fn render_frame(room_id: &str, epoch: u64, seq: u64, body: &EventBody) -> String {
    serde_json::to_string(&Frame {
        room_id,
        epoch,
        seq,
        body,
    })
    .expect("room events serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_type_room_epoch_and_seq() {
        let body = EventBody::RoomEnded {
            ended_at: "2026-01-01T00:00:00Z".into(),
        };
        let f = render_frame("r1", 7, 42, &body);
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "room_ended");
        assert_eq!(v["room_id"], "r1");
        assert_eq!(v["epoch"], 7);
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn split_only_when_present() {
        let mut body = EventBody::Gift {
            gift_id: "g".into(),
            sender: SenderView {
                id: "u".into(),
                name: "U".into(),
            },
            sticker_id: "rose".into(),
            quantity: 1,
            amount: "0.99".into(),
            message: None,
            created_at: "t".into(),
            split: None,
        };
        assert!(!render_frame("r", 1, 1, &body).contains("split"));
        if let EventBody::Gift { split, .. } = &mut body {
            *split = Some(SplitView {
                store: "0.30".into(),
                broadcaster: "0.48".into(),
                platform: "0.21".into(),
            });
        }
        assert!(render_frame("r", 1, 1, &body).contains("\"split\""));
    }
}
