//! The split engine: pure, synchronous, no I/O.
//!
//! [`compute`] runs the responsibility chain of PRODUCT.md §3 for every line; each stage
//! is its own function below (base, fee, platform take and partners, attribution, chain,
//! schedule, adjustments, cap, rounding, guard, residual). Arithmetic is [`Exact`] until
//! each share is rounded, and the result is checked against the money invariants before
//! it is returned.

use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, Utc};

use super::exact::{Exact, Rounding};
use super::money::Currency;
use super::network::{self, NetworkSnapshot, PromoterNode, MAX_UPLINE_WALK};
use super::order::{Funder, Line, Order};
use super::ruleset::{
    Adjustment, AttributionModel, Base, Conditions, CouponInBase, IdSet, Ladder, LadderMode,
    Metric, OrderIndex, Rate, Rule, RuleSet, Schedule,
};
use super::split::{
    find_total, same_id, sort_by_account, Account, AccountAmount, ChainMember, Explanation, Figure,
    InvariantViolation, LineSplit, Share, ShareKind, SplitResult, Text, WeightEntry,
};

/// What the store knows at commit time that changes money: read in the same transaction
/// that stores the result, so concurrent orders never see the same prior volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The buyer has no earlier stored order.
    pub first_order: bool,
    /// Sales of earlier orders this month with this order's primary promoter, minor units.
    pub promoter_month_prior: i64,
    /// Sales of earlier orders this month of this merchant, minor units.
    pub merchant_month_prior: i64,
}

/// Why a split could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The rule set needs a field the order does not have (path, message).
    #[error("{0}: {1}")]
    MissingField(String, String),
    /// A share does not fit in i64 minor units.
    #[error("a share is out of range")]
    Overflow,
    /// The computed split breaks a money invariant (a bug; never stored).
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
}

/// The calendar month of `at` in the rule set's zone, e.g. "2026-11".
pub fn month_key(at: DateTime<Utc>, rs: &RuleSet) -> Text {
    let local = at.with_timezone(&rs.timezone);
    let (year, month) = (local.year(), local.month());
    if !(0..=9999).contains(&year) {
        return compact_str::format_compact!("{year:04}-{month:02}");
    }
    // The same text as the format above, without the formatting machinery.
    let y = year as u32;
    let digit = |d: u32| b'0' + d as u8;
    let text = [
        digit(y / 1000),
        digit(y / 100 % 10),
        digit(y / 10 % 10),
        digit(y % 10),
        b'-',
        digit(month / 10),
        digit(month % 10),
    ];
    Text::from(std::str::from_utf8(&text).expect("ASCII digits"))
}

/// Appends the decimal digits of `v` (what `{v}` prints).
fn push_int(out: &mut impl std::fmt::Write, v: i64) {
    if v < 0 {
        let _ = out.write_char('-');
    }
    let mut digits = [0u8; 20];
    let (mut i, mut m) = (digits.len(), v.unsigned_abs());
    loop {
        i -= 1;
        digits[i] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    // Writing to a string cannot fail.
    let _ = out.write_str(std::str::from_utf8(&digits[i..]).expect("ASCII digits"));
}

// ---------------------------------------------------------------- attribution

/// A weighted level-1 promoter.
#[derive(Debug, Clone)]
pub struct Weighted {
    /// The promoter (shared with the snapshot).
    pub node: Arc<PromoterNode>,
    /// Its exact weight (weights sum to 1).
    pub weight: Exact,
}

/// Who gets level 1, and the primary promoter whose chain continues.
#[derive(Debug, Clone, Default)]
pub struct Attributed {
    /// Level-1 promoters and weights, first appearance order.
    pub weights: Vec<Weighted>,
    /// Level 1 of the chain.
    pub primary: Option<Arc<PromoterNode>>,
    /// What was ignored and why.
    pub notes: Vec<String>,
}

/// Stage 5: weights the referrals inside the window by the model; with none, the buyer's
/// bound promoter has weight 1.
pub fn attribute(order: &Order, rs: &RuleSet, snap: &NetworkSnapshot) -> Attributed {
    let mut notes = Vec::new();
    let window_start = order.paid_at - Duration::days(i64::from(rs.attribution.window_days));
    let mut eligible: Vec<(&Arc<PromoterNode>, DateTime<Utc>)> = Vec::new();
    for r in &order.referrals {
        if r.at < window_start || r.at > order.paid_at {
            notes.push(format!(
                "referral to {} at {} is outside the {}-day window before payment; ignored",
                r.promoter,
                r.at.to_rfc3339(),
                rs.attribution.window_days
            ));
            continue;
        }
        match snap.get(&r.promoter) {
            Some(node) => eligible.push((node, r.at)),
            None => notes.push(format!(
                "referral to unknown promoter {}; ignored",
                r.promoter
            )),
        }
    }
    eligible.sort_by_key(|(_, at)| *at); // stable: ties keep the order given
    if eligible.is_empty() {
        let bound = snap.bound.as_deref().and_then(|id| snap.get(id));
        return match bound {
            Some(node) => Attributed {
                weights: vec![Weighted {
                    node: node.clone(),
                    weight: Exact::one(),
                }],
                primary: Some(node.clone()),
                notes,
            },
            None => Attributed {
                weights: vec![],
                primary: None,
                notes,
            },
        };
    }
    let n = eligible.len();
    let a = &rs.attribution;
    let weights: Vec<Exact> = match a.model {
        AttributionModel::LastClick => (0..n)
            .map(|i| {
                if i == n - 1 {
                    Exact::one()
                } else {
                    Exact::zero()
                }
            })
            .collect(),
        AttributionModel::FirstClick => (0..n)
            .map(|i| if i == 0 { Exact::one() } else { Exact::zero() })
            .collect(),
        AttributionModel::Linear => {
            let w = Exact::ratio(1, n as i128).expect("n > 0");
            vec![w; n]
        }
        AttributionModel::PositionBased => match n {
            1 => vec![Exact::one()],
            2 => {
                let sum = a.first.add(&a.last);
                vec![
                    a.first.div(&sum).expect("first + last > 0 (validated)"),
                    a.last.div(&sum).expect("first + last > 0 (validated)"),
                ]
            }
            _ => {
                let middle = Exact::one()
                    .sub(&a.first)
                    .sub(&a.last)
                    .div(&Exact::int(n as i128 - 2))
                    .expect("n > 2");
                (0..n)
                    .map(|i| {
                        if i == 0 {
                            a.first.clone()
                        } else if i == n - 1 {
                            a.last.clone()
                        } else {
                            middle.clone()
                        }
                    })
                    .collect()
            }
        },
    };
    let primary_idx = if a.model == AttributionModel::FirstClick {
        0
    } else {
        n - 1
    };
    // A promoter named twice gets both parts: one level-1 piece with the summed weight.
    let mut merged: Vec<Weighted> = Vec::new();
    for ((node, _), w) in eligible.iter().zip(weights) {
        if w.is_zero() {
            continue;
        }
        match merged.iter_mut().find(|m| m.node.id == node.id) {
            Some(m) => m.weight = m.weight.add(&w),
            None => merged.push(Weighted {
                node: (*node).clone(),
                weight: w,
            }),
        }
    }
    Attributed {
        weights: merged,
        primary: Some(eligible[primary_idx].0.clone()),
        notes,
    }
}

// ---------------------------------------------------------------- chain

/// A level of the chain above level 1.
#[derive(Debug, Clone)]
pub struct Level {
    /// The ancestor at this level (shared with the snapshot).
    pub node: Arc<PromoterNode>,
    /// It took the level of a skipped non-active ancestor.
    pub compressed: bool,
}

/// Stage 6: levels 2..=max_levels walking up from the primary promoter's parent.
/// `result[0]` is level 2. Without compression a non-active ancestor keeps its level (and
/// earns nothing); with compression the next active ancestor takes it.
pub fn walk_chain(primary: &PromoterNode, rs: &RuleSet, snap: &NetworkSnapshot) -> Vec<Level> {
    let wanted = rs.max_levels.saturating_sub(1) as usize;
    // Without compression the levels are the nearest ancestors: the walk stops there.
    // With it, inactive ancestors are skipped, so it may have to go further.
    let limit = if rs.compression {
        MAX_UPLINE_WALK
    } else {
        wanted
    };
    let ancestors = network::upline(primary, limit, |id| snap.get(id));
    let mut out = Vec::with_capacity(wanted);
    if rs.compression {
        let mut skipped = false;
        for a in ancestors {
            if out.len() == wanted {
                break;
            }
            if a.is_active() {
                out.push(Level {
                    node: a.clone(),
                    compressed: skipped,
                });
            } else {
                skipped = true;
            }
        }
    } else {
        out.extend(ancestors.into_iter().take(wanted).map(|a| Level {
            node: a.clone(),
            compressed: false,
        }));
    }
    out
}

// ---------------------------------------------------------------- stages per line

/// Order-wide facts the conditions read.
struct Facts<'a> {
    order: &'a Order,
    grade: Option<&'a str>,
    first_order: bool,
    /// The order's sales in major units.
    sales_major: Exact,
    /// [`rules_fitting_order`].
    rules_fitting: u64,
}

