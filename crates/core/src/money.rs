//! Exact money: a currency with its minor-unit exponent, amounts held as integer
//! minor units, and parsing from the JSON strings the API accepts.
//!
//! Every amount inside Applause is an `i64` count of minor units (cents for USD).
//! Decimal text is only the wire and report format. Arithmetic is checked: an
//! overflow is an [`AmountError::Overflow`], never a panic or a wrap.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The largest amount, in minor units, that any single value may hold.
///
/// 10^15 minor units is ten trillion dollars at two decimals: far above any
/// real balance, far below `i64::MAX` so that sums of many amounts stay exact,
/// and below 2^53 so leaderboard scores in Redis (doubles) stay exact too.
pub const AMOUNT_MINOR_MAX: i64 = 1_000_000_000_000_000;

/// Why a piece of text is not an acceptable amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must be a decimal string such as \"1.99\"")]
    NotAString,
    #[error("amount is not a plain decimal number")]
    Malformed,
    #[error("amount has more than {0} decimal places")]
    TooManyDecimals(u32),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("amount is too large")]
    Overflow,
}

/// A settlement currency: an ISO-4217-like code and the number of decimals of
/// its minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    code: String,
    exponent: u32,
}

impl Currency {
    /// The most decimals a currency may have (a generous bound: real ones use 0–4).
    pub const EXPONENT_MAX: u32 = 8;

    /// Builds a currency; the code is three ASCII capital letters.
    pub fn new(code: &str, exponent: u32) -> Result<Self, String> {
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "currency code {code:?} must be three capital letters, such as USD"
            ));
        }
        if exponent > Self::EXPONENT_MAX {
            return Err(format!(
                "currency exponent {exponent} is above the maximum of {}",
                Self::EXPONENT_MAX
            ));
        }
        Ok(Self {
            code: code.to_owned(),
            exponent,
        })
    }

    pub fn usd() -> Self {
        Self {
            code: "USD".to_owned(),
            exponent: 2,
        }
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// Parses an amount given as decimal text (`"1.99"`, `"5"`, `"0.10"`).
    ///
    /// Accepts only `digits[.digits]`: no sign, exponent, spaces, `NaN` or
    /// `Infinity`, at most [`Currency::exponent`] decimals and at most 28
    /// significant digits. Zero is allowed here; callers that need a positive
    /// amount use [`Currency::parse_positive`].
    pub fn parse(&self, text: &str) -> Result<i64, AmountError> {
        let (int_part, frac_part) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if let Some(rest) = text.strip_prefix('-') {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return Err(AmountError::Negative);
            }
            return Err(AmountError::Malformed);
        }
        if int_part.is_empty() || !int_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AmountError::Malformed);
        }
        let frac = match frac_part {
            Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(AmountError::Malformed)
            }
            Some(f) => f,
            None => "",
        };
        if int_part.len() + frac.len() > 28 {
            return Err(AmountError::Overflow);
        }
        if frac.len() as u32 > self.exponent {
            return Err(AmountError::TooManyDecimals(self.exponent));
        }
        let mut minor: i64 = 0;
        for b in int_part.bytes().chain(frac.bytes()) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or(AmountError::Overflow)?;
        }
        for _ in frac.len() as u32..self.exponent {
            minor = minor.checked_mul(10).ok_or(AmountError::Overflow)?;
        }
        if minor > AMOUNT_MINOR_MAX {
            return Err(AmountError::Overflow);
        }
        Ok(minor)
    }

    /// Parses an amount that must be greater than zero.
    pub fn parse_positive(&self, text: &str) -> Result<i64, AmountError> {
        match self.parse(text)? {
            0 => Err(AmountError::Zero),
            m => Ok(m),
        }
    }

    /// Parses the JSON value of an amount field: only a string is an amount.
    pub fn parse_json(&self, value: &serde_json::Value) -> Result<i64, AmountError> {
        match value {
            serde_json::Value::String(s) => self.parse(s),
            _ => Err(AmountError::NotAString),
        }
    }

    /// Formats minor units as decimal text with exactly `exponent` decimals.
    pub fn format(&self, minor: i64) -> String {
        let mut d = Decimal::from(minor);
        // `set_scale` divides by 10^exponent exactly; the exponent is ≤ 8 and
        // amounts are ≤ 10^15, far inside Decimal's 96-bit mantissa.
        d.set_scale(self.exponent)
            .expect("currency exponent is at most 8");
        d.to_string()
    }

    /// The amount as an exact `Decimal` in major units.
    pub fn to_decimal(&self, minor: i64) -> Decimal {
        Decimal::from_str(&self.format(minor)).expect("formatted amount parses")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.code)
    }
}

