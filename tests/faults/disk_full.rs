//! Disk full: the data directory on a small tmpfs, a ballast file filling the rest.
//! Ingest must answer 503, never a 2xx it could not make durable; reads keep working;
//! once the ballast is gone the gateway takes events again without a restart.
//!
//! Needs root (mount); without it the tests pass with a notice.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::gateway::{Gateway, GatewayProcess};
use crate::net::TcpReceiver;
use crate::report::{pick, Row};
use crate::support::{self, Ledger, SharedLedger};

const MIB: u64 = 1024 * 1024;

/// A tmpfs mounted on a fresh directory, unmounted when dropped (also when a test fails).
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(self.dir.path()).status();
        if !unmounted.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Writes a file of zeros until the filesystem has only `leave` bytes free (or is full).
fn write_ballast(path: &Path, leave: u64) -> u64 {
    let dir = path.parent().unwrap();
    let target = support::free_bytes(dir).saturating_sub(leave);
    let mut file = std::fs::File::create(path).expect("creating the ballast");
    let block = vec![0u8; MIB as usize];
    let mut written = 0;
    while written < target {
        let len = block.len().min((target - written) as usize);
        if file.write_all(&block[..len]).is_err() {
            break;
        }
        written += len as u64;
    }
    let _ = file.sync_all();
    written
}

/// Sends `body` and tells what came back: a status, or no answer.
async fn ingest_status(
    process: &GatewayProcess,
    url: &str,
    id: &str,
    pad: usize,
    ledger: &SharedLedger,
) -> Option<u16> {
    support::send_one(process, url, &support::event_body(id, None, pad), ledger).await
}

/// The admin and event reads an operator needs while the disk is full (5 s each), one
/// of them of an event acknowledged earlier.
async fn reads_work(process: &GatewayProcess, ledger: &SharedLedger) -> Result<(), String> {
    let event_id = ledger
        .lock()
        .unwrap()
        .acked
        .values()
        .next()
        .cloned()
        .unwrap_or_default();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for path in [
        "/api/v1/merchants".to_owned(),
        "/api/v1/merchants/m1/events".to_owned(),
        format!("/api/v1/merchants/m1/events/{event_id}"),
        "/api/v1/merchants/m1/endpoints".to_owned(),
    ] {
        let answer = client
            .get(process.url(&path))
            .bearer_auth(&process.admin_token)
            .send()
            .await;
        match answer.map(|r| r.status().as_u16()) {
            Ok(200) => {}
            Ok(status) => return Err(format!("GET {path} answered {status}")),
            Err(error) => {
                let mut cause = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(inner) = source {
                    cause = format!("{cause}: {inner}");
                    source = inner.source();
                }
                return Err(format!("GET {path}: no answer ({cause})"));
            }
        }
    }
    Ok(())
}

