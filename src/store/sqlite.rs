//! SQLite backend: the embedded default (a file in WAL mode).
//!
//! SQLite has one writer at a time, so writes go through a pool of exactly one
//! connection: write transactions queue in the pool instead of failing with SQLITE_BUSY,
//! and a transaction that reads a volume counter is alone until it commits. Group
//! commit's batches run on a second, synchronous connection (`store::sqlite_bulk`); one
//! async lock, the write gate, is held by each batch and by every transaction of that
//! pool, so batches queue with every other write the same way. Reads use a
//! separate pool and never wait for writers (WAL). A commit is on disk before Compute
//! answers: `synchronous = FULL` on the sqlx writer; the group-commit connection commits
//! with `synchronous = NORMAL` and its batches are synced after the write gate is released
//! (`store::wal_sync`); reads wait for that sync before they return what they read.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::sqlite_bulk::BulkWriter;
use super::wal_sync::WalSync;
use super::*;
use crate::domain::engine::{self, Context};
use crate::domain::grades::{self, GradeFacts};
use crate::domain::ledger::{self, Balance, NewEntry, PayoutBatch, PayoutOutcome};
use crate::domain::lifecycle::Movement;
use crate::domain::money::Currency;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset::RuleSet;
use crate::domain::split::AccountAmount;

/// Connections of the read pool.
const READ_CONNECTIONS: u32 = 8;
/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows per multi-row INSERT: 9 columns × 500 stays far below SQLite's 32,766 bound
/// parameters per statement.
const MAX_ROWS_PER_INSERT: usize = 500;
/// Page cache of each sqlx connection.
const PAGE_CACHE_KIB: u32 = 64 * 1024;
/// Page cache of the group-commit connection: smaller, because SQLite 3.46 walks all of it
/// at the end of most of its transactions. A B-tree balance that swaps two new pages uses
/// the 1 GiB lock-byte page's number as a temporary one; the page cache then remembers
/// that number as its largest key, and the commit's truncation to the database's size
/// scans every hash slot and cached page (about 230 µs per batch at 64 MiB, the server's
/// hottest function; RESULTS.md §25). 16 MiB (4,096 pages) holds the last leaves of
/// some 2,000 accounts in both per-account indexes; with 100,000 promoters paid at random
/// it stored as much as 64 MiB did.
const WRITER_PAGE_CACHE_KIB: u32 = 16 * 1024;
/// How often the background checkpointer copies the WAL into the database file while
/// the WAL grows: at 3,000 orders/s about 6 orders' pages (some 40 pages each,
/// RESULTS.md §14).
const CHECKPOINT_PERIOD_BUSY: Duration = Duration::from_millis(2);
/// The longest it waits while the WAL does not change.
const CHECKPOINT_PERIOD_IDLE: Duration = Duration::from_millis(100);
/// WAL pages (4 KiB) after which the writer checkpoints itself and the WAL restarts:
/// bounds the WAL to about 16 MiB plus what one period writes.
const WRITER_CHECKPOINT_PAGES: u32 = 4096;
/// How long a caller waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    /// Group commit's own connection (`store::sqlite_bulk`), and the gate of every write
    /// of this process: the batch holds it while it runs, and every write through
    /// `writer` holds it for its transaction ([`SqliteStore::begin_write`]), so no two
    /// writes ever wait on SQLite's write lock. A lock of its own rather than `writer`'s
    /// one connection, which sqlx pings on every release before another caller may have
    /// it (1.5 ms between batches, RESULTS.md §16).
    bulk: Arc<tokio::sync::Mutex<BulkWriter>>,
    reader: SqlitePool,
    /// The group-commit connection's WAL syncs, done after the gate is released.
    wal: Arc<WalSync>,
    /// Dropped with the last handle: stops the checkpointer.
    _alive: Arc<()>,
}

fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_us(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs the migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("cache_size", format!("-{}", PAGE_CACHE_KIB))
            // Statement journals (multi-row statements inside a transaction) in memory:
            // they only ever roll back a statement, never survive a crash.
            .pragma("temp_store", "MEMORY");
        // The checkpointer below copies WAL pages into the database file off the one
        // writer thread that every Compute waits on. The writer still checkpoints every
        // WRITER_CHECKPOINT_PAGES: cheap, since the pages are mostly copied already, and
        // it lets the WAL restart from its beginning, which a checkpoint running beside a
        // busy writer never can.
        // No ping before each acquire (`test_before_acquire(false)`): a SQLite connection is
        // a file this process holds open, so the ping checks nothing, and it is one more
        // round trip to the connection's thread for every query.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(
                opts.clone()
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string()),
            )
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let bulk = BulkWriter::open(
            path,
            BUSY_TIMEOUT,
            WRITER_PAGE_CACHE_KIB,
            WRITER_CHECKPOINT_PAGES,
        )?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(opts.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        let alive = Arc::new(());
        tokio::spawn(checkpoint_loop(checkpointer, Arc::downgrade(&alive)));
        Ok(SqliteStore {
            writer,
            bulk: Arc::new(tokio::sync::Mutex::new(bulk)),
            reader,
            wal: Arc::new(WalSync::new(path)),
            _alive: alive,
        })
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// A write transaction on `writer`, with the write gate held for as long as the
    /// returned guard lives: keep both until the transaction ends. (A write whose caller
    /// went away frees the gate at once while sqlx still rolls its transaction back on
    /// the connection; a batch starting then waits those milliseconds in SQLite's busy
    /// timeout, not in an error.)
    async fn begin_write(
        &self,
    ) -> Result<(
        tokio::sync::MutexGuard<'_, BulkWriter>,
        Transaction<'static, Sqlite>,
    )> {
        let gate = self.bulk.lock().await;
        self.wal.check()?;
        let tx = self.writer.begin().await?;
        Ok((gate, tx))
    }
}

