//! Logging and metrics set-up, callable once per process.
//!
//! Metric names (Prometheus, on `metrics_addr` when set):
//! - `prorata_compute_total{outcome}` — Compute calls: `stored`, `replayed`, `error`.
//! - `prorata_compute_seconds` — Compute latency (summary).
//! - `prorata_group_commit_batch_orders` — orders per group-commit batch;
//!   `prorata_group_commit_queue_seconds` — how long a call waited in the queue for a
//!   worker; `prorata_group_commit_phase_seconds{phase}` — a batch's read, engine, write
//!   and commit (`store::batch::Phases`), and on PostgreSQL also `begin` (a pooled
//!   connection and its BEGIN) and `counters` (what follows the rows: deferred counters,
//!   buyers, grade checks).
//! - `prorata_outbox_pending` — events not yet published (or, with no broker, kept).
//! - `prorata_outbox_published_total`, `prorata_outbox_dropped_total` — relayed events;
//!   events dropped by the outbox bound when no broker is configured.
//! - `prorata_consumer_messages_total{outcome}` — order events: `done`, `retry`, `dead`.
//! - `prorata_redis_up` — 1 while the shared cache answers, 0 otherwise.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (`text` or `json` to stderr). A second call is a no-op.
pub fn init(format: &str, level: &str) {
    let filter = EnvFilter::try_from_env("PRORATA_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Serves Prometheus metrics on `addr` (e.g. `127.0.0.1:9464`); an empty address disables
/// them (the macros then record nothing). Must be called inside the Tokio runtime.
pub fn init_metrics(addr: &str) -> anyhow::Result<()> {
    if addr.is_empty() {
        return Ok(());
    }
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("metrics_addr {addr:?}: {e}"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("metrics exporter on {addr}: {e}"))?;
    tracing::info!(%addr, "serving Prometheus metrics");
    Ok(())
}
