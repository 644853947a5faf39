//! Prometheus metrics: one struct owning its registry, handed to the HTTP app and the
//! dispatcher (no globals, so every test app counts on its own), and `GET /metrics`.

use actix_web::{web, HttpResponse};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::domain::AttemptOutcome;
use crate::store::Store;

pub struct Metrics {
    registry: Registry,
    /// `outcome` = accepted | duplicate | rejected.
    pub events_ingested: IntCounterVec,
    /// `outcome` = success | http_error | timeout | connect_error.
    pub delivery_attempts: IntCounterVec,
    pub deliveries_failed: IntCounter,
    pub delivery_duration: Histogram,
    pub delivery_lag: Histogram,
    /// Set from the store on every scrape.
    pub queue_depth: IntGauge,
    pub in_flight: IntGauge,
    /// Endpoints probed one delivery at a time, since their attempts get no answer.
    pub endpoints_unreachable: IntGauge,
    /// Finished events removed by retention.
    pub events_purged: IntCounter,
    /// `reason` = missing | malformed | mismatch | expired: ingests refused by a
    /// merchant's inbound signature verification (also counted as `rejected`).
    pub ingest_verification_failures: IntCounterVec,
    /// Ingest requests refused by the per-merchant rate limit (also counted as `rejected`).
    pub ingest_rate_limited: IntCounter,
    /// `stage` = registration | delivery: targets the egress policy refused.
    pub egress_refused: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let events_ingested = IntCounterVec::new(
            Opts::new("hookrelay_events_ingested_total", "Ingest requests by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let delivery_attempts = IntCounterVec::new(
            Opts::new("hookrelay_delivery_attempts_total", "Delivery attempts by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        let deliveries_failed = IntCounter::new(
            "hookrelay_deliveries_failed_total",
            "Deliveries that exhausted their retries",
        )
        .expect("valid metric");
        let delivery_duration = Histogram::with_opts(
            HistogramOpts::new(
                "hookrelay_delivery_duration_seconds",
                "HTTP round trip of one delivery attempt",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        let delivery_lag = Histogram::with_opts(
            HistogramOpts::new("hookrelay_delivery_lag_seconds", "From ingest to successful delivery").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
                21600.0, 86400.0,
            ]),
        )
        .expect("valid metric");
        let queue_depth = IntGauge::new(
            "hookrelay_queue_depth",
            "Deliveries pending, scheduled retries included",
        )
        .expect("valid metric");
        let in_flight =
            IntGauge::new("hookrelay_deliveries_in_flight", "Delivery attempts under way").expect("valid metric");
        let endpoints_unreachable = IntGauge::new(
            "hookrelay_endpoints_unreachable",
            "Endpoints whose attempts get no answer (refused or timed out), probed one delivery at a time",
        )
        .expect("valid metric");
        let events_purged = IntCounter::new("hookrelay_events_purged_total", "Finished events removed by retention")
            .expect("valid metric");
        let ingest_verification_failures = IntCounterVec::new(
            Opts::new(
                "hookrelay_ingest_verification_failures_total",
                "Ingest requests whose provider signature failed verification, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(ingest_verification_failures.clone()))
            .expect("metric names are unique");
        for reason in crate::ingest::verify::Failure::ALL {
            ingest_verification_failures.with_label_values(&[reason.as_str()]);
        }
        let ingest_rate_limited = IntCounter::new(
            "hookrelay_ingest_rate_limited_total",
            "Ingest requests refused by the per-merchant rate limit",
        )
        .expect("valid metric");
        let egress_refused = IntCounterVec::new(
            Opts::new(
                "hookrelay_egress_refused_total",
                "Endpoint URLs or delivery targets refused by the egress policy, by stage",
            ),
            &["stage"],
        )
        .expect("valid metric");

        for collector in [
            Box::new(events_ingested.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(delivery_attempts.clone()),
            Box::new(deliveries_failed.clone()),
            Box::new(delivery_duration.clone()),
            Box::new(delivery_lag.clone()),
            Box::new(queue_depth.clone()),
            Box::new(in_flight.clone()),
            Box::new(endpoints_unreachable.clone()),
            Box::new(events_purged.clone()),
            Box::new(ingest_rate_limited.clone()),
            Box::new(egress_refused.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        // Show every labelled series from the start, at zero.
        for outcome in ["accepted", "duplicate", "rejected"] {
            events_ingested.with_label_values(&[outcome]);
        }
        for outcome in [
            AttemptOutcome::Success,
            AttemptOutcome::HttpError,
            AttemptOutcome::Timeout,
            AttemptOutcome::ConnectError,
        ] {
            delivery_attempts.with_label_values(&[outcome.as_str()]);
        }
        for stage in ["registration", "delivery"] {
            egress_refused.with_label_values(&[stage]);
        }
        Self {
            registry,
            events_ingested,
            delivery_attempts,
            deliveries_failed,
            delivery_duration,
            delivery_lag,
            queue_depth,
            in_flight,
            endpoints_unreachable,
            events_purged,
            ingest_verification_failures,
            ingest_rate_limited,
            egress_refused,
        }
    }

    pub fn count_ingest(&self, outcome: &str) {
        self.events_ingested.with_label_values(&[outcome]).inc();
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String)))]
pub async fn serve_metrics(metrics: web::Data<Metrics>, store: web::Data<dyn Store>) -> HttpResponse {
    match store.queue_depth().await {
        Ok(depth) => metrics.queue_depth.set(depth as i64),
        Err(error) => tracing::warn!(error = %error, "could not read the queue depth"),
    }
    HttpResponse::Ok()
        .content_type(TextEncoder::new().format_type())
        .body(metrics.render())
}
