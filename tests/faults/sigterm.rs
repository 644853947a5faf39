//! SIGTERM under load: events streaming in, deliveries under way (some held longer
//! than the grace period). Exit 0 within the grace period; nothing acknowledged lost;
//! the deliveries cut off are made again after the restart.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::net::{Action, TcpReceiver};
use crate::report::{pick, Row};
use crate::support::{self, Ledger};

const SENDERS: usize = 4;
const GRACE_MS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_zero_in_the_grace_period_and_loses_nothing() {
    let _load = support::exclusive().await;
    let load_for = Duration::from_millis(pick(1500, 5000));
    let mut row = Row::new(
        &format!("SIGTERM under load ({SENDERS} senders, every 10th delivery held 10 s, grace {GRACE_MS} ms)"),
        "exit 0 within the grace period; every 2xx'd event delivered; deliveries cut off are retried after restart",
    );
    // Every 10th request is held far beyond the grace period; the others answer fast.
    let receiver = TcpReceiver::start(|n| match n % 10 {
        9 => Action::after(Duration::from_secs(10), 200),
        _ => Action::after(Duration::from_millis(5), 200),
    })
    .await;
    let gateway = Gateway::new()
        .env("HOOKRELAY_SHUTDOWN_GRACE_MS", &GRACE_MS.to_string())
        .env("HOOKRELAY_DELIVERY_TIMEOUT_MS", "15000");
    let process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(&process, &[(&[], receiver.url("/hook"))]).await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let process = Arc::new(process);
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            tokio::spawn(support::stream_events(
                process.clone(),
                ingest_url.clone(),
                format!("s{sender}"),
                vec![Some("order.paid")],
                ledger.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(load_for).await;
    let asked = Instant::now();
    process.sigterm();
    // Senders stop on their first refusal (503 while stopping) or transport error.
    for sender in senders {
        if tokio::time::timeout(Duration::from_secs(20), sender).await.is_err() {
            stop.store(true, Ordering::SeqCst);
        }
    }
    stop.store(true, Ordering::SeqCst);
    let mut process = Arc::try_unwrap(process).unwrap_or_else(|_| panic!("a sender kept the process"));
    let status = process
        .expect_exit(Duration::from_millis(GRACE_MS) + Duration::from_secs(10))
        .await;
    let took = asked.elapsed();
    let held: BTreeSet<String> = receiver
        .received()
        .iter()
        .filter(|r| r.n % 10 == 9)
        .map(|r| r.webhook_id.clone())
        .collect();
    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    row.observe(format!(
        "after {:.1} s of load: {} events 2xx'd, refusals {:?} (codes {:?}), {} unanswered; \
         {} deliveries held at SIGTERM",
        load_for.as_secs_f64(),
        ledger.acked.len(),
        ledger.refused,
        ledger.refusal_codes,
        ledger.unanswered.len(),
        held.len()
    ));
    row.observe(format!(
        "exit code {:?} {} ms after SIGTERM",
        status.code(),
        took.as_millis()
    ));
    row.check(
        status.code() == Some(0),
        format!("exit status {status}: {}", process.stderr()),
    );
    row.check(
        took <= Duration::from_millis(GRACE_MS + 1500),
        format!("the stop took {} ms, grace is {GRACE_MS} ms", took.as_millis()),
    );
    // 503 while stopping; 429 when the senders outran the per-merchant rate limit (they retry).
    let unexpected: Vec<&u16> = ledger.refused.keys().filter(|s| !matches!(**s, 503 | 429)).collect();
    row.check(
        unexpected.is_empty(),
        format!("refusals other than 503 (stopping) or 429 (rate limit): {unexpected:?}"),
    );
    if let Some(trace) = support::panic_trace(&process.stderr()) {
        row.check(false, format!("panic: {trace}"));
    }
    drop(process);

    receiver.answer_with(|_| Action::ok());
    let restarted_at = Instant::now();
    let process = gateway.start().await;
    let acked: BTreeSet<String> = ledger.acked.keys().cloned().collect();
    let missing = support::wait_delivered(&[("receiver", &receiver, acked.clone())], Duration::from_secs(30)).await;
    row.check(missing.is_empty(), format!("2xx'd events never delivered: {missing:?}"));
    let redelivered: BTreeSet<String> = receiver
        .received()
        .iter()
        .filter(|r| r.at >= restarted_at)
        .map(|r| r.webhook_id.clone())
        .collect();
    let not_retried: Vec<&String> = held.difference(&redelivered).collect();
    let (dupes, inconsistent) = support::duplicates(&receiver, &ledger.acked);
    row.observe(format!(
        "after restart: all {} delivered: {}; {} of {} cut-off deliveries made again; {dupes} duplicates in all, \
         webhook-ids consistent: {}",
        acked.len(),
        missing.is_empty(),
        held.len() - not_retried.len(),
        held.len(),
        inconsistent.is_empty()
    ));
    row.check(
        not_retried.is_empty(),
        format!("cut-off deliveries never retried: {not_retried:?}"),
    );
    // For each of those: every arrival of it (request number, ms relative to SIGTERM).
    let all = receiver.received();
    for webhook_id in &not_retried {
        let arrivals: Vec<String> = all
            .iter()
            .filter(|r| &r.webhook_id == *webhook_id)
            .map(|r| {
                let n = r.n;
                let ms = if r.at >= asked {
                    r.at.duration_since(asked).as_millis() as i64
                } else {
                    -(asked.duration_since(r.at).as_millis() as i64)
                };
                format!(
                    "request #{n} ({}) at {ms} ms",
                    if n % 10 == 9 { "held" } else { "answered" }
                )
            })
            .collect();
        row.observe(format!("{webhook_id} arrived as: {arrivals:?}"));
    }
    row.check(
        inconsistent.is_empty(),
        format!("inconsistent webhook-ids: {inconsistent:?}"),
    );
    drop(process);
    row.finish();
}
