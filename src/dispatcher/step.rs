//! The one step of delivery: attempt a claimed delivery, record what happened, and
//! schedule what comes next. Public so tests can drive it without the pool.

use std::sync::Arc;

use rand::Rng as _;
use tracing::Instrument as _;

use super::RetryPolicy;
use crate::delivery::{DeliveryClient, Destination};
use crate::domain::{now_ms, Attempt, AttemptOutcome};
use crate::metrics::Metrics;
use crate::store::{Claim, Disposition, Store, StoreError};

/// What every attempt needs, shared by all workers.
pub struct DispatchContext {
    pub store: Arc<dyn Store>,
    pub client: DeliveryClient,
    pub metrics: Arc<Metrics>,
    pub policy: RetryPolicy,
}

/// Attempts one claimed delivery, records the result, and returns how the attempt
/// ended. A store failure while recording leaves the lease to expire, so the delivery
/// is attempted again.
pub async fn deliver_one(
    ctx: &DispatchContext,
    destination: &Destination,
    claim: Claim,
) -> Result<AttemptOutcome, StoreError> {
    let span = tracing::info_span!(
        "deliver",
        event_id = %claim.event_id,
        endpoint_id = %claim.endpoint_id,
        attempt = claim.attempt
    );
    async move {
        let started_at = now_ms();
        ctx.metrics.in_flight.inc();
        let report = ctx
            .client
            .send(destination, &claim.event_id, claim.payload.clone(), started_at / 1000)
            .await;
        ctx.metrics.in_flight.dec();

        let m = &ctx.metrics;
        m.delivery_attempts.with_label_values(&[report.outcome.as_str()]).inc();
        m.delivery_duration.observe(report.duration.as_secs_f64());

        let finished_at = now_ms();
        let unit: f64 = rand::rng().random();
        let disposition = ctx
            .policy
            .decide(claim.attempt, report.outcome, report.retry_after, finished_at, unit);
        let attempt = Attempt {
            event_id: claim.event_id.clone(),
            endpoint_id: claim.endpoint_id.clone(),
            attempt: claim.attempt,
            attempted_at: started_at,
            outcome: report.outcome,
            status_code: report.status_code,
            error: report.error.clone(),
            duration_ms: report.duration.as_millis() as u64,
        };
        ctx.store.complete_attempt(&claim, &attempt, disposition).await?;

        match disposition {
            Disposition::Succeeded => {
                m.delivery_lag
                    .observe((finished_at - claim.received_at).max(0) as f64 / 1000.0);
                tracing::debug!(status = report.status_code, "delivered");
            }
            Disposition::RetryAt(at) => tracing::info!(
                outcome = report.outcome.as_str(),
                status = report.status_code,
                error = report.error.as_deref().unwrap_or(""),
                retry_in_ms = at - finished_at,
                "attempt failed, retry scheduled"
            ),
            Disposition::Failed => {
                m.deliveries_failed.inc();
                tracing::warn!(
                    outcome = report.outcome.as_str(),
                    error = report.error.as_deref().unwrap_or(""),
                    "delivery failed: retries exhausted"
                );
            }
        }
        debug_assert!(report.outcome != AttemptOutcome::Success || disposition == Disposition::Succeeded);
        Ok(report.outcome)
    }
    .instrument(span)
    .await
}
