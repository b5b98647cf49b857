//! Rule-set documents (RULES.md): parsing, validation and the compiled form.
//!
//! A document is YAML (JSON is YAML). Unknown keys are errors, decimals must be strings
//! (a YAML float would be rounded before we ever saw it), and every problem is reported
//! with the key path that holds it (`rules[2].levels[1]`). [`compile`] returns the compiled
//! [`RuleSet`] only when there are no errors; warnings never block publishing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::exact::{Exact, Rounding};
use super::money::{self, Currency};
use super::split::{same_id, Text};

/// Largest rule-set document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Most schedule rules in one rule set.
pub const MAX_RULES: usize = 10_000;
/// Upper bound on `max_levels` (RULES.md: more than 10 is an error).
pub const MAX_LEVELS: u32 = 10;
/// Levels beyond which a rule set is a compliance warning (an error under `strict`).
pub const COMPLIANCE_LEVELS: u32 = 3;
/// Longest attribution window, in days.
pub const MAX_WINDOW_DAYS: u32 = 3650;
/// Longest hold before entries become available, in days.
pub const MAX_HOLD_DAYS: u32 = 3650;
/// Most ladder tiers.
pub const MAX_TIERS: usize = 100;

/// A problem in a document, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// `rules[2].levels[1]`; empty for the document as a whole.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

// ---------------------------------------------------------------- document (serde) form

/// A decimal written as a string ("0.10"); integers are accepted, floats are not.
#[derive(Debug, Clone, PartialEq)]
struct Dec(Decimal);

