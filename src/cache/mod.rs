//! In-process caches (moka) in front of the store.
//!
//! Promoters are cached one node per key and chains are walked through the cache, so a
//! change to one promoter invalidates exactly one entry and the next walk sees it. Rule-set
//! versions are immutable: the catalog is reloaded after a publish and refreshed in the
//! background so versions published by other replicas arrive too. Loading is stampede-safe:
//! concurrent misses for one key run one store query.
//!
//! Stored results are immutable, so a replica may keep one as long as it likes: the
//! result cache needs no invalidation and no Redis level. It is filled when a result is
//! first read back (a replay or a GetSplit), not when it is stored — most orders are never
//! replayed — and it is bounded by an estimate of the bytes it holds.

pub mod shared;

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;

use shared::{Invalidation, Shared};

use crate::domain::catalog::Published;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset;
use crate::domain::split::SplitResult;
use crate::store::{Store, StoreError, StoredRuleSet};

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most promoters held.
    pub promoters_capacity: u64,
    /// Most customer bindings held.
    pub bindings_capacity: u64,
    /// Longest an entry lives: bounds staleness when an invalidation is lost.
    pub ttl: Duration,
    /// Redis URL of the shared level; `None`: in-process only.
    pub redis_url: Option<String>,
    /// Most bytes (estimated, see [`split_weight`]) of stored results held for replays.
    pub splits_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            promoters_capacity: 2_000_000,
            bindings_capacity: 2_000_000,
            ttl: Duration::from_secs(60),
            redis_url: None,
            splits_bytes: DEFAULT_SPLITS_BYTES,
        }
    }
}

/// Ancestors a promoter load from the store brings along ([`Caches::promoter`]): the
/// default GetUpline depth and more than any chain of levels a rule set pays.
pub const UPLINE_PREFETCH: u32 = 16;

/// Default bound of the result cache: 64 MiB holds about 20,000 typical 2-line results.
pub const DEFAULT_SPLITS_BYTES: u64 = 64 * 1024 * 1024;

/// A stored result as the replay cache holds it.
#[derive(Debug)]
pub struct CachedSplit {
    /// Fingerprint of the order content it was computed from.
    pub fingerprint: String,
    /// The result exactly as stored (checked when it was read).
    pub result: Arc<SplitResult>,
    /// The result as the gRPC layer sends it, encoded on first use: a stored result never
    /// changes, so neither do its bytes.
    pub encoded: OnceLock<Bytes>,
    /// The bytes of a Compute request already decoded, fingerprinted and found to be this
    /// order: a request of exactly these bytes is the same order, and is answered without
    /// decoding it ([`crate::app::App::replay_identical`]). Set on the first replay.
    pub request: OnceLock<Bytes>,
}

impl CachedSplit {
    /// A stored result and the fingerprint of the order it came from.
    pub fn new(fingerprint: String, result: SplitResult) -> Self {
        CachedSplit {
            fingerprint,
            result: Arc::new(result),
            encoded: OnceLock::new(),
            request: OnceLock::new(),
        }
    }
}

/// Estimated heap bytes of a cached result: its strings and vectors, per element, its
/// encoded form (filled on first send, so counted up front: measured at about half the
/// rest for 2-line results), and the request bytes it may keep (counted up front too, at
/// 256 bytes plus 160 per line: 2-line requests of the benchmark are about 430 bytes).
pub fn split_weight(key: &str, s: &CachedSplit) -> u32 {
    let r = &s.result;
    let shares: usize = r.lines.iter().map(|l| 96 + 112 * l.shares.len()).sum();
    let notes: usize = r.notes.iter().map(|n| 24 + n.len()).sum();
    let bytes = 512
        + key.len()
        + shares
        + notes
        + 80 * r.totals.len()
        + 96 * (r.chain.len() + r.attribution.len());
    let request = 256 + 160 * r.lines.len();
    u32::try_from(bytes + bytes / 2 + request).unwrap_or(u32::MAX)
}

/// Published versions with their compiled rule sets.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Compiled versions, oldest first.
    pub versions: Vec<Published>,
    /// Stored rows, same order.
    pub stored: Vec<StoredRuleSet>,
}

/// The caches of one process.
pub struct Caches {
    store: Arc<dyn Store>,
    promoters: Cache<String, Option<Arc<PromoterNode>>>,
    bindings: Cache<String, Option<String>>,
    splits: Cache<String, Arc<CachedSplit>>,
    catalog: RwLock<Arc<Catalog>>,
    shared: Option<Arc<Shared>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("promoters", &self.promoters.entry_count())
            .finish()
    }
}

