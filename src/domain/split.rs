//! The result of a split: accounts, shares with explanations, and its invariants.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Short text of a result: ids, rates, exact amounts, details. It keeps up to 24 bytes
/// inline, so building or copying one (the engine makes about seventy per split)
/// allocates nothing; longer text goes to the heap like a `String`.
pub type Text = compact_str::CompactString;

/// An exact figure of a result (a rate, a weight, an amount before rounding) as its
/// text, or as the value that text is rendered from when the result is written.
///
/// The engine keeps the value (`Dec`, `Ratio`): rendering the eighteen figures of a
/// 5-level split was the largest part of computing it. The JSON and protobuf writers write
/// a value's digits straight into their output ([`Figure::with_pieces`]); a result read
/// back from JSON holds `Text`, which they copy. Equality, `Display` and serde see only the
/// text, so a computed result equals the same result read back.
#[derive(Clone)]
pub enum Figure {
    /// The text itself: read from a stored result, or a rule's rate as its document wrote it.
    Text(Text),
    /// `m / 10^s` (`s ≤ 18`, `m ≠ i64::MIN`), not necessarily normalised.
    Dec(i64, u32),
    /// `n / d`, reduced, `d > 0`, `n ≠ i64::MIN`.
    Ratio(i64, i64),
}

impl Figure {
    /// No figure: skipped by the writers.
    pub const EMPTY: Figure = Figure::Text(Text::const_new(""));

    /// Whether it is the empty text (a value is never empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, Figure::Text(t) if t.is_empty())
    }

    /// Calls `f` with the text: in place for `Text`, rendered on the stack otherwise.
    #[inline]
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Figure::Text(t) => f(t),
            Figure::Dec(m, s) => super::exact::with_dec_text(*m, *s, f),
            Figure::Ratio(n, d) => super::exact::with_narrow_text(*n, *d, f),
        }
    }

    /// Calls `f` with the text in consecutive pieces, what a writer copies one after the
    /// other: a `Text` is one piece; a decimal is its sign, whole digits, point, leading
    /// zeros of the fraction and the fraction's digits, each from `itoa` or a constant,
    /// so nothing is rendered into a buffer and validated again.
    #[inline]
    pub fn with_pieces<R>(&self, f: impl FnOnce(&[&str]) -> R) -> R {
        match self {
            Figure::Text(t) => f(&[t.as_str()]),
            Figure::Dec(m, s) => {
                let (neg, whole, frac, k) = super::exact::dec_parts(*m, *s);
                let sign = if neg { "-" } else { "" };
                let mut wb = itoa::Buffer::new();
                let w = wb.format(whole);
                if k == 0 {
                    return f(&[sign, w]);
                }
                let mut fb = itoa::Buffer::new();
                let fr = fb.format(frac);
                let zeros = &ZEROS[..k as usize - fr.len()];
                f(&[sign, w, ".", zeros, fr])
            }
            Figure::Ratio(..) => self.with_str(|t| f(&[t])),
        }
    }
}

/// Leading zeros of a fraction: a `Figure::Dec` has at most 18 fraction digits.
const ZEROS: &str = "000000000000000000";

impl Default for Figure {
    fn default() -> Self {
        Figure::EMPTY
    }
}

impl From<Text> for Figure {
    fn from(t: Text) -> Self {
        Figure::Text(t)
    }
}

impl From<&str> for Figure {
    fn from(s: &str) -> Self {
        Figure::Text(Text::from(s))
    }
}

impl fmt::Display for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| f.write_str(s))
    }
}

impl fmt::Debug for Figure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_str(|s| fmt::Debug::fmt(s, f))
    }
}

impl PartialEq for Figure {
    fn eq(&self, other: &Figure) -> bool {
        self.with_str(|a| other.with_str(|b| a == b))
    }
}

impl Eq for Figure {}

impl PartialEq<str> for Figure {
    fn eq(&self, other: &str) -> bool {
        self.with_str(|a| a == other)
    }
}

impl PartialEq<&str> for Figure {
    fn eq(&self, other: &&str) -> bool {
        self.with_str(|a| a == *other)
    }
}

impl Serialize for Figure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_str(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Text::deserialize(d).map(Figure::Text)
    }
}

/// An account that receives money.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    /// `merchant:<id>`: the residual.
    Merchant(Text),
    /// `platform`.
    Platform,
    /// `partner:<id>`: a sub-share of the platform take.
    Partner(Text),
    /// `channel:<id>`: the payment channel's fee.
    Channel(Text),
    /// `promoter:<id>`.
    Promoter(Text),
}

