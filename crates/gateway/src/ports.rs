//! What the gateway needs from the rest of the system, as traits the binary
//! implements and injects: room lookups and broadcaster acknowledgements.
//! The gateway never imports the gift service; these traits are the seam.

use applause_web::{ApiError, Principal};
use async_trait::async_trait;

/// A room as the gateway sees it. Rooms are immutable except `live`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomInfo {
    pub room_id: String,
    pub broadcaster_id: String,
    /// The room's event epoch: `seq` restarts only with a new epoch.
    pub epoch: u64,
    pub live: bool,
    /// The last `seq` the ledger records as published to the bus. A gateway
    /// joining the room starts no lower, even when the bus lost its record of
    /// the room (a restart, a Redis flush): the welcome then carries the
    /// room's real position and the next event follows without a resync.
    pub published_seq: u64,
}

/// Looks rooms up (the ledger backs it in production).
#[async_trait]
pub trait RoomDirectory: Send + Sync + 'static {
    /// The room, or `None` when it does not exist. An error means the lookup
    /// itself failed (the connection is refused with that error).
    async fn room(&self, room_id: &str) -> Result<Option<RoomInfo>, ApiError>;
}

/// Handles a broadcaster's acknowledgement sent over the WebSocket. The gift
/// service validates and stores it; the ack then reaches the room as a room
/// event through the bus, like every other event.
#[async_trait]
pub trait AckHandler: Send + Sync + 'static {
    async fn ack(&self, who: &Principal, gift_id: &str, text: &str) -> Result<(), ApiError>;
}
