//! The embedded store: sled 0.34 in one directory, for one process.
//!
//! Writes from ingest and the admin API return only after [`Durability`] has flushed
//! and fsync'd them. Outcomes of delivery attempts are not fsync'd one by one: sled
//! flushes them within `FLUSH_EVERY_MS`, and one lost on a crash only means the
//! delivery is attempted again (delivery is at-least-once).
//!
//! The hot paths (storing events, recording attempts) use no sled transaction: each
//! one writes sled's log buffer out twice and wakes its whole I/O thread pool. Their
//! writes are ordered instead. sled recovers its log up to the first tear, so after a
//! crash the writes of one thread survive as a prefix, and the write made last stands
//! for all before it: an event's record, an attempt's removal of its queue entry.
//!
//! First attempts are not queue entries: they wait in memory, and one `fresh` key per
//! event brings them back after a restart (`sled/fresh.rs`). Retries, replays,
//! recoveries, and the first attempts of an event that found a lane full, are entries
//! of the `queue` tree.
//!
//! Leases live in memory: sled admits one process, and a crash of that process ends
//! all its leases at once, which is exactly what lease expiry would do.

mod access;
mod cache;
mod durability;
mod fresh;
pub mod keys;
pub mod records;
mod scan_starts;
mod sealed;
mod threads;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional as _;

use self::cache::SettingsCache;
use self::durability::Durability;
use self::fresh::Fresh;
pub use self::fresh::LANE_LIMIT;
use self::records::{
    decode, decode_delivery, encode, encode_compact, encode_with_attempt, fresh_value, held_attempts,
    list_deliveries_from, page_of_attempts, read_delivery_from, read_delivery_in, spill_in, DeliveryRecord, FanOut,
};
use self::scan_starts::ScanStarts;
use self::threads::{Batch, Replies, StoreThreads};
use super::repo::{AcceptOutcome, Claim, Claimed, Disposition, Page, PageRequest, Store, StoreError};
use crate::domain::MerchantUpdate;
use crate::domain::{
    Attempt, Delivery, DeliveryStatus, Endpoint, EndpointId, Event, EventId, Merchant, MerchantId, UnixMillis,
};
use crate::secrets::SecretCipher;

/// The file in the data directory that names its layout (see `keys.rs`).
const FORMAT_FILE: &str = "FORMAT";
/// The layout this build writes. 2: events, deliveries and attempts in the compact
/// layout, queue entries carrying the attempt count, one fan-out record per event.
/// 3: a delivery that succeeded at its first attempt holds that attempt in its record.
/// 4: first attempts are not queue entries but a `fresh` key per event (`fresh.rs`).
/// 5: a delivery record holds the delivery's latest attempt, whatever its outcome.
/// 6: the fan-out of an event whose first attempts wait in memory is its `fresh`
/// key's value, not a record of the `deliveries` tree (an older build would take the
/// event for deleted).
const FORMAT: &str = "hookrelay-sled 6";
/// Earlier layouts this build reads too; opening one marks it as `FORMAT` first, since
/// an older build could not read what this one writes.
const READABLE_FORMATS: &[&str] = &[
    "hookrelay-sled 1",
    "hookrelay-sled 2",
    "hookrelay-sled 3",
    "hookrelay-sled 4",
    "hookrelay-sled 5",
];
/// Files hookrelay may create in a data directory before the store.
const OWN_FILES: &[&str] = &[
    "admin_token",
    crate::secrets::KEY_FILE,
    FORMAT_FILE,
    durability::LOGSIZE_FILE,
];
/// How often sled writes its buffers out on its own (not an fsync).
const FLUSH_EVERY_MS: u64 = 500;

#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    merchants: sled::Tree,
    endpoints: sled::Tree,
    events: sled::Tree,
    payloads: sled::Tree,
    dedupe: sled::Tree,
    deliveries: sled::Tree,
    queue: sled::Tree,
    /// Events with first attempts not yet recorded (`fresh.rs`).
    fresh_keys: sled::Tree,
    failed: sled::Tree,
    attempts: sled::Tree,
    durability: Durability,
    /// Queue keys claimed by a worker of this process → lease deadline (ms). An
    /// attempt whose queue entry lost its lease (replayed, retired) changes nothing.
    leases: Mutex<HashMap<Vec<u8>, UnixMillis>>,
    /// Where each endpoint's next claim may start its scan. Every insert into the queue
    /// reports its key here, after the insert.
    scan_starts: Mutex<ScanStarts>,
    /// First attempts, queued in memory once their event is durable (`fresh.rs`).
    fresh: Mutex<Fresh>,
    /// Events queued in the queue tree (a lane was full) whose write is not yet
    /// fsync'd. Claims skip their entries: an event must not be delivered before a
    /// crash could no longer undo it.
    unsynced: Mutex<HashSet<EventId>>,
    /// Pending deliveries; counted at open, then kept up to date by every transition.
    depth: AtomicI64,
    /// Serialises endpoint creation so the per-merchant limit cannot be overrun.
    endpoint_writes: Mutex<()>,
    /// Serialises batches of accepted events, so a dedupe key checked is still absent
    /// when it is written (see `store_batch`).
    ingest_writes: Mutex<()>,
    /// Serialises every change of a queue entry that exists already (attempts recorded,
    /// replay, recovery, retirement), so each sees the queue as the last one left it.
    queue_writes: Mutex<()>,
    /// Admin tokens (hashes only) and the audit log.
    access: access::AccessTrees,
    /// Seals the secrets of merchants and endpoints on write, opens them on read.
    cipher: SecretCipher,
    /// Where every store call runs.
    threads: StoreThreads,
    /// Merchants and endpoint lists as last read, for ingest.
    cache: SettingsCache,
    /// Events waiting to be stored.
    acceptances: Batch<Acceptance>,
    /// Claims waiting to be answered.
    claims: Batch<ClaimRequest>,
    /// Attempts waiting to be recorded.
    completions: Batch<Completion>,
}

impl SledStore {
    pub async fn open(dir: &Path, cache_bytes: u64, cipher: SecretCipher) -> Result<Self, StoreError> {
        let dir = dir.to_owned();
        let store = tokio::task::spawn_blocking(move || Self::open_blocking(dir, cache_bytes, cipher))
            .await
            .map_err(|e| {
                // sled panics on some kinds of damage instead of returning an error.
                let cause = e
                    .try_into_panic()
                    .ok()
                    .and_then(|p| panic_message(&*p))
                    .unwrap_or_default();
                StoreError::Incompatible(format!(
                    "the sled database could not be read; it may be damaged ({cause})"
                ))
            })??;
        // The key check, and secrets sealed at this start, are durable before use.
        store.inner.durability.barrier().await?;
        Ok(store)
    }

    fn open_blocking(dir: PathBuf, cache_bytes: u64, cipher: SecretCipher) -> Result<Self, StoreError> {
        check_data_dir(&dir)?;
        let db = sled::Config::new()
            .path(&dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(|e| match e {
                // sled reports its exclusive file lock as a plain I/O error.
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked(format!("{} is open in another hookrelay process", dir.display()))
                }
                other => StoreError::backend("opening the sled database", other),
            })?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| StoreError::backend("opening a tree", e));
        // First of all: a store sealed with another key must not open.
        sealed::check_key(&db, &tree("merchants")?, &tree("endpoints")?, &cipher)?;
        let durability =
            Durability::start(db.clone(), &dir).map_err(|e| StoreError::backend("starting the commit thread", e))?;
        let queue = tree("queue")?;
        let queued = queue_at_open(&queue)?;
        let fresh_keys = tree("fresh")?;
        let deliveries = tree("deliveries")?;
        let endpoints = tree("endpoints")?;
        let (fresh, untried) = fresh_at_open(&fresh_keys, &deliveries, &endpoints)?;
        let inner = Inner {
            merchants: tree("merchants")?,
            endpoints,
            events: tree("events")?,
            payloads: tree("payloads")?,
            dedupe: tree("dedupe")?,
            deliveries,
            queue,
            fresh_keys,
            failed: tree("failed")?,
            attempts: tree("attempts")?,
            durability,
            leases: Mutex::new(HashMap::new()),
            scan_starts: Mutex::new(ScanStarts::default()),
            fresh: Mutex::new(fresh),
            unsynced: Mutex::new(HashSet::new()),
            depth: AtomicI64::new(queued + untried),
            endpoint_writes: Mutex::new(()),
            ingest_writes: Mutex::new(()),
            queue_writes: Mutex::new(()),
            access: access::AccessTrees::open(&db)?,
            cipher,
            threads: StoreThreads::start(store_threads())
                .map_err(|e| StoreError::backend("starting the store threads", e))?,
            cache: SettingsCache::default(),
            acceptances: Batch::default(),
            claims: Batch::default(),
            completions: Batch::default(),
            db,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Runs sled calls on the store threads: they may wait on disk.
    async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.schedule("running a store task", move |inner| {
            let mut replies = Replies::default();
            replies.add(reply, work(inner));
            replies
        })?;
        let result = answer
            .await
            .map_err(|_| StoreError::backend("running a store task", "the task panicked (see the log)"))?;
        if let Err(error) = &result {
            self.inner.note_failure(error);
        }
        result
    }