/// Runs blocking SQLite work on this thread without stalling the runtime: other tasks
/// move to another worker (`block_in_place`). On a current-thread runtime (tests) it
/// just runs.
fn run_blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Copies committed pages from the WAL into the database file (PASSIVE: never waits for,
/// nor blocks, readers or the writer) until the store is dropped: every
/// [`CHECKPOINT_PERIOD_BUSY`] while the WAL moves, backing off to
/// [`CHECKPOINT_PERIOD_IDLE`] while it does not. Kept that close behind the writer, the
/// writer's own checkpoint (every [`WRITER_CHECKPOINT_PAGES`]) finds nearly every page
/// copied and stalls its commit for a few pages instead of for the last period's writes
/// (RESULTS.md §14).
async fn checkpoint_loop(pool: SqlitePool, alive: std::sync::Weak<()>) {
    let mut period = CHECKPOINT_PERIOD_BUSY;
    let mut last = None;
    loop {
        tokio::time::sleep(period).await;
        if alive.upgrade().is_none() {
            break;
        }
        // (busy, frames in the WAL, frames copied): unchanged means nothing was written.
        match sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(&pool)
            .await
        {
            Ok(state) => {
                period = if last == Some(state) {
                    (period * 2).min(CHECKPOINT_PERIOD_IDLE)
                } else {
                    CHECKPOINT_PERIOD_BUSY
                };
                last = Some(state);
            }
            Err(e) => {
                period = CHECKPOINT_PERIOD_IDLE;
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
        }
    }
    pool.close().await;
}

fn ruleset_row(r: &sqlx::sqlite::SqliteRow) -> Result<StoredRuleSet> {
    Ok(StoredRuleSet {
        version: r.try_get::<i64, _>("version")? as u64,
        effective_from: r
            .try_get::<Option<i64>, _>("effective_from")?
            .map(from_us)
            .transpose()?,
        canary: decode_canary(r.try_get("canary")?)?,
        document: r.try_get("document")?,
        sha256: r.try_get("sha256")?,
        published_at: from_us(r.try_get("published_at")?)?,
    })
}

/// A promoter then its ancestors ([`Store::get_upline`]) as one row: a JSON array of
/// `[n, id, parent, grade, status]`, `n` the distance from the promoter. One row, because
/// sqlx hands each row of a SQLite query from its worker thread to the caller on its own:
/// for 10-deep chains of a 1M-promoter network, one call in flight, the query's time in
/// the server fell from about 180 µs to about 150 µs (the SQL itself runs in about 26).
const UPLINE_SQL: &str = "WITH RECURSIVE up(id, parent, grade, status, n) AS (
    SELECT id, parent, grade, status, 0 FROM promoters WHERE id = ?
    UNION ALL
    SELECT p.id, p.parent, p.grade, p.status, up.n + 1
    FROM up JOIN promoters p ON p.id = up.parent
    WHERE up.n < ?
) SELECT json_group_array(json_array(n, id, parent, grade, status)) FROM up";

/// One element of [`UPLINE_SQL`]'s array.
type UplineItem = (u32, String, Option<String>, Option<String>, String);

fn promoter_row(r: &sqlx::sqlite::SqliteRow) -> Result<PromoterNode> {
    Ok(PromoterNode {
        id: r.try_get("id")?,
        parent: r.try_get("parent")?,
        grade: r.try_get("grade")?,
        status: decode_status(r.try_get::<&str, _>("status")?)?,
    })
}

async fn promoter_in(tx: &mut Transaction<'_, Sqlite>, id: &str) -> Result<Option<PromoterNode>> {
    sqlx::query("SELECT id, parent, grade, status FROM promoters WHERE id = ?")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| promoter_row(&r))
        .transpose()
}

/// True when `ancestor` is `start` or above it.
async fn is_ancestor(
    tx: &mut Transaction<'_, Sqlite>,
    start: &str,
    ancestor: &str,
) -> Result<bool> {
    let hit: Option<i64> = sqlx::query_scalar(
        "WITH RECURSIVE up(id, parent, depth) AS (
             SELECT id, parent, 0 FROM promoters WHERE id = ?1
             UNION ALL
             SELECT p.id, p.parent, up.depth + 1 FROM promoters p JOIN up ON p.id = up.parent
             WHERE up.depth < ?3)
         SELECT 1 FROM up WHERE id = ?2 LIMIT 1",
    )
    .bind(start)
    .bind(ancestor)
    .bind(MAX_CYCLE_WALK)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(hit.is_some())
}

async fn grade_facts(
    tx: &mut Transaction<'_, Sqlite>,
    id: &str,
    month: &str,
) -> Result<GradeFacts> {
    let direct_invites: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM promoters WHERE parent = ?")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    let rows = sqlx::query("SELECT currency, amount FROM volumes WHERE kind = 'promoter' AND subject = ? AND month = ?")
        .bind(id)
        .bind(month)
        .fetch_all(&mut **tx)
        .await?;
    let mut month_sales = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(c) = Currency::parse(r.try_get("currency")?) {
            month_sales.push((c, r.try_get::<i64, _>("amount")?));
        }
    }
    Ok(GradeFacts {
        direct_invites: direct_invites as u64,
        month_sales,
    })
}

