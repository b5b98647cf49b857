//! Exact rational arithmetic for money computations.
//!
//! Every amount between parsing and the final rounding to minor units is an [`Exact`]:
//! a rational number that lives on `i128` while it fits and moves to a big-integer
//! rational when an operation would overflow. Results therefore equal exact rational
//! arithmetic whatever the order of operations (1/3 of 9.00 is exactly 3.00), and no
//! operation can wrap or lose a digit silently.

use std::cmp::Ordering;
use std::fmt;

use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::{BigRational, Ratio};
use num_traits::{CheckedAdd, CheckedMul, CheckedSub, One, Signed, ToPrimitive, Zero};
use rust_decimal::Decimal;

/// How an exact amount becomes whole minor units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// Toward zero (the default).
    Down,
    /// To nearest, halves away from zero.
    HalfUp,
    /// To nearest, halves to the even neighbour (banker's rounding).
    HalfEven,
}

/// An exact rational number.
#[derive(Clone, Debug)]
pub enum Exact {
    /// The common case: numerator and denominator fit in `i128`.
    Small(Ratio<i128>),
    /// After an overflow of the small form.
    Big(BigRational),
}

fn big(r: &Ratio<i128>) -> BigRational {
    BigRational::new_raw(BigInt::from(*r.numer()), BigInt::from(*r.denom()))
}

fn shrink(r: BigRational) -> Exact {
    match (r.numer().to_i128(), r.denom().to_i128()) {
        (Some(n), Some(d)) => Exact::Small(Ratio::new_raw(n, d)),
        _ => Exact::Big(r),
    }
}

impl Exact {
    /// Zero.
    pub fn zero() -> Self {
        Exact::Small(Ratio::zero())
    }

    /// One.
    pub fn one() -> Self {
        Exact::Small(Ratio::one())
    }

    /// An integer.
    pub fn int(n: i128) -> Self {
        Exact::Small(Ratio::from_integer(n))
    }

    /// n / d; `None` when d is zero.
    pub fn ratio(n: i128, d: i128) -> Option<Self> {
        if d == 0 {
            return None;
        }
        Some(Exact::Small(Ratio::new(n, d)))
    }

    /// The exact value of a decimal.
    pub fn from_decimal(d: Decimal) -> Self {
        let scale = d.scale();
        // A Decimal's scale is at most 28, and 10^28 < 2^127.
        let denom = 10i128.pow(scale);
        Exact::Small(Ratio::new(d.mantissa(), denom))
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        match self {
            Exact::Small(r) => r.is_zero(),
            Exact::Big(r) => r.is_zero(),
        }
    }

    /// True when the value is below zero.
    pub fn is_negative(&self) -> bool {
        match self {
            Exact::Small(r) => r.is_negative(),
            Exact::Big(r) => r.is_negative(),
        }
    }

    fn to_big(&self) -> BigRational {
        match self {
            Exact::Small(r) => big(r),
            Exact::Big(r) => r.clone(),
        }
    }

    /// self + other.
    pub fn add(&self, other: &Exact) -> Exact {
        if let (Exact::Small(a), Exact::Small(b)) = (self, other) {
            if let Some(r) = a.checked_add(b) {
                return Exact::Small(r);
            }
        }
        shrink(self.to_big() + other.to_big())
    }

    /// self - other.
    pub fn sub(&self, other: &Exact) -> Exact {
        if let (Exact::Small(a), Exact::Small(b)) = (self, other) {
            if let Some(r) = a.checked_sub(b) {
                return Exact::Small(r);
            }
        }
        shrink(self.to_big() - other.to_big())
    }

    /// self × other.
    pub fn mul(&self, other: &Exact) -> Exact {
        if let (Exact::Small(a), Exact::Small(b)) = (self, other) {
            if let Some(r) = a.checked_mul(b) {
                return Exact::Small(r);
            }
        }
        shrink(self.to_big() * other.to_big())
    }

    /// self ÷ other; `None` when other is zero.
    pub fn div(&self, other: &Exact) -> Option<Exact> {
        if other.is_zero() {
            return None;
        }
        if let (Exact::Small(a), Exact::Small(b)) = (self, other) {
            // a/b = (an·bd)/(ad·bn); checked through the reciprocal.
            let recip = Ratio::new_raw(*b.denom(), *b.numer());
            let recip = if recip.denom().is_negative() {
                Ratio::new_raw(-*recip.numer(), -*recip.denom())
            } else {
                recip
            };
            if let Some(r) = a.checked_mul(&recip) {
                return Some(Exact::Small(r));
            }
        }
        Some(shrink(self.to_big() / other.to_big()))
    }

    /// self^n for small n.
    pub fn pow(&self, n: u32) -> Exact {
        let mut acc = Exact::one();
        for _ in 0..n {
            acc = acc.mul(self);
        }
        acc
    }

    /// The smaller of two values.
    pub fn min(self, other: Exact) -> Exact {
        if other < self {
            other
        } else {
            self
        }
    }

    /// Rounds to an integer with the given mode; `None` if it does not fit in i64.
    pub fn round_to_i64(&self, mode: Rounding) -> Option<i64> {
        match self {
            Exact::Small(r) => round_small(r, mode).and_then(|v| i64::try_from(v).ok()),
            Exact::Big(r) => round_big(r, mode).to_i64(),
        }
    }
}