/// `a == b` for ids. Ids that differ almost always differ in length or in their last
/// byte (`P1`, `P2`), so the full comparison runs only when both agree; and ids are
/// short, so it compares machine words in place instead of calling `memcmp`.
#[inline]
pub(crate) fn same_id(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.last() == b.last() && same_bytes(a, b)
}

/// `a == b` for slices of the same length: up to 32 bytes as (overlapping) words.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    fn w8(x: &[u8], i: usize) -> u64 {
        u64::from_ne_bytes(x[i..i + 8].try_into().expect("8 bytes"))
    }
    fn w4(x: &[u8], i: usize) -> u32 {
        u32::from_ne_bytes(x[i..i + 4].try_into().expect("4 bytes"))
    }
    let n = a.len();
    match n {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => w4(a, 0) == w4(b, 0) && w4(a, n - 4) == w4(b, n - 4),
        8..=16 => w8(a, 0) == w8(b, 0) && w8(a, n - 8) == w8(b, n - 8),
        17..=32 => {
            w8(a, 0) == w8(b, 0)
                && w8(a, 8) == w8(b, 8)
                && w8(a, n - 16) == w8(b, n - 16)
                && w8(a, n - 8) == w8(b, n - 8)
        }
        _ => a == b,
    }
}

impl Account {
    /// `self == other`, through [`same_id`].
    #[inline]
    pub(crate) fn same(&self, other: &Account) -> bool {
        self.rank() == other.rank() && same_id(self.id(), other.id())
    }

    /// The fixed rank of the account kind (merchant, platform, partners, channel, promoters).
    fn rank(&self) -> u8 {
        match self {
            Account::Merchant(_) => 0,
            Account::Platform => 1,
            Account::Partner(_) => 2,
            Account::Channel(_) => 3,
            Account::Promoter(_) => 4,
        }
    }

    fn id(&self) -> &str {
        match self {
            Account::Platform => "",
            Account::Merchant(i)
            | Account::Partner(i)
            | Account::Channel(i)
            | Account::Promoter(i) => i,
        }
    }

    /// The fixed account order (PRODUCT.md §5): merchant, platform, partners by id,
    /// channel, promoters by their lowest level in the order, then id.
    pub fn order_cmp(&self, other: &Account, promoter_level: &impl Fn(&str) -> u32) -> Ordering {
        self.order_cmp_by(other, promoter_level, promoter_level)
    }

    /// [`Account::order_cmp`] with the levels of `self` and `other` (when both are
    /// promoters) from their own functions, so that a caller can reuse a level it has.
    fn order_cmp_by(
        &self,
        other: &Account,
        level_of_self: impl FnOnce(&str) -> u32,
        level_of_other: impl FnOnce(&str) -> u32,
    ) -> Ordering {
        self.rank().cmp(&other.rank()).then_with(|| {
            if let (Account::Promoter(a), Account::Promoter(b)) = (self, other) {
                level_of_self(a)
                    .cmp(&level_of_other(b))
                    .then_with(|| a.cmp(b))
            } else {
                self.id().cmp(other.id())
            }
        })
    }
}

/// The index of the first of `totals` whose account is `a`, searching from `from` to the
/// end and then from the start: lines list their accounts in the totals' fixed order, so
/// a search that starts after the previous match usually succeeds at once.
#[inline]
pub(crate) fn find_total(totals: &[AccountAmount], from: usize, a: &Account) -> Option<usize> {
    let n = totals.len();
    (from..n)
        .chain(0..from.min(n))
        .find(|&i| totals[i].account.same(a))
}

/// Sorts `items` into the fixed account order ([`Account::order_cmp`]). They usually
/// arrive in that order already: one pass of comparisons confirms it (n − 1, as many as
/// an insertion sort of sorted items makes, without its moves, and one level look-up per
/// promoter, not two), and only when it fails does the sort run.
pub(crate) fn sort_by_account<T>(
    items: &mut [T],
    account: impl Fn(&T) -> &Account,
    promoter_level: &impl Fn(&str) -> u32,
) {
    // The previous account and, when it is a promoter whose level was looked up, its level.
    let mut prev: Option<(&Account, Option<u32>)> = None;
    let mut sorted = true;
    for item in items.iter() {
        let a = account(item);
        let mut level = None;
        if let Some((p, p_level)) = prev {
            let order = p.order_cmp_by(
                a,
                |x| p_level.unwrap_or_else(|| promoter_level(x)),
                |y| *level.insert(promoter_level(y)),
            );
            if order == Ordering::Greater {
                sorted = false;
                break;
            }
        }
        prev = Some((a, level));
    }
    if !sorted {
        items.sort_by(|a, b| account(a).order_cmp(account(b), promoter_level));
    }
}

