//! Currencies and amounts in integer minor units.
//!
//! Amounts at rest and on the wire are `i64` minor units of the order's ISO 4217 currency.
//! Parsing a decimal string refuses anything the currency cannot represent exactly; every
//! arithmetic step is checked, so an overflow is an error and never a wrap.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

use super::exact::Exact;

/// Largest amount one order (or one line) may carry, in minor units: 10^15, i.e. ten
/// trillion CNY. Far beyond any real order, it leaves more than 9,000× headroom for
/// month counters that add orders up in an `i64`.
pub const MAX_ORDER_TOTAL_MINOR: i64 = 1_000_000_000_000_000;

/// An ISO 4217 currency with a defined minor unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Currency {
    code: iso_currency::Currency,
    exponent: u32,
}

impl Currency {
    /// Looks a code up; `None` for unknown codes and for those without a minor unit (XAU).
    pub fn parse(code: &str) -> Option<Currency> {
        let c = iso_currency::Currency::from_code(code)?;
        let exponent = u32::from(c.exponent()?);
        Some(Currency { code: c, exponent })
    }

    /// The three-letter code.
    pub fn code(&self) -> &'static str {
        self.code.code()
    }

    /// Number of fraction digits of the minor unit (2 for CNY, 0 for JPY, 3 for KWD).
    pub fn exponent(&self) -> u32 {
        self.exponent
    }

    /// 10^exponent: minor units per major unit.
    pub fn minor_per_major(&self) -> i64 {
        10i64.pow(self.exponent)
    }

    /// Renders minor units as a decimal string in major units ("129.90", "806").
    pub fn format(&self, minor: i64) -> String {
        major_text(minor, self.exponent)
    }

    /// Converts a decimal in major units to exact minor units (not necessarily whole).
    pub fn major_to_minor(&self, major: &Exact) -> Exact {
        major.mul(&Exact::int(i128::from(self.minor_per_major())))
    }
}

/// Largest exponent [`push_major`] renders itself: 10^18 fits in a u64.
const MAX_DIGITS_EXPONENT: u32 = 18;

/// Appends `minor` × 10^−`exponent` with `exponent` fraction digits: the text of
/// `Decimal::new(minor, exponent)` ("583.64", "0.05", "-1.20", "806"), written from the
/// integer's digits (a result renders one per share and total).
pub fn push_major(out: &mut String, minor: i64, exponent: u32) {
    if exponent > MAX_DIGITS_EXPONENT {
        // Exponents no currency has: the general rendering.
        out.push_str(&Decimal::new(minor, exponent).to_string());
        return;
    }
    let abs = minor.unsigned_abs();
    let scale = 10u64.pow(exponent);
    if minor < 0 {
        out.push('-');
    }
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(abs / scale));
    if exponent > 0 {
        out.push('.');
        let frac = digits.format(abs % scale);
        for _ in frac.len()..exponent as usize {
            out.push('0');
        }
        out.push_str(frac);
    }
}

/// [`push_major`] into a new string.
pub fn major_text(minor: i64, exponent: u32) -> String {
    let mut s = String::new();
    push_major(&mut s, minor, exponent);
    s
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why an amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a decimal number.
    #[error("not a decimal amount: {0:?}")]
    Syntax(String),
    /// More fraction digits than the currency has.
    #[error("{value} has more fraction digits than {currency} allows ({exponent})")]
    TooPrecise {
        /// The text as given.
        value: String,
        /// The currency code.
        currency: &'static str,
        /// The currency's exponent.
        exponent: u32,
    },
    /// Outside the range this service accepts.
    #[error("amount out of range (at most {MAX_ORDER_TOTAL_MINOR} minor units)")]
    Overflow,
    /// Below zero where only non-negative amounts make sense.
    #[error("must not be negative")]
    Negative,
}

