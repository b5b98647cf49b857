//! The group-commit connection's durability, moved out of SQLite's write lock.
//!
//! With `synchronous = FULL` SQLite syncs the WAL inside every commit, so the one writer
//! (and every Compute queued behind it) waited for the disk after each batch: 4.3 ms of a
//! 6 ms batch on a slow disk (RESULTS.md §24). The group-commit connection now commits
//! with `synchronous = NORMAL` — SQLite writes the batch's WAL frames and its commit frame
//! but does not sync them — and this module syncs the WAL file itself, after the write
//! gate is released, while the next batch is already being written. One sync covers every
//! commit that returned before it started, so group commit takes its next batch only once
//! the sync covering the last one has started ([`WalSync::started`]): calls that arrive
//! meanwhile form one batch instead of several small ones that would share the next sync
//! anyway and each write the shared pages again. (§18 of RESULTS.md tried the sync off the
//! writer without that pacing: batches shrank to 4 orders and the tail grew; §24 measures
//! this form.)
//!
//! Durability is unchanged for everyone who hears of a batch:
//! - its callers are answered only after [`WalSync::through`] the batch's ticket returns
//!   (`commit::worker`), that is after an `fsync` of the WAL that started after the
//!   batch's commit returned, when every frame of the batch was already written;
//! - every read of the store that can see a batch's rows (a replay, GetSplit, ListSplits,
//!   balances, entries, the outbox relay) and found some waits, after reading, until
//!   everything committed by then is synced ([`WalSync::settle_if`]), so nothing not yet
//!   durable is ever shown or published;
//! - writes through the store's other connection keep `synchronous = FULL`;
//! - SQLite's own checkpoints still sync the WAL before copying it into the database
//!   file, and sync a restarted WAL's header before its first frame (`NORMAL` keeps both:
//!   `sqlite3PagerSetFlags` keeps the checkpoint sync flags, `sqlite3WalFrames` syncs the
//!   header when it restarts the log).
//!
//! A failed sync leaves the file's state unknown (the kernel may have dropped the dirty
//! pages): the store refuses every later write and read, UNAVAILABLE, and health says
//! NOT_SERVING until it is restarted, as PostgreSQL stops since 2018.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Result, StoreError};

/// Syncs of the WAL at once. Two (a batch committed during a sync starts its own at once
/// instead of waiting for it to end) stored no more orders per second than one
/// (RESULTS.md §24): each `fsync` of a file waits for the disk's queue either way.
const SYNCS_IN_FLIGHT: usize = 1;

/// The WAL file of one database and how far it is known durable.
#[derive(Debug)]
pub(super) struct WalSync {
    path: PathBuf,
    /// Batches committed (not necessarily synced) so far: a batch's ticket.
    committed: AtomicU64,
    /// Every commit up to this ticket is durable.
    synced: tokio::sync::watch::Sender<u64>,
    /// A sync covering every commit up to this ticket has started (`u64::MAX` once a
    /// sync failed: nobody waits for a sync that will not come).
    started: tokio::sync::watch::Sender<u64>,
    /// Syncs in flight at once; a caller queued here usually finds its ticket covered by
    /// a sync before it.
    syncing: tokio::sync::Semaphore,
    /// The open WAL file.
    file: Mutex<Option<Arc<File>>>,
    /// Set by the first failed sync; never cleared.
    failed: Mutex<Option<String>>,
    /// Syncs run (metrics and tests).
    syncs: AtomicU64,
}

impl WalSync {
    /// For the database file at `db`: its WAL is `<db>-wal`, opened at the first sync.
    pub(super) fn new(db: &std::path::Path) -> WalSync {
        let mut path = db.as_os_str().to_owned();
        path.push("-wal");
        WalSync {
            path: PathBuf::from(path),
            committed: AtomicU64::new(0),
            synced: tokio::sync::watch::Sender::new(0),
            started: tokio::sync::watch::Sender::new(0),
            syncing: tokio::sync::Semaphore::new(SYNCS_IN_FLIGHT),
            file: Mutex::new(None),
            failed: Mutex::new(None),
            syncs: AtomicU64::new(0),
        }
    }

