//! Amount strings (`Currency::parse`, `parse_positive`, `parse_json`): never a
//! panic; an accepted amount is within `0..=AMOUNT_MINOR_MAX`, was written as
//! `digits[.digits]` with at most the currency's decimals, and formatting it
//! then parsing the text gives the same minor units.
#![no_main]

use applause_core::money::{AmountError, AMOUNT_MINOR_MAX};
use applause_core::Currency;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // The first byte picks the currency's exponent (0–8): every exponent a
    // deployment may configure is covered.
    let exponent = u32::from(first) % (Currency::EXPONENT_MAX + 1);
    let currency = Currency::new("XTS", exponent).expect("valid currency");
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    match currency.parse(text) {
        Ok(minor) => {
            assert!(
                (0..=AMOUNT_MINOR_MAX).contains(&minor),
                "{text:?} → {minor}"
            );
            let (int, frac) = text.split_once('.').unwrap_or((text, ""));
            assert!(
                !int.is_empty() && int.bytes().all(|b| b.is_ascii_digit()),
                "{text:?}"
            );
            assert!(frac.bytes().all(|b| b.is_ascii_digit()), "{text:?}");
            assert!(frac.len() as u32 <= exponent, "{text:?}");
            let formatted = currency.format(minor);
            assert_eq!(
                currency.parse(&formatted),
                Ok(minor),
                "{text:?} → {formatted:?}"
            );
            assert_eq!(currency.parse_positive(text).is_ok(), minor > 0);
        }
        Err(AmountError::NotAString | AmountError::Zero) => {
            panic!("parse gave a JSON-only or positive-only error for {text:?}")
        }
        Err(_) => assert!(currency.parse_positive(text).is_err()),
    }
    // The JSON path: only a string is an amount, and it parses like the text.
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(rest) {
        let got = currency.parse_json(&value);
        match &value {
            serde_json::Value::String(s) => assert_eq!(got, currency.parse(s)),
            _ => assert_eq!(got, Err(AmountError::NotAString)),
        }
    }
});
