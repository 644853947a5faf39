//! Bounded growth: steady ingest and delivery with a short retention, sampling the
//! gateway's RSS and the data directory's size every second into a CSV. Both must
//! level off: the last third of the run grows little next to the first third.
//!
//! The CSV goes to `$HOOKRELAY_FAULTS_SOAK_CSV`, or `target/soak-<profile>.csv`;
//! `scripts/plot_soak.py` draws it.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::gateway::Gateway;
use crate::net::TcpReceiver;
use crate::report::{pick, profile, Row};
use crate::support;

/// Events per second offered: 300 in the long profile (run it with `--release`); the
/// quick one runs on the debug build, which delivers only about 300 attempts/s on 2 cores
/// (less on a CI machine busy with other work): the quick rate leaves it ample headroom.
fn rate() -> u64 {
    pick(50, 300)
}
/// Ingest requests in flight at most; beyond it a tick's sends are dropped (and counted).
const MAX_IN_FLIGHT: usize = 128;
const MIB: f64 = 1024.0 * 1024.0;

/// One sample.
struct Sample {
    t: f64,
    rss_kib: u64,
    disk_bytes: u64,
    ingested: u64,
    delivered: u64,
    queue_depth: f64,
}

fn csv_path() -> PathBuf {
    match std::env::var_os("HOOKRELAY_FAULTS_SOAK_CSV") {
        Some(path) => PathBuf::from(path),
        None => crate::report::report_path().with_file_name(format!("soak-{:?}.csv", profile()).to_lowercase()),
    }
}

