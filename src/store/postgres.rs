//! PostgreSQL backend: production storage shared by every replica.
//!
//! Concurrency is settled by the database, not by the process: Compute takes a
//! transaction-scoped advisory lock on its order id (concurrent duplicates queue and then
//! see the stored row), volume counters are moved with `INSERT .. ON CONFLICT DO UPDATE ..
//! RETURNING` (the row stays locked until commit, so two orders of one promoter never read
//! the same prior volume), and structural network changes take one advisory lock so two
//! concurrent moves cannot form a cycle together. Commits are synchronous.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::query::Query;
use sqlx::{Connection, Postgres, Row, Transaction};

use std::collections::{HashMap, HashSet};

use super::*;
use crate::domain::engine::{self, Context};
use crate::domain::grades::{self, GradeFacts};
use crate::domain::ledger::{self, Balance, NewEntry, PayoutBatch, PayoutOutcome};
use crate::domain::lifecycle::Movement;
use crate::domain::money::Currency;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset::RuleSet;

/// How long a caller waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of the one-call batch path (see [`BatchConnections`]): one per
/// group-commit worker for up to 4 workers (the default is 2); more workers queue for
/// them, for at most [`ACQUIRE_TIMEOUT`].
const BATCH_CONNECTIONS: usize = 4;
/// A held connection of the batch path idle this long is pinged before it is used.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);
/// Advisory lock key serialising structural network changes ("prorata1" in ASCII).
const NETWORK_LOCK: i64 = 0x7072_6f72_6174_6131;
/// Advisory lock key serialising payout batches, so no entry is in two live batches.
const PAYOUT_LOCK: i64 = 0x7072_6f72_6174_6132;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The connections of [`store_batch`]'s one calls.
    batch: Arc<BatchConnections>,
}

/// The connections of [`store_batch`]'s one calls, held between batches rather than
/// pooled. A sqlx pool pings a connection as it is returned to it, and the main pool
/// also before handing one out: a one-call batch is one round trip, and each ping would
/// be one more for PostgreSQL (RESULTS §28, §32). A held connection is pinged only when
/// it was idle for [`PING_IF_IDLE_FOR`]. One whose call failed other than with a taken
/// key is dropped; the batch is then stored the general way on the main pool, and the
/// next batch opens a new connection. Connected on first use, so a store that never
/// stores such a batch opens none.
#[derive(Debug)]
struct BatchConnections {
    options: PgConnectOptions,
    /// At most [`BATCH_CONNECTIONS`] in use or held; closed by [`PgStore::close`].
    permits: tokio::sync::Semaphore,
    /// Held connections, each with the time it was last used.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
}

/// A connection of [`BatchConnections`] in use.
struct BatchConnection<'a> {
    _permit: tokio::sync::SemaphorePermit<'a>,
    conn: PgConnection,
}