fn in_set(set: &Option<IdSet>, v: &str) -> bool {
    set.as_ref().is_none_or(|s| s.contains(v))
}

/// The conditions on the line.
fn matches_line(c: &Conditions, line: &Line) -> bool {
    in_set(&c.category, &line.category) && in_set(&c.sku, &line.sku)
}

/// The conditions on the order: the same for every line.
fn matches_order(c: &Conditions, f: &Facts) -> bool {
    in_set(&c.merchant, &f.order.merchant)
        && in_set(&c.channel, f.order.channel_id())
        && c.tags
            .as_ref()
            .is_none_or(|t| f.order.tags.iter().any(|x| t.contains(x)))
        && c.promoter_grade
            .as_ref()
            .is_none_or(|g| f.grade.is_some_and(|x| g.contains(x)))
        && c.first_order.is_none_or(|want| want == f.first_order)
        && c.order_amount
            .as_ref()
            .is_none_or(|r| r.contains(&f.sales_major))
}

fn matches(c: &Conditions, f: &Facts, line: &Line) -> bool {
    matches_line(c, line) && matches_order(c, f)
}

/// A rule can apply to this order at all: its currency and its order conditions.
fn rule_fits_order(rs: &RuleSet, r: &Rule, f: &Facts) -> bool {
    let currency_ok =
        !(r.schedule.reads_amounts() && rs.currency.is_some_and(|c| c != f.order.currency));
    currency_ok && matches_order(&r.when, f)
}

/// How many rules [`rules_fitting_order`] covers: one bit each.
const RULES_IN_MASK: usize = OrderIndex::RULES;

/// Bit i: rule i fits the order ([`rule_fits_order`]), for the first [`RULES_IN_MASK`]
/// rules; found once per order, by look-ups in the rule set's [`OrderIndex`].
fn rules_fitting_order(rs: &RuleSet, f: &Facts) -> u64 {
    let x = &rs.order_index;
    let order = f.order;
    let mut m = x.all
        & x.merchant.admit(&order.merchant)
        & x.channel.admit(order.channel_id())
        & x.tags.admit_any(order.tags.iter().map(String::as_str))
        & f.grade
            .map_or(x.grade.unconditioned(), |g| x.grade.admit(g))
        & !(if f.first_order {
            x.not_first_order
        } else {
            x.first_order
        });
    if rs.currency.is_some_and(|c| c != order.currency) {
        m &= !x.reads_amounts;
    }
    // Amount ranges are few: each rule left that has one is checked in full.
    let mut ranged = m & x.order_amount;
    while ranged != 0 {
        let i = ranged.trailing_zeros() as usize;
        ranged &= ranged - 1;
        if !rule_fits_order(rs, &rs.rules[i], f) {
            m &= !(1 << i);
        }
    }
    m
}

/// Stage 7a: the matching rule with the highest priority (rules are sorted): among the
/// indexed rules, the lowest bit of those that fit the order and whose line conditions
/// the line's category and SKU meet (two look-ups); else the first unindexed one that
/// matches in full.
fn select_rule<'r>(rs: &'r RuleSet, f: &Facts, line: &Line) -> Option<&'r Rule> {
    let x = &rs.order_index;
    let m = f.rules_fitting & x.category.admit(&line.category) & x.sku.admit(&line.sku);
    if m != 0 {
        return Some(&rs.rules[m.trailing_zeros() as usize]);
    }
    rs.rules
        .iter()
        .skip(RULES_IN_MASK)
        .find(|r| rule_fits_order(rs, r, f) && matches_line(&r.when, line))
}

