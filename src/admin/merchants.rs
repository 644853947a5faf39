//! `/api/v1/merchants`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pagination::{List, ListQuery};
use crate::domain::{now_ms, to_rfc3339, IngestToken, Merchant, MerchantId};
use crate::error::ApiError;
use crate::startup::AppConfig;
use crate::store::{Store, StoreError};

const MAX_NAME_LEN: usize = 200;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    /// `[A-Za-z0-9_-]{1,64}`; generated when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: Option<String>,
    /// The token providers present (`?token=` or `Authorization: Bearer`).
    pub ingest_token: String,
    /// The whole URL to give the provider, token included.
    pub ingest_url: String,
    /// RFC 3339.
    pub created_at: String,
}

impl MerchantView {
    pub fn new(merchant: Merchant, config: &AppConfig) -> Self {
        let ingest_url = format!(
            "{}/ingest/{}?token={}",
            config.public_url,
            merchant.id,
            merchant.ingest_token.expose()
        );
        Self {
            id: merchant.id.to_string(),
            name: merchant.name,
            ingest_token: merchant.ingest_token.expose().to_owned(),
            ingest_url,
            created_at: to_rfc3339(merchant.created_at),
        }
    }
}

/// The merchant, or 404.
pub async fn find_merchant(store: &dyn Store, id: &str) -> Result<Merchant, ApiError> {
    let id = MerchantId::parse(id).map_err(|_| ApiError::not_found("merchant"))?;
    store
        .get_merchant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("merchant"))
}

#[utoipa::path(post, path = "/api/v1/merchants", tag = "merchants", request_body = CreateMerchant,
    responses((status = 201, body = MerchantView), (status = 409, description = "the id exists", body = crate::admin::openapi::ErrorBody),
              (status = 422, description = "invalid id or name", body = crate::admin::openapi::ErrorBody)))]
pub async fn create_merchant(
    body: web::Json<CreateMerchant>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let id = match body.id {
        Some(id) => MerchantId::parse(&id).map_err(|e| ApiError::unprocessable("invalid_merchant_id", e))?,
        None => MerchantId::generate(),
    };
    if body.name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_LEN) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    let merchant = Merchant {
        id,
        name: body.name,
        ingest_token: IngestToken::generate(),
        created_at: now_ms(),
    };
    store.create_merchant(&merchant).await.map_err(|e| match e {
        StoreError::AlreadyExists => ApiError::conflict("merchant_exists", "a merchant with this id exists"),
        other => other.into(),
    })?;
    tracing::info!(merchant_id = %merchant.id, "merchant created");
    Ok(HttpResponse::Created().json(MerchantView::new(merchant, &config)))
}

#[utoipa::path(get, path = "/api/v1/merchants", tag = "merchants", params(ListQuery),
    responses((status = 200, body = inline(List<MerchantView>))))]
pub async fn list_merchants(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let page = store.list_merchants(query.page()?).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, |m| MerchantView::new(m, &config))))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 200, body = MerchantView), (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn get_merchant(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    Ok(HttpResponse::Ok().json(MerchantView::new(merchant, &config)))
}

#[utoipa::path(delete, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 204, description = "deleted with its endpoints, events and deliveries"),
              (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn delete_merchant(path: web::Path<String>, store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    if !store.delete_merchant(&merchant.id).await? {
        return Err(ApiError::not_found("merchant"));
    }
    tracing::info!(merchant_id = %merchant.id, "merchant deleted");
    Ok(HttpResponse::NoContent().finish())
}