impl<'de> Deserialize<'de> for Dec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal string such as \"0.10\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dec, E> {
                money::parse_decimal(s)
                    .map(Dec)
                    .ok_or_else(|| E::custom(format!("{s:?} is not a decimal")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dec, E> {
                Ok(Dec(Decimal::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dec, E> {
                Ok(Dec(Decimal::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dec, E> {
                Err(E::custom(format!(
                    "{v} is a float; write decimals as strings (\"{v}\") so they stay exact"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

/// A timestamp: RFC 3339 text (YAML leaves unquoted timestamps as strings).
#[derive(Debug, Clone)]
struct Ts(DateTime<Utc>);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| Ts(t.with_timezone(&Utc)))
            .map_err(|e| de::Error::custom(format!("{s:?} is not an RFC 3339 time: {e}")))
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Doc {
    effective_from: Option<Ts>,
    canary: Option<CanaryDoc>,
    timezone: Option<String>,
    currency: Option<String>,
    rounding: Option<Rounding>,
    base: Option<Base>,
    coupon_in_base: Option<CouponInBase>,
    hold_days: Option<u32>,
    max_levels: Option<u32>,
    compliance: Option<Compliance>,
    compression: Option<bool>,
    attribution: Option<AttributionDoc>,
    payment_fee: Option<FeeDoc>,
    platform: Option<PlatformDoc>,
    cap: Option<Dec>,
    #[serde(default)]
    rules: Vec<RuleDoc>,
    #[serde(default)]
    adjustments: Vec<AdjustmentDoc>,
    #[serde(default)]
    grades: Vec<GradeDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryDoc {
    merchants: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AttributionDoc {
    model: Option<AttributionModel>,
    first: Option<Dec>,
    last: Option<Dec>,
    window_days: Option<u32>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FeeDoc {
    default: Option<Dec>,
    #[serde(default)]
    by_channel: std::collections::BTreeMap<String, Dec>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlatformDoc {
    rate: Option<Dec>,
    ladder: Option<LadderDoc>,
    #[serde(default)]
    partners: Vec<PartnerDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PartnerDoc {
    id: String,
    share: Dec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LadderDoc {
    metric: Metric,
    mode: Option<LadderMode>,
    tiers: Vec<TierDoc>,
    #[serde(default)]
    levels: Vec<Dec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierDoc {
    from: Dec,
    rate: Dec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecayDoc {
    first: Dec,
    factor: Dec,
    levels: u32,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct WhenDoc {
    category: Option<Vec<String>>,
    sku: Option<Vec<String>>,
    merchant: Option<Vec<String>>,
    channel: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    promoter_grade: Option<Vec<String>>,
    first_order: Option<bool>,
    order_amount: Option<RangeDoc>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RangeDoc {
    gte: Option<Dec>,
    gt: Option<Dec>,
    lt: Option<Dec>,
    lte: Option<Dec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDoc {
    id: String,
    #[serde(default)]
    priority: i64,
    #[serde(default)]
    when: WhenDoc,
    platform_rate: Option<Dec>,
    levels: Option<Vec<Dec>>,
    decay: Option<DecayDoc>,
    fixed: Option<Vec<Dec>>,
    ladder: Option<LadderDoc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentDoc {
    id: String,
    #[serde(default)]
    when: WhenDoc,
    level: u32,
    add: Dec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GradeDoc {
    id: String,
    #[serde(default)]
    upgrade: UpgradeDoc,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UpgradeDoc {
    direct_invites: Option<u64>,
    month_sales: Option<Dec>,
}

// ---------------------------------------------------------------- compiled form

/// What commissions are computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Base {
    /// What the buyer paid (D).
    Paid,
    /// quantity × unit_price.
    List,
    /// max(0, D − quantity × unit_cost).
    Profit,
}

/// Which coupons are added back to the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CouponInBase {
    /// None.
    None,
    /// Platform-funded coupons only.
    PlatformFunded,
    /// Every coupon.
    All,
}

/// Whether compliance findings are warnings or errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compliance {
    /// Warnings.
    Warn,
    /// Errors.
    Strict,
}

/// How referrals are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionModel {
    /// All to the last referral.
    LastClick,
    /// All to the first referral.
    FirstClick,
    /// Evenly.
    Linear,
    /// First and last get fixed shares, the middle ones share the rest.
    PositionBased,
}

/// The volume a ladder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Month sales of orders with this order's primary promoter.
    PromoterMonthSales,
    /// Month sales of this order's merchant.
    MerchantMonthSales,
    /// This order's sales.
    OrderAmount,
}

/// How tiers apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LadderMode {
    /// One rate for the whole order: the tier containing the volume after this order.
    Flat,
    /// Each slice of this order's sales earns its own tier's rate.
    Marginal,
}

/// A tier: from (inclusive, major units) and rate.
#[derive(Debug, Clone)]
pub struct Tier {
    /// Lower bound in major units.
    pub from: Exact,
    /// Rate.
    pub rate: Exact,
}

/// A ladder: tiers over a metric.
#[derive(Debug, Clone)]
pub struct Ladder {
    /// What it reads.
    pub metric: Metric,
    /// Flat or marginal.
    pub mode: LadderMode,
    /// Ascending, first from 0.
    pub tiers: Vec<Tier>,
    /// Rates for levels 2.. (commission ladders only).
    pub levels: Vec<Exact>,
}

/// Per-level schedule of a rule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Rate per level (levels and decay both compile to this).
    Rates(Vec<Exact>),
    /// Fixed amount per unit per level, major units.
    Fixed(Vec<Exact>),
    /// Level 1 from a ladder, levels 2.. fixed rates.
    Ladder(Ladder),
}

impl Schedule {
    /// Number of levels it pays.
    pub fn len(&self) -> usize {
        match self {
            Schedule::Rates(r) | Schedule::Fixed(r) => r.len(),
            Schedule::Ladder(l) => 1 + l.levels.len(),
        }
    }

    /// True when it pays no level.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for fixed amounts and ladders, which read `currency` amounts.
    pub fn reads_amounts(&self) -> bool {
        matches!(self, Schedule::Fixed(_) | Schedule::Ladder(_))
    }
}

/// An order-amount interval in major units.
#[derive(Debug, Clone, Default)]
pub struct AmountRange {
    /// ≥.
    pub gte: Option<Exact>,
    /// >.
    pub gt: Option<Exact>,
    /// <.
    pub lt: Option<Exact>,
    /// ≤.
    pub lte: Option<Exact>,
}

impl AmountRange {
    /// True when `v` (major units) is inside.
    pub fn contains(&self, v: &Exact) -> bool {
        self.gte.as_ref().is_none_or(|b| v >= b)
            && self.gt.as_ref().is_none_or(|b| v > b)
            && self.lt.as_ref().is_none_or(|b| v < b)
            && self.lte.as_ref().is_none_or(|b| v <= b)
    }

    fn lower(&self) -> (Option<&Exact>, bool) {
        match (&self.gte, &self.gt) {
            (Some(a), Some(b)) => {
                if b >= a {
                    (Some(b), true)
                } else {
                    (Some(a), false)
                }
            }
            (Some(a), None) => (Some(a), false),
            (None, Some(b)) => (Some(b), true),
            (None, None) => (None, false),
        }
    }

    fn upper(&self) -> (Option<&Exact>, bool) {
        match (&self.lte, &self.lt) {
            (Some(a), Some(b)) => {
                if b <= a {
                    (Some(b), true)
                } else {
                    (Some(a), false)
                }
            }
            (Some(a), None) => (Some(a), false),
            (None, Some(b)) => (Some(b), true),
            (None, None) => (None, false),
        }
    }

    /// True when every value in `inner` is in `self`.
    fn covers(&self, inner: &AmountRange) -> bool {
        let lower_ok = match (self.lower(), inner.lower()) {
            ((None, _), _) => true,
            ((Some(_), _), (None, _)) => false,
            ((Some(a), a_strict), (Some(b), b_strict)) => {
                b > a || (b == a && (!a_strict || b_strict))
            }
        };
        let upper_ok = match (self.upper(), inner.upper()) {
            ((None, _), _) => true,
            ((Some(_), _), (None, _)) => false,
            ((Some(a), a_strict), (Some(b), b_strict)) => {
                b < a || (b == a && (!a_strict || b_strict))
            }
        };
        lower_ok && upper_ok
    }
}

/// The ids a condition lists: sorted, without duplicates. A flat slice rather than a
/// tree: lists hold one to a few ids, and comparing lengths first (then the last byte)
/// skips most byte compares. Long lists are searched by bisection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdSet(Box<[String]>);

impl IdSet {
    /// Lists up to this long are scanned; longer ones bisected.
    const SCAN: usize = 8;

    /// True when `v` is listed.
    #[inline]
    pub fn contains(&self, v: &str) -> bool {
        if self.0.len() <= Self::SCAN {
            self.0.iter().any(|x| same_id(x, v))
        } else {
            self.0.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
        }
    }

    /// The ids, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, String> {
        self.0.iter()
    }

    /// How many ids.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no id is listed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every id of `self` is in `other`.
    pub fn is_subset(&self, other: &IdSet) -> bool {
        self.0.iter().all(|x| other.contains(x))
    }
}

impl FromIterator<String> for IdSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut ids: Vec<String> = iter.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        IdSet(ids.into_boxed_slice())
    }
}

/// Conditions of a rule or adjustment; every listed one must hold, lists mean "any of".
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Line category in.
    pub category: Option<IdSet>,
    /// Line SKU in.
    pub sku: Option<IdSet>,
    /// Merchant in.
    pub merchant: Option<IdSet>,
    /// Channel in (the default channel is "default").
    pub channel: Option<IdSet>,
    /// Any order tag in.
    pub tags: Option<IdSet>,
    /// Primary promoter's grade in.
    pub promoter_grade: Option<IdSet>,
    /// Buyer's first order (or not).
    pub first_order: Option<bool>,
    /// Order sales (major units) in range.
    pub order_amount: Option<AmountRange>,
}

impl Conditions {
    fn is_empty(&self) -> bool {
        self.category.is_none()
            && self.sku.is_none()
            && self.merchant.is_none()
            && self.channel.is_none()
            && self.tags.is_none()
            && self.promoter_grade.is_none()
            && self.first_order.is_none()
            && self.order_amount.is_none()
    }

    /// True when every order matching `other` also matches `self`.
    fn implied_by(&self, other: &Conditions) -> bool {
        fn set(a: &Option<IdSet>, b: &Option<IdSet>) -> bool {
            match (a, b) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => b.is_subset(a),
            }
        }
        set(&self.category, &other.category)
            && set(&self.sku, &other.sku)
            && set(&self.merchant, &other.merchant)
            && set(&self.channel, &other.channel)
            && set(&self.tags, &other.tags)
            && set(&self.promoter_grade, &other.promoter_grade)
            && match (self.first_order, other.first_order) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
            && match (&self.order_amount, &other.order_amount) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(a), Some(b)) => a.covers(b),
            }
    }
}

/// A schedule rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id.
    pub id: String,
    /// Higher wins.
    pub priority: i64,
    /// Position in the document (ties: earlier wins).
    pub index: usize,
    /// When it applies.
    pub when: Conditions,
    /// Overrides the platform rate on matching lines.
    pub platform_rate: Option<Rate>,
    /// What it pays.
    pub schedule: Schedule,
    /// The text of each schedule rate ([`Exact::to_text`]), rendered once here so that
    /// explanations copy it: every level of `Rates`, levels 2.. of `Ladder`, none for
    /// `Fixed`.
    pub rate_texts: Vec<Text>,
}

/// An adjustment: adds to one level's rate when its conditions hold.
#[derive(Debug, Clone)]
pub struct Adjustment {
    /// Id.
    pub id: String,
    /// When it applies.
    pub when: Conditions,
    /// Level (1-based).
    pub level: u32,
    /// Added rate.
    pub add: Exact,
}

/// A constant rate of a rule set with its text ([`Exact::to_text`]), rendered once when
/// the rule set is compiled: every explanation that shows the rate copies the text
/// instead of rendering it again for each split.
#[derive(Debug, Clone)]
pub struct Rate {
    /// The rate.
    pub value: Exact,
    /// `value.to_text()`.
    pub text: Text,
}

impl Rate {
    /// A rate and its text.
    pub fn new(value: Exact) -> Rate {
        let text = value.to_text();
        Rate { value, text }
    }
}

/// A platform partner.
#[derive(Debug, Clone)]
pub struct Partner {
    /// Id.
    pub id: String,
    /// Share of the platform take.
    pub share: Rate,
}

/// A grade and its automatic upgrade conditions.
#[derive(Debug, Clone)]
pub struct Grade {
    /// Id.
    pub id: String,
    /// Direct invites needed, if any.
    pub direct_invites: Option<u64>,
    /// Month sales needed (major units), if any.
    pub month_sales: Option<Exact>,
}

/// Attribution settings.
#[derive(Debug, Clone)]
pub struct Attribution {
    /// Model.
    pub model: AttributionModel,
    /// position_based first share.
    pub first: Exact,
    /// position_based last share.
    pub last: Exact,
    /// Window in days.
    pub window_days: u32,
}

/// A compiled, valid rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// When it starts to apply; `None` = the beginning of time.
    pub effective_from: Option<DateTime<Utc>>,
    /// Merchants it is limited to.
    pub canary: Option<BTreeSet<String>>,
    /// Zone of calendar months.
    pub timezone: chrono_tz::Tz,
    /// Currency of fixed amounts and ladder thresholds.
    pub currency: Option<Currency>,
    /// Rounding of every share but the merchant's.
    pub rounding: Rounding,
    /// Commission base.
    pub base: Base,
    /// Coupons added to the base.
    pub coupon_in_base: CouponInBase,
    /// Days until entries are available.
    pub hold_days: u32,
    /// Levels walked at most.
    pub max_levels: u32,
    /// Compliance mode.
    pub compliance: Compliance,
    /// Non-active ancestors pass their level on.
    pub compression: bool,
    /// Attribution.
    pub attribution: Attribution,
    /// Fee rate for unlisted channels.
    pub fee_default: Rate,
    /// Fee rate per channel.
    pub fee_by_channel: HashMap<String, Rate, foldhash::fast::RandomState>,
    /// Platform rate.
    pub platform_rate: Rate,
    /// Platform ladder (instead of the rate).
    pub platform_ladder: Option<Ladder>,
    /// Partners of the platform take.
    pub partners: Vec<Partner>,
    /// Promoters' total ≤ cap × base.
    pub cap: Option<Exact>,
    /// Rules sorted by priority (high first), then document order.
    pub rules: Vec<Rule>,
    /// Adjustments in document order.
    pub adjustments: Vec<Adjustment>,
    /// Grades, ascending.
    pub grades: Vec<Grade>,
    /// Which of the first rules an order's own facts admit, by look-up.
    pub order_index: OrderIndex,
}

/// Rules for one kind of id condition (merchant, channel, tags, grade), one bit per rule.
#[derive(Debug, Clone, Default)]
pub struct IdMasks {
    /// Rules without the condition: every id passes.
    unconditioned: u64,
    /// For each listed id, the rules that list it.
    by_id: HashMap<String, u64, foldhash::fast::RandomState>,
}

impl IdMasks {
    fn add(&mut self, bit: u64, set: Option<&IdSet>) {
        match set {
            None => self.unconditioned |= bit,
            Some(s) => {
                for id in s.iter() {
                    *self.by_id.entry(id.clone()).or_default() |= bit;
                }
            }
        }
    }

    /// The rules whose condition `id` meets.
    #[inline]
    pub fn admit(&self, id: &str) -> u64 {
        self.admit_any([id])
    }

    /// The rules whose condition one of `ids` meets ("any of").
    #[inline]
    pub fn admit_any<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> u64 {
        ids.into_iter().fold(self.unconditioned, |m, id| {
            m | self.by_id.get(id).copied().unwrap_or(0)
        })
    }

    /// The rules without the condition.
    pub fn unconditioned(&self) -> u64 {
        self.unconditioned
    }
}

/// The id conditions of the first [`OrderIndex::RULES`] rules (bit i is `rules[i]`),
/// inverted: an order's merchant, channel, tags and grade each select a mask by a hash
/// look-up, and their AND is the set of rules the order fits; a line's category and SKU
/// narrow that set per line, and its lowest bit is the line's rule. No rule's conditions
/// are evaluated in turn. Built once per compiled rule set.
#[derive(Debug, Clone, Default)]
pub struct OrderIndex {
    /// Merchant in.
    pub merchant: IdMasks,
    /// Channel in.
    pub channel: IdMasks,
    /// Any order tag in.
    pub tags: IdMasks,
    /// Primary promoter's grade in.
    pub grade: IdMasks,
    /// The line's category in (a line condition: looked up per line).
    pub category: IdMasks,
    /// The line's SKU in (a line condition: looked up per line).
    pub sku: IdMasks,
    /// Rules that need `first_order: true`.
    pub first_order: u64,
    /// Rules that need `first_order: false`.
    pub not_first_order: u64,
    /// Rules with an order-amount range (checked one by one).
    pub order_amount: u64,
    /// Rules whose schedule reads amounts in the rule set's currency.
    pub reads_amounts: u64,
    /// Every indexed rule.
    pub all: u64,
}

impl OrderIndex {
    /// How many rules the index covers: one bit each.
    pub const RULES: usize = u64::BITS as usize;

    /// The index of the first [`OrderIndex::RULES`] of `rules`, in their order.
    pub fn new(rules: &[Rule]) -> Self {
        let mut x = OrderIndex::default();
        for (i, r) in rules.iter().take(Self::RULES).enumerate() {
            let bit = 1u64 << i;
            let c = &r.when;
            x.merchant.add(bit, c.merchant.as_ref());
            x.channel.add(bit, c.channel.as_ref());
            x.tags.add(bit, c.tags.as_ref());
            x.grade.add(bit, c.promoter_grade.as_ref());
            x.category.add(bit, c.category.as_ref());
            x.sku.add(bit, c.sku.as_ref());
            match c.first_order {
                Some(true) => x.first_order |= bit,
                Some(false) => x.not_first_order |= bit,
                None => {}
            }
            if c.order_amount.is_some() {
                x.order_amount |= bit;
            }
            if r.schedule.reads_amounts() {
                x.reads_amounts |= bit;
            }
            x.all |= bit;
        }
        x
    }
}

impl RuleSet {
    /// Fee rate for a channel id ("default" for none).
    pub fn fee_rate(&self, channel: &str) -> &Rate {
        self.fee_by_channel
            .get(channel)
            .unwrap_or(&self.fee_default)
    }

    /// Rank of a grade (index in `grades`), `None` when not listed.
    pub fn grade_rank(&self, grade: &str) -> Option<usize> {
        self.grades.iter().position(|g| g.id == grade)
    }

    /// True when a split under this rule set depends on what was stored before it: a
    /// ladder over month sales, a `first_order` condition, or grades (upgraded from month
    /// volumes). When false, the engine reads nothing of the volume counters or buyers,
    /// so a batch may move them at its end instead of locking them first.
    pub fn reads_order_history(&self) -> bool {
        let month = |l: &Ladder| l.metric != Metric::OrderAmount;
        !self.grades.is_empty()
            || self.platform_ladder.as_ref().is_some_and(month)
            || self.rules.iter().any(|r| {
                r.when.first_order.is_some()
                    || matches!(&r.schedule, Schedule::Ladder(l) if month(l))
            })
            || self
                .adjustments
                .iter()
                .any(|a| a.when.first_order.is_some())
    }

    /// True when the version applies to this merchant (no canary, or a listed merchant).
    pub fn applies_to(&self, merchant: &str) -> bool {
        self.canary.as_ref().is_none_or(|m| m.contains(merchant))
    }
}

/// The outcome of compiling a document.
#[derive(Debug)]
pub struct Compiled {
    /// The rule set, when there are no errors.
    pub ruleset: Option<RuleSet>,
    /// Errors: the document cannot be published.
    pub errors: Vec<Issue>,
    /// Warnings: it can.
    pub warnings: Vec<Issue>,
}

/// Parses and validates a document.
pub fn compile(document: &str) -> Compiled {
    let fail = |path: &str, message: String| Compiled {
        ruleset: None,
        errors: vec![Issue {
            path: path.to_string(),
            message,
        }],
        warnings: vec![],
    };
    if document.len() > MAX_DOCUMENT_BYTES {
        return fail(
            "",
            format!("the document is larger than {MAX_DOCUMENT_BYTES} bytes"),
        );
    }
    let doc: Doc = if document.trim().is_empty() {
        Doc::default()
    } else {
        let de = serde_yaml_ng::Deserializer::from_str(document);
        match serde_path_to_error::deserialize(de) {
            Ok(d) => d,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                let msg = e.inner().to_string();
                // serde_yaml appends " at line X column Y"; keep it: it helps people.
                return fail(&path, msg);
            }
        }
    };
    let mut v = Validator::default();
    let rs = v.build(doc);
    if v.errors.is_empty() {
        Compiled {
            ruleset: rs,
            errors: vec![],
            warnings: v.warnings,
        }
    } else {
        Compiled {
            ruleset: None,
            errors: v.errors,
            warnings: v.warnings,
        }
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
    strict: bool,
}

impl Validator {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    fn compliance(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let message = format!("{} (compliance)", message.into());
        if self.strict {
            self.error(path, message);
        } else {
            self.warn(path, message);
        }
    }

    /// An id at `{path}.id` that must be well formed and unique among `seen`.
    fn unique_id(&mut self, seen: &mut HashSet<String>, path: &str, id: &str, what: &str) {
        if let Err(e) = super::order::check_id(format_args!("{path}.id"), id) {
            self.error(e.path, e.message);
        }
        if !seen.insert(id.to_string()) {
            self.error(format!("{path}.id"), format!("duplicate {what} id {id:?}"));
        }
    }

    /// A rate in [0, 1].
    fn rate(&mut self, path: &str, d: &Dec) -> Exact {
        if d.0 < Decimal::ZERO || d.0 > Decimal::ONE {
            self.error(path, format!("rate {} is outside [0, 1]", d.0));
        }
        Exact::from_decimal(d.0)
    }

    /// A non-negative amount in major units.
    fn amount(&mut self, path: &str, d: &Dec, currency: Option<Currency>) -> Exact {
        if d.0 < Decimal::ZERO {
            self.error(path, format!("amount {} must not be negative", d.0));
        }
        if let Some(c) = currency {
            if d.0.normalize().scale() > c.exponent() {
                self.error(
                    path,
                    format!("{} has more fraction digits than {} allows", d.0, c.code()),
                );
            }
        }
        Exact::from_decimal(d.0)
    }

    fn ids(&mut self, path: &str, list: &Option<Vec<String>>) -> Option<IdSet> {
        let list = list.as_ref()?;
        if list.is_empty() {
            self.error(
                path,
                "an empty list never matches; remove the condition instead",
            );
        }
        Some(list.iter().cloned().collect())
    }

    fn conditions(&mut self, path: &str, w: &WhenDoc) -> Conditions {
        let order_amount = w.order_amount.as_ref().map(|r| {
            let mut f = |k: &str, d: &Option<Dec>| {
                d.as_ref()
                    .map(|d| self.amount(&format!("{path}.order_amount.{k}"), d, None))
            };
            AmountRange {
                gte: f("gte", &r.gte),
                gt: f("gt", &r.gt),
                lt: f("lt", &r.lt),
                lte: f("lte", &r.lte),
            }
        });
        Conditions {
            category: self.ids(&format!("{path}.category"), &w.category),
            sku: self.ids(&format!("{path}.sku"), &w.sku),
            merchant: self.ids(&format!("{path}.merchant"), &w.merchant),
            channel: self.ids(&format!("{path}.channel"), &w.channel),
            tags: self.ids(&format!("{path}.tags"), &w.tags),
            promoter_grade: self.ids(&format!("{path}.promoter_grade"), &w.promoter_grade),
            first_order: w.first_order,
            order_amount,
        }
    }

    fn ladder(
        &mut self,
        path: &str,
        l: &LadderDoc,
        currency: Option<Currency>,
        commission: bool,
    ) -> Ladder {
        let mode = l.mode.unwrap_or(LadderMode::Flat);
        if l.metric == Metric::OrderAmount && mode == LadderMode::Marginal {
            self.error(
                format!("{path}.mode"),
                "an order_amount ladder allows flat mode only",
            );
        }
        if l.tiers.is_empty() {
            self.error(format!("{path}.tiers"), "a ladder needs at least one tier");
        }
        if l.tiers.len() > MAX_TIERS {
            self.error(
                format!("{path}.tiers"),
                format!("at most {MAX_TIERS} tiers"),
            );
        }
        let mut tiers = Vec::with_capacity(l.tiers.len());
        for (j, t) in l.tiers.iter().enumerate() {
            let tp = format!("{path}.tiers[{j}]");
            let from = self.amount(&format!("{tp}.from"), &t.from, currency);
            if j == 0 && !from.is_zero() {
                self.error(format!("{tp}.from"), "the first tier must start at 0");
            }
            if let Some(prev) = tiers.last().map(|t: &Tier| t.from.clone()) {
                if from <= prev {
                    self.error(
                        format!("{tp}.from"),
                        "tiers must be in strictly ascending order of `from`",
                    );
                }
            }
            let rate = self.rate(&format!("{tp}.rate"), &t.rate);
            tiers.push(Tier { from, rate });
        }
        if !commission && !l.levels.is_empty() {
            self.error(
                format!("{path}.levels"),
                "level rates only apply to commission ladders",
            );
        }
        let levels = l
            .levels
            .iter()
            .enumerate()
            .map(|(k, d)| self.rate(&format!("{path}.levels[{k}]"), d))
            .collect();
        Ladder {
            metric: l.metric,
            mode,
            tiers,
            levels,
        }
    }

    fn build(&mut self, doc: Doc) -> Option<RuleSet> {
        let compliance = doc.compliance.unwrap_or(Compliance::Warn);
        self.strict = compliance == Compliance::Strict;
        let timezone = match doc.timezone.as_deref() {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                self.error("timezone", format!("{name:?} is not an IANA time zone"));
                chrono_tz::UTC
            }),
        };
        let currency = doc.currency.as_deref().and_then(|c| {
            let cur = Currency::parse(c);
            if cur.is_none() {
                self.error(
                    "currency",
                    format!("{c:?} is not an ISO 4217 currency with a minor unit"),
                );
            }
            cur
        });
        let canary = doc.canary.as_ref().map(|c| {
            if c.merchants.is_empty() {
                self.error("canary.merchants", "a canary needs at least one merchant");
            }
            c.merchants.iter().cloned().collect::<BTreeSet<_>>()
        });
        let hold_days = doc.hold_days.unwrap_or(7);
        if hold_days > MAX_HOLD_DAYS {
            self.error("hold_days", format!("at most {MAX_HOLD_DAYS} days"));
        }
        let max_levels = doc.max_levels.unwrap_or(3);
        if max_levels > MAX_LEVELS {
            self.error(
                "max_levels",
                format!("{max_levels} levels; at most {MAX_LEVELS} are allowed"),
            );
        } else if max_levels == 0 {
            self.error("max_levels", "must be at least 1");
        } else if max_levels > COMPLIANCE_LEVELS {
            self.compliance(
                "max_levels",
                format!("{max_levels} levels is more than {COMPLIANCE_LEVELS}"),
            );
        }
        // Attribution.
        let ad = doc.attribution.unwrap_or_default();
        let model = ad.model.unwrap_or(AttributionModel::LastClick);
        let first = ad.first.as_ref().map_or_else(
            || Exact::ratio(2, 5).expect("2/5"),
            |d| self.rate("attribution.first", d),
        );
        let last = ad.last.as_ref().map_or_else(
            || Exact::ratio(2, 5).expect("2/5"),
            |d| self.rate("attribution.last", d),
        );
        if model == AttributionModel::PositionBased && first.add(&last) > Exact::one() {
            self.error("attribution", "first + last must not exceed 1");
        }
        if model == AttributionModel::PositionBased && first.add(&last).is_zero() {
            self.error("attribution", "first + last must be above 0");
        }
        let window_days = ad.window_days.unwrap_or(30);
        if window_days > MAX_WINDOW_DAYS {
            self.error(
                "attribution.window_days",
                format!("at most {MAX_WINDOW_DAYS} days"),
            );
        }
        // Fees.
        let fd = doc.payment_fee.unwrap_or_default();
        let fee_default = fd
            .default
            .as_ref()
            .map_or_else(Exact::zero, |d| self.rate("payment_fee.default", d));
        let mut fee_by_channel = HashMap::new();
        for (ch, d) in &fd.by_channel {
            let r = self.rate(&format!("payment_fee.by_channel.{ch}"), d);
            fee_by_channel.insert(ch.clone(), r);
        }
        let max_fee =
            fee_by_channel.values().fold(
                fee_default.clone(),
                |m, r| if *r > m { r.clone() } else { m },
            );
        let fee_default = Rate::new(fee_default);
        let fee_by_channel: HashMap<String, Rate, foldhash::fast::RandomState> = fee_by_channel
            .into_iter()
            .map(|(ch, r)| (ch, Rate::new(r)))
            .collect();
        // Platform.
        let pd = doc.platform.unwrap_or_default();
        let platform_rate = pd
            .rate
            .as_ref()
            .map_or_else(Exact::zero, |d| self.rate("platform.rate", d));
        if pd.rate.is_some() && pd.ladder.is_some() {
            self.error("platform", "give either rate or ladder, not both");
        }
        let platform_ladder = pd
            .ladder
            .as_ref()
            .map(|l| self.ladder("platform.ladder", l, currency, false));
        let mut partner_total = Exact::zero();
        let mut partner_ids = HashSet::new();
        let partners: Vec<Partner> = pd
            .partners
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let path = format!("platform.partners[{j}]");
                self.unique_id(&mut partner_ids, &path, &p.id, "partner");
                let share = self.rate(&format!("{path}.share"), &p.share);
                partner_total = partner_total.add(&share);
                Partner {
                    id: p.id.clone(),
                    share: Rate::new(share),
                }
            })
            .collect();
        if partner_total > Exact::one() {
            self.error("platform.partners", "partner shares add up to more than 1");
        }
        let cap = doc.cap.as_ref().map(|d| self.rate("cap", d));
        // Rules.
        if doc.rules.len() > MAX_RULES {
            self.error("rules", format!("at most {MAX_RULES} rules"));
            return None;
        }
        let mut rule_ids = HashSet::new();
        let mut rules = Vec::with_capacity(doc.rules.len());
        let mut max_platform = platform_ladder.as_ref().map_or(platform_rate.clone(), |l| {
            l.tiers
                .iter()
                .fold(Exact::zero(), |m, t| m.max(t.rate.clone()))
        });
        for (i, r) in doc.rules.iter().enumerate() {
            let path = format!("rules[{i}]");
            if r.id.is_empty() {
                self.error(format!("{path}.id"), "is required");
            } else if !rule_ids.insert(r.id.clone()) {
                self.error(
                    format!("{path}.id"),
                    format!("duplicate rule id {:?}", r.id),
                );
            }
            let when = self.conditions(&format!("{path}.when"), &r.when);
            let platform_rate = r
                .platform_rate
                .as_ref()
                .map(|d| self.rate(&format!("{path}.platform_rate"), d));
            if let Some(p) = &platform_rate {
                max_platform = max_platform.max(p.clone());
            }
            let given = [
                r.levels.is_some(),
                r.decay.is_some(),
                r.fixed.is_some(),
                r.ladder.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if given != 1 {
                self.error(
                    path.clone(),
                    format!("a rule needs exactly one of levels, decay, fixed or ladder; it has {given}"),
                );
                continue;
            }
            let (schedule, spath) = if let Some(levels) = &r.levels {
                let rates = levels
                    .iter()
                    .enumerate()
                    .map(|(k, d)| self.rate(&format!("{path}.levels[{k}]"), d))
                    .collect();
                (Schedule::Rates(rates), format!("{path}.levels"))
            } else if let Some(d) = &r.decay {
                let first = self.rate(&format!("{path}.decay.first"), &d.first);
                let factor = self.rate(&format!("{path}.decay.factor"), &d.factor);
                if d.levels == 0 {
                    self.error(format!("{path}.decay.levels"), "must be at least 1");
                }
                let n = d.levels.min(MAX_LEVELS + 1);
                let rates = (0..n).map(|k| first.mul(&factor.pow(k))).collect();
                (Schedule::Rates(rates), format!("{path}.decay.levels"))
            } else if let Some(f) = &r.fixed {
                let amounts = f
                    .iter()
                    .enumerate()
                    .map(|(k, d)| self.amount(&format!("{path}.fixed[{k}]"), d, currency))
                    .collect();
                (Schedule::Fixed(amounts), format!("{path}.fixed"))
            } else if let Some(l) = &r.ladder {
                (
                    Schedule::Ladder(self.ladder(&format!("{path}.ladder"), l, currency, true)),
                    format!("{path}.ladder"),
                )
            } else {
                unreachable!("exactly one schedule is set")
            };
            if schedule.is_empty() {
                self.error(spath.clone(), "a schedule needs at least one level");
            }
            if schedule.len() > max_levels as usize {
                self.error(
                    spath.clone(),
                    format!(
                        "{} levels is more than max_levels ({max_levels})",
                        schedule.len()
                    ),
                );
            } else if schedule.len() > COMPLIANCE_LEVELS as usize && max_levels <= COMPLIANCE_LEVELS
            {
                self.compliance(
                    spath,
                    format!("{} levels is more than {COMPLIANCE_LEVELS}", schedule.len()),
                );
            }
            let rate_texts = match &schedule {
                Schedule::Rates(r) => r.iter().map(Exact::to_text).collect(),
                Schedule::Ladder(l) => l.levels.iter().map(Exact::to_text).collect(),
                Schedule::Fixed(_) => Vec::new(),
            };
            rules.push(Rule {
                id: r.id.clone(),
                priority: r.priority,
                index: i,
                when,
                platform_rate: platform_rate.map(Rate::new),
                schedule,
                rate_texts,
            });
        }
        if max_platform.add(&max_fee) > Exact::one() {
            self.error(
                "platform.rate",
                "the highest platform rate plus the highest fee rate exceeds 1",
            );
        }
        // Adjustments.
        let longest = rules.iter().map(|r| r.schedule.len()).max().unwrap_or(0);
        let mut adj_ids = HashSet::new();
        let adjustments: Vec<Adjustment> = doc
            .adjustments
            .iter()
            .enumerate()
            .map(|(k, a)| {
                let path = format!("adjustments[{k}]");
                if !adj_ids.insert(a.id.clone()) {
                    self.error(
                        format!("{path}.id"),
                        format!("duplicate adjustment id {:?}", a.id),
                    );
                }
                if a.level == 0 || a.level as usize > longest {
                    self.error(
                        format!("{path}.level"),
                        format!("no rule has a level {}", a.level),
                    );
                }
                let when = self.conditions(&format!("{path}.when"), &a.when);
                let add = self.rate(&format!("{path}.add"), &a.add);
                Adjustment {
                    id: a.id.clone(),
                    when,
                    level: a.level,
                    add,
                }
            })
            .collect();
        // Grades.
        let mut grade_ids = HashSet::new();
        let grades =
            doc.grades
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    let path = format!("grades[{k}]");
                    self.unique_id(&mut grade_ids, &path, &g.id, "grade");
                    let month_sales =
                        g.upgrade.month_sales.as_ref().map(|d| {
                            self.amount(&format!("{path}.upgrade.month_sales"), d, currency)
                        });
                    Grade {
                        id: g.id.clone(),
                        direct_invites: g.upgrade.direct_invites,
                        month_sales,
                    }
                })
                .collect();
        let mut rs = RuleSet {
            effective_from: doc.effective_from.map(|t| t.0),
            canary,
            timezone,
            currency,
            rounding: doc.rounding.unwrap_or(Rounding::Down),
            base: doc.base.unwrap_or(Base::Paid),
            coupon_in_base: doc.coupon_in_base.unwrap_or(CouponInBase::None),
            hold_days,
            max_levels,
            compliance,
            compression: doc.compression.unwrap_or(false),
            attribution: Attribution {
                model,
                first,
                last,
                window_days,
            },
            fee_default,
            fee_by_channel,
            platform_rate: Rate::new(platform_rate),
            platform_ladder,
            partners,
            cap,
            rules,
            adjustments,
            grades,
            order_index: OrderIndex::default(),
        };
        rs.rules
            .sort_by(|a, b| b.priority.cmp(&a.priority).then(a.index.cmp(&b.index)));
        rs.order_index = OrderIndex::new(&rs.rules);
        self.warn_worst_case(&rs);
        self.warn_unreachable(&rs);
        Some(rs)
    }

    fn warn_worst_case(&mut self, rs: &RuleSet) {
        if rs.cap.is_some() {
            return;
        }
        let half = Exact::ratio(1, 2).expect("1/2");
        for r in &rs.rules {
            let mut rates: Vec<Exact> = match &r.schedule {
                Schedule::Rates(v) => v.clone(),
                Schedule::Ladder(l) => {
                    let top = l
                        .tiers
                        .iter()
                        .fold(Exact::zero(), |m, t| m.max(t.rate.clone()));
                    std::iter::once(top)
                        .chain(l.levels.iter().cloned())
                        .collect()
                }
                Schedule::Fixed(_) => continue,
            };
            for a in &rs.adjustments {
                if let Some(rate) = rates.get_mut(a.level as usize - 1) {
                    *rate = rate.add(&a.add);
                }
            }
            let total = rates.iter().fold(Exact::zero(), |s, r| s.add(r));
            if total > half {
                self.warn(
                    format!("rules[{}]", r.index),
                    format!("promoters can earn up to {total} of the base and there is no cap"),
                );
            }
        }
    }

    fn warn_unreachable(&mut self, rs: &RuleSet) {
        for (j, later) in rs.rules.iter().enumerate() {
            // A rule reading currency amounts may skip orders, so it never shadows another.
            let shadow = rs.rules[..j].iter().find(|earlier| {
                !(rs.currency.is_some() && earlier.schedule.reads_amounts())
                    && earlier.when.implied_by(&later.when)
            });
            if let Some(e) = shadow {
                let why = if e.when.is_empty() {
                    "matches every order"
                } else {
                    "matches every order this one matches"
                };
                self.warn(
                    format!("rules[{}]", later.index),
                    format!(
                        "rule {:?} can never match: rule {:?} has higher priority and {why}",
                        later.id, e.id
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_sets_scan_short_lists_and_bisect_long_ones() {
        let short: IdSet = ["b", "a", "b", "ccc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            short.iter().map(String::as_str).collect::<Vec<_>>(),
            ["a", "b", "ccc"]
        );
        assert!(short.contains("a") && short.contains("ccc") && !short.contains("cc"));
        assert!(!short.contains("") && !short.contains("d"));
        let long: IdSet = (0..100).map(|i| format!("id-{i}")).collect();
        assert_eq!(long.len(), 100);
        assert!((0..100).all(|i| long.contains(&format!("id-{i}"))));
        assert!(!long.contains("id-100") && !long.contains("id-") && !long.contains("a"));
        let sub: IdSet = ["id-3", "id-77"].iter().map(|s| s.to_string()).collect();
        assert!(sub.is_subset(&long) && !long.is_subset(&sub) && !short.is_subset(&long));
    }

    fn errors(doc: &str) -> Vec<String> {
        compile(doc)
            .errors
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_empty_document_is_the_default_rule_set() {
        let c = compile("");
        let rs = c.ruleset.unwrap();
        assert_eq!(rs.max_levels, 3);
        assert_eq!(rs.hold_days, 7);
        assert_eq!(rs.attribution.window_days, 30);
        assert!(rs.rules.is_empty());
    }

    #[test]
    fn a_rule_set_reads_order_history_through_month_ladders_first_order_and_grades() {
        let reads = |doc: &str| compile(doc).ruleset.unwrap().reads_order_history();
        assert!(!reads(""));
        assert!(!reads("rules: [{id: a, levels: ['0.1']}]\n"));
        let order_ladder = "rules: [{id: a, ladder: {metric: order_amount, mode: flat, tiers: [{from: '0', rate: '0.1'}]}}]\n";
        assert!(!reads(order_ladder));
        assert!(reads(
            &order_ladder.replace("order_amount", "promoter_month_sales")
        ));
        assert!(reads("platform: {ladder: {metric: merchant_month_sales, mode: flat, tiers: [{from: '0', rate: '0.05'}]}}\n"));
        assert!(reads(
            "rules: [{id: a, when: {first_order: true}, levels: ['0.1']}]\n"
        ));
        assert!(reads("adjustments: [{id: x, when: {first_order: false}, level: 1, add: '0.01'}]\nrules: [{id: a, levels: ['0.1']}]\n"));
        assert!(reads(
            "grades: [{id: silver, upgrade: {direct_invites: 3}}]\n"
        ));
    }

    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let e = errors("rules:\n- id: a\n  levls: ['0.1']\n");
        assert!(e[0].starts_with("rules[0]"), "{e:?}");
        assert!(e[0].contains("levls"), "{e:?}");
        let e = errors("platfrom: {rate: '0.1'}\n");
        assert!(e[0].contains("platfrom"), "{e:?}");
    }

    #[test]
    fn a_rate_outside_zero_one_names_its_path() {
        let e = errors("rules:\n- id: a\n  levels: ['0.1', '1.5']\n");
        assert_eq!(e, vec!["rules[0].levels[1]: rate 1.5 is outside [0, 1]"]);
    }

    #[test]
    fn floats_are_refused_so_rates_stay_exact() {
        let e = errors("platform: {rate: 0.1}\n");
        assert!(e[0].starts_with("platform.rate"), "{e:?}");
    }

    #[test]
    fn structural_errors_are_all_reported() {
        let doc = r#"
max_levels: 2
rules:
  - id: a
    levels: ["0.1", "0.05", "0.01"]
  - id: a
    levels: ["0.1"]
    fixed: ["1.00"]
  - id: b
    ladder: {metric: order_amount, mode: marginal, tiers: [{from: "10", rate: "0.1"}, {from: "5", rate: "0.2"}]}
adjustments:
  - {id: x, level: 4, add: "0.01"}
"#;
        let e = errors(doc);
        let want = [
            "rules[0].levels: 3 levels is more than max_levels (2)",
            "rules[1].id: duplicate rule id",
            "rules[1]: a rule needs exactly one",
            "rules[2].ladder.mode: an order_amount ladder allows flat mode only",
            "rules[2].ladder.tiers[0].from: the first tier must start at 0",
            "rules[2].ladder.tiers[1].from: tiers must be in strictly ascending",
            "adjustments[0].level: no rule has a level 4",
        ];
        for w in want {
            assert!(e.iter().any(|m| m.starts_with(w)), "missing {w:?} in {e:?}");
        }
    }

    #[test]
    fn more_than_three_levels_warns_and_strict_refuses() {
        let c = compile("max_levels: 5\nrules: [{id: a, levels: ['0.1','0.01','0.01','0.01']}]\n");
        assert!(c.errors.is_empty());
        assert!(c.warnings.iter().any(|w| w.path == "max_levels"));
        let c = compile("compliance: strict\nmax_levels: 5\n");
        assert_eq!(c.errors[0].path, "max_levels");
        assert!(compile("max_levels: 11\n").errors[0]
            .message
            .contains("at most 10"));
    }

    #[test]
    fn shadowed_rules_and_uncapped_generosity_are_warned() {
        let c = compile(
            "rules:\n- {id: all, priority: 5, levels: ['0.4', '0.2']}\n- {id: beauty, when: {category: [beauty]}, levels: ['0.1']}\n",
        );
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert!(
            w.iter()
                .any(|m| m.starts_with("rules[1]: rule \"beauty\" can never match")),
            "{w:?}"
        );
        assert!(
            w.iter()
                .any(|m| m.starts_with("rules[0]: promoters can earn up to 0.6")),
            "{w:?}"
        );
    }

    #[test]
    fn platform_plus_fee_above_one_is_an_error() {
        let e = errors("payment_fee: {default: '0.5'}\nplatform: {rate: '0.6'}\n");
        assert!(e[0].starts_with("platform.rate"), "{e:?}");
    }

    #[test]
    fn decay_compiles_to_geometric_rates() {
        let rs = compile("rules: [{id: a, decay: {first: '0.10', factor: '0.5', levels: 3}}]\n")
            .ruleset
            .unwrap();
        match &rs.rules[0].schedule {
            Schedule::Rates(r) => {
                assert_eq!(
                    r.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    ["0.1", "0.05", "0.025"]
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