/// Display without leaving i128 (explanations render a few dozen rates per split).
fn fmt_small(r: &Ratio<i128>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let (n, d) = (*r.numer(), *r.denom());
    if d == 1 {
        return write!(f, "{n}");
    }
    let (mut rest, mut twos, mut fives) = (d, 0u32, 0u32);
    while rest % 2 == 0 {
        rest /= 2;
        twos += 1;
    }
    while rest % 5 == 0 {
        rest /= 5;
        fives += 1;
    }
    let digits = twos.max(fives);
    if rest == 1 && digits <= 28 {
        // n/d = n·(10^k/d) / 10^k, and 10^k/d is an integer when d = 2^a·5^b, k = max(a, b).
        let scale = 10i128.pow(digits) / d;
        if let Some(m) = n.checked_mul(scale) {
            if let Ok(dec) = Decimal::try_from_i128_with_scale(m, digits) {
                return write!(f, "{}", dec.normalize());
            }
        }
    }
    write!(f, "{n}/{d}")
}

fn round_small(r: &Ratio<i128>, mode: Rounding) -> Option<i128> {
    let (n, d) = (*r.numer(), *r.denom()); // d > 0 after normalisation
    let (q, rem) = n.div_rem(&d); // truncating division
    match mode {
        Rounding::Down => Some(q),
        Rounding::HalfUp | Rounding::HalfEven => {
            if rem == 0 {
                return Some(q);
            }
            // Compare 2·|rem| with d without overflow: |rem| < d, so compare |rem| with d - |rem|.
            let arem = rem.abs();
            let other = d - arem;
            let away = match arem.cmp(&other) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => match mode {
                    Rounding::HalfUp => true,
                    _ => q % 2 != 0,
                },
            };
            if !away {
                Some(q)
            } else if n.is_negative() {
                q.checked_sub(1)
            } else {
                q.checked_add(1)
            }
        }
    }
}

fn round_big(r: &BigRational, mode: Rounding) -> BigInt {
    let (q, rem) = r.numer().div_rem(r.denom());
    if mode == Rounding::Down || rem.is_zero() {
        return q;
    }
    let twice: BigInt = rem.abs() * 2;
    let away = match twice.cmp(r.denom()) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => match mode {
            Rounding::HalfUp => true,
            _ => q.is_odd(),
        },
    };
    if !away {
        q
    } else if r.numer().is_negative() {
        q - 1
    } else {
        q + 1
    }
}

impl PartialEq for Exact {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Exact {}

impl PartialOrd for Exact {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Exact {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Exact::Small(a), Exact::Small(b)) => a.cmp(b),
            _ => self.to_big().cmp(&other.to_big()),
        }
    }
}

impl fmt::Display for Exact {
    /// `n` for integers, `n/d` otherwise; a terminating decimal is shown as a decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Exact::Small(r) = self {
            return fmt_small(r, f);
        }
        let r = self.to_big();
        if r.is_integer() {
            return write!(f, "{}", r.numer());
        }
        // A fraction whose denominator has only the prime factors 2 and 5 terminates.
        let mut d = r.denom().clone();
        let (two, five) = (BigInt::from(2), BigInt::from(5));
        let mut digits = 0u32;
        while (&d % &two).is_zero() || (&d % &five).is_zero() {
            if (&d % &two).is_zero() {
                d /= &two;
            } else {
                d /= &five;
            }
            digits += 1;
        }
        if d.is_one() && digits <= 28 {
            let scaled = r.numer() * BigInt::from(10).pow(digits) / r.denom();
            if let Some(m) = scaled.to_i128() {
                if let Ok(dec) = Decimal::try_from_i128_with_scale(m, digits) {
                    return write!(f, "{}", dec.normalize());
                }
            }
        }
        write!(f, "{}/{}", r.numer(), r.denom())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Exact {
        Exact::from_decimal(Decimal::from_str(s).unwrap())
    }

    #[test]
    fn a_third_of_nine_is_exactly_three() {
        let third = Exact::ratio(1, 3).unwrap();
        assert_eq!(dec("9.00").mul(&third), Exact::int(3));
    }

    #[test]
    fn overflow_moves_to_big_and_comes_back_exactly() {
        let huge = Exact::int(i128::MAX / 2);
        let sq = huge.mul(&huge);
        assert!(matches!(sq, Exact::Big(_)));
        let back = sq.div(&huge).unwrap();
        assert_eq!(back, huge);
        assert!(matches!(back, Exact::Small(_)));
    }

    #[test]
    fn rounding_modes_round_halves_as_named() {
        let cases = [
            ("2.5", 2, 3, 2),
            ("3.5", 3, 4, 4),
            ("2.4999", 2, 2, 2),
            ("2.5001", 2, 3, 3),
            ("-2.5", -2, -3, -2),
        ];
        for (v, down, half_up, half_even) in cases {
            let x = dec(v);
            assert_eq!(x.round_to_i64(Rounding::Down), Some(down), "{v} down");
            assert_eq!(
                x.round_to_i64(Rounding::HalfUp),
                Some(half_up),
                "{v} half_up"
            );
            assert_eq!(
                x.round_to_i64(Rounding::HalfEven),
                Some(half_even),
                "{v} half_even"
            );
        }
    }

    #[test]
    fn big_values_round_like_small_ones() {
        let base = Exact::int(i128::MAX / 3);
        let x = base.mul(&Exact::int(4)).add(&Exact::ratio(1, 2).unwrap());
        let y = x.sub(&base.mul(&Exact::int(4)));
        assert_eq!(y.round_to_i64(Rounding::HalfEven), Some(0));
        assert_eq!(y.round_to_i64(Rounding::HalfUp), Some(1));
    }

    #[test]
    fn display_shows_terminating_fractions_as_decimals() {
        assert_eq!(dec("0.125").to_string(), "0.125");
        assert_eq!(Exact::ratio(1, 3).unwrap().to_string(), "1/3");
        assert_eq!(Exact::int(7).to_string(), "7");
    }

    #[test]
    fn division_by_zero_is_refused() {
        assert!(Exact::one().div(&Exact::zero()).is_none());
        assert!(Exact::ratio(1, 0).is_none());
    }
}
