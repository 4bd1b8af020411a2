//! Applause gateway: the WebSocket fan-out of SPEC §4 — rooms, connections,
//! history and resume, the slow-consumer policy and broadcaster acks.
//!
//! Room events arrive from the [`applause_bus::EventBus`] pre-rendered; each
//! becomes a whole encoded WebSocket frame once (server frames are unmasked,
//! so the same bytes go to every socket), written straight to each
//! connection's socket by the fan-out while the socket has room. Each
//! connection has a byte-bounded queue for what the socket did not take and
//! one writer task that drains it, many frames per vectored write. The gateway never imports
//! the gift service: rooms and acks come through [`RoomDirectory`] and
//! [`AckHandler`], implemented by the binary.
//!
//! Fan-out rounds: one dispatcher takes whatever bus messages have queued up
//! and gives each connection a room's consecutive events in one write; a
//! room of 100 events/s and more first waits a short adaptive window for
//! more of its events (bounded by `fanout_coalesce_ms`, once per round, never
//! on top of a backlog), and a heavy room (`fanout_heavy_deliveries_min`
//! deliveries a second) waits for its next event when it is due within
//! `fanout_heavy_coalesce_ms` (see `dispatch`). Serve the router on
//! [`nodelay_listener`], so no write waits for a viewer's delayed ACK.
//!
//! Delivery: the dispatcher keeps each room's last delivered `seq`, drops
//! duplicates, and fills gaps (or a bus reconnect) from the bus's history;
//! events lost for good send `resync_required` to the room's connections.
//!
//! Resume: `{"type":"resume","epoch","since_seq"}` queues, in order, every
//! event after `since_seq` up to the connection's current position (from this
//! gateway's ring, else from the bus's history), and live events follow. A
//! client that sends it right after connecting gets exactly what it missed;
//! live frames that reached it between the welcome and the resume are sent
//! again within the replay, so a client keeps the rule "process `seq ==
//! last + 1`, skip `seq <= last`". Past the window, or with another epoch,
//! the answer is `{"type":"resync_required"}`.
//!
//! Wiring:
//! ```text
//! let gw = Gateway::new(config, auth, bus, rooms, acks, &registry)?;
//! let app = gw.router().merge(other_routes);
//! let listener = applause_gateway::nodelay_listener(listener);
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
//!     .with_graceful_shutdown(async move { stop.await; gw.shutdown().await })
//!     .await?;
//! ```

mod config;
mod connection;
mod dispatch;
mod frame;
mod gateway;
mod handshake;
mod limits;
mod metrics;
mod outbox;
mod ports;
pub mod protocol;
mod room;
mod server;
#[cfg(test)]
mod test_gateway;

pub use config::GatewayConfig;
pub use gateway::{Gateway, GatewayError, Spawner};
pub use ports::{AckHandler, RoomDirectory, RoomInfo};
pub use server::nodelay_listener;