impl Caches {
    /// Empty caches over a store; with a Redis URL, the shared level and the invalidation
    /// subscription start in the background.
    pub fn new(store: Arc<dyn Store>, s: &CacheSettings) -> Result<Arc<Self>, StoreError> {
        let shared = match &s.redis_url {
            Some(url) if !url.is_empty() => Some(
                Shared::new(url, s.ttl)
                    .map_err(|e| StoreError::Unavailable(format!("redis_url: {e}")))?,
            ),
            _ => None,
        };
        let caches = Arc::new(Caches {
            store,
            promoters: Cache::builder()
                .max_capacity(s.promoters_capacity)
                .time_to_live(s.ttl)
                .build(),
            bindings: Cache::builder()
                .max_capacity(s.bindings_capacity)
                .time_to_live(s.ttl)
                .build(),
            splits: Cache::builder()
                .max_capacity(s.splits_bytes)
                .weigher(|k: &String, v: &Arc<CachedSplit>| split_weight(k, v))
                .build(),
            catalog: RwLock::new(Arc::new(Catalog::default())),
            shared: shared.clone(),
        });
        if let Some(sh) = shared {
            sh.spawn(Arc::downgrade(&caches));
        }
        Ok(caches)
    }

    /// `None` without Redis; otherwise whether Redis answers now.
    pub fn redis_healthy(&self) -> Option<bool> {
        self.shared.as_ref().map(|s| s.healthy())
    }

    /// The stored result of an order if the result cache holds it (no store read).
    pub async fn cached_split(&self, order_id: &str) -> Option<Arc<CachedSplit>> {
        self.splits.get(order_id).await
    }

    /// Caches a stored result read by a commit (a replay that missed the cache).
    pub async fn remember_split(&self, order_id: &str, split: Arc<CachedSplit>) {
        self.splits.insert(order_id.to_string(), split).await;
    }

