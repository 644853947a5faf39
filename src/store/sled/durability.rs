//! Group commit for sled: one thread makes writes durable for every caller waiting
//! at that moment, so N concurrent ingests cost one flush + fsync instead of N.
//!
//! sled's `flush()` writes its log buffers and calls `sync_file_range`, which neither
//! flushes the device cache nor syncs blob files (values above ~128 KiB are written to
//! `blobs/` without any sync). So after `flush()` this thread calls `fdatasync` on the
//! log file and `fsync` on every blob file it has not synced yet, plus their directory.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Handle to the commit thread.
pub struct Durability {
    /// `None` once closed.
    requests: Mutex<Option<mpsc::Sender<Waiter>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Durability {
    pub fn start(db: sled::Db, dir: &Path) -> std::io::Result<Self> {
        let log = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        let (requests, queue) = mpsc::channel::<Waiter>();
        let mut syncer = Syncer {
            db,
            log,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        };
        let thread = std::thread::Builder::new()
            .name("hookrelay-commit".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    // Everyone queued now wrote before asking, so one flush covers them all.
                    let mut waiters = vec![first];
                    waiters.extend(queue.try_iter());
                    let result = syncer.sync().map_err(|e| e.to_string());
                    if let Err(error) = &result {
                        tracing::error!(%error, waiters = waiters.len(), "making writes durable failed");
                    }
                    for waiter in waiters {
                        let _ = waiter.send(result.clone());
                    }
                }
            })?;
        Ok(Self {
            requests: Mutex::new(Some(requests)),
            thread: Mutex::new(Some(thread)),
        })
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
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::backend("making writes durable", message)),
            Err(_) => Err(StoreError::backend("making writes durable", "commit thread stopped")),
        }
    }

    /// Stops the thread after it has served every request made before, and waits
    /// for it, so that its handle on the database is gone when this returns.
    pub fn close(&self) {
        drop(self.requests.lock().expect("commit channel poisoned").take());
        if let Some(thread) = self.thread.lock().expect("commit thread poisoned").take() {
            let _ = thread.join();
        }
    }
}

struct Syncer {
    db: sled::Db,
    /// sled's log file, `<dir>/db`.
    log: File,
    blobs_dir: PathBuf,
    /// Blob files already fsync'd (blob files are written once and never changed).
    synced_blobs: HashSet<std::ffi::OsString>,
}

impl Syncer {
    fn sync(&mut self) -> std::io::Result<()> {
        self.db.flush().map_err(std::io::Error::other)?;
        self.log.sync_data()?;
        self.sync_new_blobs()
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

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
