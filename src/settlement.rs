//! Application services after the sale: refunds, redemptions, balances, entries, payouts
//! and reconciliation (PRODUCT.md §5–§7).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::app::{App, AppError, AppResult, Page};
use crate::domain::ledger::{Balance, PayoutBatch, PayoutOutcome, MAX_PAYOUT_MINIMUM};
use crate::domain::lifecycle::{self, LifecycleError, Movement, MovementKind, RawRefund};
use crate::domain::money::Currency;
use crate::domain::order::{self, FieldError, RawAmount};
use crate::domain::split::{Account, SplitResult};
use crate::store::{EntryRow, MovementOutcome, MovementRequest};

/// Orders read per page by reconciliation.
const RECONCILE_PAGE: u32 = 500;
/// Most external orders one reconciliation compares.
pub const MAX_EXTERNAL_ORDERS: usize = 1_000_000;

struct RefundRequest(RawRefund);

impl MovementRequest for RefundRequest {
    fn kind(&self) -> MovementKind {
        MovementKind::Refund
    }
    fn id(&self) -> &str {
        &self.0.refund_id
    }
    fn order_id(&self) -> &str {
        &self.0.order_id
    }
    fn fingerprint(&self, order: &SplitResult) -> Result<String, LifecycleError> {
        let cur = Currency::parse(&order.currency).ok_or_else(|| {
            LifecycleError::FailedPrecondition(format!("unknown currency {}", order.currency))
        })?;
        Ok(lifecycle::refund_fingerprint(&self.0, cur)?)
    }
    fn plan(
        &self,
        order: &SplitResult,
        movements: &[Movement],
        fp: String,
        now: DateTime<Utc>,
    ) -> Result<Movement, LifecycleError> {
        lifecycle::plan_refund(order, movements, &self.0, fp, now)
    }
}

struct RedeemRequest {
    order_id: String,
    line_id: String,
    redemption_id: String,
    uses: u32,
}

impl MovementRequest for RedeemRequest {
    fn kind(&self) -> MovementKind {
        MovementKind::Redemption
    }
    fn id(&self) -> &str {
        &self.redemption_id
    }
    fn order_id(&self) -> &str {
        &self.order_id
    }
    fn fingerprint(&self, _order: &SplitResult) -> Result<String, LifecycleError> {
        Ok(lifecycle::redemption_fingerprint(
            &self.order_id,
            &self.line_id,
            self.uses,
        ))
    }
    fn plan(
        &self,
        order: &SplitResult,
        movements: &[Movement],
        fp: String,
        now: DateTime<Utc>,
    ) -> Result<Movement, LifecycleError> {
        lifecycle::plan_redemption(
            order,
            movements,
            &self.line_id,
            &self.redemption_id,
            self.uses,
            fp,
            now,
        )
    }
}

fn check_account(path: &str, account: &str) -> AppResult<()> {
    if account.is_empty() {
        return Err(FieldError::new(path, "is required").into());
    }
    account
        .parse::<Account>()
        .map(|_| ())
        .map_err(|e| FieldError::new(path, e).into())
}

/// One finding of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discrepancy {
    /// `invariant`, `missing`, `mismatched`, `unknown` or `balance`.
    pub kind: &'static str,
    /// The order or account concerned.
    pub subject: String,
    /// What is off.
    pub detail: String,
}

/// What a reconciliation found.
#[derive(Debug, Clone, Default)]
pub struct ReconcileReport {
    /// Orders read.
    pub orders_checked: u64,
    /// Accounts whose balance was compared with their entries.
    pub accounts_checked: u64,
    /// Everything that is off.
    pub discrepancies: Vec<Discrepancy>,
}

impl ReconcileReport {
    /// A report a finance person can read.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("prorata reconciliation\n");
        out.push_str(&format!("  orders checked:   {}\n", self.orders_checked));
        out.push_str(&format!("  accounts checked: {}\n", self.accounts_checked));
        if self.discrepancies.is_empty() {
            out.push_str("  result: no discrepancies — every split sums to what was paid, no reversal exceeds its share,\n");
            out.push_str("          every balance equals the sum of its entries");
            out.push_str(", and the order system agrees.\n");
            return out;
        }
        out.push_str(&format!(
            "  result: {} discrepancies\n\n",
            self.discrepancies.len()
        ));
        let mut by_kind: BTreeMap<&str, Vec<&Discrepancy>> = BTreeMap::new();
        for d in &self.discrepancies {
            by_kind.entry(d.kind).or_default().push(d);
        }
        for (kind, list) in by_kind {
            let title = match kind {
                "missing" => "in the order system, not in prorata",
                "unknown" => "in prorata, not in the order system",
                "mismatched" => "amounts differ",
                "invariant" => "money invariant broken",
                _ => "balance differs from its entries",
            };
            out.push_str(&format!("  {kind} ({title}): {}\n", list.len()));
            for d in list {
                out.push_str(&format!("    {:<32} {}\n", d.subject, d.detail));
            }
        }
        out
    }
}

