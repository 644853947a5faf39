//! Receivers down for several retry intervals, then back: while down each is probed
//! with one delivery at a time instead of every due delivery being attempted, once back
//! everything arrives with no more requests at once than the endpoint's concurrency,
//! and the gauges return to 0.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::net::{Action, TcpReceiver};
use crate::report::{pick, Row};
use crate::support::{self, Ledger};

const SENDERS: usize = 8;
/// The gateway's `HOOKRELAY_ENDPOINT_CONCURRENCY` (its default).
const ENDPOINT_CONCURRENCY: usize = 16;
/// Attempts without an answer after which an endpoint is probed (`UNREACHABLE_AFTER`).
const MISSES_BEFORE_PROBING: usize = 5;
/// `HOOKRELAY_RETRY_INITIAL_MS`: also the least gap between two probes.
const PROBE_GAP_MS: u128 = 250;
/// How long the receivers take to answer once back, so that requests overlap and the
/// most at once shows the concurrency the gateway kept to.
const ANSWER_AFTER: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_down_for_several_retry_intervals_are_probed_and_get_everything_without_a_retry_storm() {
    let _load = support::exclusive().await;
    let events = pick(200, 1000);
    let down_for = Duration::from_secs(pick(6, 30));
    let mut row = Row::new(
        &format!(
            "Receivers down {} s (retry 250 ms doubling to 2 s), {events} events x 2 endpoints",
            down_for.as_secs()
        ),
        "while down, each probed one attempt at a time (after the attempts under way, one per 250 ms at \
         most); all delivered after recovery (answers taking 20 ms) with at most 16 requests at once each; queue_depth and in_flight back to 0",
    );
    let first = TcpReceiver::healthy().await;
    let second = TcpReceiver::healthy().await;
    let gateway = Gateway::new()
        .env("HOOKRELAY_RETRY_INITIAL_MS", "250")
        .env("HOOKRELAY_RETRY_MAX_MS", "2000")
        .env("HOOKRELAY_RETRY_MAX_ATTEMPTS", "200")
        .env("HOOKRELAY_DELIVERY_TIMEOUT_MS", "2000");
    let process = Arc::new(gateway.start().await);
    let (ingest_url, _) =
        support::setup_merchant(&process, &[(&[], first.url("/one")), (&[], second.url("/two"))]).await;
    first.go_down();
    second.go_down();
    let down_since = Instant::now();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (process, url, ledger) = (process.clone(), ingest_url.clone(), ledger.clone());
            tokio::spawn(async move {
                for n in (sender..events).step_by(SENDERS) {
                    let body = support::event_body(&format!("e{n}"), Some("order.paid"), 100);
                    support::send_one(&process, &url, &body, &ledger).await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let acked: BTreeSet<String> = ledger.lock().unwrap().acked.keys().cloned().collect();
    row.check(
        acked.len() == events,
        format!("only {} of {events} ingests were acknowledged", acked.len()),
    );
    tokio::time::sleep(down_for).await;
    let failed_attempts = process
        .metric("hookrelay_delivery_attempts_total{outcome=\"connect_error\"}")
        .await;
    let depth_while_down = process.metric("hookrelay_queue_depth").await;
    let unreachable = process.metric("hookrelay_endpoints_unreachable").await;
    let down_ms = down_since.elapsed().as_millis();
    row.observe(format!(
        "while down ({down_ms} ms): {failed_attempts} connect_error attempts, queue_depth {depth_while_down}, \
         endpoints_unreachable {unreachable}"
    ));
    // Attempting every due delivery would have made at least one attempt per delivery.
    // Probing, for each endpoint: the four misses before the fifth, the attempts under
    // way when it came back (at most the endpoint's concurrency, it included), then
    // one per probe gap and one more, and two for timing slack.
    let bound =
        2.0 * ((MISSES_BEFORE_PROBING - 1 + ENDPOINT_CONCURRENCY) as f64 + (down_ms / PROBE_GAP_MS) as f64 + 3.0);
    row.check(
        failed_attempts <= bound,
        format!("{failed_attempts} attempts while down, more than probing makes ({bound})"),
    );
    row.check(
        unreachable == 2.0,
        format!("endpoints_unreachable {unreachable} while both were down"),
    );
    let connections_before = [first.connections(), second.connections()];

    for receiver in [&first, &second] {
        receiver.answer_with(|_| Action::after(ANSWER_AFTER, 200));
    }
    let recovered = Instant::now();
    first.come_back().await;
    second.come_back().await;
    let missing = support::wait_delivered(
        &[("first", &first, acked.clone()), ("second", &second, acked.clone())],
        Duration::from_secs(30),
    )
    .await;
    let all_in = recovered.elapsed();
    row.check(
        missing.is_empty(),
        format!(
            "not delivered after recovery: {:?}",
            missing.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
        ),
    );

    for ((name, receiver), before) in [("first", &first), ("second", &second)]
        .into_iter()
        .zip(connections_before)
    {
        // Connections are only observed: the gateway's HTTP client may open one while a
        // finished request's connection is still on its way back to its pool.
        let opened = receiver.connections() - before;
        let most = receiver.most_at_once();
        row.observe(format!(
            "{name}: at most {most} requests at once over {opened} connections opened after recovery"
        ));
        // The receiver served nothing before it went down, so this is after recovery.
        row.check(
            most <= ENDPOINT_CONCURRENCY,
            format!("{name}: {most} requests at once after recovery, beyond the endpoint's concurrency"),
        );
        let mut arrivals: Vec<f64> = receiver
            .received()
            .iter()
            .filter(|r| r.at >= recovered)
            .map(|r| r.at.duration_since(recovered).as_secs_f64() * 1000.0)
            .collect();
        arrivals.sort_by(f64::total_cmp);
        let busiest = busiest_window(&arrivals, 10.0);
        let (p5, p50, p95) = (
            support::quantile(&arrivals, 0.05),
            support::quantile(&arrivals, 0.5),
            support::quantile(&arrivals, 0.95),
        );
        row.observe(format!(
            "{name}: {} arrivals after recovery over {:.0} ms (p5 {p5:.0}, p50 {p50:.0}, p95 {p95:.0} ms after it), \
             busiest 10 ms window {busiest}",
            arrivals.len(),
            arrivals.last().copied().unwrap_or(0.0),
        ));
        let extra = receiver.count().saturating_sub(events);
        row.check(
            extra <= events / 20,
            format!("{name}: {extra} requests beyond one per event"),
        );
    }
    row.observe(format!("everything in {:.1} s after recovery", all_in.as_secs_f64()));

    let (depth, in_flight) = support::wait_gauges_zero(&process, Duration::from_secs(10)).await;
    row.observe(format!(
        "gauges after: queue_depth {depth}, deliveries_in_flight {in_flight}"
    ));
    row.check(
        depth == 0.0 && in_flight == 0.0,
        "queue_depth / deliveries_in_flight did not return to 0",
    );
    row.finish();
}

/// The most arrivals (sorted, in ms) within any window of `width` ms.
fn busiest_window(sorted: &[f64], width: f64) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] > width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}
