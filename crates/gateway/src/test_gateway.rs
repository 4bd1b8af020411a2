//! A gateway for unit tests: an in-process bus, no rooms, acks accepted.

use std::sync::Arc;

use applause_web::{ApiError, Authenticator, Principal};

use crate::ports::{AckHandler, RoomDirectory, RoomInfo};
use crate::{Gateway, GatewayConfig};

struct NoRooms;

#[async_trait::async_trait]
impl RoomDirectory for NoRooms {
    async fn room(&self, _: &str) -> Result<Option<RoomInfo>, ApiError> {
        Ok(None)
    }
}

struct AnyAck;

#[async_trait::async_trait]
impl AckHandler for AnyAck {
    async fn ack(&self, _: &Principal, _: &str, _: &str) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Builds it on the current runtime (call inside one).
pub(crate) fn gateway(config: GatewayConfig) -> Gateway {
    Gateway::new(
        config,
        Authenticator::new(&[1u8; 32]).unwrap(),
        Arc::new(applause_bus::InProcessBus::default()),
        Arc::new(NoRooms),
        Arc::new(AnyAck),
        &prometheus::Registry::new(),
    )
    .unwrap()
}