impl BatchConnections {
    fn new(options: PgConnectOptions) -> Self {
        BatchConnections {
            options,
            permits: tokio::sync::Semaphore::new(BATCH_CONNECTIONS),
            idle: Mutex::new(Vec::with_capacity(BATCH_CONNECTIONS)),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<(PgConnection, Instant)>> {
        // The list is valid whatever a panicking holder did: push and pop only.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A held connection (pinged if idle for [`PING_IF_IDLE_FOR`]), else a new one.
    async fn take(&self) -> Result<BatchConnection<'_>> {
        let unavailable = |what: &str| StoreError::Unavailable(format!("batch connection: {what}"));
        let permit = tokio::time::timeout(ACQUIRE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| unavailable("timed out waiting for one"))?
            .map_err(|_| unavailable("the store is closed"))?;
        let conn = loop {
            let held = self.idle().pop();
            let Some((mut conn, since)) = held else {
                break tokio::time::timeout(
                    ACQUIRE_TIMEOUT,
                    PgConnection::connect_with(&self.options),
                )
                .await
                .map_err(|_| unavailable("timed out connecting"))??;
            };
            // A held connection that fails its ping, or does not answer it within
            // ACQUIRE_TIMEOUT, is dropped (closing its socket).
            if since.elapsed() < PING_IF_IDLE_FOR
                || matches!(
                    tokio::time::timeout(ACQUIRE_TIMEOUT, conn.ping()).await,
                    Ok(Ok(()))
                )
            {
                break conn;
            }
        };
        Ok(BatchConnection {
            _permit: permit,
            conn,
        })
    }

    /// Holds `c` again for the next batch (its permit is released with it).
    fn put(&self, c: BatchConnection<'_>) {
        self.idle().push((c.conn, Instant::now()));
    }

    /// No new batch call; the held connections are closed.
    async fn close(&self) {
        self.permits.close();
        let held: Vec<_> = self.idle().drain(..).collect();
        for (conn, _) in held {
            let _ = conn.close().await;
        }
    }
}

impl PgStore {
    /// Connects and runs the migrations. With `schema`, every connection uses it (it is
    /// created if missing): the conformance runner gives each vector file its own.
    pub async fn connect(url: &str, max_connections: u32, schema: Option<&str>) -> Result<Self> {
        let mut opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Some(s) = schema {
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .connect_with(opts.clone())
                .await?;
            sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{s}\""))
                .execute(&admin)
                .await?;
            admin.close().await;
            opts = opts.options([("search_path", s)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let batch = Arc::new(BatchConnections::new(opts));
        Ok(PgStore { pool, batch })
    }

    /// Drops a schema made by [`PgStore::connect`] (conformance runs clean up after themselves).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
        let opts =
            PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.batch.close().await;
        self.pool.close().await;
    }
}

fn ruleset_row(r: &PgRow) -> Result<StoredRuleSet> {
    Ok(StoredRuleSet {
        version: r.try_get::<i64, _>("version")? as u64,
        effective_from: r.try_get("effective_from")?,
        canary: decode_canary(r.try_get("canary")?)?,
        document: r.try_get("document")?,
        sha256: r.try_get("sha256")?,
        published_at: r.try_get("published_at")?,
    })
}

/// A promoter then its ancestors, nearest first ([`Store::get_upline`]).
const UPLINE_SQL: &str = "WITH RECURSIVE up(id, parent, grade, status, n) AS (
    SELECT id, parent, grade, status, 0 FROM promoters WHERE id = $1
    UNION ALL
    SELECT p.id, p.parent, p.grade, p.status, up.n + 1
    FROM up JOIN promoters p ON p.id = up.parent
    WHERE up.n < $2
) SELECT id, parent, grade, status FROM up ORDER BY n";

fn promoter_row(r: &PgRow) -> Result<PromoterNode> {
    Ok(PromoterNode {
        id: r.try_get("id")?,
        parent: r.try_get("parent")?,
        grade: r.try_get("grade")?,
        status: decode_status(r.try_get::<&str, _>("status")?)?,
    })
}

async fn promoter_in(tx: &mut Transaction<'_, Postgres>, id: &str) -> Result<Option<PromoterNode>> {
    sqlx::query("SELECT id, parent, grade, status FROM promoters WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| promoter_row(&r))
        .transpose()
}

async fn is_ancestor(
    tx: &mut Transaction<'_, Postgres>,
    start: &str,
    ancestor: &str,
) -> Result<bool> {
    let hit: Option<i32> = sqlx::query_scalar(
        "WITH RECURSIVE up(id, parent, depth) AS (
             SELECT id, parent, 0::bigint FROM promoters WHERE id = $1
             UNION ALL
             SELECT p.id, p.parent, up.depth + 1 FROM promoters p JOIN up ON p.id = up.parent
             WHERE up.depth < $3)
         SELECT 1 FROM up WHERE id = $2 LIMIT 1",
    )
    .bind(start)
    .bind(ancestor)
    .bind(MAX_CYCLE_WALK)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(hit.is_some())
}

async fn grade_facts(
    tx: &mut Transaction<'_, Postgres>,
    id: &str,
    month: &str,
) -> Result<GradeFacts> {
    let direct_invites: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM promoters WHERE parent = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
    let rows = sqlx::query("SELECT currency, amount FROM volumes WHERE kind = 'promoter' AND subject = $1 AND month = $2")
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

async fn check_grade(
    tx: &mut Transaction<'_, Postgres>,
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
            sqlx::query("UPDATE promoters SET grade = $1, updated_at = $2 WHERE id = $3")
                .bind(&g)
                .bind(now)
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
    tx: &mut Transaction<'_, Postgres>,
    event_id: &str,
    kind: &str,
    key: &str,
    body: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("INSERT INTO outbox (event_id, kind, key, body, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
        .bind(event_id)
        .bind(kind)
        .bind(key)
        .bind(body)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn insert_entries(
    tx: &mut Transaction<'_, Postgres>,
    entries: &[NewEntry],
    source_kind: &str,
    source_id: &str,
    order_id: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let accounts: Vec<String> = entries.iter().map(|e| e.account.to_string()).collect();
    let currencies: Vec<String> = entries.iter().map(|e| e.currency.clone()).collect();
    let amounts: Vec<i64> = entries.iter().map(|e| e.amount).collect();
    let deferred: Vec<bool> = entries.iter().map(|e| e.deferred).collect();
    let available: Vec<Option<DateTime<Utc>>> = entries.iter().map(|e| e.available_at).collect();
    sqlx::query(
        "INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id, order_id, created_at)
         SELECT a, c, m, d, t, $6, $7, $8, $9
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::boolean[], $5::timestamptz[]) AS x(a, c, m, d, t)",
    )
    .bind(&accounts)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&deferred)
    .bind(&available)
    .bind(source_kind)
    .bind(source_id)
    .bind(order_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Payout state of the entry `e` (one indexed lookup per entry).
const PAYOUT_STATE_OF_ENTRY: &str = "SELECT CASE WHEN c.outcome = 'paid' THEN 'paid' ELSE 'in_payout' END
     FROM payout_entries p LEFT JOIN payout_confirmations c ON c.batch_id = p.batch_id AND c.account = p.account
     WHERE p.entry_id = e.id AND (c.outcome IS NULL OR c.outcome = 'paid') LIMIT 1";

/// Payout state of entries: reserved by or paid in a batch not confirmed as failed.
const PAYOUT_STATE: &str = "SELECT p.entry_id, CASE WHEN c.outcome = 'paid' THEN 'paid' ELSE 'in_payout' END AS state
     FROM payout_entries p LEFT JOIN payout_confirmations c ON c.batch_id = p.batch_id AND c.account = p.account
     WHERE (c.outcome IS NULL OR c.outcome = 'paid')";

fn entry_row(r: &PgRow, now: DateTime<Utc>) -> Result<EntryRow> {
    let deferred: bool = r.try_get("deferred")?;
    let available_at: Option<DateTime<Utc>> = r.try_get("available_at")?;
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
        created_at: r.try_get("created_at")?,
    })
}

async fn load_movements(
    tx: &mut Transaction<'_, Postgres>,
    order_id: &str,
) -> Result<Vec<Movement>> {
    let rows =
        sqlx::query("SELECT body FROM movements WHERE order_id = $1 ORDER BY created_at, kind, id")
            .bind(order_id)
            .fetch_all(&mut **tx)
            .await?;
    rows.iter()
        .map(|r| decode_movement(r.try_get("body")?))
        .collect()
}

async fn sub_volume(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    subject: &str,
    r: &SplitResult,
    delta: i64,
) -> Result<()> {
    sqlx::query("UPDATE volumes SET amount = amount - $1 WHERE kind = $2 AND subject = $3 AND currency = $4 AND month = $5")
        .bind(delta)
        .bind(kind)
        .bind(subject)
        .bind(r.currency.as_str())
        .bind(r.month.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn order_lock(tx: &mut Transaction<'_, Postgres>, order_id: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(order_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn upsert_in(
    tx: &mut Transaction<'_, Postgres>,
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
        "INSERT INTO promoters (id, parent, grade, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (id) DO UPDATE SET parent = EXCLUDED.parent, grade = EXCLUDED.grade,
             status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
    )
    .bind(&node.id)
    .bind(&node.parent)
    .bind(&node.grade)
    .bind(node.status.as_str())
    .bind(now)
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
    tx: &mut Transaction<'_, Postgres>,
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
        "INSERT INTO bindings (customer, promoter, bound_at) VALUES ($1, $2, $3)
         ON CONFLICT (customer) DO UPDATE SET promoter = EXCLUDED.promoter, bound_at = EXCLUDED.bound_at",
    )
    .bind(customer)
    .bind(promoter)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn network_lock(tx: &mut Transaction<'_, Postgres>) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(NETWORK_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn add_volume(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    subject: &str,
    plan: &SplitPlan,
) -> Result<i64> {
    let after: i64 = sqlx::query_scalar(
        "INSERT INTO volumes (kind, subject, currency, month, amount) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + EXCLUDED.amount
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

async fn read_volume(pool: &PgPool, kind: &str, subject: &str, plan: &SplitPlan) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar(
        "SELECT amount FROM volumes WHERE kind = $1 AND subject = $2 AND currency = $3 AND month = $4",
    )
    .bind(kind)
    .bind(subject)
    .bind(&plan.currency)
    .bind(&plan.month)
    .fetch_optional(pool)
    .await?;
    Ok(v.unwrap_or(0))
}

/// A stored split by order id: the key names the month, so only that month's partition
/// of `splits` is read.
const SPLIT_BY_ORDER: &str = "SELECT s.fingerprint, s.result FROM split_keys k
     LEFT JOIN splits s ON s.order_id = k.order_id AND s.paid_at = k.paid_at WHERE k.order_id = $1";

/// The stored split of an order; an order whose month was detached (archived) is
/// FAILED_PRECONDITION, never computed again.
async fn stored_split<'e>(
    exec: impl sqlx::PgExecutor<'e>,
    order_id: &str,
) -> Result<Option<StoredSplit>> {
    let Some(r) = sqlx::query(SPLIT_BY_ORDER)
        .bind(order_id)
        .fetch_optional(exec)
        .await?
    else {
        return Ok(None);
    };
    let Some(result) = r.try_get::<Option<String>, _>("result")? else {
        return Err(StoreError::FailedPrecondition(format!(
            "order {order_id} is stored in a month that was archived (its partition is detached)"
        )));
    };
    Ok(Some(StoredSplit {
        fingerprint: r.try_get("fingerprint")?,
        result: decode_result(&result)?,
    }))
}

/// One Compute inside an open transaction: the body shared by single and group commits.
async fn commit_one(
    tx: &mut Transaction<'_, Postgres>,
    plan: &SplitPlan,
    compute: ComputeFn<'_>,
) -> Result<CommitOutcome> {
    order_lock(tx, &plan.order_id).await?;
    if let Some(stored) = stored_split(&mut **tx, &plan.order_id).await? {
        return Ok(CommitOutcome::Existing(stored));
    }
    // Counters in a fixed order (merchant, then promoter) in every transaction, so
    // row locks are always taken in the same order and cannot deadlock.
    let merchant_month_prior = add_volume(tx, "merchant", &plan.merchant, plan).await?;
    let promoter_month_prior = match &plan.primary_promoter {
        Some(p) => add_volume(tx, "promoter", p, plan).await?,
        None => 0,
    };
    let first_order = sqlx::query(
        "INSERT INTO buyers (buyer, first_order_id) VALUES ($1, $2) ON CONFLICT (buyer) DO NOTHING",
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
    write_new(tx, &one, Keys::Insert).await?;
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

/// Group commit in bulk (see `store::batch`): a fixed number of statements per batch.
/// Locks are taken in one global order — order locks (sorted ids), then counter rows
/// (sorted keys, merchant before promoter), then buyer rows (sorted) — the order every
/// single-order transaction follows too, so concurrent batches cannot deadlock.
async fn commit_bulk(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[PendingSplit],
) -> Result<Vec<Result<CommitOutcome>>> {
    let mut phase = batch::Phases::start();
    // One statement takes every order lock (sorted ids, as the single-order path takes
    // its one) and claims every id's key: ON CONFLICT sees committed and in-flight keys
    // whatever the statement's snapshot, waiting for an in-flight one to commit. In the
    // common case every id is new and that is the whole read; ids already stored are
    // then read, with a fresh snapshot that sees them.
    let (ids, paid_at) = batch::order_keys(batch);
    let claimed: Vec<String> = sqlx::query_scalar(
        "WITH locks AS (
             SELECT pg_advisory_xact_lock(hashtextextended(o, 0))
             FROM UNNEST($1::text[]) WITH ORDINALITY AS x(o, n) ORDER BY n)
         INSERT INTO split_keys (order_id, paid_at)
         SELECT o, t FROM UNNEST($1::text[], $2::timestamptz[]) WITH ORDINALITY AS x(o, t, n)
         WHERE (SELECT count(*) FROM locks) >= 0
         ORDER BY n
         ON CONFLICT (order_id) DO NOTHING
         RETURNING order_id",
    )
    .bind(&ids)
    .bind(&paid_at)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored = HashMap::new();
    if claimed.len() < ids.len() {
        let claimed: HashSet<&str> = claimed.iter().map(String::as_str).collect();
        let known: Vec<&str> = ids
            .iter()
            .map(String::as_str)
            .filter(|id| !claimed.contains(id))
            .collect();
        let rows = sqlx::query(
            "SELECT k.order_id, s.fingerprint, s.result FROM split_keys k
             LEFT JOIN splits s ON s.order_id = k.order_id AND s.paid_at = k.paid_at
             WHERE k.order_id = ANY($1::text[])",
        )
        .bind(&known)
        .fetch_all(&mut **tx)
        .await?;
        for r in rows {
            let row = match r.try_get::<Option<String>, _>("result")? {
                Some(json) => batch::StoredRow::Split(Box::new(StoredSplit {
                    fingerprint: r.try_get("fingerprint")?,
                    result: decode_result(&json)?,
                })),
                None => batch::StoredRow::Archived,
            };
            stored.insert(r.try_get::<String, _>("order_id")?, row);
        }
        // A key that conflicted is committed, so the read above sees it; if it did not,
        // storing the order anyway could store it twice: fail the bulk attempt instead
        // (the batch is then stored one order per savepoint, under the order lock).
        if let Some(lost) = known.iter().find(|id| !stored.contains_key(**id)) {
            return Err(StoreError::Database(format!(
                "order {lost}: its key is taken but no stored split was read"
            )));
        }
    }
    let claims = batch::claims(batch, &stored);
    // A batch whose rule sets read no order history (no month ladder, no first_order
    // condition, no grades) moves its counters and claims its buyers at its end, after
    // its rows are written: concurrent batches then write side by side and queue only
    // for the counter rows' final statement and their commit. Otherwise the counters
    // are locked and read first, so each order sees the ones stored before it.
    let deferred = batch.iter().all(|p| !p.plan.ruleset.reads_order_history());
    let mut counters = HashMap::with_capacity(claims.counters.len());
    let mut new_buyers = HashSet::new();
    if !deferred && !claims.counters.is_empty() {
        for r in lock_counters(tx, &claims.counters).await? {
            let kind: String = r.try_get("kind")?;
            let kind = if kind == "merchant" {
                "merchant"
            } else {
                "promoter"
            };
            counters.insert(
                (
                    kind,
                    r.try_get("subject")?,
                    r.try_get("currency")?,
                    r.try_get("month")?,
                ),
                r.try_get::<i64, _>("amount")?,
            );
        }
        new_buyers.extend(claim_buyers(tx, &claims.buyers).await?);
    }
    phase.done("read");
    // Deferred, the counters read as 0 (the engine does not read them) and the plan's
    // counters are the batch's own sums.
    let mut plan = batch::plan(batch, stored, counters, &new_buyers)?;
    phase.done("engine");
    if !plan.new.is_empty() {
        if deferred {
            // The counters move in a statement of their own, after the rows: in the
            // write's statement their upsert would run first and hold the counter rows,
            // which every concurrent batch shares, while all the rows are inserted.
            let sums = std::mem::take(&mut plan.counters);
            write_new(tx, &plan, Keys::Claimed).await?;
            phase.done("write");
            add_to_counters(tx, &sums).await?;
            claim_buyers(tx, &claims.buyers).await?;
        } else {
            write_new(tx, &plan, Keys::Claimed).await?;
            phase.done("write");
        }
    }
    let mut upgraded = Vec::with_capacity(plan.new.len());
    for check in plan.grade_checks(batch) {
        let mut up = Vec::new();
        if let Some(g) = check {
            if check_grade(tx, g.ruleset, g.promoter, g.month, &g.cause, g.at).await? {
                up.push(g.promoter.to_string());
            }
        }
        upgraded.push(up);
    }
    // What follows the rows: deferred counters and buyers (the counter rows every
    // concurrent batch shares), grade checks.
    phase.done("counters");
    Ok(plan.outcomes(upgraded))
}

/// SQLSTATE of `prorata_store_batch` when an order of the batch is stored or being stored.
const BATCH_KEY_TAKEN: &str = "PR001";

/// A batch whose rule sets read no order history, in one call of `prorata_store_batch`
/// (migration 0006) outside any explicit transaction: one round trip for the order locks,
/// the keys, the rows, the counters, the buyers and the commit. The orders were computed
/// before the batch (`PendingSplit::new`), so everything the call writes is known before
/// it is sent. `Ok(None)` when the call stored nothing and the batch must be stored the
/// general way: an order's key is taken (a replay the result cache did not answer, or an
/// order stored by another replica), or the engine refused an order.
async fn store_batch(
    conns: &BatchConnections,
    batch: &[PendingSplit],
) -> Result<Option<Vec<Result<CommitOutcome>>>> {
    let mut phase = batch::Phases::start();
    // Every order new, no counter read (0), no buyer claimed: the plan's counters are the
    // batch's own sums, which the call adds.
    let Ok(plan) = batch::plan(batch, HashMap::new(), HashMap::new(), &HashSet::new()) else {
        return Ok(None);
    };
    phase.done("engine");
    let (ids, paid_at) = batch::order_keys(batch);
    let buyers = batch::claims(batch, &HashMap::new()).buyers;
    let (bb, bo): (Vec<&str>, Vec<&str>) =
        buyers.iter().map(|(b, o)| (b.as_str(), o.as_str())).unzip();
    let q = sqlx::query_with(
        "SELECT prorata_store_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
             $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30, $31, $32, $33,
             $34, $35)",
        plan_arguments(&plan),
    );
    let q = bind_sums(bind_rows(q, &plan), &plan.counters)
        .bind(&bb)
        .bind(&bo)
        .bind(&ids)
        .bind(&paid_at);
    phase.done("bind");
    let mut c = conns.take().await?;
    phase.done("connection");
    let done = q.execute(&mut c.conn).await;
    // Held again after a stored batch or a taken key (the function's own error, which
    // leaves the connection ready); after any other error, a new one is opened next time
    // (a terminated backend, for one, answers with a database error, 57P01).
    let key_taken = matches!(
        &done,
        Err(sqlx::Error::Database(d)) if d.code().as_deref() == Some(BATCH_KEY_TAKEN)
    );
    if done.is_ok() || key_taken {
        conns.put(c);
    }
    phase.done("call");
    match done {
        Ok(_) => {
            let upgraded = vec![Vec::new(); plan.new.len()];
            Ok(Some(plan.outcomes(upgraded)))
        }
        Err(_) if key_taken => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Makes every counter row of `counters` (sorted) exist and locks it, in that order;
/// returns the rows (`inserted`: made by this statement).
async fn lock_counters(
    tx: &mut Transaction<'_, Postgres>,
    counters: &[batch::CounterKey],
) -> Result<Vec<PgRow>> {
    let (k, s, c, m) = unzip4(counters);
    Ok(sqlx::query(
        "INSERT INTO volumes (kind, subject, currency, month, amount)
         SELECT k, s, c, m, 0 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS x(k, s, c, m, n) ORDER BY n
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount
         RETURNING kind, subject, currency, month, amount, xmax = 0 AS inserted",
    )
    .bind(&k)
    .bind(&s)
    .bind(&c)
    .bind(&m)
    .fetch_all(&mut **tx)
    .await?)
}

/// Takes, in the global lock order, the locks a batch stored one order per savepoint
/// would otherwise take order by order in arrival order: every order lock (sorted ids),
/// then every counter row (sorted). Two such batches whose orders name the same
/// merchants or promoters in a different order would deadlock; this way the second
/// waits for the first here instead. Returns the counter rows it made, which
/// [`drop_unused_counters`] removes again if no order of the batch moved them.
async fn lock_batch(
    tx: &mut Transaction<'_, Postgres>,
    batch: &[PendingSplit],
) -> Result<[Vec<String>; 4]> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(o, 0))
         FROM UNNEST($1::text[]) WITH ORDINALITY AS x(o, n) ORDER BY n",
    )
    .bind(batch::order_ids(batch))
    .execute(&mut **tx)
    .await?;
    let mut made: [Vec<String>; 4] = Default::default();
    for r in lock_counters(tx, &batch::claims(batch, &HashMap::new()).counters).await? {
        if r.try_get::<bool, _>("inserted")? {
            for (col, name) in made
                .iter_mut()
                .zip(["kind", "subject", "currency", "month"])
            {
                col.push(r.try_get(name)?);
            }
        }
    }
    Ok(made)
}

/// Deletes the counter rows [`lock_batch`] made that are still 0: the orders that
/// would have moved them were refused, and a refused order stores nothing.
async fn drop_unused_counters(
    tx: &mut Transaction<'_, Postgres>,
    made: &[Vec<String>; 4],
) -> Result<()> {
    if made[0].is_empty() {
        return Ok(());
    }
    sqlx::query(
        "DELETE FROM volumes v USING UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS x(k, s, c, m)
         WHERE v.kind = x.k AND v.subject = x.s AND v.currency = x.c AND v.month = x.m AND v.amount = 0",
    )
    .bind(&made[0])
    .bind(&made[1])
    .bind(&made[2])
    .bind(&made[3])
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Claims each buyer's first order (sorted by buyer); returns the buyers this
/// transaction claimed.
async fn claim_buyers(
    tx: &mut Transaction<'_, Postgres>,
    buyers: &[(String, String)],
) -> Result<Vec<String>> {
    if buyers.is_empty() {
        return Ok(Vec::new());
    }
    let (b, o): (Vec<&str>, Vec<&str>) =
        buyers.iter().map(|(b, o)| (b.as_str(), o.as_str())).unzip();
    Ok(sqlx::query_scalar(
        "INSERT INTO buyers (buyer, first_order_id)
         SELECT b, o FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS x(b, o, n) ORDER BY n
         ON CONFLICT (buyer) DO NOTHING RETURNING buyer",
    )
    .bind(&b)
    .bind(&o)
    .fetch_all(&mut **tx)
    .await?)
}

/// Adds a batch's sums to its counter rows, locking them in the order of `sums` (sorted,
/// the global lock order). A sum past i64 fails the statement: overflow is an error.
async fn add_to_counters(
    tx: &mut Transaction<'_, Postgres>,
    sums: &[(batch::CounterKey, i64)],
) -> Result<()> {
    if sums.is_empty() {
        return Ok(());
    }
    let q = sqlx::query(
        "INSERT INTO volumes (kind, subject, currency, month, amount)
         SELECT k, s, c, m, d FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[])
              WITH ORDINALITY AS x(k, s, c, m, d, n) ORDER BY n
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = volumes.amount + EXCLUDED.amount",
    );
    bind_sums(q, sums).execute(&mut **tx).await?;
    Ok(())
}

fn unzip4(keys: &[batch::CounterKey]) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let mut out = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, s, c, m) in keys {
        out.0.push(k.to_string());
        out.1.push(s.clone());
        out.2.push(c.clone());
        out.3.push(m.clone());
    }
    out
}

