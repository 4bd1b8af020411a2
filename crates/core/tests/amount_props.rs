//! Property tests of amount parsing: over every currency exponent and the
//! whole valid range, `parse ∘ format` is the identity; text with too many
//! decimals, past the maximum, signed, or as a JSON number is refused; any
//! text at all never panics and, when accepted, equals an independent
//! `rust_decimal` reading. Case count: `APPLAUSE_PROP_CASES`.

use std::str::FromStr;

use applause_core::money::{AmountError, AMOUNT_MINOR_MAX};
use applause_core::Currency;
use proptest::prelude::*;
use rust_decimal::Decimal;

fn cases() -> u32 {
    std::env::var("APPLAUSE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn currency(exponent: u32) -> Currency {
    Currency::new("XTS", exponent).unwrap()
}

/// Minor units: the edges of the range as often as the inside.
fn minor() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(0i64),
        Just(1i64),
        Just(AMOUNT_MINOR_MAX),
        Just(AMOUNT_MINOR_MAX - 1),
        0i64..1_000_000,
        0i64..=AMOUNT_MINOR_MAX,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn parse_of_format_is_identity(exponent in 0u32..=Currency::EXPONENT_MAX, m in minor()) {
        let c = currency(exponent);
        let text = c.format(m);
        prop_assert_eq!(c.parse(&text), Ok(m), "{}", text);
        prop_assert_eq!(c.parse_json(&serde_json::Value::String(text.clone())), Ok(m));
        // Written with exactly `exponent` decimals.
        let decimals = text.split_once('.').map_or(0, |(_, f)| f.len() as u32);
        prop_assert_eq!(decimals, exponent);
    }

    #[test]
    fn one_decimal_too_many_is_refused(exponent in 0u32..=Currency::EXPONENT_MAX, m in minor(), digit in 0u8..10) {
        let c = currency(exponent);
        let mut text = c.format(m);
        if exponent == 0 {
            text.push('.');
        }
        text.push(char::from(b'0' + digit));
        prop_assert_eq!(c.parse(&text), Err(AmountError::TooManyDecimals(exponent)), "{}", text);
    }

    #[test]
    fn past_the_maximum_is_refused(exponent in 0u32..=Currency::EXPONENT_MAX, over in 1i64..=i64::MAX - AMOUNT_MINOR_MAX) {
        let c = currency(exponent);
        // Format by hand: `format` is for amounts in range.
        let m = i128::from(AMOUNT_MINOR_MAX) + i128::from(over);
        let scale = 10i128.pow(exponent);
        let text = if exponent == 0 {
            m.to_string()
        } else {
            format!("{}.{:0width$}", m / scale, m % scale, width = exponent as usize)
        };
        prop_assert_eq!(c.parse(&text), Err(AmountError::Overflow), "{}", text);
    }

    #[test]
    fn signed_and_json_numbers_are_refused(exponent in 0u32..=Currency::EXPONENT_MAX, m in 1i64..=AMOUNT_MINOR_MAX, f in any::<f64>()) {
        let c = currency(exponent);
        prop_assert_eq!(c.parse(&format!("-{}", c.format(m))), Err(AmountError::Negative));
        let plus = format!("+{}", c.format(m));
        prop_assert!(c.parse(&plus).is_err());
        prop_assert_eq!(c.parse_json(&serde_json::json!(m)), Err(AmountError::NotAString));
        prop_assert_eq!(c.parse_json(&serde_json::json!(f)), Err(AmountError::NotAString));
    }

    #[test]
    fn any_text_never_panics_and_agrees_with_decimal(exponent in 0u32..=Currency::EXPONENT_MAX, text in prop_oneof![
        "[0-9]{0,20}(\\.[0-9]{0,10})?",
        "[-+0-9.eE ]{0,12}",
        any::<String>(),
    ]) {
        let c = currency(exponent);
        if let Ok(m) = c.parse(&text) {
            prop_assert!((0..=AMOUNT_MINOR_MAX).contains(&m));
            // An independent reading: the decimal value times 10^exponent.
            let d = Decimal::from_str(&text).expect("an accepted amount is a decimal");
            let scaled = d * Decimal::from(10i64.pow(exponent));
            prop_assert_eq!(scaled, Decimal::from(m), "{}", text);
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        }
    }
}
