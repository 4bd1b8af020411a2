//! Finance reads: the revenue report (JSON or CSV) and the summary with the
//! ledger check. Finance and admin only.

use applause_core::{Currency, ErrorCode};
use applause_ledger::reports::parse_day;
use applause_ledger::{GroupBy, RevenueRow};
use applause_web::ApiError;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::gifts::ledger_error;
use crate::params::{Day, Format, GroupBy as GroupByParam};
use crate::render::json;
use crate::views::{Amount, ByChannel, LedgerCheck, RevenueReport, RevenueRowView, Summary};
use crate::{principal, GiftService};

/// The longest report interval, in days (a bound on the work of one request).
pub const REPORT_DAYS_MAX: i64 = 366;

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RevenueQuery {
    /// The first day of the half-open UTC interval `[from, to)`.
    #[param(inline, value_type = Day)]
    from: String,
    /// The day after the last (at most 366 days after `from`).
    #[param(inline, value_type = Day)]
    to: String,
    /// Default `day`.
    #[serde(default)]
    #[param(inline, value_type = Option<GroupByParam>)]
    group_by: Option<String>,
    /// Default `json`.
    #[serde(default)]
    #[param(inline, value_type = Option<Format>)]
    format: Option<String>,
}

applause_web::api_errors!(RevenueErrors = [InvalidQuery, Unauthorized, Forbidden, Unavailable]);

fn require_finance(svc: &GiftService, headers: &HeaderMap) -> Result<(), ApiError> {
    let who = principal(svc, headers)?;
    if !who.role.reads_finance() {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "finance reports are for finance and admin",
        ));
    }
    Ok(())
}

/// Parses the report query: a half-open UTC interval of whole days.
pub fn parse_interval(from: &str, to: &str) -> Result<(i64, i64), String> {
    let from_ms =
        parse_day(from).ok_or_else(|| format!("from {from:?} is not a date YYYY-MM-DD"))?;
    let to_ms = parse_day(to).ok_or_else(|| format!("to {to:?} is not a date YYYY-MM-DD"))?;
    if to_ms <= from_ms {
        return Err("to must be after from (the interval is [from, to))".into());
    }
    if (to_ms - from_ms) / 86_400_000 > REPORT_DAYS_MAX {
        return Err(format!(
            "the interval is longer than {REPORT_DAYS_MAX} days"
        ));
    }
    Ok((from_ms, to_ms))
}

/// The revenue query, checked: `(query, from_ms, to_ms, group_by, csv)`.
pub(crate) fn revenue_params(
    query: Result<Query<RevenueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(RevenueQuery, i64, i64, GroupBy, bool), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(ErrorCode::InvalidQuery, e.body_text()))?;
    let (from_ms, to_ms) =
        parse_interval(&q.from, &q.to).map_err(|m| ApiError::new(ErrorCode::InvalidQuery, m))?;
    let group_by: GroupBy = q
        .group_by
        .as_deref()
        .unwrap_or("day")
        .parse()
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
    Ok((q, from_ms, to_ms, group_by, csv))
}

/// The revenue report: rows by day, channel, broadcaster or sticker, and totals.
///
/// Finance and admin. On every row `gross = store_fees +
/// broadcaster_earnings + platform_revenue` exactly; `format=csv` answers a
/// CSV download of the same rows.
#[utoipa::path(
    get,
    path = "/v1/finance/revenue",
    tag = "finance",
    operation_id = "revenue_report",
    params(RevenueQuery),
    security(("bearer" = ["finance", "admin"])),
    responses(
        (status = 200, description = "The report.", content(
            (RevenueReport<'_> = "application/json"),
            (String = "text/csv"),
        )),
        RevenueErrors,
    )
)]
pub(crate) async fn revenue(
    State(svc): State<GiftService>,
    headers: HeaderMap,
    query: Result<Query<RevenueQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    require_finance(&svc, &headers)?;
    let (q, from_ms, to_ms, group_by, csv) = revenue_params(query)?;
    let (rows, totals) = svc
        .0
        .ledger
        .revenue(from_ms, to_ms, group_by)
        .await
        .map_err(ledger_error)?;
    let currency = svc.0.ledger.currency();
    if csv {
        let body = revenue_csv(group_by, &rows, &totals, currency);
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8"),
        );
        // A download, not a page: the dates were validated by parse_interval,
        // so the file name holds only digits and dashes.
        let name = format!(
            "attachment; filename=\"revenue-{}-{}-{}.csv\"",
            group_by.as_str(),
            q.from,
            q.to
        );
        if let Ok(v) = HeaderValue::from_str(&name) {
            resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(resp);
    }
    Ok(json(
        StatusCode::OK,
        &RevenueReport {
            currency: currency.code(),
            from: &q.from,
            group_by: group_by.as_str(),
            rows: rows
                .iter()
                .map(|r| row_view(Some(group_by), r, currency))
                .collect(),
            to: &q.to,
            totals: row_view(None, &totals, currency),
        },
    ))
}