/// Binds counter rows with a value each, in the order of `sums`, as five arrays: kinds,
/// subjects, currencies, months, values.
fn bind_sums<'q>(
    q: Query<'q, Postgres, PgArguments>,
    sums: &'q [(batch::CounterKey, i64)],
) -> Query<'q, Postgres, PgArguments> {
    let n = sums.len();
    let (mut k, mut s, mut c, mut m, mut v) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for ((kind, subject, currency, month), value) in sums {
        k.push(*kind);
        s.push(subject.as_str());
        c.push(currency.as_str());
        m.push(month.as_str());
        v.push(*value);
    }
    q.bind(k).bind(s).bind(c).bind(m).bind(v)
}

/// Whether [`write_new`] inserts the orders' `split_keys` rows or finds them claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keys {
    /// Inserted with the rest (the single-order path, which holds the order lock).
    Insert,
    /// Claimed earlier in the transaction (the bulk path).
    Claimed,
}

/// Arguments sized up front for a plan's rows ([`bind_rows`]) and counters: the bound
/// arrays of a batch are tens of kilobytes (each result's JSON is one element), and a
/// buffer grown by doubling copied them several times (RESULTS.md §31).
fn plan_arguments(plan: &batch::Plan) -> PgArguments {
    // Per element: a 4-byte length and the value. Estimates, rounded up: a result is its
    // JSON and 320 bytes of short columns; a share or entry row 128 bytes; a counter 100.
    let rows: usize = plan
        .new
        .iter()
        .map(|n| n.json.len() + 320 + 128 * (n.result.totals.len() + n.entries.len()))
        .sum();
    let mut args = PgArguments::default();
    sqlx::Arguments::reserve(&mut args, 36, 1024 + rows + 100 * plan.counters.len());
    args
}