/// Stage 2: the commission base of a line, exact minor units.
fn base_of(rs: &RuleSet, line: &Line, idx: usize) -> Result<i64, EngineError> {
    let coupon_back = match (&line.coupon, rs.coupon_in_base, rs.base) {
        (_, _, Base::List) | (None, _, _) | (_, CouponInBase::None, _) => 0,
        (Some(c), CouponInBase::All, _) => c.amount,
        (Some(c), CouponInBase::PlatformFunded, _) if c.funded_by == Funder::Platform => c.amount,
        _ => 0,
    };
    let base = match rs.base {
        Base::Paid => line.paid,
        Base::List => line.gross,
        Base::Profit => {
            let cost = line.unit_cost.ok_or_else(|| {
                EngineError::MissingField(
                    format!("order.lines[{idx}].unit_cost"),
                    "is required: the rule set computes commissions on profit".into(),
                )
            })?;
            let total_cost = line
                .quantity
                .checked_mul(cost)
                .ok_or(EngineError::Overflow)?;
            line.paid.saturating_sub(total_cost).max(0)
        }
    };
    base.checked_add(coupon_back).ok_or(EngineError::Overflow)
}

fn round(x: &Exact, mode: Rounding) -> Result<i64, EngineError> {
    x.round_to_i64(mode).ok_or(EngineError::Overflow)
}

/// Volume a ladder reads before this order, minor units.
fn prior_volume(metric: Metric, ctx: &Context) -> i64 {
    match metric {
        Metric::PromoterMonthSales => ctx.promoter_month_prior,
        Metric::MerchantMonthSales => ctx.merchant_month_prior,
        Metric::OrderAmount => 0,
    }
}

/// Σ slice × rate over [prior, prior + sales) for a marginal ladder (minor units), or the
/// flat rate × sales; also returns the effective rate (amount / sales).
fn ladder_amount(l: &Ladder, currency: Currency, prior: i64, sales: i64) -> (Exact, Exact) {
    let from = |i: usize| currency.major_to_minor(&l.tiers[i].from);
    let tier_at = |v: &Exact| {
        let mut idx = 0;
        for i in 0..l.tiers.len() {
            if from(i) <= *v {
                idx = i;
            }
        }
        l.tiers[idx].rate.clone()
    };
    let sales_x = Exact::int(i128::from(sales));
    match l.mode {
        LadderMode::Flat => {
            let v = if l.metric == Metric::OrderAmount {
                sales_x.clone()
            } else {
                Exact::int(i128::from(prior) + i128::from(sales))
            };
            let rate = tier_at(&v);
            (rate.mul(&sales_x), rate)
        }
        LadderMode::Marginal => {
            let lo = Exact::int(i128::from(prior));
            if sales == 0 {
                let rate = tier_at(&lo);
                return (Exact::zero(), rate);
            }
            let hi = Exact::int(i128::from(prior) + i128::from(sales));
            let mut amount = Exact::zero();
            for i in 0..l.tiers.len() {
                let t_lo = from(i);
                let start = if t_lo > lo { t_lo } else { lo.clone() };
                let end = if i + 1 < l.tiers.len() {
                    from(i + 1).min(hi.clone())
                } else {
                    hi.clone()
                };
                if end > start {
                    amount = amount.add(&end.sub(&start).mul(&l.tiers[i].rate));
                }
            }
            let rate = amount.div(&sales_x).expect("sales > 0");
            (amount, rate)
        }
    }
}

/// Stage 4: the platform rate of a line (the rule's, else the ladder's, else the flat
/// rate) and the detail that says where it came from.
fn platform_rate(rs: &RuleSet, rule: Option<&Rule>, order: &Order, ctx: &Context) -> (Rate, Text) {
    if let Some(r) = rule.and_then(|r| r.platform_rate.as_ref()) {
        return (
            r.clone(),
            compact_str::format_compact!("platform_rate of rule {}", rule.map_or("", |r| &r.id)),
        );
    }
    if let Some(l) = &rs.platform_ladder {
        if rs.currency.is_some_and(|c| c != order.currency) {
            return (
                Rate::new(l.tiers[0].rate.clone()),
                Text::const_new("platform ladder in another currency: first tier"),
            );
        }
        let (_, rate) = ladder_amount(
            l,
            order.currency,
            prior_volume(l.metric, ctx),
            order.sales(),
        );
        return (Rate::new(rate), Text::const_new("platform ladder"));
    }
    (rs.platform_rate.clone(), Text::const_new(""))
}

/// One commission piece: its explanation is already in its share ([`Piece::share`],
/// [`Piece::explanation`]); the amounts beside it are what stages 8–9 work on.
struct Piece {
    exact: Exact,
    /// Its rounded amount (stage 8b), then guarded (stage 9).
    rounded: i64,
    /// Index of the promoter's share in the line's shares.
    share: usize,
    /// Index of the piece's explanation in that share.
    explanation: usize,
}

/// The pieces of a line: at most one per level and level-1 promoter, kept on the stack.
type Pieces = smallvec::SmallVec<[Piece; 8]>;

/// The explanation of a piece in the line's shares.
fn explanation<'s>(shares: &'s mut [Share], p: &Piece) -> &'s mut Explanation {
    &mut shares[p.share].explanations[p.explanation]
}

/// Adds a commission piece of `promoter` to the line's shares: to the promoter's share
/// when an earlier level already gave it one (from `first_promoter` on), else as a new
/// share, so that its explanation is written once, where it stays.
#[inline(always)]
fn push_piece(
    shares: &mut Vec<Share>,
    first_promoter: usize,
    pieces: &mut Pieces,
    promoter: &str,
    exact: Exact,
    e: Explanation,
) {
    let known = shares[first_promoter..]
        .iter()
        .position(|s| matches!(&s.account, Account::Promoter(id) if same_id(id, promoter)));
    let (share, explanation) = match known {
        Some(i) => {
            let s = &mut shares[first_promoter + i];
            s.explanations.push(e);
            (first_promoter + i, s.explanations.len() - 1)
        }
        None => {
            shares.push(share(Account::Promoter(Text::from(promoter)), 0, e));
            (shares.len() - 1, 0)
        }
    };
    pieces.push(Piece {
        exact,
        rounded: 0,
        share,
        explanation,
    });
}

