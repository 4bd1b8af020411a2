//! Finance over HTTP: after a randomized run of top-ups and gifts, the
//! revenue report (every group_by, JSON and CSV) and the summary agree with
//! what the 201s said, and every row splits its gross exactly.

use std::collections::BTreeMap;

use applause_core::Role;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::common::{fmt_minor, minor, Server};

const STICKERS: &[&str] = &["clap", "heart", "rose", "coffee", "star", "cake"];

/// What the test saw in the 201s, per report key.
#[derive(Default)]
struct Tally {
    gifts: u64,
    gross: i64,
    store: i64,
    broadcaster: i64,
    platform: i64,
}

impl Tally {
    fn add(&mut self, r: &Value) {
        self.gifts += 1;
        self.gross += minor(r["amount"].as_str().unwrap());
        self.store += minor(r["split"]["store"].as_str().unwrap());
        self.broadcaster += minor(r["split"]["broadcaster"].as_str().unwrap());
        self.platform += minor(r["split"]["platform"].as_str().unwrap());
    }
}

/// A report row as numbers: (gifts, gross, store, broadcaster, platform, refunds).
type Row = (u64, i64, i64, i64, i64, i64);

fn json_row(r: &Value) -> Row {
    let m = |k: &str| minor(r[k].as_str().unwrap_or_else(|| panic!("{k} in {r}")));
    (
        r["gifts"].as_u64().unwrap(),
        m("gross"),
        m("store_fees"),
        m("broadcaster_earnings"),
        m("platform_revenue"),
        m("refunds"),
    )
}

fn csv_row(line: &str) -> (String, Row) {
    let f: Vec<&str> = line.split(',').collect();
    assert_eq!(f.len(), 7, "CSV line {line:?}");
    (
        f[0].to_owned(),
        (
            f[1].parse().unwrap(),
            minor(f[2]),
            minor(f[3]),
            minor(f[4]),
            minor(f[5]),
            minor(f[6]),
        ),
    )
}

#[track_caller]
fn check_identity(what: &str, r: Row) {
    assert_eq!(
        r.1,
        r.2 + r.3 + r.4,
        "{what}: gross != store_fees + broadcaster_earnings + platform_revenue"
    );
    assert!(r.2 >= 0 && r.3 >= 0 && r.4 >= 0, "{what}: a negative part");
}

