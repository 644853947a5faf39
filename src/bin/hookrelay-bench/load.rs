//! The load generator: DashX-style events POSTed by concurrent senders, either closed
//! loop (each sender sends its next event when the previous one was answered) or open
//! loop (sends start on a fixed schedule whatever the answers do, and latency counts
//! from the scheduled time, so queueing shows instead of being omitted).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::stats::{id_digest, Clock, Percentiles};

/// Where the events go: one URL per merchant.
#[derive(Clone)]
pub enum Destination {
    /// The gateway's ingest URLs (token included). The 2xx answer names the event id
    /// the deliveries will carry as `webhook-id`.
    Gateway { ingest_urls: Arc<Vec<String>> },
    /// Straight at the sink (limit mode): the bench sets `webhook-id` itself, to the
    /// event's own `id`, so the sink does exactly the work it does for a delivery.
    Sink { urls: Arc<Vec<String>> },
}

impl Destination {
    fn url(&self, merchant: usize) -> &str {
        match self {
            Destination::Gateway { ingest_urls } => &ingest_urls[merchant % ingest_urls.len()],
            Destination::Sink { urls } => &urls[merchant % urls.len()],
        }
    }
}

/// How sends are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// `senders` tasks, each waiting for its answer before the next send.
    Closed { senders: usize },
    /// `rate` sends per second on a timer, at most `max_in_flight` unanswered.
    Open { rate: f64, max_in_flight: usize },
}

/// One load run.
pub struct LoadPlan {
    pub destination: Destination,
    pub pace: Pace,
    pub events: u64,
    pub merchants: usize,
    pub payload_bytes: usize,
    /// Hard stop: no send starts after this long.
    pub max_duration: Duration,
    /// Distinguishes this run's event ids from other runs'.
    pub run_id: u64,
}

/// An event the destination accepted (2xx).
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    /// [`id_digest`] of the `webhook-id` its deliveries will carry.
    pub id: u64,
    pub merchant: u32,
    /// Send time (closed loop) or scheduled send time (open loop).
    pub t0_ns: u64,
}

/// Everything one load run measured.
#[derive(Default)]
pub struct LoadOutcome {
    pub attempted: u64,
    pub ok: u64,
    pub non_2xx: BTreeMap<u16, u64>,
    pub errors: u64,
    pub first_problem: Option<String>,
    pub latencies_ns: Vec<u64>,
    /// Open loop: how late each send started against its schedule.
    pub send_lag_ns: Vec<u64>,
    pub accepted: Vec<Accepted>,
    pub started_ns: u64,
    pub last_answer_ns: u64,
    pub finished_ns: u64,
}

/// Answered sends, for the sampler.
pub type Progress = Arc<AtomicU64>;

/// A client for loopback load: no proxy, no TLS, keep-alive, many idle connections.
pub fn http_client(pool: usize) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(pool)
        // Below the gateway's (actix's) 5 s keep-alive: a connection idle for longer may be
        // closed by the server just as a send reuses it, which shows up as a transport error.
        .pool_idle_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(30))
        .build()
        .context("build the HTTP client")
}

pub async fn run(
    client: &reqwest::Client,
    plan: &LoadPlan,
    clock: Clock,
    progress: Progress,
) -> anyhow::Result<LoadOutcome> {
    let shared = Arc::new(Shared {
        client: client.clone(),
        destination: plan.destination.clone(),
        clock,
        progress,
        body: BodyTemplate::new(plan.payload_bytes),
        run_id: plan.run_id,
        merchants: plan.merchants,
    });
    let started_ns = clock.now_ns();
    let deadline_ns = started_ns + plan.max_duration.as_nanos() as u64;
    let mut outcome = match plan.pace {
        Pace::Closed { senders } => run_closed(&shared, plan.events, senders, deadline_ns).await?,
        Pace::Open { rate, max_in_flight } => {
            run_open(&shared, plan.events, rate, max_in_flight, started_ns, deadline_ns).await?
        }
    };
    outcome.started_ns = started_ns;
    outcome.finished_ns = clock.now_ns();
    Ok(outcome)
}

struct Shared {
    client: reqwest::Client,
    destination: Destination,
    clock: Clock,
    progress: Progress,
    body: BodyTemplate,
    run_id: u64,
    merchants: usize,
}

async fn run_closed(
    shared: &Arc<Shared>,
    events: u64,
    senders: usize,
    deadline_ns: u64,
) -> anyhow::Result<LoadOutcome> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..senders.max(1) {
        let shared = shared.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut outcome = LoadOutcome::default();
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= events || shared.clock.now_ns() >= deadline_ns {
                    break;
                }
                let t0 = shared.clock.now_ns();
                send_one(&shared, seq, t0, None, &mut outcome).await;
            }
            outcome
        });
    }
    let mut total = LoadOutcome::default();
    while let Some(part) = tasks.join_next().await {
        merge(&mut total, part.context("a sender task panicked")?);
    }
    Ok(total)
}

