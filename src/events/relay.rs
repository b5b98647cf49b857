//! The outbox relay: publishes stored facts to JetStream at least once, in outbox order,
//! with the event id as `Nats-Msg-Id` so that a republished event (after a crash between
//! the broker's ack and marking the row) is dropped by the broker as a duplicate. Rows are
//! marked published only after every publish of the round was acknowledged.

use std::future::Future;
use std::sync::Arc;

use async_nats::jetstream;
use async_nats::HeaderMap;
use chrono::Utc;
use prost::Message;

use super::EventSettings;
use crate::grpc::{convert, pb};
use crate::store::{GradeChange, OutboxRow, PayoutConfirmation, Store};

/// The protobuf event of an outbox row.
pub fn event(row: &OutboxRow) -> anyhow::Result<pb::Event> {
    use pb::event::Payload;
    let payload = match row.kind.as_str() {
        "split_computed" => {
            Payload::SplitComputed(convert::split(&serde_json::from_str(&row.body)?))
        }
        "refund" => Payload::Refund(convert::movement(&serde_json::from_str(&row.body)?)),
        "redemption" => Payload::Redemption(convert::movement(&serde_json::from_str(&row.body)?)),
        "payout_created" => {
            Payload::PayoutCreated(convert::payout(&serde_json::from_str(&row.body)?))
        }
        "payout_confirmed" => {
            let c: PayoutConfirmation = serde_json::from_str(&row.body)?;
            let outcome = match c.outcome {
                crate::domain::ledger::PayoutOutcome::Paid => pb::PayoutOutcome::Paid,
                crate::domain::ledger::PayoutOutcome::Failed => pb::PayoutOutcome::Failed,
            };
            Payload::PayoutConfirmed(pb::PayoutConfirmed {
                batch_id: c.batch_id,
                account: c.account,
                outcome: outcome as i32,
            })
        }
        "grade_changed" => {
            let g: GradeChange = serde_json::from_str(&row.body)?;
            Payload::GradeChanged(pb::GradeChanged {
                promoter: g.promoter,
                grade: g.grade,
                cause: g.cause,
            })
        }
        other => anyhow::bail!("unknown event kind {other:?}"),
    };
    Ok(pb::Event {
        id: row.event_id.clone(),
        kind: row.kind.clone(),
        key: row.key.clone(),
        at: Some(convert::timestamp(row.created_at)),
        payload: Some(payload),
    })
}

/// Publishes one round; returns how many rows it published.
pub async fn round(
    store: &Arc<dyn Store>,
    js: &jetstream::Context,
    s: &EventSettings,
) -> anyhow::Result<usize> {
    let rows = store.outbox_unpublished(s.relay_batch).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Send the whole round, then await the acks in order: JetStream keeps the order of
    // one connection's publishes, and a failed ack stops the round before anything is marked.
    let mut acks = Vec::with_capacity(rows.len());
    for row in &rows {
        let ev = event(row)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", row.event_id.as_str());
        let subject = format!("{}.{}", s.events_subject, row.kind);
        acks.push(
            js.publish_with_headers(subject, headers, ev.encode_to_vec().into())
                .await?,
        );
    }
    for ack in acks {
        ack.await?;
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
    store.outbox_mark_published(&seqs, Utc::now()).await?;
    metrics::counter!("prorata_outbox_published_total").increment(rows.len() as u64);
    if let Ok(pending) = store.outbox_pending().await {
        metrics::gauge!("prorata_outbox_pending").set(pending as f64);
    }
    Ok(rows.len())
}

/// Runs rounds until `shutdown` resolves; errors are logged and retried with back-off.
pub async fn run(
    store: Arc<dyn Store>,
    js: jetstream::Context,
    s: EventSettings,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut failures = 0i64;
    loop {
        let pause = match round(&store, &js, &s).await {
            Ok(0) => {
                failures = 0;
                s.relay_idle
            }
            Ok(n) => {
                failures = 0;
                tracing::debug!(published = n, "outbox relay round");
                continue;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, failures, "outbox relay round failed; retrying");
                s.backoff(failures)
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
