//! Group commit in bulk: the part of a batched Compute that is the same on every backend.
//!
//! A batch of orders is stored in one transaction with a fixed number of statements,
//! whatever its size: the backend takes every order lock (sorted), reads the stored
//! results of all ids at once (PostgreSQL claims every id's key with its locks and reads
//! only the ids it could not claim), locks and reads every volume counter the batch moves
//! (one sorted statement), claims the buyers seen for the first time, then hands that
//! state to [`plan`]. [`plan`] runs the engine for each order in batch order, moving the
//! counters in memory exactly as one transaction per order would, and checks every
//! result. The backend then writes keys, results, shares, entries, events and the final
//! counters as one multi-row statement each.
//!
//! If any order of the batch fails (the engine refuses it, or a statement fails), the
//! backend rolls the bulk attempt back and stores the batch again one order per
//! savepoint, so one bad order never fails the others and every order gets the answer it
//! would get alone.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::{encode_result, CommitOutcome, PendingSplit, Result, StoredSplit};
use crate::domain::engine::Context;
use crate::domain::ledger::{self, NewEntry};
use crate::domain::split::SplitResult;

/// A volume counter row: `(kind, subject, currency, month)`. Sorted by kind first, so a
/// batch locks merchant rows before promoter rows, the order single transactions use.
pub(crate) type CounterKey = (&'static str, String, String, String);

fn merchant_key(p: &PendingSplit) -> CounterKey {
    let plan = &p.plan;
    (
        "merchant",
        plan.merchant.clone(),
        plan.currency.clone(),
        plan.month.clone(),
    )
}

fn promoter_key(p: &PendingSplit) -> Option<CounterKey> {
    let plan = &p.plan;
    plan.primary_promoter.as_ref().map(|id| {
        (
            "promoter",
            id.clone(),
            plan.currency.clone(),
            plan.month.clone(),
        )
    })
}

/// Every distinct order id of a batch, sorted: the order locks are taken in this order.
pub(crate) fn order_ids(batch: &[PendingSplit]) -> Vec<String> {
    order_keys(batch).0
}

/// Every distinct order id of a batch, sorted (the order of the order locks), with the
/// payment time of its first order in the batch (the one a batch stores when an id comes
/// twice).
pub(crate) fn order_keys(batch: &[PendingSplit]) -> (Vec<String>, Vec<DateTime<Utc>>) {
    let mut keys: Vec<(&str, DateTime<Utc>)> = batch
        .iter()
        .map(|p| (p.plan.order_id.as_str(), p.plan.paid_at))
        .collect();
    // Stable: among equal ids the first in the batch stays first, and dedup keeps it.
    keys.sort_by(|a, b| a.0.cmp(b.0));
    keys.dedup_by(|later, first| later.0 == first.0);
    keys.into_iter().map(|(id, t)| (id.to_owned(), t)).unzip()
}

/// What the orders not stored yet will lock and claim.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// Counter rows, sorted and distinct.
    pub counters: Vec<CounterKey>,
    /// `(buyer, first order id of that buyer in the batch)`, sorted by buyer.
    pub buyers: Vec<(String, String)>,
}

/// The counters and buyers of the orders that `stored` does not hold yet.
pub(crate) fn claims(batch: &[PendingSplit], stored: &HashMap<String, StoredRow>) -> Claims {
    let mut counters = Vec::new();
    let mut buyers: HashMap<&str, &str> = HashMap::new();
    for p in batch
        .iter()
        .filter(|p| !stored.contains_key(&p.plan.order_id))
    {
        counters.push(merchant_key(p));
        counters.extend(promoter_key(p));
        buyers.entry(&p.plan.buyer).or_insert(&p.plan.order_id);
    }
    counters.sort();
    counters.dedup();
    let mut buyers: Vec<(String, String)> = buyers
        .into_iter()
        .map(|(b, o)| (b.to_string(), o.to_string()))
        .collect();
    buyers.sort();
    Claims { counters, buyers }
}

/// A stored result as read by the batch: present, or in a month that was archived.
#[derive(Debug)]
pub(crate) enum StoredRow {
    /// The stored split.
    Split(Box<StoredSplit>),
    /// Its month's partition is detached: refused, never computed again.
    Archived,
}