async fn run_open(
    shared: &Arc<Shared>,
    events: u64,
    rate: f64,
    max_in_flight: usize,
    started_ns: u64,
    deadline_ns: u64,
) -> anyhow::Result<LoadOutcome> {
    let permits = Arc::new(Semaphore::new(max_in_flight.max(1)));
    let results = Arc::new(Mutex::new(LoadOutcome::default()));
    let interval_ns = 1e9 / rate.max(0.001);
    // The schedule starts a little ahead, so the first sends are not late already.
    let first_ns = started_ns + 20_000_000;
    let mut send_lag_ns = Vec::with_capacity(events as usize);
    for seq in 0..events {
        let scheduled_ns = first_ns + (seq as f64 * interval_ns) as u64;
        if scheduled_ns >= deadline_ns {
            break;
        }
        tokio::time::sleep_until(shared.clock.instant_at(scheduled_ns).into()).await;
        // Waiting here delays the send but not the reference time: latency still
        // counts from `scheduled_ns`.
        let permit = permits.clone().acquire_owned().await.context("send permits closed")?;
        send_lag_ns.push(shared.clock.now_ns().saturating_sub(scheduled_ns));
        let shared = shared.clone();
        let results = results.clone();
        tokio::spawn(async move {
            let mut one = LoadOutcome::default();
            send_one(&shared, seq, shared.clock.now_ns(), Some(scheduled_ns), &mut one).await;
            merge(&mut results.lock().expect("results poisoned"), one);
            drop(permit);
        });
    }
    // Every send has a 30 s client timeout, so this wait is bounded.
    let _all = permits
        .acquire_many(max_in_flight.max(1) as u32)
        .await
        .context("send permits closed")?;
    let mut outcome = std::mem::take(&mut *results.lock().expect("results poisoned"));
    outcome.send_lag_ns = send_lag_ns;
    Ok(outcome)
}

/// Sends event `seq` and records the answer. `sent_ns` is the actual send time;
/// latency counts from `scheduled_ns` when given (open loop), else from `sent_ns`.
async fn send_one(shared: &Shared, seq: u64, sent_ns: u64, scheduled_ns: Option<u64>, out: &mut LoadOutcome) {
    let merchant = (seq % shared.merchants as u64) as usize;
    let event_id = uuid::Uuid::from_u64_pair(shared.run_id, seq).to_string();
    let body = shared.body.render(&event_id, seq, sent_ns, scheduled_ns);
    let mut request = shared
        .client
        .post(shared.destination.url(merchant))
        .header("content-type", "application/json")
        .body(body);
    if let Destination::Sink { .. } = shared.destination {
        request = request.header("webhook-id", event_id.as_str());
    }
    out.attempted += 1;
    let result = async {
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        Ok::<_, reqwest::Error>((status, body))
    }
    .await;
    let done_ns = shared.clock.now_ns();
    let t0_ns = scheduled_ns.unwrap_or(sent_ns);
    out.latencies_ns.push(done_ns.saturating_sub(t0_ns));
    out.last_answer_ns = out.last_answer_ns.max(done_ns);
    match result {
        Ok((status, body)) if status.is_success() => {
            let delivery_id = match &shared.destination {
                Destination::Gateway { .. } => match gateway_event_id(&body) {
                    Some(id) => id,
                    None => {
                        out.errors += 1;
                        out.first_problem
                            .get_or_insert_with(|| format!("2xx without event_id: {}", String::from_utf8_lossy(&body)));
                        return;
                    }
                },
                Destination::Sink { .. } => event_id,
            };
            out.ok += 1;
            shared.progress.fetch_add(1, Ordering::Relaxed);
            out.accepted.push(Accepted {
                id: id_digest(delivery_id.as_bytes()),
                merchant: merchant as u32,
                t0_ns,
            });
        }
        Ok((status, body)) => {
            *out.non_2xx.entry(status.as_u16()).or_default() += 1;
            out.first_problem
                .get_or_insert_with(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        }
        Err(error) => {
            out.errors += 1;
            out.first_problem.get_or_insert_with(|| describe(error));
        }
    }
}

/// A client error with its causes, without the URL (ingest URLs carry the token).
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    // Bounded: error chains are a few links long.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `event_id` of a 2xx ingest answer; a `duplicate` answer names the first event, whose
/// deliveries are already counted, so it does not count as accepted.
fn gateway_event_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        event_id: String,
        status: String,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    (answer.status == "queued").then_some(answer.event_id)
}

fn merge(total: &mut LoadOutcome, part: LoadOutcome) {
    total.attempted += part.attempted;
    total.ok += part.ok;
    for (status, count) in part.non_2xx {
        *total.non_2xx.entry(status).or_default() += count;
    }
    total.errors += part.errors;
    if total.first_problem.is_none() {
        total.first_problem = part.first_problem;
    }
    total.latencies_ns.extend(part.latencies_ns);
    total.accepted.extend(part.accepted);
    total.last_answer_ns = total.last_answer_ns.max(part.last_answer_ns);
}

