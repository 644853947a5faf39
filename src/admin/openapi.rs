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
        endpoints::create_endpoint,
        endpoints::list_endpoints,
        endpoints::get_endpoint,
        endpoints::update_endpoint,
        endpoints::delete_endpoint,
        endpoints::rotate_secret,
        endpoints::recover_endpoint,
        events::list_events,
        events::get_event,
        events::list_attempts,
        events::replay_event,
    ),
    components(schemas(ErrorBody, ErrorDetail, IngestAccepted)),
    modifiers(&BearerAuth),
    security(("admin_token" = [])),
)]
pub struct ApiDoc;

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