/// The exact amount of a level, the rate shown for it and the adjustments in it.
#[allow(clippy::too_many_arguments)]
fn level_amount(
    k: u32,
    rule: &Rule,
    adjustments: &[&Adjustment],
    order: &Order,
    line: &Line,
    base_x: &Exact,
    ctx: &Context,
) -> (Exact, Figure, Vec<Text>) {
    let cur = order.currency;
    // Adjustment additions of this level (rate schedules only), in document order.
    let mut add: Option<Exact> = None;
    let mut ids = Vec::new();
    if !matches!(rule.schedule, Schedule::Fixed(_)) {
        for a in adjustments.iter().filter(|a| a.level == k) {
            add = Some(match add {
                Some(x) => x.add(&a.add),
                None => Exact::zero().add(&a.add),
            });
            ids.push(Text::from(a.id.as_str()));
        }
    }
    // x + 0 is x exactly: skip the addition when no adjustment applies.
    let plus = |x: &Exact| match &add {
        Some(a) => x.add(a),
        None => x.clone(),
    };
    // Without an adjustment the rate is the rule's own, whose text is already rendered.
    let text = |rate: &Exact, i: usize| match (&add, rule.rate_texts.get(i)) {
        (None, Some(t)) => Figure::Text(t.clone()),
        _ => rate.to_figure(),
    };
    let (amount, rate) = match &rule.schedule {
        Schedule::Rates(r) => {
            let rate = plus(&r[k as usize - 1]);
            (rate.mul(base_x), text(&rate, k as usize - 1))
        }
        Schedule::Fixed(f) => {
            let per_unit = cur.major_to_minor(&f[k as usize - 1]);
            (
                per_unit.mul(&Exact::int(i128::from(line.quantity))),
                Figure::Text(compact_str::format_compact!(
                    "{} per unit",
                    f[k as usize - 1]
                )),
            )
        }
        Schedule::Ladder(l) if k == 1 => {
            let (_, eff) = ladder_amount(l, cur, prior_volume(l.metric, ctx), order.sales());
            let rate = plus(&eff);
            (rate.mul(base_x), rate.to_figure())
        }
        Schedule::Ladder(l) => {
            let rate = plus(&l.levels[k as usize - 2]);
            (rate.mul(base_x), text(&rate, k as usize - 2))
        }
    };
    (amount, rate, ids)
}

/// Stages 7–8: the exact pieces of a line (before cap), per level and promoter. A level's
/// amount and rate text are computed only when some promoter receives it.
#[allow(clippy::too_many_arguments)]
fn commission_pieces(
    rs: &RuleSet,
    rule: &Rule,
    facts: &Facts,
    line: &Line,
    base: i64,
    att: &Attributed,
    chain: &[Level],
    ctx: &Context,
    notes: &mut Vec<String>,
    shares: &mut Vec<Share>,
    pieces: &mut Pieces,
) {
    let order = facts.order;
    let base_x = Exact::int(i128::from(base));
    let adjustments: smallvec::SmallVec<[&Adjustment; 4]> =
        if matches!(rule.schedule, Schedule::Fixed(_)) {
            smallvec::SmallVec::new()
        } else {
            rs.adjustments
                .iter()
                .filter(|a| matches(&a.when, facts, line))
                .collect()
        };
    let level = |k: u32| level_amount(k, rule, &adjustments, order, line, &base_x, ctx);
    let levels = rule.schedule.len().min(rs.max_levels as usize);
    let first_promoter = shares.len();
    let expl = |level: u32, rate: Figure, ids: Vec<Text>| {
        let mut e = Explanation::of(ShareKind::Commission, base);
        e.rule_id = Text::from(rule.id.as_str());
        e.level = level;
        e.rate = rate;
        e.adjustments = ids;
        e
    };
    if levels >= 1 {
        let active = att.weights.iter().filter(|w| w.node.is_active()).count();
        let mut level1: Option<(Exact, Figure, Vec<Text>)> = None;
        let mut given = 0;
        for w in &att.weights {
            if !w.node.is_active() {
                notes.push(format!(
                    "line {}: level-1 piece of {} promoter {} stays with the merchant",
                    line.id, w.node.status, w.node.id
                ));
                continue;
            }
            let (amount1, rate1, ids1) = level1.get_or_insert_with(|| level(1));
            given += 1;
            // The last piece takes the texts, the others copy them.
            let (rate, ids) = if given == active {
                (std::mem::take(rate1), std::mem::take(ids1))
            } else {
                (rate1.clone(), ids1.clone())
            };
            let mut e = expl(1, rate, ids);
            e.weight = w.weight.to_figure();
            // A single promoter's weight is 1: x·1 is x exactly.
            let exact = if w.weight.is_one() {
                amount1.clone()
            } else {
                amount1.mul(&w.weight)
            };
            push_piece(shares, first_promoter, pieces, &w.node.id, exact, e);
        }
    }
    for k in 2..=levels as u32 {
        match chain.get(k as usize - 2) {
            Some(l) if l.node.is_active() => {
                let (amount, rate, ids) = level(k);
                let mut e = expl(k, rate, ids);
                e.compressed = l.compressed;
                push_piece(shares, first_promoter, pieces, &l.node.id, amount, e);
            }
            Some(l) => notes.push(format!(
                "line {}: level {k} ancestor {} is {}; its share stays with the merchant",
                line.id, l.node.id, l.node.status
            )),
            None => {}
        }
    }
}

#[inline(always)]
fn share(account: Account, amount: i64, e: Explanation) -> Share {
    Share {
        account,
        amount,
        explanations: smallvec::smallvec![e],
    }
}

