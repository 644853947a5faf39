//! Retention: a background loop that purges finished events older than
//! `HOOKRELAY_RETENTION_HOURS`, in small batches so ingest never waits on it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::now_ms;
use crate::metrics::Metrics;
use crate::store::Store;

/// Events deleted per store call; small enough that one call is a short pause.
const BATCH: usize = 500;
/// Breather between batches, leaving the store to ingest and delivery.
const BETWEEN_BATCHES: Duration = Duration::from_millis(20);

pub async fn run_until_stopped(
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    retention: Duration,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let cutoff = now_ms() - retention.as_millis() as i64;
        let mut total = 0;
        loop {
            match store.purge_expired(cutoff, BATCH).await {
                Ok(purged) => {
                    total += purged;
                    metrics.events_purged.inc_by(purged as u64);
                    if purged < BATCH || stop.is_cancelled() {
                        break;
                    }
                }
                Err(error) => {
                    tracing::error!(error = %crate::error::error_chain(&error), "purging expired events failed");
                    break;
                }
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
        if total > 0 {
            tracing::info!(purged = total, "expired events purged");
        }
    }
}
