//! Storage: one trait, two real backends (SQLite, the embedded default, and PostgreSQL).
//!
//! Both implement [`Store`] with runtime queries (no compile-time database), their own
//! migrations (`migrations/sqlite`, `migrations/postgres`), and pass one shared test suite
//! (`tests/store_suite.rs`). Results are immutable rows keyed by order id; the volume
//! counters an order reads are moved in the same transaction that stores its result.

mod batch;
pub mod postgres;
pub mod result_json;
pub mod sqlite;
mod sqlite_bulk;
mod wal_sync;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::engine::{Context, EngineError};
use crate::domain::ledger::{Balance, PayoutBatch, PayoutOutcome};
use crate::domain::lifecycle::{LifecycleError, Movement, MovementKind};
use crate::domain::network::{PromoterNode, Status};
use crate::domain::ruleset::RuleSet;
use crate::domain::split::{InvariantViolation, SplitResult};

/// Most items one network import may carry.
pub const MAX_IMPORT_ITEMS: usize = 2_000_000;
/// Deepest ancestor walk of the cycle check; deeper than any real network, it bounds a
/// corrupted one.
pub const MAX_CYCLE_WALK: i64 = 1_000_000;

/// What can go wrong in a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A referenced row does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change would break a rule of the data (a cycle in the network).
    #[error("{0}")]
    FailedPrecondition(String),
    /// An id is taken by other content.
    #[error("{0}")]
    AlreadyExists(String),
    /// A refund or redemption is refused in the order's state.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The engine refused the order inside the transaction.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A stored row breaks a money invariant.
    #[error(transparent)]
    Invariant(#[from] InvariantViolation),
    /// The database could not be reached or timed out.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::Io(_)
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(e.to_string()),
            // Deadlock or serialisation failure: nothing was stored; the caller may retry.
            sqlx::Error::Database(ref d)
                if matches!(d.code().as_deref(), Some("40P01" | "40001")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            // The connection, not the request: classes 08 (connection exception) and 57
            // (operator intervention: a backend terminated, the server shutting down or
            // starting). A retry is safe: every write is idempotent by its key, so one
            // whose COMMIT was lost with the connection answers what was stored.
            sqlx::Error::Database(ref d)
                if d.code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Database(e.to_string())
    }
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A published rule-set version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRuleSet {
    /// Version number.
    pub version: u64,
    /// When it starts.
    pub effective_from: Option<DateTime<Utc>>,
    /// Canary merchants.
    pub canary: Option<Vec<String>>,
    /// The document as published.
    pub document: String,
    /// SHA-256 of the document.
    pub sha256: String,
    /// When it was published.
    pub published_at: DateTime<Utc>,
}

/// A new version to publish.
#[derive(Debug, Clone)]
pub struct NewRuleSet {
    /// When it starts.
    pub effective_from: Option<DateTime<Utc>>,
    /// Canary merchants.
    pub canary: Option<Vec<String>>,
    /// The document.
    pub document: String,
    /// SHA-256 of the document.
    pub sha256: String,
    /// Publication time.
    pub published_at: DateTime<Utc>,
}

/// A promoter change: `None` keeps the stored value; `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct PromoterUpsert {
    /// Id.
    pub id: String,
    /// New parent.
    pub parent: Option<Option<String>>,
    /// New grade.
    pub grade: Option<Option<String>>,
    /// New status.
    pub status: Option<Status>,
}

/// The outcome of an upsert.
#[derive(Debug, Clone)]
pub struct UpsertOutcome {
    /// The promoter as stored now.
    pub promoter: PromoterNode,
    /// It did not exist before.
    pub created: bool,
    /// Promoters whose stored row changed (the promoter, an upgraded parent).
    pub changed: Vec<String>,
}