/// Checked sum of minor-unit amounts.
pub fn checked_sum<I: IntoIterator<Item = i64>>(items: I) -> Result<i64, AmountError> {
    items
        .into_iter()
        .try_fold(0i64, |acc, x| acc.checked_add(x))
        .ok_or(AmountError::Overflow)
}

/// Checked `price × quantity`, bounded by [`AMOUNT_MINOR_MAX`].
pub fn checked_total(unit_minor: i64, quantity: u32) -> Result<i64, AmountError> {
    unit_minor
        .checked_mul(i64::from(quantity))
        .filter(|t| *t <= AMOUNT_MINOR_MAX)
        .ok_or(AmountError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<i64, AmountError>) {
        assert_eq!(Currency::usd().parse(text), expected, "input {text:?}");
    }

    #[test]
    fn parses_plain_decimals() {
        check("1.99", Ok(199));
        check("0.01", Ok(1));
        check("5", Ok(500));
        check("5.5", Ok(550));
        check("0", Ok(0));
        check("007.10", Ok(710));
        check("500.00", Ok(50000));
    }

    #[test]
    fn rejects_everything_else() {
        check("1.999", Err(AmountError::TooManyDecimals(2)));
        check("-1.00", Err(AmountError::Negative));
        check("1e3", Err(AmountError::Malformed));
        check("NaN", Err(AmountError::Malformed));
        check("Infinity", Err(AmountError::Malformed));
        check("", Err(AmountError::Malformed));
        check(".5", Err(AmountError::Malformed));
        check("5.", Err(AmountError::Malformed));
        check(" 1.00", Err(AmountError::Malformed));
        check("+1.00", Err(AmountError::Malformed));
        check("1,00", Err(AmountError::Malformed));
        check("1.0.0", Err(AmountError::Malformed));
        check("-", Err(AmountError::Malformed));
        check("١٢", Err(AmountError::Malformed));
        check("12345678901234567890123456789", Err(AmountError::Overflow));
        check("99999999999999999", Err(AmountError::Overflow));
        check("10000000000000.01", Err(AmountError::Overflow));
        check("10000000000000.00", Ok(AMOUNT_MINOR_MAX));
    }

    #[test]
    fn json_numbers_are_not_amounts() {
        let usd = Currency::usd();
        assert_eq!(
            usd.parse_json(&serde_json::json!(1.99)),
            Err(AmountError::NotAString)
        );
        assert_eq!(
            usd.parse_json(&serde_json::json!(2)),
            Err(AmountError::NotAString)
        );
        assert_eq!(usd.parse_json(&serde_json::json!("2.00")), Ok(200));
        assert_eq!(usd.parse_positive("0.00"), Err(AmountError::Zero));
    }

    #[test]
    fn formats_with_the_currency_exponent() {
        let usd = Currency::usd();
        assert_eq!(usd.format(199), "1.99");
        assert_eq!(usd.format(5), "0.05");
        assert_eq!(usd.format(0), "0.00");
        assert_eq!(usd.format(-250), "-2.50");
        let jpy = Currency::new("JPY", 0).unwrap();
        assert_eq!(jpy.format(1500), "1500");
        assert_eq!(jpy.parse("1500"), Ok(1500));
        assert_eq!(jpy.parse("1.5"), Err(AmountError::TooManyDecimals(0)));
    }

    #[test]
    fn currency_codes_are_validated() {
        assert!(Currency::new("usd", 2).is_err());
        assert!(Currency::new("USDX", 2).is_err());
        assert!(Currency::new("EUR", 9).is_err());
        assert!(Currency::new("EUR", 2).is_ok());
    }

    #[test]
    fn totals_overflow_into_errors() {
        assert_eq!(checked_total(50_000, 9_999), Ok(499_950_000));
        assert_eq!(checked_total(i64::MAX / 2, 3), Err(AmountError::Overflow));
        assert_eq!(checked_sum([i64::MAX, 1]), Err(AmountError::Overflow));
    }
}
