//! `/api/v1/merchants/{merchant_id}/endpoints`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::merchants::find_merchant;
use super::openapi::ErrorBody;
use super::pagination::{page_slice, List, ListQuery};
use crate::dispatcher::Dispatcher;
use crate::domain::{
    now_ms, to_rfc3339, Endpoint, EndpointId, EndpointSecret, EndpointUrl, EventTypeFilter, Merchant, RetiredSecret,
};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::startup::optional_json;
use crate::startup::AppConfig;
use crate::store::Store;

const MAX_DESCRIPTION_LEN: usize = 1024;
/// How long a rotated-away secret keeps signing beside the new one.
const ROTATION_OVERLAP_MS: i64 = 24 * 3600 * 1000;

// No `Debug`: it carries a secret, which must never reach a log.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Absolute http(s) URL.
    pub url: String,
    /// Event types to receive (exact, or a prefix ending in `*`); absent or empty: all.
    pub event_types: Option<Vec<String>>,
    pub description: Option<String>,
    /// `whsec_` + base64 of 24 to 64 bytes; generated when absent.
    pub secret: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// An empty string clears it.
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

// No `Debug`: it carries a secret, which must never reach a log.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated when absent.
    pub secret: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// RFC 3339: failed deliveries of events received since then are re-queued.
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoverResponse {
    pub endpoint_id: String,
    /// Deliveries re-queued.
    pub recovered: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub merchant_id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: Option<String>,
    /// Signing secret (Standard Webhooks); only in the answers to the endpoint's
    /// creation and to `rotate-secret` (see `reveal-secret`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// When the secret replaced by the last rotation stops signing (RFC 3339), if it still does.
    pub previous_secret_expires_at: Option<String>,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        let now = now_ms();
        let previous_secret_expires_at = e
            .retired_secrets
            .iter()
            .map(|r| r.expires_at)
            .filter(|at| *at > now)
            .max()
            .map(to_rfc3339);
        Self {
            id: e.id.to_string(),
            merchant_id: e.merchant_id.to_string(),
            url: e.url.as_str().to_owned(),
            event_types: e.event_types.as_slice().to_vec(),
            description: e.description,
            secret: None,
            previous_secret_expires_at,
            enabled: e.enabled,
            created_at: to_rfc3339(e.created_at),
            updated_at: to_rfc3339(e.updated_at),
        }
    }
}

impl EndpointView {
    /// With the current signing secret.
    fn revealing(endpoint: Endpoint) -> Self {
        let secret = Some(endpoint.secret.expose().to_owned());
        Self {
            secret,
            ..Self::from(endpoint)
        }
    }
}

/// The secrets that sign deliveries to an endpoint now.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsView {
    /// The current signing secret.
    pub secret: String,
    /// Secrets replaced by a rotation that still sign beside it, newest first.
    pub previous_secrets: Vec<PreviousSecret>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviousSecret {
    pub secret: String,
    /// When it stops signing (RFC 3339).
    pub expires_at: String,
}

fn parse_url(url: &str) -> Result<EndpointUrl, ApiError> {
    EndpointUrl::parse(url).map_err(|e| ApiError::unprocessable("invalid_url", e))
}

/// The egress policy on a URL being registered (resolving its name now): 422 `url_not_allowed`.
async fn check_egress(config: &AppConfig, url: &EndpointUrl) -> Result<(), ApiError> {
    config
        .egress
        .check_registration(url.as_str())
        .await
        .map_err(|refused| ApiError::unprocessable("url_not_allowed", refused.to_string()))
}

fn parse_event_types(types: Vec<String>) -> Result<EventTypeFilter, ApiError> {
    EventTypeFilter::parse(types).map_err(|e| ApiError::unprocessable("invalid_event_types", e))
}

fn parse_secret(secret: &str) -> Result<EndpointSecret, ApiError> {
    EndpointSecret::parse(secret).map_err(|e| ApiError::unprocessable("invalid_secret", e))
}

