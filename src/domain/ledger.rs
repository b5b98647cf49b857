//! Entries, balances and payouts (PRODUCT.md §7), pure.
//!
//! Every share, reversal and redemption becomes signed entries per account. An entry is
//! `deferred` (a prepaid card's share, never payable itself), `pending` until its
//! availability time, then `available`, `in_payout` once a batch reserves it and `paid`
//! once that batch is confirmed for the account. Statuses are derived, never stored: a
//! batch and its confirmations are immutable records that reference the entries.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::lifecycle::{Movement, MovementKind};
use super::split::{Account, SplitResult};

/// Largest `minimum` a payout batch may ask for, minor units.
pub const MAX_PAYOUT_MINIMUM: i64 = super::money::MAX_ORDER_TOTAL_MINOR;

/// An entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Account.
    pub account: Account,
    /// Currency code.
    pub currency: String,
    /// Signed minor units.
    pub amount: i64,
    /// Prepaid-card value that is not payable itself.
    pub deferred: bool,
    /// When it becomes available (`None` for deferred entries).
    pub available_at: Option<DateTime<Utc>>,
}

/// When the shares of an order become available.
pub fn available_at(result: &SplitResult) -> DateTime<Utc> {
    result.paid_at + Duration::days(i64::from(result.hold_days))
}

fn push(
    out: &mut Vec<NewEntry>,
    account: &Account,
    currency: &str,
    amount: i64,
    deferred: bool,
    at: Option<DateTime<Utc>>,
) {
    if amount == 0 {
        return;
    }
    match out
        .iter_mut()
        .find(|e| &e.account == account && e.deferred == deferred)
    {
        Some(e) => e.amount += amount,
        None => out.push(NewEntry {
            account: account.clone(),
            currency: currency.into(),
            amount,
            deferred,
            available_at: at,
        }),
    }
}

fn is_card_line(result: &SplitResult, line_id: &str) -> bool {
    result
        .lines
        .iter()
        .any(|l| l.line_id == line_id && l.uses.is_some())
}

/// The entries of a stored split: ordinary lines (and shipping) become pending entries,
/// prepaid-card lines deferred ones.
pub fn split_entries(result: &SplitResult) -> Vec<NewEntry> {
    let at = available_at(result);
    let mut out = Vec::new();
    for l in &result.lines {
        let deferred = l.uses.is_some();
        for s in &l.shares {
            push(
                &mut out,
                &s.account,
                &result.currency,
                s.amount,
                deferred,
                (!deferred).then_some(at),
            );
        }
    }
    out
}

/// The entries of a reversal or redemption of `result`.
pub fn movement_entries(result: &SplitResult, m: &Movement) -> Vec<NewEntry> {
    let mut out = Vec::new();
    match m.kind {
        MovementKind::Refund => {
            // A reversal nets against the shares it reverses: same availability time, so a
            // refund before availability reduces the pending amount, and after a payout it
            // is a negative available entry that later earnings pay off first.
            let at = available_at(result);
            for l in &m.lines {
                let deferred = is_card_line(result, &l.line_id);
                for s in &l.shares {
                    push(
                        &mut out,
                        &s.account,
                        &m.currency,
                        -s.amount,
                        deferred,
                        (!deferred).then_some(at),
                    );
                }
            }
        }
        MovementKind::Redemption => {
            // The child record settles: its value leaves the deferred entry and becomes
            // pending from the redemption time.
            let at = m.at + Duration::days(i64::from(result.hold_days));
            for l in &m.lines {
                for s in &l.shares {
                    push(&mut out, &s.account, &m.currency, -s.amount, true, None);
                    push(&mut out, &s.account, &m.currency, s.amount, false, Some(at));
                }
            }
        }
    }
    out
}

/// An account's balance in one currency, minor units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Account.
    pub account: String,
    /// Currency code.
    pub currency: String,
    /// Prepaid-card value not yet redeemed.
    pub deferred: i64,
    /// Not yet available.
    pub pending: i64,
    /// Available and not reserved (never below zero; see `debt`).
    pub available: i64,
    /// Reserved by a payout batch not yet confirmed.
    pub in_payout: i64,
    /// Paid out.
    pub paid: i64,
    /// What later earnings must pay off first (a refund after payout).
    pub debt: i64,
}

impl Balance {
    /// From the sums of entries by status; a negative available sum is debt.
    pub fn from_sums(
        account: &str,
        currency: &str,
        deferred: i64,
        pending: i64,
        available_net: i64,
        in_payout: i64,
        paid: i64,
    ) -> Self {
        Balance {
            account: account.into(),
            currency: currency.into(),
            deferred,
            pending,
            available: available_net.max(0),
            in_payout,
            paid,
            debt: (-available_net).max(0),
        }
    }

    /// Σ of every entry of the account in this currency.
    pub fn net(&self) -> i64 {
        self.deferred + self.pending + self.available - self.debt + self.in_payout + self.paid
    }
}

/// One account's instruction in a payout batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// Account.
    pub account: String,
    /// Currency code.
    pub currency: String,
    /// Minor units to pay.
    pub amount: i64,
    /// Entries it settles.
    pub entries: u64,
}

/// A payout batch as stored and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayoutBatch {
    /// Batch id.
    pub batch_id: String,
    /// Entries available at or before this time are included.
    pub as_of: DateTime<Utc>,
    /// Smallest amount paid to an account.
    pub minimum: i64,
    /// Instructions, by account.
    pub instructions: Vec<Instruction>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The outcome of paying an account in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayoutOutcome {
    /// The money arrived: the entries are paid.
    Paid,
    /// It did not: the entries are available again.
    Failed,
}

impl PayoutOutcome {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            PayoutOutcome::Paid => "paid",
            PayoutOutcome::Failed => "failed",
        }
    }
}

/// Groups available entries (account, currency, id, amount; sorted by account, currency)
/// into instructions of at least `minimum` (and above zero); returns them with the ids of
/// the entries each settles. A group whose net is below the minimum is left available.
pub fn instructions(
    entries: &[(String, String, i64, i64)],
    minimum: i64,
) -> Vec<(Instruction, Vec<i64>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let (acct, cur) = (&entries[i].0, &entries[i].1);
        let mut j = i;
        let mut sum = 0i64;
        let mut ids = Vec::new();
        while j < entries.len() && &entries[j].0 == acct && &entries[j].1 == cur {
            sum += entries[j].3;
            ids.push(entries[j].2);
            j += 1;
        }
        if sum > 0 && sum >= minimum {
            out.push((
                Instruction {
                    account: acct.clone(),
                    currency: cur.clone(),
                    amount: sum,
                    entries: ids.len() as u64,
                },
                ids,
            ));
        }
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_available_sum_is_debt() {
        let b = Balance::from_sums("promoter:P", "CNY", 0, 100, -250, 0, 1000);
        assert_eq!((b.available, b.debt, b.net()), (0, 250, 850));
    }

    #[test]
    fn instructions_net_each_account_and_skip_those_below_the_minimum() {
        let e = vec![
            ("a".to_string(), "CNY".to_string(), 1, 500),
            ("a".to_string(), "CNY".to_string(), 2, -100),
            ("b".to_string(), "CNY".to_string(), 3, 50),
            ("c".to_string(), "CNY".to_string(), 4, -70),
        ];
        let got = instructions(&e, 100);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.amount, got[0].1.clone()), (400, vec![1, 2]));
    }
}
