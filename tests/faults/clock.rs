//! Clock jumps between runs: retries scheduled while the clock was days ahead (or
//! behind), then a restart with the real clock. Far-future schedules must not strand
//! the work; past-due ones must run at once. The clock is faked with libfaketime
//! (`LD_PRELOAD`), since the system clock cannot be changed here.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::gateway::Gateway;
use crate::net::{Action, TcpReceiver};
use crate::report::Row;
use crate::support;

const EVENTS: usize = 10;
const RETRY_MAX_MS: u64 = 2000;

fn libfaketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
        "/usr/local/lib/faketime/libfaketime.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|path| path.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_scheduled_under_a_clock_two_days_ahead_still_run_soon_after_a_restart() {
    clock_jump("+2d", 2 * 86_400, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_scheduled_under_a_clock_two_days_behind_run_at_once_after_a_restart() {
    clock_jump("-2d", -2 * 86_400, Duration::from_secs(5)).await;
}

/// Runs the gateway with its clock at `offset` (libfaketime syntax) while retries get
/// scheduled, then restarts it with the real clock: everything must arrive within `within`.
async fn clock_jump(offset: &str, offset_s: i64, within: Duration) {
    let _load = support::shared().await;
    let mut row = Row::new(
        &format!("Clock jump: retries scheduled with the clock at {offset}, then restart with the real clock"),
        &format!(
            "due work runs soon after the restart (all {EVENTS} delivered within {} s; retry cap {RETRY_MAX_MS} ms)",
            within.as_secs()
        ),
    );
    let Some(library) = libfaketime() else {
        return row.skip("libfaketime is not installed (apt-get install faketime)");
    };
    let receiver = TcpReceiver::start(|_| Action::status(500)).await;
    let real = Gateway::new()
        .env("HOOKRELAY_RETRY_INITIAL_MS", "500")
        .env("HOOKRELAY_RETRY_MAX_MS", &RETRY_MAX_MS.to_string())
        .env("HOOKRELAY_RETRY_MAX_ATTEMPTS", "100");
    let faked = real
        .clone()
        .env("LD_PRELOAD", &library.display().to_string())
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut process = faked.spawn();
    if let Err(why) = support::try_ready(&mut process, Duration::from_secs(30)).await {
        return row.skip(&format!("the gateway does not run under libfaketime: {why}"));
    }
    let (ingest_url, _) = support::setup_merchant(&process, &[(&[], receiver.url("/hook"))]).await;
    let mut event_ids = Vec::new();
    for n in 0..EVENTS {
        let (status, body) = process
            .ingest(&ingest_url, &support::event_body(&format!("e{n}"), None, 100))
            .await
            .expect("ingest");
        assert_eq!(status, 202, "{body}");
        event_ids.push(body["event_id"].as_str().unwrap().to_owned());
    }
    let (_, event) = process
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/merchants/m1/events/{}", event_ids[0]),
            None,
        )
        .await;
    let received_at = event["received_at"]
        .as_str()
        .and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let skew = received_at.map(|t| (t - Utc::now()).num_seconds());
    if skew.is_none_or(|s| (s - offset_s).abs() >= 3600) {
        return row.skip(&format!(
            "libfaketime did not move this binary's clock (received_at {received_at:?}, skew {skew:?} s)"
        ));
    }
    // The first attempt and at least one retry fail, so retries are scheduled on the fake clock.
    let attempted = receiver.wait_for(2 * EVENTS, Duration::from_secs(15)).await;
    row.check(attempted, "the failing attempts did not happen under the fake clock");
    let (_, event) = process
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/merchants/m1/events/{}", event_ids[0]),
            None,
        )
        .await;
    let next = event["deliveries"][0]["next_attempt_at"]
        .as_str()
        .unwrap_or("none")
        .to_owned();
    process.terminate();
    let status = process.expect_exit(Duration::from_secs(15)).await;
    row.check(status.code() == Some(0), format!("the faked run stopped with {status}"));
    row.observe(format!(
        "under {offset}: event stored at {}, {} failed attempts, next retry stored for {next}",
        received_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
        receiver.count()
    ));
    drop(process);

    receiver.answer_with(|_| Action::ok());
    let before = receiver.count();
    let restarted = Instant::now();
    let mut process = real.start().await;
    let ready_after = restarted.elapsed();
    let delivered = support::eventually(within, || async {
        receiver.received()[before..]
            .iter()
            .map(|r| &r.webhook_id)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            >= EVENTS
    })
    .await;
    let arrivals: Vec<u128> = receiver.received()[before..]
        .iter()
        .map(|r| r.at.saturating_duration_since(restarted).as_millis())
        .collect();
    let (_, event) = process
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/merchants/m1/events/{}", event_ids[0]),
            None,
        )
        .await;
    row.observe(format!(
        "real clock: ready {} ms after spawn; {} of {EVENTS} delivered within {} s (at {:?} ms after spawn); delivery now {} / next {}",
        ready_after.as_millis(),
        arrivals.len(),
        within.as_secs(),
        arrivals,
        event["deliveries"][0]["status"],
        event["deliveries"][0]["next_attempt_at"]
    ));
    row.check(
        delivered,
        format!("not all delivered within {} s of the restart", within.as_secs()),
    );
    process.terminate();
    process.wait_exit(Duration::from_secs(10)).await;
    row.finish();
}
