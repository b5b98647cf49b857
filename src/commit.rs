//! Group commit: concurrent Compute calls share one database transaction.
//!
//! Each call hands its plan and engine closure to a queue; a worker takes what is queued,
//! up to its fair share when several workers run ([`fair_share`]) and up to `max_batch`,
//! waiting at most `wait` for more, and the store writes the
//! batch in one transaction with a fixed number of statements (`store::batch`), falling
//! back to one savepoint per order if any order of it fails. Idempotency is unchanged (a
//! duplicate later in the batch replays the first), volume counters move in the order the
//! calls arrived, and commits stay synchronous: a caller hears back only after the
//! transaction holding its result is durable. A store may return a batch committed but not
//! yet synced, with a ticket (SQLite, `store::wal_sync`): its answers then wait for the sync
//! in a task of their own, and the worker takes the next batch once that sync has started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::store::{CommitOutcome, PendingSplit, Store, StoreError};

/// Group-commit tuning.
#[derive(Debug, Clone, Copy)]
pub struct GroupSettings {
    /// Most orders in one transaction; 1 disables grouping.
    pub max_batch: usize,
    /// How long a worker waits for more orders once it has one (0: take what is queued).
    pub wait: Duration,
    /// Transactions in flight at once (SQLite has one writer: always 1 there).
    pub workers: usize,
    /// Orders waiting for a worker; beyond it callers wait (back-pressure).
    pub queue: usize,
}

impl GroupSettings {
    /// The default for a backend: batches of up to [`MAX_BATCH`] orders, taken as they
    /// are queued (no wait: a lone order is stored at once). SQLite has one writer, so
    /// one worker; PostgreSQL runs [`PG_WORKERS`] batches at once, so a batch fills
    /// while others commit. Batches lock in one global order (see `store::batch`), so
    /// concurrent batches, on one replica or many, cannot deadlock.
    pub fn for_backend(backend: &str) -> GroupSettings {
        GroupSettings {
            max_batch: MAX_BATCH,
            wait: Duration::ZERO,
            workers: if backend == "sqlite" { 1 } else { PG_WORKERS },
            queue: QUEUE,
        }
    }
}

/// Most orders in one transaction: large enough that a batch's fixed cost (a fixed number
/// of statements and one fsync) is shared widely, small enough that its statements stay
/// far below SQLite's bound-parameter limit and a batch commits in milliseconds.
pub const MAX_BATCH: usize = 64;
/// Concurrent batch transactions on PostgreSQL (each holds one pooled connection, of
/// `db_max_connections`). Batches that touch the same counter rows serialise on them
/// until commit, so more workers mostly wait: measured on 2 cores, 1, 2 and 4 workers
/// stored the same orders/s within noise, and 4 doubled p99 (benches/RESULTS.md §8).
/// Two let one batch read and compute while another commits.
pub const PG_WORKERS: usize = 2;
/// Largest `group_commit_max_batch` accepted: SQLite's bound parameters per statement
/// (32,766) over the widest multi-row insert (13 columns) leaves room for 2,000 rows;
/// chunks of `MAX_ROWS_PER_INSERT` keep every statement inside it anyway.
pub const MAX_BATCH_LIMIT: usize = 1024;
/// Largest `group_commit_workers` accepted (each holds a pooled connection).
pub const MAX_WORKERS: usize = 64;
/// Orders waiting for a worker; beyond it callers wait (back-pressure).
pub const QUEUE: usize = 4096;

struct Job {
    pending: PendingSplit,
    reply: Reply,
    /// When the call joined the queue.
    queued: std::time::Instant,
}

/// The queue and its workers.
#[derive(Debug, Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pending.fmt(f)
    }
}

impl GroupCommitter {
    /// Starts the workers; they stop when the last committer handle is dropped.
    pub fn start(store: Arc<dyn Store>, s: GroupSettings) -> GroupCommitter {
        let (tx, rx) = mpsc::channel(s.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let workers = if store.backend() == "sqlite" {
            1
        } else {
            s.workers.max(1)
        };
        let s = GroupSettings { workers, ..s };
        let in_flight = Arc::new(AtomicUsize::new(0));
        for _ in 0..workers {
            tokio::spawn(worker(store.clone(), rx.clone(), s, in_flight.clone()));
        }
        GroupCommitter { tx }
    }

    /// Stores one order with whatever else is queued; answers once it is durable.
    pub async fn commit(&self, pending: PendingSplit) -> Result<CommitOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                pending,
                reply,
                queued: std::time::Instant::now(),
            })
            .await
            .map_err(|_| StoreError::Unavailable("the group committer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the group committer dropped the order".into()))?
    }
}

