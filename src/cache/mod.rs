//! In-process caches (moka) in front of the store.
//!
//! Promoters are cached one node per key and chains are walked through the cache, so a
//! change to one promoter invalidates exactly one entry and the next walk sees it. Rule-set
//! versions are immutable: the catalog is reloaded after a publish and refreshed in the
//! background so versions published by other replicas arrive too. Loading is stampede-safe:
//! concurrent misses for one key run one store query.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::future::Cache;

use crate::domain::catalog::Published;
use crate::domain::network::PromoterNode;
use crate::domain::ruleset;
use crate::store::{Store, StoreError, StoredRuleSet};

/// Cache sizes and lifetimes.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most promoters held.
    pub promoters_capacity: u64,
    /// Most customer bindings held.
    pub bindings_capacity: u64,
    /// Longest an entry lives: bounds staleness when another replica changes the network.
    pub ttl: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            promoters_capacity: 2_000_000,
            bindings_capacity: 2_000_000,
            ttl: Duration::from_secs(60),
        }
    }
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
    catalog: RwLock<Arc<Catalog>>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("promoters", &self.promoters.entry_count())
            .finish()
    }
}

impl Caches {
    /// Empty caches over a store.
    pub fn new(store: Arc<dyn Store>, s: &CacheSettings) -> Self {
        Caches {
            store,
            promoters: Cache::builder()
                .max_capacity(s.promoters_capacity)
                .time_to_live(s.ttl)
                .build(),
            bindings: Cache::builder()
                .max_capacity(s.bindings_capacity)
                .time_to_live(s.ttl)
                .build(),
            catalog: RwLock::new(Arc::new(Catalog::default())),
        }
    }

    /// A promoter, from cache or store.
    pub async fn promoter(&self, id: &str) -> Result<Option<Arc<PromoterNode>>, Arc<StoreError>> {
        let store = self.store.clone();
        let key = id.to_string();
        self.promoters
            .try_get_with(key.clone(), async move {
                store.get_promoter(&key).await.map(|p| p.map(Arc::new))
            })
            .await
    }

    /// The promoter a customer is bound to, from cache or store.
    pub async fn binding(&self, customer: &str) -> Result<Option<String>, Arc<StoreError>> {
        let store = self.store.clone();
        let key = customer.to_string();
        self.bindings
            .try_get_with(key.clone(), async move { store.get_binding(&key).await })
            .await
    }

    /// Drops a promoter entry after a change.
    pub async fn invalidate_promoter(&self, id: &str) {
        self.promoters.invalidate(id).await;
    }

    /// Drops a binding entry after a change.
    pub async fn invalidate_binding(&self, customer: &str) {
        self.bindings.invalidate(customer).await;
    }

    /// Drops every network entry (after a bulk import).
    pub fn invalidate_network(&self) {
        self.promoters.invalidate_all();
        self.bindings.invalidate_all();
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
