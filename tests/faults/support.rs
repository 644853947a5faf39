//! What several faults share: the lock that keeps load-sensitive tests apart, event
//! senders with a ledger of what was acknowledged, delivery checks, and readings of
//! the gateway process (RSS, data-directory size, stderr).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::gateway::GatewayProcess;
use crate::net::TcpReceiver;

/// Each test runs on its own runtime; tokio's lock works across them.
static LOAD: RwLock<()> = RwLock::const_new(());

/// Held by tests that load the machine or time latencies: no other fault test runs beside them.
pub async fn exclusive() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().await
}

/// Held by light tests: they may run beside each other, not beside an exclusive one.
pub async fn shared() -> RwLockReadGuard<'static, ()> {
    LOAD.read().await
}

/// What the senders saw.
#[derive(Default, Debug)]
pub struct Ledger {
    /// Provider event id → `event_id` of the 2xx.
    pub acked: BTreeMap<String, String>,
    /// Provider ids whose request got no answer (the process died or stopped under it).
    pub unanswered: Vec<String>,
    /// Non-2xx answers: status → count.
    pub refused: BTreeMap<u16, usize>,
    /// Refusal codes seen (`error.code`).
    pub refusal_codes: BTreeSet<String>,
    /// When each 2xx came back (provider id → instant), for latency checks.
    pub acked_at: BTreeMap<String, Instant>,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

/// An event body; `pad` bytes of filler.
pub fn event_body(id: &str, kind: Option<&str>, pad: usize) -> Value {
    let mut body = json!({ "id": id, "data": { "pad": "x".repeat(pad) } });
    if let Some(kind) = kind {
        body["type"] = json!(kind);
    }
    body
}

/// Sends one event and books the answer. Returns the status (None: no answer).
pub async fn send_one(process: &GatewayProcess, ingest_url: &str, body: &Value, ledger: &SharedLedger) -> Option<u16> {
    let id = body["id"].as_str().unwrap_or_default().to_owned();
    match process.ingest(ingest_url, body).await {
        Ok((status, answer)) if (200..300).contains(&status) => {
            let event_id = answer["event_id"].as_str().unwrap_or_default().to_owned();
            let mut ledger = ledger.lock().unwrap();
            ledger.acked.insert(id.clone(), event_id);
            ledger.acked_at.insert(id, Instant::now());
            Some(status)
        }
        Ok((status, answer)) => {
            let mut ledger = ledger.lock().unwrap();
            *ledger.refused.entry(status).or_default() += 1;
            if let Some(code) = answer["error"]["code"].as_str() {
                ledger.refusal_codes.insert(code.to_owned());
            }
            Some(status)
        }
        Err(_) => {
            ledger.lock().unwrap().unanswered.push(id);
            None
        }
    }
}

/// Sends new events one after another until `stop` is set or the process stops
/// answering. Event ids are `{prefix}-{n}`; types alternate between `kinds`.
pub async fn stream_events(
    process: Arc<GatewayProcess>,
    ingest_url: String,
    prefix: String,
    kinds: Vec<Option<&'static str>>,
    ledger: SharedLedger,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0usize;
    while n < 100_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let body = event_body(&format!("{prefix}-{n}"), kinds[n % kinds.len()], 200);
        match send_one(&process, &ingest_url, &body, &ledger).await {
            Some(status) if (200..300).contains(&status) => n += 1,
            // Over the merchant's rate limit: a provider waits and sends the same event again.
            Some(429) => tokio::time::sleep(Duration::from_millis(100)).await,
            // Refused (stopping) or no answer (killed): this stream is over.
            _ => return,
        }
    }
}

/// Provider ids in `required` that `receiver` has not received yet.
pub fn missing_on(receiver: &TcpReceiver, required: &BTreeSet<String>) -> BTreeSet<String> {
    let seen: BTreeSet<String> = receiver.received().into_iter().map(|r| r.body_id).collect();
    required.difference(&seen).cloned().collect()
}