    /// Runs a write, then waits until it is durable.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let value = self.run(work).await?;
        self.inner.durability.barrier().await?;
        Ok(value)
    }

    /// Queues a request in `batch`. The first request queued schedules `job` on the store
    /// threads, and that job answers every request queued by the time it runs.
    async fn batched<R, T>(
        &self,
        context: &'static str,
        batch: &Batch<R>,
        job: fn(&Inner) -> Replies,
        request: impl FnOnce(Reply<T>) -> R,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        if batch.push(request(reply)) {
            self.schedule(context, job)?;
        }
        answer
            .await
            .map_err(|_| StoreError::backend(context, "the task panicked (see the log)"))?
    }

    /// Runs `job` on a store thread, then sends its answers once it let go of the store
    /// (see `Replies`).
    fn schedule(
        &self,
        context: &'static str,
        job: impl FnOnce(&Inner) -> Replies + Send + 'static,
    ) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        let scheduled = self.inner.threads.submit(move || {
            let replies = job(&inner);
            drop(inner);
            replies.send();
        });
        if scheduled {
            Ok(())
        } else {
            Err(StoreError::backend(context, "the store threads stopped"))
        }
    }

    /// A write to a merchant or its endpoints: the cached copies are forgotten after it.
    async fn write_settings<T, F>(&self, merchant: &MerchantId, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let result = self.write(work).await;
        self.inner.cache.forget(merchant);
        result
    }

    /// The write of an event and its deliveries, then the durability barrier.
    /// Events arriving together are written in one job and share one sync.
    async fn accept_event_durably(&self, event: &Event, endpoints: &[EndpointId]) -> Result<AcceptOutcome, StoreError> {
        let outcome = self
            .batched(
                "storing an event",
                &self.inner.acceptances,
                Inner::store_acceptances,
                |reply| Acceptance {
                    event: event.clone(),
                    endpoints: endpoints.to_vec(),
                    reply,
                },
            )
            .await?;
        self.inner.durability.barrier().await?;
        Ok(outcome)
    }
}

/// How many entries the queue holds.
fn queue_at_open(queue: &sled::Tree) -> Result<i64, StoreError> {
    let mut depth = 0;
    for entry in queue.iter().keys() {
        entry.map_err(sled_err("counting the queue"))?;
        depth += 1;
    }
    Ok(depth)
}

/// The first attempts not yet recorded, as the `fresh` keys name them: each of the
/// key's event's endpoints that still exists and has no delivery record of its own.
/// Keys left with none are removed. Also returns how many there are.
fn fresh_at_open(
    fresh_keys: &sled::Tree,
    deliveries: &sled::Tree,
    endpoints: &sled::Tree,
) -> Result<(Fresh, i64), StoreError> {
    let mut fresh = Fresh::default();
    let mut count = 0;
    let read = sled_err("reading first attempts");
    for entry in fresh_keys.iter() {
        let (key, value) = entry.map_err(&read)?;
        let event = std::str::from_utf8(&key)
            .map_err(|e| e.to_string())
            .and_then(EventId::parse)
            .map_err(|e| StoreError::backend("reading a fresh key", e))?;
        let gone = || fresh_keys.remove(&key).map_err(sled_err("removing a fresh key"));
        // The key holds the event's fan-out (layout 6); an empty one (layouts 4 and 5)
        // names the fan-out record in the `deliveries` tree. Without either the event
        // was deleted.
        let raw = if !value.is_empty() {
            value
        } else if let Some(raw) = deliveries.get(event.as_str()).map_err(&read)? {
            raw
        } else {
            gone()?;
            continue;
        };
        let fan_out: FanOut = decode(&raw)?;
        let mut pending = Vec::new();
        for endpoint in &fan_out.endpoints {
            let exists = endpoints
                .contains_key(keys::merchant_child(&fan_out.merchant_id, endpoint.as_str()))
                .map_err(&read)?;
            if exists
                && !deliveries
                    .contains_key(keys::delivery(&event, endpoint))
                    .map_err(&read)?
            {
                pending.push(endpoint.clone());
            }
        }
        if pending.is_empty() {
            gone()?;
            continue;
        }
        count += fresh.add(&event, &fan_out.merchant_id, fan_out.received_at, &pending) as i64;
    }
    Ok((fresh, count))
}

/// How many store threads: one per core, and one more so a thread waiting on the disk
/// does not leave a core idle. (Two more was the better count before claims became
/// cheap; measured again in docs/benchmarks.md.)
fn store_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) + 1
}

/// Makes sure `dir` is a hookrelay data directory of this format, or an empty one
/// (which it then marks). Anything else is refused rather than opened over.
pub(super) fn check_data_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::backend("creating the data directory", e))?;
    let format_path = dir.join(FORMAT_FILE);
    match std::fs::read_to_string(&format_path) {
        Ok(found) if found.trim() == FORMAT => check_log_intact(dir),
        Ok(found) if READABLE_FORMATS.contains(&found.trim()) => {
            check_log_intact(dir)?;
            write_durably(dir, FORMAT_FILE, format!("{FORMAT}\n").as_bytes())
                .map_err(|e| StoreError::backend("upgrading the FORMAT file", e))
        }
        Ok(found) => Err(StoreError::Incompatible(format!(
            "{} says {:?}; this build reads {FORMAT:?} (a data directory of another hookrelay version?)",
            format_path.display(),
            found.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let entries = std::fs::read_dir(dir).map_err(|e| StoreError::backend("reading the data directory", e))?;
            let foreign: Vec<String> = entries
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| !OWN_FILES.contains(&name.as_str()) && !name.starts_with("FORMAT."))
                .collect();
            if !foreign.is_empty() {
                return Err(StoreError::Incompatible(format!(
                    "{} is not empty and has no {FORMAT_FILE} file, so it is not a hookrelay data directory \
                     (it holds {}); use an empty or new directory",
                    dir.display(),
                    foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                )));
            }
            write_durably(dir, FORMAT_FILE, format!("{FORMAT}\n").as_bytes())
                .map_err(|e| StoreError::backend("writing the FORMAT file", e))
        }
        Err(e) => Err(StoreError::backend("reading the FORMAT file", e)),
    }
}