/// Stages 2–10 for one line.
#[allow(clippy::too_many_arguments)]
fn split_line(
    rs: &RuleSet,
    facts: &Facts,
    line: &Line,
    idx: usize,
    att: &Attributed,
    chain: &[Level],
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Result<LineSplit, EngineError> {
    let order = facts.order;
    let d = line.paid;
    let d_x = Exact::int(i128::from(d));
    let rule = select_rule(rs, facts, line);
    let base = base_of(rs, line, idx)?;
    // Stage 3: channel fee.
    let fee_rate = rs.fee_rate(order.channel_id());
    let fee_exact = fee_rate.value.mul(&d_x);
    let fee = round(&fee_exact, rs.rounding)?.min(d);
    // Stage 4: platform take and partners.
    let (p_rate, p_detail) = platform_rate(rs, rule, order, ctx);
    let take_exact = p_rate.value.mul(&d_x);
    let mut take = round(&take_exact, rs.rounding)?;
    let mut take_detail = p_detail;
    if take > d - fee {
        take = d - fee;
        take_detail = Text::const_new("clamped so that fee + take never exceed the line");
    }
    let take_x = Exact::int(i128::from(take));
    // The shares in the fixed account order: merchant, platform, partners, channel, then
    // promoters. The merchant's and the platform's amounts are set once known.
    let mut shares = Vec::with_capacity(
        3 + rs.partners.len() + att.weights.len() + (rs.max_levels as usize).saturating_sub(1),
    );
    shares.push(share(
        Account::Merchant(Text::from(order.merchant.as_str())),
        0,
        Explanation::of(ShareKind::MerchantResidual, d),
    ));
    let mut pe = Explanation::of(ShareKind::PlatformTake, d);
    pe.rate = Figure::Text(p_rate.text);
    pe.exact = take_exact.to_figure();
    pe.detail = take_detail;
    shares.push(share(Account::Platform, 0, pe));
    const PLATFORM: usize = 1;
    for p in &rs.partners {
        let exact = p.share.value.mul(&take_x);
        let amount = round(&exact, rs.rounding)?;
        let mut e = Explanation::of(ShareKind::Partner, take);
        e.rate = Figure::Text(p.share.text.clone());
        e.exact = exact.to_figure();
        shares.push(share(
            Account::Partner(Text::from(p.id.as_str())),
            amount,
            e,
        ));
    }
    let partners = &mut shares[PLATFORM + 1..];
    let partner_sum: i64 = partners.iter().map(|p| p.amount).sum();
    if partner_sum > take {
        // Rounding up can only overshoot by a few minor units; scale down like the guard.
        for p in partners.iter_mut() {
            p.amount = (i128::from(p.amount) * i128::from(take) / i128::from(partner_sum)) as i64;
            p.explanations[0].guarded = true;
        }
    }
    let partner_sum: i64 = partners.iter().map(|p| p.amount).sum();
    let platform = &mut shares[PLATFORM];
    platform.amount = take - partner_sum;
    if partner_sum > 0 {
        // "<detail>; keeps N after partners", or without the "; " when there is no detail.
        let pe = &mut platform.explanations[0];
        let mut detail = Text::with_capacity(pe.detail.len() + 40);
        detail.push_str(&pe.detail);
        if !pe.detail.is_empty() {
            detail.push_str("; ");
        }
        detail.push_str("keeps ");
        push_int(&mut detail, take - partner_sum);
        detail.push_str(" after partners");
        pe.detail = detail;
    }
    let mut fe = Explanation::of(ShareKind::ChannelFee, d);
    fe.rate = Figure::Text(fee_rate.text.clone());
    fe.exact = fee_exact.to_figure();
    shares.push(share(
        Account::Channel(Text::from(order.channel_id())),
        fee,
        fe,
    ));
    // Stages 5–8: commissions.
    let mut pieces = Pieces::new();
    if let Some(rule) = rule.filter(|_| !att.weights.is_empty()) {
        commission_pieces(
            rs,
            rule,
            facts,
            line,
            base,
            att,
            chain,
            ctx,
            notes,
            &mut shares,
            &mut pieces,
        );
    }
    if let (Some(cap), Some((first, rest))) = (&rs.cap, pieces.split_first()) {
        let total = rest
            .iter()
            .fold(first.exact.clone(), |s, p| s.add(&p.exact));
        let limit = cap.mul(&Exact::int(i128::from(base)));
        if total > limit {
            let factor = limit.div(&total).expect("total > limit ≥ 0");
            for p in &mut pieces {
                p.exact = p.exact.mul(&factor);
                explanation(&mut shares, p).capped = true;
            }
        }
    }
    for p in &mut pieces {
        explanation(&mut shares, p).exact = p.exact.to_figure();
        p.rounded = round(&p.exact, rs.rounding)?.max(0);
    }
    // Stage 9: guard.
    let promoters: i64 = pieces
        .iter()
        .try_fold(0i64, |s, p| s.checked_add(p.rounded))
        .ok_or(EngineError::Overflow)?;
    let avail = d - fee - take;
    if promoters > avail {
        for p in &mut pieces {
            p.rounded = (i128::from(p.rounded) * i128::from(avail) / i128::from(promoters)) as i64;
            explanation(&mut shares, p).guarded = true;
        }
    }
    let mut promoters: i64 = 0;
    for p in &pieces {
        shares[p.share].amount += p.rounded;
        promoters += p.rounded;
    }
    // Stage 10: merchant residual.
    shares[0].amount = d - fee - take - promoters;
    shares.retain(|s| s.amount != 0 || matches!(s.account, Account::Merchant(_)));
    Ok(LineSplit {
        line_id: Text::from(line.id.as_str()),
        paid: d,
        base,
        uses: line.uses,
        shares,
    })
}

/// The shipping pseudo-line: the channel fee, the rest to the merchant.
fn split_shipping(rs: &RuleSet, order: &Order) -> Result<LineSplit, EngineError> {
    let s = order.shipping;
    let s_x = Exact::int(i128::from(s));
    let fee_rate = rs.fee_rate(order.channel_id());
    let fee_exact = fee_rate.value.mul(&s_x);
    let fee = round(&fee_exact, rs.rounding)?.min(s);
    let mut fe = Explanation::of(ShareKind::ChannelFee, s);
    fe.rate = Figure::Text(fee_rate.text.clone());
    fe.exact = fee_exact.to_figure();
    let mut me = Explanation::of(ShareKind::MerchantResidual, s);
    me.detail = Text::const_new("shipping carries no platform take and no commission");
    let mut shares = vec![share(
        Account::Merchant(Text::from(order.merchant.as_str())),
        s - fee,
        me,
    )];
    if fee > 0 {
        shares.push(share(
            Account::Channel(Text::from(order.channel_id())),
            fee,
            fe,
        ));
    }
    Ok(LineSplit {
        line_id: "shipping".into(),
        paid: s,
        base: 0,
        uses: None,
        shares,
    })
}

/// Everything one computation needs besides the order and the rule set.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The network as seen for this order.
    pub network: &'a NetworkSnapshot,
    /// Store state read at commit time.
    pub context: Context,
    /// Version number of the rule set (0 for drafts).
    pub ruleset_version: u64,
    /// Fingerprint of the order content.
    pub fingerprint: String,
    /// Computation time.
    pub now: DateTime<Utc>,
}

/// Computes the split of an order. Pure: same inputs, same result.
pub fn compute(order: &Order, rs: &RuleSet, inputs: &Inputs) -> Result<SplitResult, EngineError> {
    let att = attribute(order, rs, inputs.network);
    let chain = att
        .primary
        .as_ref()
        .map(|p| walk_chain(p, rs, inputs.network))
        .unwrap_or_default();
    compute_with(order, rs, inputs, &att, &chain)
}

