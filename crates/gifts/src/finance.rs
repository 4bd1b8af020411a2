//! Finance reads: the revenue report (JSON or CSV) and the summary with the
//! ledger check. Finance and admin only.

use applause_core::{Channel, Currency, ErrorCode};
use applause_ledger::reports::parse_day;
use applause_ledger::{GroupBy, RevenueRow};
use applause_web::ApiError;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::gifts::ledger_error;
use crate::render::json;
use crate::{principal, GiftService};

/// The longest report interval, in days (a bound on the work of one request).
pub const REPORT_DAYS_MAX: i64 = 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevenueQuery {
    from: String,
    to: String,
    #[serde(default)]
    group_by: Option<String>,
    #[serde(default)]
    format: Option<String>,
}

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
        &serde_json::json!({
            "from": q.from,
            "to": q.to,
            "group_by": group_by.as_str(),
            "currency": currency.code(),
            "rows": rows.iter().map(|r| row_json(group_by.as_str(), r, currency)).collect::<Vec<_>>(),
            "totals": row_json("total", &totals, currency),
        }),
    ))
}

fn row_json(key_name: &str, r: &RevenueRow, c: &Currency) -> serde_json::Value {
    let mut v = serde_json::json!({
        "gifts": r.gifts,
        "gross": c.format(r.gross),
        "store_fees": c.format(r.store_fees),
        "broadcaster_earnings": c.format(r.broadcaster_earnings),
        "platform_revenue": c.format(r.platform_revenue),
        "refunds": c.format(r.refunds),
        "net": c.format(r.net),
    });
    if key_name != "total" {
        v[key_name] = serde_json::Value::String(r.key.clone());
    }
    v
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

pub(crate) async fn summary(
    State(svc): State<GiftService>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_finance(&svc, &headers)?;
    let (s, check) =
        tokio::try_join!(svc.0.ledger.summary(), svc.0.ledger.check()).map_err(ledger_error)?;
    Ok(json(
        StatusCode::OK,
        &summary_json(&s, &check, svc.0.ledger.currency()),
    ))
}

/// The summary as JSON (also printed by `applause ledger check`).
pub fn summary_json(
    s: &applause_ledger::Summary,
    check: &applause_ledger::CheckReport,
    c: &Currency,
) -> serde_json::Value {
    let per_channel = |v: &applause_core::PerChannel| {
        let mut m = serde_json::Map::new();
        for ch in Channel::ALL {
            m.insert(ch.as_str().into(), c.format(v[ch.index()]).into());
        }
        serde_json::Value::Object(m)
    };
    serde_json::json!({
        "currency": c.code(),
        "topups": c.format(s.topups_by_channel.iter().sum()),
        "topups_by_channel": per_channel(&s.topups_by_channel),
        "wallets_outstanding": c.format(s.wallets_outstanding),
        "escrow_open": c.format(s.escrow_open),
        "gifts": s.gifts,
        "gross_gifts": c.format(s.gross_gifts),
        "store_fees": c.format(s.store_fees_by_channel.iter().sum()),
        "store_fees_by_channel": per_channel(&s.store_fees_by_channel),
        "broadcaster_payable": c.format(s.broadcaster_payable),
        "platform_revenue": c.format(s.platform_revenue),
        "refunds": c.format(s.refunds),
        "ledger_check": check_json(check, c),
    })
}

pub fn check_json(check: &applause_ledger::CheckReport, c: &Currency) -> serde_json::Value {
    serde_json::json!({
        "ok": check.ok(),
        "transactions": check.transactions,
        "entries": check.entries,
        "balance_sum": c.format(check.balance_sum),
        "unbalanced_transactions": check.unbalanced_transactions,
        "mismatched_wallets": check.mismatched_wallets,
        "negative_wallets": check.negative_wallets,
        "bad_splits": check.bad_splits,
        "mismatched_escrow": check.mismatched_escrow,
    })
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