/// Upgrades `id` if the grades of `rs` say so; returns true when it changed.
async fn check_grade(
    tx: &mut Transaction<'_, Sqlite>,
    rs: &RuleSet,
    id: &str,
    month: &str,
    cause: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    if rs.grades.is_empty() {
        return Ok(false);
    }
    let Some(node) = promoter_in(tx, id).await? else {
        return Ok(false);
    };
    let facts = grade_facts(tx, id, month).await?;
    match grades::upgrade(rs, node.grade.as_deref(), &facts) {
        Some(g) => {
            sqlx::query("UPDATE promoters SET grade = ?, updated_at = ? WHERE id = ?")
                .bind(&g)
                .bind(us(now))
                .bind(id)
                .execute(&mut **tx)
                .await?;
            let (event_id, body) = GradeChange::event(id, &g, cause, now)?;
            outbox_insert(tx, &event_id, "grade_changed", id, &body, now).await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

async fn outbox_insert(
    tx: &mut Transaction<'_, Sqlite>,
    event_id: &str,
    kind: &str,
    key: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING")
        .bind(event_id)
        .bind(kind)
        .bind(key)
        .bind(body)
        .bind(us(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_entries(
    tx: &mut Transaction<'_, Sqlite>,
    entries: &[NewEntry],
    source_kind: &str,
    source_id: &str,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    for chunk in entries.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) ",
        );
        q.push_values(chunk, |mut b, e| {
            b.push_bind(e.account.to_string())
                .push_bind(e.currency.clone())
                .push_bind(e.amount)
                .push_bind(e.deferred)
                .push_bind(e.available_at.map(us))
                .push_bind(source_kind.to_string())
                .push_bind(source_id.to_string())
                .push_bind(order_id.to_string())
                .push_bind(us(now));
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Payout state of the entry `e` (one indexed lookup per entry).
const PAYOUT_STATE_OF_ENTRY: &str = "SELECT CASE WHEN c.outcome = 'paid' THEN 'paid' ELSE 'in_payout' END
     FROM payout_entries p LEFT JOIN payout_confirmations c ON c.batch_id = p.batch_id AND c.account = p.account
     WHERE p.entry_id = e.id AND (c.outcome IS NULL OR c.outcome = 'paid') LIMIT 1";

/// Payout state of entries: reserved by or paid in a batch not confirmed as failed.
const PAYOUT_STATE: &str = "SELECT p.entry_id, CASE WHEN c.outcome = 'paid' THEN 'paid' ELSE 'in_payout' END AS state
     FROM payout_entries p LEFT JOIN payout_confirmations c ON c.batch_id = p.batch_id AND c.account = p.account
     WHERE c.outcome IS NULL OR c.outcome = 'paid'";

fn entry_row(r: &sqlx::sqlite::SqliteRow, now: DateTime<Utc>) -> Result<EntryRow> {
    let deferred: bool = r.try_get("deferred")?;
    let available_at = r
        .try_get::<Option<i64>, _>("available_at")?
        .map(from_us)
        .transpose()?;
    let state: Option<String> = r.try_get("state")?;
    Ok(EntryRow {
        id: r.try_get("id")?,
        account: r.try_get("account")?,
        currency: r.try_get("currency")?,
        amount: r.try_get("amount")?,
        status: entry_status(deferred, state.as_deref(), available_at, now),
        available_at,
        source_kind: r.try_get("source_kind")?,
        source_id: r.try_get("source_id")?,
        order_id: r.try_get("order_id")?,
        created_at: from_us(r.try_get("created_at")?)?,
    })
}

async fn load_movements(tx: &mut Transaction<'_, Sqlite>, order_id: &str) -> Result<Vec<Movement>> {
    let rows =
        sqlx::query("SELECT body FROM movements WHERE order_id = ? ORDER BY created_at, kind, id")
            .bind(order_id)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| decode_movement(r.try_get("body")?))
        .collect()
}

async fn sub_volume(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    subject: &str,
    r: &SplitResult,
    delta: i64,
) -> Result<()> {
    sqlx::query("UPDATE volumes SET amount = amount - ? WHERE kind = ? AND subject = ? AND currency = ? AND month = ?")
        .bind(delta)
        .bind(kind)
        .bind(subject)
        .bind(r.currency.as_str())
        .bind(r.month.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_in(
    tx: &mut Transaction<'_, Sqlite>,
    up: &PromoterUpsert,
    rs: Option<&RuleSet>,
    now: DateTime<Utc>,
) -> Result<UpsertOutcome> {
    let existing = promoter_in(tx, &up.id).await?;
    let node = merge_upsert(existing.as_ref(), up);
    let parent_changed = existing.as_ref().map(|e| &e.parent) != Some(&node.parent);
    if parent_changed {
        if let Some(p) = &node.parent {
            if p == &node.id {
                return Err(StoreError::FailedPrecondition(format!(
                    "promoter {p} cannot be its own parent"
                )));
            }
            if promoter_in(tx, p).await?.is_none() {
                return Err(StoreError::NotFound(format!(
                    "parent promoter {p} does not exist"
                )));
            }
            if existing.is_some() && is_ancestor(tx, p, &node.id).await? {
                return Err(StoreError::FailedPrecondition(format!(
                    "moving {} under {p} would make a cycle: {p} is below {}",
                    node.id, node.id
                )));
            }
        }
    }
    sqlx::query(
        "INSERT INTO promoters (id, parent, grade, status, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
         ON CONFLICT (id) DO UPDATE SET parent = excluded.parent, grade = excluded.grade,
             status = excluded.status, updated_at = excluded.updated_at",
    )
    .bind(&node.id)
    .bind(&node.parent)
    .bind(&node.grade)
    .bind(node.status.as_str())
    .bind(us(now))
    .execute(&mut **tx)
    .await?;
    let mut changed = vec![node.id.clone()];
    if let (true, Some(p), Some(rs)) = (parent_changed, &node.parent, rs) {
        if check_grade(
            tx,
            rs,
            p,
            &engine::month_key(now, rs),
            &format!("promoter {} joined", node.id),
            now,
        )
        .await?
        {
            changed.push(p.clone());
        }
    }
    Ok(UpsertOutcome {
        promoter: node,
        created: existing.is_none(),
        changed,
    })
}

async fn bind_in(
    tx: &mut Transaction<'_, Sqlite>,
    customer: &str,
    promoter: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if promoter_in(tx, promoter).await?.is_none() {
        return Err(StoreError::NotFound(format!(
            "promoter {promoter} does not exist"
        )));
    }
    sqlx::query(
        "INSERT INTO bindings (customer, promoter, bound_at) VALUES (?, ?, ?)
         ON CONFLICT (customer) DO UPDATE SET promoter = excluded.promoter, bound_at = excluded.bound_at",
    )
    .bind(customer)
    .bind(promoter)
    .bind(us(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn add_volume(
    tx: &mut Transaction<'_, Sqlite>,
    kind: &str,
    subject: &str,
    plan: &SplitPlan,
) -> Result<i64> {
    let after: i64 = sqlx::query_scalar(
        "INSERT INTO volumes (kind, subject, currency, month, amount) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + excluded.amount
         RETURNING amount",
    )
    .bind(kind)
    .bind(subject)
    .bind(&plan.currency)
    .bind(&plan.month)
    .bind(plan.sales)
    .fetch_one(&mut **tx)
    .await?;
    Ok(after - plan.sales)
}

async fn read_volume(
    pool: &SqlitePool,
    kind: &str,
    subject: &str,
    plan: &SplitPlan,
) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT amount FROM volumes WHERE kind = ? AND subject = ? AND currency = ? AND month = ?",
    )
    .bind(kind)
    .bind(subject)
    .bind(&plan.currency)
    .bind(&plan.month)
    .fetch_optional(pool)
    .await?;
    Ok(v.unwrap_or(0))
}

/// One Compute inside an open transaction: the body shared by single and group commits.
async fn commit_one(
    tx: &mut Transaction<'_, Sqlite>,
    plan: &SplitPlan,
    compute: ComputeFn<'_>,
) -> Result<CommitOutcome> {
    let existing = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = ?")
        .bind(&plan.order_id)
        .fetch_optional(&mut **tx)
        .await?;
    if let Some(r) = existing {
        let stored = StoredSplit {
            fingerprint: r.try_get("fingerprint")?,
            result: decode_result(r.try_get("result")?)?,
        };
        return Ok(CommitOutcome::Existing(stored));
    }
    // Counters in a fixed order (merchant, then promoter) in every transaction.
    let merchant_month_prior = add_volume(tx, "merchant", &plan.merchant, plan).await?;
    let promoter_month_prior = match &plan.primary_promoter {
        Some(p) => add_volume(tx, "promoter", p, plan).await?,
        None => 0,
    };
    let first_order = sqlx::query(
        "INSERT INTO buyers (buyer, first_order_id) VALUES (?, ?) ON CONFLICT (buyer) DO NOTHING",
    )
    .bind(&plan.buyer)
    .bind(&plan.order_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    let ctx = Context {
        first_order,
        promoter_month_prior,
        merchant_month_prior,
    };
    let one = batch::Plan::single(batch::NewSplit::new(
        plan.fingerprint.clone(),
        compute(&ctx)?,
    )?);
    write_new(tx, &one).await?;
    let result = one.new.into_iter().next().expect("one new split").result;
    let mut upgraded = Vec::new();
    if let Some(p) = &plan.primary_promoter {
        if check_grade(
            tx,
            &plan.ruleset,
            p,
            &plan.month,
            &format!("order {}", result.order_id),
            result.computed_at,
        )
        .await?
        {
            upgraded.push(p.clone());
        }
    }
    Ok(CommitOutcome::Stored { result, upgraded })
}

/// The rows of a batch's new splits: one multi-row statement per table (per
/// [`MAX_ROWS_PER_INSERT`] rows).
async fn write_new(tx: &mut Transaction<'_, Sqlite>, plan: &batch::Plan) -> Result<()> {
    for chunk in plan.new.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid,
                                 sales, primary_promoter, month, result, created_at) ",
        );
        q.push_values(chunk, |mut b, n| {
            let r = &n.result;
            b.push_bind(r.order_id.as_str())
                .push_bind(n.fingerprint.as_str())
                .push_bind(r.merchant.as_str())
                .push_bind(r.buyer.as_str())
                .push_bind(r.currency.as_str())
                .push_bind(us(r.paid_at))
                .push_bind(r.ruleset_version as i64)
                .push_bind(r.paid)
                .push_bind(r.sales)
                .push_bind(r.primary_promoter.as_deref())
                .push_bind(r.month.as_str())
                .push_bind(n.json.as_str())
                .push_bind(us(r.computed_at));
        });
        q.build().execute(&mut **tx).await?;
    }
    let shares: Vec<(&SplitResult, &AccountAmount)> = plan
        .new
        .iter()
        .flat_map(|n| n.result.totals.iter().map(move |t| (&n.result, t)))
        .collect();
    for chunk in shares.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version) ",
        );
        q.push_values(chunk, |mut b, (r, t)| {
            b.push_bind(t.account.to_string())
                .push_bind(us(r.paid_at))
                .push_bind(r.order_id.as_str())
                .push_bind(r.currency.as_str())
                .push_bind(t.amount)
                .push_bind(r.ruleset_version as i64);
        });
        q.build().execute(&mut **tx).await?;
    }
    let entries: Vec<(&SplitResult, &NewEntry)> = plan
        .new
        .iter()
        .flat_map(|n| n.entries.iter().map(move |e| (&n.result, e)))
        .collect();
    for chunk in entries.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at) ",
        );
        q.push_values(chunk, |mut b, (r, e)| {
            b.push_bind(e.account.to_string())
                .push_bind(e.currency.as_str())
                .push_bind(e.amount)
                .push_bind(e.deferred)
                .push_bind(e.available_at.map(us))
                .push_bind("split")
                .push_bind(r.order_id.as_str())
                .push_bind(r.order_id.as_str())
                .push_bind(us(r.computed_at));
        });
        q.build().execute(&mut **tx).await?;
    }
    // Events, in batch order (the relay publishes in outbox order); the body is the
    // result stored above, read from `splits` (SPLIT_COMPUTED).
    for chunk in plan.new.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO outbox (event_id, kind, key, body, created_at) ",
        );
        q.push_values(chunk, |mut b, n| {
            let r = &n.result;
            b.push_bind(format!("{SPLIT_COMPUTED}:{}", r.order_id))
                .push_bind(SPLIT_COMPUTED)
                .push_bind(r.order_id.as_str())
                .push_bind("")
                .push_bind(us(r.computed_at));
        });
        q.push(" ON CONFLICT (event_id) DO NOTHING");
        q.build().execute(&mut **tx).await?;
    }
    // Counters: their final values.
    for chunk in plan.counters.chunks(MAX_ROWS_PER_INSERT) {
        let mut q = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO volumes (kind, subject, currency, month, amount) ",
        );
        q.push_values(chunk, |mut b, ((k, s, c, m), v)| {
            b.push_bind(*k)
                .push_bind(s.as_str())
                .push_bind(c.as_str())
                .push_bind(m.as_str())
                .push_bind(*v);
        });
        q.push(
            " ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = excluded.amount",
        );
        q.build().execute(&mut **tx).await?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn publish_ruleset(&self, new: NewRuleSet) -> Result<StoredRuleSet> {
        let (_gate, mut tx) = self.begin_write().await?;
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM rulesets")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rulesets (version, effective_from, canary, document, sha256, published_at) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(next)
        .bind(new.effective_from.map(us))
        .bind(encode_canary(&new.canary))
        .bind(&new.document)
        .bind(&new.sha256)
        .bind(us(new.published_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredRuleSet {
            version: next as u64,
            effective_from: new.effective_from,
            canary: new.canary,
            document: new.document,
            sha256: new.sha256,
            published_at: new.published_at,
        })
    }

    async fn get_ruleset(&self, version: u64) -> Result<Option<StoredRuleSet>> {
        sqlx::query("SELECT * FROM rulesets WHERE version = ?")
            .bind(version as i64)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| ruleset_row(&r))
            .transpose()
    }

    async fn list_rulesets(&self, before: Option<u64>, limit: u32) -> Result<Vec<StoredRuleSet>> {
        let rows =
            sqlx::query("SELECT * FROM rulesets WHERE version < ? ORDER BY version DESC LIMIT ?")
                .bind(before.map_or(i64::MAX, |b| b as i64))
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
                .await?;
        rows.iter().map(ruleset_row).collect()
    }

    async fn all_rulesets(&self) -> Result<Vec<StoredRuleSet>> {
        let rows = sqlx::query("SELECT * FROM rulesets ORDER BY version")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(ruleset_row).collect()
    }

    async fn get_upline(&self, id: &str, ancestors: u32) -> Result<Vec<PromoterNode>> {
        let json: String = sqlx::query_scalar(UPLINE_SQL)
            .bind(id)
            .bind(i64::from(ancestors))
            .fetch_one(&self.reader)
            .await?;
        let mut items: Vec<UplineItem> = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("upline of {id}: {e}")))?;
        items.sort_unstable_by_key(|i| i.0);
        items
            .into_iter()
            .map(|(_, id, parent, grade, status)| {
                Ok(PromoterNode {
                    id,
                    parent,
                    grade,
                    status: decode_status(&status)?,
                })
            })
            .collect()
    }

    async fn get_binding(&self, customer: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT promoter FROM bindings WHERE customer = ?")
                .bind(customer)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn upsert_promoter(
        &self,
        up: PromoterUpsert,
        rs: Option<Arc<RuleSet>>,
        now: DateTime<Utc>,
    ) -> Result<UpsertOutcome> {
        let (_gate, mut tx) = self.begin_write().await?;
        let out = upsert_in(&mut tx, &up, rs.as_deref(), now).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn bind_customer(
        &self,
        customer: &str,
        promoter: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let (_gate, mut tx) = self.begin_write().await?;
        bind_in(&mut tx, customer, promoter, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn import_network(
        &self,
        items: Vec<ImportItem>,
        rs: Option<Arc<RuleSet>>,
        now: DateTime<Utc>,
    ) -> std::result::Result<ImportSummary, ImportError> {
        let wrap = |index: usize| move |error: StoreError| ImportError { index, error };
        let (_gate, mut tx) = self.begin_write().await.map_err(wrap(0))?;
        let mut summary = ImportSummary::default();
        for (i, item) in items.iter().enumerate() {
            match item {
                ImportItem::Promoter(up) => {
                    upsert_in(&mut tx, up, rs.as_deref(), now)
                        .await
                        .map_err(wrap(i))?;
                    summary.promoters += 1;
                }
                ImportItem::Binding { customer, promoter } => {
                    bind_in(&mut tx, customer, promoter, now)
                        .await
                        .map_err(wrap(i))?;
                    summary.bindings += 1;
                }
            }
        }
        tx.commit().await.map_err(|e| wrap(items.len())(e.into()))?;
        Ok(summary)
    }

    async fn get_split(&self, order_id: &str) -> Result<Option<StoredSplit>> {
        let row = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&self.reader)
            .await?;
        // What was read is durable before it is shown (store::wal_sync).
        self.wal.settle_if(row.is_some()).await?;
        row.map(|r| {
            Ok(StoredSplit {
                fingerprint: r.try_get("fingerprint")?,
                result: decode_result(r.try_get("result")?)?,
            })
        })
        .transpose()
    }

    async fn read_context(&self, plan: &SplitPlan) -> Result<Context> {
        let first: Option<String> =
            sqlx::query_scalar("SELECT first_order_id FROM buyers WHERE buyer = ?")
                .bind(&plan.buyer)
                .fetch_optional(&self.reader)
                .await?;
        let promoter_month_prior = match &plan.primary_promoter {
            Some(p) => read_volume(&self.reader, "promoter", p, plan).await?,
            None => 0,
        };
        Ok(Context {
            first_order: first.is_none(),
            promoter_month_prior,
            merchant_month_prior: read_volume(&self.reader, "merchant", &plan.merchant, plan)
                .await?,
        })
    }

    async fn commit_split(
        &self,
        plan: &SplitPlan,
        compute: ComputeFn<'_>,
    ) -> Result<CommitOutcome> {
        let (_gate, mut tx) = self.begin_write().await?;
        let out = commit_one(&mut tx, plan, compute).await?;
        match out {
            CommitOutcome::Stored { .. } => tx.commit().await?,
            CommitOutcome::Existing(_) => tx.rollback().await?,
        }
        Ok(out)
    }

    async fn commit_splits(&self, batch: &[PendingSplit]) -> Result<Vec<Result<CommitOutcome>>> {
        let (out, ticket) = self.commit_splits_staged(batch).await?;
        self.wal.through(ticket).await?;
        Ok(out)
    }

    async fn durable(&self, ticket: u64) -> Result<()> {
        self.wal.through(ticket).await
    }

    fn failed(&self) -> Option<String> {
        self.wal.check().err().map(|e| e.to_string())
    }

    async fn sync_started(&self, ticket: u64) {
        self.wal.started(ticket).await
    }

    async fn commit_splits_staged(
        &self,
        batch: &[PendingSplit],
    ) -> Result<(Vec<Result<CommitOutcome>>, u64)> {
        // The write gate, held for the whole batch: no other write of this process runs
        // beside the bulk connection's transaction.
        let mut bulk = self.bulk.lock().await;
        self.wal.check()?;
        // A panic inside rolls its transaction back (rusqlite's drop) and releases the
        // gate as it unwinds: the connection stays usable.
        match run_blocking(|| bulk.commit(batch)) {
            // Committed, not yet synced (`synchronous = NORMAL`): the ticket is taken
            // before the gate is released; the sync that covers it runs after.
            Ok(out) => return Ok((out, self.wal.committed())),
            Err(e) => {
                metrics::counter!("prorata_group_commit_fallback_total").increment(1);
                tracing::debug!(error = %e, orders = batch.len(), "bulk commit failed: storing the batch one order per savepoint");
            }
        }
        // Gate, then `writer`: the order every write takes them in.
        let mut tx = self.writer.begin().await?;
        let mut out = Vec::with_capacity(batch.len());
        for p in batch {
            // Each order in its own savepoint: a refused order rolls back alone.
            sqlx::query("SAVEPOINT one").execute(&mut *tx).await?;
            match commit_one(&mut tx, &p.plan, &*p.compute).await {
                Ok(o) => {
                    sqlx::query("RELEASE SAVEPOINT one")
                        .execute(&mut *tx)
                        .await?;
                    out.push(Ok(o));
                }
                Err(e) => {
                    sqlx::query("ROLLBACK TO SAVEPOINT one")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("RELEASE SAVEPOINT one")
                        .execute(&mut *tx)
                        .await?;
                    out.push(Err(e));
                }
            }
        }
        // `writer` commits with `synchronous = FULL`: durable on return (ticket 0).
        tx.commit().await?;
        Ok((out, 0))
    }

    async fn list_splits(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<AccountSplit>> {
        let (c_at, c_id) = after.map_or((i64::MAX, String::new()), |(t, id)| (us(t), id));
        let rows = sqlx::query(
            "SELECT order_id, paid_at, currency, amount, ruleset_version FROM split_accounts
             WHERE account = ?1 AND paid_at >= ?2 AND paid_at < ?3
               AND (paid_at < ?4 OR (paid_at = ?4 AND order_id < ?5))
             ORDER BY paid_at DESC, order_id DESC LIMIT ?6",
        )
        .bind(account)
        .bind(from.map_or(i64::MIN, us))
        .bind(to.map_or(i64::MAX, us))
        .bind(c_at)
        .bind(c_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        self.wal.settle_if(!rows.is_empty()).await?;
        rows.iter()
            .map(|r| {
                Ok(AccountSplit {
                    order_id: r.try_get("order_id")?,
                    paid_at: from_us(r.try_get("paid_at")?)?,
                    currency: r.try_get("currency")?,
                    amount: r.try_get("amount")?,
                    ruleset_version: r.try_get::<i64, _>("ruleset_version")? as u64,
                })
            })
            .collect()
    }

    async fn record_movement(
        &self,
        req: &dyn MovementRequest,
        now: DateTime<Utc>,
    ) -> Result<MovementOutcome> {
        let (_gate, mut tx) = self.begin_write().await?;
        let kind = kind_name(req.kind());
        let split_row = sqlx::query("SELECT result FROM splits WHERE order_id = ?")
            .bind(req.order_id())
            .fetch_optional(&mut *tx)
            .await?;
        let existing = sqlx::query(
            "SELECT order_id, fingerprint, body FROM movements WHERE kind = ? AND id = ?",
        )
        .bind(kind)
        .bind(req.id())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(split_row) = split_row else {
            return Err(StoreError::NotFound(format!(
                "no split is stored for order {}",
                req.order_id()
            )));
        };
        let split = decode_result(split_row.try_get("result")?)?;
        let fp = req.fingerprint(&split)?;
        if let Some(e) = existing {
            let (order, stored_fp): (String, String) =
                (e.try_get("order_id")?, e.try_get("fingerprint")?);
            if order == req.order_id() && stored_fp == fp {
                return Ok(MovementOutcome::Replayed(decode_movement(
                    e.try_get("body")?,
                )?));
            }
            return Err(StoreError::AlreadyExists(format!(
                "{kind} {} was already recorded with different content",
                req.id()
            )));
        }
        let movements = load_movements(&mut tx, req.order_id()).await?;
        let m = req.plan(&split, &movements, fp, now)?;
        let body = serde_json::to_string(&m).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO movements (kind, id, order_id, fingerprint, body, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(kind)
            .bind(&m.id)
            .bind(&m.order_id)
            .bind(&m.fingerprint)
            .bind(&body)
            .bind(us(now))
            .execute(&mut *tx)
            .await?;
        insert_entries(
            &mut tx,
            &ledger::movement_entries(&split, &m),
            kind,
            &m.id,
            &m.order_id,
            now,
        )
        .await?;
        if m.sales_delta > 0 {
            sub_volume(&mut tx, "merchant", &split.merchant, &split, m.sales_delta).await?;
            if let Some(p) = &split.primary_promoter {
                sub_volume(&mut tx, "promoter", p, &split, m.sales_delta).await?;
            }
        }
        let (event_id, event_kind) = movement_event(&m);
        outbox_insert(&mut tx, &event_id, event_kind, &m.order_id, &body, now).await?;
        tx.commit().await?;
        Ok(MovementOutcome::Stored(m))
    }

    async fn balances(&self, account: &str, as_of: DateTime<Utc>) -> Result<Vec<Balance>> {
        let q = format!(
            "SELECT e.currency AS currency,
                SUM(CASE WHEN e.deferred THEN e.amount ELSE 0 END) AS deferred,
                SUM(CASE WHEN NOT e.deferred AND st.state IS NULL AND e.available_at > ?2 THEN e.amount ELSE 0 END) AS pending,
                SUM(CASE WHEN NOT e.deferred AND st.state IS NULL AND e.available_at <= ?2 THEN e.amount ELSE 0 END) AS available,
                SUM(CASE WHEN st.state = 'in_payout' THEN e.amount ELSE 0 END) AS in_payout,
                SUM(CASE WHEN st.state = 'paid' THEN e.amount ELSE 0 END) AS paid
             FROM entries e LEFT JOIN ({PAYOUT_STATE} AND p.account = ?1) st ON st.entry_id = e.id
             WHERE e.account = ?1 GROUP BY e.currency ORDER BY e.currency"
        );
        let rows = sqlx::query(&q)
            .bind(account)
            .bind(us(as_of))
            .fetch_all(&self.reader)
            .await?;
        self.wal.settle_if(!rows.is_empty()).await?;
        rows.iter()
            .map(|r| {
                Ok(Balance::from_sums(
                    account,
                    r.try_get("currency")?,
                    r.try_get("deferred")?,
                    r.try_get("pending")?,
                    r.try_get("available")?,
                    r.try_get("in_payout")?,
                    r.try_get("paid")?,
                ))
            })
            .collect()
    }

    async fn list_entries(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<EntryRow>> {
        let q = format!(
            "SELECT e.*, st.state AS state FROM entries e LEFT JOIN ({PAYOUT_STATE} AND p.account = ?1) st ON st.entry_id = e.id
             WHERE e.account = ?1 AND e.created_at >= ?2 AND e.created_at < ?3 AND e.id > ?4 ORDER BY e.id LIMIT ?5"
        );
        let rows = sqlx::query(&q)
            .bind(account)
            .bind(from.map_or(i64::MIN, us))
            .bind(to.map_or(i64::MAX, us))
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        self.wal.settle_if(!rows.is_empty()).await?;
        rows.iter().map(|r| entry_row(r, now)).collect()
    }

    async fn create_payout(
        &self,
        batch: &str,
        as_of: Option<DateTime<Utc>>,
        minimum: i64,
        now: DateTime<Utc>,
    ) -> Result<(PayoutBatch, bool)> {
        let fp = payout_fingerprint(as_of, minimum);
        let as_of = as_of.unwrap_or(now);
        let (_gate, mut tx) = self.begin_write().await?;
        if let Some(r) =
            sqlx::query("SELECT fingerprint, body FROM payout_batches WHERE batch_id = ?")
                .bind(batch)
                .fetch_optional(&mut *tx)
                .await?
        {
            let stored: String = r.try_get("fingerprint")?;
            if stored != fp {
                return Err(StoreError::AlreadyExists(format!(
                    "payout batch {batch} was already created with other parameters"
                )));
            }
            let b: PayoutBatch = serde_json::from_str(r.try_get("body")?)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            return Ok((b, true));
        }
        let rows = sqlx::query(
            "SELECT e.account, e.currency, e.id, e.amount FROM entries e
             WHERE NOT e.deferred AND e.available_at <= ?
               AND NOT EXISTS (SELECT 1 FROM payout_entries p LEFT JOIN payout_confirmations c
                               ON c.batch_id = p.batch_id AND c.account = p.account
                               WHERE p.entry_id = e.id AND (c.outcome IS NULL OR c.outcome = 'paid'))
             ORDER BY e.account, e.currency, e.id",
        )
        .bind(us(as_of))
        .fetch_all(&mut *tx)
        .await?;
        let candidates: Vec<(String, String, i64, i64)> = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("account")?,
                    r.try_get("currency")?,
                    r.try_get("id")?,
                    r.try_get("amount")?,
                ))
            })
            .collect::<Result<_>>()?;
        let groups = ledger::instructions(&candidates, minimum);
        let b = PayoutBatch {
            batch_id: batch.into(),
            as_of,
            minimum,
            instructions: groups.iter().map(|g| g.0.clone()).collect(),
            created_at: now,
        };
        let body = serde_json::to_string(&b).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query("INSERT INTO payout_batches (batch_id, as_of, minimum, fingerprint, body, created_at) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(batch)
            .bind(us(as_of))
            .bind(minimum)
            .bind(&fp)
            .bind(&body)
            .bind(us(now))
            .execute(&mut *tx)
            .await?;
        for (ins, ids) in &groups {
            for id in ids {
                sqlx::query(
                    "INSERT INTO payout_entries (batch_id, account, entry_id) VALUES (?, ?, ?)",
                )
                .bind(batch)
                .bind(&ins.account)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            }
        }
        outbox_insert(
            &mut tx,
            &format!("payout_created:{batch}"),
            "payout_created",
            batch,
            &body,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok((b, false))
    }

    async fn confirm_payout(
        &self,
        batch: &str,
        account: &str,
        outcome: PayoutOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let (_gate, mut tx) = self.begin_write().await?;
        let has: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM payout_entries WHERE batch_id = ? AND account = ? LIMIT 1",
        )
        .bind(batch)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        if has.is_none() {
            return Err(StoreError::NotFound(format!(
                "payout batch {batch} has no instruction for {account}"
            )));
        }
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT outcome FROM payout_confirmations WHERE batch_id = ? AND account = ?",
        )
        .bind(batch)
        .bind(account)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(o) = existing {
            return if o == outcome.as_str() {
                Ok(true)
            } else {
                Err(StoreError::FailedPrecondition(format!(
                    "{account} in batch {batch} was already confirmed as {o}"
                )))
            };
        }
        sqlx::query("INSERT INTO payout_confirmations (batch_id, account, outcome, confirmed_at) VALUES (?, ?, ?, ?)")
            .bind(batch)
            .bind(account)
            .bind(outcome.as_str())
            .bind(us(now))
            .execute(&mut *tx)
            .await?;
        let body = serde_json::to_string(&PayoutConfirmation {
            batch_id: batch.into(),
            account: account.into(),
            outcome,
            at: now,
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        outbox_insert(
            &mut tx,
            &format!("payout_confirmed:{batch}:{account}"),
            "payout_confirmed",
            batch,
            &body,
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(false)
    }

    async fn outbox_unpublished(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT o.seq, o.event_id, o.kind, o.key, o.body, o.created_at, s.result
             FROM outbox o LEFT JOIN splits s ON o.kind = 'split_computed' AND s.order_id = o.key
             WHERE o.published_at IS NULL ORDER BY o.seq LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        self.wal.settle_if(!rows.is_empty()).await?;
        rows.iter()
            .map(|r| {
                super::outbox_row(
                    r.try_get("seq")?,
                    r.try_get("event_id")?,
                    r.try_get("kind")?,
                    r.try_get("key")?,
                    r.try_get("body")?,
                    r.try_get("result")?,
                    from_us(r.try_get("created_at")?)?,
                )
            })
            .collect()
    }

    async fn outbox_mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<()> {
        let (_gate, mut tx) = self.begin_write().await?;
        for s in seqs {
            sqlx::query("UPDATE outbox SET published_at = ? WHERE seq = ?")
                .bind(us(now))
                .bind(s)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn outbox_pending(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.reader)
                .await?,
        )
    }

    async fn order_ids(&self, after: &str, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT order_id FROM splits WHERE order_id > ? ORDER BY order_id LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?)
    }

    async fn order_state(&self, order_id: &str, now: DateTime<Utc>) -> Result<Option<OrderState>> {
        let mut tx = self.reader.begin().await?;
        let Some(r) = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = ?")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let split = StoredSplit {
            fingerprint: r.try_get("fingerprint")?,
            result: decode_result(r.try_get("result")?)?,
        };
        let movements = load_movements(&mut tx, order_id).await?;
        let q = format!("SELECT e.*, ({PAYOUT_STATE_OF_ENTRY}) AS state FROM entries e WHERE e.order_id = ? ORDER BY e.id");
        let rows = sqlx::query(&q).bind(order_id).fetch_all(&mut *tx).await?;
        let entries = rows
            .iter()
            .map(|r| entry_row(r, now))
            .collect::<Result<_>>()?;
        tx.commit().await?;
        self.wal.settle().await?;
        Ok(Some(OrderState {
            split,
            movements,
            entries,
        }))
    }

    async fn accounts(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT account FROM entries ORDER BY account")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn outbox_prune(&self, keep: i64) -> Result<u64> {
        let _gate = self.bulk.lock().await;
        let r = sqlx::query(
            "DELETE FROM outbox WHERE seq <= (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        )
        .bind(keep)
        .execute(&self.writer)
        .await?;
        Ok(r.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No write of this process runs beside a batch: every write waits for the gate the
    /// batch holds (released here by hand), whichever path it takes.
    #[tokio::test]
    async fn every_write_waits_for_the_write_gate() {
        let dir = std::env::temp_dir().join(format!("prorata-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let gate = store.bulk.lock().await;
        let (a, b) = (store.clone(), store.clone());
        let prune = tokio::spawn(async move { a.outbox_prune(10).await });
        let mark = tokio::spawn(async move { b.outbox_mark_published(&[], Utc::now()).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waited = (!prune.is_finished(), !mark.is_finished());
        drop(gate);
        assert_eq!(prune.await.unwrap().unwrap(), 0);
        mark.await.unwrap().unwrap();
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(waited, (true, true), "both writes waited for the gate");
    }

    /// What a read returns is durable: a read that finds rows while a group-commit batch
    /// is committed but not yet synced (its ticket taken by hand here) syncs it before it
    /// returns; a read that finds nothing does not wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_return_only_what_is_synced() {
        let dir = std::env::temp_dir().join(format!("prorata-settle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let s = &store;
        let out = s.commit_splits(&[pending("O-1")]).await.unwrap();
        assert!(
            matches!(out[0], Ok(CommitOutcome::Stored { .. })),
            "{out:?}"
        );
        let now = Utc::now() + chrono::Duration::days(30);
        let syncs = s.wal.syncs();
        let mut seen = Vec::new();
        for read in [
            "get_split",
            "list_splits",
            "balances",
            "list_entries",
            "outbox_unpublished",
            "order_state",
        ] {
            let ticket = s.wal.committed();
            let found = match read {
                "get_split" => s.get_split("O-1").await.unwrap().is_some(),
                "list_splits" => !s
                    .list_splits("merchant:M1", None, None, None, 5)
                    .await
                    .unwrap()
                    .is_empty(),
                "balances" => !s.balances("merchant:M1", now).await.unwrap().is_empty(),
                "list_entries" => !s
                    .list_entries("merchant:M1", None, None, 0, 5, now)
                    .await
                    .unwrap()
                    .is_empty(),
                "outbox_unpublished" => !s.outbox_unpublished(5).await.unwrap().is_empty(),
                _ => s.order_state("O-1", now).await.unwrap().is_some(),
            };
            seen.push((read, found, s.wal.synced() >= ticket));
        }
        let after_reads = s.wal.syncs();
        // Nothing found: no wait, though a batch is pending.
        let ticket = s.wal.committed();
        assert!(s.get_split("O-2").await.unwrap().is_none());
        let empty = (s.wal.syncs(), s.wal.synced() >= ticket);
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            seen.iter().all(|(_, found, synced)| *found && *synced),
            "{seen:?}"
        );
        assert_eq!(
            after_reads - syncs,
            6,
            "one sync per read, each with a batch pending"
        );
        assert_eq!(empty, (after_reads, false), "an empty read did not sync");
    }

    /// A Compute of a new one-line order under a 10 % rule, for group commit.
    fn pending(id: &str) -> PendingSplit {
        use crate::domain::network::NetworkSnapshot;
        use crate::domain::order::{Order, RawAmount, RawLine, RawOrder};
        let raw = RawOrder {
            id: id.into(),
            merchant: "M1".into(),
            buyer: format!("B-{id}"),
            paid_at: Some(Utc::now()),
            currency: "CNY".into(),
            channel: "alipay".into(),
            lines: vec![RawLine {
                id: "L1".into(),
                sku: "S1".into(),
                category: "c".into(),
                quantity: 1,
                unit_price: RawAmount::Minor(10_000),
                ..Default::default()
            }],
            ..Default::default()
        };
        let o = Order::parse(&raw, "order").unwrap();
        let rs = Arc::new(
            crate::domain::ruleset::compile("rules: [{id: all, levels: ['0.10']}]\n")
                .ruleset
                .unwrap(),
        );
        let plan = SplitPlan {
            order_id: o.id.clone(),
            fingerprint: crate::domain::fingerprint::of(&o),
            merchant: o.merchant.clone(),
            buyer: o.buyer.clone(),
            currency: "CNY".into(),
            month: engine::month_key(o.paid_at, &rs).into(),
            primary_promoter: None,
            sales: o.sales(),
            paid_at: o.paid_at,
            ruleset: rs.clone(),
        };
        let fingerprint = plan.fingerprint.clone();
        PendingSplit::new(
            plan,
            Box::new(move |ctx: &Context| {
                engine::compute(
                    &o,
                    &rs,
                    &engine::Inputs {
                        network: &NetworkSnapshot::default(),
                        context: ctx.clone(),
                        ruleset_version: 1,
                        fingerprint: fingerprint.clone(),
                        now: Utc::now(),
                    },
                )
            }),
        )
    }

    /// Group commit answers a batch only once its WAL sync has run, and a read of it waits
    /// for the same sync, while another connection already sees the committed rows; the
    /// next batch waits until that sync has started (it would share it otherwise).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_answered_and_read_only_after_its_sync() {
        use crate::commit::{GroupCommitter, GroupSettings};
        let dir = std::env::temp_dir().join(format!("prorata-pipe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let store = Arc::new(SqliteStore::open(&path).await.unwrap());
        let gc = GroupCommitter::start(store.clone(), GroupSettings::for_backend("sqlite"));
        let held = store.wal.hold().await;
        let first = tokio::spawn({
            let gc = gc.clone();
            async move { gc.commit(pending("O-1")).await }
        });
        // The batch commits: another connection sees it, the answer waits.
        let mut seen = 0;
        for _ in 0..100 {
            let c = rusqlite::Connection::open(&path).unwrap();
            seen = c
                .query_row(
                    "SELECT count(*) FROM splits WHERE order_id = 'O-1'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap();
            if seen == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let read = tokio::spawn({
            let s = store.clone();
            async move { s.get_split("O-1").await }
        });
        // A second order is queued: not taken before the first batch's sync starts.
        let second = tokio::spawn({
            let gc = gc.clone();
            async move { gc.commit(pending("O-2")).await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = rusqlite::Connection::open(&path).unwrap();
        let both: i64 = c
            .query_row("SELECT count(*) FROM splits", [], |r| r.get(0))
            .unwrap();
        let waiting = (
            first.is_finished(),
            read.is_finished(),
            second.is_finished(),
        );
        let syncs_before = store.wal.syncs();
        drop(held);
        let first = first.await.unwrap();
        let read = read.await.unwrap();
        let second = second.await.unwrap();
        let synced = (store.wal.synced(), store.wal.syncs());
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(seen, 1, "the first batch committed while its sync was held");
        assert_eq!(
            both, 1,
            "the next batch waited for the first one's sync to start"
        );
        assert_eq!(
            waiting,
            (false, false, false),
            "nothing answered before the sync"
        );
        assert_eq!(syncs_before, 0);
        assert!(
            matches!(first, Ok(CommitOutcome::Stored { .. })),
            "{first:?}"
        );
        assert!(
            matches!(second, Ok(CommitOutcome::Stored { .. })),
            "{second:?}"
        );
        assert!(read.unwrap().is_some());
        assert_eq!(synced.0, 2, "both batches synced");
        assert!(synced.1 >= 1);
    }

    /// Migration 0004 rebuilds `split_accounts` as its key's B-tree alone: a database
    /// written under 0001–0003 keeps every row, the table is `WITHOUT ROWID`, and it is
    /// still immutable.
    #[tokio::test]
    async fn split_accounts_migrates_to_its_key_alone_with_every_row() {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        for sql in [
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_lifecycle.sql"),
            include_str!("../../migrations/sqlite/0003_entries_by_order.sql"),
        ] {
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
        }
        let split = "INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at,
             ruleset_version, paid, sales, primary_promoter, month, result, created_at)
             VALUES (?, 'f', 'M1', 'C1', 'CNY', ?, 1, 100, 100, NULL, '2026-11', '{}', 0)";
        let share = "INSERT INTO split_accounts (account, paid_at, order_id, currency, amount,
             ruleset_version) VALUES (?, ?, ?, 'CNY', ?, 1)";
        let mut before = Vec::new();
        for (o, paid_at) in [("O1", 10_i64), ("O2", 5), ("O3", 20)] {
            sqlx::query(split)
                .bind(o)
                .bind(paid_at)
                .execute(&mut c)
                .await
                .unwrap();
            for (a, amount) in [("merchant:M1", 90_i64), ("promoter:P1", 10)] {
                sqlx::query(share)
                    .bind(a)
                    .bind(paid_at)
                    .bind(o)
                    .bind(amount)
                    .execute(&mut c)
                    .await
                    .unwrap();
                before.push((a.to_string(), paid_at, o.to_string(), amount));
            }
        }
        sqlx::raw_sql(include_str!(
            "../../migrations/sqlite/0004_split_accounts_without_rowid.sql"
        ))
        .execute(&mut c)
        .await
        .unwrap();
        let after: Vec<(String, i64, String, i64)> = sqlx::query_as(
            "SELECT account, paid_at, order_id, amount FROM split_accounts
             ORDER BY account, paid_at, order_id",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        before.sort();
        assert_eq!(after, before, "every row kept");
        let ddl: String =
            sqlx::query_scalar("SELECT sql FROM sqlite_schema WHERE name = 'split_accounts'")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert!(ddl.contains("WITHOUT ROWID"), "{ddl}");
        for write in [
            "UPDATE split_accounts SET amount = 0",
            "DELETE FROM split_accounts",
        ] {
            let e = sqlx::query(write).execute(&mut c).await.unwrap_err();
            assert!(e.to_string().contains("split_accounts is immutable"), "{e}");
        }
    }

    /// Durability is a setting: the sqlx writer syncs the WAL at every commit; the
    /// group-commit connection leaves its commits to the store's sync (`wal_sync`).
    #[tokio::test]
    async fn the_writers_sync_in_wal_mode() {
        let dir = std::env::temp_dir().join(format!("prorata-sync-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = SqliteStore::open(&dir.join("db.sqlite")).await.unwrap();
        let mut c = store.writer.acquire().await.unwrap();
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        drop(c);
        let (bulk_sync, bulk_mode) = store.bulk.lock().await.durability();
        store.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            (sync, mode.as_str()),
            (2, "wal"),
            "synchronous = FULL (2), WAL"
        );
        assert_eq!(
            (bulk_sync, bulk_mode.as_str()),
            (1, "wal"),
            "the group-commit connection: synchronous = NORMAL (1), WAL"
        );
    }
}