fn check_description(description: &Option<String>) -> Result<(), ApiError> {
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION_LEN)
    {
        return Err(ApiError::unprocessable(
            "invalid_description",
            format!("description is longer than {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    Ok(())
}

/// The merchant and its endpoint, or 404.
async fn find_endpoint(
    store: &dyn Store,
    merchant_id: &str,
    endpoint_id: &str,
) -> Result<(Merchant, Endpoint), ApiError> {
    let merchant = find_merchant(store, merchant_id).await?;
    let id = EndpointId::parse(endpoint_id).map_err(|_| ApiError::not_found("endpoint"))?;
    let endpoint = store
        .get_endpoint(&merchant.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("endpoint"))?;
    Ok((merchant, endpoint))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/endpoints", tag = "endpoints",
    params(("merchant_id" = String, Path)), request_body = CreateEndpoint,
    responses((status = 201, body = EndpointView), (status = 404, body = ErrorBody),
              (status = 409, description = "endpoint_limit_reached", body = ErrorBody),
              (status = 422, description = "invalid url, event_types, secret or description; url_not_allowed by the egress policy", body = ErrorBody)))]
pub async fn create_endpoint(
    path: web::Path<String>,
    body: JsonObject<CreateEndpoint>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    let body = body.into_inner();
    let url = parse_url(&body.url)?;
    check_egress(&config, &url).await?;
    let event_types = parse_event_types(body.event_types.unwrap_or_default())?;
    let secret = body
        .secret
        .as_deref()
        .map(parse_secret)
        .transpose()?
        .unwrap_or_else(EndpointSecret::generate);
    check_description(&body.description)?;
    let now = now_ms();
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        merchant_id: merchant.id,
        url,
        event_types,
        description: body.description.filter(|d| !d.is_empty()),
        secret,
        retired_secrets: Vec::new(),
        enabled: body.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    store
        .create_endpoint(&endpoint, config.max_endpoints_per_merchant)
        .await?;
    tracing::info!(merchant_id = %endpoint.merchant_id, endpoint_id = %endpoint.id, "endpoint created");
    Ok(HttpResponse::Created().json(EndpointView::revealing(endpoint)))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/endpoints", tag = "endpoints",
    params(("merchant_id" = String, Path), ListQuery),
    responses((status = 200, body = inline(List<EndpointView>)), (status = 404, body = ErrorBody)))]
pub async fn list_endpoints(
    path: web::Path<String>,
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let page_request = query.page()?;
    let merchant = find_merchant(&**store, &path).await?;
    let endpoints = store.list_endpoints(&merchant.id).await?;
    let page = page_slice(endpoints, &page_request, |e| e.id.to_string());
    Ok(HttpResponse::Ok().json(List::from_page(page, EndpointView::from)))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn get_endpoint(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let (_, endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

#[utoipa::path(patch, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)), request_body = UpdateEndpoint,
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update_endpoint(
    path: web::Path<(String, String)>,
    body: JsonObject<UpdateEndpoint>,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let (_, mut endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    let body = body.into_inner();
    if let Some(url) = &body.url {
        endpoint.url = parse_url(url)?;
        check_egress(&config, &endpoint.url).await?;
    }
    if let Some(types) = body.event_types {
        endpoint.event_types = parse_event_types(types)?;
    }
    if body.description.is_some() {
        check_description(&body.description)?;
        endpoint.description = body.description.filter(|d| !d.is_empty());
    }
    if let Some(enabled) = body.enabled {
        endpoint.enabled = enabled;
    }
    endpoint.updated_at = now_ms();
    store.update_endpoint(&endpoint).await?;
    dispatcher.endpoint_changed(&endpoint.merchant_id, &endpoint.id);
    tracing::info!(merchant_id = %endpoint.merchant_id, endpoint_id = %endpoint.id, "endpoint updated");
    Ok(HttpResponse::Ok().json(EndpointView::from(endpoint)))
}

#[utoipa::path(delete, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 204, description = "deleted; its pending deliveries are marked failed"), (status = 404, body = ErrorBody)))]
pub async fn delete_endpoint(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let (merchant, endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    if !store.delete_endpoint(&merchant.id, &endpoint.id).await? {
        return Err(ApiError::not_found("endpoint"));
    }
    dispatcher.endpoint_changed(&merchant.id, &endpoint.id);
    tracing::info!(merchant_id = %merchant.id, endpoint_id = %endpoint.id, "endpoint deleted");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}/rotate-secret", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)), request_body(content = Option<RotateSecret>),
    responses((status = 200, description = "the endpoint with its new secret; the old one signs beside it for 24 h", body = EndpointView),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rotate_secret(
    path: web::Path<(String, String)>,
    body: web::Bytes,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let (_, mut endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    let body: RotateSecret = optional_json(&body)?;
    let secret = body
        .secret
        .as_deref()
        .map(parse_secret)
        .transpose()?
        .unwrap_or_else(EndpointSecret::generate);
    let now = now_ms();
    let old = std::mem::replace(&mut endpoint.secret, secret);
    endpoint.retired_secrets.retain(|r| r.expires_at > now);
    endpoint.retired_secrets.push(RetiredSecret {
        secret: old,
        expires_at: now + ROTATION_OVERLAP_MS,
    });
    endpoint.updated_at = now;
    store.update_endpoint(&endpoint).await?;
    dispatcher.endpoint_changed(&endpoint.merchant_id, &endpoint.id);
    tracing::info!(merchant_id = %endpoint.merchant_id, endpoint_id = %endpoint.id, "endpoint secret rotated");
    Ok(HttpResponse::Ok().json(EndpointView::revealing(endpoint)))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}/reveal-secret", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)),
    responses((status = 200, description = "the signing secret, and rotated-away ones still signing", body = SecretsView),
              (status = 404, body = ErrorBody)))]
pub async fn reveal_secret(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let (_, endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    tracing::info!(merchant_id = %endpoint.merchant_id, endpoint_id = %endpoint.id, "endpoint secret revealed");
    let now = now_ms();
    let mut previous: Vec<_> = endpoint.retired_secrets.iter().filter(|r| r.expires_at > now).collect();
    previous.sort_by_key(|r| std::cmp::Reverse(r.expires_at));
    Ok(HttpResponse::Ok().json(SecretsView {
        secret: endpoint.secret.expose().to_owned(),
        previous_secrets: previous
            .into_iter()
            .map(|r| PreviousSecret {
                secret: r.secret.expose().to_owned(),
                expires_at: to_rfc3339(r.expires_at),
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/endpoints/{endpoint_id}/recover", tag = "endpoints",
    params(("merchant_id" = String, Path), ("endpoint_id" = String, Path)), request_body = RecoverRequest,
    responses((status = 202, body = RecoverResponse), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn recover_endpoint(
    path: web::Path<(String, String)>,
    body: JsonObject<RecoverRequest>,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let (merchant, endpoint) = find_endpoint(&**store, &path.0, &path.1).await?;
    let since = chrono::DateTime::parse_from_rfc3339(&body.since)
        .map_err(|e| ApiError::unprocessable("invalid_since", format!("since must be an RFC 3339 time: {e}")))?
        .timestamp_millis();
    let recovered = store
        .recover_endpoint(&merchant.id, &endpoint.id, since, now_ms())
        .await?;
    dispatcher.wake(&merchant.id, &endpoint.id);
    tracing::info!(merchant_id = %merchant.id, endpoint_id = %endpoint.id, recovered, "failed deliveries re-queued");
    Ok(HttpResponse::Accepted().json(RecoverResponse {
        endpoint_id: endpoint.id.to_string(),
        recovered,
    }))
}
