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

use crate::idempotency::{self, key_reused, InFlight};
use crate::limits::contains_blocked;
use crate::render::{json, json_response};
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Purchase {
    sticker_id: String,
    quantity: serde_json::Value,
    #[serde(default)]
    message: Option<String>,
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ack {
    text: String,
}

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
        &serde_json::json!({ "gift_id": gift_id, "text": req.text }),
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
