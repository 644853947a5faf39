//! The worker pool: one long-lived task per endpoint that has work, each with at
//! most `endpoint_concurrency` attempts in flight, all under one global cap.
//!
//! A worker sleeps until its endpoint's next due delivery, or until it is woken
//! (new event, replay, endpoint changed). While its endpoint gives no answer, it sends
//! one delivery at a time, a retry delay apart (`reachability.rs`). No lock is held
//! across an HTTP call: a claim is a lease in the store, and the attempt runs as its
//! own task.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::reachability::{Change, Reachability};
use super::step::{deliver_one, DispatchContext};
use crate::delivery::Destination;
use crate::domain::{now_ms, AttemptOutcome, EndpointId, MerchantId, UnixMillis};

/// How long past the attempt timeout a lease lasts before another worker may
/// take the delivery over.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// Slack on top of the longest retry delay before a schedule counts as written
/// under a clock that has since gone back.
const CLOCK_SLACK: Duration = Duration::from_secs(60);
/// How long a worker trusts its copy of the endpoint when nothing signalled a change.
const ENDPOINT_REFRESH: Duration = Duration::from_secs(5);
/// Pause after a store error before a worker tries again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Handle to the pool. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    ctx: Arc<DispatchContext>,
    /// Wake-up signal of each running endpoint worker.
    workers: Mutex<HashMap<EndpointId, Arc<Notify>>>,
    /// Attempts in flight across all endpoints.
    global: Arc<Semaphore>,
    endpoint_concurrency: usize,
    lease: Duration,
    /// Schedules further ahead than this count as due (the clock went back).
    max_ahead: Duration,
    stop: CancellationToken,
    /// Every worker task, so a stop can wait for them.
    tracker: TaskTracker,
    /// Bumped on every endpoint change, so workers know to re-read their endpoint.
    config_epoch: std::sync::atomic::AtomicU64,
    /// The runtime workers run on. `wake` is called from HTTP handlers, which run on
    /// actix's own per-thread runtimes; workers must not live (and die) there.
    runtime: tokio::runtime::Handle,
}