/// Binds the rows of a plan's new splits, `$1..$26` of [`write_new`] and of
/// `prorata_store_batch` (migration 0006): `$1..$13` results, `$14..$19` shares,
/// `$20..$26` ledger entries.
fn bind_rows<'q>(
    q: Query<'q, Postgres, PgArguments>,
    plan: &'q batch::Plan,
) -> Query<'q, Postgres, PgArguments> {
    let new = &plan.new;
    let col =
        |f: fn(&SplitResult) -> &str| -> Vec<&str> { new.iter().map(|n| f(&n.result)).collect() };
    // Shares: one row per account per order.
    let (mut sa, mut st, mut so, mut sc, mut sm, mut sv) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for n in new {
        let r = &n.result;
        for t in &r.totals {
            sa.push(t.account.to_string());
            st.push(r.paid_at);
            so.push(r.order_id.as_str());
            sc.push(r.currency.as_str());
            sm.push(t.amount);
            sv.push(r.ruleset_version as i64);
        }
    }
    // Ledger entries.
    let (mut ea, mut ec, mut em, mut ed, mut et, mut eo, mut ew) = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    for n in new {
        for e in &n.entries {
            ea.push(e.account.to_string());
            ec.push(e.currency.as_str());
            em.push(e.amount);
            ed.push(e.deferred);
            et.push(e.available_at);
            eo.push(n.result.order_id.as_str());
            ew.push(n.result.computed_at);
        }
    }
    q.bind(col(|r| &r.order_id))
        .bind(new.iter().map(|n| n.result.paid_at).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|n| n.fingerprint.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(col(|r| &r.merchant))
        .bind(col(|r| &r.buyer))
        .bind(col(|r| &r.currency))
        .bind(
            new.iter()
                .map(|n| n.result.ruleset_version as i64)
                .collect::<Vec<_>>(),
        )
        .bind(new.iter().map(|n| n.result.paid).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.result.sales).collect::<Vec<_>>())
        .bind(
            new.iter()
                .map(|n| n.result.primary_promoter.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(col(|r| &r.month))
        .bind(new.iter().map(|n| n.json.as_str()).collect::<Vec<_>>())
        .bind(new.iter().map(|n| n.result.computed_at).collect::<Vec<_>>())
        .bind(sa)
        .bind(st)
        .bind(so)
        .bind(sc)
        .bind(sm)
        .bind(sv)
        .bind(ea)
        .bind(ec)
        .bind(em)
        .bind(ed)
        .bind(et)
        .bind(eo)
        .bind(ew)
}

/// The rows of a batch's new splits and its counters' final values, in one statement
/// (one round trip): a data-modifying CTE per table. Foreign keys are checked at the end
/// of the statement, so `splits` may name the `split_keys` rows inserted beside it.
async fn write_new(
    tx: &mut Transaction<'_, Postgres>,
    plan: &batch::Plan,
    split_keys: Keys,
) -> Result<()> {
    let q = sqlx::query_with(
        "WITH keys AS (
             INSERT INTO split_keys (order_id, paid_at)
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) WHERE $32),
         results AS (
             INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version,
                                 paid, sales, primary_promoter, month, result, created_at)
             SELECT * FROM UNNEST($1::text[], $3::text[], $4::text[], $5::text[], $6::text[], $2::timestamptz[],
                                  $7::bigint[], $8::bigint[], $9::bigint[], $10::text[], $11::text[], $12::text[],
                                  $13::timestamptz[])),
         shares AS (
             INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
             SELECT * FROM UNNEST($14::text[], $15::timestamptz[], $16::text[], $17::text[], $18::bigint[],
                                  $19::bigint[])),
         ledger AS (
             INSERT INTO entries (account, currency, amount, deferred, available_at, source_kind, source_id,
                                  order_id, created_at)
             SELECT a, c, m, d, t, 'split', o, o, w
             FROM UNNEST($20::text[], $21::text[], $22::bigint[], $23::boolean[], $24::timestamptz[],
                         $25::text[], $26::timestamptz[]) WITH ORDINALITY AS x(a, c, m, d, t, o, w, n)
             ORDER BY n),
         events AS (
             -- In batch order: the relay publishes in outbox order. The body is the
             -- result stored above, read from splits (SPLIT_COMPUTED).
             INSERT INTO outbox (event_id, kind, key, body, created_at)
             SELECT 'split_computed:' || o, 'split_computed', o, '', w
             FROM UNNEST($1::text[], $13::timestamptz[]) WITH ORDINALITY AS x(o, w, n)
             ORDER BY n
             ON CONFLICT DO NOTHING)
         -- The counters' final values (their rows are locked by this transaction). An
         -- upsert, not UPDATE .. FROM: its conflict check probes the primary key whatever
         -- the planner's statistics say (a fresh table has none).
         INSERT INTO volumes (kind, subject, currency, month, amount)
         SELECT * FROM UNNEST($27::text[], $28::text[], $29::text[], $30::text[], $31::bigint[])
         ON CONFLICT (kind, subject, currency, month) DO UPDATE SET amount = EXCLUDED.amount",
        plan_arguments(plan),
    );
    bind_sums(bind_rows(q, plan), &plan.counters)
        .bind(split_keys == Keys::Insert)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn publish_ruleset(&self, new: NewRuleSet) -> Result<StoredRuleSet> {
        let mut tx = self.pool.begin().await?;
        // Serialise publishers so version numbers are dense and ordered.
        sqlx::query("LOCK TABLE rulesets IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await?;
        let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM rulesets")
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rulesets (version, effective_from, canary, document, sha256, published_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(next)
        .bind(new.effective_from)
        .bind(encode_canary(&new.canary))
        .bind(&new.document)
        .bind(&new.sha256)
        .bind(new.published_at)
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
        sqlx::query("SELECT * FROM rulesets WHERE version = $1")
            .bind(version as i64)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| ruleset_row(&r))
            .transpose()
    }

    async fn list_rulesets(&self, before: Option<u64>, limit: u32) -> Result<Vec<StoredRuleSet>> {
        let rows =
            sqlx::query("SELECT * FROM rulesets WHERE version < $1 ORDER BY version DESC LIMIT $2")
                .bind(before.map_or(i64::MAX, |b| b as i64))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(ruleset_row).collect()
    }

    async fn all_rulesets(&self) -> Result<Vec<StoredRuleSet>> {
        let rows = sqlx::query("SELECT * FROM rulesets ORDER BY version")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(ruleset_row).collect()
    }

    async fn get_upline(&self, id: &str, ancestors: u32) -> Result<Vec<PromoterNode>> {
        sqlx::query(UPLINE_SQL)
            .bind(id)
            .bind(i64::from(ancestors))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(promoter_row)
            .collect()
    }

    async fn get_binding(&self, customer: &str) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT promoter FROM bindings WHERE customer = $1")
                .bind(customer)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn upsert_promoter(
        &self,
        up: PromoterUpsert,
        rs: Option<Arc<RuleSet>>,
        now: DateTime<Utc>,
    ) -> Result<UpsertOutcome> {
        let mut tx = self.pool.begin().await?;
        network_lock(&mut tx).await?;
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
        let mut tx = self.pool.begin().await?;
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
        let mut tx = self.pool.begin().await.map_err(|e| wrap(0)(e.into()))?;
        network_lock(&mut tx).await.map_err(wrap(0))?;
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
        stored_split(&self.pool, order_id).await
    }

    async fn read_context(&self, plan: &SplitPlan) -> Result<Context> {
        let first: Option<String> =
            sqlx::query_scalar("SELECT first_order_id FROM buyers WHERE buyer = $1")
                .bind(&plan.buyer)
                .fetch_optional(&self.pool)
                .await?;
        let promoter_month_prior = match &plan.primary_promoter {
            Some(p) => read_volume(&self.pool, "promoter", p, plan).await?,
            None => 0,
        };
        Ok(Context {
            first_order: first.is_none(),
            promoter_month_prior,
            merchant_month_prior: read_volume(&self.pool, "merchant", &plan.merchant, plan).await?,
        })
    }

    async fn commit_split(
        &self,
        plan: &SplitPlan,
        compute: ComputeFn<'_>,
    ) -> Result<CommitOutcome> {
        let mut tx = self.pool.begin().await?;
        let out = commit_one(&mut tx, plan, compute).await?;
        match out {
            CommitOutcome::Stored { .. } => tx.commit().await?,
            CommitOutcome::Existing(_) => tx.rollback().await?,
        }
        Ok(out)
    }

    async fn commit_splits(&self, batch: &[PendingSplit]) -> Result<Vec<Result<CommitOutcome>>> {
        // One round trip when no rule set of the batch reads order history.
        if batch.iter().all(|p| !p.plan.ruleset.reads_order_history()) {
            let one_call = store_batch(&self.batch, batch).await;
            if let Ok(Some(out)) = one_call {
                return Ok(out);
            }
            metrics::counter!("prorata_group_commit_one_call_missed_total").increment(1);
            if let Err(e) = one_call {
                tracing::debug!(error = %e, orders = batch.len(), "one-call batch failed: storing it the general way");
            }
        }
        // A pooled connection and its BEGIN.
        let phase = batch::Phases::start();
        let mut tx = self.pool.begin().await?;
        phase.finish("begin");
        match commit_bulk(&mut tx, batch).await {
            Ok(out) => {
                let phase = batch::Phases::start();
                tx.commit().await?;
                phase.finish("commit");
                return Ok(out);
            }
            Err(e) => {
                tx.rollback().await?;
                metrics::counter!("prorata_group_commit_fallback_total").increment(1);
                tracing::debug!(error = %e, orders = batch.len(), "bulk commit failed: storing the batch one order per savepoint");
            }
        }
        let mut tx = self.pool.begin().await?;
        let made = lock_batch(&mut tx, batch).await?;
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
        drop_unused_counters(&mut tx, &made).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn list_splits(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<AccountSplit>> {
        let rows = sqlx::query(
            "SELECT order_id, paid_at, currency, amount, ruleset_version FROM split_accounts
             WHERE account = $1
               AND ($2::timestamptz IS NULL OR paid_at >= $2)
               AND ($3::timestamptz IS NULL OR paid_at < $3)
               AND ($4::timestamptz IS NULL OR (paid_at, order_id) < ($4, $5))
             ORDER BY paid_at DESC, order_id DESC LIMIT $6",
        )
        .bind(account)
        .bind(from)
        .bind(to)
        .bind(after.as_ref().map(|c| c.0))
        .bind(after.as_ref().map_or("", |c| c.1.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AccountSplit {
                    order_id: r.try_get("order_id")?,
                    paid_at: r.try_get("paid_at")?,
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
        let mut tx = self.pool.begin().await?;
        // The order's lock: refunds and redemptions of one order (and its Compute) queue.
        order_lock(&mut tx, req.order_id()).await?;
        let kind = kind_name(req.kind());
        let split_row = stored_split(&mut *tx, req.order_id()).await?;
        let existing = sqlx::query(
            "SELECT order_id, fingerprint, body FROM movements WHERE kind = $1 AND id = $2",
        )
        .bind(kind)
        .bind(req.id())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(StoredSplit { result: split, .. }) = split_row else {
            return Err(StoreError::NotFound(format!(
                "no split is stored for order {}",
                req.order_id()
            )));
        };
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
        let inserted = sqlx::query(
            "INSERT INTO movements (kind, id, order_id, fingerprint, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (kind, id) DO NOTHING",
        )
        .bind(kind)
        .bind(&m.id)
        .bind(&m.order_id)
        .bind(&m.fingerprint)
        .bind(&body)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // The same id was recorded concurrently for another order (the lock is per order).
            return Err(StoreError::AlreadyExists(format!(
                "{kind} {} was already recorded",
                req.id()
            )));
        }
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
                COALESCE(SUM(CASE WHEN e.deferred THEN e.amount ELSE 0 END), 0)::bigint AS deferred,
                COALESCE(SUM(CASE WHEN NOT e.deferred AND st.state IS NULL AND e.available_at > $2 THEN e.amount ELSE 0 END), 0)::bigint AS pending,
                COALESCE(SUM(CASE WHEN NOT e.deferred AND st.state IS NULL AND e.available_at <= $2 THEN e.amount ELSE 0 END), 0)::bigint AS available,
                COALESCE(SUM(CASE WHEN st.state = 'in_payout' THEN e.amount ELSE 0 END), 0)::bigint AS in_payout,
                COALESCE(SUM(CASE WHEN st.state = 'paid' THEN e.amount ELSE 0 END), 0)::bigint AS paid
             FROM entries e LEFT JOIN ({PAYOUT_STATE} AND p.account = $1) st ON st.entry_id = e.id
             WHERE e.account = $1 GROUP BY e.currency ORDER BY e.currency"
        );
        let rows = sqlx::query(&q)
            .bind(account)
            .bind(as_of)
            .fetch_all(&self.pool)
            .await?;
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
            "SELECT e.*, st.state AS state FROM entries e LEFT JOIN ({PAYOUT_STATE} AND p.account = $1) st ON st.entry_id = e.id
             WHERE e.account = $1 AND ($2::timestamptz IS NULL OR e.created_at >= $2)
               AND ($3::timestamptz IS NULL OR e.created_at < $3) AND e.id > $4 ORDER BY e.id LIMIT $5"
        );
        let rows = sqlx::query(&q)
            .bind(account)
            .bind(from)
            .bind(to)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PAYOUT_LOCK)
            .execute(&mut *tx)
            .await?;
        if let Some(r) =
            sqlx::query("SELECT fingerprint, body FROM payout_batches WHERE batch_id = $1")
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
             WHERE NOT e.deferred AND e.available_at <= $1
               AND NOT EXISTS (SELECT 1 FROM payout_entries p LEFT JOIN payout_confirmations c
                               ON c.batch_id = p.batch_id AND c.account = p.account
                               WHERE p.entry_id = e.id AND (c.outcome IS NULL OR c.outcome = 'paid'))
             ORDER BY e.account, e.currency, e.id",
        )
        .bind(as_of)
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
        sqlx::query("INSERT INTO payout_batches (batch_id, as_of, minimum, fingerprint, body, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(batch)
            .bind(as_of)
            .bind(minimum)
            .bind(&fp)
            .bind(&body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        // One row per entry settled: its account, currency and id.
        let (mut accounts, mut currencies, mut ids) = (Vec::new(), Vec::new(), Vec::new());
        for (i, entry_ids) in &groups {
            for id in entry_ids {
                accounts.push(i.account.as_str());
                currencies.push(i.currency.as_str());
                ids.push(*id);
            }
        }
        // The entry by its key (account, currency, id, created_at: migration 0008).
        sqlx::query(
            "INSERT INTO payout_entries (batch_id, account, currency, entry_id, entry_created_at)
             SELECT $1, x.a, x.c, x.e, en.created_at
             FROM UNNEST($2::text[], $3::text[], $4::bigint[]) AS x(a, c, e)
             JOIN entries en ON en.account = x.a AND en.currency = x.c AND en.id = x.e",
        )
        .bind(batch)
        .bind(&accounts)
        .bind(&currencies)
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
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
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(PAYOUT_LOCK)
            .execute(&mut *tx)
            .await?;
        let has: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM payout_entries WHERE batch_id = $1 AND account = $2 LIMIT 1",
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
            "SELECT outcome FROM payout_confirmations WHERE batch_id = $1 AND account = $2",
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
        sqlx::query("INSERT INTO payout_confirmations (batch_id, account, outcome, confirmed_at) VALUES ($1, $2, $3, $4)")
            .bind(batch)
            .bind(account)
            .bind(outcome.as_str())
            .bind(now)
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
             WHERE o.published_at IS NULL ORDER BY o.seq LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                super::outbox_row(
                    r.try_get("seq")?,
                    r.try_get("event_id")?,
                    r.try_get("kind")?,
                    r.try_get("key")?,
                    r.try_get("body")?,
                    r.try_get("result")?,
                    r.try_get("created_at")?,
                )
            })
            .collect()
    }

    async fn outbox_mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE outbox SET published_at = $1 WHERE seq = ANY($2)")
            .bind(now)
            .bind(seqs)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn outbox_pending(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn order_ids(&self, after: &str, limit: u32) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT order_id FROM split_keys WHERE order_id COLLATE \"C\" > $1 ORDER BY order_id COLLATE \"C\" LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?)
    }

    async fn order_state(&self, order_id: &str, now: DateTime<Utc>) -> Result<Option<OrderState>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let Some(split) = stored_split(&mut *tx, order_id).await? else {
            return Ok(None);
        };
        let movements = load_movements(&mut tx, order_id).await?;
        let q = format!("SELECT e.*, ({PAYOUT_STATE_OF_ENTRY}) AS state FROM entries e WHERE e.order_id = $1 ORDER BY e.id");
        let rows = sqlx::query(&q).bind(order_id).fetch_all(&mut *tx).await?;
        let entries = rows
            .iter()
            .map(|r| entry_row(r, now))
            .collect::<Result<_>>()?;
        tx.commit().await?;
        Ok(Some(OrderState {
            split,
            movements,
            entries,
        }))
    }

    async fn accounts(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT account FROM entries ORDER BY account")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn prepare_months(&self, now: DateTime<Utc>) -> Result<u32> {
        let made: i32 = sqlx::query_scalar("SELECT prorata_prepare_months($1, 1, 2)")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(made.max(0) as u32)
    }

    async fn outbox_prune(&self, keep: i64) -> Result<u64> {
        let r = sqlx::query(
            "DELETE FROM outbox WHERE seq <= (SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET $1)",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }
}