/// Parses a decimal string in major units into whole minor units of `currency`.
/// Trailing zeros are accepted ("100.00" JPY is 100); digits the currency cannot hold are not.
pub fn parse_major(text: &str, currency: Currency) -> Result<i64, AmountError> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.len() > 40 {
        return Err(AmountError::Syntax(text.to_string()));
    }
    let d = Decimal::from_str_exact(trimmed).map_err(|_| AmountError::Syntax(text.to_string()))?;
    let d = d.normalize();
    if d.scale() > currency.exponent() {
        return Err(AmountError::TooPrecise {
            value: text.to_string(),
            currency: currency.code(),
            exponent: currency.exponent(),
        });
    }
    let minor = d
        .checked_mul(Decimal::from(currency.minor_per_major()))
        .ok_or(AmountError::Overflow)?;
    let minor = i64::try_from(minor.normalize()).map_err(|_| AmountError::Overflow)?;
    check_range(minor)
}

/// Checks that a minor-unit amount is within [0, MAX_ORDER_TOTAL_MINOR].
pub fn check_range(minor: i64) -> Result<i64, AmountError> {
    if minor < 0 {
        Err(AmountError::Negative)
    } else if minor > MAX_ORDER_TOTAL_MINOR {
        Err(AmountError::Overflow)
    } else {
        Ok(minor)
    }
}

/// Parses a decimal string (rates, thresholds) exactly; no float is ever involved.
pub fn parse_decimal(text: &str) -> Option<Decimal> {
    let t = text.trim();
    if t.is_empty() || t.len() > 40 {
        return None;
    }
    Decimal::from_str_exact(t)
        .or_else(|_| Decimal::from_str(t))
        .ok()
        .filter(|d| d.to_string().len() <= 40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_major_is_rust_decimals_text() {
        let mut values = vec![0, 1, -1, 5, 9, 10, 99, 100, 101, 12_345, -12_345, 1_000_000];
        values.extend([i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1]);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..2_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push((x >> (x % 64)) as i64);
        }
        for exponent in 0..=MAX_DIGITS_EXPONENT + 2 {
            for &v in &values {
                let mut out = String::from("x");
                push_major(&mut out, v, exponent);
                assert_eq!(
                    out,
                    format!("x{}", Decimal::new(v, exponent)),
                    "{v} at exponent {exponent}"
                );
            }
        }
    }

    fn cny() -> Currency {
        Currency::parse("CNY").unwrap()
    }

    #[test]
    fn currencies_know_their_minor_units() {
        assert_eq!(cny().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert!(Currency::parse("XXQ").is_none());
        assert!(Currency::parse("XAU").is_none());
    }

    #[test]
    fn decimal_strings_become_exact_minor_units() {
        assert_eq!(parse_major("129.90", cny()), Ok(12990));
        assert_eq!(parse_major("0.07", cny()), Ok(7));
        assert_eq!(parse_major("333", Currency::parse("JPY").unwrap()), Ok(333));
        assert_eq!(
            parse_major("100.00", Currency::parse("JPY").unwrap()),
            Ok(100)
        );
    }

    #[test]
    fn amounts_the_currency_cannot_hold_are_refused() {
        assert!(matches!(
            parse_major("10.001", cny()),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_major("99.5", Currency::parse("JPY").unwrap()),
            Err(AmountError::TooPrecise { .. })
        ));
        assert_eq!(parse_major("-1.00", cny()), Err(AmountError::Negative));
        assert_eq!(
            parse_major("99999999999999999999", cny()),
            Err(AmountError::Overflow)
        );
        assert!(matches!(
            parse_major("1e5", cny()),
            Err(AmountError::Syntax(_))
        ));
        assert!(matches!(
            parse_major("", cny()),
            Err(AmountError::Syntax(_))
        ));
    }

    #[test]
    fn minor_units_render_in_major_units() {
        assert_eq!(cny().format(13680), "136.80");
        assert_eq!(cny().format(7), "0.07");
        assert_eq!(Currency::parse("JPY").unwrap().format(806), "806");
    }
}
