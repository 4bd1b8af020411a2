//! Query strings: the finance revenue query (`from`, `to`, `group_by`,
//! `format`) and the leaderboard query (`window`, `limit`), through the
//! handlers' own extractor and checks (`applause_gifts::decode`), and
//! `parse_interval` on raw text. Never a panic; every refusal is
//! `invalid_query`; an accepted interval is `from < to`, whole UTC days, at
//! most `REPORT_DAYS_MAX` long; an accepted limit is 1–100.
#![no_main]

use applause_core::ErrorCode;
use applause_gifts::decode;
use applause_leaderboard::Window;
use libfuzzer_sys::fuzz_target;

const DAY_MS: i64 = 86_400_000;

fn interval(from: i64, to: i64) {
    assert!(from < to, "{from} ≥ {to}");
    assert_eq!(from % DAY_MS, 0);
    assert_eq!(to % DAY_MS, 0);
    assert!((to - from) / DAY_MS <= 366);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode::revenue_query(text) {
        Some(Ok((from, to, _csv))) => interval(from, to),
        Some(Err(e)) => assert_eq!(e.code, ErrorCode::InvalidQuery, "{}", e.message),
        None => {}
    }
    for room in [true, false] {
        match decode::board_query(text, room) {
            Some(Ok((window, limit))) => {
                assert!((1..=100).contains(&limit));
                assert!(room || window != Window::Live);
            }
            Some(Err(e)) => assert_eq!(e.code, ErrorCode::InvalidQuery, "{}", e.message),
            None => {}
        }
    }
    if let Some((from, to)) = text.split_once('&') {
        if let Ok((f, t)) = applause_gifts::parse_interval(from, to) {
            interval(f, t);
        }
    }
});
