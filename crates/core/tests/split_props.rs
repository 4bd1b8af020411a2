//! Property tests of the revenue split: over random prices, channel mixes,
//! fee rates and shares, the parts sum exactly to the price and each part is
//! within one minor unit of its exact quota (computed here independently with
//! `rust_decimal`). Case count: `APPLAUSE_PROP_CASES` (the test script runs
//! 1,000,000 in release mode; the default keeps debug runs quick).

use std::collections::HashMap;

use applause_core::split::{Ppm, SplitPolicy};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn cases() -> u32 {
    std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn ppm(v: u32) -> Ppm {
    Ppm::from_fraction(Decimal::new(i64::from(v), 6)).unwrap()
}

fn within_one(part: i64, quota: Decimal) -> bool {
    (Decimal::from(part) - quota).abs() < Decimal::ONE
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn split_is_exact_and_close_to_quota(
        portions in prop_oneof![
            // One channel (the common case), then arbitrary mixes.
            (0usize..3, 1i64..1_000_000_000).prop_map(|(c, p)| { let mut a = [0i64; 3]; a[c] = p; a }),
            (0i64..1_000_000, 0i64..1_000_000, 0i64..1_000_000).prop_map(|(a, b, c)| [a, b, c]),
        ].prop_filter("non-empty", |a| a.iter().sum::<i64>() > 0),
        fees in (0u32..=1_000_000, 0u32..=1_000_000, 0u32..=1_000_000),
        share in 0u32..=1_000_000,
    ) {
        let policy = SplitPolicy::new([ppm(fees.0), ppm(fees.1), ppm(fees.2)], ppm(share), HashMap::new());
        let s = policy.split("b", &portions);
        let price: i64 = portions.iter().sum();
        prop_assert_eq!(s.store + s.broadcaster + s.platform, price);
        prop_assert!(s.store >= 0 && s.broadcaster >= 0 && s.platform >= 0);

        let million = Decimal::from(1_000_000);
        let fee = [Decimal::from(fees.0) / million, Decimal::from(fees.1) / million, Decimal::from(fees.2) / million];
        let share = Decimal::from(share) / million;
        let (mut qs, mut qb) = (Decimal::ZERO, Decimal::ZERO);
        for c in 0..3 {
            let p = Decimal::from(portions[c]);
            let store_q = p * fee[c];
            let b_q = (p - store_q) * share;
            qs += store_q;
            qb += b_q;
            // Per channel: the row sums to the portion; each cell within one unit.
            let row = s.by_channel[c];
            prop_assert_eq!(row.iter().sum::<i64>(), portions[c]);
            prop_assert!(within_one(row[0], store_q) && within_one(row[1], b_q) && within_one(row[2], p - store_q - b_q));
        }
        let qp = Decimal::from(price) - qs - qb;
        prop_assert!(within_one(s.store, qs), "store {} quota {}", s.store, qs);
        prop_assert!(within_one(s.broadcaster, qb), "broadcaster {} quota {}", s.broadcaster, qb);
        prop_assert!(within_one(s.platform, qp), "platform {} quota {}", s.platform, qp);
        for j in 0..3 {
            let col: i64 = (0..3).map(|c| s.by_channel[c][j]).sum();
            prop_assert_eq!(col, [s.store, s.broadcaster, s.platform][j]);
        }
    }

    #[test]
    fn draw_takes_exactly_the_price_or_nothing(
        balances in (0i64..10_000, 0i64..10_000, 0i64..10_000),
        price in 1i64..30_000,
    ) {
        let policy = SplitPolicy::default();
        let b = [balances.0, balances.1, balances.2];
        match policy.draw(&b, price) {
            Some(p) => {
                prop_assert_eq!(p.iter().sum::<i64>(), price);
                for c in 0..3 { prop_assert!(p[c] >= 0 && p[c] <= b[c]); }
            }
            None => prop_assert!(b.iter().sum::<i64>() < price),
        }
    }
}
