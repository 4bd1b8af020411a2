//! Amounts on the wire are decimal strings; inside the load generator they are
//! integer minor units (never floats), parsed with the core crate's rules.

use anyhow::{anyhow, Result};
use applause_core::Currency;

/// Parses a server-reported amount into minor units.
///
/// Lenient only in one way: trailing zeros beyond the currency's decimals
/// (`"1.990"`) are accepted, because a report formatted with extra zeros is
/// still exact; anything else the core parser refuses is an error.
pub fn parse_minor(currency: &Currency, text: &str) -> Result<i64> {
    let trimmed = match text.split_once('.') {
        Some((int, frac)) if frac.len() as u32 > currency.exponent() => {
            let keep = currency.exponent() as usize;
            if frac[keep..].bytes().all(|b| b == b'0') {
                format!("{int}.{}", &frac[..keep])
            } else {
                text.to_owned()
            }
        }
        _ => text.to_owned(),
    };
    let trimmed = trimmed.strip_suffix('.').unwrap_or(&trimmed);
    currency
        .parse(trimmed)
        .map_err(|e| anyhow!("bad amount {text:?}: {e}"))
}

/// Formats minor units as the wire's decimal string.
pub fn format_minor(currency: &Currency, minor: i64) -> String {
    currency.format(minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_amounts() {
        let usd = Currency::usd();
        assert_eq!(parse_minor(&usd, "1.99").unwrap(), 199);
        assert_eq!(parse_minor(&usd, "1.990").unwrap(), 199);
        assert_eq!(parse_minor(&usd, "5").unwrap(), 500);
        assert!(parse_minor(&usd, "1.999").is_err());
        assert!(parse_minor(&usd, "-1").is_err());
        assert_eq!(format_minor(&usd, 12345), "123.45");
    }
}
