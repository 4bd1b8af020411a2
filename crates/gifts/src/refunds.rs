//! Gift refunds (fraud, chargebacks): finance and admin reverse a gift.
//!
//! The ledger writes the reversal in one transaction — the sender's wallet
//! gets each channel's portion back, the store, broadcaster and platform
//! parts are debited — and the publisher subtracts the gift from the
//! leaderboards. **Once per gift**: the first refund answers 200, every later
//! one (any reason, any node, after restarts) answers 409 `already_refunded`
//! — a refund is an audited decision with a reason, not a retried request, so
//! a second one is reported rather than replayed as if it had succeeded.

use applause_core::ids::is_valid_object_id;
use applause_core::{Channel, ErrorCode};
use applause_ledger::{GiftRecord, RefundCmd, RefundOutcome};
use applause_web::{rfc3339_ms, ApiError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::gifts::{ledger_error, TEXT_CHARS_MAX};
use crate::render::json;
use crate::{body, principal, GiftService, Id};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Refund {
    reason: String,
}

pub(crate) async fn refund(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(gift_id): Id,
    raw: Body,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if !who.role.reads_finance() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "refunds are for finance and admin",
        ));
    }
    let req: Refund = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    let reason = req.reason.trim();
    if reason.is_empty() || !applause_core::ids::is_valid_text(reason, TEXT_CHARS_MAX) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "reason must be 1–200 characters without control characters",
        ));
    }
    if !is_valid_object_id(&gift_id) {
        return Err(ErrorCode::GiftNotFound.into());
    }
    let outcome = svc
        .0
        .ledger
        .refund(RefundCmd {
            gift_id,
            reason: reason.to_owned(),
            refunded_by: who.user_id.clone(),
        })
        .await
        .map_err(ledger_error)?;
    match outcome {
        RefundOutcome::Refunded(g) => Ok(json(
            StatusCode::OK,
            &refund_view(&g, reason, &who.user_id, svc.0.ledger.currency()),
        )),
        RefundOutcome::AlreadyRefunded(_) => Err(ApiError::new(
            ErrorCode::AlreadyRefunded,
            "this gift was already refunded",
        )),
        RefundOutcome::NotFound => Err(ErrorCode::GiftNotFound.into()),
    }
}

fn refund_view(
    g: &GiftRecord,
    reason: &str,
    by: &str,
    c: &applause_core::Currency,
) -> serde_json::Value {
    let mut returned = serde_json::Map::new();
    for ch in Channel::ALL {
        returned.insert(ch.as_str().into(), c.format(g.paid[ch.index()]).into());
    }
    serde_json::json!({
        "gift_id": g.gift_id,
        "sender_id": g.sender_id,
        "broadcaster_id": g.broadcaster_id,
        "amount": c.format(g.amount_minor),
        "returned_by_channel": returned,
        "reversed": {
            "store": c.format(g.split.store),
            "broadcaster": c.format(g.split.broadcaster),
            "platform": c.format(g.split.platform),
        },
        "reason": reason,
        "refunded_by": by,
        "refunded_at": g.refunded_at_ms.map(rfc3339_ms),
    })
}