/// A row keyed by `group_by`'s field, or the totals row (`None`: no key).
fn row_view<'a>(group_by: Option<GroupBy>, r: &'a RevenueRow, c: &Currency) -> RevenueRowView<'a> {
    let key = |g: GroupBy| (group_by == Some(g)).then_some(r.key.as_str());
    RevenueRowView {
        broadcaster: key(GroupBy::Broadcaster),
        broadcaster_earnings: Amount::of(c, r.broadcaster_earnings),
        channel: key(GroupBy::Channel),
        day: key(GroupBy::Day),
        gifts: r.gifts,
        gross: Amount::of(c, r.gross),
        net: Amount::of(c, r.net),
        platform_revenue: Amount::of(c, r.platform_revenue),
        refunds: Amount::of(c, r.refunds),
        sticker: key(GroupBy::Sticker),
        store_fees: Amount::of(c, r.store_fees),
    }
}

/// The report as CSV (also printed by `applause report revenue`).
pub fn revenue_csv(
    group_by: GroupBy,
    rows: &[RevenueRow],
    totals: &RevenueRow,
    c: &Currency,
) -> String {
    let mut out = format!(
        "{},gifts,gross,store_fees,broadcaster_earnings,platform_revenue,refunds\n",
        group_by.as_str()
    );
    for r in rows.iter().chain(std::iter::once(totals)) {
        out.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            csv_field(&r.key),
            r.gifts,
            c.format(r.gross),
            c.format(r.store_fees),
            c.format(r.broadcaster_earnings),
            c.format(r.platform_revenue),
            c.format(r.refunds)
        ));
    }
    out
}

/// Quotes a CSV field when needed, and defuses spreadsheet formulas.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

applause_web::api_errors!(SummaryErrors = [Unauthorized, Forbidden, Unavailable]);

/// Totals of the whole ledger and the result of the ledger check.
///
/// Finance and admin.
#[utoipa::path(
    get,
    path = "/v1/finance/summary",
    tag = "finance",
    operation_id = "finance_summary",
    security(("bearer" = ["finance", "admin"])),
    responses((status = 200, description = "The summary.", body = Summary<'_>), SummaryErrors)
)]
pub(crate) async fn summary(
    State(svc): State<GiftService>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_finance(&svc, &headers)?;
    let (s, check) =
        tokio::try_join!(svc.0.ledger.summary(), svc.0.ledger.check()).map_err(ledger_error)?;
    Ok(json(
        StatusCode::OK,
        &summary_view(&s, &check, svc.0.ledger.currency()),
    ))
}

fn summary_view<'a>(
    s: &applause_ledger::Summary,
    check: &'a applause_ledger::CheckReport,
    c: &'a Currency,
) -> Summary<'a> {
    Summary {
        broadcaster_payable: Amount::of(c, s.broadcaster_payable),
        currency: c.code(),
        escrow_open: Amount::of(c, s.escrow_open),
        gifts: s.gifts,
        gross_gifts: Amount::of(c, s.gross_gifts),
        ledger_check: check_view(check, c),
        platform_revenue: Amount::of(c, s.platform_revenue),
        refunds: Amount::of(c, s.refunds),
        store_fees: Amount::of(c, s.store_fees_by_channel.iter().sum()),
        store_fees_by_channel: ByChannel::of(c, &s.store_fees_by_channel),
        topups: Amount::of(c, s.topups_by_channel.iter().sum()),
        topups_by_channel: ByChannel::of(c, &s.topups_by_channel),
        wallets_outstanding: Amount::of(c, s.wallets_outstanding),
    }
}

fn check_view<'a>(check: &'a applause_ledger::CheckReport, c: &Currency) -> LedgerCheck<'a> {
    LedgerCheck {
        bad_splits: &check.bad_splits,
        balance_sum: c.format(check.balance_sum),
        entries: check.entries,
        mismatched_escrow: &check.mismatched_escrow,
        mismatched_wallets: &check.mismatched_wallets,
        negative_wallets: &check.negative_wallets,
        ok: check.ok(),
        transactions: check.transactions,
        unbalanced_transactions: &check.unbalanced_transactions,
    }
}

/// The summary as JSON (also printed by `applause ledger check`).
pub fn summary_json(
    s: &applause_ledger::Summary,
    check: &applause_ledger::CheckReport,
    c: &Currency,
) -> serde_json::Value {
    serde_json::to_value(summary_view(s, check, c)).expect("summary serializes")
}

/// The ledger check as JSON (also printed by `applause ledger check`).
pub fn check_json(check: &applause_ledger::CheckReport, c: &Currency) -> serde_json::Value {
    serde_json::to_value(check_view(check, c)).expect("check serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_validated() {
        assert!(parse_interval("2026-01-01", "2026-01-02").is_ok());
        assert!(parse_interval("2026-01-02", "2026-01-01").is_err());
        assert!(parse_interval("2026-01-01", "2026-01-01").is_err());
        assert!(parse_interval("2020-01-01", "2026-01-01").is_err());
        assert!(parse_interval("nope", "2026-01-01").is_err());
    }

    #[test]
    fn csv_fields_are_safe() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("=SUM(A1)"), "'=SUM(A1)");
    }
}