impl Account {
    /// The account's name in two parts, its kind's prefix and its id: `("merchant:",
    /// "M1")`, `("platform", "")`. The name is their concatenation.
    pub fn name_parts(&self) -> (&'static str, &str) {
        match self {
            Account::Platform => ("platform", ""),
            Account::Merchant(i) => ("merchant:", i),
            Account::Partner(i) => ("partner:", i),
            Account::Channel(i) => ("channel:", i),
            Account::Promoter(i) => ("promoter:", i),
        }
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Two plain writes: no format arguments to interpret (a store writes two account
        // texts per share of every new order).
        let (prefix, id) = self.name_parts();
        f.write_str(prefix)?;
        f.write_str(id)
    }
}

impl FromStr for Account {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "platform" {
            return Ok(Account::Platform);
        }
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not an account"))?;
        if id.is_empty() {
            return Err(format!("{s:?} has no id"));
        }
        let id = Text::from(id);
        match kind {
            "merchant" => Ok(Account::Merchant(id)),
            "partner" => Ok(Account::Partner(id)),
            "channel" => Ok(Account::Channel(id)),
            "promoter" => Ok(Account::Promoter(id)),
            _ => Err(format!("{s:?}: unknown account kind {kind:?}")),
        }
    }
}

impl Serialize for Account {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What produced a piece of a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareKind {
    /// What remains for the merchant.
    MerchantResidual,
    /// The channel's fee.
    ChannelFee,
    /// The platform's take (after partners).
    PlatformTake,
    /// A partner's share of the take.
    Partner,
    /// A promoter's commission.
    Commission,
}

/// Why a piece is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// Kind.
    pub kind: ShareKind,
    /// The rule that applied (commissions).
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub rule_id: Text,
    /// Promoter level.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub level: u32,
    /// What the rate applied to, minor units.
    pub base: i64,
    /// The exact rate.
    #[serde(default, skip_serializing_if = "Figure::is_empty")]
    pub rate: Figure,
    /// Attribution weight (level 1).
    #[serde(default, skip_serializing_if = "Figure::is_empty")]
    pub weight: Figure,
    /// Exact amount before rounding, minor units.
    #[serde(default, skip_serializing_if = "Figure::is_empty")]
    pub exact: Figure,
    /// The cap scaled it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub capped: bool,
    /// The guard scaled it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub guarded: bool,
    /// It took the level of a non-active ancestor.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compressed: bool,
    /// Adjustments added to the rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adjustments: Vec<Text>,
    /// Anything else.
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub detail: Text,
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl Explanation {
    /// A bare explanation of a kind.
    pub fn of(kind: ShareKind, base: i64) -> Self {
        Explanation {
            kind,
            rule_id: Text::const_new(""),
            level: 0,
            base,
            rate: Figure::EMPTY,
            weight: Figure::EMPTY,
            exact: Figure::EMPTY,
            capped: false,
            guarded: false,
            compressed: false,
            adjustments: vec![],
            detail: Text::const_new(""),
        }
    }
}

/// The explanations of a share: nearly always one, kept inline.
pub type Explanations = smallvec::SmallVec<[Explanation; 1]>;

/// One account's share of one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// Account.
    pub account: Account,
    /// Minor units, ≥ 0.
    pub amount: i64,
    /// One per piece; the first is inline.
    pub explanations: Explanations,
}

/// The split of one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineSplit {
    /// Line id (`shipping` for the shipping pseudo-line).
    pub line_id: Text,
    /// What the buyer paid for it.
    pub paid: i64,
    /// The commission base.
    pub base: i64,
    /// Card uses, for prepaid cards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Shares in the fixed account order; they sum to `paid`.
    pub shares: Vec<Share>,
}

/// An account's total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountAmount {
    /// Account.
    pub account: Account,
    /// Minor units.
    pub amount: i64,
}

/// A chain member used by the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMember {
    /// Level.
    pub level: u32,
    /// Promoter id.
    pub promoter: Text,
    /// Status at computation time.
    pub status: Text,
    /// Grade at computation time.
    #[serde(default, skip_serializing_if = "Text::is_empty")]
    pub grade: Text,
}

/// An attribution weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightEntry {
    /// Promoter id.
    pub promoter: Text,
    /// Exact weight.
    pub weight: Figure,
    /// The primary promoter.
    pub primary: bool,
}