/// One item of a network import.
#[derive(Debug, Clone)]
pub enum ImportItem {
    /// A promoter upsert.
    Promoter(PromoterUpsert),
    /// A customer binding.
    Binding {
        /// Customer.
        customer: String,
        /// Promoter.
        promoter: String,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Promoters upserted.
    pub promoters: u64,
    /// Bindings written.
    pub bindings: u64,
}

/// An import item that failed, with its index.
#[derive(Debug, thiserror::Error)]
#[error("items[{index}]: {error}")]
pub struct ImportError {
    /// Position in the stream.
    pub index: usize,
    /// Why.
    pub error: StoreError,
}

/// What a Compute needs to lock and move in its transaction.
#[derive(Debug, Clone)]
pub struct SplitPlan {
    /// Order id.
    pub order_id: String,
    /// Content fingerprint.
    pub fingerprint: String,
    /// Merchant.
    pub merchant: String,
    /// Buyer.
    pub buyer: String,
    /// Currency code.
    pub currency: String,
    /// Calendar month of the counters ("2026-11").
    pub month: String,
    /// Primary promoter, whose month volume moves.
    pub primary_promoter: Option<String>,
    /// The order's sales (minor units).
    pub sales: i64,
    /// Payment time.
    pub paid_at: DateTime<Utc>,
    /// The rule set the order is computed under (its grades drive upgrades).
    pub ruleset: Arc<RuleSet>,
}

/// A stored split.
#[derive(Debug, Clone)]
pub struct StoredSplit {
    /// Fingerprint of the order content.
    pub fingerprint: String,
    /// The result exactly as stored.
    pub result: SplitResult,
}

/// The outcome of [`Store::commit_split`].
#[derive(Debug, Clone)]
pub enum CommitOutcome {
    /// This call stored the result; `upgraded` lists promoters whose grade rose.
    Stored {
        /// The result.
        result: SplitResult,
        /// Promoters upgraded by this order.
        upgraded: Vec<String>,
    },
    /// A result was already stored under the order id (replay or conflict).
    Existing(StoredSplit),
}

/// A split as listed for an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSplit {
    /// Order id.
    pub order_id: String,
    /// Payment time.
    pub paid_at: DateTime<Utc>,
    /// Currency code.
    pub currency: String,
    /// The account's total in the order.
    pub amount: i64,
    /// Rule-set version.
    pub ruleset_version: u64,
}

/// Position after which a listing continues: (paid_at, order_id) of the last row.
pub type Cursor = (DateTime<Utc>, String);

/// An engine call that owns what it needs (for group commit, across tasks).
pub type OwnedComputeFn =
    Box<dyn Fn(&Context) -> std::result::Result<SplitResult, EngineError> + Send + Sync>;

/// One Compute waiting for a group commit: its plan and the engine call to run with the
/// state read inside the shared transaction.
pub struct PendingSplit {
    /// What to lock and move.
    pub plan: SplitPlan,
    /// The engine, with everything it needs but the context.
    pub compute: OwnedComputeFn,
    /// The result computed and encoded before the batch, when the rule set reads no order
    /// history (see [`PendingSplit::new`]); taken by the first bulk attempt.
    ready: std::sync::Mutex<Option<batch::NewSplit>>,
}

impl PendingSplit {
    /// A Compute for group commit. When its rule set reads no order history
    /// ([`RuleSet::reads_order_history`]), no state of the transaction can change its
    /// result, so the engine runs here, on the caller's task and in parallel with other
    /// callers, and the result is encoded here too: the batch, which runs one at a time
    /// on SQLite's one writer, only writes it. Otherwise (or if the engine refuses the
    /// order here) the batch runs the engine with the state it read, as before. The
    /// result is the same either way: `engine::tests` checks that a rule set reading no
    /// history gives the same split under any context.
    pub fn new(plan: SplitPlan, compute: OwnedComputeFn) -> PendingSplit {
        let ready = if plan.ruleset.reads_order_history() {
            None
        } else {
            compute(&Context::default())
                .ok()
                .and_then(|r| batch::NewSplit::new(plan.fingerprint.clone(), r).ok())
        };
        PendingSplit {
            plan,
            compute,
            ready: std::sync::Mutex::new(ready),
        }
    }