fn day(offset: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::days(offset))
        .format("%Y-%m-%d")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revenue_reports_match_the_purchases() {
    let s = Server::start(&["--gift-burst", "1000", "--gift-rate-per-s", "1000"]).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let broadcasters = ["star-1", "star-2", "star-3"];
    let mut rooms = Vec::new();
    for b in broadcasters {
        rooms.push((b, s.open_room(b).await));
    }
    // Each viewer pays through one channel, so per-channel gross is known.
    let viewers = [
        ("v-apple", "apple"),
        ("v-google", "google"),
        ("v-web", "web"),
        ("v-apple2", "apple"),
        ("v-web2", "web"),
    ];
    let mut topups = 0;
    for (v, channel) in viewers {
        for _ in 0..rng.random_range(1..=3) {
            let amount = rng.random_range(500..=5_000);
            s.top_up(v, channel, &fmt_minor(amount)).await;
            topups += amount;
        }
    }
    let mut by: BTreeMap<&str, BTreeMap<String, Tally>> = BTreeMap::new();
    let mut total = Tally::default();
    let mut refused = 0;
    for i in 0..60 {
        let (v, channel) = viewers[rng.random_range(0..viewers.len())];
        let (b, room) = &rooms[rng.random_range(0..rooms.len())];
        let sticker = STICKERS[rng.random_range(0..STICKERS.len())];
        let r = s
            .buy(
                &s.viewer(v),
                room,
                &format!("rep-{i}"),
                &json!({"sticker_id": sticker, "quantity": rng.random_range(1..=4)}),
            )
            .await;
        match r.status {
            201 => {
                total.add(&r.json);
                for (group, key) in [
                    ("day", day(0)),
                    ("channel", channel.to_owned()),
                    ("broadcaster", (*b).to_owned()),
                    ("sticker", sticker.to_owned()),
                ] {
                    by.entry(group)
                        .or_default()
                        .entry(key)
                        .or_default()
                        .add(&r.json);
                }
            }
            _ => {
                r.expect_error(402, "insufficient_funds");
                refused += 1;
            }
        }
    }
    assert!(
        total.gifts >= 20,
        "too few purchases succeeded: {refused} refused"
    );
    assert_eq!(
        total.gross,
        total.store + total.broadcaster + total.platform
    );

    // The interval covers yesterday to tomorrow, so a run across midnight still counts.
    let (from, to) = (day(-1), day(2));
    let finance = s.finance();
    for group in ["day", "channel", "broadcaster", "sticker"] {
        let path = format!("/v1/finance/revenue?from={from}&to={to}&group_by={group}");
        let r = s.get(&path, Some(&finance)).await;
        r.expect_status(200);
        let rows = r.json["rows"].as_array().expect("rows");
        let expected = &by[group];
        assert_eq!(rows.len(), expected.len(), "{group}: {}", r.body);
        let mut sum: Row = (0, 0, 0, 0, 0, 0);
        for row in rows {
            let key = row[group].as_str().expect("row key").to_owned();
            let got = json_row(row);
            check_identity(&format!("{group} {key}"), got);
            let want = &expected[&key];
            assert_eq!(
                (got.0, got.1),
                (want.gifts, want.gross),
                "{group} {key}: gifts and gross"
            );
            if group != "day" {
                // Per key the parts are the sums of the 201s' splits too.
                assert_eq!(
                    (got.2, got.3, got.4),
                    (want.store, want.broadcaster, want.platform),
                    "{group} {key}: split"
                );
            }
            assert_eq!(got.5, 0, "no refunds were made");
            sum = (
                sum.0 + got.0,
                sum.1 + got.1,
                sum.2 + got.2,
                sum.3 + got.3,
                sum.4 + got.4,
                0,
            );
        }
        let totals = json_row(&r.json["totals"]);
        check_identity(&format!("{group} totals"), totals);
        assert_eq!(
            totals,
            (
                total.gifts,
                total.gross,
                total.store,
                total.broadcaster,
                total.platform,
                0
            ),
            "{group} totals"
        );
        assert_eq!(sum, totals, "{group}: rows add up to the totals");

        // The CSV says the same.
        let csv = s.get(&format!("{path}&format=csv"), Some(&finance)).await;
        csv.expect_status(200);
        assert!(
            csv.header("content-type")
                .is_some_and(|c| c.starts_with("text/csv")),
            "{:?}",
            csv.headers
        );
        let mut lines = csv.body.lines();
        assert_eq!(
            lines.next(),
            Some(
                format!(
                    "{group},gifts,gross,store_fees,broadcaster_earnings,platform_revenue,refunds"
                )
                .as_str()
            )
        );
        let parsed: Vec<(String, Row)> = lines.map(csv_row).collect();
        assert_eq!(parsed.len(), rows.len() + 1, "rows and a totals row");
        for (key, row) in &parsed {
            check_identity(&format!("csv {group} {key}"), *row);
        }
        let (last_key, last) = parsed.last().unwrap();
        assert_eq!(last_key, "total");
        assert_eq!(*last, totals, "CSV totals");
        for (row, (key, csv_row)) in rows.iter().zip(&parsed) {
            assert_eq!(row[group].as_str(), Some(key.as_str()));
            assert_eq!(json_row(row), *csv_row, "CSV row {key}");
        }
    }

    // An interval without gifts is empty, with zero totals.
    let r = s
        .get(
            "/v1/finance/revenue?from=2020-01-01&to=2020-02-01&group_by=channel",
            Some(&finance),
        )
        .await;
    r.expect_status(200);
    assert_eq!(r.json["rows"], json!([]));
    assert_eq!(json_row(&r.json["totals"]), (0, 0, 0, 0, 0, 0));

    // The summary agrees.
    let summary = s.summary().await;
    assert_eq!(minor(summary["topups"].as_str().unwrap()), topups);
    assert_eq!(summary["gifts"], total.gifts);
    assert_eq!(minor(summary["gross_gifts"].as_str().unwrap()), total.gross);
    assert_eq!(minor(summary["store_fees"].as_str().unwrap()), total.store);
    assert_eq!(
        minor(summary["broadcaster_payable"].as_str().unwrap()),
        total.broadcaster
    );
    assert_eq!(
        minor(summary["platform_revenue"].as_str().unwrap()),
        total.platform
    );
    assert_eq!(
        minor(summary["wallets_outstanding"].as_str().unwrap()),
        topups - total.gross
    );
    for (channel, t) in &by["channel"] {
        assert_eq!(
            minor(summary["store_fees_by_channel"][channel].as_str().unwrap()),
            t.store,
            "store fees of {channel}"
        );
    }
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_queries_are_400() {
    let s = Server::start(&[]).await;
    let finance = s.finance();
    for query in [
        "",
        "from=2026-01-01",
        "to=2026-01-02",
        "from=yesterday&to=2026-01-02",
        "from=2026-1-1&to=2026-01-02",
        "from=2026-01-01&to=2026-13-01",
        "from=2026-02-30&to=2026-03-02",
        "from=2026-01-01T00:00:00Z&to=2026-01-02",
        "from=2026-01-02&to=2026-01-02",
        "from=2026-01-03&to=2026-01-02",
        "from=2020-01-01&to=2026-01-01",
        "from=2026-01-01&to=2026-01-02&group_by=hour",
        "from=2026-01-01&to=2026-01-02&group_by=",
        "from=2026-01-01&to=2026-01-02&format=xml",
        "from=2026-01-01&to=2026-01-02&format=CSV",
        "from=2026-01-01&to=2026-01-02&colour=red",
    ] {
        let r = s
            .get(&format!("/v1/finance/revenue?{query}"), Some(&finance))
            .await;
        assert_eq!(r.status, 400, "{query:?}: {}", r.body);
        r.expect_error(400, "invalid_query");
    }
    // Finance only, before the query is even read.
    s.get(
        "/v1/finance/revenue?from=nope",
        Some(&s.token("star-q", Role::Broadcaster)),
    )
    .await
    .expect_error(403, "forbidden");
    s.shutdown().await;
}
