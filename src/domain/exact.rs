//! Exact rational arithmetic for money computations.
//!
//! Every amount between parsing and the final rounding to minor units is an [`Exact`]:
//! a rational number that lives on `i128` while it fits and moves to a big-integer
//! rational when an operation would overflow. Results therefore equal exact rational
//! arithmetic whatever the order of operations (1/3 of 9.00 is exactly 3.00), and no
//! operation can wrap or lose a digit silently.

use std::cmp::Ordering;
use std::fmt;

use super::split::{Figure, Text};
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
    /// `m / 10^s` with `s ≤ 18` and `m ≠ i64::MIN`, not necessarily normalised: what
    /// nearly every value of a split is (a decimal rate, an amount in minor units, their
    /// product and sums). Adds, products, comparisons, rounding and text of two such values
    /// need no gcd; anything else, or an overflow, continues as [`Exact::Small`].
    Dec(i64, u32),
    /// Numerator and denominator fit in `i128` (reduced, positive denominator).
    Small(Ratio<i128>),
    /// After an overflow of the small form. Boxed: it is rare, and unboxed it would make
    /// every value 64 bytes instead of 48 (the engine moves dozens of values per split).
    Big(Box<BigRational>),
}

fn big(r: &Ratio<i128>) -> BigRational {
    BigRational::new_raw(BigInt::from(*r.numer()), BigInt::from(*r.denom()))
}

fn shrink(r: BigRational) -> Exact {
    match (r.numer().to_i128(), r.denom().to_i128()) {
        (Some(n), Some(d)) => Exact::Small(Ratio::new_raw(n, d)),
        _ => Exact::Big(Box::new(r)),
    }
}

// ---------------------------------------------------------------- decimal fast path

/// Largest scale of [`Exact::Dec`]: 10^18 < 2^63, so its denominator is narrow.
const DEC_MAX_SCALE: u32 = 18;

/// `Dec(m, s)` unless `m` is `i64::MIN` (excluded so that negation never overflows).
#[inline]
fn dec(m: i64, s: u32) -> Option<Exact> {
    (m != i64::MIN).then_some(Exact::Dec(m, s))
}

/// 10^k as an i64, k ≤ 18.
#[inline]
fn pow10_i64(k: u32) -> i64 {
    POW10[k as usize] as i64
}

/// m1/10^s1 + m2/10^s2 on i64 at the larger scale; `None` on overflow.
#[inline]
fn dec_add(m1: i64, s1: u32, m2: i64, s2: u32) -> Option<Exact> {
    let (a, b, s) = match s1.cmp(&s2) {
        Ordering::Equal => (m1, m2, s1),
        Ordering::Less => (m1.checked_mul(pow10_i64(s2 - s1))?, m2, s2),
        Ordering::Greater => (m1, m2.checked_mul(pow10_i64(s1 - s2))?, s1),
    };
    dec(a.checked_add(b)?, s)
}

/// (m1/10^s1)·(m2/10^s2) on i64; `None` on overflow or a scale above 18.
#[inline]
fn dec_mul(m1: i64, s1: u32, m2: i64, s2: u32) -> Option<Exact> {
    let s = s1 + s2;
    if s > DEC_MAX_SCALE {
        return None;
    }
    dec(m1.checked_mul(m2)?, s)
}

/// The reduced narrow (n, d) of m/10^s.
#[inline]
fn dec_narrow(m: i64, s: u32) -> (i64, i64) {
    if s == 0 || m == 0 {
        return (m, 1);
    }
    let d = POW10[s as usize];
    let g = gcd_u64(m.unsigned_abs(), d);
    (m / g as i64, (d / g) as i64)
}

/// The text of m/10^s: what [`render_narrow`] writes for the same value (the shortest
/// decimal, no trailing zeros), straight from the digits.
fn render_dec(m: i64, s: u32) -> Backwards {
    let mut t = Backwards::new();
    let written = t.decimal(m.unsigned_abs(), s);
    debug_assert!(written, "a Dec has at most 18 fraction digits");
    if m < 0 {
        t.byte(b'-');
    }
    t
}

/// The narrow (n, d) of a `Dec` or a narrow `Small`.
#[inline]
fn narrow_of(x: &Exact) -> Option<(i64, i64)> {
    match x {
        Exact::Dec(m, s) => Some(dec_narrow(*m, *s)),
        Exact::Small(r) => narrow(r),
        Exact::Big(_) => None,
    }
}

/// A `Dec` or `Small` as a reduced `Ratio<i128>`.
#[inline]
fn small_of(x: &Exact) -> Option<Ratio<i128>> {
    match x {
        Exact::Dec(m, s) => {
            let (n, d) = dec_narrow(*m, *s);
            Some(Ratio::new_raw(i128::from(n), i128::from(d)))
        }
        Exact::Small(r) => Some(*r),
        Exact::Big(_) => None,
    }
}

