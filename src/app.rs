//! Application services: what each API call does, independent of gRPC.
//!
//! [`App`] ties the pure engine to the store and the caches. The gRPC layer only converts
//! messages and maps [`AppError`] to status codes; the conformance runner and the tests
//! reach the same code through the real server.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use chrono::{DateTime, Utc};

use crate::cache::{CacheSettings, CachedSplit, Caches};
use crate::commit::{GroupCommitter, GroupSettings};
use crate::domain::catalog::{self, Published};
use crate::domain::engine::{self, Attributed, EngineError, Inputs, Level};
use crate::domain::fingerprint;
use crate::domain::lifecycle::LifecycleError;
use crate::domain::network::{NetworkSnapshot, PromoterNode, MAX_UPLINE_WALK};
use crate::domain::order::{self, FieldError, Order, RawOrder};
use crate::domain::ruleset::{self, Issue, RuleSet};
use crate::domain::split::{Account, SplitResult};
use crate::store::{
    AccountSplit, CommitOutcome, Cursor, ImportItem, ImportSummary, NewRuleSet, PendingSplit,
    PromoterUpsert, SplitPlan, Store, StoreError, StoredRuleSet, UpsertOutcome,
};

/// Most rows one page of a listing returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// Rows per page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Deepest GetUpline answer.
pub const MAX_UPLINE_DEPTH: u32 = 64;
/// GetUpline depth when the caller does not say.
pub const DEFAULT_UPLINE_DEPTH: u32 = 10;
/// How often the rule-set catalog is refreshed from the store, so versions published on
/// other replicas apply here too.
pub const CATALOG_REFRESH: Duration = Duration::from_secs(2);

/// Why a call failed; the gRPC layer maps each to one status code.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A field is invalid (INVALID_ARGUMENT).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// A rule-set document has errors (INVALID_ARGUMENT).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidDocument(Vec<Issue>),
    /// NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS.
    #[error("{0}")]
    AlreadyExists(String),
    /// FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// UNAVAILABLE: a dependency is down; the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// INTERNAL: a bug or corrupt data; never a partial write.
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => AppError::NotFound(m),
            StoreError::FailedPrecondition(m) => AppError::FailedPrecondition(m),
            StoreError::Engine(e) => e.into(),
            StoreError::AlreadyExists(m) => AppError::AlreadyExists(m),
            StoreError::Lifecycle(LifecycleError::Invalid(f)) => AppError::Invalid(f),
            StoreError::Lifecycle(LifecycleError::FailedPrecondition(m)) => {
                AppError::FailedPrecondition(m)
            }
            StoreError::Unavailable(m) => AppError::Unavailable(m),
            e @ (StoreError::Invariant(_) | StoreError::Database(_) | StoreError::Corrupt(_)) => {
                AppError::Internal(e.to_string())
            }
        }
    }
}

impl From<Arc<StoreError>> for AppError {
    fn from(e: Arc<StoreError>) -> Self {
        match &*e {
            StoreError::Unavailable(m) => AppError::Unavailable(m.clone()),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<EngineError> for AppError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::MissingField(path, message) => {
                AppError::Invalid(FieldError { path, message })
            }
            EngineError::Overflow => AppError::Invalid(FieldError::new(
                "order.lines",
                "a share of this order is out of range",
            )),
            EngineError::Invariant(v) => AppError::Internal(v.to_string()),
        }
    }
}

/// Result alias.
pub type AppResult<T> = Result<T, AppError>;

/// The outcome of Compute.
#[derive(Debug, Clone)]
pub struct Computed {
    /// The stored result with its fingerprint and encoding (on a replay, the result
    /// cache's own entry, whose encoding is made once).
    pub split: Arc<CachedSplit>,
    /// True when it was stored by an earlier call.
    pub replayed: bool,
}

/// A page of a listing.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// Rows.
    pub items: Vec<T>,
    /// Token of the next page; empty at the end.
    pub next: String,
}

