//! Gift purchases, gift reads and acknowledgements.
//!
//! A purchase is validated completely before the ledger sees it; the price
//! comes from the catalog, the buyer from the token. The `Idempotency-Key`
//! makes it safe to retry: a key in flight here answers 409, a known key
//! replays its stored outcome (byte-identical), a key reused with another
//! body answers 422. The ledger re-checks the key under its lock, so a race
//! between nodes still charges once.

use std::collections::HashSet;
use std::time::Instant;

use applause_core::ids::{is_valid_object_id, is_valid_text};
use applause_core::money::checked_total;
use applause_core::ErrorCode;
use applause_ledger::{
    AckCmd, AckOutcome, Ledger, LedgerError, PurchaseCmd, PurchaseOutcome, StoredOutcome,
};
use applause_web::{ApiError, Principal};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::idempotency::{self, key_reused, InFlight};
use crate::limits::contains_blocked;
use crate::params::ObjectId;
use crate::render::{json, json_response};
use crate::views::{Acked, GiftCreated, GiftView};
use crate::{body, principal, GiftService, Id};

/// Gift messages and acknowledgements: at most this many characters.
pub const TEXT_CHARS_MAX: usize = 200;
/// The most stickers of one kind in one purchase.
pub const QUANTITY_MAX: u64 = 9_999;

pub(crate) fn ledger_error(e: LedgerError) -> ApiError {
    match e {
        LedgerError::Unavailable(m) => ApiError::unavailable(m),
        other => ApiError::internal(other),
    }
}

/// What to buy. Price and split come from the server's catalog and policy
/// only; a field that tries to set them (or any unknown field) is a 400.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Purchase {
    /// A sticker id of the catalog (`GET /v1/stickers`).
    #[schema(min_length = 1, max_length = 64, example = "rose")]
    sticker_id: String,
    /// How many stickers: a whole number from 1 to 9999.
    #[schema(value_type = u32, minimum = 1, maximum = 9999, example = 1)]
    quantity: serde_json::Value,
    /// Shown with the gift: at most 200 characters, no control characters.
    #[serde(default)]
    #[schema(max_length = 200)]
    message: Option<String>,
}

applause_web::api_errors!(
    PurchaseErrors = [
        IdempotencyKeyRequired,
        InvalidJson,
        InvalidRequest,
        InvalidQuantity,
        InvalidMessage,
        Unauthorized,
        InsufficientFunds,
        SelfGift,
        RoomNotFound,
        UnknownSticker,
        RoomNotLive,
        IdempotencyKeyInFlight,
        PayloadTooLarge,
        UnsupportedMediaType,
        IdempotencyKeyReused,
        MessageRejected,
        RateLimited,
        Unavailable,
    ]
);

/// Buy a gift and send it into a live room.
///
/// Any signed-in user but the room's broadcaster (403 `self_gift`). The
/// price is drawn from the sender's wallet (per channel, in the policy's
/// order) and split between store, broadcaster and platform. A replay with
/// the same `Idempotency-Key` and body answers the original status and
/// byte-identical body (also a failure that depended on state); the same
/// key with another body is 422, while the first is in flight 409.
#[utoipa::path(
    post,
    path = "/v1/rooms/{room_id}/gifts",
    tag = "gifts",
    operation_id = "purchase_gift",
    params(
        ("room_id" = inline(ObjectId), Path, description = "The room."),
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255,
            pattern = "^[!-~]([ -~]*[!-~])?$",
            description = "1–255 printable ASCII characters; the purchase's identity for retries."),
    ),
    request_body(content = Purchase, content_type = "application/json"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Bought and sent (or the replay of that answer).",
            body = GiftCreated<'_>,
            links(
                ("GetGift" = (operation_id = "get_gift",
                    parameters(("gift_id" = "$response.body#/gift_id")))),
                ("AckGift" = (operation_id = "ack_gift",
                    parameters(("gift_id" = "$response.body#/gift_id")))),
                ("RefundGift" = (operation_id = "refund_gift",
                    parameters(("gift_id" = "$response.body#/gift_id")))),
            )),
        PurchaseErrors,
    )
)]
pub(crate) async fn purchase(
    State(svc): State<GiftService>,
    Id(room_id): Id,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    let started = Instant::now();
    let result = purchase_inner(&svc, room_id, headers, raw).await;
    let m = &svc.0.metrics;
    m.purchase_seconds.observe(started.elapsed().as_secs_f64());
    let label = match &result {
        Ok((_, true)) => "replayed",
        Ok((_, false)) => "created",
        Err(e) => e.code.as_str(),
    };
    m.purchases.with_label_values(&[label]).inc();
    match result {
        Ok((resp, _)) => resp,
        Err(e) => e.into_response(),
    }
}