// ---------------------------------------------------------------- 64-bit fast path
//
// Almost every value of a split (rates with a few decimals, amounts in minor units) has
// a numerator and a denominator below 2^63. For those, the products and sums below fit in
// i128 without any check, the gcds run on u64 (binary gcd, no division) and the
// divisions are hardware u64 divisions. The results are the same reduced fractions that
// `Ratio<i128>` computes (a reduced fraction with a positive denominator is unique), so
// the value, and whether it is `Small` or `Big`, never depends on the path taken.

/// `(n, d)` of a reduced `Small` when |n| < 2^63 and 0 < d < 2^63.
#[inline]
fn narrow(r: &Ratio<i128>) -> Option<(i64, i64)> {
    let n = i64::try_from(*r.numer()).ok()?;
    let d = i64::try_from(*r.denom()).ok()?;
    (n != i64::MIN).then_some((n, d))
}

/// Binary gcd; gcd(0, b) = b.
#[inline]
fn gcd_u64(mut a: u64, mut b: u64) -> u64 {
    if a == 0 {
        return b;
    }
    if b == 0 {
        return a;
    }
    if a == 1 || b == 1 {
        return 1;
    }
    let shift = (a | b).trailing_zeros();
    a >>= a.trailing_zeros();
    loop {
        b >>= b.trailing_zeros();
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        b -= a;
        if b == 0 {
            return a << shift;
        }
    }
}

/// x / g for g > 0, on u64 when x fits.
#[inline]
fn div_u128(x: u128, g: u64) -> u128 {
    match u64::try_from(x) {
        Ok(x) => u128::from(x / g),
        Err(_) => x / u128::from(g),
    }
}

/// x mod g for g > 0, on u64 when x fits.
#[inline]
fn rem_u128(x: u128, g: u64) -> u64 {
    match u64::try_from(x) {
        Ok(x) => x % g,
        Err(_) => (x % u128::from(g)) as u64,
    }
}

/// ±magnitude as an i128 (magnitude < 2^127).
#[inline]
fn signed(negative: bool, magnitude: u128) -> i128 {
    let m = magnitude as i128;
    if negative {
        -m
    } else {
        m
    }
}

/// (n1/d1)·(n2/d2), both reduced and narrow. Cross-cancelling first leaves the product
/// reduced: gcd(n1/g1 · n2/g2, d1/g2 · d2/g1) = 1.
#[inline]
fn mul_narrow((n1, d1): (i64, i64), (n2, d2): (i64, i64)) -> Ratio<i128> {
    if n1 == 0 || n2 == 0 {
        return Ratio::zero();
    }
    // A factor of 1 needs no gcd, and a gcd of 1 no division (an integer amount times a
    // rate is the common case: one of the two gcds is skipped, often both divisions).
    let g1 = if d2 == 1 {
        1
    } else {
        gcd_u64(n1.unsigned_abs(), d2 as u64) as i64
    };
    let g2 = if d1 == 1 {
        1
    } else {
        gcd_u64(n2.unsigned_abs(), d1 as u64) as i64
    };
    let (n1, d2) = if g1 == 1 {
        (n1, d2)
    } else {
        (n1 / g1, d2 / g1)
    };
    let (n2, d1) = if g2 == 1 {
        (n2, d1)
    } else {
        (n2 / g2, d1 / g2)
    };
    // Each factor is below 2^63, so each product is below 2^126.
    Ratio::new_raw(
        i128::from(n1) * i128::from(n2),
        i128::from(d1) * i128::from(d2),
    )
}

/// (n1/d1) + (n2/d2), both reduced and narrow (Knuth 4.5.1: with g = gcd(d1, d2), the
/// only common factors of the new numerator and denominator divide g).
#[inline]
fn add_narrow((n1, d1): (i64, i64), (n2, d2): (i64, i64)) -> Ratio<i128> {
    if n2 == 0 {
        return Ratio::new_raw(i128::from(n1), i128::from(d1));
    }
    if n1 == 0 {
        return Ratio::new_raw(i128::from(n2), i128::from(d2));
    }
    if d1 == d2 {
        // |n1 + n2| < 2^64.
        let n = i128::from(n1) + i128::from(n2);
        if n == 0 {
            return Ratio::zero();
        }
        if d1 == 1 {
            // Two integers (most amounts): nothing to reduce.
            return Ratio::new_raw(n, 1);
        }
        let m = n.unsigned_abs() as u64;
        let g = gcd_u64(m, d1 as u64);
        if g == 1 {
            return Ratio::new_raw(n, i128::from(d1));
        }
        return Ratio::new_raw(signed(n < 0, u128::from(m / g)), i128::from(d1 / g as i64));
    }
    let g = gcd_u64(d1 as u64, d2 as u64) as i64;
    let (e1, e2) = if g == 1 { (d1, d2) } else { (d1 / g, d2 / g) };
    // |n1·e2| and |n2·e1| are below 2^126: the sum cannot overflow.
    let t = i128::from(n1) * i128::from(e2) + i128::from(n2) * i128::from(e1);
    if t == 0 {
        return Ratio::zero();
    }
    let d = i128::from(d1) * i128::from(e2);
    if g == 1 {
        return Ratio::new_raw(t, d);
    }
    let m = t.unsigned_abs();
    let h = gcd_u64(rem_u128(m, g as u64), g as u64);
    if h == 1 {
        return Ratio::new_raw(t, d);
    }
    Ratio::new_raw(
        signed(t < 0, div_u128(m, h)),
        div_u128(d as u128, h) as i128,
    )
}

