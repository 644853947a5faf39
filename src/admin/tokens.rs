//! `/api/v1/admin-tokens`: named admin tokens with `read` or `write` scope. A token
//! is shown once, in the answer that creates it; the store keeps its SHA-256 only.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::audit::Created;
use super::openapi::ErrorBody;
use super::pagination::{page_slice, List, ListQuery};
use crate::domain::{now_ms, to_rfc3339, AdminToken, AdminTokenSecret, AuditResource, TokenName, TokenScope};
use crate::error::ApiError;
use crate::extract::JsonObject;
use crate::store::{Store, StoreError};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAdminToken {
    /// `[A-Za-z0-9_-]{1,64}`, unique; `bootstrap` is taken.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    /// `read` (GET routes only) or `write` (everything).
    #[schema(example = "read")]
    pub scope: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTokenCreated {
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
    /// The bearer token. Shown only in this answer: the gateway keeps its SHA-256.
    pub token: String,
    /// RFC 3339.
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminTokenView {
    pub name: String,
    /// `read` or `write`.
    pub scope: String,
    /// RFC 3339; null for `bootstrap`, which comes from the settings.
    pub created_at: Option<String>,
}

impl AdminTokenView {
    fn new(token: &AdminToken) -> Self {
        Self {
            name: token.name.to_string(),
            scope: token.scope.as_str().to_owned(),
            created_at: Some(to_rfc3339(token.created_at)),
        }
    }

    fn bootstrap() -> Self {
        Self {
            name: TokenName::BOOTSTRAP.to_owned(),
            scope: TokenScope::Write.as_str().to_owned(),
            created_at: None,
        }
    }
}

fn token_exists() -> ApiError {
    ApiError::conflict("token_exists", "an admin token with this name exists")
}

#[utoipa::path(post, path = "/api/v1/admin-tokens", tag = "admin access", request_body = CreateAdminToken,
    description = "Creates a named admin token. Needs write scope.",
    responses((status = 201, description = "the token, shown only here", body = AdminTokenCreated),
              (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 403, description = "forbidden: a read-scope token", body = ErrorBody),
              (status = 409, description = "token_exists", body = ErrorBody),
              (status = 422, description = "invalid_token_name, invalid_scope", body = ErrorBody)))]
pub async fn create_admin_token(
    body: JsonObject<CreateAdminToken>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = TokenName::parse(&body.name).map_err(|e| ApiError::unprocessable("invalid_token_name", e))?;
    let scope = TokenScope::parse(&body.scope).map_err(|e| ApiError::unprocessable("invalid_scope", e))?;
    if name.is_bootstrap() {
        return Err(token_exists());
    }
    let secret = AdminTokenSecret::generate();
    let token = AdminToken {
        name,
        scope,
        hash: secret.hash(),
        created_at: now_ms(),
    };
    store.create_admin_token(&token).await.map_err(|e| match e {
        StoreError::AlreadyExists => token_exists(),
        other => other.into(),
    })?;
    tracing::info!(token_name = %token.name, scope = token.scope.as_str(), "admin token created");
    let mut response = HttpResponse::Created().json(AdminTokenCreated {
        name: token.name.to_string(),
        scope: token.scope.as_str().to_owned(),
        token: secret.expose().to_owned(),
        created_at: to_rfc3339(token.created_at),
    });
    response.extensions_mut().insert(Created(AuditResource {
        admin_token: Some(token.name.to_string()),
        ..Default::default()
    }));
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/admin-tokens", tag = "admin access", params(ListQuery),
    description = "Every admin token by name, `bootstrap` included; never a token or its hash.",
    responses((status = 200, description = "by name", body = inline(List<AdminTokenView>)),
              (status = 401, description = "missing or wrong admin token", body = ErrorBody)))]
pub async fn list_admin_tokens(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let request = query.page()?;
    let mut views: Vec<AdminTokenView> = store
        .list_admin_tokens()
        .await?
        .iter()
        .map(AdminTokenView::new)
        .collect();
    views.push(AdminTokenView::bootstrap());
    views.sort_by(|a, b| a.name.cmp(&b.name));
    let page = page_slice(views, &request, |view| view.name.clone());
    Ok(HttpResponse::Ok().json(List::from_page(page, |view| view)))
}

#[utoipa::path(delete, path = "/api/v1/admin-tokens/{name}", tag = "admin access",
    params(("name" = String, Path)),
    description = "Deletes a token; it stops working at once. Needs write scope. The bootstrap token \
                   cannot be deleted here: change HOOKRELAY_ADMIN_TOKEN or `<data dir>/admin_token` and restart.",
    responses((status = 204, description = "deleted"),
              (status = 401, description = "missing or wrong admin token", body = ErrorBody),
              (status = 403, description = "forbidden: a read-scope token", body = ErrorBody),
              (status = 404, body = ErrorBody),
              (status = 409, description = "bootstrap_token_protected", body = ErrorBody)))]
pub async fn delete_admin_token(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let name = TokenName::parse(&path).map_err(|_| ApiError::not_found("admin token"))?;
    if name.is_bootstrap() {
        return Err(ApiError::conflict(
            "bootstrap_token_protected",
            "the bootstrap token comes from HOOKRELAY_ADMIN_TOKEN or <data dir>/admin_token; change it there and restart",
        ));
    }
    if !store.delete_admin_token(&name).await? {
        return Err(ApiError::not_found("admin token"));
    }
    tracing::info!(token_name = %name, "admin token deleted");
    Ok(HttpResponse::NoContent().finish())
}
