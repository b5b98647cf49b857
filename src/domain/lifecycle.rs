//! After the sale, pure: refunds (clawback) and prepaid-card redemptions.
//!
//! The state of an order is its stored [`SplitResult`] plus the [`Movement`]s recorded
//! since (reversals and redemptions). What an account still holds on a line is its share
//! minus what it gave back or settled there. A new movement of `r` minor units is spread
//! over those holdings in proportion — floor(r × h_i / H), then the leftover units one by
//! one to the largest fractional remainders, ties in the fixed account order — so it sums
//! exactly to `r`, never takes more than an account holds, and taking everything returns
//! every account to zero.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::money::Currency;
use super::order::{check_id, FieldError, RawAmount};
use super::split::{Account, AccountAmount, SplitResult};

/// Whether a movement takes money back or settles a card use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// A refund: accounts give back.
    Refund,
    /// A prepaid-card redemption: a child record that settles.
    Redemption,
}

/// One line of a movement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementLine {
    /// Line id.
    pub line_id: String,
    /// Minor units moved on the line.
    pub amount: i64,
    /// Card uses moved, for card lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
    /// Per account, in the fixed order; sums to `amount`.
    pub shares: Vec<AccountAmount>,
}

/// An immutable reversal or redemption of part of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// Refund id or redemption id.
    pub id: String,
    /// Kind.
    pub kind: MovementKind,
    /// The order.
    pub order_id: String,
    /// Currency code.
    pub currency: String,
    /// Currency exponent.
    pub exponent: u32,
    /// Lines moved (may be empty: a full refund of nothing).
    pub lines: Vec<MovementLine>,
    /// Per-account totals in the fixed order.
    pub totals: Vec<AccountAmount>,
    /// Fingerprint of the request content.
    pub fingerprint: String,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// What leaves the order's volume counters (refunded sales, shipping excluded).
    pub sales_delta: i64,
}

impl Movement {
    /// Checks that every line's shares sum to its amount and none is negative.
    pub fn check(&self) -> Result<(), super::split::InvariantViolation> {
        use super::split::InvariantViolation as V;
        let mut total = 0i64;
        for l in &self.lines {
            let s: i64 = l.shares.iter().map(|a| a.amount).sum();
            if s != l.amount || l.shares.iter().any(|a| a.amount < 0) {
                return Err(V(format!(
                    "movement {} line {} does not sum to {}",
                    self.id, l.line_id, l.amount
                )));
            }
            total += l.amount;
        }
        if self.totals.iter().map(|t| t.amount).sum::<i64>() != total {
            return Err(V(format!(
                "movement {} totals do not sum to its lines",
                self.id
            )));
        }
        Ok(())
    }
}

/// Why a movement is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// Bad input (INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// Not possible in the order's state (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
}

/// Spreads `r` over holdings by largest remainder; ties go to the earlier account.
/// Requires 0 ≤ r ≤ Σ holdings.
pub fn allocate(r: i64, holdings: &[(Account, i64)]) -> Vec<(Account, i64)> {
    let total: i128 = holdings.iter().map(|h| i128::from(h.1)).sum();
    if total == 0 || r == 0 {
        return holdings.iter().map(|h| (h.0.clone(), 0)).collect();
    }
    let r = i128::from(r);
    let mut out: Vec<(Account, i64, i128, usize)> = holdings
        .iter()
        .enumerate()
        .map(|(i, (a, h))| {
            let num = r * i128::from(*h);
            ((a.clone()), (num / total) as i64, num % total, i)
        })
        .collect();
    let given: i128 = out.iter().map(|o| i128::from(o.1)).sum();
    let mut left = r - given;
    let mut order: Vec<usize> = (0..out.len()).collect();
    order.sort_by(|a, b| out[*b].2.cmp(&out[*a].2).then(out[*a].3.cmp(&out[*b].3)));
    for i in order {
        if left == 0 {
            break;
        }
        out[i].1 += 1;
        left -= 1;
    }
    out.into_iter().map(|(a, v, _, _)| (a, v)).collect()
}