/// −(n/d) of a narrow value (narrow values exclude i64::MIN).
#[inline]
fn neg_narrow((n, d): (i64, i64)) -> (i64, i64) {
    (-n, d)
}

/// 1/(n/d) of a narrow, non-zero value, with a positive denominator.
#[inline]
fn recip_narrow((n, d): (i64, i64)) -> (i64, i64) {
    if n < 0 {
        (-d, -n)
    } else {
        (d, n)
    }
}

impl Exact {
    /// Zero.
    pub fn zero() -> Self {
        Exact::Dec(0, 0)
    }

    /// One.
    pub fn one() -> Self {
        Exact::Dec(1, 0)
    }

    /// An integer.
    pub fn int(n: i128) -> Self {
        match i64::try_from(n).ok().and_then(|m| dec(m, 0)) {
            Some(x) => x,
            None => Exact::Small(Ratio::from_integer(n)),
        }
    }

    /// n / d; `None` when d is zero.
    pub fn ratio(n: i128, d: i128) -> Option<Self> {
        if d == 0 {
            return None;
        }
        // Reduced on u64 when both fit (an order's sales over 10^exponent, per order).
        if let (Ok(n64), Ok(d64)) = (i64::try_from(n), i64::try_from(d)) {
            if n64 != i64::MIN && d64 != i64::MIN {
                let g = gcd_u64(n64.unsigned_abs(), d64.unsigned_abs()) as i64;
                let (n, d) = (n64 / g, d64 / g);
                let (n, d) = if d < 0 { (-n, -d) } else { (n, d) };
                return Some(Exact::Small(Ratio::new_raw(i128::from(n), i128::from(d))));
            }
        }
        Some(Exact::Small(Ratio::new(n, d)))
    }

    /// The exact value of a decimal.
    pub fn from_decimal(d: Decimal) -> Self {
        let scale = d.scale();
        if scale <= DEC_MAX_SCALE {
            if let Some(x) = i64::try_from(d.mantissa()).ok().and_then(|m| dec(m, scale)) {
                return x;
            }
        }
        // A Decimal's scale is at most 28, and 10^28 < 2^127.
        let denom = 10i128.pow(scale);
        Exact::Small(Ratio::new(d.mantissa(), denom))
    }

    /// True when the value is zero.
    pub fn is_zero(&self) -> bool {
        match self {
            Exact::Dec(m, _) => *m == 0,
            Exact::Small(r) => r.is_zero(),
            Exact::Big(r) => r.is_zero(),
        }
    }

    /// True when the value is one.
    pub fn is_one(&self) -> bool {
        match self {
            Exact::Dec(m, s) => *m == pow10_i64(*s),
            Exact::Small(r) => r.is_one(),
            Exact::Big(r) => r.is_one(),
        }
    }

    /// True when the value is below zero.
    pub fn is_negative(&self) -> bool {
        match self {
            Exact::Dec(m, _) => *m < 0,
            Exact::Small(r) => r.is_negative(),
            Exact::Big(r) => r.is_negative(),
        }
    }

    fn to_big(&self) -> BigRational {
        match self {
            Exact::Dec(m, s) => {
                BigRational::new(BigInt::from(*m), BigInt::from(POW10[*s as usize]))
            }
            Exact::Small(r) => big(r),
            Exact::Big(r) => (**r).clone(),
        }
    }

    /// One operation through its tiers: two `Dec`s on i64, narrow values with u64 gcds,
    /// `Ratio<i128>` with overflow checks, then big rationals; each tier exact, each
    /// taken only when the one before it does not apply or would overflow.
    #[inline(always)]
    fn tiers(
        &self,
        other: &Exact,
        dec: impl FnOnce(i64, u32, i64, u32) -> Option<Exact>,
        narrow: impl FnOnce((i64, i64), (i64, i64)) -> Ratio<i128>,
        small: impl FnOnce(&Ratio<i128>, &Ratio<i128>) -> Option<Ratio<i128>>,
        big: impl FnOnce(BigRational, BigRational) -> BigRational,
    ) -> Exact {
        if let (Exact::Dec(m1, s1), Exact::Dec(m2, s2)) = (self, other) {
            if let Some(x) = dec(*m1, *s1, *m2, *s2) {
                return x;
            }
        }
        if let (Some(x), Some(y)) = (narrow_of(self), narrow_of(other)) {
            return Exact::Small(narrow(x, y));
        }
        if let (Some(a), Some(b)) = (small_of(self), small_of(other)) {
            if let Some(r) = small(&a, &b) {
                return Exact::Small(r);
            }
        }
        shrink(big(self.to_big(), other.to_big()))
    }

