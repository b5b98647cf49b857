//! SQLite group commit on a connection of its own, driven synchronously.
//!
//! A batch's statements are point lookups and single-row inserts, each a few
//! microseconds of SQLite's own work. Through sqlx every statement is a round trip to
//! the connection's worker thread and back to the async task (about 120 µs each under
//! load, RESULTS.md §10), and every multi-row statement of a new size is prepared again.
//! Here the whole batch (reads, engine, rows, commit) runs on one rusqlite connection in
//! the calling thread (`block_in_place`), with each statement prepared once and cached.
//! Measured from Python's sqlite3 on this machine, the same statements store about 9,600
//! orders/s in batches of 32 (RESULTS.md §14): that is the ceiling this path aims at.
//!
//! The caller holds the store's write gate while the batch runs, and every write through
//! the sqlx writer pool takes the same gate, so no other write of this process runs
//! beside it and neither connection ever waits on SQLite's write lock. The statements
//! and their order are those of `store::batch` (the module doc): every read, then
//! [`batch::plan`], then every row.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::batch::{self, CounterKey};
use super::{decode_result, CommitOutcome, PendingSplit, Result, StoreError, StoredSplit};
use super::{GradeChange, SPLIT_COMPUTED};
use crate::domain::grades::{self, GradeFacts};
use crate::domain::money::Currency;
use crate::domain::ruleset::RuleSet;

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    DatabaseBusy | DatabaseLocked | SystemIoFailure | CannotOpen | DiskFull
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// Prepared statements kept per connection: every statement of a batch, with room.
const STATEMENT_CACHE: usize = 32;

/// The group-commit connection.
pub(super) struct BulkWriter {
    conn: Connection,
    /// Reused for account texts (no allocation per row).
    text: String,
}

impl std::fmt::Debug for BulkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkWriter").finish_non_exhaustive()
    }
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

impl BulkWriter {
    /// Opens the migrated database at `path`: WAL, foreign keys on, and
    /// `synchronous = NORMAL` — a commit writes its frames without syncing them; the store
    /// syncs the WAL after releasing the write gate and before anyone hears of the batch
    /// (`store::wal_sync`).
    pub(super) fn open(
        path: &Path,
        busy_timeout: std::time::Duration,
        cache_kib: u32,
        autocheckpoint_pages: u32,
    ) -> Result<BulkWriter> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if mode != "wal" {
            return Err(StoreError::Database(format!(
                "SQLite refused WAL mode (journal_mode = {mode})"
            )));
        }
        conn.execute_batch(&format!(
            "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{cache_kib}; PRAGMA wal_autocheckpoint = {autocheckpoint_pages};"
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(BulkWriter {
            conn,
            text: String::new(),
        })
    }

    /// `(synchronous, journal_mode)` as the connection reports them.
    #[cfg(test)]
    pub(super) fn durability(&self) -> (i64, String) {
        let sync = self
            .conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let mode = self
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        (sync, mode)
    }

    /// Stores a batch in one transaction: all of it, or (on any error) none of it.
    pub(super) fn commit(&mut self, batch: &[PendingSplit]) -> Result<Vec<Result<CommitOutcome>>> {
        let text = &mut self.text;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut phase = batch::Phases::start();
        let mut stored = HashMap::with_capacity(batch.len());
        {
            let mut st =
                tx.prepare_cached("SELECT fingerprint, result FROM splits WHERE order_id = ?1")?;
            for id in batch::order_ids(batch) {
                let row = st
                    .query_row([&id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                    })
                    .optional()?;
                if let Some((fingerprint, json)) = row {
                    let split = StoredSplit {
                        fingerprint,
                        result: decode_result(&json)?,
                    };
                    stored.insert(id, batch::StoredRow::Split(Box::new(split)));
                }
            }
        }
        let claims = batch::claims(batch, &stored);
        let mut counters: HashMap<CounterKey, i64> = HashMap::with_capacity(claims.counters.len());
        {
            let mut st = tx.prepare_cached(
                "SELECT amount FROM volumes WHERE kind = ?1 AND subject = ?2 AND currency = ?3 AND month = ?4",
            )?;
            for key in claims.counters {
                let (k, s, c, m) = &key;
                let v: Option<i64> = st.query_row(params![k, s, c, m], |r| r.get(0)).optional()?;
                if let Some(v) = v {
                    counters.insert(key, v);
                }
            }
        }
        let mut new_buyers = HashSet::new();
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO buyers (buyer, first_order_id) VALUES (?1, ?2) ON CONFLICT (buyer) DO NOTHING",
            )?;
            for (buyer, order) in claims.buyers {
                if st.execute([&buyer, &order])? == 1 {
                    new_buyers.insert(buyer);
                }
            }
        }
        phase.done("read");
        let plan = batch::plan(batch, stored, counters, &new_buyers)?;
        phase.done("engine");
        write_new(&tx, &plan, text)?;
        let mut upgraded = Vec::with_capacity(plan.new.len());
        for check in plan.grade_checks(batch) {
            let mut up = Vec::new();
            if let Some(g) = check {
                if check_grade(&tx, g.ruleset, g.promoter, g.month, &g.cause, g.at)? {
                    up.push(g.promoter.to_string());
                }
            }
            upgraded.push(up);
        }
        phase.done("write");
        tx.commit()?;
        phase.finish("commit");
        Ok(plan.outcomes(upgraded))
    }
}

