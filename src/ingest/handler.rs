//! The ingest handler.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::request::{parse_event, presented_token, read_body};
use crate::dispatcher::Dispatcher;
use crate::domain::{now_ms, Event, EventId, MerchantId};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::startup::AppConfig;
use crate::store::{AcceptOutcome, Store};

/// `POST /ingest/{merchant_id}`.
#[tracing::instrument(name = "ingest", skip_all, fields(merchant_id = %path.as_str(), event_id))]
pub async fn ingest_event(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
    metrics: web::Data<Metrics>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
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

    let body = read_body(request, payload, config.max_payload_bytes).await?;
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