    /// self + other.
    pub fn add(&self, other: &Exact) -> Exact {
        self.tiers(
            other,
            dec_add,
            add_narrow,
            |a, b| a.checked_add(b),
            |x, y| x + y,
        )
    }

    /// self - other.
    pub fn sub(&self, other: &Exact) -> Exact {
        self.tiers(
            other,
            // m2 ≠ i64::MIN: its negation cannot overflow.
            |m1, s1, m2, s2| dec_add(m1, s1, -m2, s2),
            |x, y| add_narrow(x, neg_narrow(y)),
            |a, b| a.checked_sub(b),
            |x, y| x - y,
        )
    }

    /// self × other.
    pub fn mul(&self, other: &Exact) -> Exact {
        self.tiers(
            other,
            dec_mul,
            mul_narrow,
            |a, b| a.checked_mul(b),
            |x, y| x * y,
        )
    }

    /// self ÷ other; `None` when other is zero.
    pub fn div(&self, other: &Exact) -> Option<Exact> {
        if other.is_zero() {
            return None;
        }
        if let (Some(x), Some(y)) = (narrow_of(self), narrow_of(other)) {
            return Some(Exact::Small(mul_narrow(x, recip_narrow(y))));
        }
        if let (Some(a), Some(b)) = (small_of(self), small_of(other)) {
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

    /// The `Display` text as a result [`Text`]: built in place, without an allocation
    /// when it fits inline (24 bytes, every rate and amount of an ordinary split).
    pub fn to_text(&self) -> Text {
        match self {
            Exact::Dec(m, s) => match (*m, *s) {
                (0, _) => Text::const_new("0"),
                (1, 0) => Text::const_new("1"),
                (m, 0) => Text::from(itoa::Buffer::new().format(m)),
                (m, s) => Text::from(render_dec(m, s).as_str()),
            },
            Exact::Small(r) => match narrow(r) {
                // Weights of a single promoter, and empty amounts.
                Some((1, 1)) => Text::const_new("1"),
                Some((0, _)) => Text::const_new("0"),
                // Integers (most exact amounts) through itoa, with no buffer to validate.
                Some((n, 1)) => Text::from(itoa::Buffer::new().format(n)),
                Some((n, d)) => Text::from(render_narrow(n, d).as_str()),
                None => compact_str::ToCompactString::to_compact_string(self),
            },
            Exact::Big(_) => compact_str::ToCompactString::to_compact_string(self),
        }
    }

    /// The value as a result [`Figure`]: kept as the value when it is narrow (every rate,
    /// weight and amount of an ordinary split), to be rendered when the result is written;
    /// rendered now otherwise. Its text is [`Exact::to_text`]'s.
    pub fn to_figure(&self) -> Figure {
        match self {
            Exact::Dec(m, s) => Figure::Dec(*m, *s),
            Exact::Small(r) => match narrow(r) {
                Some((n, d)) => Figure::Ratio(n, d),
                None => Figure::Text(self.to_text()),
            },
            Exact::Big(_) => Figure::Text(self.to_text()),
        }
    }

    /// Rounds to an integer with the given mode; `None` if it does not fit in i64.
    pub fn round_to_i64(&self, mode: Rounding) -> Option<i64> {
        match self {
            // m/10^s as it stands: rounding needs no reduced form.
            Exact::Dec(m, s) => Some(round_narrow(*m, pow10_i64(*s), mode)),
            Exact::Small(r) => match narrow(r) {
                Some((n, d)) => Some(round_narrow(n, d, mode)),
                None => round_small(r, mode).and_then(|v| i64::try_from(v).ok()),
            },
            Exact::Big(r) => round_big(r, mode).to_i64(),
        }
    }
}

/// Calls `f` with the text of `Dec(m, s)` ([`Figure::Dec`]), rendered on the stack.
#[inline]
pub(crate) fn with_dec_text<R>(m: i64, s: u32, f: impl FnOnce(&str) -> R) -> R {
    f(render_dec(m, s).as_str())
}

/// Calls `f` with the text of the narrow `n / d` ([`Figure::Ratio`]), rendered on the stack.
#[inline]
pub(crate) fn with_narrow_text<R>(n: i64, d: i64, f: impl FnOnce(&str) -> R) -> R {
    f(render_narrow(n, d).as_str())
}

/// `Dec(m, s)` as its text's parts: (negative, whole part, fraction, fraction digits `k`),
/// trailing zeros of the fraction dropped, so that the text is `-`? whole (`.` the
/// fraction zero-padded to `k` digits)? — what [`render_dec`] writes.
#[inline]
pub(crate) fn dec_parts(m: i64, s: u32) -> (bool, u64, u64, u32) {
    let (a, k) = without_trailing_zeros(m.unsigned_abs(), s);
    let unit = POW10[k as usize];
    (m < 0, a / unit, a % unit, k)
}

/// a / 10^k as the same value with no trailing zero in its fraction.
#[inline]
fn without_trailing_zeros(mut a: u64, mut k: u32) -> (u64, u32) {
    while k > 0 && a % 10 == 0 {
        a /= 10;
        k -= 1;
    }
    (a, k)
}

/// Text written right to left into a stack buffer, then handed to the formatter once.
/// Large enough for `-n/d` with 19-digit n and d, and for `-w.f` with 29 digits and 28
/// fraction digits.
struct Backwards {
    buf: [u8; 64],
    start: usize,
}

impl Backwards {
    fn new() -> Self {
        Backwards {
            buf: [0; 64],
            start: 64,
        }
    }
    fn byte(&mut self, b: u8) {
        self.start -= 1;
        self.buf[self.start] = b;
    }
    /// Exactly `width` digits of `x` (x < 10^width), zero-padded on the left.
    fn digits_exact(&mut self, mut x: u64, mut width: u32) {
        while width >= 2 {
            self.pair(x % 100);
            x /= 100;
            width -= 2;
        }
        if width == 1 {
            self.byte(b'0' + (x % 10) as u8);
        }
    }
    /// The digits of `x`, at least one.
    fn uint(&mut self, mut x: u64) {
        while x >= 100 {
            self.pair(x % 100);
            x /= 100;
        }
        if x >= 10 {
            self.pair(x);
        } else {
            self.byte(b'0' + x as u8);
        }
    }
    /// The two digits of `x` < 100, from a table: one division per two digits.
    fn pair(&mut self, x: u64) {
        let i = 2 * x as usize;
        self.start -= 2;
        self.buf[self.start..self.start + 2].copy_from_slice(&DIGIT_PAIRS[i..i + 2]);
    }
    /// a / 10^k without trailing zeros: the whole part (0 if none), then the point and
    /// the fraction if one is left. `false`, writing nothing, when more than 19 fraction
    /// digits are left (a u128 matter).
    fn decimal(&mut self, a: u64, k: u32) -> bool {
        let (a, k) = without_trailing_zeros(a, k);
        if k > 19 {
            return false;
        }
        let unit = POW10[k as usize];
        if k > 0 {
            self.digits_exact(a % unit, k);
            self.byte(b'.');
        }
        self.uint(a / unit);
        true
    }
    /// The digits of a u128, in 19-digit chunks of u64 arithmetic.
    fn uint128(&mut self, mut x: u128) {
        while x > u128::from(u64::MAX) {
            self.digits_exact((x % POW10_19) as u64, 19);
            x /= POW10_19;
        }
        self.uint(x as u64);
    }
    /// Exactly `width` digits of a u128 (x < 10^width).
    fn digits_exact128(&mut self, mut x: u128, mut width: u32) {
        while width > 19 {
            self.digits_exact((x % POW10_19) as u64, 19);
            x /= POW10_19;
            width -= 19;
        }
        self.digits_exact(x as u64, width);
    }
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[self.start..]).expect("ASCII")
    }
}

