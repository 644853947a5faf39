//! `/api/v1/merchants`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::pagination::{List, ListQuery};
use crate::domain::{
    now_ms, to_rfc3339, IngestToken, Merchant, MerchantId, MerchantUpdate, Verification, VerificationScheme,
    VerificationSpec,
};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::startup::AppConfig;
use crate::store::{Store, StoreError};

const MAX_NAME_LEN: usize = 200;

// No `Debug`: it carries a secret, which must never reach a log.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMerchant {
    /// `[A-Za-z0-9_-]{1,64}`; generated when absent.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: Option<String>,
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// How the provider signs its webhooks; checked at ingest besides the token.
    pub verification: Option<VerificationRequest>,
}

/// A provider's signature scheme and its secret.
// No `Debug`: it carries a secret, which must never reach a log.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationRequest {
    /// `standard_webhooks`, `stripe` or `hmac_sha256`.
    pub scheme: String,
    /// The provider's signing secret (`whsec_…` for standard_webhooks). Kept encrypted;
    /// never shown again after the answer to the merchant's creation.
    pub secret: String,
    /// Timestamped schemes only: how far (seconds) the signed timestamp may be from
    /// now, in the past or the future. Default 300.
    pub tolerance_seconds: Option<u64>,
    /// hmac_sha256 only: the header that carries the signature.
    pub header: Option<String>,
    /// hmac_sha256 only: `hex` or `base64`.
    pub encoding: Option<String>,
    /// hmac_sha256 only: text before the signature in the header, e.g. `sha256=`.
    pub prefix: Option<String>,
}

impl VerificationRequest {
    fn parse(self) -> Result<Verification, ApiError> {
        Verification::parse(VerificationSpec {
            scheme: self.scheme,
            secret: self.secret,
            tolerance_seconds: self.tolerance_seconds,
            header: self.header,
            encoding: self.encoding,
            prefix: self.prefix,
        })
        .map_err(|e| ApiError::unprocessable("invalid_verification", e))
    }
}

/// `PATCH /api/v1/merchants/{merchant_id}`: absent fields stay as they are.
// No `Debug`: it carries a secret, which must never reach a log.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMerchant {
    /// `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 200)]
    pub name: Option<Option<String>>,
    /// A new verification (replaces the old one and its secret at once); `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<VerificationRequest>)]
    pub verification: Option<Option<VerificationRequest>>,
}

/// A field that is present, possibly `null`: `Some(None)`; absent: `None` (by `default`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A verification as shown: the scheme and its settings, never the secret (except
/// in the answer to the merchant's creation, which echoes what was given).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerificationView {
    /// `standard_webhooks`, `stripe` or `hmac_sha256`.
    pub scheme: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerance_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&Verification> for VerificationView {
    fn from(verification: &Verification) -> Self {
        let (header, encoding, prefix) = match &verification.settings {
            VerificationScheme::HmacSha256 {
                header,
                encoding,
                prefix,
            } => (Some(header.clone()), Some(encoding.as_str().to_owned()), prefix.clone()),
            _ => (None, None, None),
        };
        Self {
            scheme: verification.settings.name().to_owned(),
            tolerance_seconds: verification.settings.tolerance_seconds(),
            header,
            encoding,
            prefix,
            secret: None,
        }
    }
}

/// A merchant. `ingest_token` and `ingest_url` are only in the answers to its
/// creation, `rotate-token` and `reveal-token`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MerchantView {
    pub id: String,
    pub name: Option<String>,
    /// The token providers present (`?token=` or `Authorization: Bearer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_token: Option<String>,
    /// The whole URL to give the provider, token included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_url: Option<String>,
    /// How the provider's signatures are checked at ingest; `null`: not checked.
    pub verification: Option<VerificationView>,
    /// RFC 3339.
    pub created_at: String,
}

impl MerchantView {
    /// Without any secret.
    pub fn new(merchant: Merchant) -> Self {
        Self {
            id: merchant.id.to_string(),
            name: merchant.name,
            ingest_token: None,
            ingest_url: None,
            verification: merchant.verification.as_ref().map(VerificationView::from),
            created_at: to_rfc3339(merchant.created_at),
        }
    }

    /// With the ingest token and URL.
    pub fn revealing(merchant: Merchant, config: &AppConfig) -> Self {
        let token = TokenView::new(&merchant, config);
        Self {
            ingest_token: Some(token.ingest_token),
            ingest_url: Some(token.ingest_url),
            ..Self::new(merchant)
        }
    }
}

/// A merchant's ingest token and the URL that carries it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub ingest_token: String,
    /// The whole URL to give the provider, token included.
    pub ingest_url: String,
}

impl TokenView {
    fn new(merchant: &Merchant, config: &AppConfig) -> Self {
        let token = merchant.ingest_token.expose();
        Self {
            ingest_url: format!("{}/ingest/{}?token={token}", config.public_url, merchant.id),
            ingest_token: token.to_owned(),
        }
    }
}

