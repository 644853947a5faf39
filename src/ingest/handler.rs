//! The ingest handler.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::request::{parse_event, presented_token, read_body};
use crate::dispatcher::Dispatcher;
use crate::domain::{now_ms, Event, EventId, MerchantId};
use crate::error::ApiError;
use crate::health::Readiness;
use crate::metrics::Metrics;
use crate::startup::AppConfig;
use crate::store::{AcceptOutcome, Store};

/// `POST /ingest/{merchant_id}`.
#[utoipa::path(post, path = "/ingest/{merchant_id}", tag = "ingest",
    params(("merchant_id" = String, Path), ("token" = Option<String>, Query, description = "the merchant's ingest token (or Authorization: Bearer)"),
           ("Idempotency-Key" = Option<String>, Header, description = "the provider's event id; wins over a top-level string `id`")),
    request_body(content = Object, description = "the event: one JSON object; its top-level `type` selects the endpoints"),
    security(("ingest_token" = []), ("ingest_bearer" = [])),
    responses((status = 202, description = "stored durably; deliveries queued", body = crate::admin::IngestAccepted),
              (status = 200, description = "duplicate of an earlier event (same id); nothing new queued", body = crate::admin::IngestAccepted),
              (status = 400, description = "invalid_json or invalid_idempotency_key", body = crate::admin::ErrorBody),
              (status = 401, description = "missing or wrong token (unauthorized); for a merchant that verifies its provider's signatures, invalid_signature or signature_expired", body = crate::admin::ErrorBody),
              (status = 404, description = "unknown merchant", body = crate::admin::ErrorBody),
              (status = 413, description = "body over HOOKRELAY_MAX_PAYLOAD_BYTES", body = crate::admin::ErrorBody),
              (status = 429, description = "rate_limited: over HOOKRELAY_INGEST_RATE_PER_SECOND for this merchant; see Retry-After", body = crate::admin::ErrorBody),
              (status = 503, description = "the store could not make the event durable, or the gateway is stopping", body = crate::admin::ErrorBody)))]
#[tracing::instrument(name = "ingest", skip_all, fields(merchant_id = %path.as_str(), event_id))]
#[allow(clippy::too_many_arguments)] // one extractor per piece of app state
pub async fn ingest_event(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
    metrics: web::Data<Metrics>,
    config: web::Data<AppConfig>,
    readiness: web::Data<Readiness>,
) -> Result<HttpResponse, ApiError> {
    if !readiness.is_ready() {
        metrics.count_ingest("rejected");
        return Err(ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "this gateway is stopping; send the event again",
        ));
    }
    let result = accept(&request, &path, payload, &**store, &dispatcher, &config).await;
    match &result {
        Ok(AcceptOutcome::Accepted { event_id, .. }) => {
            tracing::Span::current().record("event_id", event_id.as_str());
            metrics.count_ingest("accepted");
        }
        Ok(AcceptOutcome::Duplicate { .. }) => metrics.count_ingest("duplicate"),
        Err(_) => metrics.count_ingest("rejected"),
    }
    Ok(match result? {
        AcceptOutcome::Accepted { event_id, deliveries } => {
            HttpResponse::Accepted().json(json!({ "event_id": event_id, "status": "queued", "deliveries": deliveries }))
        }
        AcceptOutcome::Duplicate { event_id } => {
            HttpResponse::Ok().json(json!({ "event_id": event_id, "status": "duplicate", "deliveries": 0 }))
        }
    })
}

async fn accept(
    request: &HttpRequest,
    merchant_id: &str,
    payload: web::Payload,
    store: &dyn Store,
    dispatcher: &Dispatcher,
    config: &AppConfig,
) -> Result<AcceptOutcome, ApiError> {
    let unknown = || ApiError::not_found("merchant");
    let merchant_id = MerchantId::parse(merchant_id).map_err(|_| unknown())?;
    let merchant = store.get_merchant(&merchant_id).await?.ok_or_else(unknown)?;
    match presented_token(request) {
        Some(token) if merchant.ingest_token.matches(&token) => {}
        Some(_) => return Err(ApiError::unauthorized("the ingest token is wrong")),
        None => {
            return Err(ApiError::unauthorized(
                "an ingest token is required (?token=… or Authorization: Bearer …)",
            ))
        }
    }
    // After authentication (strangers cannot spend a merchant's budget), before
    // anything is read or stored.
    config
        .ingest_limiter
        .check(&merchant_id)
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;

    if !config.disk.has_room() {
        return Err(ApiError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "insufficient_storage",
            "the gateway is low on disk space and cannot accept events now; send the event again later",
        ));
    }
    let body = tokio::time::timeout(
        config.ingest_read_timeout,
        read_body(request, payload, config.max_payload_bytes),
    )
    .await
    .map_err(|_| {
        ApiError::client(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the body did not arrive within HOOKRELAY_INGEST_READ_TIMEOUT_MS",
        )
    })??;
    if let Some(verification) = &merchant.verification {
        super::verify::verify_request(request, verification, &body)?;
    }
    let header_key = match request.headers().get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?),
        None => None,
    };
    let fields = parse_event(&body, header_key)?;

    let endpoints: Vec<_> = store
        .list_endpoints(&merchant_id)
        .await?
        .into_iter()
        .filter(|e| e.enabled && e.event_types.matches(fields.event_type.as_deref()))
        .map(|e| e.id)
        .collect();
    let event = Event {
        id: EventId::generate(),
        merchant_id: merchant_id.clone(),
        event_type: fields.event_type,
        idempotency_key: fields.idempotency_key,
        received_at: now_ms(),
        payload: body,
    };
    let outcome = store.accept_event(&event, &endpoints).await?;
    if matches!(outcome, AcceptOutcome::Accepted { .. }) {
        for endpoint in &endpoints {
            dispatcher.wake(&merchant_id, endpoint);
        }
    }
    Ok(outcome)
}