/// One order the batch stores.
#[derive(Debug)]
pub(crate) struct NewSplit {
    /// The fingerprint of the order content.
    pub fingerprint: String,
    /// The checked result.
    pub result: SplitResult,
    /// Its JSON, exactly as stored and published.
    pub json: String,
    /// Its ledger entries.
    pub entries: Vec<NewEntry>,
}

impl NewSplit {
    /// A computed result ready to store: checked, encoded, its entries derived.
    pub(crate) fn new(fingerprint: String, result: SplitResult) -> Result<NewSplit> {
        Ok(NewSplit {
            json: encode_result(&result)?,
            entries: ledger::split_entries(&result),
            fingerprint,
            result,
        })
    }
}

/// What a batch writes and answers.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// The orders to store, in batch order.
    pub new: Vec<NewSplit>,
    /// Final value of every counter the batch moved.
    pub counters: Vec<(CounterKey, i64)>,
    /// Per order of the batch: what it gets, by index into `new` when it is stored here.
    pub answers: Vec<Answer>,
}

/// The answer of one order of a batch.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Stored by this batch: `new[i]`.
    New(usize),
    /// Stored before, or earlier in this batch.
    Existing(Box<StoredSplit>),
    /// Stored in an archived month.
    Archived(String),
}

/// Runs the engine for every order of the batch against the state read in the
/// transaction. `counters` holds the value read for every key of [`claims`]; `new_buyers`
/// the buyers whose claim this transaction won. An `Err` means some order failed: the
/// caller falls back to one savepoint per order.
pub(crate) fn plan(
    batch: &[PendingSplit],
    mut stored: HashMap<String, StoredRow>,
    mut counters: HashMap<CounterKey, i64>,
    new_buyers: &HashSet<String>,
) -> Result<Plan> {
    let mut out = Plan::default();
    // Ids that come more than once: only their first result is kept for the replays.
    let mut ids: HashSet<&str> = HashSet::with_capacity(batch.len());
    let repeated: HashSet<&str> = batch
        .iter()
        .map(|p| p.plan.order_id.as_str())
        .filter(|id| !ids.insert(id))
        .collect();
    let mut first_seen: HashSet<&str> = HashSet::new();
    let mut moved: HashSet<CounterKey> = HashSet::new();
    for p in batch {
        let id = &p.plan.order_id;
        match stored.get(id) {
            Some(StoredRow::Split(s)) => {
                out.answers.push(Answer::Existing(s.clone()));
                continue;
            }
            Some(StoredRow::Archived) => {
                out.answers.push(Answer::Archived(id.clone()));
                continue;
            }
            None => {}
        }
        let mk = merchant_key(p);
        let pk = promoter_key(p);
        let read = |k: &CounterKey| counters.get(k).copied().unwrap_or(0);
        let ctx = Context {
            first_order: new_buyers.contains(&p.plan.buyer)
                && first_seen.insert(p.plan.buyer.as_str()),
            merchant_month_prior: read(&mk),
            promoter_month_prior: pk.as_ref().map(read).unwrap_or(0),
        };
        first_seen.insert(p.plan.buyer.as_str());
        // Computed before the batch when the rule set reads no history (the same result
        // under any context: `PendingSplit::new`); otherwise now, with what was read.
        let new = match p.take_ready() {
            Some(new) => new,
            None => NewSplit::new(p.plan.fingerprint.clone(), (p.compute)(&ctx)?)?,
        };
        for k in std::iter::once(mk).chain(pk) {
            let v = counters.entry(k.clone()).or_insert(0);
            *v = v.checked_add(p.plan.sales).ok_or_else(|| {
                super::StoreError::Database(format!("volume counter {k:?} overflows"))
            })?;
            moved.insert(k);
        }
        // A later duplicate of this id in the batch replays it.
        if repeated.contains(id.as_str()) {
            let split = StoredSplit {
                fingerprint: new.fingerprint.clone(),
                result: new.result.clone(),
            };
            stored.insert(id.clone(), StoredRow::Split(Box::new(split)));
        }
        out.answers.push(Answer::New(out.new.len()));
        out.new.push(new);
    }
    let mut moved: Vec<CounterKey> = moved.into_iter().collect();
    moved.sort();
    out.counters = moved
        .into_iter()
        .map(|k| {
            let v = counters[&k];
            (k, v)
        })
        .collect();
    Ok(out)
}