/// Waits until every receiver got every provider id it must; returns what is still missing.
pub async fn wait_delivered(
    expectations: &[(&str, &TcpReceiver, BTreeSet<String>)],
    timeout: Duration,
) -> BTreeMap<String, BTreeSet<String>> {
    let deadline = Instant::now() + timeout;
    loop {
        let missing: BTreeMap<String, BTreeSet<String>> = expectations
            .iter()
            .map(|(name, receiver, required)| (name.to_string(), missing_on(receiver, required)))
            .filter(|(_, missing)| !missing.is_empty())
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            return missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Duplicates on a receiver (arrivals beyond the first per `webhook-id`), and provider
/// ids that arrived under more than one `webhook-id` or under one other than the 2xx's.
pub fn duplicates(receiver: &TcpReceiver, acked: &BTreeMap<String, String>) -> (usize, Vec<String>) {
    let mut ids_per_event: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in receiver.received() {
        ids_per_event
            .entry(request.body_id)
            .or_default()
            .insert(request.webhook_id);
    }
    let extra = receiver.copies().values().map(|n| n - 1).sum();
    let mut inconsistent = Vec::new();
    for (id, webhook_ids) in &ids_per_event {
        let wrong = webhook_ids.len() != 1 || acked.get(id).is_some_and(|event_id| !webhook_ids.contains(event_id));
        if wrong {
            inconsistent.push(format!("{id}: {webhook_ids:?}"));
        }
    }
    (extra, inconsistent)
}

/// Creates merchant `m1` with one endpoint per URL (filter, URL); returns `ingest_url`
/// and the endpoint ids.
pub async fn setup_merchant(process: &GatewayProcess, endpoints: &[(&[&str], String)]) -> (String, Vec<String>) {
    let merchant = process.create_merchant("m1").await;
    let mut ids = Vec::new();
    for (filter, url) in endpoints {
        let endpoint = process.create_endpoint("m1", url, filter).await;
        ids.push(endpoint["id"].as_str().unwrap().to_owned());
    }
    (merchant["ingest_url"].as_str().unwrap().to_owned(), ids)
}

/// A field of `/proc/<pid>/status` in kB (`VmRSS`, `VmHWM`); 0 if the process is gone.
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes allocated on disk under `dir` (blocks, not apparent sizes).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            total += disk_usage(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Free bytes for an unprivileged writer on the filesystem of `path` (`df`).
pub fn free_bytes(path: &Path) -> u64 {
    let output = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .expect("running df");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or(0)
}

/// Signs of a panic in a process's stderr.
pub fn panic_trace(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|line| line.contains("panicked at") || line.contains("RUST_BACKTRACE"))
        .map(str::to_owned)
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `hookrelay_queue_depth` and `hookrelay_deliveries_in_flight` are both 0;
/// returns the last readings.
pub async fn wait_gauges_zero(process: &GatewayProcess, timeout: Duration) -> (f64, f64) {
    let deadline = Instant::now() + timeout;
    loop {
        let depth = process.metric("hookrelay_queue_depth").await;
        let in_flight = process.metric("hookrelay_deliveries_in_flight").await;
        if (depth == 0.0 && in_flight == 0.0) || Instant::now() >= deadline {
            return (depth, in_flight);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` items of a sorted list at fraction `q` (0..=1).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index]
}

/// The last line of a process's stderr that starts with `hookrelay:` (its own message).
pub fn final_message(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .rev()
        .find(|line| line.starts_with("hookrelay:"))
        .map(str::to_owned)
}

/// Waits until `/readyz` answers 200; `Err` (with the reason) if the process exits first
/// or the time runs out. Unlike `wait_ready`, never panics.
pub async fn try_ready(process: &mut GatewayProcess, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.wait_exit(Duration::ZERO).await {
            return Err(format!(
                "exited ({status}) before it was ready: {}",
                final_message(&process.stderr()).unwrap_or_default()
            ));
        }
        if let Ok(response) = process.http.get(process.url("/readyz")).send().await {
            if response.status() == 200 {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not ready within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
