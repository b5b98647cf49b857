//! The order-event consumer: takes `orders.paid` (a `ComputeRequest`) and
//! `orders.refunded` (a `RefundRequest`) from a durable JetStream consumer, runs them
//! through the same idempotent path as the API, and acknowledges only after the commit.
//! A failure that may pass (a dependency down, a refund arriving before its order) is
//! retried with exponential back-off; one that cannot (bad input, a conflicting id) or
//! that keeps failing after `max_deliver` deliveries goes to the dead-letter stream.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use prost::Message;

use super::EventSettings;
use crate::app::{App, AppError};
use crate::grpc::{convert, pb};

/// How long the broker waits for an ack before redelivering.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed (or a replay of a committed fact) and acknowledged.
    Done,
    /// Will be redelivered after a delay.
    Retry,
    /// Moved to the dead-letter stream.
    Dead,
}

async fn handle(
    app: &App,
    subject: &str,
    payload: &[u8],
    s: &EventSettings,
) -> Result<(), AppError> {
    let bad = |m: String| AppError::Invalid(crate::domain::order::FieldError::new("message", m));
    if subject == format!("{}.paid", s.orders_subject) {
        let req = pb::ComputeRequest::decode(payload)
            .map_err(|e| bad(format!("not a ComputeRequest: {e}")))?;
        let order = req.order.ok_or_else(|| bad("order: is required".into()))?;
        app.compute(&convert::raw_order(&order)?).await.map(|_| ())
    } else if subject == format!("{}.refunded", s.orders_subject) {
        let req = pb::RefundRequest::decode(payload)
            .map_err(|e| bad(format!("not a RefundRequest: {e}")))?;
        app.refund(convert::refund(&req)).await.map(|_| ())
    } else {
        Err(bad(format!("no handler for subject {subject}")))
    }
}

/// True when trying again may succeed.
fn transient(e: &AppError) -> bool {
    // NOT_FOUND: a refund that arrived before its order; out-of-order events are normal.
    matches!(
        e,
        AppError::Unavailable(_) | AppError::Internal(_) | AppError::NotFound(_)
    )
}

async fn dead_letter(
    js: &jetstream::Context,
    s: &EventSettings,
    msg: &jetstream::Message,
    why: &str,
) -> anyhow::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert("Prorata-Original-Subject", msg.subject.as_str());
    headers.insert(
        "Prorata-Error",
        why.chars().take(512).collect::<String>().as_str(),
    );
    if let Ok(info) = msg.info() {
        headers.insert(
            "Nats-Msg-Id",
            format!("dead:{}:{}", info.stream, info.stream_sequence).as_str(),
        );
    }
    let kind = msg.subject.as_str().rsplit('.').next().unwrap_or("unknown");
    js.publish_with_headers(
        format!("{}.dead.{kind}", s.orders_subject),
        headers,
        msg.payload.clone(),
    )
    .await?
    .await?;
    Ok(())
}

/// Processes one message and acknowledges it accordingly.
pub async fn process(
    app: &App,
    js: &jetstream::Context,
    s: &EventSettings,
    msg: &jetstream::Message,
) -> anyhow::Result<Outcome> {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    match handle(app, msg.subject.as_str(), &msg.payload, s).await {
        Ok(()) => {
            msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
            Ok(Outcome::Done)
        }
        Err(e) if transient(&e) && delivered < s.max_deliver => {
            let delay = s.backoff(delivered);
            tracing::info!(subject = %msg.subject, delivered, delay_ms = delay.as_millis() as u64, error = %e, "retrying order event");
            msg.ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(|e| anyhow::anyhow!("nak: {e}"))?;
            Ok(Outcome::Retry)
        }
        Err(e) => {
            tracing::warn!(subject = %msg.subject, delivered, error = %e, "dead-lettering order event");
            dead_letter(js, s, msg, &e.to_string()).await?;
            msg.ack_with(AckKind::Term)
                .await
                .map_err(|e| anyhow::anyhow!("term: {e}"))?;
            Ok(Outcome::Dead)
        }
    }
}

/// Consumes until `shutdown` resolves.
pub async fn run(
    app: Arc<App>,
    js: jetstream::Context,
    s: EventSettings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let stream = js.get_stream(&s.orders_stream).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &s.consumer,
            pull::Config {
                durable_name: Some(s.consumer.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_deliver: s.max_deliver + 1,
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            next = messages.next() => match next {
                None => return Ok(()),
                Some(Err(e)) => tracing::warn!(error = %e, "order event stream error"),
                Some(Ok(msg)) => match process(&app, &js, &s, &msg).await {
                    Ok(o) => {
                        let outcome = match o {
                            Outcome::Done => "done",
                            Outcome::Retry => "retry",
                            Outcome::Dead => "dead",
                        };
                        metrics::counter!("prorata_consumer_messages_total", "outcome" => outcome).increment(1);
                    }
                    Err(e) => tracing::warn!(error = %e, "order event not settled; the broker will redeliver it"),
                },
            }
        }
    }
}
