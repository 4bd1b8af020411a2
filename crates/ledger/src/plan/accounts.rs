//! Names of ledger accounts: the wallets, the stores, the broadcasters, the
//! platform, the outside world's funding side and red-packet escrows.

use applause_core::Channel;

pub fn wallet(user_id: &str, channel: Channel) -> String {
    format!("wallet:{user_id}:{channel}")
}
pub fn store(channel: Channel) -> String {
    format!("store:{channel}")
}
pub fn broadcaster(id: &str) -> String {
    format!("broadcaster:{id}")
}
pub const PLATFORM: &str = "platform:revenue";
/// The outside world's side of a top-up (money received through a store).
pub fn funding(channel: Channel) -> String {
    format!("funding:{channel}")
}
/// A red packet's escrow: the drop's total in, claims and the return out.
pub fn escrow(packet_id: &str) -> String {
    format!("escrow:{packet_id}")
}