/// What is left on one line of an order.
#[derive(Debug, Clone)]
pub struct LineState {
    /// Line id.
    pub line_id: String,
    /// Card uses, for card lines.
    pub uses: Option<u32>,
    /// Card uses neither redeemed nor refunded.
    pub unused_uses: u32,
    /// Per account, what it still holds, in the fixed order.
    pub holdings: Vec<(Account, i64)>,
}

impl LineState {
    /// Σ holdings.
    pub fn remaining(&self) -> i64 {
        self.holdings.iter().map(|h| h.1).sum()
    }

    /// Value of `k` of the unused uses: the last ones take everything left.
    pub fn value_of_uses(&self, k: u32) -> i64 {
        if k >= self.unused_uses {
            return self.remaining();
        }
        (i128::from(self.remaining()) * i128::from(k) / i128::from(self.unused_uses)) as i64
    }
}

/// The state of every line after the movements so far.
pub fn line_states(result: &SplitResult, movements: &[Movement]) -> Vec<LineState> {
    result
        .lines
        .iter()
        .map(|l| {
            let mut holdings: Vec<(Account, i64)> = l
                .shares
                .iter()
                .map(|s| (s.account.clone(), s.amount))
                .collect();
            let mut used = 0u32;
            for m in movements {
                for ml in m.lines.iter().filter(|ml| ml.line_id == l.line_id) {
                    used += ml.uses.unwrap_or(0);
                    for s in &ml.shares {
                        if let Some(h) = holdings.iter_mut().find(|h| h.0 == s.account) {
                            h.1 -= s.amount;
                        }
                    }
                }
            }
            LineState {
                line_id: l.line_id.to_string(),
                uses: l.uses,
                unused_uses: l.uses.map_or(0, |u| u.saturating_sub(used)),
                holdings,
            }
        })
        .collect()
}

/// One requested refund line, as sent.
#[derive(Debug, Clone)]
pub struct RawRefundLine {
    /// Line id.
    pub line_id: String,
    /// Amount (ordinary lines).
    pub amount: RawAmount,
    /// Uses (card lines); 0 when not given.
    pub uses: u32,
}

/// A refund request, as sent.
#[derive(Debug, Clone)]
pub struct RawRefund {
    /// Order id.
    pub order_id: String,
    /// Refund id.
    pub refund_id: String,
    /// Lines.
    pub lines: Vec<RawRefundLine>,
    /// Everything that remains.
    pub full: bool,
}

/// Checks the ids and shape of a refund before the order is loaded.
pub fn check_refund(r: &RawRefund) -> Result<(), FieldError> {
    check_id("order_id", &r.order_id)?;
    check_id("refund_id", &r.refund_id)?;
    if r.full && !r.lines.is_empty() {
        return Err(FieldError::new("lines", "a full refund names no lines"));
    }
    if !r.full && r.lines.is_empty() {
        return Err(FieldError::new(
            "lines",
            "name the lines to refund, or set full",
        ));
    }
    if r.lines.len() > super::order::MAX_LINES + 1 {
        return Err(FieldError::new("lines", "too many lines"));
    }
    for (i, l) in r.lines.iter().enumerate() {
        check_id(format_args!("lines[{i}].line_id"), &l.line_id)?;
        if r.lines[..i].iter().any(|p| p.line_id == l.line_id) {
            return Err(FieldError::new(
                format!("lines[{i}].line_id"),
                "a line may appear once per refund",
            ));
        }
    }
    Ok(())
}

/// Canonical content of a refund, for its fingerprint (amounts parsed to minor units).
pub fn refund_fingerprint(r: &RawRefund, currency: Currency) -> Result<String, FieldError> {
    let mut parts = vec![format!("order={}", r.order_id), format!("full={}", r.full)];
    for (i, l) in r.lines.iter().enumerate() {
        let amount = l
            .amount
            .parse(format_args!("lines[{i}].amount"), currency)?;
        parts.push(format!("{}:{:?}:{}", l.line_id, amount, l.uses));
    }
    Ok(super::fingerprint::sha256_hex(parts.join("\n").as_bytes()))
}