const POW10_19: u128 = 10_000_000_000_000_000_000;

/// "00", "01", … "99".
const DIGIT_PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// 10^0 ..= 10^19.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// 5^0 ..= 5^28.
const POW5: [u128; 29] = {
    let mut t = [1u128; 29];
    let mut i = 1;
    while i < 29 {
        t[i] = t[i - 1] * 5;
        i += 1;
    }
    t
};

/// Largest mantissa of a `Decimal` (2^96 − 1): beyond it [`fmt_small`] shows `n/d`.
const MAX_DECIMAL_MANTISSA: u128 = (1 << 96) - 1;

/// The text of [`fmt_small`] for a narrow value, without `Decimal` or `i128` division.
fn render_narrow(n: i64, d: i64) -> Backwards {
    let mut t = Backwards::new();
    let (neg, m) = (n < 0, n.unsigned_abs());
    if d == 1 {
        t.uint(m);
        if neg {
            t.byte(b'-');
        }
        return t;
    }
    let du = d as u64;
    let twos = du.trailing_zeros();
    let (mut rest, mut fives) = (du >> twos, 0u32);
    while rest % 5 == 0 {
        rest /= 5;
        fives += 1;
    }
    let digits = twos.max(fives);
    if rest == 1 && digits <= 28 {
        // 10^k / d = 2^(k−a)·5^(k−b) for d = 2^a·5^b, k = max(a, b); at most 10^28.
        let scale = (1u128 << (digits - twos)) * POW5[(digits - fives) as usize];
        if let Some(mantissa) = u128::from(m)
            .checked_mul(scale)
            .filter(|v| *v <= MAX_DECIMAL_MANTISSA)
        {
            // What `Decimal` prints after `normalize`: sign, whole part (0 if none), the
            // point and the fraction without trailing zeros (a reduced n/d has none, but
            // the text must not depend on that).
            let written = u64::try_from(mantissa).is_ok_and(|small| t.decimal(small, digits));
            if !written {
                let (mut mantissa, mut k) = (mantissa, digits);
                while k > 0 && mantissa % 10 == 0 {
                    mantissa /= 10;
                    k -= 1;
                }
                let unit = 10u128.pow(k);
                if k > 0 {
                    t.digits_exact128(mantissa % unit, k);
                    t.byte(b'.');
                }
                t.uint128(mantissa / unit);
            }
            if neg {
                t.byte(b'-');
            }
            return t;
        }
    }
    t.uint(du);
    t.byte(b'/');
    t.uint(m);
    if neg {
        t.byte(b'-');
    }
    t
}

