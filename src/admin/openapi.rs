//! The OpenAPI document, generated from the handlers' annotations.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{endpoints, events, merchants};

/// Every error answer.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, e.g. `endpoint_limit_reached`.
    pub code: String,
    pub message: String,
}

/// The answer to an accepted or duplicate ingest.
#[derive(Serialize, ToSchema)]
pub struct IngestAccepted {
    pub event_id: String,
    /// `queued` (202) or `duplicate` (200).
    pub status: String,
    /// Endpoints the event goes to (0 for a duplicate).
    pub deliveries: usize,
}

/// Adds the error answers every operation can give, so the document lists each
/// status the API really sends (checked by schemathesis in CI).
struct CommonResponses;

impl Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{path::HttpMethod, ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let admin = path.starts_with("/api/v1/");
            let ingest = path.starts_with("/ingest/");
            for method in [HttpMethod::Get, HttpMethod::Post, HttpMethod::Patch, HttpMethod::Delete] {
                let operation = match method {
                    HttpMethod::Get => item.get.as_mut(),
                    HttpMethod::Post => item.post.as_mut(),
                    HttpMethod::Patch => item.patch.as_mut(),
                    HttpMethod::Delete => item.delete.as_mut(),
                    _ => None,
                };
                let Some(operation) = operation else { continue };
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses
                        .entry(status.to_owned())
                        .or_insert_with(|| error(description).into());
                };
                if admin || ingest {
                    add(
                        "400",
                        "bad request: invalid_json, invalid_query, invalid_limit, invalid_cursor, invalid_path",
                    );
                    add("401", "unauthorized: missing or wrong token");
                    add("404", "not_found");
                    add("503", "store_unavailable");
                }
                if admin {
                    add("403", "forbidden: the token's scope does not allow this");
                }
                if (admin || ingest) && matches!(method, HttpMethod::Post | HttpMethod::Patch) {
                    add("413", "payload_too_large");
                    add(
                        "422",
                        "validation_error: a field of the wrong type, an unknown field, or an invalid value",
                    );
                }
                add("500", "internal_error");
            }
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "ingest_token",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
        );
        components.add_security_scheme(
            "ingest_bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hookrelay admin API", description = "Merchants, endpoints, events and deliveries of a hookrelay gateway."),
    paths(
        crate::ingest::handler::ingest_event,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::serve_metrics,
        merchants::create_merchant,
        merchants::list_merchants,
        merchants::get_merchant,
        merchants::delete_merchant,
        merchants::update_merchant,
        merchants::reveal_token,
        merchants::rotate_token,
        endpoints::create_endpoint,
        endpoints::list_endpoints,
        endpoints::get_endpoint,
        endpoints::update_endpoint,
        endpoints::delete_endpoint,
        endpoints::rotate_secret,
        endpoints::reveal_secret,
        endpoints::recover_endpoint,
        events::list_events,
        events::get_event,
        events::list_attempts,
        events::replay_event,
        super::tokens::create_admin_token,
        super::tokens::list_admin_tokens,
        super::tokens::delete_admin_token,
        super::audit::list_audit_log,
    ),
    components(schemas(ErrorBody, ErrorDetail, IngestAccepted)),
    modifiers(&BearerAuth, &CommonResponses),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