/// The complete, immutable result of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitResult {
    /// Order id.
    pub order_id: String,
    /// Merchant.
    pub merchant: String,
    /// Buyer.
    pub buyer: String,
    /// Currency code.
    pub currency: Text,
    /// Currency exponent.
    pub exponent: u32,
    /// Payment time.
    pub paid_at: DateTime<Utc>,
    /// Rule-set version (0 for a draft preview).
    pub ruleset_version: u64,
    /// Lines (and the shipping pseudo-line last).
    pub lines: Vec<LineSplit>,
    /// Per-account totals in the fixed order.
    pub totals: Vec<AccountAmount>,
    /// Chain used.
    pub chain: Vec<ChainMember>,
    /// Attribution used.
    pub attribution: Vec<WeightEntry>,
    /// Notes.
    pub notes: Vec<String>,
    /// Fingerprint of the order content.
    pub fingerprint: String,
    /// When it was computed.
    pub computed_at: DateTime<Utc>,
    /// Total paid (lines and shipping).
    pub paid: i64,
    /// The order's sales (Σ line paid, shipping excluded): what volume counters moved by.
    pub sales: i64,
    /// The primary promoter whose month volume moved, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_promoter: Option<Text>,
    /// The calendar month (in the rule set's zone) whose counters moved: "2026-11".
    pub month: Text,
    /// Days from payment until entries are available.
    pub hold_days: u32,
}

/// A broken money invariant: never stored, never served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("money invariant broken: {0}")]
pub struct InvariantViolation(pub String);

impl SplitResult {
    /// Checks that every line's shares sum exactly to what was paid for it, no share is
    /// negative, and the totals are the sum of the lines.
    pub fn check(&self) -> Result<(), InvariantViolation> {
        // Each share is added to the listed total of its account ([`find_total`]: an order
        // has a handful of accounts, hashing them would cost more).
        let mut sums: smallvec::SmallVec<[i64; 16]> = smallvec::smallvec![0; self.totals.len()];
        let overflow = || InvariantViolation("overflow".into());
        let mut paid: i64 = 0;
        for l in &self.lines {
            let mut sum: i64 = 0;
            let mut next = 0;
            for s in &l.shares {
                if s.amount < 0 {
                    return Err(InvariantViolation(format!(
                        "line {} gives {} a negative share",
                        l.line_id, s.account
                    )));
                }
                sum = sum.checked_add(s.amount).ok_or_else(overflow)?;
                let i = find_total(&self.totals, next, &s.account).ok_or_else(|| {
                    InvariantViolation(format!(
                        "line {} pays {}, which has no total",
                        l.line_id, s.account
                    ))
                })?;
                next = i + 1;
                sums[i] = sums[i].checked_add(s.amount).ok_or_else(overflow)?;
            }
            if sum != l.paid {
                return Err(InvariantViolation(format!(
                    "line {} shares sum to {sum}, the buyer paid {}",
                    l.line_id, l.paid
                )));
            }
            paid = paid.checked_add(l.paid).ok_or_else(overflow)?;
        }
        if paid != self.paid {
            return Err(InvariantViolation(format!(
                "lines sum to {paid}, the order paid {}",
                self.paid
            )));
        }
        // Every share went to exactly one listed total, so when each total equals what its
        // lines sum to, the totals sum to what was paid.
        for (i, t) in self.totals.iter().enumerate() {
            if sums[i] != t.amount {
                return Err(InvariantViolation(format!(
                    "total of {} does not match its lines",
                    t.account
                )));
            }
            // An account listed twice: its shares all went to the first entry, so a later
            // one shows up here with nothing (a later non-zero one failed just above).
            if sums[i] == 0 && self.totals[..i].iter().any(|e| e.account.same(&t.account)) {
                return Err(InvariantViolation(format!("{} has two totals", t.account)));
            }
        }
        Ok(())
    }

