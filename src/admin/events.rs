//! `/api/v1/merchants/{merchant_id}/events`: what arrived, what became of each
//! delivery, every attempt, and replay.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::merchants::find_merchant;
use super::openapi::ErrorBody;
use super::pagination::{page_request, List, ListQuery};
use crate::dispatcher::Dispatcher;
use crate::domain::{now_ms, to_rfc3339, Attempt, Delivery, DeliveryStatus, EndpointId, Event, EventId, Merchant};
use crate::error::ApiError;
use crate::startup::optional_json;
use crate::store::Store;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventListQuery {
    /// Only events of this `type`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    /// The provider's event id (`Idempotency-Key` or top-level `id`).
    pub idempotency_key: Option<String>,
    pub received_at: String,
}

impl From<&Event> for EventSummary {
    fn from(e: &Event) -> Self {
        Self {
            id: e.id.to_string(),
            event_type: e.event_type.clone(),
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.as_str().to_owned()),
            received_at: to_rfc3339(e.received_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub endpoint_id: String,
    #[schema(value_type = String, example = "pending")]
    pub status: DeliveryStatus,
    /// Attempts made (since the last replay).
    pub attempts: u32,
    pub next_attempt_at: Option<String>,
    pub last_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            endpoint_id: d.endpoint_id.to_string(),
            status: d.status,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(to_rfc3339),
            last_attempt_at: d.last_attempt_at.map(to_rfc3339),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub summary: EventSummary,
    /// The body as the provider sent it, byte for byte.
    #[schema(value_type = Object)]
    pub payload: Box<serde_json::value::RawValue>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub endpoint_id: String,
    pub attempt: u32,
    pub attempted_at: String,
    /// success, http_error, timeout or connect_error.
    pub outcome: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            endpoint_id: a.endpoint_id.to_string(),
            attempt: a.attempt,
            attempted_at: to_rfc3339(a.attempted_at),
            outcome: a.outcome.as_str().to_owned(),
            status_code: a.status_code,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only this endpoint; absent: every endpoint the event went to.
    pub endpoint_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResponse {
    pub event_id: String,
    /// Deliveries queued again.
    pub deliveries: usize,
}

async fn find_event(store: &dyn Store, merchant_id: &str, event_id: &str) -> Result<(Merchant, Event), ApiError> {
    let merchant = find_merchant(store, merchant_id).await?;
    let id = EventId::parse(event_id).map_err(|_| ApiError::not_found("event"))?;
    let event = store
        .get_event(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok((merchant, event))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/events", tag = "events",
    params(("merchant_id" = String, Path), EventListQuery),
    responses((status = 200, description = "newest first", body = inline(List<EventSummary>)), (status = 404, body = ErrorBody)))]
pub async fn list_events(
    path: web::Path<String>,
    query: web::Query<EventListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let page_request = page_request(query.limit.as_deref(), query.cursor.as_deref())?;
    let merchant = find_merchant(&**store, &path).await?;
    let page = store
        .list_events(&merchant.id, query.event_type.as_deref(), page_request)
        .await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, |e| EventSummary::from(&e))))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/events/{event_id}", tag = "events",
    params(("merchant_id" = String, Path), ("event_id" = String, Path)),
    responses((status = 200, body = EventDetail), (status = 404, body = ErrorBody)))]
pub async fn get_event(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let (_, event) = find_event(&**store, &path.0, &path.1).await?;
    let deliveries = store.list_deliveries(&event.id).await?;
    // Ingest stored only bodies that parsed as JSON objects.
    let text = String::from_utf8_lossy(&event.payload).into_owned();
    let payload = serde_json::value::RawValue::from_string(text)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("a stored payload is not JSON")))?;
    let detail = EventDetail {
        summary: EventSummary::from(&event),
        payload,
        deliveries: deliveries.into_iter().map(DeliveryView::from).collect(),
    };
    Ok(HttpResponse::Ok().json(detail))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/events/{event_id}/attempts", tag = "events",
    params(("merchant_id" = String, Path), ("event_id" = String, Path), ListQuery),
    responses((status = 200, description = "oldest first", body = inline(List<AttemptView>)), (status = 404, body = ErrorBody)))]
pub async fn list_attempts(
    path: web::Path<(String, String)>,
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let page_request = query.page()?;
    if page_request
        .after
        .as_ref()
        .is_some_and(|after| after.parse::<u64>().is_err())
    {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this API returned",
        ));
    }
    let (_, event) = find_event(&**store, &path.0, &path.1).await?;
    let page = store.list_attempts(&event.id, page_request).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, AttemptView::from)))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/events/{event_id}/replay", tag = "events",
    params(("merchant_id" = String, Path), ("event_id" = String, Path)), request_body(content = Option<ReplayRequest>),
    responses((status = 202, body = ReplayResponse), (status = 404, description = "merchant, event or endpoint not found", body = ErrorBody)))]
pub async fn replay_event(
    path: web::Path<(String, String)>,
    body: web::Bytes,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let request: ReplayRequest = optional_json(&body)?;
    let (merchant, event) = find_event(&**store, &path.0, &path.1).await?;
    let endpoints: Vec<EndpointId> = match request.endpoint_id {
        Some(id) => {
            let id = EndpointId::parse(&id).map_err(|_| ApiError::not_found("endpoint"))?;
            store
                .get_endpoint(&merchant.id, &id)
                .await?
                .ok_or_else(|| ApiError::not_found("endpoint"))?;
            vec![id]
        }
        None => {
            let existing: Vec<EndpointId> = store
                .list_endpoints(&merchant.id)
                .await?
                .into_iter()
                .map(|e| e.id)
                .collect();
            store
                .list_deliveries(&event.id)
                .await?
                .into_iter()
                .map(|d| d.endpoint_id)
                .filter(|id| existing.contains(id))
                .collect()
        }
    };
    let deliveries = store.replay_event(&event, &endpoints, now_ms()).await?;
    for endpoint in &endpoints {
        dispatcher.wake(&merchant.id, endpoint);
    }
    tracing::info!(merchant_id = %merchant.id, event_id = %event.id, deliveries, "event replayed");
    Ok(HttpResponse::Accepted().json(ReplayResponse {
        event_id: event.id.to_string(),
        deliveries,
    }))
}