    /// The result computed before the batch, once.
    fn take_ready(&self) -> Option<batch::NewSplit> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

impl std::fmt::Debug for PendingSplit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSplit")
            .field("order_id", &self.plan.order_id)
            .finish()
    }
}

/// The engine callback run inside the commit transaction with the state it read.
pub type ComputeFn<'a> =
    &'a (dyn Fn(&Context) -> std::result::Result<SplitResult, EngineError> + Send + Sync);

/// A refund or redemption to record; planned inside the store's transaction against the
/// order's state as it is then.
pub trait MovementRequest: Send + Sync {
    /// Refund or redemption.
    fn kind(&self) -> MovementKind;
    /// Refund id or redemption id.
    fn id(&self) -> &str;
    /// The order.
    fn order_id(&self) -> &str;
    /// Fingerprint of the request content (amounts read in the order's currency).
    fn fingerprint(&self, order: &SplitResult) -> Result<String, LifecycleError>;
    /// The movement, given the order and the movements recorded so far.
    fn plan(
        &self,
        order: &SplitResult,
        movements: &[Movement],
        fingerprint: String,
        now: DateTime<Utc>,
    ) -> Result<Movement, LifecycleError>;
}

/// The outcome of [`Store::record_movement`].
#[derive(Debug, Clone)]
pub enum MovementOutcome {
    /// Recorded now.
    Stored(Movement),
    /// Recorded earlier with the same content: the stored movement.
    Replayed(Movement),
}

/// An entry as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRow {
    /// Entry id (increasing).
    pub id: i64,
    /// Account.
    pub account: String,
    /// Currency code.
    pub currency: String,
    /// Signed minor units.
    pub amount: i64,
    /// `deferred`, `pending`, `available`, `in_payout` or `paid` at the time of reading.
    pub status: &'static str,
    /// Availability time.
    pub available_at: Option<DateTime<Utc>>,
    /// `split`, `refund` or `redemption`.
    pub source_kind: String,
    /// Order id, refund id or redemption id.
    pub source_id: String,
    /// The order.
    pub order_id: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Derives an entry's status from its payout state and the reading time.
pub fn entry_status(
    deferred: bool,
    payout_state: Option<&str>,
    available_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> &'static str {
    match (deferred, payout_state) {
        (true, _) => "deferred",
        (false, Some("paid")) => "paid",
        (false, Some(_)) => "in_payout",
        (false, None) if available_at.is_some_and(|t| t <= now) => "available",
        _ => "pending",
    }
}

/// An unpublished event of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Position in the outbox.
    pub seq: i64,
    /// Unique event id (the broker's de-duplication id).
    pub event_id: String,
    /// `split_computed`, `refund`, `redemption`, `payout_created`, `payout_confirmed`, `grade_changed`.
    pub kind: String,
    /// Ordering key (order id, batch id, promoter id).
    pub key: String,
    /// JSON body. A split_computed row stores none (see [`SPLIT_COMPUTED`]): it is read
    /// from the split's stored result.
    pub body: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// Kind of the event of a stored split. Its outbox row stores an empty body: the body is
/// the split's stored result (`splits.result`, keyed by the row's key, the order id),
/// joined in when the outbox is read, so that a result is written once, not twice.
pub const SPLIT_COMPUTED: &str = "split_computed";

/// An outbox row as read with its split's result joined in: the row, or an error when a
/// split_computed row's split is not stored (its month detached before it was published).
fn outbox_row(
    seq: i64,
    event_id: String,
    kind: String,
    key: String,
    body: String,
    split_result: Option<String>,
    created_at: DateTime<Utc>,
) -> Result<OutboxRow, StoreError> {
    let body = if kind == SPLIT_COMPUTED {
        split_result.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "outbox event {event_id}: split {key} is not stored (is its month detached?)"
            ))
        })?
    } else {
        body
    };
    Ok(OutboxRow {
        seq,
        event_id,
        kind,
        key,
        body,
        created_at,
    })
}