/// The purchase; `Ok((response, replayed))`.
async fn purchase_inner(
    svc: &GiftService,
    room_id: String,
    headers: HeaderMap,
    raw: Body,
) -> Result<(Response, bool), ApiError> {
    let who = principal(svc, &headers)?;
    let key = idempotency::key(&headers)?;
    if let Err(retry_after) = svc.0.limiter.take(&who.user_id) {
        return Err(
            ApiError::new(ErrorCode::RateLimited, "too many gifts; slow down")
                .with_retry_after(retry_after),
        );
    }
    let req: Purchase = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    let quantity = req
        .quantity
        .as_u64()
        .filter(|q| (1..=QUANTITY_MAX).contains(q))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuantity,
                "quantity must be a whole number from 1 to 9999",
            )
        })? as u32;
    if let Some(m) = &req.message {
        if !is_valid_text(m, TEXT_CHARS_MAX) {
            return Err(ApiError::new(
                ErrorCode::InvalidMessage,
                "message must be at most 200 characters without control characters",
            ));
        }
        if contains_blocked(m, &svc.0.config.blocked_words) {
            return Err(ApiError::new(
                ErrorCode::MessageRejected,
                "the message contains a blocked word",
            ));
        }
    }
    if !is_valid_object_id(&room_id) {
        return Err(ErrorCode::RoomNotFound.into());
    }
    let sticker = svc
        .0
        .catalog
        .get(&req.sticker_id)
        .ok_or_else(|| ApiError::new(ErrorCode::UnknownSticker, "no such sticker"))?;
    let amount_minor = checked_total(sticker.price_minor, quantity)
        .map_err(|_| ApiError::new(ErrorCode::InvalidQuantity, "price × quantity is too large"))?;
    let message = req.message.filter(|m| !m.is_empty());
    let request_hash = request_hash(&room_id, &sticker.id, quantity, message.as_deref());

    let _guard = InFlight::enter(&svc.0.in_flight, &who.user_id, &key)?;

    // No read before the committer: it looks the key up under its lock in
    // the same transaction anyway, and a read per purchase would cost a pool
    // round trip on the hot path for the rare replay.
    let outcome = svc
        .0
        .ledger
        .purchase(PurchaseCmd {
            sender_id: who.user_id.clone(),
            sender_name: who.name.clone(),
            room_id,
            sticker_id: sticker.id.clone(),
            quantity,
            amount_minor,
            message,
            idempotency_key: key,
            request_hash,
        })
        .await
        .map_err(ledger_error)?;
    match outcome {
        PurchaseOutcome::Charged(gift, _) => Ok((
            json_response(
                StatusCode::CREATED,
                crate::render::gift_created(&gift, svc.0.ledger.currency()),
            ),
            false,
        )),
        PurchaseOutcome::Rejected(code) => Err(code.into()),
        PurchaseOutcome::Replay(stored) => replay(svc, &stored).await.map(|r| (r, true)),
        PurchaseOutcome::KeyReused => Err(key_reused()),
    }
}

async fn replay(svc: &GiftService, stored: &StoredOutcome) -> Result<Response, ApiError> {
    match stored {
        StoredOutcome::Gift(id) => {
            let gift = svc
                .0
                .ledger
                .gift(id)
                .await
                .map_err(ledger_error)?
                .ok_or_else(|| ApiError::internal(format!("stored gift {id} is missing")))?;
            Ok(json_response(
                StatusCode::CREATED,
                crate::render::gift_created(&gift, svc.0.ledger.currency()),
            ))
        }
        // The same code renders the same message: a replayed failure is byte-identical.
        StoredOutcome::Rejected(code) => Err((*code).into()),
    }
}