fn totals_of(lines: &[MovementLine]) -> Vec<AccountAmount> {
    let mut totals: Vec<AccountAmount> = Vec::new();
    for l in lines {
        for s in &l.shares {
            match totals.iter_mut().find(|t| t.account == s.account) {
                Some(t) => t.amount += s.amount,
                None => totals.push(s.clone()),
            }
        }
    }
    totals.retain(|t| t.amount != 0);
    totals
}

fn movement_line(state: &LineState, amount: i64, uses: Option<u32>) -> MovementLine {
    let shares = allocate(amount, &state.holdings)
        .into_iter()
        .filter(|(_, v)| *v != 0)
        .map(|(account, amount)| AccountAmount { account, amount })
        .collect();
    MovementLine {
        line_id: state.line_id.clone(),
        amount,
        uses,
        shares,
    }
}

/// Plans a refund against the order's current state.
pub fn plan_refund(
    result: &SplitResult,
    movements: &[Movement],
    r: &RawRefund,
    fingerprint: String,
    now: DateTime<Utc>,
) -> Result<Movement, LifecycleError> {
    let currency = Currency::parse(&result.currency).ok_or_else(|| {
        LifecycleError::FailedPrecondition(format!(
            "stored currency {} is unknown",
            result.currency
        ))
    })?;
    let states = line_states(result, movements);
    let mut lines = Vec::new();
    if r.full {
        for s in &states {
            let amount = s.remaining();
            if amount > 0 {
                let uses = s.uses.map(|_| s.unused_uses);
                lines.push(movement_line(s, amount, uses));
            }
        }
    } else {
        for (i, l) in r.lines.iter().enumerate() {
            let path = |f: &str| format!("lines[{i}].{f}");
            let s = states
                .iter()
                .find(|s| s.line_id == l.line_id)
                .ok_or_else(|| {
                    FieldError::new(
                        path("line_id"),
                        format!("order {} has no line {}", result.order_id, l.line_id),
                    )
                })?;
            let amount_given = l.amount.parse(path("amount"), currency)?;
            let (amount, uses) = match (s.uses, amount_given, l.uses) {
                (Some(_), None, k) if k >= 1 => {
                    if k > s.unused_uses {
                        return Err(LifecycleError::FailedPrecondition(format!(
                            "line {}: {k} uses to refund, {} unused",
                            s.line_id, s.unused_uses
                        )));
                    }
                    (s.value_of_uses(k), Some(k))
                }
                (Some(_), _, _) => {
                    return Err(FieldError::new(
                        path("uses"),
                        "a prepaid-card line is refunded by uses (at least 1)",
                    )
                    .into())
                }
                (None, Some(a), 0) if a > 0 => {
                    if a > s.remaining() {
                        return Err(LifecycleError::FailedPrecondition(format!(
                            "line {}: refund of {} exceeds the {} that remains",
                            s.line_id,
                            currency.format(a),
                            currency.format(s.remaining())
                        )));
                    }
                    (a, None)
                }
                (None, _, u) if u > 0 => {
                    return Err(FieldError::new(
                        path("uses"),
                        "only prepaid-card lines are refunded by uses",
                    )
                    .into())
                }
                (None, _, _) => {
                    return Err(FieldError::new(path("amount"), "must be above zero").into())
                }
            };
            lines.push(movement_line(s, amount, uses));
        }
    }
    let sales_delta = lines
        .iter()
        .filter(|l| l.line_id != "shipping")
        .map(|l| l.amount)
        .sum();
    let m = Movement {
        id: r.refund_id.clone(),
        kind: MovementKind::Refund,
        order_id: result.order_id.clone(),
        currency: result.currency.to_string(),
        exponent: result.exponent,
        totals: totals_of(&lines),
        lines,
        fingerprint,
        at: now,
        sales_delta,
    };
    m.check()
        .map_err(|v| LifecycleError::FailedPrecondition(v.to_string()))?;
    Ok(m)
}