/// A grade check a stored order calls for: its primary promoter under its rule set.
pub(crate) struct GradeCheck<'a> {
    /// The rule set the order was computed under (its grades).
    pub ruleset: &'a crate::domain::ruleset::RuleSet,
    /// The promoter whose month volume moved.
    pub promoter: &'a str,
    /// The month of that volume.
    pub month: &'a str,
    /// Why, for the event: "order O-1".
    pub cause: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
}

impl Plan {
    /// The rows of one order stored on its own, whose counters its transaction already
    /// moved: the single-order path writes through the same code as a batch.
    pub(crate) fn single(new: NewSplit) -> Plan {
        Plan {
            new: vec![new],
            counters: Vec::new(),
            answers: vec![Answer::New(0)],
        }
    }

    /// Per new split, in order: the grade check it calls for, if it has a primary
    /// promoter. Checked after the batch's counters moved (ARCHITECTURE.md).
    pub(crate) fn grade_checks<'a>(
        &'a self,
        batch: &'a [PendingSplit],
    ) -> Vec<Option<GradeCheck<'a>>> {
        let by_id: HashMap<&str, &PendingSplit> = batch
            .iter()
            .map(|p| (p.plan.order_id.as_str(), p))
            .collect();
        self.new
            .iter()
            .map(|n| {
                let r = &n.result;
                r.primary_promoter.as_deref().map(|promoter| GradeCheck {
                    ruleset: &by_id[r.order_id.as_str()].plan.ruleset,
                    promoter,
                    month: &r.month,
                    cause: format!("order {}", r.order_id),
                    at: r.computed_at,
                })
            })
            .collect()
    }

    /// The outcome of every order, in batch order; `upgraded` lists, per new split, the
    /// promoters whose grade it raised.
    pub(crate) fn outcomes(self, mut upgraded: Vec<Vec<String>>) -> Vec<Result<CommitOutcome>> {
        let mut new: Vec<Option<NewSplit>> = self.new.into_iter().map(Some).collect();
        self.answers
            .into_iter()
            .map(|a| match a {
                Answer::New(i) => {
                    let n = new[i].take().expect("each new split is answered once");
                    Ok(CommitOutcome::Stored {
                        result: n.result,
                        upgraded: std::mem::take(&mut upgraded[i]),
                    })
                }
                Answer::Existing(s) => Ok(CommitOutcome::Existing(*s)),
                Answer::Archived(id) => Err(archived(&id)),
            })
            .collect()
    }
}

/// The error of an order stored in a detached month.
pub(crate) fn archived(order_id: &str) -> super::StoreError {
    super::StoreError::FailedPrecondition(format!(
        "order {order_id} is stored in a month that was archived (its partition is detached)"
    ))
}

/// Wall time of the phases of a bulk commit, recorded in
/// `prorata_group_commit_phase_seconds{phase}`: read (locks, stored ids, counters,
/// buyers), engine (every order computed and checked), write (every row), commit; on
/// PostgreSQL also begin (a pooled connection and its BEGIN) and counters (deferred
/// counters and buyers, grade checks: what follows the rows), and for a one-call batch
/// engine, bind (its arguments encoded), connection (a held connection taken) and call
/// (the round trip, commit included).
pub(crate) struct Phases(std::time::Instant);

impl Phases {
    /// Starts timing the first phase.
    pub(crate) fn start() -> Phases {
        Phases(std::time::Instant::now())
    }

    /// Records the phase that just ended and starts the next.
    pub(crate) fn done(&mut self, phase: &'static str) {
        let now = std::time::Instant::now();
        metrics::histogram!("prorata_group_commit_phase_seconds", "phase" => phase)
            .record((now - self.0).as_secs_f64());
        self.0 = now;
    }

    /// Records the last phase.
    pub(crate) fn finish(mut self, phase: &'static str) {
        self.done(phase);
    }
}
