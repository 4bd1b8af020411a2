//! Revenue reports: gifts aggregated by day, channel, broadcaster or sticker.
//! Every row satisfies `gross = store_fees + broadcaster_earnings +
//! platform_revenue`, because each gift's split does and rows only add splits
//! (per channel: the split's per-channel attribution, whose rows do too).
//!
//! Refunds are reported on the row of the gift they reverse (its day,
//! channel, broadcaster, sticker), in their own `refunds` column; `net =
//! gross - refunds` on every row. Gross and its parts stay what was sold, so
//! a refund never makes an earlier report's gross change.

use std::collections::BTreeMap;

use applause_core::Channel;

use crate::model::{GiftRecord, GroupBy, RevenueRow};

/// Aggregates gifts into report rows (sorted by key) and a totals row.
pub fn revenue(gifts: &[GiftRecord], group_by: GroupBy) -> (Vec<RevenueRow>, RevenueRow) {
    let mut rows: BTreeMap<String, RevenueRow> = BTreeMap::new();
    let mut totals = RevenueRow {
        key: "total".into(),
        ..RevenueRow::default()
    };
    for g in gifts {
        let refunded = g.refunded_at_ms.is_some();
        let mut add = |key: String, gross: i64, parts: [i64; 3], count: u64| {
            let row = RevenueRow {
                key: key.clone(),
                gifts: count,
                gross,
                store_fees: parts[0],
                broadcaster_earnings: parts[1],
                platform_revenue: parts[2],
                refunds: if refunded { gross } else { 0 },
                net: if refunded { 0 } else { gross },
            };
            rows.entry(key.clone())
                .or_insert_with(|| RevenueRow {
                    key,
                    ..RevenueRow::default()
                })
                .add(&row);
        };
        let whole = [g.split.store, g.split.broadcaster, g.split.platform];
        match group_by {
            GroupBy::Day => add(day_of(g.created_at_ms), g.amount_minor, whole, 1),
            GroupBy::Broadcaster => add(g.broadcaster_id.clone(), g.amount_minor, whole, 1),
            GroupBy::Sticker => add(g.sticker_id.clone(), g.amount_minor, whole, 1),
            GroupBy::Channel => {
                // A gift paid from two channels counts once on each channel's row.
                for c in Channel::ALL {
                    let paid = g.paid[c.index()];
                    if paid != 0 {
                        add(
                            c.as_str().to_owned(),
                            paid,
                            g.split.by_channel[c.index()],
                            1,
                        );
                    }
                }
            }
        }
        totals.add(&RevenueRow {
            key: String::new(),
            gifts: 1,
            gross: g.amount_minor,
            store_fees: g.split.store,
            broadcaster_earnings: g.split.broadcaster,
            platform_revenue: g.split.platform,
            refunds: if refunded { g.amount_minor } else { 0 },
            net: if refunded { 0 } else { g.amount_minor },
        });
    }
    (rows.into_values().collect(), totals)
}

/// The UTC date (`YYYY-MM-DD`) of a millisecond timestamp.
pub fn day_of(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string()
}

/// Parses a `YYYY-MM-DD` date into the millisecond timestamp of its UTC midnight.
pub fn parse_day(text: &str) -> Option<i64> {
    let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    if text.len() != 10 {
        return None;
    }
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_strictly() {
        assert_eq!(parse_day("2026-01-02"), Some(1_767_312_000_000));
        assert_eq!(parse_day("2026-1-2"), None);
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("yesterday"), None);
        assert_eq!(day_of(1_767_312_000_000), "2026-01-02");
    }
}
