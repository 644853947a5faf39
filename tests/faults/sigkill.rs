//! SIGKILL loops: kill the gateway at random moments while events stream in and
//! deliveries are under way, restart it on the same data directory, many times over.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;

use crate::gateway::Gateway;
use crate::net::{Action, TcpReceiver};
use crate::report::{pick, Row};
use crate::support::{self, Ledger};

const SENDERS: usize = 3;
const KINDS: [Option<&str>; 3] = [Some("order.paid"), Some("order.created"), None];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    let _load = support::exclusive().await;
    let cycles = pick(20, 100);
    let mut row = Row::new(
        &format!("SIGKILL loop ({cycles} kill/restart cycles under ingest and delivery)"),
        "every 2xx'd event reaches every matched endpoint at least once; duplicates carry the same webhook-id",
    );
    // Receivers take a little time, so deliveries are in flight when the kill lands.
    let delayed = |_| Action::after(Duration::from_millis(rand::rng().random_range(0..25)), 200);
    let paid = TcpReceiver::start(delayed).await;
    let everything = TcpReceiver::start(delayed).await;
    let gateway = Gateway::new();
    let mut process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(
        &process,
        &[(&["order.paid"], paid.url("/paid")), (&[], everything.url("/all"))],
    )
    .await;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let started = Instant::now();
    for cycle in 0..cycles {
        let shared = Arc::new(process);
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                tokio::spawn(support::stream_events(
                    shared.clone(),
                    ingest_url.clone(),
                    format!("c{cycle}-s{sender}"),
                    KINDS.to_vec(),
                    ledger.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        let run_for = Duration::from_millis(rand::rng().random_range(pick(100..900, 100..2500)));
        tokio::time::sleep(run_for).await;
        shared.sigkill();
        stop.store(true, Ordering::SeqCst);
        for sender in senders {
            sender.await.unwrap();
        }
        let mut killed = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("a sender kept the process"));
        killed.expect_exit(Duration::from_secs(10)).await;
        if let Some(trace) = support::panic_trace(&killed.stderr()) {
            row.check(false, format!("cycle {cycle}: a panic before the kill: {trace}"));
        }
        process = gateway.start().await;
    }
    let loop_took = started.elapsed();

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    let all: BTreeSet<String> = ledger.acked.keys().cloned().collect();
    let paid_ids: BTreeSet<String> = all
        .iter()
        .filter(|id| kind_of(id) == Some("order.paid"))
        .cloned()
        .collect();
    row.observe(format!(
        "{cycles} cycles in {:.0} s: {} events acknowledged, {} requests cut off unanswered by the kills, refusals {:?} (codes {:?})",
        loop_took.as_secs_f64(),
        ledger.acked.len(),
        ledger.unanswered.len(),
        ledger.refused,
        ledger.refusal_codes
    ));
    row.check(
        ledger.acked.len() >= cycles * 10,
        "too few events were acknowledged to mean anything",
    );
    // 429: the senders outran the per-merchant rate limit and sent the event again.
    let refused: Vec<&u16> = ledger.refused.keys().filter(|s| **s != 429).collect();
    row.check(
        refused.is_empty(),
        format!(
            "non-2xx answers while running: {:?} (codes {:?})",
            ledger.refused, ledger.refusal_codes
        ),
    );

    let missing = support::wait_delivered(
        &[
            ("order.paid endpoint", &paid, paid_ids.clone()),
            ("unfiltered endpoint", &everything, all.clone()),
        ],
        Duration::from_secs(pick(60, 180)),
    )
    .await;
    let missing_count: usize = missing.values().map(BTreeSet::len).sum();
    row.observe(format!(
        "delivered: {} of {} to order.paid, {} of {} to unfiltered",
        paid_ids.len() - missing.get("order.paid endpoint").map_or(0, BTreeSet::len),
        paid_ids.len(),
        all.len() - missing.get("unfiltered endpoint").map_or(0, BTreeSet::len),
        all.len()
    ));
    row.check(
        missing_count == 0,
        format!(
            "{missing_count} acknowledged deliveries never arrived, e.g. {:?}",
            missing
                .iter()
                .map(|(k, v)| (k, v.iter().take(5).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        ),
    );
    // A receiver must never get an event of a type its endpoint does not take.
    let foreign: Vec<String> = paid
        .received()
        .into_iter()
        .filter(|r| kind_of(&r.body_id) != Some("order.paid"))
        .map(|r| r.body_id)
        .collect();
    row.check(
        foreign.is_empty(),
        format!("order.paid endpoint got other types: {foreign:?}"),
    );

    let (paid_dupes, paid_bad) = support::duplicates(&paid, &ledger.acked);
    let (all_dupes, all_bad) = support::duplicates(&everything, &ledger.acked);
    let unacked_delivered = ledger
        .unanswered
        .iter()
        .filter(|id| everything.received().iter().any(|r| &r.body_id == *id))
        .count();
    row.observe(format!(
        "duplicates caused by the kills: {} ({paid_dupes} + {all_dupes}) of {} deliveries, all under one webhook-id per event: {}; \
         {unacked_delivered} of the unanswered events were stored and delivered anyway",
        paid_dupes + all_dupes,
        paid.count() + everything.count(),
        paid_bad.is_empty() && all_bad.is_empty()
    ));
    row.check(
        paid_bad.is_empty() && all_bad.is_empty(),
        format!(
            "events under several or wrong webhook-ids: {:?}",
            [paid_bad, all_bad].concat()
        ),
    );

    process.terminate();
    let status = process.expect_exit(Duration::from_secs(15)).await;
    row.check(status.code() == Some(0), format!("the last SIGTERM ended in {status}"));
    row.finish();
}

/// The type the senders gave the event with this provider id (`c{cycle}-s{sender}-{n}`).
fn kind_of(id: &str) -> Option<&'static str> {
    let n: usize = id.rsplit('-').next()?.parse().ok()?;
    KINDS[n % KINDS.len()]
}
