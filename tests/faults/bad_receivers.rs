//! Receivers that misbehave: hang, answer slowly, stream a huge body, reset the
//! connection, redirect. Each attempt must be classified under the right `outcome`,
//! and a healthy endpoint of the same merchant must not be slowed down by it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::gateway::Gateway;
use crate::net::{Action, TcpReceiver};
use crate::report::{pick, Row};
use crate::support;

const OUTCOMES: [&str; 4] = ["success", "http_error", "timeout", "connect_error"];
/// The attempt timeout these tests run with.
const TIMEOUT_MS: u64 = 1000;
/// The body a huge receiver streams.
const HUGE_BYTES: u64 = 50 * 1024 * 1024;
/// How long a healthy endpoint's deliveries may take, from ingest to arrival: 90% of
/// them, and the slowest (a margin for a loaded machine; a blocked endpoint would take
/// the whole 1 s timeout or more).
const HEALTHY_P90_MS: f64 = 300.0;
const HEALTHY_MAX_MS: f64 = 750.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    Hang,
    Slow,
    Huge,
    Reset,
    Redirect,
}

impl Misbehaviour {
    fn describe(self) -> &'static str {
        match self {
            Self::Hang => "Receiver hangs (accepts, reads, never answers)",
            Self::Slow => "Receiver answers slowly (one byte per 100 ms, ~7 s > 1 s timeout)",
            Self::Huge => "Receiver answers 200 with a 50 MB streamed body",
            Self::Reset => "Receiver resets connections (RST on accept / after the request)",
            Self::Redirect => "Receiver answers 302 with a Location",
        }
    }

    /// The `outcome` label its attempts must be counted under.
    fn outcome(self) -> &'static str {
        match self {
            Self::Hang | Self::Slow => "timeout",
            Self::Huge => "success",
            Self::Reset => "connect_error",
            Self::Redirect => "http_error",
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_times_out_and_does_not_delay_a_healthy_endpoint() {
    misbehaving_receiver(Misbehaviour::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out_and_does_not_delay_a_healthy_endpoint() {
    misbehaving_receiver(Misbehaviour::Slow).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_answer_body_is_read_only_in_part_and_counts_as_success() {
    misbehaving_receiver(Misbehaviour::Huge).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resetting_receiver_counts_as_connect_error_and_does_not_delay_a_healthy_endpoint() {
    misbehaving_receiver(Misbehaviour::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_receiver_counts_as_http_error_and_is_not_followed() {
    misbehaving_receiver(Misbehaviour::Redirect).await;
}

async fn misbehaving_receiver(kind: Misbehaviour) {
    let _load = support::exclusive().await;
    let events = pick(10, 40);
    let expected = kind.outcome();
    let mut row = Row::new(
        kind.describe(),
        &format!(
            "attempts counted as outcome={expected}; a healthy endpoint's deliveries arrive within {HEALTHY_P90_MS} ms (p90; max {HEALTHY_MAX_MS} ms){}",
            match kind {
                Misbehaviour::Huge => "; gateway RSS stays low and the attempt ends promptly",
                Misbehaviour::Redirect => "; the redirect is not followed",
                _ => "",
            }
        ),
    );
    let healthy = TcpReceiver::healthy().await;
    let bad = match kind {
        Misbehaviour::Hang => TcpReceiver::start(|_| Action::Hang).await,
        Misbehaviour::Slow => {
            TcpReceiver::start(|_| Action::Trickle {
                per_byte: Duration::from_millis(100),
            })
            .await
        }
        Misbehaviour::Huge => TcpReceiver::start(|_| Action::Huge { bytes: HUGE_BYTES }).await,
        Misbehaviour::Reset => TcpReceiver::resetting().await,
        Misbehaviour::Redirect => {
            let location = healthy.url("/redirected");
            TcpReceiver::start(move |_| Action::Answer {
                status: 302,
                delay: Duration::ZERO,
                headers: vec![("location".to_owned(), location.clone())],
            })
            .await
        }
    };
    let gateway = Gateway::new()
        .env("HOOKRELAY_DELIVERY_TIMEOUT_MS", &TIMEOUT_MS.to_string())
        .env("HOOKRELAY_RETRY_INITIAL_MS", "300")
        .env("HOOKRELAY_RETRY_MAX_MS", "1000")
        .env("HOOKRELAY_RETRY_MAX_ATTEMPTS", "100");
    let mut process = gateway.start().await;
    let pid = process.pid();
    let (ingest_url, endpoint_ids) =
        support::setup_merchant(&process, &[(&[], bad.url("/bad")), (&[], healthy.url("/healthy"))]).await;
    let rss_before = support::proc_status_kb(pid, "VmRSS");
    let hwm_before = support::proc_status_kb(pid, "VmHWM");

    // One event every 100 ms; each goes to both endpoints.
    let ledger = std::sync::Arc::new(std::sync::Mutex::new(support::Ledger::default()));
    let mut sent_at = BTreeMap::new();
    for n in 0..events {
        let id = format!("e{n}");
        sent_at.insert(id.clone(), Instant::now());
        support::send_one(&process, &ingest_url, &support::event_body(&id, None, 100), &ledger).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = ledger.lock().unwrap().acked.clone();
    row.check(
        acked.len() == events,
        format!("{} of {events} ingests acknowledged", acked.len()),
    );

    // Latency to the healthy endpoint.
    let required = acked.keys().cloned().collect();
    let missing = support::wait_delivered(&[("healthy", &healthy, required)], Duration::from_secs(10)).await;
    row.check(
        missing.is_empty(),
        format!("the healthy endpoint is missing {missing:?}"),
    );
    let mut latencies: Vec<f64> = healthy
        .received()
        .iter()
        .filter(|r| r.path == "/healthy")
        .filter_map(|r| Some(r.at.saturating_duration_since(*sent_at.get(&r.body_id)?).as_secs_f64() * 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let worst = latencies.last().copied().unwrap_or(f64::INFINITY);
    let p90 = support::quantile(&latencies, 0.9);
    row.observe(format!(
        "healthy endpoint: {} deliveries, ingest→arrival p50 {:.0} ms, p90 {p90:.0} ms, max {worst:.0} ms",
        latencies.len(),
        support::quantile(&latencies, 0.5)
    ));
    row.check(
        p90 <= HEALTHY_P90_MS && worst <= HEALTHY_MAX_MS,
        format!("healthy deliveries took p90 {p90:.0} ms, max {worst:.0} ms"),
    );

    // Every event's first attempt on the bad endpoint is over within the timeout and a bit.
    let wanted = if kind == Misbehaviour::Huge { 2 * events } else { events } as f64;
    let series = format!("hookrelay_delivery_attempts_total{{outcome=\"{expected}\"}}");
    support::eventually(Duration::from_secs(10), || async {
        process.metric(&series).await >= wanted
    })
    .await;
    let mut counts = BTreeMap::new();
    for outcome in OUTCOMES {
        let value = process
            .metric(&format!("hookrelay_delivery_attempts_total{{outcome=\"{outcome}\"}}"))
            .await;
        counts.insert(outcome, value);
    }
    row.observe(format!(
        "hookrelay_delivery_attempts_total: {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    for outcome in OUTCOMES {
        let value = counts[outcome];
        match outcome {
            o if o == expected => {
                row.check(value >= wanted, format!("{o}={value}, expected at least {wanted}"));
            }
            "success" => {
                row.check(
                    value == events as f64,
                    format!("success={value}: only the healthy endpoint's {events} should succeed"),
                );
            }
            o => {
                row.check(
                    value == 0.0,
                    format!("{o}={value}: attempts counted under the wrong outcome"),
                );
            }
        }
    }

    // The attempts of one event, as the admin API records them.
    let event_id = acked.get("e0").cloned().unwrap_or_default();
    let (_, attempts) = process
        .admin(
            reqwest::Method::GET,
            &format!("/api/v1/merchants/m1/events/{event_id}/attempts?limit=500"),
            None,
        )
        .await;
    let bad_attempts: Vec<&serde_json::Value> = attempts["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|a| a["endpoint_id"] == endpoint_ids[0].as_str())
                .collect()
        })
        .unwrap_or_default();
    let outcomes: Vec<&str> = bad_attempts.iter().filter_map(|a| a["outcome"].as_str()).collect();
    let durations: Vec<u64> = bad_attempts.iter().filter_map(|a| a["duration_ms"].as_u64()).collect();
    let first_error = bad_attempts
        .first()
        .and_then(|a| a["error"].as_str())
        .unwrap_or("")
        .chars()
        .take(120)
        .collect::<String>();
    row.observe(format!(
        "attempts of one event on it: {outcomes:?}, durations {durations:?} ms, error {first_error:?}"
    ));
    row.check(
        !outcomes.is_empty() && outcomes.iter().all(|o| *o == expected),
        format!("attempt outcomes {outcomes:?}, expected all {expected}"),
    );
    if matches!(kind, Misbehaviour::Hang | Misbehaviour::Slow) {
        row.check(
            durations.iter().all(|d| *d <= TIMEOUT_MS + 500),
            format!("an attempt ran past the {TIMEOUT_MS} ms timeout: {durations:?}"),
        );
    }

    match kind {
        Misbehaviour::Huge => {
            let hwm_after = support::proc_status_kb(pid, "VmHWM");
            let rss_after = support::proc_status_kb(pid, "VmRSS");
            let written = bad.huge_written();
            let most = written.iter().max().copied().unwrap_or(0);
            row.observe(format!(
                "gateway RSS {} → {} MiB, peak {} → {} MiB; the receiver got at most {:.1} MiB of each 50 MiB body out before the gateway hung up ({} answers)",
                rss_before / 1024,
                rss_after / 1024,
                hwm_before / 1024,
                hwm_after / 1024,
                most as f64 / 1048576.0,
                written.len()
            ));
            row.check(
                hwm_after.saturating_sub(hwm_before) < 32 * 1024,
                format!(
                    "peak RSS grew by {} MiB: the body was buffered",
                    hwm_after.saturating_sub(hwm_before) / 1024
                ),
            );
            row.check(
                most < HUGE_BYTES / 2,
                format!("the gateway read {most} bytes of a huge body"),
            );
            row.check(
                durations.iter().all(|d| *d <= 500),
                format!("a huge-body attempt took {durations:?} ms"),
            );
        }
        Misbehaviour::Redirect => {
            let followed = healthy.received().iter().filter(|r| r.path == "/redirected").count();
            row.check(followed == 0, format!("the redirect was followed {followed} times"));
            row.check(
                first_error.contains("302"),
                format!("last_error does not name the 302: {first_error:?}"),
            );
        }
        Misbehaviour::Reset => row.observe(format!("{} connections reset", bad.connections())),
        _ => {}
    }
    row.check(
        support::panic_trace(&process.stderr()).is_none(),
        "a panic in the gateway's stderr",
    );
    row.finish();
}