fn check_name(name: Option<&String>) -> Result<(), ApiError> {
    if name.is_some_and(|n| n.chars().count() > MAX_NAME_LEN) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            format!("name is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(())
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
    responses((status = 201, description = "the merchant with its ingest_token and ingest_url (and the verification secret given)", body = MerchantView),
              (status = 409, description = "the id exists", body = crate::admin::openapi::ErrorBody),
              (status = 422, description = "invalid id, name or verification", body = crate::admin::openapi::ErrorBody)))]
pub async fn create_merchant(
    body: JsonObject<CreateMerchant>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let id = match body.id {
        Some(id) => MerchantId::parse(&id).map_err(|e| ApiError::unprocessable("invalid_merchant_id", e))?,
        None => MerchantId::generate(),
    };
    check_name(body.name.as_ref())?;
    let verification = body.verification.map(VerificationRequest::parse).transpose()?;
    let merchant = Merchant {
        id,
        name: body.name,
        ingest_token: IngestToken::generate(),
        created_at: now_ms(),
        verification,
    };
    store.create_merchant(&merchant).await.map_err(|e| match e {
        StoreError::AlreadyExists => ApiError::conflict("merchant_exists", "a merchant with this id exists"),
        other => other.into(),
    })?;
    tracing::info!(merchant_id = %merchant.id, "merchant created");
    let provider_secret = merchant.verification.as_ref().map(|v| v.secret.expose().to_owned());
    let mut view = MerchantView::revealing(merchant, &config);
    if let Some(verification) = view.verification.as_mut() {
        verification.secret = provider_secret;
    }
    Ok(HttpResponse::Created().json(view))
}

#[utoipa::path(get, path = "/api/v1/merchants", tag = "merchants", params(ListQuery),
    responses((status = 200, body = inline(List<MerchantView>))))]
pub async fn list_merchants(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let page = store.list_merchants(query.page()?).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, MerchantView::new)))
}

#[utoipa::path(get, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 200, body = MerchantView), (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn get_merchant(path: web::Path<String>, store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    Ok(HttpResponse::Ok().json(MerchantView::new(merchant)))
}

/// Applies a change to an existing merchant; 404 when it is gone.
async fn change_merchant(store: &dyn Store, id: &str, update: MerchantUpdate) -> Result<Merchant, ApiError> {
    let id = MerchantId::parse(id).map_err(|_| ApiError::not_found("merchant"))?;
    store.update_merchant(&id, &update).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("merchant"),
        other => other.into(),
    })
}

#[utoipa::path(patch, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = String, Path)), request_body = UpdateMerchant,
    responses((status = 200, description = "the merchant, without secrets", body = MerchantView),
              (status = 404, body = crate::admin::openapi::ErrorBody),
              (status = 422, description = "invalid name or verification", body = crate::admin::openapi::ErrorBody)))]
pub async fn update_merchant(
    path: web::Path<String>,
    body: JsonObject<UpdateMerchant>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    if let Some(name) = &body.name {
        check_name(name.as_ref())?;
    }
    let verification = match body.verification {
        Some(Some(request)) => Some(Some(request.parse()?)),
        Some(None) => Some(None),
        None => None,
    };
    let update = MerchantUpdate {
        name: body.name,
        verification,
        ingest_token: None,
    };
    let merchant = change_merchant(&**store, &path, update).await?;
    tracing::info!(merchant_id = %merchant.id, "merchant updated");
    Ok(HttpResponse::Ok().json(MerchantView::new(merchant)))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/reveal-token", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 200, description = "the ingest token and URL", body = TokenView),
              (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn reveal_token(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    tracing::info!(merchant_id = %merchant.id, "ingest token revealed");
    Ok(HttpResponse::Ok().json(TokenView::new(&merchant, &config)))
}

#[utoipa::path(post, path = "/api/v1/merchants/{merchant_id}/rotate-token", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 200, description = "the merchant with its new ingest_token and ingest_url; the old token stops working at once", body = MerchantView),
              (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn rotate_token(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    config: web::Data<AppConfig>,
) -> Result<HttpResponse, ApiError> {
    let update = MerchantUpdate {
        ingest_token: Some(IngestToken::generate()),
        ..Default::default()
    };
    let merchant = change_merchant(&**store, &path, update).await?;
    tracing::info!(merchant_id = %merchant.id, "ingest token rotated");
    Ok(HttpResponse::Ok().json(MerchantView::revealing(merchant, &config)))
}

#[utoipa::path(delete, path = "/api/v1/merchants/{merchant_id}", tag = "merchants",
    params(("merchant_id" = String, Path)),
    responses((status = 204, description = "deleted with its endpoints, events and deliveries"),
              (status = 404, body = crate::admin::openapi::ErrorBody)))]
pub async fn delete_merchant(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    dispatcher: web::Data<crate::dispatcher::Dispatcher>,
) -> Result<HttpResponse, ApiError> {
    let merchant = find_merchant(&**store, &path).await?;
    let endpoints = store.list_endpoints(&merchant.id).await?;
    if !store.delete_merchant(&merchant.id).await? {
        return Err(ApiError::not_found("merchant"));
    }
    for endpoint in &endpoints {
        dispatcher.endpoint_changed(&merchant.id, &endpoint.id);
    }
    tracing::info!(merchant_id = %merchant.id, "merchant deleted");
    Ok(HttpResponse::NoContent().finish())
}