/// [`compute`] with attribution and chain already resolved.
pub fn compute_with(
    order: &Order,
    rs: &RuleSet,
    inputs: &Inputs,
    att: &Attributed,
    chain: &[Level],
) -> Result<SplitResult, EngineError> {
    let ctx = &inputs.context;
    let cur = order.currency;
    let sales = order.sales();
    let mut facts = Facts {
        order,
        grade: att.primary.as_ref().and_then(|p| p.grade.as_deref()),
        first_order: ctx.first_order,
        sales_major: Exact::ratio(i128::from(sales), i128::from(cur.minor_per_major()))
            .expect("10^e > 0"),
        rules_fitting: 0,
    };
    facts.rules_fitting = rules_fitting_order(rs, &facts);
    let mut notes = att.notes.clone();
    let mut lines = Vec::with_capacity(order.lines.len() + 1);
    for (i, line) in order.lines.iter().enumerate() {
        lines.push(split_line(
            rs, &facts, line, i, att, chain, ctx, &mut notes,
        )?);
    }
    if order.shipping > 0 {
        lines.push(split_shipping(rs, order)?);
    }
    // Promoters' lowest level in the order fixes their place in the account order. The
    // ids are copied (inline, no allocation): the shares they come from are sorted next.
    let mut level_of: smallvec::SmallVec<[(Text, u32); 8]> = smallvec::SmallVec::new();
    for l in &lines {
        for s in &l.shares {
            if let Account::Promoter(id) = &s.account {
                let lv = s
                    .explanations
                    .iter()
                    .map(|e| e.level)
                    .min()
                    .unwrap_or(u32::MAX);
                match level_of.iter_mut().find(|x| same_id(&x.0, id)) {
                    Some(x) => x.1 = x.1.min(lv),
                    None => level_of.push((id.clone(), lv)),
                }
            }
        }
    }
    let lvl = |id: &str| {
        level_of
            .iter()
            .find(|x| same_id(&x.0, id))
            .map_or(u32::MAX, |x| x.1)
    };
    let mut totals: Vec<AccountAmount> =
        Vec::with_capacity(lines.first().map_or(0, |l| l.shares.len()) + 1);
    for l in &mut lines {
        sort_by_account(&mut l.shares, |s| &s.account, &lvl);
        let mut next = 0;
        for s in &l.shares {
            let n = totals.len();
            match find_total(&totals, next, &s.account) {
                Some(i) => {
                    let t = &mut totals[i];
                    t.amount = t
                        .amount
                        .checked_add(s.amount)
                        .ok_or(EngineError::Overflow)?;
                    next = i + 1;
                }
                None => {
                    totals.push(AccountAmount {
                        account: s.account.clone(),
                        amount: s.amount,
                    });
                    next = n + 1;
                }
            }
        }
    }
    sort_by_account(&mut totals, |t| &t.account, &lvl);
    let mut chain_out = Vec::with_capacity(chain.len() + 1);
    if let Some(p) = &att.primary {
        chain_out.push(ChainMember {
            level: 1,
            promoter: Text::from(p.id.as_str()),
            status: Text::const_new(p.status.as_str()),
            grade: Text::from(p.grade.as_deref().unwrap_or_default()),
        });
    }
    for (k, l) in chain.iter().enumerate() {
        chain_out.push(ChainMember {
            level: k as u32 + 2,
            promoter: Text::from(l.node.id.as_str()),
            status: Text::const_new(l.node.status.as_str()),
            grade: Text::from(l.node.grade.as_deref().unwrap_or_default()),
        });
    }
    let primary_id = att.primary.as_ref().map(|p| Text::from(p.id.as_str()));
    let attribution = att
        .weights
        .iter()
        .map(|w| WeightEntry {
            promoter: Text::from(w.node.id.as_str()),
            weight: w.weight.to_figure(),
            primary: primary_id.as_deref() == Some(w.node.id.as_str()),
        })
        .collect();
    let result = SplitResult {
        order_id: order.id.clone(),
        merchant: order.merchant.clone(),
        buyer: order.buyer.clone(),
        currency: Text::const_new(cur.code()),
        exponent: cur.exponent(),
        paid_at: order.paid_at,
        ruleset_version: inputs.ruleset_version,
        lines,
        totals,
        chain: chain_out,
        attribution,
        notes,
        fingerprint: inputs.fingerprint.clone(),
        computed_at: inputs.now,
        paid: order.total_paid(),
        sales,
        primary_promoter: primary_id,
        month: month_key(order.paid_at, rs),
        hold_days: rs.hold_days,
    };
    result.check()?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ruleset;

    use crate::domain::network::{PromoterNode, Status};
    use crate::domain::order::{RawAmount, RawLine, RawOrder};

    /// A 2-line order (categories "a" and "b") by merchant M1, tagged "t", bound to P1.
    fn order_and_network() -> (Order, NetworkSnapshot) {
        let line = |id: &str, category: &str| RawLine {
            id: id.into(),
            sku: format!("S-{id}"),
            category: category.into(),
            quantity: 1,
            unit_price: RawAmount::Minor(10_000),
            ..Default::default()
        };
        let raw = RawOrder {
            id: "O1".into(),
            merchant: "M1".into(),
            buyer: "B1".into(),
            paid_at: Some(chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 0, 0, 0).unwrap()),
            currency: "CNY".into(),
            channel: "alipay".into(),
            tags: vec!["t".into()],
            referrals: vec![],
            shipping: RawAmount::Absent,
            lines: vec![line("L1", "a"), line("L2", "b")],
        };
        let mut snap = NetworkSnapshot::default();
        snap.insert(PromoterNode {
            id: "P1".into(),
            parent: None,
            grade: None,
            status: Status::Active,
        });
        snap.bound = Some("P1".into());
        (Order::parse(&raw, "order").unwrap(), snap)
    }

    fn rule_ids(rs: &RuleSet) -> Vec<String> {
        let (order, snap) = order_and_network();
        let inputs = Inputs {
            network: &snap,
            context: Context::default(),
            ruleset_version: 1,
            fingerprint: String::new(),
            now: Utc::now(),
        };
        let r = compute(&order, rs, &inputs).unwrap();
        r.lines
            .iter()
            .map(|l| {
                l.shares
                    .iter()
                    .flat_map(|s| &s.explanations)
                    .find(|e| e.level == 1)
                    .map_or(String::new(), |e| e.rule_id.to_string())
            })
            .collect()
    }

    /// Order-wide conditions are evaluated once per order for the first 64 rules and per
    /// line after them: both must choose the same rules as evaluating everything per line.
    #[test]
    fn rule_selection_is_the_same_before_and_after_the_64th_rule() {
        for filler in [0, 70] {
            let mut doc = String::from("max_levels: 1\nrules:\n");
            // Rules that fail on the order (merchant, tags, channel) or on the line.
            for i in 0..filler {
                let when = match i % 4 {
                    0 => "{merchant: [M2]}",
                    1 => "{tags: [x, y]}",
                    2 => "{channel: [wechat], category: [a, b]}",
                    _ => "{category: [c]}",
                };
                doc.push_str(&format!(
                    "  - {{id: f{i}, priority: {}, when: {when}, levels: [\"0.2\"]}}\n",
                    1000 - i
                ));
            }
            // The order fits, the line does not: category a only.
            doc.push_str("  - {id: only-a, priority: 10, when: {merchant: [M1], tags: [t], category: [a]}, levels: [\"0.1\"]}\n");
            doc.push_str(
                "  - {id: rest, priority: 0, when: {channel: [alipay]}, levels: [\"0.05\"]}\n",
            );
            let rs = ruleset::compile(&doc).ruleset.unwrap();
            assert_eq!(rs.rules.len(), filler + 2);
            assert_eq!(rule_ids(&rs), ["only-a", "rest"], "{filler} filler rules");
        }
    }

    /// The order index selects exactly the rules that evaluating each rule's order
    /// conditions selects, for every combination of merchant, channel, tags, grade, first
    /// order, amount and currency.
    #[test]
    fn the_order_index_fits_the_rules_that_their_conditions_fit() {
        let doc = r#"currency: CNY
max_levels: 1
grades:
  - {id: silver, upgrade: {direct_invites: 2}}
  - {id: gold, upgrade: {direct_invites: 5}}
rules:
  - {id: a, priority: 20, when: {merchant: [M1, M2]}, levels: ['0.1']}
  - {id: b, priority: 19, when: {channel: [wechat]}, levels: ['0.1']}
  - {id: c, priority: 18, when: {tags: [x, y]}, levels: ['0.1']}
  - {id: d, priority: 17, when: {promoter_grade: [silver]}, levels: ['0.1']}
  - {id: e, priority: 16, when: {first_order: true}, levels: ['0.1']}
  - {id: f, priority: 15, when: {first_order: false, merchant: [M1]}, levels: ['0.1']}
  - {id: g, priority: 14, when: {order_amount: {gte: '100', lt: '500'}}, levels: ['0.1']}
  - {id: h, priority: 13, fixed: ['1.00']}
  - {id: i, priority: 12, when: {tags: [y], channel: [alipay, wechat], promoter_grade: [gold, silver]}, levels: ['0.1']}
  - {id: j, priority: 11, when: {order_amount: {gt: '300'}, merchant: [M2]}, fixed: ['2.00']}
  - {id: k, priority: 10, when: {category: [a]}, levels: ['0.1']}
  - {id: l, priority: 9, when: {sku: [T, U], merchant: [M3]}, levels: ['0.1']}
  - {id: m, priority: 8, when: {category: [b, c], sku: [S]}, levels: ['0.1']}
  - {id: n, priority: 7, when: {category: [b], tags: [q]}, levels: ['0.1']}
"#;
        let c = ruleset::compile(doc);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        let rs = c.ruleset.unwrap();
        let mut checked = 0;
        for merchant in ["M1", "M2", "M3"] {
            for channel in ["alipay", "wechat", ""] {
                for tags in [vec![], vec!["x"], vec!["y", "q"], vec!["q"]] {
                    for currency in ["CNY", "USD"] {
                        for price in [5_000, 20_000, 40_000, 90_000] {
                            let raw = RawOrder {
                                id: "O".into(),
                                merchant: merchant.into(),
                                buyer: "B".into(),
                                paid_at: Some(
                                    chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 0, 0, 0)
                                        .unwrap(),
                                ),
                                currency: currency.into(),
                                channel: channel.into(),
                                tags: tags.iter().map(|t| t.to_string()).collect(),
                                referrals: vec![],
                                shipping: RawAmount::Absent,
                                lines: [("a", "S"), ("b", "S"), ("b", "T"), ("d", "U")]
                                    .iter()
                                    .enumerate()
                                    .map(|(i, (category, sku))| RawLine {
                                        id: format!("L{i}"),
                                        sku: sku.to_string(),
                                        category: category.to_string(),
                                        quantity: 1,
                                        unit_price: RawAmount::Minor(price),
                                        ..Default::default()
                                    })
                                    .collect(),
                            };
                            let order = Order::parse(&raw, "order").unwrap();
                            let cur = order.currency;
                            for grade in [None, Some("silver"), Some("gold")] {
                                for first_order in [false, true] {
                                    let mut facts = Facts {
                                        order: &order,
                                        grade,
                                        first_order,
                                        sales_major: Exact::ratio(
                                            i128::from(order.sales()),
                                            i128::from(cur.minor_per_major()),
                                        )
                                        .unwrap(),
                                        rules_fitting: 0,
                                    };
                                    let want =
                                        rs.rules.iter().enumerate().fold(0u64, |m, (i, r)| {
                                            m | (u64::from(rule_fits_order(&rs, r, &facts)) << i)
                                        });
                                    let case = format!("{merchant} {channel:?} {tags:?} {currency} {price} {grade:?} {first_order}");
                                    facts.rules_fitting = rules_fitting_order(&rs, &facts);
                                    assert_eq!(facts.rules_fitting, want, "{case}");
                                    // Each line's rule: the first that matches in full.
                                    for line in &order.lines {
                                        let want = rs.rules.iter().find(|r| {
                                            matches(&r.when, &facts, line)
                                                && rule_fits_order(&rs, r, &facts)
                                        });
                                        assert_eq!(
                                            select_rule(&rs, &facts, line).map(|r| &r.id),
                                            want.map(|r| &r.id),
                                            "{case} line {} {}",
                                            line.category,
                                            line.sku
                                        );
                                    }
                                    checked += 1;
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 4 * 2 * 4 * 3 * 2);
    }

    /// Group commit computes the splits of a rule set that reads no order history before
    /// the batch, with the default context (`store::PendingSplit::new`): such a split
    /// must not depend on the context at all. Each rule set that reads history, run the
    /// same way, shows the check can see a difference.
    #[test]
    fn a_rule_set_reading_no_history_splits_the_same_under_any_context() {
        let (order, snap) = order_and_network();
        let split = |doc: &str, context: Context| {
            let rs = ruleset::compile(doc).ruleset.unwrap();
            let inputs = Inputs {
                network: &snap,
                context,
                ruleset_version: 1,
                fingerprint: String::new(),
                now: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, 2, 0, 0, 1).unwrap(),
            };
            (
                rs.reads_order_history(),
                compute(&order, &rs, &inputs).unwrap(),
            )
        };
        let ladder = |metric: &str| {
            format!("{{metric: {metric}, mode: flat, tiers: [{{from: '0', rate: '0.05'}}, {{from: '1000', rate: '0.2'}}]}}")
        };
        let others = [
            Context {
                first_order: true,
                promoter_month_prior: 0,
                merchant_month_prior: 0,
            },
            Context {
                first_order: false,
                promoter_month_prior: 50_000_000,
                merchant_month_prior: 70_000_000,
            },
        ];
        let plain = [
            "rules: [{id: a, levels: ['0.1']}]".to_string(),
            format!("rules: [{{id: a, ladder: {}}}]", ladder("order_amount")),
            format!(
                "platform: {{ladder: {}}}\nrules: [{{id: a, levels: ['0.1']}}]",
                ladder("order_amount")
            ),
            "adjustments: [{id: x, when: {category: [a]}, level: 1, add: '0.01'}]\nrules: [{id: a, levels: ['0.1']}]".to_string(),
        ];
        for doc in &plain {
            let (reads, base) = split(doc, Context::default());
            assert!(!reads, "{doc}");
            for c in &others {
                assert_eq!(split(doc, c.clone()).1, base, "{doc} under {c:?}");
            }
        }
        let history = [
            "rules: [{id: f, priority: 1, when: {first_order: true}, levels: ['0.2']}, {id: a, levels: ['0.1']}]".to_string(),
            format!("rules: [{{id: a, ladder: {}}}]", ladder("promoter_month_sales")),
            format!(
                "platform: {{ladder: {}}}\nrules: [{{id: a, levels: ['0.1']}}]",
                ladder("merchant_month_sales")
            ),
        ];
        for doc in &history {
            let (reads, base) = split(doc, Context::default());
            assert!(reads, "{doc}");
            assert!(
                others.iter().any(|c| split(doc, c.clone()).1 != base),
                "{doc}: no context changed the split"
            );
        }
    }

    /// A promoter who earns twice on a line (a level-1 weight and, as the primary
    /// promoter's parent, level 2) gets one share with both explanations, summing both
    /// rounded pieces; a binding cap marks each piece where it is written.
    #[test]
    fn a_promoter_at_two_levels_gets_one_share_with_both_pieces() {
        let at = |d: u32| chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 12, d, 0, 0, 0).unwrap();
        let raw = RawOrder {
            id: "O2".into(),
            merchant: "M1".into(),
            buyer: "B1".into(),
            paid_at: Some(at(2)),
            currency: "CNY".into(),
            channel: "alipay".into(),
            tags: vec![],
            referrals: vec![
                crate::domain::order::RawReferral {
                    promoter: "PA".into(),
                    at: Some(at(1)),
                },
                crate::domain::order::RawReferral {
                    promoter: "PC".into(),
                    at: Some(at(2)),
                },
            ],
            shipping: RawAmount::Absent,
            lines: vec![RawLine {
                id: "L1".into(),
                sku: "S".into(),
                category: "a".into(),
                quantity: 1,
                unit_price: RawAmount::Minor(10_001),
                ..Default::default()
            }],
        };
        let order = Order::parse(&raw, "order").unwrap();
        let mut snap = NetworkSnapshot::default();
        for (id, parent) in [("PA", None), ("PC", Some("PA"))] {
            snap.insert(PromoterNode {
                id: id.into(),
                parent: parent.map(Into::into),
                grade: None,
                status: Status::Active,
            });
        }
        let inputs = Inputs {
            network: &snap,
            context: Context::default(),
            ruleset_version: 1,
            fingerprint: String::new(),
            now: at(2),
        };
        let split = |doc: &str| {
            let rs = ruleset::compile(doc).ruleset.unwrap();
            compute(&order, &rs, &inputs).unwrap()
        };
        let levels = "attribution: {model: linear}\nrules: [{id: r, levels: ['0.10', '0.05']}]";
        for (doc, capped) in [
            (levels.to_string(), false),
            // 3 pieces of 500.05 against a limit of 750.075: each is halved.
            (format!("cap: '0.075'\n{levels}"), true),
        ] {
            let r = split(&doc);
            let shares = &r.lines[0].shares;
            let pa: Vec<&Share> = shares
                .iter()
                .filter(|s| s.account == Account::Promoter("PA".into()))
                .collect();
            assert_eq!(pa.len(), 1, "{doc}: {shares:?}");
            let levels: Vec<u32> = pa[0].explanations.iter().map(|e| e.level).collect();
            assert_eq!(levels, [1, 2], "{doc}");
            assert!(
                pa[0].explanations.iter().all(|e| e.capped == capped),
                "{doc}"
            );
            // Each piece rounds on its own (down), and the share is their sum.
            let rounded: i64 = pa[0]
                .explanations
                .iter()
                .map(|e| {
                    e.exact
                        .to_string()
                        .parse::<rust_decimal::Decimal>()
                        .unwrap()
                        .trunc()
                })
                .map(|d| i64::try_from(d.mantissa()).unwrap())
                .sum();
            assert_eq!(pa[0].amount, rounded, "{doc}");
            // 10,001 × 0.10 × 1/2 = 500.05 and 10,001 × 0.05 = 500.05: 500 + 500, or
            // 250 + 250 when capped.
            assert_eq!(pa[0].amount, if capped { 500 } else { 1000 }, "{doc}");
            let pc = shares
                .iter()
                .find(|s| s.account == Account::Promoter("PC".into()))
                .unwrap();
            assert_eq!(pc.explanations.len(), 1);
            assert_eq!(pc.explanations[0].capped, capped);
        }
    }

    #[test]
    fn month_keys_and_integers_print_like_format() {
        let rs = ruleset::compile("timezone: Asia/Shanghai\nrules: [{id: r, levels: [\"0.1\"]}]")
            .ruleset
            .unwrap();
        for (y, m, d, h) in [
            (2026, 11, 30, 17),
            (2026, 12, 31, 15),
            (999, 1, 1, 0),
            (10_000, 3, 1, 0),
        ] {
            let at = chrono::TimeZone::with_ymd_and_hms(&Utc, y, m, d, h, 0, 0).unwrap();
            let local = at.with_timezone(&rs.timezone);
            assert_eq!(
                month_key(at, &rs),
                format!("{:04}-{:02}", local.year(), local.month())
            );
        }
        for v in [0, 7, -7, 10, 1234567, i64::MAX, i64::MIN] {
            let mut s = String::from("x");
            push_int(&mut s, v);
            assert_eq!(s, format!("x{v}"));
        }
    }
}