/// Every acknowledged event is stored (readable through the admin API).
async fn missing_events(process: &GatewayProcess, acked: &BTreeMap<String, String>) -> Vec<String> {
    let mut missing = Vec::new();
    for (id, event_id) in acked {
        let (status, _): (u16, Value) = process
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/merchants/m1/events/{event_id}"),
                None,
            )
            .await;
        if status != 200 {
            missing.push(format!("{id} ({event_id}): {status}"));
        }
    }
    missing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_watermark_ingest_answers_503_and_recovers_when_space_returns() {
    let _load = support::shared().await;
    let mut row = Row::new(
        "Disk full: free space under HOOKRELAY_MIN_FREE_DISK_BYTES (8 MiB) on a 24 MiB tmpfs",
        "ingest 503 insufficient_storage, never 2xx for an unstored event; admin/event reads 200; \
         ballast removed → 2xx again without restart; every 2xx'd event delivered",
    );
    let mount = match Tmpfs::mount("24m") {
        Ok(mount) => mount,
        Err(why) => return row.skip(&format!("needs root to mount a tmpfs: {why}")),
    };
    let data_dir: PathBuf = mount.path().join("data");
    let ballast = mount.path().join("ballast");
    let receiver = TcpReceiver::healthy().await;
    let gateway = Gateway::new()
        .in_data_dir(&data_dir)
        .env("HOOKRELAY_MIN_FREE_DISK_BYTES", &(8 * MIB).to_string());
    let process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(&process, &[(&[], receiver.url("/hook"))]).await;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::default()));

    let mut before = 0;
    for n in 0..20 {
        if ingest_status(&process, &ingest_url, &format!("before-{n}"), 500, &ledger).await == Some(202) {
            before += 1;
        }
    }
    row.check(
        before == 20,
        format!("with room, only {before} of 20 ingests were accepted"),
    );

    let filled = write_ballast(&ballast, 3 * MIB);
    let free = support::free_bytes(mount.path());
    let filled_at = Instant::now();
    let mut first_refusal = None;
    let mut accepted_while_full = 0;
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for n in 0..200 {
        let status = ingest_status(&process, &ingest_url, &format!("full-{n}"), 500, &ledger).await;
        *statuses.entry(format!("{status:?}")).or_default() += 1;
        match status {
            Some(503) if first_refusal.is_none() => first_refusal = Some(filled_at.elapsed()),
            Some(202) if first_refusal.is_some() => accepted_while_full += 1,
            _ => {}
        }
        if first_refusal.is_some_and(|_| n >= 30) || filled_at.elapsed() > Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let codes = ledger.lock().unwrap().refusal_codes.clone();
    row.observe(format!(
        "ballast {} MiB leaves {:.1} MiB free; ingest answers {statuses:?}, codes {codes:?}; first 503 after {:?}",
        filled / MIB,
        free as f64 / MIB as f64,
        first_refusal.map(|d| d.as_millis())
    ));
    row.check(first_refusal.is_some(), "ingest never refused below the watermark");
    row.check(
        accepted_while_full == 0,
        format!("{accepted_while_full} ingests accepted after refusals began"),
    );
    row.check(
        codes.contains("insufficient_storage"),
        format!("refusal codes {codes:?}, expected insufficient_storage"),
    );
    let reads = reads_work(&process, &ledger).await;
    row.check(reads.is_ok(), format!("reads while full: {reads:?}"));

    std::fs::remove_file(&ballast).expect("removing the ballast");
    let removed_at = Instant::now();
    let mut recovered_after = None;
    for n in 0..100 {
        if ingest_status(&process, &ingest_url, &format!("after-{n}"), 500, &ledger).await == Some(202) {
            recovered_after = Some(removed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    row.observe(format!(
        "ballast removed: first 2xx after {:?} ms, without restart",
        recovered_after.map(|d| d.as_millis())
    ));
    row.check(
        recovered_after.is_some(),
        "no 2xx within 10 s after the ballast was removed",
    );

    let acked = ledger.lock().unwrap().acked.clone();
    let missing = support::wait_delivered(
        &[("receiver", &receiver, acked.keys().cloned().collect())],
        Duration::from_secs(15),
    )
    .await;
    row.observe(format!(
        "{} events 2xx'd in all, {} delivered",
        acked.len(),
        acked.len() - missing.values().map(|m| m.len()).sum::<usize>()
    ));
    row.check(missing.is_empty(), format!("2xx'd events never delivered: {missing:?}"));
    row.check(
        support::panic_trace(&process.stderr()).is_none(),
        "a panic in the gateway's stderr",
    );
    drop(process);
    drop(mount);
    row.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_watermark_off_a_full_disk_gives_503_never_a_lost_2xx_and_no_panic() {
    let _load = support::shared().await;
    let mut row = Row::new(
        "Disk full: the store itself hits ENOSPC (HOOKRELAY_MIN_FREE_DISK_BYTES=0, 24 MiB tmpfs)",
        "ingest 503, never 2xx for an event not made durable, no panic; reads 200; after the ballast goes: \
         recovers by itself, or exits non-zero with a clear message; every 2xx'd event survives and is delivered",
    );
    let mount = match Tmpfs::mount("24m") {
        Ok(mount) => mount,
        Err(why) => return row.skip(&format!("needs root to mount a tmpfs: {why}")),
    };
    let data_dir: PathBuf = mount.path().join("data");
    let ballast = mount.path().join("ballast");
    let receiver = TcpReceiver::healthy().await;
    let gateway = Gateway::new()
        .in_data_dir(&data_dir)
        .env("HOOKRELAY_MIN_FREE_DISK_BYTES", "0");
    let mut process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(&process, &[(&[], receiver.url("/hook"))]).await;
    let ledger: SharedLedger = Arc::new(Mutex::new(Ledger::default()));
    for n in 0..10 {
        ingest_status(&process, &ingest_url, &format!("before-{n}"), 500, &ledger).await;
    }

    let filled = write_ballast(&ballast, MIB);
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut consecutive_refusals = 0;
    let mut sent = 0;
    let max_requests = pick(400, 1500);
    let pad = 16 * 1024;
    while consecutive_refusals < 20 && sent < max_requests {
        let status = ingest_status(&process, &ingest_url, &format!("full-{sent}"), pad, &ledger).await;
        sent += 1;
        *statuses
            .entry(status.map_or("no answer".to_owned(), |s| s.to_string()))
            .or_default() += 1;
        match status {
            Some(s) if (200..300).contains(&s) => consecutive_refusals = 0,
            Some(_) => consecutive_refusals += 1,
            None => break,
        }
    }
    let codes = ledger.lock().unwrap().refusal_codes.clone();
    let exited_while_full = process.wait_exit(Duration::ZERO).await;
    row.observe(format!(
        "ballast {} MiB; {sent} ingests of {} KiB: {statuses:?}, codes {codes:?}; process {}",
        filled / MIB,
        pad / 1024,
        match exited_while_full {
            Some(status) => format!("EXITED while full ({status})"),
            None => "still running".to_owned(),
        }
    ));
    row.check(
        statuses.keys().any(|s| s == "503"),
        "the full disk never produced a 503",
    );
    let bad: Vec<&String> = statuses
        .keys()
        .filter(|s| !matches!(s.as_str(), "202" | "503"))
        .collect();
    row.check(
        bad.is_empty(),
        format!("answers other than 202/503 while full: {bad:?}"),
    );
    if exited_while_full.is_none() {
        let reads = reads_work(&process, &ledger).await;
        row.check(reads.is_ok(), format!("reads while full: {reads:?}"));
    }

    std::fs::remove_file(&ballast).expect("removing the ballast");
    let removed_at = Instant::now();
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut after: BTreeMap<String, usize> = BTreeMap::new();
    let mut outcome = "neither recovered nor exited within 15 s".to_owned();
    let mut recovered = false;
    let mut n = 0;
    while removed_at.elapsed() < Duration::from_secs(15) {
        if let Some(status) = process.wait_exit(Duration::ZERO).await {
            let message = support::final_message(&process.stderr()).unwrap_or_else(|| "(no message)".to_owned());
            outcome = format!("exited ({status}) with: {message}");
            row.check(!status.success(), "exited 0 after a store failure");
            break;
        }
        let id = format!("after-{n}");
        n += 1;
        let body = support::event_body(&id, None, 500);
        let answer = quick.post(&ingest_url).json(&body).send().await;
        let status = answer.as_ref().ok().map(|r| r.status().as_u16());
        if let Ok(response) = answer {
            if response.status().is_success() {
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                let event_id = answer["event_id"].as_str().unwrap_or_default().to_owned();
                ledger.lock().unwrap().acked.insert(id, event_id);
            }
        }
        *after
            .entry(status.map_or("no answer in 3 s".to_owned(), |s| s.to_string()))
            .or_default() += 1;
        if status == Some(202) {
            outcome = format!(
                "recovered by itself: first 2xx {} ms after the ballast went",
                removed_at.elapsed().as_millis()
            );
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    row.observe(format!(
        "after the ballast was removed: {outcome} (ingest answers {after:?})"
    ));
    row.check(
        recovered || outcome.starts_with("exited"),
        "after the ballast was removed the gateway neither took events again nor exited",
    );
    if process.wait_exit(Duration::ZERO).await.is_none() && !recovered {
        let ready = quick
            .get(process.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16());
        let reads = reads_work(&process, &ledger).await;
        row.observe(format!(
            "meanwhile /readyz answers {:?}, admin reads {}",
            ready.ok(),
            if reads.is_ok() {
                "200".to_owned()
            } else {
                format!("{reads:?}")
            }
        ));
    }
    if let Some(trace) = support::panic_trace(&process.stderr()) {
        row.check(false, format!("panic: {trace}"));
    }

    // Whatever happened, every 2xx'd event must be on disk: restart and look.
    if process.wait_exit(Duration::ZERO).await.is_none() {
        process.terminate();
        match process.wait_exit(Duration::from_secs(10)).await {
            Some(status) => row.observe(format!(
                "SIGTERM: exit {:?} ({})",
                status.code(),
                support::final_message(&process.stderr()).unwrap_or_else(|| "no message".to_owned())
            )),
            None => {
                row.observe("SIGTERM: still running 10 s later; killed");
                row.check(false, "SIGTERM did not stop the gateway after the store failure");
                process.sigkill();
                process.wait_exit(Duration::from_secs(5)).await;
            }
        }
    }
    drop(process);
    let mut restarted = gateway.spawn();
    let ready = support::try_ready(&mut restarted, Duration::from_secs(30))
        .await
        .is_ok();
    if !ready {
        let exit = restarted.wait_exit(Duration::from_secs(1)).await;
        row.observe(format!(
            "restart on the same data dir failed ({exit:?}): {}",
            support::final_message(&restarted.stderr()).unwrap_or_default()
        ));
        row.check(false, "the gateway does not start again on the data dir it filled");
        return row.finish();
    }
    let acked = ledger.lock().unwrap().acked.clone();
    let lost = missing_events(&restarted, &acked).await;
    let missing = support::wait_delivered(
        &[("receiver", &receiver, acked.keys().cloned().collect())],
        Duration::from_secs(pick(40, 60)),
    )
    .await;
    let undelivered: usize = missing.values().map(|m| m.len()).sum();
    row.observe(format!(
        "after restart: {} 2xx'd events, {} missing from the store, {undelivered} not delivered",
        acked.len(),
        lost.len()
    ));
    row.check(
        lost.is_empty(),
        format!("2xx'd events lost: {:?}", &lost[..lost.len().min(5)]),
    );
    row.check(undelivered == 0, format!("2xx'd events never delivered: {missing:?}"));
    if let Some(trace) = support::panic_trace(&restarted.stderr()) {
        row.check(false, format!("panic after restart: {trace}"));
    }
    restarted.terminate();
    restarted.wait_exit(Duration::from_secs(10)).await;
    drop(restarted);
    drop(mount);
    row.finish();
}