/// The body of a grade_changed event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GradeChange {
    /// Promoter.
    pub promoter: String,
    /// New grade.
    pub grade: String,
    /// The order or network change that caused it.
    pub cause: String,
    /// When.
    pub at: DateTime<Utc>,
}

impl GradeChange {
    /// The outbox row of `promoter` reaching `grade`: its event id and JSON body.
    pub(crate) fn event(
        promoter: &str,
        grade: &str,
        cause: &str,
        at: DateTime<Utc>,
    ) -> Result<(String, String)> {
        let change = GradeChange {
            promoter: promoter.into(),
            grade: grade.into(),
            cause: cause.into(),
            at,
        };
        let body =
            serde_json::to_string(&change).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok((format!("grade_changed:{promoter}:{grade}"), body))
    }
}

/// The body of a payout_confirmed event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PayoutConfirmation {
    /// Batch.
    pub batch_id: String,
    /// Account.
    pub account: String,
    /// Outcome.
    pub outcome: PayoutOutcome,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything stored about one order (for reconciliation).
#[derive(Debug, Clone)]
pub struct OrderState {
    /// The split.
    pub split: StoredSplit,
    /// Reversals and redemptions.
    pub movements: Vec<Movement>,
    /// Its entries.
    pub entries: Vec<EntryRow>,
}