/// The application: store, caches, and the operations of the API.
pub struct App {
    store: Arc<dyn Store>,
    cache: Arc<Caches>,
    committer: Option<GroupCommitter>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl<T> Page<T> {
    /// A page from rows fetched with one extra beyond `size`: the extra row only says
    /// that another page exists, and the token continues after the last row kept.
    pub(crate) fn from_overfetch(
        mut items: Vec<T>,
        size: u32,
        token_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        let next = if items.len() > size as usize {
            items.truncate(size as usize);
            items.last().map(token_of).unwrap_or_default()
        } else {
            String::new()
        };
        Page { items, next }
    }
}

pub(crate) fn page_size(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

impl App {
    /// Builds the application with default group commit and loads the rule-set catalog.
    pub async fn new(store: Arc<dyn Store>, cache: &CacheSettings) -> AppResult<Arc<App>> {
        let group = GroupSettings::for_backend(store.backend());
        Self::with_group_commit(store, cache, group).await
    }

    /// Builds the application; `group.max_batch <= 1` commits every order on its own.
    pub async fn with_group_commit(
        store: Arc<dyn Store>,
        cache: &CacheSettings,
        group: GroupSettings,
    ) -> AppResult<Arc<App>> {
        let committer = (group.max_batch > 1).then(|| GroupCommitter::start(store.clone(), group));
        let app = Arc::new(App {
            cache: Caches::new(store.clone(), cache)?,
            store,
            committer,
        });
        app.cache.reload_catalog().await?;
        Ok(app)
    }

    /// Refreshes the catalog every [`CATALOG_REFRESH`] until the app is dropped.
    pub fn spawn_catalog_refresh(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CATALOG_REFRESH);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                if let Err(e) = app.cache.reload_catalog().await {
                    tracing::warn!(error = %e, "rule-set catalog refresh failed");
                }
            }
        })
    }

    /// `None` without Redis; otherwise whether Redis answers now.
    pub fn redis_healthy(&self) -> Option<bool> {
        self.cache.redis_healthy()
    }

    /// The store (for health checks and tools).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    // ------------------------------------------------------------ commissions

    fn select(&self, order: &Order) -> AppResult<Published> {
        let catalog = self.cache.catalog();
        catalog::select(&catalog.versions, order.paid_at, &order.merchant)
            .cloned()
            .ok_or_else(|| {
                AppError::FailedPrecondition(format!(
                    "no rule set is in effect at {} for merchant {}: publish one first",
                    order.paid_at.to_rfc3339(),
                    order.merchant
                ))
            })
    }

    /// Attribution and chain for an order, reading the network through the cache.
    async fn resolve_network(
        &self,
        order: &Order,
        rs: &RuleSet,
    ) -> AppResult<(NetworkSnapshot, Attributed, Vec<Level>)> {
        let mut snap = NetworkSnapshot::default();
        let mut seen = HashSet::new();
        for r in &order.referrals {
            if seen.insert(r.promoter.as_str()) {
                if let Some(p) = self.cache.promoter(&r.promoter).await? {
                    snap.insert_shared(p);
                }
            }
        }
        if let Some(b) = self.cache.binding(&order.buyer).await? {
            if let Some(p) = self.cache.promoter(&b).await? {
                snap.insert_shared(p);
            }
            snap.bound = Some(b);
        }
        let att = engine::attribute(order, rs, &snap);
        let mut chain = Vec::new();
        if let Some(primary) = &att.primary {
            self.fetch_upline(primary, rs, &mut snap).await?;
            chain = engine::walk_chain(primary, rs, &snap);
        }
        Ok((snap, att, chain))
    }

    /// Loads the ancestors a chain walk will read into the snapshot.
    async fn fetch_upline(
        &self,
        start: &PromoterNode,
        rs: &RuleSet,
        snap: &mut NetworkSnapshot,
    ) -> AppResult<()> {
        let wanted = rs.max_levels.saturating_sub(1) as usize;
        let (mut found, mut walked) = (0usize, 0usize);
        let mut parent = start.parent.clone();
        while let Some(pid) = parent {
            if found >= wanted || walked >= MAX_UPLINE_WALK || pid == start.id {
                break;
            }
            let Some(node) = self.cache.promoter(&pid).await? else {
                break;
            };
            walked += 1;
            if !rs.compression || node.is_active() {
                found += 1;
            }
            parent = node.parent.clone();
            snap.insert_shared(node);
        }
        Ok(())
    }

    fn plan(order: &Order, fp: &str, att: &Attributed, published: &Published) -> SplitPlan {
        SplitPlan {
            order_id: order.id.clone(),
            fingerprint: fp.to_string(),
            merchant: order.merchant.clone(),
            buyer: order.buyer.clone(),
            currency: order.currency.code().to_string(),
            month: engine::month_key(order.paid_at, &published.ruleset).into(),
            primary_promoter: att.primary.as_ref().map(|p| p.id.clone()),
            sales: order.sales(),
            paid_at: order.paid_at,
            ruleset: published.ruleset.clone(),
        }
    }

    fn replay(order_id: &str, fp: &str, stored: Arc<CachedSplit>) -> AppResult<Computed> {
        if stored.fingerprint == fp {
            Ok(Computed {
                split: stored,
                replayed: true,
            })
        } else {
            Err(AppError::AlreadyExists(format!(
                "order {order_id} was already computed with different content; an order id identifies one order forever"
            )))
        }
    }

    /// Computes and stores the split of a paid order, idempotently.
    pub async fn compute(&self, raw: &RawOrder) -> AppResult<Computed> {
        let start = std::time::Instant::now();
        let out = self.compute_inner(raw).await;
        Self::record_compute(&out, start);
        out
    }

    fn record_compute(out: &AppResult<Computed>, start: std::time::Instant) {
        let outcome = match out {
            Ok(c) if c.replayed => "replayed",
            Ok(_) => "stored",
            Err(_) => "error",
        };
        metrics::counter!("prorata_compute_total", "outcome" => outcome).increment(1);
        metrics::histogram!("prorata_compute_seconds").record(start.elapsed().as_secs_f64());
    }

    /// The replay of a Compute request whose bytes are exactly those of a request already
    /// replayed for `order_id` (see [`App::remember_request`]); `None` otherwise, and the
    /// request takes the whole path ([`App::compute`]).
    ///
    /// Identical bytes decode to the identical order, so they have the fingerprint the
    /// earlier request was checked against; a stored result never changes. Nothing is
    /// decoded, parsed or hashed here: an order system's retries (the same message sent
    /// again) cost a cache lookup and a comparison of bytes.
    pub async fn replay_identical(&self, order_id: &str, request: &[u8]) -> Option<Computed> {
        let start = std::time::Instant::now();
        let split = self.cache.cached_split(order_id).await?;
        if split.request.get()?.as_ref() != request {
            return None;
        }
        let out = Ok(Computed {
            split,
            replayed: true,
        });
        Self::record_compute(&out, start);
        out.ok()
    }

    /// Keeps `request`, the bytes of the Compute request `computed` answered, for
    /// [`App::replay_identical`]: only for a replay (its fingerprint was checked against
    /// the stored result, which is the cached one), and only the first such bytes.
    pub fn remember_request(computed: &Computed, request: &[u8]) {
        if computed.replayed && computed.split.request.get().is_none() {
            // A copy: the received bytes may share a larger receive buffer.
            let _ = computed.split.request.set(Bytes::copy_from_slice(request));
        }
    }

    async fn compute_inner(&self, raw: &RawOrder) -> AppResult<Computed> {
        let order = Order::parse(raw, "order")?;
        let fp = fingerprint::of(&order);
        // A replay the result cache holds is answered here. Otherwise the order goes to
        // the commit, which reads every stored id of its batch under the order locks
        // anyway: no separate read per order.
        if let Some(stored) = self.cache.cached_split(&order.id).await {
            return Self::replay(&order.id, &fp, stored);
        }
        let published = self.select(&order)?;
        let rs = published.ruleset.clone();
        let (snap, att, chain) = self.resolve_network(&order, &rs).await?;
        let plan = Self::plan(&order, &fp, &att, &published);
        let now = Utc::now();
        let version = published.version;
        let (order_id, fp_check) = (order.id.clone(), fp.clone());
        let outcome = match &self.committer {
            Some(c) => {
                let compute = move |ctx: &engine::Context| {
                    let inputs = Inputs {
                        network: &snap,
                        context: ctx.clone(),
                        ruleset_version: version,
                        fingerprint: fp.clone(),
                        now,
                    };
                    engine::compute_with(&order, &rs, &inputs, &att, &chain)
                };
                c.commit(PendingSplit::new(plan, Box::new(compute))).await?
            }
            None => {
                let compute = |ctx: &engine::Context| {
                    let inputs = Inputs {
                        network: &snap,
                        context: ctx.clone(),
                        ruleset_version: version,
                        fingerprint: fp.clone(),
                        now,
                    };
                    engine::compute_with(&order, &rs, &inputs, &att, &chain)
                };
                self.store.commit_split(&plan, &compute).await?
            }
        };
        match outcome {
            CommitOutcome::Stored { result, upgraded } => {
                for p in upgraded {
                    tracing::info!(promoter = %p, order = %order_id, "grade upgraded");
                    self.cache.invalidate_promoter(&p).await;
                }
                Ok(Computed {
                    split: Arc::new(CachedSplit::new(result.fingerprint.clone(), result)),
                    replayed: false,
                })
            }
            CommitOutcome::Existing(stored) => {
                let cached = Arc::new(CachedSplit::new(stored.fingerprint, stored.result));
                self.cache.remember_split(&order_id, cached.clone()).await;
                Self::replay(&order_id, &fp_check, cached)
            }
        }
    }

    /// The same computation, nothing stored; against a draft document when given.
    pub async fn preview(
        &self,
        raw: &RawOrder,
        draft: Option<&str>,
    ) -> AppResult<(SplitResult, Vec<Issue>)> {
        let order = Order::parse(raw, "order")?;
        let (published, warnings) = match draft {
            Some(doc) => {
                let c = ruleset::compile(doc);
                let prefix = |mut i: Issue| {
                    i.path = if i.path.is_empty() {
                        "ruleset_document".into()
                    } else {
                        format!("ruleset_document.{}", i.path)
                    };
                    i
                };
                match c.ruleset {
                    Some(rs) => (
                        Published {
                            version: 0,
                            ruleset: Arc::new(rs),
                        },
                        c.warnings.into_iter().map(prefix).collect(),
                    ),
                    None => {
                        return Err(AppError::InvalidDocument(
                            c.errors.into_iter().map(prefix).collect(),
                        ))
                    }
                }
            }
            None => (self.select(&order)?, vec![]),
        };
        let fp = fingerprint::of(&order);
        let (snap, att, chain) = self.resolve_network(&order, &published.ruleset).await?;
        let plan = Self::plan(&order, &fp, &att, &published);
        let ctx = self.store.read_context(&plan).await?;
        let inputs = Inputs {
            network: &snap,
            context: ctx,
            ruleset_version: published.version,
            fingerprint: fp,
            now: Utc::now(),
        };
        let result = engine::compute_with(&order, &published.ruleset, &inputs, &att, &chain)?;
        Ok((result, warnings))
    }

    /// A stored split (through the result cache).
    pub async fn get_split(&self, order_id: &str) -> AppResult<Arc<CachedSplit>> {
        order::check_id("order_id", order_id)?;
        match self.cache.stored_split(order_id).await? {
            Some(s) => Ok(s),
            None => Err(AppError::NotFound(format!(
                "no split is stored for order {order_id}"
            ))),
        }
    }

    /// Splits in which an account holds a share, newest first.
    pub async fn list_splits(
        &self,
        account: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        page_size_requested: u32,
        token: &str,
    ) -> AppResult<Page<AccountSplit>> {
        if account.is_empty() {
            return Err(FieldError::new("account", "is required").into());
        }
        account
            .parse::<Account>()
            .map_err(|e| FieldError::new("account", e))?;
        let after = decode_cursor(token)?;
        let size = page_size(page_size_requested);
        let items = self
            .store
            .list_splits(account, from, to, after, size + 1)
            .await?;
        Ok(Page::from_overfetch(items, size, |l| {
            encode_cursor(&(l.paid_at, l.order_id.clone()))
        }))
    }

    // ------------------------------------------------------------ rule sets

    /// Validates a document.
    pub fn validate_ruleset(&self, document: &str) -> ruleset::Compiled {
        ruleset::compile(document)
    }

    /// Publishes a document as the next version.
    pub async fn publish_ruleset(&self, document: &str) -> AppResult<(StoredRuleSet, Vec<Issue>)> {
        let c = ruleset::compile(document);
        let rs = match c.ruleset {
            Some(rs) => rs,
            None => {
                let errors = c
                    .errors
                    .into_iter()
                    .map(|mut i| {
                        i.path = if i.path.is_empty() {
                            "document".into()
                        } else {
                            format!("document.{}", i.path)
                        };
                        i
                    })
                    .collect();
                return Err(AppError::InvalidDocument(errors));
            }
        };
        let stored = self
            .store
            .publish_ruleset(NewRuleSet {
                effective_from: rs.effective_from,
                canary: rs.canary.as_ref().map(|c| c.iter().cloned().collect()),
                document: document.to_string(),
                sha256: fingerprint::sha256_hex(document.as_bytes()),
                published_at: Utc::now(),
            })
            .await?;
        self.cache.reload_catalog().await?;
        self.cache.catalog_changed().await;
        Ok((stored, c.warnings))
    }

    /// A version by number, or the one in effect at `at` for `merchant`.
    pub async fn get_ruleset(
        &self,
        version: u64,
        at: Option<DateTime<Utc>>,
        merchant: &str,
    ) -> AppResult<StoredRuleSet> {
        if version > 0 {
            return self
                .store
                .get_ruleset(version)
                .await?
                .ok_or_else(|| AppError::NotFound(format!("no rule set version {version}")));
        }
        let at = at.unwrap_or_else(Utc::now);
        let catalog = self.cache.catalog();
        let p = catalog::select(&catalog.versions, at, merchant).ok_or_else(|| {
            AppError::NotFound(format!("no rule set is in effect at {}", at.to_rfc3339()))
        })?;
        catalog
            .stored
            .iter()
            .find(|s| s.version == p.version)
            .cloned()
            .ok_or_else(|| AppError::Internal("catalog out of step".into()))
    }

    /// Versions, newest first.
    pub async fn list_rulesets(
        &self,
        page_size_requested: u32,
        token: &str,
    ) -> AppResult<Page<StoredRuleSet>> {
        let before =
            if token.is_empty() {
                None
            } else {
                Some(token.parse::<u64>().map_err(|_| {
                    FieldError::new("page_token", "is not a token this service issued")
                })?)
            };
        let size = page_size(page_size_requested);
        let items = self.store.list_rulesets(before, size + 1).await?;
        Ok(Page::from_overfetch(items, size, |l| l.version.to_string()))
    }

    /// The rule set in effect now (its grades drive upgrades on network changes).
    fn current_ruleset(&self) -> Option<Arc<RuleSet>> {
        let catalog = self.cache.catalog();
        catalog
            .versions
            .iter()
            .filter(|p| {
                p.ruleset.effective_from.is_none_or(|t| t <= Utc::now())
                    && p.ruleset.canary.is_none()
            })
            .max_by_key(|p| (p.ruleset.effective_from, p.version))
            .map(|p| p.ruleset.clone())
    }

    // ------------------------------------------------------------ network

    /// Checks the ids of an upsert.
    pub fn check_upsert(up: &PromoterUpsert, root: &str) -> AppResult<()> {
        order::check_id(format_args!("{root}id"), &up.id)?;
        if let Some(Some(p)) = &up.parent {
            order::check_id(format_args!("{root}parent"), p)?;
        }
        if let Some(Some(g)) = &up.grade {
            order::check_id(format_args!("{root}grade"), g)?;
        }
        Ok(())
    }

    /// Creates or updates a promoter.
    pub async fn upsert_promoter(&self, up: PromoterUpsert) -> AppResult<UpsertOutcome> {
        Self::check_upsert(&up, "")?;
        let out = self
            .store
            .upsert_promoter(up, self.current_ruleset(), Utc::now())
            .await?;
        for id in &out.changed {
            self.cache.invalidate_promoter(id).await;
        }
        Ok(out)
    }

    /// Binds a customer to a promoter.
    pub async fn bind_customer(&self, customer: &str, promoter: &str) -> AppResult<()> {
        order::check_id("customer", customer)?;
        order::check_id("promoter", promoter)?;
        self.store
            .bind_customer(customer, promoter, Utc::now())
            .await?;
        self.cache.invalidate_binding(customer).await;
        Ok(())
    }

    /// A promoter and its ancestors, nearest first.
    pub async fn upline(
        &self,
        id: &str,
        max_depth: u32,
    ) -> AppResult<(Vec<Arc<PromoterNode>>, bool)> {
        order::check_id("promoter", id)?;
        let depth = match max_depth {
            0 => DEFAULT_UPLINE_DEPTH,
            d if d > MAX_UPLINE_DEPTH => {
                return Err(
                    FieldError::new("max_depth", format!("at most {MAX_UPLINE_DEPTH}")).into(),
                );
            }
            d => d,
        };
        let start = self
            .cache
            .promoter(id)
            .await?
            .ok_or_else(|| AppError::NotFound(format!("promoter {id} does not exist")))?;
        let mut out = vec![start.clone()];
        let mut parent = start.parent.clone();
        while let Some(pid) = parent {
            if out.len() > depth as usize {
                return Ok((out, true));
            }
            let Some(p) = self.cache.promoter(&pid).await? else {
                break;
            };
            parent = p.parent.clone();
            out.push(p);
        }
        Ok((out, false))
    }

    /// Applies a bulk import in one transaction.
    pub async fn import_network(&self, items: Vec<ImportItem>) -> AppResult<ImportSummary> {
        for (i, item) in items.iter().enumerate() {
            match item {
                ImportItem::Promoter(up) => {
                    Self::check_upsert(up, &format!("items[{i}].promoter."))?
                }
                ImportItem::Binding { customer, promoter } => {
                    order::check_id(format_args!("items[{i}].binding.customer"), customer)?;
                    order::check_id(format_args!("items[{i}].binding.promoter"), promoter)?;
                }
            }
        }
        let result = self
            .store
            .import_network(items, self.current_ruleset(), Utc::now())
            .await;
        self.cache.invalidate_network().await;
        result.map_err(|e| {
            let msg = format!("items[{}]: {}", e.index, e.error);
            match AppError::from(e.error) {
                AppError::NotFound(_) => AppError::NotFound(msg),
                AppError::FailedPrecondition(_) => AppError::FailedPrecondition(msg),
                other => other,
            }
        })
    }
}

fn encode_cursor(c: &Cursor) -> String {
    format!("{}.{}", c.0.timestamp_micros(), hex::encode(c.1.as_bytes()))
}

fn decode_cursor(token: &str) -> AppResult<Option<Cursor>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        AppError::Invalid(FieldError::new(
            "page_token",
            "is not a token this service issued",
        ))
    };
    let (t, id) = token.split_once('.').ok_or_else(bad)?;
    let t = DateTime::from_timestamp_micros(t.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    let id = String::from_utf8(hex::decode(id).map_err(|_| bad())?).map_err(|_| bad())?;
    Ok(Some((t, id)))
}
