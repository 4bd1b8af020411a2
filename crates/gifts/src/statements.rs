//! Broadcaster payout statements: every gift a broadcaster received in a
//! period with its split, the refunds, and totals — JSON or CSV. Readable by
//! that broadcaster, finance and admin; anyone else gets 403.
//!
//! A refunded gift stays listed with its split (it was sold) and carries the
//! refund; the totals give both the gross earnings and the earnings net of
//! refunds, so `broadcaster_net = broadcaster_earnings − broadcaster_refunded`.

use applause_core::ids::is_valid_user_id;
use applause_core::{Currency, ErrorCode};
use applause_ledger::GiftRecord;
use applause_web::{rfc3339_ms, ApiError};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::gifts::ledger_error;
use crate::params::{Day, Format, ObjectId};
use crate::render::json;
use crate::views::{Amount, Statement, StatementGift, StatementTotalsView};
use crate::{principal, GiftService, Id};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatementQuery {
    /// The first day of the half-open UTC interval `[from, to)`.
    #[param(inline, value_type = Day)]
    from: String,
    /// The day after the last (at most 366 days after `from`).
    #[param(inline, value_type = Day)]
    to: String,
    /// Default `json`.
    #[serde(default)]
    #[param(inline, value_type = Option<Format>)]
    format: Option<String>,
}

applause_web::api_errors!(
    StatementErrors = [
        InvalidQuery,
        InvalidUserId,
        Unauthorized,
        Forbidden,
        Unavailable,
    ]
);

/// A statement's totals, in minor units.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatementTotals {
    pub gifts: u64,
    pub gross: i64,
    pub store_fees: i64,
    pub broadcaster_earnings: i64,
    pub platform_revenue: i64,
    pub refunds: i64,
    /// The broadcaster's part of the refunded gifts (reversed).
    pub broadcaster_refunded: i64,
}

impl StatementTotals {
    pub fn of(gifts: &[GiftRecord]) -> StatementTotals {
        let mut t = StatementTotals::default();
        for g in gifts {
            t.gifts += 1;
            t.gross += g.amount_minor;
            t.store_fees += g.split.store;
            t.broadcaster_earnings += g.split.broadcaster;
            t.platform_revenue += g.split.platform;
            if g.refunded_at_ms.is_some() {
                t.refunds += g.amount_minor;
                t.broadcaster_refunded += g.split.broadcaster;
            }
        }
        t
    }
}

/// A broadcaster's payout statement: each gift with its split and refund, and totals.
///
/// That broadcaster, finance and admin; anyone else 403. `format=csv`
/// answers the same lines as CSV.
#[utoipa::path(
    get,
    path = "/v1/finance/broadcasters/{broadcaster_id}/statement",
    tag = "finance",
    operation_id = "broadcaster_statement",
    params(
        ("broadcaster_id" = inline(ObjectId), Path, description = "The broadcaster's user id."),
        StatementQuery,
    ),
    security(("bearer" = ["broadcaster", "finance", "admin"])),
    responses(
        (status = 200, description = "The statement.", content(
            (Statement<'_> = "application/json"),
            (String = "text/csv"),
        )),
        StatementErrors,
    )
)]
pub(crate) async fn statement(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    Id(broadcaster_id): Id,
    query: Result<Query<StatementQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = principal(&svc, &headers)?;
    if !(who.role.reads_finance() || who.user_id == broadcaster_id) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a statement is for its broadcaster, finance and admin",
        ));
    }
    if !is_valid_user_id(&broadcaster_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidUserId,
            "the broadcaster id must be 1–64 characters of A-Z, a-z, 0-9, _ and -",
        ));
    }
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let (from_ms, to_ms) = crate::finance::parse_interval(&q.from, &q.to)
        .map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                format!("format {other:?} must be json or csv"),
            ))
        }
    };
    let gifts = svc
        .0
        .ledger
        .gifts_between(from_ms, to_ms, Some(&broadcaster_id))
        .await
        .map_err(ledger_error)?;
    let c = svc.0.ledger.currency();
    if csv {
        let mut resp = (StatusCode::OK, statement_csv(&gifts, c)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        return Ok(resp);
    }
    let t = StatementTotals::of(&gifts);
    Ok(json(
        StatusCode::OK,
        &Statement {
            broadcaster_id: &broadcaster_id,
            currency: c.code(),
            from: &q.from,
            gifts: gifts.iter().map(|g| gift_view(g, c)).collect(),
            to: &q.to,
            totals: StatementTotalsView {
                broadcaster_earnings: Amount::of(c, t.broadcaster_earnings),
                broadcaster_net: Amount::of(c, t.broadcaster_earnings - t.broadcaster_refunded),
                broadcaster_refunded: Amount::of(c, t.broadcaster_refunded),
                gifts: t.gifts,
                gross: Amount::of(c, t.gross),
                net: Amount::of(c, t.gross - t.refunds),
                platform_revenue: Amount::of(c, t.platform_revenue),
                refunds: Amount::of(c, t.refunds),
                store_fees: Amount::of(c, t.store_fees),
            },
        },
    ))
}

fn gift_view<'a>(g: &'a GiftRecord, c: &Currency) -> StatementGift<'a> {
    StatementGift {
        amount: Amount::of(c, g.amount_minor),
        created_at: rfc3339_ms(g.created_at_ms),
        gift_id: &g.gift_id,
        quantity: g.quantity,
        refund: Amount::of(
            c,
            if g.refunded_at_ms.is_some() {
                g.amount_minor
            } else {
                0
            },
        ),
        refunded_at: g.refunded_at_ms.map(rfc3339_ms),
        room_id: &g.room_id,
        sender_id: &g.sender_id,
        split: crate::render::split(g, c),
        sticker_id: &g.sticker_id,
    }
}

/// The statement as CSV: one line per gift, then a `total` line. Ids are
/// server-issued (`[A-Za-z0-9_-]`), so no field needs quoting.
pub fn statement_csv(gifts: &[GiftRecord], c: &Currency) -> String {
    let mut out = String::from(
        "gift_id,created_at,room_id,sender_id,sticker_id,quantity,amount,store,broadcaster,platform,refunded_at,refund\n",
    );
    for g in gifts {
        let refunded = g.refunded_at_ms.is_some();
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            g.gift_id,
            rfc3339_ms(g.created_at_ms),
            g.room_id,
            safe(&g.sender_id),
            safe(&g.sticker_id),
            g.quantity,
            c.format(g.amount_minor),
            c.format(g.split.store),
            c.format(g.split.broadcaster),
            c.format(g.split.platform),
            g.refunded_at_ms.map(rfc3339_ms).unwrap_or_default(),
            c.format(if refunded { g.amount_minor } else { 0 }),
        ));
    }
    let t = StatementTotals::of(gifts);
    out.push_str(&format!(
        "total,,,,,{},{},{},{},{},,{}\n",
        t.gifts,
        c.format(t.gross),
        c.format(t.store_fees),
        c.format(t.broadcaster_earnings),
        c.format(t.platform_revenue),
        c.format(t.refunds),
    ));
    out
}

/// Defuses spreadsheet formulas in user-chosen ids (`-` may start a user id).
fn safe(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}