    /// The total of one account in this order.
    pub fn total_of(&self, account: &Account) -> i64 {
        self.totals
            .iter()
            .find(|t| &t.account == account)
            .map_or(0, |t| t.amount)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> SplitResult {
        let share = |account: Account, amount: i64| Share {
            account,
            amount,
            explanations: Explanations::new(),
        };
        let line = |id: &str, shares: Vec<Share>| LineSplit {
            line_id: id.into(),
            paid: shares.iter().map(|s| s.amount).sum(),
            base: 0,
            uses: None,
            shares,
        };
        let (m, p1, p2) = (
            Account::Merchant("M".into()),
            Account::Promoter("P1".into()),
            Account::Promoter("P2".into()),
        );
        let lines = vec![
            line(
                "L1",
                vec![
                    share(m.clone(), 90),
                    share(p1.clone(), 7),
                    share(p2.clone(), 3),
                ],
            ),
            // Another order of the same accounts, and one account missing.
            line("L2", vec![share(p2.clone(), 2), share(m.clone(), 48)]),
        ];
        let t = |account: Account, amount: i64| AccountAmount { account, amount };
        let at = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        SplitResult {
            order_id: "O".into(),
            merchant: "M".into(),
            buyer: "B".into(),
            currency: "CNY".into(),
            exponent: 2,
            paid_at: at,
            ruleset_version: 1,
            lines,
            totals: vec![t(m, 138), t(p1, 7), t(p2, 5)],
            chain: vec![],
            attribution: vec![],
            notes: vec![],
            fingerprint: String::new(),
            computed_at: at,
            paid: 150,
            sales: 150,
            primary_promoter: None,
            month: "1970-01".into(),
            hold_days: 0,
        }
    }

    #[test]
    fn check_accepts_a_consistent_result_and_finds_every_broken_total() {
        let ok = result();
        assert_eq!(ok.check(), Ok(()));
        // Move one unit between two totals: the sums still match, the accounts do not.
        let mut r = result();
        r.totals[1].amount += 1;
        r.totals[2].amount -= 1;
        assert!(r.check().is_err());
        // A total for an account no line pays.
        let mut r = result();
        r.totals[2].account = Account::Promoter("P3".into());
        assert!(r.check().is_err());
        // Same id, another kind of account.
        let mut r = result();
        r.totals[1].account = Account::Partner("P1".into());
        assert!(r.check().is_err());
        // An account listed twice, the second time with nothing.
        let mut r = result();
        r.totals.push(AccountAmount {
            account: Account::Promoter("P1".into()),
            amount: 0,
        });
        assert!(r.check().is_err());
        // A share whose account has no total.
        let mut r = result();
        r.totals
            .retain(|t| t.account != Account::Promoter("P1".into()));
        r.totals[0].amount += 7;
        assert!(r.check().is_err());
        // A line whose shares do not sum to what was paid.
        let mut r = result();
        r.lines[1].shares[0].amount += 1;
        r.lines[1].shares[1].amount -= 2;
        assert!(r.check().is_err());
    }

    /// The one-pass check accepts exactly the sorted lists, and what it sorts comes out
    /// as `order_cmp` orders it: kinds, promoters by order-wide level then id.
    #[test]
    fn sort_by_account_orders_like_order_cmp() {
        let levels = [("p-a", 2), ("p-b", 1), ("p-c", 1), ("p-d", 3)];
        let lvl = |id: &str| levels.iter().find(|l| l.0 == id).map_or(u32::MAX, |l| l.1);
        let promoter = |id: &str| Account::Promoter(id.into());
        let sorted = vec![
            Account::Merchant("m".into()),
            Account::Platform,
            Account::Partner("x".into()),
            Account::Partner("y".into()),
            Account::Channel("alipay".into()),
            promoter("p-b"),
            promoter("p-c"),
            promoter("p-a"),
            promoter("p-d"),
        ];
        let mut same = sorted.clone();
        sort_by_account(&mut same, |a| a, &lvl);
        assert_eq!(same, sorted);
        // Every transposition of neighbours, and the reverse, sorts back.
        for i in 0..sorted.len() - 1 {
            let mut v = sorted.clone();
            v.swap(i, i + 1);
            sort_by_account(&mut v, |a| a, &lvl);
            assert_eq!(v, sorted, "swapped {i}");
        }
        let mut v: Vec<Account> = sorted.iter().rev().cloned().collect();
        sort_by_account(&mut v, |a| a, &lvl);
        assert_eq!(v, sorted);
    }

    /// The word-wise comparison agrees with `==` at every length and every differing byte.
    #[test]
    fn same_id_is_string_equality() {
        let base: String = (0..40).map(|i| char::from(b'a' + i % 26)).collect();
        for n in 0..=40 {
            let a = &base[..n];
            assert!(same_id(a, a), "{n}");
            for i in 0..n {
                let mut b = a.as_bytes().to_vec();
                b[i] = b'#';
                let b = String::from_utf8(b).unwrap();
                assert!(!same_id(a, &b), "{n} differ at {i}");
            }
            if n > 0 {
                assert!(!same_id(a, &base[..n - 1]), "{n} vs shorter");
            }
        }
    }

    #[test]
    fn accounts_round_trip_through_their_names() {
        for s in [
            "merchant:M1",
            "platform",
            "partner:ops",
            "channel:default",
            "promoter:P-1",
        ] {
            assert_eq!(s.parse::<Account>().unwrap().to_string(), s);
        }
        assert!("bank:x".parse::<Account>().is_err());
        assert!("merchant:".parse::<Account>().is_err());
    }
}