/// An order as the order system reports it.
#[derive(Debug, Clone)]
pub struct ExternalOrder {
    /// Order id.
    pub order_id: String,
    /// Paid, in the order's currency.
    pub paid: RawAmount,
    /// Refunded, in the order's currency.
    pub refunded: RawAmount,
}

impl App {
    /// Records a refund (idempotent by refund id).
    pub async fn refund(&self, raw: RawRefund) -> AppResult<(Movement, bool)> {
        lifecycle::check_refund(&raw)?;
        Ok(
            match self
                .store()
                .record_movement(&RefundRequest(raw), Utc::now())
                .await?
            {
                MovementOutcome::Stored(m) => (m, false),
                MovementOutcome::Replayed(m) => (m, true),
            },
        )
    }

    /// Records a prepaid-card redemption (idempotent by redemption id).
    pub async fn redeem(
        &self,
        order_id: &str,
        line_id: &str,
        redemption_id: &str,
        uses: u32,
    ) -> AppResult<(Movement, bool)> {
        lifecycle::check_redemption(order_id, line_id, redemption_id, uses)?;
        let req = RedeemRequest {
            order_id: order_id.into(),
            line_id: line_id.into(),
            redemption_id: redemption_id.into(),
            uses,
        };
        Ok(
            match self.store().record_movement(&req, Utc::now()).await? {
                MovementOutcome::Stored(m) => (m, false),
                MovementOutcome::Replayed(m) => (m, true),
            },
        )
    }

    /// Balances of an account per currency.
    pub async fn balance(
        &self,
        account: &str,
        as_of: Option<DateTime<Utc>>,
    ) -> AppResult<Vec<Balance>> {
        check_account("account", account)?;
        Ok(self
            .store()
            .balances(account, as_of.unwrap_or_else(Utc::now))
            .await?)
    }

    /// Entries of an account, oldest first.
    pub async fn list_entries(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        page_size: u32,
        token: &str,
    ) -> AppResult<Page<EntryRow>> {
        check_account("account", account)?;
        let after = if token.is_empty() {
            0
        } else {
            token
                .parse::<i64>()
                .map_err(|_| FieldError::new("page_token", "is not a token this service issued"))?
        };
        let size = crate::app::page_size(page_size);
        let items = self
            .store()
            .list_entries(account, from, to, after, size + 1, Utc::now())
            .await?;
        Ok(Page::from_overfetch(items, size, |e| e.id.to_string()))
    }

    /// Creates a payout batch (idempotent by batch id).
    pub async fn create_payout(
        &self,
        batch_id: &str,
        as_of: Option<DateTime<Utc>>,
        minimum: i64,
    ) -> AppResult<(PayoutBatch, bool)> {
        order::check_id("batch_id", batch_id)?;
        if !(0..=MAX_PAYOUT_MINIMUM).contains(&minimum) {
            return Err(FieldError::new(
                "minimum_minor",
                format!("must be between 0 and {MAX_PAYOUT_MINIMUM}"),
            )
            .into());
        }
        Ok(self
            .store()
            .create_payout(batch_id, as_of, minimum, Utc::now())
            .await?)
    }

    /// Confirms an account's instruction in a batch.
    pub async fn confirm_payout(
        &self,
        batch_id: &str,
        account: &str,
        outcome: Option<PayoutOutcome>,
    ) -> AppResult<bool> {
        order::check_id("batch_id", batch_id)?;
        check_account("account", account)?;
        let outcome =
            outcome.ok_or_else(|| FieldError::new("outcome", "is required: paid or failed"))?;
        Ok(self
            .store()
            .confirm_payout(batch_id, account, outcome, Utc::now())
            .await?)
    }