/// The body of every event: the shape of DashX's `checkout_session.completed` sample
/// with a unique `id`, the send time, and padding up to the wanted size.
struct BodyTemplate {
    payload_bytes: usize,
}

impl BodyTemplate {
    fn new(payload_bytes: usize) -> Self {
        Self { payload_bytes }
    }

    fn render(&self, id: &str, seq: u64, sent_ns: u64, scheduled_ns: Option<u64>) -> String {
        let scheduled = scheduled_ns
            .map(|ns| format!("\"scheduled_at_ns\":{ns},"))
            .unwrap_or_default();
        let created_ms = sent_ns / 1_000_000;
        let session = uuid::Uuid::from_u64_pair(seq, sent_ns);
        let mut body = format!(
            concat!(
                r#"{{"id":"{id}","sent_at_ns":{sent_ns},{scheduled}"apiVersion":"2023-01-11","created":{created_ms},"#,
                r#""object":"checkoutSession","type":"checkout_session.completed","data":{{"object":{{"#,
                r#""id":"{session}","createdAt":"2025-04-23T10:50:41.449683Z","amountTotal":"0.00987000","#,
                r#""status":"SUCCESS","currency":"SOL","customer_id":"36ab0154-0797-42","#,
                r#""payment_link_id":"d4cf04d5-0d45-4b6e-9227-011b39844aac","payment_link_title":"test","#,
                r#""payment_link_slug":"sKgmsAGmRZ-aa5XOFLqZ8Q","#,
                r#""transaction_hash":"3jdxLnx5Pe22X6uBqB1Cwt6x6xtjfjh8yUnwc3667KkX43KiCroiT2rZ9b3VJ8jnMyF3LvGF2biJu3etsubHjb2t","#,
                r#""from_address":"4umonu9DZSj63cUZVvAUfLhBMDr8ad4YcAeUMBSZXUS2","#,
                r#""payment_address":"cuZFBDnPSt5J7Limwm37RedRWpNVs1xNR8XQDtWDMiN","chain_symbol":"SOL","#,
                r#""payment_amount":"0.01000000","payment_processing_fee":"0.00005000","#,
                r#""updatedAt":"2025-04-23T10:50:43.086043+00:00"}}}},"bench":{{"seq":{seq},"pad":""#
            ),
            id = id,
            sent_ns = sent_ns,
            scheduled = scheduled,
            created_ms = created_ms,
            session = session,
            seq = seq,
        );
        let closing = "\"}}";
        let pad = self.payload_bytes.saturating_sub(body.len() + closing.len());
        body.extend(std::iter::repeat_n('x', pad));
        body.push_str(closing);
        body
    }
}

/// What a load run is reported as.
#[derive(Clone, Debug, Serialize)]
pub struct LoadSummary {
    pub attempted: u64,
    pub ok_2xx: u64,
    pub non_2xx: BTreeMap<u16, u64>,
    pub errors: u64,
    pub first_problem: Option<String>,
    /// From the first send to the last answer.
    pub elapsed_s: f64,
    /// 2xx answers per second over `elapsed_s`.
    pub rate_per_s: f64,
    pub latency: Percentiles,
    /// Open loop only.
    pub offered_rate_per_s: Option<f64>,
    pub send_lag: Option<Percentiles>,
}

impl LoadOutcome {
    pub fn summarize(&mut self, offered_rate: Option<f64>) -> LoadSummary {
        let elapsed_ns = self.last_answer_ns.saturating_sub(self.started_ns).max(1);
        let elapsed_s = elapsed_ns as f64 / 1e9;
        LoadSummary {
            attempted: self.attempted,
            ok_2xx: self.ok,
            non_2xx: self.non_2xx.clone(),
            errors: self.errors,
            first_problem: self.first_problem.clone(),
            elapsed_s,
            rate_per_s: self.ok as f64 / elapsed_s,
            latency: Percentiles::of(&mut self.latencies_ns),
            offered_rate_per_s: offered_rate,
            send_lag: offered_rate.map(|_| Percentiles::of(&mut self.send_lag_ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_json_of_the_wanted_size() {
        let template = BodyTemplate::new(1024);
        let body = template.render("0000-id", 7, 1_745_405_443_086_000_000, Some(1_745_405_443_000_000_000));
        assert_eq!(body.len(), 1024);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value["type"], "checkout_session.completed");
        assert_eq!(value["id"], "0000-id");
        assert_eq!(value["sent_at_ns"], 1_745_405_443_086_000_000u64);
        assert_eq!(value["bench"]["seq"], 7);
    }

    #[test]
    fn a_queued_answer_names_the_event_and_a_duplicate_does_not_count() {
        let queued = br#"{"deliveries":5,"event_id":"evt_01","status":"queued"}"#;
        assert_eq!(gateway_event_id(queued).as_deref(), Some("evt_01"));
        let duplicate = br#"{"deliveries":0,"event_id":"evt_01","status":"duplicate"}"#;
        assert_eq!(gateway_event_id(duplicate), None);
    }
}
