//! Money in: admin top-ups (standing in for the store integrations), and the
//! wallet view.

use applause_core::ids::is_valid_user_id;
use applause_core::{Channel, ErrorCode, Role};
use applause_ledger::{TopUpCmd, TopUpOutcome};
use applause_web::ApiError;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::params::{Channel as ChannelParam, ObjectId};
use crate::render::{json, json_response};
use crate::views::{Amount, TopUpView, WalletView};
use crate::{body, principal, GiftService};

/// A credit of a wallet through one funding channel (standing in for the
/// store or payment integration).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TopUp {
    /// The wallet's user.
    #[schema(value_type = ObjectId)]
    user_id: String,
    /// `apple`, `google` or `web`.
    #[schema(value_type = ChannelParam)]
    channel: String,
    /// A positive amount, as a string.
    #[schema(value_type = Amount)]
    pub(crate) amount: serde_json::Value,
    /// The store's receipt: the idempotency key (1–255 printable ASCII).
    #[schema(min_length = 1, max_length = 255, pattern = "^[ -~]+$")]
    receipt_id: String,
}

applause_web::api_errors!(
    TopUpErrors = [
        InvalidJson,
        InvalidRequest,
        InvalidUserId,
        InvalidChannel,
        InvalidAmount,
        InvalidReceiptId,
        Unauthorized,
        Forbidden,
        PayloadTooLarge,
        UnsupportedMediaType,
        IdempotencyKeyReused,
        Unavailable,
    ]
);

/// Credit a wallet.
///
/// Admin only. `receipt_id` is the idempotency key: a replay answers the
/// same top-up; the same id with other fields is 422.
#[utoipa::path(
    post,
    path = "/v1/topups",
    tag = "money",
    operation_id = "top_up",
    request_body(content = TopUp, content_type = "application/json"),
    security(("bearer" = ["admin"])),
    responses(
        (status = 201, description = "Credited (or the replay of that answer).", body = TopUpView<'_>),
        TopUpErrors,
    )
)]
pub(crate) async fn top_up(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if who.role != Role::Admin {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only admins credit wallets",
        ));
    }
    let req: TopUp = body::json(&headers, raw, svc.0.config.body_bytes_max).await?;
    if !is_valid_user_id(&req.user_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidUserId,
            "user_id must be 1–64 characters of A-Z, a-z, 0-9, _ and -",
        ));
    }
    let channel: Channel = req
        .channel
        .parse()
        .map_err(|e: String| ApiError::new(ErrorCode::InvalidChannel, e))?;
    let currency = svc.0.ledger.currency();
    let amount_minor = body::amount(currency, &req.amount, "amount")?;
    if !body::printable_ascii(&req.receipt_id, 255) {
        return Err(ApiError::new(
            ErrorCode::InvalidReceiptId,
            "receipt_id must be 1–255 printable ASCII characters",
        ));
    }
    let outcome = svc
        .0
        .ledger
        .top_up(TopUpCmd {
            user_id: req.user_id,
            channel,
            amount_minor,
            receipt_id: req.receipt_id,
        })
        .await
        .map_err(crate::gifts::ledger_error)?;
    match outcome {
        TopUpOutcome::Credited(r) | TopUpOutcome::Replay(r) => Ok(json_response(
            StatusCode::CREATED,
            crate::render::top_up(&r, currency),
        )),
        TopUpOutcome::TooLarge => Err(ApiError::new(
            ErrorCode::InvalidAmount,
            "this top-up would take the wallet past the largest balance it may hold",
        )),
        TopUpOutcome::KeyReused => Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this receipt_id was already used with other fields",
        )),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WalletQuery {
    /// Another user's wallet: finance and admin only (default: the token's user).
    #[param(inline, value_type = Option<ObjectId>)]
    user_id: Option<String>,
}

applause_web::api_errors!(
    WalletErrors = [
        InvalidQuery,
        InvalidUserId,
        Unauthorized,
        Forbidden,
        Unavailable,
    ]
);

/// A wallet: its balance in total and per funding channel.
///
/// The token's user's own; finance and admin may name another `user_id`.
#[utoipa::path(
    get,
    path = "/v1/wallet",
    tag = "money",
    operation_id = "get_wallet",
    params(WalletQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "The wallet.", body = WalletView<'_>), WalletErrors)
)]
pub(crate) async fn wallet(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    query: Result<Query<WalletQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    // The wallet is the token's user's; only finance and admin read others'.
    let user_id = match q.user_id {
        Some(other) if other != who.user_id => {
            if !who.role.reads_finance() {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "you can only read your own wallet",
                ));
            }
            if !is_valid_user_id(&other) {
                return Err(ApiError::new(
                    ErrorCode::InvalidUserId,
                    "user_id is not a valid user id",
                ));
            }
            other
        }
        _ => who.user_id,
    };
    let w = svc
        .0
        .ledger
        .wallet(&user_id)
        .await
        .map_err(crate::gifts::ledger_error)?;
    Ok(json(
        StatusCode::OK,
        &crate::render::wallet(&user_id, &w, svc.0.ledger.currency()),
    ))
}
