//! The error vocabulary of the API: every stable `code` a client can see and
//! the HTTP status it travels with. One table, used by every service.

use serde::{Deserialize, Serialize};

/// Declares [`ErrorCode`] and its [`ErrorCode::ALL`] from one list, so the
/// list can never miss a code.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $code:ident,)*) => {
        /// A stable, client-visible error code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ErrorCode {
            $($(#[$doc])* $code,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order (the API description lists them).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$code,)*];
        }
    };
}

error_codes! {
    // 400: the request itself is wrong.
    InvalidRequest,
    InvalidJson,
    InvalidAmount,
    InvalidQuantity,
    InvalidMessage,
    InvalidChannel,
    InvalidUserId,
    InvalidReceiptId,
    InvalidTitle,
    InvalidQuery,
    InvalidRedPacket,
    IdempotencyKeyRequired,
    // 401 / 403: who is asking.
    Unauthorized,
    Forbidden,
    SelfGift,
    // 402
    InsufficientFunds,
    // 404
    NotFound,
    RoomNotFound,
    UnknownSticker,
    GiftNotFound,
    RedPacketNotFound,
    // 405 / 409 / 410 / 413 / 415
    MethodNotAllowed,
    RoomNotLive,
    IdempotencyKeyInFlight,
    AlreadyAcknowledged,
    AlreadyClaimed,
    AlreadyRefunded,
    RedPacketGone,
    PayloadTooLarge,
    UnsupportedMediaType,
    // 422
    IdempotencyKeyReused,
    MessageRejected,
    // 429
    RateLimited,
    // 5xx: something broke inside; nothing was charged.
    Unavailable,
    Internal,
}

impl ErrorCode {
    /// The HTTP status that carries this code.
    pub fn status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest
            | InvalidJson
            | InvalidAmount
            | InvalidQuantity
            | InvalidMessage
            | InvalidChannel
            | InvalidUserId
            | InvalidReceiptId
            | InvalidTitle
            | InvalidQuery
            | InvalidRedPacket
            | IdempotencyKeyRequired => 400,
            Unauthorized => 401,
            InsufficientFunds => 402,
            Forbidden | SelfGift => 403,
            NotFound | RoomNotFound | UnknownSticker | GiftNotFound | RedPacketNotFound => 404,
            MethodNotAllowed => 405,
            RoomNotLive
            | IdempotencyKeyInFlight
            | AlreadyAcknowledged
            | AlreadyClaimed
            | AlreadyRefunded => 409,
            RedPacketGone => 410,
            PayloadTooLarge => 413,
            UnsupportedMediaType => 415,
            IdempotencyKeyReused | MessageRejected => 422,
            RateLimited => 429,
            Internal => 500,
            Unavailable => 503,
        }
    }

    /// The snake_case code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            InvalidJson => "invalid_json",
            InvalidAmount => "invalid_amount",
            InvalidQuantity => "invalid_quantity",
            InvalidMessage => "invalid_message",
            InvalidChannel => "invalid_channel",
            InvalidUserId => "invalid_user_id",
            InvalidReceiptId => "invalid_receipt_id",
            InvalidTitle => "invalid_title",
            InvalidQuery => "invalid_query",
            InvalidRedPacket => "invalid_red_packet",
            IdempotencyKeyRequired => "idempotency_key_required",
            Unauthorized => "unauthorized",
            Forbidden => "forbidden",
            SelfGift => "self_gift",
            InsufficientFunds => "insufficient_funds",
            NotFound => "not_found",
            RoomNotFound => "room_not_found",
            UnknownSticker => "unknown_sticker",
            GiftNotFound => "gift_not_found",
            RedPacketNotFound => "red_packet_not_found",
            MethodNotAllowed => "method_not_allowed",
            RoomNotLive => "room_not_live",
            IdempotencyKeyInFlight => "idempotency_key_in_flight",
            AlreadyAcknowledged => "already_acknowledged",
            AlreadyClaimed => "already_claimed",
            AlreadyRefunded => "already_refunded",
            RedPacketGone => "red_packet_gone",
            PayloadTooLarge => "payload_too_large",
            UnsupportedMediaType => "unsupported_media_type",
            IdempotencyKeyReused => "idempotency_key_reused",
            MessageRejected => "message_rejected",
            RateLimited => "rate_limited",
            Unavailable => "unavailable",
            Internal => "internal",
        }
    }

    /// Parses a wire code back (used when replaying a stored outcome).
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        serde_json::from_value(serde_json::Value::String(code.to_owned())).ok()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_code_once() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(*code), "{code} listed twice");
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(*code));
        }
        assert!(ErrorCode::ALL.contains(&ErrorCode::Internal));
    }

    #[test]
    fn wire_names_round_trip() {
        for code in [
            ErrorCode::InsufficientFunds,
            ErrorCode::IdempotencyKeyInFlight,
            ErrorCode::SelfGift,
            ErrorCode::RedPacketGone,
        ] {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
        }
        assert_eq!(ErrorCode::InsufficientFunds.status(), 402);
        assert_eq!(ErrorCode::IdempotencyKeyReused.status(), 422);
        assert_eq!(ErrorCode::from_wire("nope"), None);
    }
}
