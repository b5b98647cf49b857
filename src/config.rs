//! Settings: defaults → optional TOML file → `PRORATA_*` environment variables.
//!
//! With nothing configured prorata serves gRPC on 127.0.0.1:50051 with SQLite in
//! `prorata.db` and in-process caches. Setting `PRORATA_DATABASE_URL` (or
//! `database_url` in the file) to a `postgres://` URL switches the store to PostgreSQL.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::cache::CacheSettings;

/// Every setting of the service.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// Address the gRPC server listens on.
    pub grpc_addr: String,
    /// PostgreSQL URL; empty means the embedded SQLite store.
    pub database_url: String,
    /// SQLite database file (when `database_url` is empty).
    pub sqlite_path: PathBuf,
    /// PostgreSQL pool size.
    pub db_max_connections: u32,
    /// A call that runs longer is cancelled (DEADLINE_EXCEEDED for the caller).
    pub request_timeout_ms: u64,
    /// Timeout of bulk and streaming calls (ComputeStream, ImportNetwork, Reconcile).
    pub long_request_timeout_ms: u64,
    /// Calls in flight across all connections; more wait in line.
    pub max_concurrent_requests: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub max_streams_per_connection: u32,
    /// How long shutdown waits for in-flight calls to finish.
    pub shutdown_grace_ms: u64,
    /// Largest request or response message, bytes.
    pub max_message_bytes: usize,
    /// Promoter cache capacity, entries.
    pub cache_promoters: u64,
    /// Binding cache capacity, entries.
    pub cache_bindings: u64,
    /// Longest a cache entry lives, ms.
    pub cache_ttl_ms: u64,
    /// Most bytes of stored results held in process for replays and GetSplit.
    pub cache_splits_bytes: u64,
    /// Most orders stored in one group-commit transaction (1: every order on its own).
    pub group_commit_max_batch: usize,
    /// Group-commit transactions in flight at once on PostgreSQL (SQLite: always 1).
    pub group_commit_workers: usize,
    /// Redis URL of the shared cache (`redis://127.0.0.1:6379`); empty: in-process only.
    pub redis_url: String,
    /// NATS server URL (`nats://127.0.0.1:4222`); empty: no broker, the outbox accumulates.
    pub nats_url: String,
    /// Run the outbox relay in this process (when a broker is configured).
    pub relay_enabled: bool,
    /// Run the order-event consumer in this process (when a broker is configured).
    pub consumer_enabled: bool,
    /// With no broker, the outbox keeps at most this many events (oldest dropped, logged).
    pub outbox_max_rows: i64,
    /// Address of the Prometheus metrics endpoint (`127.0.0.1:9464`); empty: off.
    pub metrics_addr: String,
    /// `text` or `json`.
    pub log_format: String,
    /// `tracing` filter, e.g. `info` or `prorata=debug`.
    pub log_level: String,
}

impl Settings {
    /// Group-commit settings for a backend.
    pub fn group_commit(&self, backend: &str) -> crate::commit::GroupSettings {
        let mut g = crate::commit::GroupSettings::for_backend(backend);
        g.max_batch = self
            .group_commit_max_batch
            .clamp(1, crate::commit::MAX_BATCH_LIMIT);
        if backend != "sqlite" {
            g.workers = self
                .group_commit_workers
                .clamp(1, crate::commit::MAX_WORKERS);
        }
        g
    }

    /// Loads settings. `file` is optional; without it `prorata.toml` in the working
    /// directory is read if present.
    pub fn load(file: Option<&Path>) -> Result<Settings, config::ConfigError> {
        let mut b = config::Config::builder()
            .set_default("grpc_addr", "127.0.0.1:50051")?
            .set_default("database_url", "")?
            .set_default("sqlite_path", "prorata.db")?
            .set_default("db_max_connections", 16)?
            .set_default("request_timeout_ms", 5_000)?
            .set_default("long_request_timeout_ms", 3_600_000)?
            .set_default("max_concurrent_requests", 1_024)?
            .set_default("max_streams_per_connection", 256)?
            .set_default("shutdown_grace_ms", 10_000)?
            .set_default("max_message_bytes", 4 * 1024 * 1024)?
            .set_default("cache_promoters", 2_000_000)?
            .set_default("cache_bindings", 2_000_000)?
            .set_default("cache_ttl_ms", 60_000)?
            .set_default("cache_splits_bytes", crate::cache::DEFAULT_SPLITS_BYTES)?
            .set_default("group_commit_max_batch", crate::commit::MAX_BATCH as u64)?
            .set_default("group_commit_workers", crate::commit::PG_WORKERS as u64)?
            .set_default("redis_url", "")?
            .set_default("nats_url", "")?
            .set_default("relay_enabled", true)?
            .set_default("consumer_enabled", true)?
            .set_default("outbox_max_rows", 1_000_000)?
            .set_default("metrics_addr", "")?
            .set_default("log_format", "text")?
            .set_default("log_level", "info")?;
        b = match file {
            Some(f) => b.add_source(config::File::from(f).required(true)),
            None => b.add_source(config::File::with_name("prorata").required(false)),
        };
        b.add_source(config::Environment::with_prefix("PRORATA").try_parsing(true))
            .build()?
            .try_deserialize()
    }

    /// The cache part.
    pub fn cache(&self) -> CacheSettings {
        CacheSettings {
            promoters_capacity: self.cache_promoters,
            bindings_capacity: self.cache_bindings,
            ttl: Duration::from_millis(self.cache_ttl_ms),
            splits_bytes: self.cache_splits_bytes,
            redis_url: (!self.redis_url.is_empty()).then(|| self.redis_url.clone()),
        }
    }
}