impl Dispatcher {
    pub fn new(
        ctx: DispatchContext,
        endpoint_concurrency: usize,
        delivery_concurrency: usize,
        attempt_timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        let max_ahead = ctx.policy.max_delay() + CLOCK_SLACK;
        Self {
            shared: Arc::new(Shared {
                ctx: Arc::new(ctx),
                workers: Mutex::new(HashMap::new()),
                global: Arc::new(Semaphore::new(delivery_concurrency)),
                endpoint_concurrency,
                lease: attempt_timeout + LEASE_MARGIN,
                max_ahead,
                stop,
                tracker: TaskTracker::new(),
                config_epoch: std::sync::atomic::AtomicU64::new(0),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Starts a worker for every stored endpoint, so work left from before a restart
    /// (retries, cut-off attempts) resumes.
    pub async fn start(&self) -> anyhow::Result<()> {
        let endpoints = self.shared.ctx.store.list_all_endpoints().await?;
        for endpoint in endpoints {
            self.wake(&endpoint.merchant_id, &endpoint.id);
        }
        Ok(())
    }

    /// Tells the endpoint's worker to look at its queue now, starting it if needed.
    pub fn wake(&self, merchant: &MerchantId, endpoint: &EndpointId) {
        if self.shared.stop.is_cancelled() {
            return;
        }
        let mut workers = self.shared.workers.lock().expect("worker table poisoned");
        if let Some(signal) = workers.get(endpoint) {
            signal.notify_one();
            return;
        }
        let signal = Arc::new(Notify::new());
        workers.insert(endpoint.clone(), signal.clone());
        let shared = self.shared.clone();
        let (merchant, endpoint) = (merchant.clone(), endpoint.clone());
        let runtime = self.shared.runtime.clone();
        self.shared.tracker.spawn_on(
            async move {
                shared.run_until_stopped(&merchant, &endpoint, &signal).await;
                let mut workers = shared.workers.lock().expect("worker table poisoned");
                if workers
                    .get(&endpoint)
                    .is_some_and(|current| Arc::ptr_eq(current, &signal))
                {
                    workers.remove(&endpoint);
                }
            },
            &runtime,
        );
    }

    /// An endpoint's settings changed (URL, filter, secret, enabled, deleted): its
    /// worker re-reads it before the next claim.
    pub fn endpoint_changed(&self, merchant: &MerchantId, endpoint: &EndpointId) {
        self.shared
            .config_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.wake(merchant, endpoint);
    }

    /// After the stop token fired: waits up to `grace` for attempts under way.
    /// Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.shared.tracker.close();
        tokio::time::timeout(grace, self.shared.tracker.wait()).await.is_ok()
    }
}

impl Shared {
    async fn run_until_stopped(&self, merchant: &MerchantId, endpoint_id: &EndpointId, signal: &Notify) {
        let mut in_flight = JoinSet::new();
        let mut reach = Reachability::new(self.ctx.policy.initial_delay());
        // The endpoint as last read (with its URL checked), the change epoch then, and when.
        let mut cached: Option<(Arc<Destination>, u64, Instant)> = None;
        loop {
            let epoch = self.config_epoch.load(std::sync::atomic::Ordering::SeqCst);
            if let Some((destination, read_epoch, read_at)) = &cached {
                if *read_epoch == epoch && read_at.elapsed() < ENDPOINT_REFRESH {
                    let destination = destination.clone();
                    if self
                        .step(&destination, endpoint_id, &mut in_flight, &mut reach, signal)
                        .await
                        .is_break()
                    {
                        break;
                    }
                    continue;
                }
            }
            let destination = match self.ctx.store.get_endpoint(merchant, endpoint_id).await {
                Ok(Some(endpoint)) => Arc::new(self.ctx.client.destination(endpoint)),
                Ok(None) => break, // deleted
                Err(error) => {
                    tracing::error!(%endpoint_id, error = %crate::error::error_chain(&error), "reading an endpoint failed");
                    if self.pause(ERROR_BACKOFF).await {
                        break;
                    }
                    continue;
                }
            };
            let moved = cached
                .as_ref()
                .is_some_and(|(before, ..)| before.endpoint.url != destination.endpoint.url);
            if moved && reach.reset() {
                self.report(endpoint_id, Some(Change::Reachable));
            }
            cached = Some((destination.clone(), epoch, Instant::now()));
            if self
                .step(&destination, endpoint_id, &mut in_flight, &mut reach, signal)
                .await
                .is_break()
            {
                break;
            }
        }
        // Let attempts under way finish; the pool's drain bounds how long we wait.
        while in_flight.join_next().await.is_some() {}
        if reach.unreachable() {
            self.ctx.metrics.endpoints_unreachable.dec();
        }
    }

    /// Logs an endpoint becoming unreachable or reachable, and counts it.
    fn report(&self, endpoint_id: &EndpointId, change: Option<Change>) {
        let gauge = &self.ctx.metrics.endpoints_unreachable;
        match change {
            Some(Change::Unreachable) => {
                gauge.inc();
                tracing::warn!(
                    %endpoint_id,
                    misses = super::reachability::UNREACHABLE_AFTER,
                    probe_gap_ms = self.ctx.policy.initial_delay().as_millis() as u64,
                    "endpoint unreachable: attempts in a row got no answer; probing it with one delivery at a time, the others wait"
                );
            }
            Some(Change::Reachable) => {
                gauge.dec();
                tracing::info!(%endpoint_id, "endpoint reachable again: sending everything due");
            }
            None => {}
        }
    }

    /// Claims what is due (within the free slots), starts the attempts, then sleeps
    /// until something can change. `Break` when stopped.
    async fn step(
        &self,
        destination: &Arc<Destination>,
        endpoint_id: &EndpointId,
        in_flight: &mut JoinSet<Option<AttemptOutcome>>,
        reach: &mut Reachability,
        signal: &Notify,
    ) -> ControlFlow<()> {
        {
            let mut next_due: Option<UnixMillis> = None;
            let concurrency = reach.concurrency(self.endpoint_concurrency);
            let free = concurrency.saturating_sub(in_flight.len());
            let enabled = destination.endpoint.enabled;
            // While the endpoint is unreachable: the time of the next probe.
            let hold = reach.hold_until(Instant::now());
            if enabled && free > 0 && hold.is_none() {
                let first = tokio::select! {
                    permit = self.global.clone().acquire_owned() => permit.expect("semaphore never closed"),
                    _ = self.stop.cancelled() => return ControlFlow::Break(()),
                };
                let mut permits = vec![first];
                while permits.len() < free {
                    match self.global.clone().try_acquire_owned() {
                        Ok(permit) => permits.push(permit),
                        Err(_) => break,
                    }
                }
                match self
                    .ctx
                    .store
                    .claim_due(endpoint_id, now_ms(), permits.len(), self.lease, self.max_ahead)
                    .await
                {
                    Ok(claimed) => {
                        next_due = claimed.next_due;
                        for claim in claimed.claims {
                            let permit = permits.pop().expect("no more claims than permits");
                            let (ctx, destination) = (self.ctx.clone(), destination.clone());
                            in_flight.spawn(async move {
                                let _permit = permit;
                                deliver_one(&ctx, &destination, claim)
                                    .await
                                    .inspect_err(|error| {
                                        tracing::error!(error = %crate::error::error_chain(error), "recording an attempt failed; the lease will expire and the delivery be retried");
                                    })
                                    .ok()
                            });
                        }
                    }
                    Err(error) => {
                        tracing::error!(%endpoint_id, error = %crate::error::error_chain(&error), "claiming deliveries failed");
                        next_due = Some(now_ms() + ERROR_BACKOFF.as_millis() as i64);
                    }
                }
            }

            // Sleep until something can change: a wake-up, an attempt ending (a slot
            // frees), the next due time (only worth it with a free slot) or probe, or a stop.
            let can_claim = enabled && in_flight.len() < concurrency;
            let sleep_for = match hold {
                Some(probe_at) => Some(probe_at.saturating_duration_since(Instant::now())),
                None => next_due.map(|due| Duration::from_millis((due - now_ms()).max(0) as u64)),
            }
            .filter(|_| can_claim);
            tokio::select! {
                _ = self.stop.cancelled() => return ControlFlow::Break(()),
                _ = signal.notified() => {}
                Some(ended) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(Some(outcome)) = ended {
                        self.report(endpoint_id, reach.record(outcome, Instant::now()));
                    }
                }
                _ = tokio::time::sleep(sleep_for.unwrap_or_default()), if sleep_for.is_some() => {}
            }
        }
        ControlFlow::Continue(())
    }

    /// Sleeps unless stopped first; returns whether a stop came.
    async fn pause(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => true,
            _ = tokio::time::sleep(duration) => false,
        }
    }
}
