//! SQLite backend: the embedded default (a file in WAL mode).
//!
//! SQLite has one writer at a time, so writes go through a pool of exactly one
//! connection: write transactions queue in the pool instead of failing with SQLITE_BUSY,
//! and a transaction that reads a volume counter is alone until it commits. Reads use a
//! separate pool and never wait for writers (WAL). `synchronous = FULL`: a commit is on
//! disk before Compute answers.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::*;
use crate::domain::engine::{self, Context};
use crate::domain::grades::{self, GradeFacts};
use crate::domain::money::Currency;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset::RuleSet;

/// Connections of the read pool.
const READ_CONNECTIONS: u32 = 8;
/// How long a connection waits for a lock held by another process before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
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
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Closes both pools.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
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
                .bind(g)
                .bind(us(now))
                .bind(id)
                .execute(&mut **tx)
                .await?;
            Ok(true)
        }
        None => Ok(false),
    }
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
        if check_grade(tx, rs, p, &engine::month_key(now, rs), now).await? {
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
        let mut tx = self.writer.begin().await?;
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

    async fn get_promoter(&self, id: &str) -> Result<Option<PromoterNode>> {
        sqlx::query("SELECT id, parent, grade, status FROM promoters WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?
            .map(|r| promoter_row(&r))
            .transpose()
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
        let mut tx = self.writer.begin().await?;
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
        let mut tx = self.writer.begin().await?;
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
        let mut tx = self.writer.begin().await.map_err(|e| wrap(0)(e.into()))?;
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
        let mut tx = self.writer.begin().await?;
        let existing = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = ?")
            .bind(&plan.order_id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(r) = existing {
            let stored = StoredSplit {
                fingerprint: r.try_get("fingerprint")?,
                result: decode_result(r.try_get("result")?)?,
            };
            tx.rollback().await?;
            return Ok(CommitOutcome::Existing(stored));
        }
        // Counters in a fixed order (merchant, then promoter) in every transaction.
        let merchant_month_prior = add_volume(&mut tx, "merchant", &plan.merchant, plan).await?;
        let promoter_month_prior = match &plan.primary_promoter {
            Some(p) => add_volume(&mut tx, "promoter", p, plan).await?,
            None => 0,
        };
        let first_order = sqlx::query("INSERT INTO buyers (buyer, first_order_id) VALUES (?, ?) ON CONFLICT (buyer) DO NOTHING")
            .bind(&plan.buyer)
            .bind(&plan.order_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
        let ctx = Context {
            first_order,
            promoter_month_prior,
            merchant_month_prior,
        };
        let result = compute(&ctx)?;
        let json = encode_result(&result)?;
        sqlx::query(
            "INSERT INTO splits (order_id, fingerprint, merchant, buyer, currency, paid_at, ruleset_version, paid,
                                 sales, primary_promoter, month, result, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&result.order_id)
        .bind(&plan.fingerprint)
        .bind(&result.merchant)
        .bind(&result.buyer)
        .bind(&result.currency)
        .bind(us(result.paid_at))
        .bind(result.ruleset_version as i64)
        .bind(result.paid)
        .bind(result.sales)
        .bind(&result.primary_promoter)
        .bind(&result.month)
        .bind(&json)
        .bind(us(result.computed_at))
        .execute(&mut *tx)
        .await?;
        for t in &result.totals {
            sqlx::query(
                "INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(t.account.to_string())
            .bind(us(result.paid_at))
            .bind(&result.order_id)
            .bind(&result.currency)
            .bind(t.amount)
            .bind(result.ruleset_version as i64)
            .execute(&mut *tx)
            .await?;
        }
        let mut upgraded = Vec::new();
        if let Some(p) = &plan.primary_promoter {
            if check_grade(&mut tx, &plan.ruleset, p, &plan.month, result.computed_at).await? {
                upgraded.push(p.clone());
            }
        }
        tx.commit().await?;
        Ok(CommitOutcome::Stored { result, upgraded })
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
}