/// The storage interface. Every method is a complete unit of work.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgres".
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    /// Publishes the next version number.
    async fn publish_ruleset(&self, new: NewRuleSet) -> Result<StoredRuleSet>;
    /// A version by number.
    async fn get_ruleset(&self, version: u64) -> Result<Option<StoredRuleSet>>;
    /// Versions below `before` (all when `None`), newest first, at most `limit`.
    async fn list_rulesets(&self, before: Option<u64>, limit: u32) -> Result<Vec<StoredRuleSet>>;
    /// Every version, oldest first.
    async fn all_rulesets(&self) -> Result<Vec<StoredRuleSet>>;

    /// A promoter and up to `ancestors` of its ancestors, nearest first, in one query;
    /// empty when the promoter does not exist. The walk stops at a root, at a missing
    /// parent, and after `ancestors` steps whatever the rows say.
    async fn get_upline(&self, id: &str, ancestors: u32) -> Result<Vec<PromoterNode>>;
    /// The promoter a customer is bound to.
    async fn get_binding(&self, customer: &str) -> Result<Option<String>>;
    /// Creates or updates a promoter; unknown parent is NotFound, a cycle is
    /// FailedPrecondition. Grades of `ruleset` are checked for the new parent.
    async fn upsert_promoter(
        &self,
        up: PromoterUpsert,
        ruleset: Option<Arc<RuleSet>>,
        now: DateTime<Utc>,
    ) -> Result<UpsertOutcome>;
    /// Binds a customer; unknown promoter is NotFound.
    async fn bind_customer(&self, customer: &str, promoter: &str, now: DateTime<Utc>)
        -> Result<()>;
    /// Applies every item in one transaction, or none.
    async fn import_network(
        &self,
        items: Vec<ImportItem>,
        ruleset: Option<Arc<RuleSet>>,
        now: DateTime<Utc>,
    ) -> std::result::Result<ImportSummary, ImportError>;

    /// A stored split.
    async fn get_split(&self, order_id: &str) -> Result<Option<StoredSplit>>;
    /// The state a computation reads, without locking or moving anything (Preview).
    async fn read_context(&self, plan: &SplitPlan) -> Result<Context>;
    /// In one transaction: if the order id is taken, returns what is stored; otherwise
    /// moves the volume counters, runs `compute` with the state it read, checks the
    /// money invariants, stores the result, and applies grade upgrades.
    async fn commit_split(&self, plan: &SplitPlan, compute: ComputeFn<'_>)
        -> Result<CommitOutcome>;
    /// [`Store::commit_split`] for many orders in one transaction (group commit), each in
    /// its own savepoint. The outer error fails the whole batch (nothing was stored).
    async fn commit_splits(&self, batch: &[PendingSplit]) -> Result<Vec<Result<CommitOutcome>>>;
    /// [`Store::commit_splits`] that may return once the batch is committed but before it
    /// is durable, with a ticket: nobody may hear of the batch's results until
    /// [`Store::durable`] of that ticket has returned `Ok`. Group commit writes the next
    /// batch meanwhile. By default the batch is durable on return (ticket 0).
    async fn commit_splits_staged(
        &self,
        batch: &[PendingSplit],
    ) -> Result<(Vec<Result<CommitOutcome>>, u64)> {
        Ok((self.commit_splits(batch).await?, 0))
    }
    /// Returns once every batch up to `ticket` of [`Store::commit_splits_staged`] is durable.
    async fn durable(&self, _ticket: u64) -> Result<()> {
        Ok(())
    }
    /// A failure the store cannot recover from without a restart (SQLite: a failed sync of
    /// its WAL), which health then reports as NOT_SERVING. `None` by default.
    fn failed(&self) -> Option<String> {
        None
    }
    /// Returns once the sync that will make `ticket` durable has started, so that a batch
    /// committed after it is not covered by it (group commit paces its batches on this).
    async fn sync_started(&self, _ticket: u64) {}
    /// Splits where `account` holds a share with from ≤ paid_at < to, newest first.
    async fn list_splits(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after: Option<Cursor>,
        limit: u32,
    ) -> Result<Vec<AccountSplit>>;

    /// Records a refund or redemption in one transaction with its entries, the volume
    /// counters it moves and its event. NotFound when the order is not stored.
    async fn record_movement(
        &self,
        req: &dyn MovementRequest,
        now: DateTime<Utc>,
    ) -> Result<MovementOutcome>;
    /// Balances of an account per currency at `as_of`.
    async fn balances(&self, account: &str, as_of: DateTime<Utc>) -> Result<Vec<Balance>>;
    /// Entries of an account created in [from, to), after entry id `after`, oldest first.
    async fn list_entries(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        after: i64,
        limit: u32,
        now: DateTime<Utc>,
    ) -> Result<Vec<EntryRow>>;
    /// Creates a payout batch of every account's available entries (idempotent by id;
    /// batches are serialised, so no entry is ever in two live batches). Returns the batch
    /// and whether it was stored earlier.
    /// `as_of: None` means `now`; the fingerprint is of what the caller sent, so an
    /// identical retry without `as_of` is a replay.
    async fn create_payout(
        &self,
        batch: &str,
        as_of: Option<DateTime<Utc>>,
        minimum: i64,
        now: DateTime<Utc>,
    ) -> Result<(PayoutBatch, bool)>;
    /// Confirms an account's instruction in a batch. Returns true for a replay.
    async fn confirm_payout(
        &self,
        batch: &str,
        account: &str,
        outcome: PayoutOutcome,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// The oldest unpublished events.
    async fn outbox_unpublished(&self, limit: u32) -> Result<Vec<OutboxRow>>;
    /// Marks events published.
    async fn outbox_mark_published(&self, seqs: &[i64], now: DateTime<Utc>) -> Result<()>;
    /// Unpublished events.
    async fn outbox_pending(&self) -> Result<i64>;
    /// Deletes the oldest events beyond the newest `keep` (published or not); returns how
    /// many were deleted. Used only when no broker is configured, to bound the outbox.
    async fn outbox_prune(&self, keep: i64) -> Result<u64>;
    /// Makes sure the month partitions around `now` exist (one month back, two ahead) and
    /// returns how many were made. PostgreSQL only; the embedded SQLite file has none.
    async fn prepare_months(&self, _now: DateTime<Utc>) -> Result<u32> {
        Ok(0)
    }
    /// Order ids after `after`, ascending.
    async fn order_ids(&self, after: &str, limit: u32) -> Result<Vec<String>>;
    /// Everything stored about an order.
    async fn order_state(&self, order_id: &str, now: DateTime<Utc>) -> Result<Option<OrderState>>;
    /// Every account that has entries.
    async fn accounts(&self) -> Result<Vec<String>>;
}

/// Fingerprint of a payout request.
pub fn payout_fingerprint(as_of: Option<DateTime<Utc>>, minimum: i64) -> String {
    let as_of = as_of.map_or_else(|| "now".to_string(), |t| t.timestamp_micros().to_string());
    crate::domain::fingerprint::sha256_hex(format!("as_of={as_of}\nminimum={minimum}").as_bytes())
}

/// Decodes a stored movement and checks it.
pub(crate) fn decode_movement(json: &str) -> Result<Movement> {
    let m: Movement = serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    m.check()?;
    Ok(m)
}

/// The event id and kind of a movement.
pub(crate) fn movement_event(m: &Movement) -> (String, &'static str) {
    match m.kind {
        MovementKind::Refund => (format!("refund:{}", m.id), "refund"),
        MovementKind::Redemption => (format!("redemption:{}", m.id), "redemption"),
    }
}

/// The stored name of a movement kind.
pub(crate) fn kind_name(k: MovementKind) -> &'static str {
    match k {
        MovementKind::Refund => "refund",
        MovementKind::Redemption => "redemption",
    }
}