/// Display without leaving i128 (explanations render a few dozen rates per split).
fn fmt_small(r: &Ratio<i128>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    if let Some((n, d)) = narrow(r) {
        return f.write_str(render_narrow(n, d).as_str());
    }
    fmt_wide(r, f)
}

/// [`fmt_small`] without the 64-bit fast path: every small value renders this way (the
/// fast path is tested against it).
fn fmt_wide(r: &Ratio<i128>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// [`round_small`] on a narrow value (d > 0): cannot overflow, |q| < |n| when rem ≠ 0.
fn round_narrow(n: i64, d: i64, mode: Rounding) -> i64 {
    if d == 1 {
        return n;
    }
    let (q, rem) = (n / d, n % d);
    match mode {
        Rounding::Down => q,
        Rounding::HalfUp | Rounding::HalfEven => {
            if rem == 0 {
                return q;
            }
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
                q
            } else if n < 0 {
                q - 1
            } else {
                q + 1
            }
        }
    }
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
        if let (Exact::Dec(m1, s1), Exact::Dec(m2, s2)) = (self, other) {
            // At the larger scale: |m| < 2^63 and 10^18 < 2^60, so both fit in i128.
            let s = (*s1).max(*s2);
            let a = i128::from(*m1) * i128::from(POW10[(s - s1) as usize]);
            let b = i128::from(*m2) * i128::from(POW10[(s - s2) as usize]);
            return a.cmp(&b);
        }
        match (narrow_of(self), narrow_of(other)) {
            // d > 0: n1/d1 ? n2/d2 ⇔ n1·d2 ? n2·d1, exactly in i128.
            (Some((n1, d1)), Some((n2, d2))) => {
                (i128::from(n1) * i128::from(d2)).cmp(&(i128::from(n2) * i128::from(d1)))
            }
            _ => match (small_of(self), small_of(other)) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => self.to_big().cmp(&other.to_big()),
            },
        }
    }
}

impl fmt::Display for Exact {
    /// `n` for integers, `n/d` otherwise; a terminating decimal is shown as a decimal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exact::Dec(m, s) => return f.write_str(render_dec(*m, *s).as_str()),
            Exact::Small(r) => return fmt_small(r, f),
            Exact::Big(_) => {}
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