/// Growth of `value` over the first and over the last third of the samples.
fn thirds(samples: &[Sample], value: impl Fn(&Sample) -> f64) -> (f64, f64) {
    let end = samples.last().map_or(0.0, |s| s.t);
    let at = |t: f64| {
        samples
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
            .map_or(0.0, &value)
    };
    (at(end / 3.0) - at(0.0), at(end) - at(2.0 * end / 3.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_steady_load_with_retention_rss_and_disk_level_off() {
    let _load = support::exclusive().await;
    let duration = Duration::from_secs(pick(60, 600));
    let retention_hours = pick("0.005", "0.05");
    let purge_ms = pick("2000", "10000");
    let mut row = Row::new(
        &format!(
            "Soak: {} events/s x 2 endpoints for {} s, retention {retention_hours} h, purge every {purge_ms} ms",
            rate(),
            duration.as_secs()
        ),
        "RSS and data-dir size level off: growth in the last third ≤ half the first third's (+4 MiB); delivery keeps up; old events purged",
    );
    let first = TcpReceiver::counting().await;
    let second = TcpReceiver::counting().await;
    let gateway = Gateway::new()
        .env("HOOKRELAY_RETENTION_HOURS", retention_hours)
        .env("HOOKRELAY_PURGE_INTERVAL_MS", purge_ms);
    let mut process = gateway.start().await;
    let pid = process.pid();
    let (ingest_url, _) =
        support::setup_merchant(&process, &[(&[], first.url("/one")), (&[], second.url("/two"))]).await;

    // The load: rate/10 events every 100 ms on a pooled client.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ingested = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let started = Instant::now();
    let load = {
        let (ingested, failed, dropped) = (ingested.clone(), failed.clone(), dropped.clone());
        let ingest_url = ingest_url.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            while started.elapsed() < duration {
                tick.tick().await;
                for _ in 0..rate() / 10 {
                    n += 1;
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let body = support::event_body(&format!("soak-{n}"), Some("order.paid"), 300);
                    let (client, url) = (client.clone(), ingest_url.clone());
                    let (ingested, failed) = (ingested.clone(), failed.clone());
                    tokio::spawn(async move {
                        let _permit = permit;
                        match client.post(&url).json(&body).send().await {
                            Ok(r) if r.status() == 202 => ingested.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    });
                }
            }
        })
    };

    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration + Duration::from_secs(1) {
        tick.tick().await;
        samples.push(Sample {
            t: started.elapsed().as_secs_f64(),
            rss_kib: support::proc_status_kb(pid, "VmRSS"),
            disk_bytes: support::disk_usage(gateway.data_path()),
            ingested: ingested.load(Ordering::Relaxed),
            delivered: (first.count() + second.count()) as u64,
            queue_depth: process.metric("hookrelay_queue_depth").await,
        });
    }
    load.await.unwrap();

    let path = csv_path();
    let mut csv = String::from("elapsed_s,rss_kib,disk_bytes,ingested,delivered,queue_depth\n");
    for s in &samples {
        csv.push_str(&format!(
            "{:.1},{},{},{},{},{}\n",
            s.t, s.rss_kib, s.disk_bytes, s.ingested, s.delivered, s.queue_depth
        ));
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(csv.as_bytes()))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));

    let total = ingested.load(Ordering::Relaxed);
    let achieved = total as f64 / duration.as_secs_f64();
    row.observe(format!(
        "{total} events accepted ({achieved:.0}/s), {} failed, {} not sent (gateway behind); CSV {}",
        failed.load(Ordering::Relaxed),
        dropped.load(Ordering::Relaxed),
        path.display()
    ));
    row.check(
        achieved >= rate() as f64 * 0.9,
        format!("only {achieved:.0} events/s accepted of {} offered", rate()),
    );
    row.check(failed.load(Ordering::Relaxed) == 0, "ingests failed during the soak");

    let delivered_all = support::eventually(Duration::from_secs(30), || async {
        (first.count() + second.count()) as u64 >= 2 * total
    })
    .await;
    let max_depth = samples.iter().map(|s| s.queue_depth).fold(0.0, f64::max);
    row.observe(format!(
        "delivered {} of {} (max queue_depth {max_depth})",
        first.count() + second.count(),
        2 * total
    ));
    row.check(delivered_all, "deliveries did not catch up within 30 s of the end");
    row.check(
        max_depth <= (rate() * 20) as f64,
        format!("delivery fell behind: queue_depth reached {max_depth} (over 20 s of load)"),
    );

    let (rss_first, rss_last) = thirds(&samples, |s| s.rss_kib as f64 * 1024.0);
    let (disk_first, disk_last) = thirds(&samples, |s| s.disk_bytes as f64);
    let rss_end = samples.last().map_or(0, |s| s.rss_kib) as f64 * 1024.0;
    let disk_end = samples.last().map_or(0, |s| s.disk_bytes) as f64;
    row.observe(format!(
        "RSS grew {:.1} MiB in the first third, {:.1} MiB in the last (ends at {:.0} MiB); \
         data dir grew {:.1} MiB in the first third, {:.1} MiB in the last (ends at {:.1} MiB)",
        rss_first / MIB,
        rss_last / MIB,
        rss_end / MIB,
        disk_first / MIB,
        disk_last / MIB,
        disk_end / MIB
    ));
    row.check(
        rss_last <= 0.5 * rss_first.max(0.0) + 4.0 * MIB,
        format!("RSS still growing: {:.1} MiB in the last third", rss_last / MIB),
    );
    row.check(
        disk_last <= 0.5 * disk_first.max(0.0) + 4.0 * MIB,
        format!("data dir still growing: {:.1} MiB in the last third", disk_last / MIB),
    );

    // How many events the store still keeps (the rest was purged).
    let mut kept = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..400 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/merchants/m1/events?limit=500&cursor={c}"),
            None => "/api/v1/merchants/m1/events?limit=500".to_owned(),
        };
        let (status, page) = process.admin(reqwest::Method::GET, &path, None).await;
        if status != 200 {
            break;
        }
        kept += page["data"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    row.observe(format!("events still stored at the end: {kept} of {total}"));
    row.check(
        (kept as f64) < total as f64 * 0.6,
        format!("retention purged little: {kept} of {total} events kept"),
    );
    process.terminate();
    let status = process.expect_exit(Duration::from_secs(30)).await;
    row.check(status.code() == Some(0), format!("stop after the soak: {status}"));
    row.finish();
}