/// Decodes a stored result and checks its invariants (after every read).
pub(crate) fn decode_result(json: &str) -> Result<SplitResult> {
    let r: SplitResult =
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    r.check()?;
    Ok(r)
}

/// Encodes a result for storage after checking its invariants (before every write).
pub(crate) fn encode_result(r: &SplitResult) -> Result<String> {
    r.check()?;
    Ok(result_json::write(r))
}

/// Parses a stored canary column.
pub(crate) fn decode_canary(s: Option<String>) -> Result<Option<Vec<String>>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// Encodes a canary column.
pub(crate) fn encode_canary(c: &Option<Vec<String>>) -> Option<String> {
    c.as_ref()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
}

/// Parses a stored status.
pub(crate) fn decode_status(s: &str) -> Result<Status> {
    s.parse().map_err(StoreError::Corrupt)
}

/// Applies an upsert to what is stored (or to a new promoter).
pub(crate) fn merge_upsert(existing: Option<&PromoterNode>, up: &PromoterUpsert) -> PromoterNode {
    PromoterNode {
        id: up.id.clone(),
        parent: match &up.parent {
            Some(p) => p.clone(),
            None => existing.and_then(|e| e.parent.clone()),
        },
        grade: match &up.grade {
            Some(g) => g.clone(),
            None => existing.and_then(|e| e.grade.clone()),
        },
        status: up
            .status
            .or(existing.map(|e| e.status))
            .unwrap_or(Status::Active),
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;
    use std::borrow::Cow;

    /// A database error with a given SQLSTATE, as sqlx reports a server's ErrorResponse.
    #[derive(Debug)]
    struct Sqlstate(&'static str);

    impl std::fmt::Display for Sqlstate {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for Sqlstate {}

    impl sqlx::error::DatabaseError for Sqlstate {
        fn message(&self) -> &str {
            "from the server"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn mapped(code: &'static str) -> StoreError {
        sqlx::Error::Database(Box::new(Sqlstate(code))).into()
    }

    #[test]
    fn a_lost_or_terminated_connection_is_unavailable_and_a_bad_statement_is_not() {
        // 57P01: a backend terminated (pg_terminate_backend, a restart); 57P03: the server
        // is starting; 08006: the connection failed; 40P01: a deadlock.
        for code in ["57P01", "57P03", "08006", "40P01", "40001"] {
            assert!(
                matches!(mapped(code), StoreError::Unavailable(_)),
                "{code}: {:?}",
                mapped(code)
            );
        }
        // A constraint or a value the statement got wrong is a fault, not a retry.
        for code in ["23505", "22003", "42P01", "PR001"] {
            assert!(
                matches!(mapped(code), StoreError::Database(_)),
                "{code}: {:?}",
                mapped(code)
            );
        }
    }
}
