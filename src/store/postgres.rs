//! PostgreSQL backend: production storage shared by every replica.
//!
//! Concurrency is settled by the database, not by the process: Compute takes a
//! transaction-scoped advisory lock on its order id (concurrent duplicates queue and then
//! see the stored row), volume counters are moved with `INSERT .. ON CONFLICT DO UPDATE ..
//! RETURNING` (the row stays locked until commit, so two orders of one promoter never read
//! the same prior volume), and structural network changes take one advisory lock so two
//! concurrent moves cannot form a cycle together. Commits are synchronous.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};

use super::*;
use crate::domain::engine::{self, Context};
use crate::domain::grades::{self, GradeFacts};
use crate::domain::money::Currency;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset::RuleSet;

/// How long a caller waits for a pooled connection before UNAVAILABLE.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Advisory lock key serialising structural network changes ("prorata1" in ASCII).
const NETWORK_LOCK: i64 = 0x7072_6f72_6174_6131;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
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
                .bind(g)
                .bind(now)
                .bind(id)
                .execute(&mut **tx)
                .await?;
            Ok(true)
        }
        None => Ok(false),
    }
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

    async fn get_promoter(&self, id: &str) -> Result<Option<PromoterNode>> {
        sqlx::query("SELECT id, parent, grade, status FROM promoters WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| promoter_row(&r))
            .transpose()
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
        let row = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&self.pool)
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
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&plan.order_id)
            .execute(&mut *tx)
            .await?;
        let existing = sqlx::query("SELECT fingerprint, result FROM splits WHERE order_id = $1")
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
        // Counters in a fixed order (merchant, then promoter) in every transaction, so
        // row locks are always taken in the same order and cannot deadlock.
        let merchant_month_prior = add_volume(&mut tx, "merchant", &plan.merchant, plan).await?;
        let promoter_month_prior = match &plan.primary_promoter {
            Some(p) => add_volume(&mut tx, "promoter", p, plan).await?,
            None => 0,
        };
        let first_order =
            sqlx::query("INSERT INTO buyers (buyer, first_order_id) VALUES ($1, $2) ON CONFLICT (buyer) DO NOTHING")
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&result.order_id)
        .bind(&plan.fingerprint)
        .bind(&result.merchant)
        .bind(&result.buyer)
        .bind(&result.currency)
        .bind(result.paid_at)
        .bind(result.ruleset_version as i64)
        .bind(result.paid)
        .bind(result.sales)
        .bind(&result.primary_promoter)
        .bind(&result.month)
        .bind(&json)
        .bind(result.computed_at)
        .execute(&mut *tx)
        .await?;
        let accounts: Vec<String> = result
            .totals
            .iter()
            .map(|t| t.account.to_string())
            .collect();
        let amounts: Vec<i64> = result.totals.iter().map(|t| t.amount).collect();
        sqlx::query(
            "INSERT INTO split_accounts (account, paid_at, order_id, currency, amount, ruleset_version)
             SELECT a, $3, $4, $5, m, $6 FROM UNNEST($1::text[], $2::bigint[]) AS t(a, m)",
        )
        .bind(&accounts)
        .bind(&amounts)
        .bind(result.paid_at)
        .bind(&result.order_id)
        .bind(&result.currency)
        .bind(result.ruleset_version as i64)
        .execute(&mut *tx)
        .await?;
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
}
