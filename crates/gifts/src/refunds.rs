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
use applause_core::ErrorCode;
use applause_ledger::{GiftRecord, RefundCmd, RefundOutcome};
use applause_web::{rfc3339_ms, ApiError};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::gifts::{ledger_error, TEXT_CHARS_MAX};
use crate::params::ObjectId;
use crate::render::json;
use crate::views::{Amount, ByChannel, RefundView};
use crate::{body, principal, GiftService, Id};

/// Why the gift is reversed (fraud, a chargeback…), kept with the refund.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Refund {
    /// 1–200 characters (trimmed), no control characters.
    #[schema(min_length = 1, max_length = 200, example = "chargeback")]
    reason: String,
}

applause_web::api_errors!(
    RefundErrors = [
        InvalidJson,
        InvalidRequest,
        Unauthorized,
        Forbidden,
        GiftNotFound,
        AlreadyRefunded,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unavailable,
    ]
);

/// Reverse a gift: the sender is repaid per channel, the split is debited,
/// the leaderboards are corrected. Once per gift.
///
/// Finance and admin. A second refund of the same gift is 409 `already_refunded`.
#[utoipa::path(
    post,
    path = "/v1/finance/gifts/{gift_id}/refund",
    tag = "finance",
    operation_id = "refund_gift",
    params(("gift_id" = inline(ObjectId), Path, description = "The gift.")),
    request_body(content = Refund, content_type = "application/json"),
    security(("bearer" = ["finance", "admin"])),
    responses((status = 200, description = "Refunded.", body = RefundView<'_>), RefundErrors)
)]
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

fn refund_view<'a>(
    g: &'a GiftRecord,
    reason: &'a str,
    by: &'a str,
    c: &applause_core::Currency,
) -> RefundView<'a> {
    RefundView {
        amount: Amount::of(c, g.amount_minor),
        broadcaster_id: &g.broadcaster_id,
        gift_id: &g.gift_id,
        reason,
        refunded_at: g.refunded_at_ms.map(rfc3339_ms),
        refunded_by: by,
        returned_by_channel: ByChannel::of(c, &g.paid),
        reversed: crate::render::split(g, c),
        sender_id: &g.sender_id,
    }
}