    /// Records a commit that returned: its ticket, for [`WalSync::through`]. Call it
    /// after the commit, before anyone can hear of it.
    pub(super) fn committed(&self) -> u64 {
        self.committed.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Fails when an earlier sync failed.
    pub(super) fn check(&self) -> Result<()> {
        match &*self
            .failed
            .lock()
            .expect("never poisoned: no panic while held")
        {
            Some(e) => Err(StoreError::Unavailable(format!(
                "an earlier sync of the SQLite WAL failed ({e}); restart the service"
            ))),
            None => Ok(()),
        }
    }

    /// Returns once every commit up to `ticket` is on disk, syncing the WAL if no sync
    /// that started after that commit has finished.
    pub(super) async fn through(&self, ticket: u64) -> Result<()> {
        if *self.synced.borrow() >= ticket {
            return self.check();
        }
        let _turn = self.syncing.acquire().await.expect("never closed");
        if let Err(e) = self.check() {
            self.started.send_replace(u64::MAX);
            return Err(e);
        }
        if *self.synced.borrow() >= ticket {
            return Ok(());
        }
        // Every commit counted here returned before this sync starts: its frames are
        // written, and the sync covers them.
        let target = self.committed.load(Ordering::Acquire);
        let path = self.path.clone();
        let open = self.file.lock().expect("never poisoned").clone();
        self.started.send_modify(|s| *s = (*s).max(target));
        let began = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || sync_file(&path, open)).await;
        let outcome = match synced {
            Ok(Ok(f)) => {
                *self.file.lock().expect("never poisoned") = Some(f);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the sync task failed: {e}")),
        };
        match outcome {
            Ok(()) => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                metrics::histogram!("prorata_sqlite_wal_sync_seconds")
                    .record(began.elapsed().as_secs_f64());
                self.synced.send_modify(|s| *s = (*s).max(target));
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "syncing the SQLite WAL failed: refusing further writes");
                *self.failed.lock().expect("never poisoned") = Some(e);
                self.started.send_replace(u64::MAX);
                self.check()
            }
        }
    }

    /// Returns once a sync covering `ticket` has started (or failed): a batch committed
    /// before then would share that sync, so group commit waits for it before it takes
    /// the next batch, which then gathers every call queued meanwhile.
    pub(super) async fn started(&self, ticket: u64) {
        let mut rx = self.started.subscribe();
        let _ = rx.wait_for(|s| *s >= ticket).await;
    }

    /// Returns once everything committed so far is durable: called after a read, so that
    /// what it saw is on disk before anyone is shown it. Free when nothing is pending.
    pub(super) async fn settle(&self) -> Result<()> {
        self.through(self.committed.load(Ordering::Acquire)).await
    }

    /// Takes the turn of the next sync and keeps it while the permit lives: tests hold
    /// the sync back with it.
    #[cfg(test)]
    pub(super) async fn hold(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.syncing.acquire().await.expect("never closed")
    }

    /// [`WalSync::settle`] after a read that found something to show. A read that found
    /// nothing shows nothing that could be lost (a look-up of an unknown order id, an empty
    /// page or outbox), so it does not wait for other batches' syncs; it only checks that
    /// the store has not failed.
    pub(super) async fn settle_if(&self, found: bool) -> Result<()> {
        if found {
            self.settle().await
        } else {
            self.check()
        }
    }

    /// Syncs run so far.
    #[cfg(test)]
    pub(super) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The highest ticket known durable.
    #[cfg(test)]
    pub(super) fn synced(&self) -> u64 {
        *self.synced.borrow()
    }
}

/// `fsync` of the WAL, through `open` unless the path now names another file (SQLite
/// deletes the WAL only when the last connection closes, which the store's own
/// connections prevent; checked anyway, one `stat`).
fn sync_file(path: &std::path::Path, open: Option<Arc<File>>) -> std::io::Result<Arc<File>> {
    let now = std::fs::metadata(path)?;
    let file = match open {
        Some(f) if f.metadata()?.ino() == now.ino() => f,
        _ => Arc::new(File::open(path)?),
    };
    file.sync_all()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_in(dir: &std::path::Path) -> WalSync {
        std::fs::create_dir_all(dir).unwrap();
        let db = dir.join("db.sqlite");
        std::fs::write(dir.join("db.sqlite-wal"), b"frames").unwrap();
        WalSync::new(&db)
    }

    /// A ticket is durable after one sync; a ticket already covered costs none; many
    /// waiters for commits made before a sync share it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_covers_every_commit_before_it() {
        let dir = std::env::temp_dir().join(format!("prorata-walsync-{}", std::process::id()));
        let w = Arc::new(wal_in(&dir));
        w.settle().await.unwrap();
        assert_eq!(w.syncs(), 0, "nothing committed: nothing to sync");
        let t1 = w.committed();
        let t2 = w.committed();
        w.through(t1).await.unwrap();
        assert_eq!(
            (w.syncs(), w.synced()),
            (1, t2),
            "the sync covered both commits"
        );
        w.through(t2).await.unwrap();
        w.settle().await.unwrap();
        assert_eq!(w.syncs(), 1, "covered tickets cost no sync");
        let tickets: Vec<u64> = (0..32).map(|_| w.committed()).collect();
        let waits: Vec<_> = tickets
            .iter()
            .map(|&t| {
                let w = w.clone();
                tokio::spawn(async move { w.through(t).await })
            })
            .collect();
        for h in waits {
            h.await.unwrap().unwrap();
        }
        assert_eq!(w.synced(), *tickets.last().unwrap());
        assert!(w.syncs() <= 3, "32 waiters shared the syncs: {}", w.syncs());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A sync that fails (here: no WAL file) fails its waiters and every later one.
    #[tokio::test]
    async fn a_failed_sync_refuses_everything_after_it() {
        let dir = std::env::temp_dir().join(format!("prorata-walfail-{}", std::process::id()));
        let w = wal_in(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let t = w.committed();
        let e = w.through(t).await.unwrap_err();
        assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
        assert!(w.check().is_err());
        assert!(w.settle().await.is_err(), "a later read is refused too");
        assert_eq!(w.synced(), 0);
    }
}