    /// The pre-fast-path `Display` of a small value, the oracle of the fast path.
    fn reference_fmt_small(r: &Ratio<i128>) -> String {
        struct Wide<'a>(&'a Ratio<i128>);
        impl fmt::Display for Wide<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_wide(self.0, f)
            }
        }
        Wide(r).to_string()
    }

    /// Exact arithmetic on big rationals, back to `Small` whenever it fits: what every
    /// operation must return, whatever path it takes.
    fn reference(op: u8, a: &Exact, b: &Exact) -> Option<Exact> {
        let (x, y) = (a.to_big(), b.to_big());
        Some(shrink(match op {
            0 => x + y,
            1 => x - y,
            2 => x * y,
            _ => {
                if y.is_zero() {
                    return None;
                }
                x / y
            }
        }))
    }

    /// The same value in the same form, a `Dec` taken as the reduced `Small` it equals
    /// (whether a result is `Dec` depends on its operands, not only on its value).
    fn same(a: &Exact, b: &Exact) -> bool {
        let canon = |x: &Exact| match x {
            Exact::Dec(..) => Exact::Small(small_of(x).expect("a Dec is small")),
            _ => x.clone(),
        };
        match (&canon(a), &canon(b)) {
            (Exact::Small(x), Exact::Small(y)) => x.numer() == y.numer() && x.denom() == y.denom(),
            (Exact::Big(x), Exact::Big(y)) => x.numer() == y.numer() && x.denom() == y.denom(),
            _ => false,
        }
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = self.0;
            x ^ (x >> 29)
        }
        fn bits(&mut self, max: u32) -> u64 {
            let b = (self.next() % u64::from(max + 1)) as u32;
            if b == 0 {
                0
            } else {
                self.next() >> (64 - b)
            }
        }
    }

    /// Values around every boundary of the fast path: decimal rates, amounts, thirds,
    /// numerators and denominators near 2^63 and beyond.
    fn sample(g: &mut Lcg) -> Exact {
        if g.next() % 3 == 0 {
            // Decimals: rates, amounts, their products; mantissas up to i64::MAX.
            let m = match g.next() % 4 {
                0 => g.bits(20) as i64,
                1 => g.bits(40) as i64,
                2 => i64::MAX - g.bits(3) as i64,
                _ => (g.bits(8) * 10u64.pow((g.next() % 6) as u32)) as i64,
            };
            let m = if g.next() % 2 == 0 { m } else { -m };
            return Exact::Dec(m, (g.next() % 19) as u32);
        }
        let n: i128 = match g.next() % 8 {
            0 => i128::from(g.bits(20)),
            1 => i128::from(g.bits(40)),
            2 => i128::from(g.bits(63)),
            3 => i128::from(i64::MAX) - i128::from(g.bits(3)),
            4 => i128::from(i64::MAX) + i128::from(g.bits(3)),
            5 => i128::from(g.bits(63)) << (g.next() % 60),
            6 => i128::from(g.bits(8)),
            _ => 0,
        };
        let n = if g.next() % 2 == 0 { n } else { -n };
        let d: i128 = match g.next() % 8 {
            0 => 1,
            1 => 10i128.pow((g.next() % 12) as u32),
            2 => (1i128 << (g.next() % 63)) * 5i128.pow((g.next() % 27) as u32) % (1 << 100) + 1,
            3 => i128::from(g.bits(10)) + 1,
            4 => i128::from(g.bits(63)).max(1),
            5 => i128::from(i64::MAX) - i128::from(g.bits(3)),
            6 => i128::from(i64::MAX) + 1 + i128::from(g.bits(3)),
            _ => 3 * 10i128.pow((g.next() % 20) as u32),
        };
        Exact::Small(Ratio::new(n, d))
    }

    #[test]
    fn the_64_bit_fast_path_agrees_with_big_rationals() {
        let mut g = Lcg(42);
        let (mut narrow_pairs, mut dec_pairs) = (0, 0);
        for _ in 0..60_000 {
            let (a, b) = (sample(&mut g), sample(&mut g));
            if let (Exact::Dec(..), Exact::Dec(..)) = (&a, &b) {
                dec_pairs += 1;
            }
            if let (Exact::Small(x), Exact::Small(y)) = (&a, &b) {
                if narrow(x).is_some() && narrow(y).is_some() {
                    narrow_pairs += 1;
                }
            }
            for op in 0..4u8 {
                let got = match op {
                    0 => Some(a.add(&b)),
                    1 => Some(a.sub(&b)),
                    2 => Some(a.mul(&b)),
                    _ => a.div(&b),
                };
                let want = reference(op, &a, &b);
                match (&got, &want) {
                    (Some(x), Some(y)) => {
                        assert!(same(x, y), "op {op} on {a:?}, {b:?}: {x:?} ≠ {y:?}")
                    }
                    (None, None) => {}
                    _ => panic!("op {op} on {a:?}, {b:?}: {got:?} vs {want:?}"),
                }
            }
            assert_eq!(a.cmp(&b), a.to_big().cmp(&b.to_big()), "{a:?} vs {b:?}");
            for mode in [Rounding::Down, Rounding::HalfUp, Rounding::HalfEven] {
                let want = round_big(&a.to_big(), mode).to_i64();
                assert_eq!(a.round_to_i64(mode), want, "{a:?} {mode:?}");
            }
            if let Some(r) = small_of(&a) {
                assert_eq!(a.to_string(), reference_fmt_small(&r), "{a:?}");
            }
            assert_eq!(a.is_zero(), a.to_big().is_zero(), "{a:?}");
            assert_eq!(a.is_one(), a.to_big().is_one(), "{a:?}");
            assert_eq!(a.is_negative(), a.to_big().is_negative(), "{a:?}");
            assert_eq!(a.to_text(), a.to_string(), "{a:?}");
            // The figure a result keeps renders the same text, and equals it as text.
            let f = a.to_figure();
            assert_eq!(f.to_string(), a.to_text(), "{a:?}");
            assert_eq!(f, Figure::Text(a.to_text()), "{a:?}");
            assert_eq!(f, a.to_string().as_str(), "{a:?}");
            assert_eq!(f.with_pieces(|p| p.concat()), a.to_text(), "{a:?}");
        }
        assert!(narrow_pairs > 15_000, "{narrow_pairs} narrow pairs");
        assert!(dec_pairs > 5_000, "{dec_pairs} decimal pairs");
    }

    #[test]
    fn figures_keep_narrow_values_and_are_no_larger_than_a_text() {
        assert!(matches!(dec("0.110").to_figure(), Figure::Dec(110, 3)));
        assert!(matches!(
            Exact::ratio(2, 3).unwrap().to_figure(),
            Figure::Ratio(2, 3)
        ));
        let wide = Exact::ratio(1, i128::from(i64::MAX) + 2).unwrap();
        assert!(matches!(wide.to_figure(), Figure::Text(_)));
        assert_eq!(wide.to_figure(), wide.to_text().as_str());
        assert_eq!(Figure::Dec(110, 3), Figure::Dec(11, 2));
        assert_ne!(Figure::Dec(110, 3), Figure::Ratio(1, 9));
        assert!(Figure::EMPTY.is_empty() && !Figure::Dec(0, 0).is_empty());
        // Explanations move figures around: the enum must not grow them past a Text.
        assert_eq!(std::mem::size_of::<Figure>(), std::mem::size_of::<Text>());
    }

    #[test]
    fn the_fast_path_renders_like_decimal() {
        for (v, text) in [
            ("0.10", "0.1"),
            ("-0.05", "-0.05"),
            (
                "0.0000000000000000000000000001",
                "0.0000000000000000000000000001",
            ),
            ("123.4500", "123.45"),
            ("-7", "-7"),
            ("0", "0"),
        ] {
            assert_eq!(dec(v).to_string(), text);
        }
        assert_eq!(Exact::ratio(-2, 3).unwrap().to_string(), "-2/3");
        // A mantissa above 2^96 − 1 is not a Decimal: shown as a fraction, as before.
        let x = Exact::ratio((1 << 40) + 1, 1 << 28).unwrap();
        assert_eq!(x.to_string(), "1099511627777/268435456");
        let y = Exact::ratio(i128::from(i64::MAX), 1 << 62).unwrap();
        assert_eq!(
            y.to_string(),
            reference_fmt_small(&Ratio::new(i128::from(i64::MAX), 1 << 62))
        );
    }

    #[test]
    fn fast_path_products_that_outgrow_i128_still_go_big() {
        // Narrow inputs never overflow i128, but chained products do: still exact.
        let x = Exact::ratio(i128::from(i64::MAX), 7).unwrap();
        let x2 = x.mul(&x);
        assert!(matches!(x2, Exact::Small(_)));
        let x4 = x2.mul(&x2);
        assert!(matches!(x4, Exact::Big(_)));
        assert_eq!(x4.div(&x2).unwrap(), x2);
        assert_eq!(x4.round_to_i64(Rounding::Down), None);
    }

    #[test]
    fn ratios_are_reduced_like_num_rational() {
        for (n, d) in [
            (6, 4),
            (-6, 4),
            (6, -4),
            (-6, -4),
            (0, -3),
            (7, 1),
            (i128::from(i64::MAX), 5),
            (1 << 80, 6),
            (i128::from(i64::MIN), 2),
        ] {
            let got = Exact::ratio(n, d).unwrap();
            let Exact::Small(r) = &got else {
                panic!("{n}/{d} went big")
            };
            let want = Ratio::new(n, d);
            assert_eq!(
                (r.numer(), r.denom()),
                (want.numer(), want.denom()),
                "{n}/{d}"
            );
        }
    }

    #[test]
    fn decimals_stay_decimal_and_render_like_fractions() {
        // Rates and amounts are decimals, and so are their products and sums.
        let rate = dec("0.11");
        assert!(matches!(rate, Exact::Dec(11, 2)));
        let amount = rate.mul(&Exact::int(38_800));
        assert!(matches!(amount, Exact::Dec(426_800, 2)));
        assert_eq!(amount.to_text(), "4268");
        assert_eq!(amount.add(&dec("0.005")).to_text(), "4268.005");
        assert_eq!(dec("-1.2300").to_text(), "-1.23");
        assert_eq!(dec("0.000").to_text(), "0");
        assert_eq!(dec("1.00"), Exact::one());
        assert!(dec("1.00").is_one());
        // A scale above 18 or an overflow continues exactly as a fraction.
        let tiny = dec("0.000000001");
        assert!(matches!(tiny.mul(&tiny).mul(&tiny), Exact::Small(_)));
        assert_eq!(
            tiny.mul(&tiny).mul(&tiny).to_text(),
            "0.000000000000000000000000001"
        );
        let big = Exact::int(i128::from(i64::MAX));
        assert_eq!(big.add(&Exact::one()).to_text(), "9223372036854775808");
        assert_eq!(big.mul(&big).div(&big).unwrap(), big);
        // Mixed with a fraction: exact.
        assert_eq!(dec("9.00").mul(&Exact::ratio(1, 3).unwrap()), Exact::int(3));
        assert_eq!(
            dec("0.5").round_to_i64(Rounding::HalfEven),
            Some(0),
            "half to even"
        );
        assert_eq!(dec("-2.5").round_to_i64(Rounding::HalfUp), Some(-3));
    }

    #[test]
    fn division_by_zero_is_refused() {
        assert!(Exact::one().div(&Exact::zero()).is_none());
        assert!(Exact::ratio(1, 0).is_none());
    }
}