/// The rows of a batch's new splits, one cached single-row statement per table: the
/// columns and order of `sqlite::write_new`.
fn write_new(tx: &rusqlite::Transaction<'_>, plan: &batch::Plan, text: &mut String) -> Result<()> {
    let mut splits = tx.prepare_cached(
        "INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid,
                             sales, primary_promoter, month, result, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?;
    for n in &plan.new {
        let r = &n.result;
        splits.execute(params![
            r.order_id.as_str(),
            n.fingerprint,
            r.merchant.as_str(),
            r.buyer.as_str(),
            r.currency.as_str(),
            us(r.paid_at),
            r.ruleset_version as i64,
            r.paid,
            r.sales,
            r.primary_promoter.as_deref(),
            r.month.as_str(),
            n.json,
            us(r.computed_at),
        ])?;
    }
    let mut shares = tx.prepare_cached(
        "INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for n in &plan.new {
        let r = &n.result;
        for t in &r.totals {
            text.clear();
            write!(text, "{}", t.account).expect("writing to a String");
            shares.execute(params![
                text.as_str(),
                us(r.paid_at),
                r.order_id.as_str(),
                r.currency.as_str(),
                t.amount,
                r.ruleset_version as i64,
            ])?;
        }
    }
    let mut entries = tx.prepare_cached(
        "INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, 'split', ?6, ?6, ?7)",
    )?;
    for n in &plan.new {
        let r = &n.result;
        for e in &n.entries {
            text.clear();
            write!(text, "{}", e.account).expect("writing to a String");
            entries.execute(params![
                text.as_str(),
                e.currency,
                e.amount,
                e.deferred,
                e.available_at.map(us),
                r.order_id.as_str(),
                us(r.computed_at),
            ])?;
        }
    }
    // Events, in batch order (the relay publishes in outbox order); the body is the
    // result stored above, read from `splits` (SPLIT_COMPUTED).
    let mut outbox = tx.prepare_cached(
        "INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES (?1, ?2, ?3, '', ?4)
         ON CONFLICT (event_id) DO NOTHING",
    )?;
    for n in &plan.new {
        let r = &n.result;
        text.clear();
        write!(text, "{SPLIT_COMPUTED}:{}", r.order_id).expect("writing to a String");
        outbox.execute(params![
            text.as_str(),
            SPLIT_COMPUTED,
            r.order_id.as_str(),
            us(r.computed_at)
        ])?;
    }
    // Counters: their final values.
    let mut volumes = tx.prepare_cached(
        "INSERT INTO volumes (kind, subject, currency, month, amount) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = excluded.amount",
    )?;
    for ((k, s, c, m), v) in &plan.counters {
        volumes.execute(params![k, s, c, m, v])?;
    }
    Ok(())
}

/// `sqlite::check_grade` on this connection: upgrades `id` if the grades of `rs` say so.
fn check_grade(
    tx: &rusqlite::Transaction<'_>,
    rs: &RuleSet,
    id: &str,
    month: &str,
    cause: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    if rs.grades.is_empty() {
        return Ok(false);
    }
    let grade: Option<Option<String>> = tx
        .prepare_cached("SELECT grade FROM promoters WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(grade) = grade else {
        return Ok(false);
    };
    let direct_invites: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM promoters WHERE parent = ?1")?
        .query_row([id], |r| r.get(0))?;
    let mut month_sales = Vec::new();
    let mut st = tx.prepare_cached(
        "SELECT currency, amount FROM volumes WHERE kind = 'promoter' AND subject = ?1 AND month = ?2",
    )?;
    let mut rows = st.query([id, month])?;
    while let Some(r) = rows.next()? {
        let c: String = r.get(0)?;
        if let Some(c) = Currency::parse(&c) {
            month_sales.push((c, r.get::<_, i64>(1)?));
        }
    }
    let facts = GradeFacts {
        direct_invites: direct_invites as u64,
        month_sales,
    };
    let Some(g) = grades::upgrade(rs, grade.as_deref(), &facts) else {
        return Ok(false);
    };
    tx.prepare_cached("UPDATE promoters SET grade = ?1, updated_at = ?2 WHERE id = ?3")?
        .execute(params![g, us(now), id])?;
    let (event_id, body) = GradeChange::event(id, &g, cause, now)?;
    tx.prepare_cached(
        "INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES (?1, 'grade_changed', ?2, ?3, ?4)
         ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![event_id, id, body, us(now)])?;
    Ok(true)
}
