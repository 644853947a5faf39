//! Group commit for sled: writes are made durable for every caller waiting at that
//! moment, so N concurrent ingests cost one flush + fsync instead of N.
//!
//! Two threads form a pipeline: `hookrelay-commit` calls sled's `flush()` for everyone
//! queued, then hands them to `hookrelay-fsync`, which syncs the files and answers. So
//! the next group's flush overlaps this group's fsync instead of waiting for it.
//!
//! sled's `flush()` writes its log buffers and calls `sync_file_range`, which neither
//! flushes the device cache nor syncs blob files (values above ~128 KiB are written to
//! `blobs/` without any sync). So after `flush()` this thread calls `fdatasync` on the
//! log file and `fsync` on every blob file it has not synced yet, plus their directory.
//!
//! A sync that fails or hangs (a full disk can leave sled stuck inside `flush`) marks
//! the store failed: callers get an error after `BARRIER_TIMEOUT`, and the application
//! stops with a clear message instead of serving a store it cannot trust.
//!
//! Every few seconds the thread also records the log's synced length in `LOGSIZE`.
//! sled's log never shrinks, so a `db` shorter than that at start-up has been cut,
//! and is refused rather than silently opened with events missing.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Longest a caller waits for its write to become durable. A healthy fsync takes
/// milliseconds; a provider gives up on us long before this anyway.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the synced log length is recorded.
const LOGSIZE_EVERY: Duration = Duration::from_secs(5);
/// The file in the data directory holding the last recorded log length.
pub const LOGSIZE_FILE: &str = "LOGSIZE";

/// Handle to the commit threads.
pub struct Durability {
    /// `None` once closed.
    requests: Mutex<Option<mpsc::Sender<Waiter>>>,
    /// The flush thread, then the fsync thread.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Set once a sync failed or hung: the store can no longer promise durability.
    failure: Arc<OnceLock<String>>,
}

impl Durability {
    pub fn start(db: sled::Db, dir: &Path) -> std::io::Result<Self> {
        let log = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        let (requests, queue) = mpsc::channel::<Waiter>();
        let (flushed, flushed_queue) = mpsc::channel::<Vec<Waiter>>();
        let failure: Arc<OnceLock<String>> = Arc::default();
        let flush_failure = failure.clone();
        let flusher = std::thread::Builder::new()
            .name("hookrelay-commit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    // Everyone queued now wrote before asking, so one flush covers them all.
                    let mut waiters = vec![first];
                    waiters.extend(queue.try_iter());
                    match db.flush() {
                        Ok(_) => {
                            if flushed.send(waiters).is_err() {
                                return;
                            }
                        }
                        Err(error) => {
                            let error = error.to_string();
                            tracing::error!(%error, waiters = waiters.len(), "making writes durable failed");
                            let _ = flush_failure.set(error.clone());
                            answer(waiters, Err(error));
                        }
                    }
                }
            })?;
        let thread_failure = failure.clone();
        let mut syncer = Syncer {
            log,
            dir: dir.to_owned(),
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
            logsize_written: (0, Instant::now()),
        };
        let fsyncer = std::thread::Builder::new()
            .name("hookrelay-fsync".into())
            .spawn(move || {
                while let Ok(first) = flushed_queue.recv() {
                    // Everything flushed so far is covered by one fsync.
                    let mut waiters = first;
                    for more in flushed_queue.try_iter() {
                        waiters.extend(more);
                    }
                    let result = syncer.sync().map_err(|e| e.to_string());
                    if let Err(error) = &result {
                        tracing::error!(%error, waiters = waiters.len(), "making writes durable failed");
                        let _ = thread_failure.set(error.clone());
                    }
                    answer(waiters, result);
                }
                // Closed: the last sync ran, so the log length is the final one.
                if thread_failure.get().is_none() {
                    syncer.record_log_size(true);
                }
            })?;
        Ok(Self {
            requests: Mutex::new(Some(requests)),
            threads: Mutex::new(vec![flusher, fsyncer]),
            failure,
        })
    }

    /// Records that the store can no longer be trusted (the first reason wins).
    pub fn mark_failed(&self, reason: String) {
        if self.failure.set(reason.clone()).is_ok() {
            tracing::error!(%reason, "the store failed");
        }
    }

    /// Why the store can no longer be trusted, once a sync failed or hung.
    pub fn failure(&self) -> Option<String> {
        self.failure.get().cloned()
    }

    /// Returns once every write made before the call is on disk.
    pub async fn barrier(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let sent = match &*self.requests.lock().expect("commit channel poisoned") {
            Some(requests) => requests.send(done).is_ok(),
            None => false,
        };
        if !sent {
            return Err(StoreError::backend("making writes durable", "the store is closed"));
        }
        match tokio::time::timeout(BARRIER_TIMEOUT, wait).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(StoreError::backend("making writes durable", message)),
            Ok(Err(_)) => Err(StoreError::backend("making writes durable", "commit threads stopped")),
            Err(_) => {
                let message = format!(
                    "a sync did not finish within {} s (disk full or failing?)",
                    BARRIER_TIMEOUT.as_secs()
                );
                let _ = self.failure.set(message.clone());
                Err(StoreError::backend("making writes durable", message))
            }
        }
    }

    /// Stops the threads after they have served every request made before, and waits
    /// for them, so that their handle on the database is gone when this returns.
    /// A thread stuck in a failed sync is left behind (the process is ending anyway).
    pub fn close(&self) {
        drop(self.requests.lock().expect("commit channel poisoned").take());
        let threads = std::mem::take(&mut *self.threads.lock().expect("commit threads poisoned"));
        if self.failure.get().is_none() {
            for thread in threads {
                let _ = thread.join();
            }
        }
    }
}