/// The most orders a worker takes now. One worker (SQLite) takes everything queued, up to
/// `max_batch`. Several take an even share of the orders in the system (those queued,
/// with the one it holds, and those in the other workers' batches), within `max_batch`.
/// A worker that took everything queued left the next one only the few calls that came
/// in meanwhile: one large batch and one small, in turn, and the small one still waited
/// on the large one's counter rows. Even shares leave a backlog, so a worker that frees
/// up finds a full batch waiting (RESULTS.md §29).
fn fair_share(queued: usize, in_flight: usize, s: GroupSettings) -> usize {
    let max = s.max_batch.max(1);
    if s.workers <= 1 {
        return max;
    }
    (queued + in_flight).div_ceil(s.workers).clamp(1, max)
}

async fn next_batch(
    rx: &Mutex<mpsc::Receiver<Job>>,
    s: GroupSettings,
    in_flight: &AtomicUsize,
) -> Option<Vec<Job>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let take = fair_share(rx.len() + 1, in_flight.load(Ordering::Relaxed), s);
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + s.wait;
    while batch.len() < take {
        match rx.try_recv() {
            Ok(j) => batch.push(j),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if s.wait.is_zero() {
                    break;
                }
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(j)) => batch.push(j),
                    _ => break,
                }
            }
        }
    }
    // Counted before the queue is released: the next worker sees this batch in flight.
    in_flight.fetch_add(batch.len(), Ordering::Relaxed);
    Some(batch)
}

async fn worker(
    store: Arc<dyn Store>,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    s: GroupSettings,
    in_flight: Arc<AtomicUsize>,
) {
    while let Some(batch) = next_batch(&rx, s, &in_flight).await {
        let taken_orders = batch.len();
        // Arrival order is kept: volume counters move in the order the calls came in.
        metrics::histogram!("prorata_group_commit_batch_orders").record(batch.len() as f64);
        // How long each call waited in the queue for a worker to take it.
        let taken = std::time::Instant::now();
        for j in &batch {
            metrics::histogram!("prorata_group_commit_queue_seconds")
                .record(taken.duration_since(j.queued).as_secs_f64());
        }
        let (pendings, replies): (Vec<PendingSplit>, Vec<_>) =
            batch.into_iter().map(|j| (j.pending, j.reply)).unzip();
        match store.commit_splits_staged(&pendings).await {
            Ok((results, 0)) => answer(replies, results),
            // Committed, not yet durable: the answers wait for the sync in a task of their
            // own (store::wal_sync), and this worker goes on to the next batch.
            Ok((results, ticket)) => {
                let s = store.clone();
                tokio::spawn(async move {
                    match s.durable(ticket).await {
                        Ok(()) => answer(replies, results),
                        Err(e) => fail(replies, e),
                    }
                });
                // Every batch committed before the sync covering this one starts would
                // share that sync: wait for it to start and take the calls queued
                // meanwhile as one batch, instead of as many small ones that each write
                // the shared pages again (RESULTS.md §18, §24).
                store.sync_started(ticket).await;
            }
            // The transaction failed as a whole: nothing of the batch was stored.
            Err(e) => fail(replies, e),
        }
        in_flight.fetch_sub(taken_orders, Ordering::Relaxed);
    }
}

type Reply = oneshot::Sender<Result<CommitOutcome, StoreError>>;

fn answer(replies: Vec<Reply>, results: Vec<Result<CommitOutcome, StoreError>>) {
    for (reply, r) in replies.into_iter().zip(results) {
        let _ = reply.send(r);
    }
}

/// Every caller of the batch hears the same error: UNAVAILABLE stays UNAVAILABLE (retry),
/// anything else is a database error.
fn fail(replies: Vec<Reply>, e: StoreError) {
    let unavailable = matches!(e, StoreError::Unavailable(_));
    let msg = e.to_string();
    for reply in replies {
        let err = if unavailable {
            StoreError::Unavailable(msg.clone())
        } else {
            StoreError::Database(msg.clone())
        };
        let _ = reply.send(Err(err));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(workers: usize, max_batch: usize) -> GroupSettings {
        GroupSettings {
            max_batch,
            wait: Duration::ZERO,
            workers,
            queue: QUEUE,
        }
    }

    #[test]
    fn one_worker_takes_everything_queued_up_to_the_batch_limit() {
        assert_eq!(fair_share(1, 0, settings(1, 64)), 64);
        assert_eq!(fair_share(500, 0, settings(1, 64)), 64);
    }

    #[test]
    fn several_workers_take_an_even_share_of_the_orders_in_the_system() {
        // 40 queued and 24 in the other worker's batch: 64 over 2 workers.
        assert_eq!(fair_share(40, 24, settings(2, 64)), 32);
        // Rounded up, so an odd order is not left behind.
        assert_eq!(fair_share(5, 0, settings(2, 64)), 3);
        // A lone order is taken at once.
        assert_eq!(fair_share(1, 0, settings(2, 64)), 1);
        assert_eq!(fair_share(1, 30, settings(2, 64)), 16);
        // Never past max_batch.
        assert_eq!(fair_share(1_000, 200, settings(4, 64)), 64);
        assert_eq!(fair_share(9, 0, settings(3, 2)), 2);
    }
}
