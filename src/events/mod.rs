//! Events: the outbox relay (facts → NATS JetStream) and the order-event consumer
//! (NATS JetStream → the same idempotent Compute/Refund path as the API).
//!
//! Both are transport adapters like `grpc/`: they know proto types and call
//! [`crate::app::App`]. Both are optional: with no `nats_url`, the outbox simply accumulates
//! (bounded by `outbox_max_rows`).

pub mod consumer;
pub mod relay;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;

/// How often the outbox bound is enforced when no broker is configured.
pub const OUTBOX_JANITOR_PERIOD: Duration = Duration::from_secs(60);

use async_nats::jetstream::{self, stream};

/// Where and how events flow.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// NATS server URL.
    pub nats_url: String,
    /// Stream of published events.
    pub events_stream: String,
    /// Subject prefix of published events: `<prefix>.<kind>`.
    pub events_subject: String,
    /// Stream the consumer reads order events from.
    pub orders_stream: String,
    /// Subject prefix of order events: `<prefix>.paid`, `<prefix>.refunded`.
    pub orders_subject: String,
    /// Stream of messages that kept failing.
    pub dead_stream: String,
    /// Durable consumer name.
    pub consumer: String,
    /// Deliveries before a message that keeps failing is dead-lettered.
    pub max_deliver: i64,
    /// First retry delay; doubles per delivery up to `backoff_max`.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Events published per relay round.
    pub relay_batch: u32,
    /// Relay pause when the outbox is empty.
    pub relay_idle: Duration,
    /// How long JetStream remembers event ids for de-duplication.
    pub duplicate_window: Duration,
}

impl EventSettings {
    /// The defaults for a NATS URL.
    pub fn new(nats_url: &str) -> Self {
        EventSettings {
            nats_url: nats_url.into(),
            events_stream: "PRORATA_EVENTS".into(),
            events_subject: "prorata.events".into(),
            orders_stream: "ORDERS".into(),
            orders_subject: "orders".into(),
            dead_stream: "ORDERS_DEAD".into(),
            consumer: "prorata".into(),
            max_deliver: 6,
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            relay_batch: 256,
            relay_idle: Duration::from_millis(50),
            duplicate_window: Duration::from_secs(3600),
        }
    }

    /// Retry delay after `delivered` deliveries: base × 2^(delivered−1), capped.
    pub fn backoff(&self, delivered: i64) -> Duration {
        let shift = u32::try_from((delivered - 1).clamp(0, 20)).unwrap_or(20);
        self.backoff_base
            .saturating_mul(1 << shift)
            .min(self.backoff_max)
    }
}

/// Connects and makes sure the three streams exist.
pub async fn connect(s: &EventSettings) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::connect(&s.nats_url).await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(stream::Config {
        name: s.events_stream.clone(),
        subjects: vec![format!("{}.>", s.events_subject)],
        duplicate_window: s.duplicate_window,
        ..Default::default()
    })
    .await?;
    js.get_or_create_stream(stream::Config {
        name: s.orders_stream.clone(),
        subjects: vec![
            format!("{}.paid", s.orders_subject),
            format!("{}.refunded", s.orders_subject),
        ],
        duplicate_window: s.duplicate_window,
        ..Default::default()
    })
    .await?;
    js.get_or_create_stream(stream::Config {
        name: s.dead_stream.clone(),
        subjects: vec![format!("{}.dead.>", s.orders_subject)],
        ..Default::default()
    })
    .await?;
    Ok(js)
}

/// How often the month partitions ahead are prepared (PostgreSQL).
pub const PARTITION_PERIOD: Duration = Duration::from_secs(3600);

/// Prepares the month partitions around now at start and every [`PARTITION_PERIOD`], so
/// that a new month's rows never land in the DEFAULT partition.
pub async fn partition_keeper(store: Arc<dyn Store>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(PARTITION_PERIOD);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        match store.prepare_months(chrono::Utc::now()).await {
            Ok(0) => {}
            Ok(made) => tracing::info!(made, "prepared month partitions"),
            Err(e) => tracing::warn!(error = %e, "preparing month partitions failed"),
        }
    }
}

/// With no broker configured, keeps the outbox at `max_rows` events: the oldest beyond it
/// are dropped with a warning that says how many (`outbox_pending`, `outbox_dropped`).
pub async fn outbox_janitor(
    store: Arc<dyn Store>,
    max_rows: i64,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(OUTBOX_JANITOR_PERIOD);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        let pending = store.outbox_pending().await;
        if let Ok(p) = &pending {
            metrics::gauge!("prorata_outbox_pending").set(*p as f64);
        }
        match pending {
            Ok(pending) if pending > max_rows => match store.outbox_prune(max_rows).await {
                Ok(dropped) => {
                    metrics::counter!("prorata_outbox_dropped_total").increment(dropped);
                    tracing::warn!(
                    outbox_pending = pending,
                    outbox_dropped = dropped,
                    max_rows,
                    "no broker is configured: dropped the oldest events beyond the outbox bound"
                    );
                }
                Err(e) => tracing::warn!(error = %e, "outbox prune failed"),
            },
            Ok(pending) => tracing::debug!(outbox_pending = pending, "outbox"),
            Err(e) => tracing::warn!(error = %e, "outbox size unknown"),
        }
    }
}