/// Checks a redemption's ids and uses before the order is loaded.
pub fn check_redemption(
    order_id: &str,
    line_id: &str,
    redemption_id: &str,
    uses: u32,
) -> Result<(), FieldError> {
    check_id("order_id", order_id)?;
    check_id("line_id", line_id)?;
    check_id("redemption_id", redemption_id)?;
    if uses < 1 {
        return Err(FieldError::new("uses", "at least one use"));
    }
    Ok(())
}

/// Fingerprint of a redemption's content.
pub fn redemption_fingerprint(order_id: &str, line_id: &str, uses: u32) -> String {
    super::fingerprint::sha256_hex(
        format!("order={order_id}\nline={line_id}\nuses={uses}").as_bytes(),
    )
}

/// Plans the redemption of `uses` of a card line.
pub fn plan_redemption(
    result: &SplitResult,
    movements: &[Movement],
    line_id: &str,
    redemption_id: &str,
    uses: u32,
    fingerprint: String,
    now: DateTime<Utc>,
) -> Result<Movement, LifecycleError> {
    let states = line_states(result, movements);
    let s = states
        .iter()
        .find(|s| s.line_id == line_id)
        .ok_or_else(|| {
            FieldError::new(
                "line_id",
                format!("order {} has no line {line_id}", result.order_id),
            )
        })?;
    if s.uses.is_none() {
        return Err(LifecycleError::FailedPrecondition(format!(
            "line {line_id} is not a prepaid card"
        )));
    }
    if uses > s.unused_uses {
        return Err(LifecycleError::FailedPrecondition(format!(
            "line {line_id}: {uses} uses to redeem, {} unused",
            s.unused_uses
        )));
    }
    let line = movement_line(s, s.value_of_uses(uses), Some(uses));
    let m = Movement {
        id: redemption_id.to_string(),
        kind: MovementKind::Redemption,
        order_id: result.order_id.clone(),
        currency: result.currency.to_string(),
        exponent: result.exponent,
        totals: totals_of(std::slice::from_ref(&line)),
        lines: vec![line],
        fingerprint,
        at: now,
        sales_delta: 0,
    };
    m.check()
        .map_err(|v| LifecycleError::FailedPrecondition(v.to_string()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(s: &str) -> Account {
        s.parse().unwrap()
    }

    #[test]
    fn a_refund_is_spread_by_largest_remainder() {
        // partial-refunds vector, R-1 on L1: 33.33 over 79.43 / 4.99 / 0.59 / 9.99 / 4.99.
        let h = vec![
            (acc("merchant:M1"), 7943),
            (acc("platform"), 499),
            (acc("channel:default"), 59),
            (acc("promoter:P2"), 999),
            (acc("promoter:P1"), 499),
        ];
        let got: Vec<i64> = allocate(3333, &h).into_iter().map(|x| x.1).collect();
        assert_eq!(got, vec![2648, 166, 20, 333, 166]);
    }

    #[test]
    fn ties_go_to_the_earlier_account_and_everything_returns_to_zero() {
        let h = vec![
            (acc("merchant:M"), 79920),
            (acc("platform"), 4995),
            (acc("promoter:P2"), 9990),
            (acc("promoter:P1"), 4995),
        ];
        let got: Vec<i64> = allocate(29970, &h).into_iter().map(|x| x.1).collect();
        assert_eq!(got, vec![23976, 1499, 2997, 1498]);
        let all: Vec<i64> = allocate(99900, &h).into_iter().map(|x| x.1).collect();
        assert_eq!(all, vec![79920, 4995, 9990, 4995]);
    }
}