/// Refuses a data directory whose sled log is missing, empty or shorter than its
/// recorded synced length: sled would open it as if the lost tail were a crash's torn
/// write, and acknowledged events would be gone without a word.
fn check_log_intact(dir: &Path) -> Result<(), StoreError> {
    let log = dir.join("db");
    let len = match std::fs::metadata(&log) {
        Ok(meta) => meta.len(),
        // FORMAT is written before sled creates its files: a first start cut short.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.join("conf").exists() => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(StoreError::Incompatible(format!(
                "{} is missing: the store is damaged",
                log.display()
            )))
        }
        Err(e) => return Err(StoreError::backend("reading the store's log file", e)),
    };
    if len == 0 && dir.join("conf").exists() {
        return Err(StoreError::Incompatible(format!(
            "{} is empty: the store is damaged",
            log.display()
        )));
    }
    let recorded = std::fs::read_to_string(dir.join(durability::LOGSIZE_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if let Some(recorded) = recorded.filter(|recorded| len < *recorded) {
        return Err(StoreError::Incompatible(format!(
            "{} has {len} bytes but had {recorded} synced: the store is damaged (truncated); restore it from a backup",
            log.display()
        )));
    }
    Ok(())
}

/// Writes a small file atomically: temporary file, fsync, rename, fsync the directory.
fn write_durably(dir: &Path, name: &str, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// The sled I/O error behind a store error, if that is what it is.
fn sled_io_error(error: &StoreError) -> Option<String> {
    let StoreError::Backend { source, .. } = error else {
        return None;
    };
    match source.downcast_ref::<sled::Error>() {
        Some(sled::Error::Io(io)) => Some(io.to_string()),
        _ => None,
    }
}

fn sled_err(context: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::backend(context, e)
}

/// Errors inside a sled transaction: our own aborts or sled's.
fn tx_err<E: Into<StoreError>>(context: &'static str) -> impl Fn(TransactionError<E>) -> StoreError {
    move |e| match e {
        TransactionError::Abort(e) => e.into(),
        TransactionError::Storage(e) => StoreError::backend(context, e),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn tx_decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConflictableTransactionError<StoreError>> {
    decode(bytes).map_err(abort)
}

/// Collects one page from an ordered scan. `cursor` turns an item into its key.
fn collect_page<T>(
    scan: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
    mut keep: impl FnMut(&T) -> bool,
    cursor: impl Fn(&sled::IVec, &T) -> String,
) -> Result<Page<T>, StoreError>
where
    T: DeserializeOwned,
{
    let mut items = Vec::new();
    let mut last_key = None;
    for entry in scan {
        let (key, value) = entry.map_err(sled_err("scanning a list"))?;
        let item: T = decode(&value)?;
        if !keep(&item) {
            continue;
        }
        if items.len() == limit {
            let next = last_key.take();
            return Ok(Page { items, next });
        }
        last_key = Some(cursor(&key, &item));
        items.push(item);
    }
    Ok(Page { items, next: None })
}

/// The trees a replay or a recovery changes, inside their transaction.
struct RequeueTrees<'a> {
    deliveries: &'a TransactionalTree,
    queue: &'a TransactionalTree,
    failed: &'a TransactionalTree,
    attempts: &'a TransactionalTree,
}

/// What a requeue changed in the queue.
struct Requeued {
    /// The delivery was not pending before: the queue grew by one.
    grew: bool,
    /// The delivery was pending: the queue entry it had, now replaced.
    replaced: Option<Vec<u8>>,
    /// The queue entry it has now.
    queued: Vec<u8>,
}

/// Marks a pending delivery of a deleted endpoint as failed at `now`.
fn fail_for_deleted_endpoint(delivery: &mut Delivery, now: UnixMillis) {
    delivery.status = DeliveryStatus::Failed;
    delivery.next_attempt_at = None;
    delivery.last_error = Some("endpoint deleted".to_owned());
    delivery.updated_at = now;
}

/// Makes a delivery pending again, due `now`, with a fresh attempt budget.
fn requeue(
    trees: &RequeueTrees,
    record: DeliveryRecord,
    now: UnixMillis,
) -> Result<Requeued, ConflictableTransactionError<StoreError>> {
    let RequeueTrees {
        deliveries,
        queue,
        failed,
        attempts,
    } = trees;
    spill_in(attempts, &record)?;
    let mut delivery = record.delivery;
    let mut replaced = None;
    let grew = match (delivery.status, delivery.next_attempt_at) {
        (DeliveryStatus::Pending, Some(due)) => {
            let key = keys::queue(&delivery.endpoint_id, due, &delivery.event_id);
            queue.remove(key.as_slice())?;
            replaced = Some(key);
            false
        }
        (DeliveryStatus::Failed, _) => {
            failed.remove(keys::failed(&delivery.endpoint_id, delivery.event_id.as_str()))?;
            true
        }
        _ => true,
    };
    delivery.status = DeliveryStatus::Pending;
    delivery.attempts = 0;
    delivery.next_attempt_at = Some(now);
    delivery.updated_at = now;
    let queued = keys::queue(&delivery.endpoint_id, now, &delivery.event_id);
    queue.insert(
        queued.as_slice(),
        keys::queue_entry(&delivery.merchant_id, 0, delivery.created_at),
    )?;
    deliveries.insert(
        keys::delivery(&delivery.event_id, &delivery.endpoint_id),
        encode_compact(&delivery),
    )?;
    Ok(Requeued { grew, replaced, queued })
}

/// Where the answer to a batched request goes.
type Reply<T> = tokio::sync::oneshot::Sender<Result<T, StoreError>>;

/// An event to store, and who waits for it.
struct Acceptance {
    event: Event,
    endpoints: Vec<EndpointId>,
    reply: Reply<AcceptOutcome>,
}

/// The keys and records of one event, built before the batch is written.
struct EventRows {
    event_key: Vec<u8>,
    dedupe_key: Option<Vec<u8>>,
    record: Vec<u8>,
    /// Its deliveries, pending until each has a record of its own; `None` without endpoints.
    fan_out: Option<Vec<u8>>,
    /// One queue entry per delivery, for an event that finds a lane full (`fresh.rs`).
    queue_keys: Vec<Vec<u8>>,
    /// The value of each of its queue entries.
    queue_entry: Vec<u8>,
}

impl EventRows {
    fn new(event: &Event, endpoints: &[EndpointId]) -> Self {
        let fan_out = (!endpoints.is_empty()).then(|| {
            encode_compact(&FanOut {
                merchant_id: event.merchant_id.clone(),
                received_at: event.received_at,
                endpoints: endpoints.to_vec(),
            })
        });
        Self {
            event_key: keys::merchant_child(&event.merchant_id, event.id.as_str()),
            dedupe_key: event
                .idempotency_key
                .as_ref()
                .map(|key| keys::merchant_child(&event.merchant_id, key.as_str())),
            record: encode_compact(event),
            fan_out,
            queue_keys: endpoints
                .iter()
                .map(|endpoint| keys::queue(endpoint, event.received_at, &event.id))
                .collect(),
            queue_entry: keys::queue_entry(&event.merchant_id, 0, event.received_at),
        }
    }
}

/// A worker asking for its endpoint's due deliveries.
struct ClaimRequest {
    endpoint: EndpointId,
    now: UnixMillis,
    limit: usize,
    lease_until: UnixMillis,
    horizon: UnixMillis,
    reply: Reply<Claimed>,
}

/// An attempt to record, and who waits for it.
struct Completion {
    claim: Claim,
    attempt: Attempt,
    next: Disposition,
    reply: Reply<()>,
}

/// What an event's dedupe key says, read before the event is written.
enum Seen {
    /// No event has the key yet.
    New,
    /// A stored event has it.
    Duplicate(EventId),
    /// An event that a crash cut short has it: its dedupe key was written, its record not.
    CutShort(EventId),
    /// The key's value is not an event id.
    Unreadable(String),
}

/// What recording one attempt did.
enum Recorded {
    /// The delivery left the queue (succeeded or failed for good).
    LeftQueue,
    /// Rescheduled, or changed under the attempt (replayed, recovered, retired).
    Stayed,
}

impl Inner {
    /// A sled I/O error (ENOSPC, EIO) stays with sled, which fails or hangs from then
    /// on: such a store cannot be trusted again in this process.
    fn note_failure(&self, error: &StoreError) {
        if let Some(io) = sled_io_error(error) {
            self.durability.mark_failed(format!("a store operation failed: {io}"));
        }
    }

    /// Runs on a store thread: stores every queued event.
    fn store_acceptances(&self) -> Replies {
        let mut replies = Replies::default();
        let batch = self.acceptances.take();
        match self.store_batch(&batch) {
            Ok(outcomes) => {
                for (acceptance, outcome) in batch.into_iter().zip(outcomes) {
                    if let Ok(AcceptOutcome::Accepted { deliveries, .. }) = &outcome {
                        self.depth.fetch_add(*deliveries as i64, Ordering::Relaxed);
                    }
                    replies.add(acceptance.reply, outcome);
                }
            }
            Err(error) => {
                self.note_failure(&error);
                let message = crate::error::error_chain(&error);
                for acceptance in batch {
                    replies.add(
                        acceptance.reply,
                        Err(StoreError::backend("storing events", message.clone())),
                    );
                }
            }
        }
        replies
    }

    fn store_batch(&self, batch: &[Acceptance]) -> Result<Vec<Result<AcceptOutcome, StoreError>>, StoreError> {
        let mut rows: Vec<EventRows> = batch.iter().map(|a| EventRows::new(&a.event, &a.endpoints)).collect();
        // Not a sled transaction: each one seals and writes sled's log buffer twice and
        // wakes its whole I/O thread pool, which cost more than the writes themselves
        // (docs/benchmarks.md). The batch is on disk before anyone is answered anyway
        // (the durability barrier), so atomicity matters only for a crash in between,
        // and sled recovers a prefix of its log. Hence the order: the dedupe key first,
        // the event record last. A dedupe key without its event record names an event
        // cut short by a crash, never acknowledged: its resend is written again under
        // that first id, so receivers never see one event under two ids.
        let _serial = self.ingest_writes.lock().expect("ingest lock poisoned");
        let mut outcomes = Vec::with_capacity(batch.len());
        for (acceptance, rows) in batch.iter().zip(&mut rows) {
            let mut event = &acceptance.event;
            let resumed;
            if let Some(key) = &rows.dedupe_key {
                // Also an event earlier in this batch with the same key.
                match self.seen(&event.merchant_id, key)? {
                    Seen::New => {
                        self.dedupe
                            .insert(key.as_slice(), event.id.as_str().as_bytes())
                            .map_err(sled_err("storing a dedupe key"))?;
                    }
                    Seen::Duplicate(first) => {
                        outcomes.push(Ok(AcceptOutcome::Duplicate { event_id: first }));
                        continue;
                    }
                    Seen::Unreadable(error) => {
                        outcomes.push(Err(StoreError::backend("reading a dedupe key", error)));
                        continue;
                    }
                    Seen::CutShort(first) => {
                        tracing::info!(event_id = %first.as_str(), "an event cut short by a crash was sent again");
                        resumed = Event {
                            id: first,
                            ..event.clone()
                        };
                        event = &resumed;
                        *rows = EventRows::new(event, &acceptance.endpoints);
                    }
                }
            }
            let stored = sled_err("storing an event");
            self.payloads
                .insert(event.id.as_str().as_bytes(), &event.payload[..])
                .map_err(&stored)?;
            if let Some(fan_out) = &rows.fan_out {
                let lane_full = self
                    .fresh
                    .lock()
                    .expect("fresh lanes poisoned")
                    .full(&acceptance.endpoints);
                if lane_full {
                    // Queued on disk, claimable once synced (see `accept_event`); its
                    // fan-out is a record of the `deliveries` tree.
                    self.deliveries
                        .insert(event.id.as_str().as_bytes(), fan_out.as_slice())
                        .map_err(&stored)?;
                    self.unsynced
                        .lock()
                        .expect("unsynced set poisoned")
                        .insert(event.id.clone());
                    for queue_key in &rows.queue_keys {
                        self.queue
                            .insert(queue_key.as_slice(), rows.queue_entry.as_slice())
                            .map_err(&stored)?;
                    }
                    self.queued(&rows.queue_keys);
                } else {
                    // One key for all its first attempts, which wait in memory once the
                    // batch is durable (`fresh.rs`), not one queue entry each. It holds
                    // the event's fan-out, and goes once every first attempt is recorded,
                    // when every endpoint has a record of its own: no fan-out record is
                    // kept for the event's lifetime.
                    self.fresh_keys
                        .insert(event.id.as_str().as_bytes(), fan_out.as_slice())
                        .map_err(&stored)?;
                }
            }
            self.events
                .insert(rows.event_key.as_slice(), rows.record.as_slice())
                .map_err(&stored)?;
            outcomes.push(Ok(AcceptOutcome::Accepted {
                event_id: event.id.clone(),
                deliveries: acceptance.endpoints.len(),
            }));
        }
        Ok(outcomes)
    }

    /// What the dedupe key `key` of a merchant's event says (see `store_batch`).
    fn seen(&self, merchant: &MerchantId, key: &[u8]) -> Result<Seen, StoreError> {
        let Some(value) = self.dedupe.get(key).map_err(sled_err("reading a dedupe key"))? else {
            return Ok(Seen::New);
        };
        let first = match std::str::from_utf8(&value)
            .map_err(|e| e.to_string())
            .and_then(EventId::parse)
        {
            Ok(first) => first,
            Err(error) => return Ok(Seen::Unreadable(error)),
        };
        let stored = self
            .events
            .contains_key(keys::merchant_child(merchant, first.as_str()))
            .map_err(sled_err("reading an event"))?;
        Ok(if stored {
            Seen::Duplicate(first)
        } else {
            Seen::CutShort(first)
        })
    }

    /// Runs on a store thread: answers every queued claim, one after the other.
    fn run_claims(&self) -> Replies {
        let mut replies = Replies::default();
        for request in self.claims.take() {
            let result = self.claim(&request);
            if let Err(error) = &result {
                self.note_failure(error);
            }
            replies.add(request.reply, result);
        }
        replies
    }

    fn claim(&self, request: &ClaimRequest) -> Result<Claimed, StoreError> {
        let &ClaimRequest {
            ref endpoint,
            now,
            limit,
            lease_until,
            horizon,
            ..
        } = request;
        // First attempts due before a queue entry go before it (`claim_first_attempts`).
        let firsts_due = self
            .fresh
            .lock()
            .expect("fresh lanes poisoned")
            .peek_due(endpoint, now, horizon, limit);
        let firsts_before = |due: UnixMillis| firsts_due.partition_point(|first| *first < due);
        let mut leases = self.leases.lock().expect("lease table poisoned");
        let unsynced = self.unsynced.lock().expect("unsynced set poisoned");
        let mut claimed = Claimed::default();
        let claimable = |key: &[u8], event: &EventId| {
            leases.get(key).is_none_or(|until| *until <= now) && !unsynced.contains(event)
        };
        let mut due_keys = Vec::new();
        // Whether an entry not yet due was seen while slots were left: only then can
        // one scheduled beyond the horizon be waiting at the far end. (With every slot
        // used, the attempts just claimed wake the worker when they end.)
        let mut future_seen = false;
        // Oldest first, up to the first entry not yet due, from past the entries that the
        // last claim found leased (see `scan_starts.rs`).
        let prefix = endpoint.as_str().as_bytes();
        let mut scan = self
            .scan_starts
            .lock()
            .expect("scan starts poisoned")
            .begin(prefix, now);
        let forward = match scan.start() {
            Some(start) => self.queue.range(start.to_vec()..keys::prefix_end(prefix)),
            None => self.queue.scan_prefix(prefix),
        };
        let mut failure = None;
        for entry in forward {
            let (key, value) = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            let Some((due, event)) = keys::parse_queue(&key) else {
                scan.passed(&key, None);
                continue;
            };
            if let Some(&until) = leases.get(&*key).filter(|until| **until > now) {
                scan.passed(&key, Some(until));
                continue;
            }
            if unsynced.contains(&event) {
                scan.open_at(&key);
                continue;
            }
            if due > now || due_keys.len() + firsts_before(due) >= limit {
                claimed.next_due = Some(due);
                future_seen = due_keys.len() < limit;
                scan.open_at(&key);
                break;
            }
            scan.passed(&key, Some(lease_until));
            due_keys.push((key, value));
        }
        self.scan_starts
            .lock()
            .expect("scan starts poisoned")
            .end(prefix, scan, failure.is_none());
        if let Some(error) = failure {
            return Err(sled_err("scanning the queue")(error));
        }
        // Then, from the far end, entries scheduled beyond the horizon. Only when needed:
        // the first step of a reverse scan is a descent of the tree and a node copy.
        let far_end = future_seen.then(|| self.queue.scan_prefix(endpoint.as_str()).rev());
        for entry in far_end.into_iter().flatten() {
            let (key, value) = entry.map_err(sled_err("scanning the queue"))?;
            let Some((due, event)) = keys::parse_queue(&key) else {
                continue;
            };
            if due <= horizon {
                break;
            }
            if !claimable(&key, &event) {
                continue;
            }
            if due_keys.len() >= limit {
                claimed.next_due = Some(now);
                break;
            }
            due_keys.push((key, value));
        }
        for (key, value) in due_keys {
            let (Some((due, event)), Some(entry)) = (keys::parse_queue(&key), keys::parse_queue_entry(&value)) else {
                return Err(StoreError::backend(
                    "reading a queue entry",
                    format!("malformed entry {key:?}"),
                ));
            };
            // Entries of the first layout carry no progress: read it from the delivery.
            let progress = match entry.progress {
                Some(progress) => Some(progress),
                None => read_delivery_from(&self.deliveries, &self.fresh_keys, &event, endpoint)?
                    .map(|d| (d.attempts, d.created_at)),
            };
            let payload = self
                .payloads
                .get(event.as_str())
                .map_err(sled_err("reading a payload"))?;
            let (Some((attempts, received_at)), Some(payload)) = (progress, payload) else {
                // The event was deleted under the queue entry. An attempt of it that outlived
                // its lease changes nothing either (see `record_batch`).
                leases.remove(&*key);
                if self
                    .queue
                    .remove(&key)
                    .map_err(sled_err("dropping a stale queue entry"))?
                    .is_some()
                {
                    self.depth.fetch_sub(1, Ordering::Relaxed);
                }
                continue;
            };
            leases.insert(key.to_vec(), lease_until);
            claimed.claims.push(Claim {
                event_id: event,
                endpoint_id: endpoint.clone(),
                merchant_id: entry.merchant,
                due,
                attempt: attempts + 1,
                received_at,
                // Shares sled's buffer: no copy of the body per delivery.
                payload: Bytes::from_owner(payload),
            });
        }
        drop((leases, unsynced));
        self.claim_first_attempts(request, &mut claimed)?;
        Ok(claimed)
    }

    /// Fills the slots the queue's entries left with first attempts (`fresh.rs`): the
    /// scan of the queue already stopped short by as many as were due before its entries
    /// (`peek_due`), so the claim as a whole takes the oldest due of both kinds.
    fn claim_first_attempts(&self, request: &ClaimRequest, claimed: &mut Claimed) -> Result<(), StoreError> {
        let endpoint = &request.endpoint;
        let free = request.limit.saturating_sub(claimed.claims.len());
        let (firsts, waiting) = {
            let mut fresh = self.fresh.lock().expect("fresh lanes poisoned");
            let firsts = if free > 0 {
                fresh.claim(endpoint, request.now, request.lease_until, request.horizon, free)
            } else {
                Vec::new()
            };
            (firsts, fresh.next_due(endpoint))
        };
        if let Some(due) = waiting {
            claimed.next_due = Some(claimed.next_due.map_or(due, |next| next.min(due)));
        }
        for first in firsts {
            let payload = self
                .payloads
                .get(first.event.as_str())
                .map_err(sled_err("reading a payload"))?;
            let Some(payload) = payload else {
                // The event was deleted under it.
                let last = self
                    .fresh
                    .lock()
                    .expect("fresh lanes poisoned")
                    .finish(endpoint, &first.event);
                if last == Some(true) {
                    self.fresh_keys
                        .remove(first.event.as_str())
                        .map_err(sled_err("removing a fresh key"))?;
                }
                self.depth.fetch_sub(1, Ordering::Relaxed);
                continue;
            };
            claimed.claims.push(Claim {
                event_id: first.event,
                endpoint_id: endpoint.clone(),
                merchant_id: first.merchant,
                due: first.received_at,
                attempt: 1,
                received_at: first.received_at,
                payload: Bytes::from_owner(payload),
            });
        }
        Ok(())
    }

    /// Runs on a store thread: records every queued attempt.
    fn record_completions(&self) -> Replies {
        let mut replies = Replies::default();
        let batch = self.completions.take();
        if batch.is_empty() {
            return replies;
        }
        let outcome = self.record_batch(&batch);
        if let Err(error) = &outcome {
            self.note_failure(error);
        }
        match outcome {
            Ok(recorded) => {
                for (completion, recorded) in batch.into_iter().zip(recorded) {
                    if let Recorded::LeftQueue = recorded {
                        self.depth.fetch_sub(1, Ordering::Relaxed);
                    }
                    replies.add(completion.reply, Ok(()));
                }
            }
            Err(error) => {
                let message = crate::error::error_chain(&error);
                for completion in batch {
                    replies.add(
                        completion.reply,
                        Err(StoreError::backend("recording attempts", message.clone())),
                    );
                }
            }
        }
        replies
    }

    fn record_batch(&self, batch: &[Completion]) -> Result<Vec<Recorded>, StoreError> {
        let seqs = batch
            .iter()
            .map(|_| self.db.generate_id().map_err(sled_err("numbering an attempt")))
            .collect::<Result<Vec<_>, StoreError>>()?;
        // Not a sled transaction (see `store_batch`). Attempt outcomes are not synced one
        // by one, and sled recovers a prefix of its log, so each attempt writes its new
        // state first and drops the claimed queue entry last: a crash in between leaves
        // the delivery queued, and the attempt is made again (at-least-once).
        let _serial = self.queue_writes.lock().expect("queue lock poisoned");
        // The claimed queue entry exists exactly while the delivery is pending and due
        // at the claimed time: every change of either changes both. Whatever removes a
        // leased entry (a replay, an endpoint's retirement) ends its lease too, under
        // `queue_writes`. So an attempt whose entry lost its lease ran while the
        // delivery was replayed or retired, and changes nothing.
        let queue_keys: Vec<Vec<u8>> = batch
            .iter()
            .map(|c| keys::queue(&c.claim.endpoint_id, c.claim.due, &c.claim.event_id))
            .collect();
        // First attempts claimed from memory (`fresh.rs`) have no queue entry: `Some(last)`
        // for each, `last` when its event has no other first attempt left.
        let firsts: Vec<Option<bool>> = {
            let mut fresh = self.fresh.lock().expect("fresh lanes poisoned");
            batch
                .iter()
                .map(|c| (c.claim.attempt == 1).then(|| fresh.finish(&c.claim.endpoint_id, &c.claim.event_id))?)
                .collect()
        };
        // Two attempts of one entry (claimed again after the first one's lease ran out)
        // may end in one batch: the first of them owns it.
        let owned: Vec<bool> = {
            let leases = self.leases.lock().expect("lease table poisoned");
            let mut taken = HashSet::new();
            queue_keys
                .iter()
                .zip(&firsts)
                .map(|(key, first)| first.is_some() || (leases.contains_key(key) && taken.insert(key)))
                .collect()
        };
        let written = sled_err("recording an attempt");
        let mut recorded = Vec::with_capacity(batch.len());
        for ((((completion, &seq), queue_key), owned), first) in
            batch.iter().zip(&seqs).zip(&queue_keys).zip(owned).zip(firsts)
        {
            let (claim, attempt) = (&completion.claim, &completion.attempt);
            let attempt_key = keys::attempt(&claim.event_id, seq);
            let attempt_record = || encode_compact(attempt);
            if !owned {
                if read_delivery_from(&self.deliveries, &self.fresh_keys, &claim.event_id, &claim.endpoint_id)?
                    .is_some()
                {
                    self.attempts
                        .insert(attempt_key.as_slice(), attempt_record())
                        .map_err(&written)?;
                }
                recorded.push(Recorded::Stayed);
                continue;
            }
            let delivery_key = keys::delivery(&claim.event_id, &claim.endpoint_id);
            if first.is_none() {
                // A delivery claimed from the queue may have a record holding its attempt
                // before this one, which must move to the `attempts` tree first. (A first
                // attempt from memory has no record yet: see `fresh_at_open`.)
                self.spill_held_attempt(&delivery_key)?;
            }
            let mut delivery = Delivery::new(
                claim.event_id.clone(),
                claim.endpoint_id.clone(),
                claim.merchant_id.clone(),
                claim.received_at,
            );
            delivery.attempts = claim.attempt;
            delivery.last_attempt_at = Some(attempt.attempted_at);
            delivery.last_status_code = attempt.status_code;
            delivery.last_error = attempt.error.clone();
            delivery.updated_at = attempt.attempted_at;
            let mut requeued = None;
            recorded.push(match completion.next {
                Disposition::Succeeded => {
                    delivery.status = DeliveryStatus::Succeeded;
                    delivery.next_attempt_at = None;
                    Recorded::LeftQueue
                }
                Disposition::RetryAt(at) => {
                    delivery.next_attempt_at = Some(at);
                    let key = keys::queue(&claim.endpoint_id, at, &claim.event_id);
                    self.queue
                        .insert(
                            key.as_slice(),
                            keys::queue_entry(&claim.merchant_id, claim.attempt, claim.received_at),
                        )
                        .map_err(&written)?;
                    self.queued(std::slice::from_ref(&key));
                    requeued = Some(key);
                    Recorded::Stayed
                }
                Disposition::Failed => {
                    delivery.status = DeliveryStatus::Failed;
                    delivery.next_attempt_at = None;
                    self.failed
                        .insert(keys::failed(&claim.endpoint_id, claim.event_id.as_str()), &[])
                        .map_err(&written)?;
                    Recorded::LeftQueue
                }
            });
            let record = match encode_with_attempt(&delivery, seq, attempt) {
                Some(record) => record,
                None => {
                    // Written before the record that names it (see above).
                    self.attempts
                        .insert(attempt_key.as_slice(), attempt_record())
                        .map_err(&written)?;
                    encode_compact(&delivery)
                }
            };
            self.deliveries.insert(delivery_key, record).map_err(&written)?;
            match first {
                // The record written last stands for the first attempt: once every
                // endpoint's is written, the event's fresh key goes.
                Some(true) => {
                    self.fresh_keys.remove(claim.event_id.as_str()).map_err(&written)?;
                }
                Some(false) => {}
                None if requeued.as_ref() != Some(queue_key) => {
                    self.queue.remove(queue_key).map_err(&written)?;
                }
                None => {}
            }
        }
        // Still under `queue_writes`, so a second attempt of the same entry (claimed again
        // after this one's lease ran out) finds it no longer leased (and changes nothing)
        // even when it is recorded by the very next job.
        let mut leases = self.leases.lock().expect("lease table poisoned");
        for key in &queue_keys {
            leases.remove(key);
        }
        Ok(recorded)
    }

    /// Tells the claims of entries just put into the queue (see `scan_starts.rs`).
    fn queued(&self, keys: &[Vec<u8>]) {
        let mut starts = self.scan_starts.lock().expect("scan starts poisoned");
        for key in keys {
            starts.queued(key);
        }
    }

    /// Ends the leases of the queue keys `matches` picks. Called with `queue_writes` held.
    fn end_leases(&self, matches: impl Fn(&[u8]) -> bool) {
        self.leases
            .lock()
            .expect("lease table poisoned")
            .retain(|key, _| !matches(key));
    }

    /// Moves the attempt that the delivery record at `key` holds, if any, to the
    /// `attempts` tree, before the record is written over.
    fn spill_held_attempt(&self, key: &[u8]) -> Result<(), StoreError> {
        let Some(raw) = self.deliveries.get(key).map_err(sled_err("reading a delivery"))? else {
            return Ok(());
        };
        if let Some((key, value)) = decode_delivery(&raw)?.held_attempt_row() {
            self.attempts
                .insert(key, value)
                .map_err(sled_err("moving an attempt out of its delivery record"))?;
        }
        Ok(())
    }

    /// Fails every pending delivery of an endpoint and forgets its failed index.
    fn retire_endpoint_queue(&self, endpoint: &EndpointId, now: UnixMillis) -> Result<(), StoreError> {
        let _serial = self.queue_writes.lock().expect("queue lock poisoned");
        let prefix = endpoint.as_str().as_bytes();
        let retired = self.fail_queued_deliveries(endpoint, now);
        // Attempts under way change nothing (see `record_batch`), also after a failure
        // halfway: the endpoint is gone.
        self.end_leases(|key| key.starts_with(prefix));
        self.scan_starts.lock().expect("scan starts poisoned").forget(prefix);
        let (dropped, emptied) = self.fresh.lock().expect("fresh lanes poisoned").retire(endpoint);
        self.depth.fetch_sub(dropped.len() as i64, Ordering::Relaxed);
        retired?;
        // Its first attempts not yet recorded fail as its queued deliveries do; an attempt
        // under way changes nothing.
        for event in &dropped {
            if let Some(mut delivery) = read_delivery_from(&self.deliveries, &self.fresh_keys, event, endpoint)? {
                fail_for_deleted_endpoint(&mut delivery, now);
                self.deliveries
                    .insert(keys::delivery(event, endpoint), encode_compact(&delivery))
                    .map_err(sled_err("failing the deliveries of a deleted endpoint"))?;
            }
        }
        for event in emptied {
            self.fresh_keys
                .remove(event.as_str())
                .map_err(sled_err("removing a fresh key"))?;
        }
        for entry in self.failed.scan_prefix(prefix).keys() {
            let key = entry.map_err(sled_err("scanning failed deliveries"))?;
            self.failed
                .remove(key)
                .map_err(sled_err("removing failed deliveries"))?;
        }
        Ok(())
    }

    /// Takes every queued delivery of a deleted endpoint out of the queue, as failed.
    fn fail_queued_deliveries(&self, endpoint: &EndpointId, now: UnixMillis) -> Result<(), StoreError> {
        for entry in self.queue.scan_prefix(endpoint.as_str().as_bytes()) {
            let (key, _) = entry.map_err(sled_err("scanning the queue"))?;
            let Some((_, event)) = keys::parse_queue(&key) else {
                continue;
            };
            let dkey = keys::delivery(&event, endpoint);
            let fresh = fresh_value(&self.fresh_keys, &event)?;
            (&self.queue, &self.deliveries, &self.attempts)
                .transaction(|(queue, deliveries, attempts)| {
                    if queue.remove(&*key)?.is_none() {
                        return Ok(());
                    }
                    if let Some(record) = read_delivery_in(deliveries, fresh.as_ref(), &event, endpoint)? {
                        // A delivery recorded as succeeded while its queue entry stayed (a
                        // crash in between) may hold its attempt.
                        spill_in(attempts, &record)?;
                        let mut delivery = record.delivery;
                        fail_for_deleted_endpoint(&mut delivery, now);
                        deliveries.insert(dkey.as_slice(), encode_compact(&delivery))?;
                    }
                    Ok(())
                })
                .map_err(tx_err::<StoreError>("failing the deliveries of a deleted endpoint"))?;
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn delete_event_records(&self, event: &EventId) -> Result<(), StoreError> {
        let prefix = event.as_str().as_bytes();
        for tree in [&self.deliveries, &self.attempts] {
            for key in tree.scan_prefix(prefix).keys() {
                tree.remove(key.map_err(sled_err("scanning event records"))?)
                    .map_err(sled_err("deleting event records"))?;
            }
        }
        self.payloads.remove(prefix).map_err(sled_err("deleting a payload"))?;
        self.fresh_keys
            .remove(prefix)
            .map_err(sled_err("deleting a fresh key"))?;
        Ok(())
    }
}

#[async_trait]
impl Store for SledStore {
    async fn create_merchant(&self, merchant: &Merchant) -> Result<(), StoreError> {
        let id = &merchant.id;
        let merchant = merchant.clone();
        self.write_settings(id, move |s| {
            let swapped = s
                .merchants
                .compare_and_swap(
                    merchant.id.as_str(),
                    None as Option<&[u8]>,
                    Some(sealed::encode_merchant(&s.cipher, &merchant)),
                )
                .map_err(sled_err("creating a merchant"))?;
            swapped.map_err(|_| StoreError::AlreadyExists)
        })
        .await
    }

    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError> {
        if let Some(merchant) = self.inner.cache.merchant(id) {
            return Ok(Some((*merchant).clone()));
        }
        let id = id.clone();
        self.run(move |s| {
            let read_at = s.cache.epoch();
            let raw = s.merchants.get(id.as_str()).map_err(sled_err("reading a merchant"))?;
            let merchant = raw.map(|raw| sealed::decode_merchant(&s.cipher, &raw)).transpose()?;
            if let Some(merchant) = &merchant {
                s.cache.keep_merchant(read_at, merchant);
            }
            Ok(merchant)
        })
        .await
    }

    async fn list_merchants(&self, page: PageRequest) -> Result<Page<Merchant>, StoreError> {
        self.run(move |s| {
            let scan = match &page.after {
                Some(after) => s.merchants.range(keys::prefix_end(after.as_bytes())..),
                None => s.merchants.range::<&[u8], _>(..),
            };
            let page = collect_page(
                scan,
                page.limit,
                |_: &serde_json::Value| true,
                |key, _| String::from_utf8_lossy(key).into_owned(),
            )?;
            let items = page
                .items
                .into_iter()
                .map(|value| sealed::merchant_from_value(&s.cipher, value))
                .collect::<Result<_, _>>()?;
            Ok(Page { items, next: page.next })
        })
        .await
    }

    async fn delete_merchant(&self, id: &MerchantId) -> Result<bool, StoreError> {
        let merchant = id;
        let id = id.clone();
        self.write_settings(merchant, move |s| {
            let now = crate::domain::now_ms();
            // Remove the merchant first so ingest stops, then what hung off it.
            if s.merchants
                .remove(id.as_str())
                .map_err(sled_err("deleting a merchant"))?
                .is_none()
            {
                return Ok(false);
            }
            let prefix = keys::merchant_prefix(&id);
            for entry in s.endpoints.scan_prefix(&prefix) {
                let (key, raw) = entry.map_err(sled_err("scanning endpoints"))?;
                let endpoint = sealed::decode_endpoint(&s.cipher, &raw)?;
                s.retire_endpoint_queue(&endpoint.id, now)?;
                s.endpoints.remove(key).map_err(sled_err("deleting an endpoint"))?;
            }
            for entry in s.events.scan_prefix(&prefix) {
                let (key, raw) = entry.map_err(sled_err("scanning events"))?;
                let event: Event = decode(&raw)?;
                s.delete_event_records(&event.id)?;
                s.events.remove(key).map_err(sled_err("deleting an event"))?;
            }
            for key in s.dedupe.scan_prefix(&prefix).keys() {
                s.dedupe
                    .remove(key.map_err(sled_err("scanning dedupe keys"))?)
                    .map_err(sled_err("deleting a dedupe key"))?;
            }
            Ok(true)
        })
        .await
    }

    async fn update_merchant(&self, id: &MerchantId, update: &MerchantUpdate) -> Result<Merchant, StoreError> {
        let merchant = id;
        let id = id.clone();
        let update = update.clone();
        self.write_settings(merchant, move |s| loop {
            // Compare-and-swap: a concurrent change is re-read and re-applied, never undone.
            let Some(raw) = s.merchants.get(id.as_str()).map_err(sled_err("reading a merchant"))? else {
                return Err(StoreError::NotFound);
            };
            let mut merchant = sealed::decode_merchant(&s.cipher, &raw)?;
            update.apply_to(&mut merchant);
            let swapped = s
                .merchants
                .compare_and_swap(
                    id.as_str(),
                    Some(raw),
                    Some(sealed::encode_merchant(&s.cipher, &merchant)),
                )
                .map_err(sled_err("updating a merchant"))?;
            if swapped.is_ok() {
                return Ok(merchant);
            }
        })
        .await
    }

    async fn create_endpoint(&self, endpoint: &Endpoint, limit: usize) -> Result<(), StoreError> {
        let merchant = &endpoint.merchant_id;
        let endpoint = endpoint.clone();
        self.write_settings(merchant, move |s| {
            let _guard = s.endpoint_writes.lock().expect("endpoint lock poisoned");
            if s.merchants
                .get(endpoint.merchant_id.as_str())
                .map_err(sled_err("reading a merchant"))?
                .is_none()
            {
                return Err(StoreError::NotFound);
            }
            let prefix = keys::merchant_prefix(&endpoint.merchant_id);
            let count = s.endpoints.scan_prefix(&prefix).count();
            if count >= limit {
                return Err(StoreError::LimitReached(limit));
            }
            let key = keys::merchant_child(&endpoint.merchant_id, endpoint.id.as_str());
            s.endpoints
                .insert(key, sealed::encode_endpoint(&s.cipher, &endpoint))
                .map_err(sled_err("creating an endpoint"))?;
            Ok(())
        })
        .await
    }

    async fn get_endpoint(&self, merchant: &MerchantId, id: &EndpointId) -> Result<Option<Endpoint>, StoreError> {
        let key = keys::merchant_child(merchant, id.as_str());
        self.run(move |s| {
            let raw = s.endpoints.get(key).map_err(sled_err("reading an endpoint"))?;
            raw.map(|raw| sealed::decode_endpoint(&s.cipher, &raw)).transpose()
        })
        .await
    }

    async fn list_endpoints(&self, merchant: &MerchantId) -> Result<Vec<Endpoint>, StoreError> {
        if let Some(endpoints) = self.inner.cache.endpoints(merchant) {
            return Ok(endpoints.to_vec());
        }
        let prefix = keys::merchant_prefix(merchant);
        let merchant = merchant.clone();
        self.run(move |s| {
            let read_at = s.cache.epoch();
            let mut endpoints: Vec<Endpoint> = s
                .endpoints
                .scan_prefix(prefix)
                .values()
                .map(|raw| sealed::decode_endpoint(&s.cipher, &raw.map_err(sled_err("scanning endpoints"))?))
                .collect::<Result<_, _>>()?;
            // Ids are UUIDv7: sorting by id is sorting by creation time.
            endpoints.sort_by(|a, b| a.id.cmp(&b.id));
            s.cache.keep_endpoints(read_at, &merchant, &endpoints);
            Ok(endpoints)
        })
        .await
    }

    async fn list_all_endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        self.run(|s| {
            s.endpoints
                .iter()
                .values()
                .map(|raw| sealed::decode_endpoint(&s.cipher, &raw.map_err(sled_err("scanning endpoints"))?))
                .collect()
        })
        .await
    }

    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        let merchant = &endpoint.merchant_id;
        let endpoint = endpoint.clone();
        self.write_settings(merchant, move |s| {
            let _guard = s.endpoint_writes.lock().expect("endpoint lock poisoned");
            let key = keys::merchant_child(&endpoint.merchant_id, endpoint.id.as_str());
            if s.endpoints
                .get(&key)
                .map_err(sled_err("reading an endpoint"))?
                .is_none()
            {
                return Err(StoreError::NotFound);
            }
            s.endpoints
                .insert(key, sealed::encode_endpoint(&s.cipher, &endpoint))
                .map_err(sled_err("updating an endpoint"))?;
            Ok(())
        })
        .await
    }

    async fn delete_endpoint(&self, merchant: &MerchantId, id: &EndpointId) -> Result<bool, StoreError> {
        let key = keys::merchant_child(merchant, id.as_str());
        let id = id.clone();
        self.write_settings(merchant, move |s| {
            let removed = {
                let _guard = s.endpoint_writes.lock().expect("endpoint lock poisoned");
                s.endpoints.remove(key).map_err(sled_err("deleting an endpoint"))?
            };
            if removed.is_none() {
                return Ok(false);
            }
            s.retire_endpoint_queue(&id, crate::domain::now_ms())?;
            Ok(true)
        })
        .await
    }

    async fn accept_event(&self, event: &Event, endpoints: &[EndpointId]) -> Result<AcceptOutcome, StoreError> {
        let result = self.accept_event_durably(event, endpoints).await;
        // Durable now (or failed): its first attempts may be claimed. (An event cut short
        // by a crash is written again under its first id.)
        let id = match &result {
            Ok(AcceptOutcome::Accepted { event_id, .. }) => event_id,
            _ => &event.id,
        };
        let queued_on_disk = self.inner.unsynced.lock().expect("unsynced set poisoned").remove(id);
        if let (Ok(AcceptOutcome::Accepted { event_id, deliveries }), false) = (&result, queued_on_disk) {
            let queued = self.inner.fresh.lock().expect("fresh lanes poisoned").add(
                event_id,
                &event.merchant_id,
                event.received_at,
                endpoints,
            );
            // Endpoints deleted since the event was written get none.
            self.inner
                .depth
                .fetch_sub((deliveries - queued) as i64, Ordering::Relaxed);
        }
        result
    }

    async fn list_events(
        &self,
        merchant: &MerchantId,
        event_type: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Event>, StoreError> {
        let prefix = keys::merchant_prefix(merchant);
        let end = match &page.after {
            Some(after) => keys::merchant_child(merchant, after),
            None => keys::prefix_end(&prefix),
        };
        let event_type = event_type.map(str::to_owned);
        self.run(move |s| {
            let scan = s.events.range(prefix..end).rev();
            collect_page(
                scan,
                page.limit,
                |e: &Event| event_type.is_none() || e.event_type == event_type,
                |_, e| e.id.to_string(),
            )
        })
        .await
    }

    async fn get_event(&self, merchant: &MerchantId, id: &EventId) -> Result<Option<Event>, StoreError> {
        let key = keys::merchant_child(merchant, id.as_str());
        let id = id.clone();
        self.run(move |s| {
            let Some(raw) = s.events.get(key).map_err(sled_err("reading an event"))? else {
                return Ok(None);
            };
            let mut event: Event = decode(&raw)?;
            let payload = s.payloads.get(id.as_str()).map_err(sled_err("reading a payload"))?;
            event.payload = payload.map(|p| Bytes::copy_from_slice(&p)).unwrap_or_default();
            Ok(Some(event))
        })
        .await
    }

    async fn list_deliveries(&self, event: &EventId) -> Result<Vec<Delivery>, StoreError> {
        let event = event.clone();
        self.run(move |s| list_deliveries_from(&s.deliveries, &s.fresh_keys, &event))
            .await
    }

    async fn get_delivery(&self, event: &EventId, endpoint: &EndpointId) -> Result<Option<Delivery>, StoreError> {
        let (event, endpoint) = (event.clone(), endpoint.clone());
        self.run(move |s| read_delivery_from(&s.deliveries, &s.fresh_keys, &event, &endpoint))
            .await
    }

    async fn list_attempts(&self, event: &EventId, page: PageRequest) -> Result<Page<Attempt>, StoreError> {
        let event = event.clone();
        self.run(move |s| {
            // The handler checked it is a number; anything else starts past the end.
            let after = page
                .after
                .as_ref()
                .map(|after| after.parse::<u64>().unwrap_or(u64::MAX));
            let start = keys::attempt(&event, after.map_or(0, |seq| seq.saturating_add(1)));
            let end = keys::prefix_end(event.as_str().as_bytes());
            let stored = s.attempts.range(start..end).map(|entry| {
                let (key, value) = entry.map_err(sled_err("scanning attempts"))?;
                let seq = key[EventId::LEN..]
                    .try_into()
                    .map(u64::from_be_bytes)
                    .unwrap_or(u64::MAX);
                Ok((seq, decode::<Attempt>(&value)?))
            });
            page_of_attempts(stored, held_attempts(&s.deliveries, &event)?, after, page.limit)
        })
        .await
    }

    async fn replay_event(
        &self,
        event: &Event,
        endpoints: &[EndpointId],
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let event = event.clone();
        let endpoints = endpoints.to_vec();
        self.write(move |s| {
            let _serial = s.queue_writes.lock().expect("queue lock poisoned");
            let fresh = fresh_value(&s.fresh_keys, &event.id)?;
            let grew = (&s.deliveries, &s.queue, &s.failed, &s.attempts)
                .transaction(|(deliveries, queue, failed, attempts)| {
                    let trees = RequeueTrees {
                        deliveries,
                        queue,
                        failed,
                        attempts,
                    };
                    let (mut grew, mut replaced, mut queued) = (0, Vec::new(), Vec::new());
                    for endpoint in &endpoints {
                        let record = match read_delivery_in(deliveries, fresh.as_ref(), &event.id, endpoint)? {
                            Some(record) => record,
                            None => {
                                let mut d =
                                    Delivery::new(event.id.clone(), endpoint.clone(), event.merchant_id.clone(), now);
                                d.created_at = event.received_at;
                                d.status = DeliveryStatus::Succeeded; // not pending: requeue counts it
                                DeliveryRecord {
                                    delivery: d,
                                    attempt: None,
                                }
                            }
                        };
                        let requeued = requeue(&trees, record, now)?;
                        grew += usize::from(requeued.grew);
                        replaced.extend(requeued.replaced);
                        queued.push(requeued.queued);
                    }
                    Ok((grew, replaced, queued))
                })
                .map_err(tx_err::<StoreError>("replaying an event"))?;
            // Attempts under way of the replayed deliveries change nothing (see `record_batch`).
            let (grew, replaced, queued) = grew;
            // First attempts not yet recorded are queue entries now (and still counted).
            let mut emptied = false;
            {
                let mut fresh = s.fresh.lock().expect("fresh lanes poisoned");
                for endpoint in &endpoints {
                    emptied |= fresh.drop_delivery(endpoint, &event.id) == Some(true);
                }
            }
            if emptied {
                s.fresh_keys
                    .remove(event.id.as_str())
                    .map_err(sled_err("removing a fresh key"))?;
            }
            s.queued(&queued);
            s.end_leases(|key| replaced.iter().any(|gone| gone.as_slice() == key));
            s.depth.fetch_add(grew as i64, Ordering::Relaxed);
            Ok(endpoints.len())
        })
        .await
    }

    async fn recover_endpoint(
        &self,
        merchant: &MerchantId,
        endpoint: &EndpointId,
        since: UnixMillis,
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let merchant = merchant.clone();
        let endpoint = endpoint.clone();
        self.write(move |s| {
            let _serial = s.queue_writes.lock().expect("queue lock poisoned");
            let start = keys::failed(&endpoint, &EventId::lower_bound_at(since));
            let end = keys::prefix_end(endpoint.as_str().as_bytes());
            let mut recovered = 0;
            for key in s.failed.range(start..end).keys() {
                let key = key.map_err(sled_err("scanning failed deliveries"))?;
                let event = std::str::from_utf8(&key[EndpointId::LEN..])
                    .ok()
                    .and_then(|e| EventId::parse(e).ok());
                let Some(event) = event else { continue };
                let queued = (&s.deliveries, &s.queue, &s.failed, &s.attempts)
                    .transaction(|(deliveries, queue, failed, attempts)| {
                        let Some(raw) = deliveries.get(keys::delivery(&event, &endpoint))? else {
                            failed.remove(&*key)?;
                            return Ok(None);
                        };
                        let record = decode_delivery(&raw).map_err(abort)?;
                        let delivery = &record.delivery;
                        if delivery.merchant_id != merchant || delivery.status != DeliveryStatus::Failed {
                            return Ok(None);
                        }
                        let trees = RequeueTrees {
                            deliveries,
                            queue,
                            failed,
                            attempts,
                        };
                        // Failed: not queued, so no lease to end.
                        Ok(Some(requeue(&trees, record, now)?.queued))
                    })
                    .map_err(tx_err::<StoreError>("recovering a delivery"))?;
                if let Some(queued) = queued {
                    s.queued(std::slice::from_ref(&queued));
                    recovered += 1;
                    s.depth.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(recovered)
        })
        .await
    }

    async fn claim_due(
        &self,
        endpoint: &EndpointId,
        now: UnixMillis,
        limit: usize,
        lease: Duration,
        max_ahead: Duration,
    ) -> Result<Claimed, StoreError> {
        // Claims of all workers that ask at about the same time run in one job.
        self.batched("claiming deliveries", &self.inner.claims, Inner::run_claims, |reply| {
            ClaimRequest {
                endpoint: endpoint.clone(),
                now,
                limit,
                lease_until: now.saturating_add(lease.as_millis() as i64),
                // No schedule is legitimately further ahead than this: beyond it, the clock
                // must have jumped back since it was written, and the entry is due now.
                horizon: now.saturating_add(max_ahead.as_millis() as i64),
                reply,
            }
        })
        .await
    }

    async fn complete_attempt(&self, claim: &Claim, attempt: &Attempt, next: Disposition) -> Result<(), StoreError> {
        // Recorded in batches: one job for every attempt that ended meanwhile.
        self.batched(
            "recording an attempt",
            &self.inner.completions,
            Inner::record_completions,
            |reply| Completion {
                claim: claim.clone(),
                attempt: attempt.clone(),
                next,
                reply,
            },
        )
        .await
    }

    async fn purge_expired(&self, cutoff: UnixMillis, batch: usize) -> Result<usize, StoreError> {
        self.run(move |s| {
            let mut purged = 0;
            // Old events still pending are skipped, not purged; bound how many of
            // them one call looks at so a long outage cannot make purging slow.
            let mut skipped = 0;
            for merchant in s.merchants.iter().keys() {
                let merchant = merchant.map_err(sled_err("scanning merchants"))?;
                let mut prefix = merchant.to_vec();
                prefix.push(0);
                for entry in s.events.scan_prefix(&prefix) {
                    let (key, raw) = entry.map_err(sled_err("scanning events"))?;
                    let event: Event = decode(&raw)?;
                    if event.received_at >= cutoff {
                        break; // keys are time-ordered within a merchant
                    }
                    let deliveries = list_deliveries_from(&s.deliveries, &s.fresh_keys, &event.id)?;
                    if deliveries.iter().any(|d| d.status == DeliveryStatus::Pending) {
                        skipped += 1;
                        if skipped > batch * 10 {
                            return Ok(purged);
                        }
                        continue;
                    }
                    for delivery in deliveries.iter().filter(|d| d.status == DeliveryStatus::Failed) {
                        s.failed
                            .remove(keys::failed(&delivery.endpoint_id, event.id.as_str()))
                            .map_err(sled_err("purging failed deliveries"))?;
                    }
                    s.delete_event_records(&event.id)?;
                    if let Some(idempotency_key) = &event.idempotency_key {
                        // Only if it still names this event.
                        let dedupe_key = keys::merchant_child(&event.merchant_id, idempotency_key.as_str());
                        s.dedupe
                            .compare_and_swap(dedupe_key, Some(event.id.as_str().as_bytes()), None as Option<&[u8]>)
                            .map_err(sled_err("purging a dedupe key"))?
                            .ok();
                    }
                    // The event record goes last: a purge cut short is finished by the next one.
                    s.events.remove(key).map_err(sled_err("purging an event"))?;
                    purged += 1;
                    if purged >= batch {
                        return Ok(purged);
                    }
                }
            }
            Ok(purged)
        })
        .await
    }

    async fn queue_depth(&self) -> Result<u64, StoreError> {
        Ok(self.inner.depth.load(Ordering::Relaxed).max(0) as u64)
    }

    async fn sync(&self) -> Result<(), StoreError> {
        self.inner.durability.barrier().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        if self.failure().is_none() {
            self.sync().await?;
        }
        self.run(|s| {
            s.durability.close();
            Ok(())
        })
        .await
    }

    fn failure(&self) -> Option<String> {
        self.inner.durability.failure()
    }

    async fn create_admin_token(&self, token: &crate::domain::AdminToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.write(move |s| s.access.create_token(&token)).await
    }

    async fn find_admin_token(
        &self,
        hash: &crate::domain::TokenHash,
    ) -> Result<Option<crate::domain::AdminToken>, StoreError> {
        let hash = *hash;
        self.run(move |s| s.access.find_token(&hash)).await
    }

    async fn list_admin_tokens(&self) -> Result<Vec<crate::domain::AdminToken>, StoreError> {
        self.run(|s| s.access.list_tokens()).await
    }

    async fn delete_admin_token(&self, name: &crate::domain::TokenName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.write(move |s| s.access.delete_token(&name)).await
    }

    async fn append_audit(&self, entry: &crate::domain::AuditEntry, keep_refusals: usize) -> Result<(), StoreError> {
        let entry = entry.clone();
        if entry.is_refusal() {
            self.run(move |s| s.access.append_refusal(&entry, keep_refusals)).await
        } else {
            self.write(move |s| s.access.append_change(&entry)).await
        }
    }

    async fn list_audit(&self, page: PageRequest) -> Result<Page<crate::domain::AuditEntry>, StoreError> {
        self.run(move |s| s.access.list_audit(page)).await
    }
}