    /// Checks every stored order against the money invariants, every balance against its
    /// entries, and — when given — the order system's figures against what is stored.
    pub async fn reconcile(&self, external: &[ExternalOrder]) -> AppResult<ReconcileReport> {
        if external.len() > MAX_EXTERNAL_ORDERS {
            return Err(
                FieldError::new("orders", format!("at most {MAX_EXTERNAL_ORDERS} orders")).into(),
            );
        }
        let now = Utc::now();
        let mut report = ReconcileReport::default();
        let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut stored: BTreeMap<String, (i64, i64, String)> = BTreeMap::new();
        let mut after = String::new();
        loop {
            let ids = self.store().order_ids(&after, RECONCILE_PAGE).await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            for id in ids {
                report.orders_checked += 1;
                let state = match self.store().order_state(&id, now).await {
                    Ok(Some(s)) => s,
                    Ok(None) => continue,
                    Err(e) => {
                        report.discrepancies.push(Discrepancy {
                            kind: "invariant",
                            subject: id.clone(),
                            detail: e.to_string(),
                        });
                        continue;
                    }
                };
                for e in &state.entries {
                    *sums
                        .entry((e.account.clone(), e.currency.clone()))
                        .or_default() += e.amount;
                }
                let r = &state.split.result;
                let refunded: i64 = state
                    .movements
                    .iter()
                    .filter(|m| m.kind == MovementKind::Refund)
                    .flat_map(|m| &m.lines)
                    .map(|l| l.amount)
                    .sum();
                stored.insert(id.clone(), (r.paid, refunded, r.currency.to_string()));
                check_order(&mut report, &state);
            }
            after = last;
        }
        for ((account, currency), sum) in &sums {
            report.accounts_checked += 1;
            let balances = self.store().balances(account, now).await?;
            let net = balances
                .iter()
                .find(|b| &b.currency == currency)
                .map_or(0, Balance::net);
            if net != *sum {
                report.discrepancies.push(Discrepancy {
                    kind: "balance",
                    subject: format!("{account} {currency}"),
                    detail: format!("balance adds up to {net}, its entries to {sum} (minor units)"),
                });
            }
        }
        if !external.is_empty() {
            let mut seen = std::collections::HashSet::new();
            for (i, x) in external.iter().enumerate() {
                seen.insert(x.order_id.as_str());
                let Some((paid, refunded, cur)) = stored.get(&x.order_id) else {
                    report.discrepancies.push(Discrepancy {
                        kind: "missing",
                        subject: x.order_id.clone(),
                        detail: "no split is stored".into(),
                    });
                    continue;
                };
                let cur = Currency::parse(cur)
                    .ok_or_else(|| AppError::Internal(format!("stored currency {cur}")))?;
                let want_paid = x.paid.require(&format!("orders[{i}].amount_paid"), cur)?;
                let want_refunded = x
                    .refunded
                    .parse(format_args!("orders[{i}].amount_refunded"), cur)?
                    .unwrap_or(0);
                if (want_paid, want_refunded) != (*paid, *refunded) {
                    report.discrepancies.push(Discrepancy {
                        kind: "mismatched",
                        subject: x.order_id.clone(),
                        detail: format!(
                            "order system: paid {} refunded {}; prorata: paid {} refunded {}",
                            cur.format(want_paid),
                            cur.format(want_refunded),
                            cur.format(*paid),
                            cur.format(*refunded)
                        ),
                    });
                }
            }
            for id in stored.keys().filter(|id| !seen.contains(id.as_str())) {
                report.discrepancies.push(Discrepancy {
                    kind: "unknown",
                    subject: id.clone(),
                    detail: "not in the order system's file".into(),
                });
            }
        }
        Ok(report)
    }
}

/// The invariants of one order: movements sum per line and never take more than an
/// account holds; entries add up to shares minus reversals, per account.
fn check_order(report: &mut ReconcileReport, state: &crate::store::OrderState) {
    let r = &state.split.result;
    let mut bad = |detail: String| {
        report.discrepancies.push(Discrepancy {
            kind: "invariant",
            subject: r.order_id.clone(),
            detail,
        })
    };
    for m in &state.movements {
        if let Err(e) = m.check() {
            bad(e.to_string());
        }
    }
    for line in lifecycle::line_states(r, &state.movements) {
        if let Some((a, h)) = line.holdings.iter().find(|(_, h)| *h < 0) {
            bad(format!(
                "line {}: reversals and redemptions exceed the share of {a} by {}",
                line.line_id, -h
            ));
        }
    }
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for t in &r.totals {
        *expected.entry(t.account.to_string()).or_default() += t.amount;
    }
    for m in state
        .movements
        .iter()
        .filter(|m| m.kind == MovementKind::Refund)
    {
        for t in &m.totals {
            *expected.entry(t.account.to_string()).or_default() -= t.amount;
        }
    }
    let mut actual: BTreeMap<String, i64> = BTreeMap::new();
    for e in &state.entries {
        *actual.entry(e.account.clone()).or_default() += e.amount;
    }
    expected.retain(|_, v| *v != 0);
    actual.retain(|_, v| *v != 0);
    if expected != actual {
        bad(format!(
            "entries {actual:?} do not add up to shares minus reversals {expected:?}"
        ));
    }
}