/// The fsync stage's state.
struct Syncer {
    /// sled's log file, `<dir>/db`.
    log: File,
    dir: PathBuf,
    blobs_dir: PathBuf,
    /// Log length last recorded in `LOGSIZE`, and when.
    logsize_written: (u64, Instant),
    /// Blob files already fsync'd (blob files are written once and never changed).
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl Syncer {
    /// Makes what sled has flushed durable.
    fn sync(&mut self) -> std::io::Result<()> {
        self.log.sync_data()?;
        self.sync_new_blobs()?;
        self.record_log_size(false);
        Ok(())
    }

    /// Records the synced log length now and then. Not fsync'd: a lost or older
    /// record only makes the start-up check weaker, never wrong, as the log only grows.
    fn record_log_size(&mut self, now: bool) {
        let Ok(len) = self.log.metadata().map(|m| m.len()) else {
            return;
        };
        let (written, at) = self.logsize_written;
        if len == written || (!now && at.elapsed() < LOGSIZE_EVERY) {
            return;
        }
        let tmp = self.dir.join(format!("{LOGSIZE_FILE}.tmp"));
        let result =
            std::fs::write(&tmp, len.to_string()).and_then(|_| std::fs::rename(&tmp, self.dir.join(LOGSIZE_FILE)));
        match result {
            Ok(()) => self.logsize_written = (len, Instant::now()),
            Err(error) => tracing::warn!(%error, "could not record the log length"),
        }
    }

    fn sync_new_blobs(&mut self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut synced_any = false;
        for entry in entries {
            let name = entry?.file_name();
            if !self.synced_blobs.contains(&name) {
                match File::open(self.blobs_dir.join(&name)) {
                    Ok(file) => file.sync_all()?,
                    // Collected by sled between listing and opening: nothing to sync.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
            }
            present.insert(name);
        }
        if synced_any {
            sync_dir(&self.blobs_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

fn answer(waiters: Vec<Waiter>, result: Result<(), String>) {
    for waiter in waiters {
        let _ = waiter.send(result.clone());
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