    /// The stored result of an order, from the result cache or the store; a result read
    /// from the store is cached. Concurrent misses for one order run one store read.
    pub async fn stored_split(
        &self,
        order_id: &str,
    ) -> Result<Option<Arc<CachedSplit>>, StoreError> {
        let store = self.store.clone();
        let key = order_id.to_string();
        // "Not stored" travels as an error: moka caches values only, so an order stored
        // a moment later is found by the next call.
        let got = self
            .splits
            .try_get_with(key.clone(), async move {
                match store.get_split(&key).await {
                    Ok(Some(s)) => Ok(Arc::new(CachedSplit::new(s.fingerprint, s.result))),
                    Ok(None) => Err(None),
                    Err(e) => Err(Some(e)),
                }
            })
            .await;
        match got {
            Ok(hit) => Ok(Some(hit)),
            // The error may be shared with concurrent callers: rebuilt, of the same kind.
            Err(e) => match &*e {
                None => Ok(None),
                Some(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m.clone())),
                Some(StoreError::FailedPrecondition(m)) => {
                    Err(StoreError::FailedPrecondition(m.clone()))
                }
                Some(StoreError::Corrupt(m)) => Err(StoreError::Corrupt(m.clone())),
                Some(other) => Err(StoreError::Database(other.to_string())),
            },
        }
    }

    /// A promoter, from the local cache, Redis, or the store (in that order).
    ///
    /// A load from the store brings the promoter's nearest [`UPLINE_PREFETCH`] ancestors in
    /// the same query and caches those this process lacks: every reader of a promoter walks
    /// its chain next (a split, GetUpline), so a cold chain costs one query, not one per
    /// level.
    pub async fn promoter(&self, id: &str) -> Result<Option<Arc<PromoterNode>>, Arc<StoreError>> {
        // A hit, the common case, takes no key copy and builds no loader (see `binding`).
        if let Some(hit) = self.promoters.get(id).await {
            return Ok(hit);
        }
        let store = self.store.clone();
        let shared = self.shared.clone();
        let key = id.to_string();
        self.promoters
            .try_get_with(key.clone(), async move {
                let rkey = shared::promoter_key(&key);
                if let Some(sh) = &shared {
                    if let Some(v) = sh.get(&rkey).await {
                        if let Ok(node) = serde_json::from_str::<Option<PromoterNode>>(&v) {
                            return Ok(node.map(Arc::new));
                        }
                    }
                }
                let mut chain = store.get_upline(&key, UPLINE_PREFETCH).await?.into_iter();
                let node = chain.next().filter(|n| n.id == key);
                let mut copies = Vec::new();
                if shared.is_some() {
                    copies.push((rkey, serde_json::to_string(&node).ok()));
                }
                for a in chain {
                    if self.promoters.contains_key(&a.id) {
                        continue;
                    }
                    if shared.is_some() {
                        copies.push((shared::promoter_key(&a.id), serde_json::to_string(&a).ok()));
                    }
                    self.promoters.insert(a.id.clone(), Some(Arc::new(a))).await;
                }
                if let Some(sh) = &shared {
                    sh.set_many(copies.into_iter().filter_map(|(k, v)| Some((k, v?))))
                        .await;
                }
                Ok(node.map(Arc::new))
            })
            .await
    }

    /// The promoter a customer is bound to, from the local cache, Redis, or the store.
    pub async fn binding(&self, customer: &str) -> Result<Option<String>, Arc<StoreError>> {
        // A hit is read without `try_get_with`, which needs an owned key (two copies) and
        // the loader future built (and moved) even when it does not run: a Compute reads
        // the cache once per promoter of its chain and once for the buyer's binding.
        if let Some(hit) = self.bindings.get(customer).await {
            return Ok(hit);
        }
        let store = self.store.clone();
        let shared = self.shared.clone();
        let key = customer.to_string();
        self.bindings
            .try_get_with(key.clone(), async move {
                let rkey = shared::binding_key(&key);
                if let Some(sh) = &shared {
                    if let Some(v) = sh.get(&rkey).await {
                        if let Ok(b) = serde_json::from_str::<Option<String>>(&v) {
                            return Ok(b);
                        }
                    }
                }
                let b = store.get_binding(&key).await?;
                if let Some(sh) = &shared {
                    if let Ok(v) = serde_json::to_string(&b) {
                        sh.set(&rkey, &v).await;
                    }
                }
                Ok(b)
            })
            .await
    }

    /// Applies an invalidation received from another replica (local caches only).
    pub async fn apply(&self, inv: Invalidation) {
        match inv {
            Invalidation::Promoter(id) => self.promoters.invalidate(&id).await,
            Invalidation::Binding(c) => self.bindings.invalidate(&c).await,
            Invalidation::Network => {
                self.promoters.invalidate_all();
                self.bindings.invalidate_all();
            }
            Invalidation::Catalog => {
                if let Err(e) = self.reload_catalog().await {
                    tracing::warn!(error = %e, "catalog reload after an invalidation failed");
                }
            }
        }
    }

    /// Drops every local entry and reloads the catalog (after a missed-message window).
    pub async fn local_invalidate_all(&self) {
        self.promoters.invalidate_all();
        self.bindings.invalidate_all();
        if let Err(e) = self.reload_catalog().await {
            tracing::warn!(error = %e, "catalog reload failed");
        }
    }

    async fn broadcast(&self, inv: Invalidation) {
        if let Some(sh) = &self.shared {
            sh.invalidate(inv).await;
        }
    }

    /// Tells every replica that a rule-set version was published.
    pub async fn catalog_changed(&self) {
        self.broadcast(Invalidation::Catalog).await;
    }

    /// Drops a promoter here, in Redis and on every replica after a change.
    pub async fn invalidate_promoter(&self, id: &str) {
        self.promoters.invalidate(id).await;
        self.broadcast(Invalidation::Promoter(id.into())).await;
    }

    /// Drops a binding here, in Redis and on every replica after a change.
    pub async fn invalidate_binding(&self, customer: &str) {
        self.bindings.invalidate(customer).await;
        self.broadcast(Invalidation::Binding(customer.into())).await;
    }

    /// Drops every network entry everywhere (after a bulk import). Redis keys are left to
    /// expire by TTL; replicas drop their local entries now.
    pub async fn invalidate_network(&self) {
        self.promoters.invalidate_all();
        self.bindings.invalidate_all();
        self.broadcast(Invalidation::Network).await;
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Reloads the catalog from the store. Versions are immutable, so compiled versions
    /// already held are kept and only new ones are compiled.
    pub async fn reload_catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        let rows = self.store.all_rulesets().await?;
        let old = self.catalog();
        if rows.len() == old.stored.len() {
            return Ok(old);
        }
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            match old.versions.iter().find(|p| p.version == row.version) {
                Some(p) => versions.push(p.clone()),
                None => {
                    let compiled = ruleset::compile(&row.document);
                    let rs = compiled.ruleset.ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "stored rule set {} no longer compiles",
                            row.version
                        ))
                    })?;
                    versions.push(Published {
                        version: row.version,
                        ruleset: Arc::new(rs),
                    });
                }
            }
        }
        let catalog = Arc::new(Catalog {
            versions,
            stored: rows,
        });
        if let Ok(mut c) = self.catalog.write() {
            // Never go backwards if a concurrent reload finished with more versions.
            if c.stored.len() <= catalog.stored.len() {
                *c = catalog.clone();
            }
        }
        Ok(self.catalog())
    }
}