/// What makes two requests "the same" for an idempotency key.
fn request_hash(room_id: &str, sticker_id: &str, quantity: u32, message: Option<&str>) -> String {
    let mut h = Sha256::new();
    for part in [
        room_id,
        sticker_id,
        &quantity.to_string(),
        message.unwrap_or(""),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update([u8::from(message.is_some())]);
    hex::encode(h.finalize())
}

applause_web::api_errors!(GetGiftErrors = [Unauthorized, Forbidden, GiftNotFound, Unavailable]);

/// Read a gift, with its acknowledgement and refund.
///
/// Its sender, its room's broadcaster, finance and admin; anyone else 403.
#[utoipa::path(
    get,
    path = "/v1/gifts/{gift_id}",
    tag = "gifts",
    operation_id = "get_gift",
    params(("gift_id" = inline(ObjectId), Path, description = "The gift.")),
    security(("bearer" = [])),
    responses((status = 200, description = "The gift.", body = GiftView<'_>), GetGiftErrors)
)]
pub(crate) async fn get(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(gift_id): Id,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if !is_valid_object_id(&gift_id) {
        return Err(ErrorCode::GiftNotFound.into());
    }
    let gift = svc
        .0
        .ledger
        .gift(&gift_id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| ApiError::from(ErrorCode::GiftNotFound))?;
    let allowed = who.role.reads_finance()
        || who.user_id == gift.sender_id
        || who.user_id == gift.broadcaster_id;
    if !allowed {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this gift is not yours",
        ));
    }
    Ok(json(
        StatusCode::OK,
        &crate::render::gift_view(&gift, svc.0.ledger.currency()),
    ))
}

/// A thank-you or an answer to the gift's message.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ack {
    /// 1–200 characters, no control characters.
    #[schema(min_length = 1, max_length = 200, example = "thank you!")]
    text: String,
}

applause_web::api_errors!(
    AckErrors = [
        InvalidJson,
        InvalidRequest,
        InvalidMessage,
        Unauthorized,
        Forbidden,
        GiftNotFound,
        AlreadyAcknowledged,
        PayloadTooLarge,
        UnsupportedMediaType,
        MessageRejected,
        Unavailable,
    ]
);

/// Acknowledge a gift; the room sees it. Once per gift.
///
/// The gift's room's broadcaster only (403 for anyone else).
#[utoipa::path(
    post,
    path = "/v1/gifts/{gift_id}/ack",
    tag = "gifts",
    operation_id = "ack_gift",
    params(("gift_id" = inline(ObjectId), Path, description = "The gift.")),
    request_body(content = Ack, content_type = "application/json"),
    security(("bearer" = ["broadcaster"])),
    responses((status = 200, description = "Acknowledged.", body = Acked<'_>), AckErrors)
)]
pub(crate) async fn ack_http(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(gift_id): Id,
    raw: Body,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    let req: Ack = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    acknowledge(
        &svc.0.ledger,
        &svc.0.config.blocked_words,
        &who,
        &gift_id,
        &req.text,
    )
    .await?;
    Ok(json(
        StatusCode::OK,
        &Acked {
            gift_id: &gift_id,
            text: &req.text,
        },
    ))
}

/// Acknowledges a gift on behalf of its room's broadcaster: the text rules,
/// the blocked words, then the ledger (which checks the broadcaster under
/// the gift's lock). The HTTP endpoint and the gateway's WebSocket `ack`
/// (through the binary's `AckHandler`) both end here.
pub async fn acknowledge(
    ledger: &Ledger,
    blocked_words: &HashSet<String>,
    who: &Principal,
    gift_id: &str,
    text: &str,
) -> Result<AckOutcome, ApiError> {
    if text.trim().is_empty() || !is_valid_text(text, TEXT_CHARS_MAX) {
        return Err(ApiError::new(
            ErrorCode::InvalidMessage,
            "text must be 1–200 characters without control characters",
        ));
    }
    if contains_blocked(text, blocked_words) {
        return Err(ApiError::new(
            ErrorCode::MessageRejected,
            "the text contains a blocked word",
        ));
    }
    if !is_valid_object_id(gift_id) {
        return Err(ErrorCode::GiftNotFound.into());
    }
    let outcome = ledger
        .ack(AckCmd {
            gift_id: gift_id.to_owned(),
            broadcaster_id: who.user_id.clone(),
            text: text.to_owned(),
        })
        .await
        .map_err(ledger_error)?;
    match outcome {
        AckOutcome::Acked(_) => Ok(outcome),
        AckOutcome::AlreadyAcked => Err(ApiError::new(
            ErrorCode::AlreadyAcknowledged,
            "this gift was already acknowledged",
        )),
        AckOutcome::NotFound => Err(ErrorCode::GiftNotFound.into()),
        AckOutcome::NotYours => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the room's broadcaster acknowledges its gifts",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_separates_fields() {
        assert_ne!(
            request_hash("r", "ab", 1, None),
            request_hash("ra", "b", 1, None)
        );
        assert_ne!(
            request_hash("r", "a", 1, None),
            request_hash("r", "a", 1, Some(""))
        );
        assert_eq!(
            request_hash("r", "a", 2, Some("hi")),
            request_hash("r", "a", 2, Some("hi"))
        );
    }
}
