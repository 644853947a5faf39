//! The admin REST API under `/api/v1`: merchants, endpoints, events, replay and
//! recovery, admin tokens and the audit log, behind one bearer-token check (with
//! read and write scopes), plus its OpenAPI document.

mod audit;
mod auth;
mod endpoints;
mod events;
mod merchants;
mod openapi;
mod pagination;
mod tokens;

pub use auth::{require_admin, AdminAuth, Caller};
pub use openapi::{openapi_json, ApiDoc, ErrorBody, IngestAccepted};

use actix_web::web;

/// The routes of `/api/v1` (the scope and its auth are set in `startup.rs`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::startup::resource;

    let merchant = "/merchants/{merchant_id}";
    let endpoint = "/merchants/{merchant_id}/endpoints/{endpoint_id}";
    let event = "/merchants/{merchant_id}/events/{event_id}";
    cfg.service(resource("/openapi.json").route(web::get().to(openapi_json)))
        .service(
            resource("/merchants")
                .route(web::post().to(merchants::create_merchant))
                .route(web::get().to(merchants::list_merchants)),
        )
        .service(
            resource(merchant)
                .route(web::get().to(merchants::get_merchant))
                .route(web::patch().to(merchants::update_merchant))
                .route(web::delete().to(merchants::delete_merchant)),
        )
        .service(resource(&format!("{merchant}/reveal-token")).route(web::post().to(merchants::reveal_token)))
        .service(resource(&format!("{merchant}/rotate-token")).route(web::post().to(merchants::rotate_token)))
        .service(
            resource(&format!("{merchant}/endpoints"))
                .route(web::post().to(endpoints::create_endpoint))
                .route(web::get().to(endpoints::list_endpoints)),
        )
        .service(
            resource(endpoint)
                .route(web::get().to(endpoints::get_endpoint))
                .route(web::patch().to(endpoints::update_endpoint))
                .route(web::delete().to(endpoints::delete_endpoint)),
        )
        .service(resource(&format!("{endpoint}/rotate-secret")).route(web::post().to(endpoints::rotate_secret)))
        .service(resource(&format!("{endpoint}/reveal-secret")).route(web::post().to(endpoints::reveal_secret)))
        .service(resource(&format!("{endpoint}/recover")).route(web::post().to(endpoints::recover_endpoint)))
        .service(resource(&format!("{merchant}/events")).route(web::get().to(events::list_events)))
        .service(resource(event).route(web::get().to(events::get_event)))
        .service(resource(&format!("{event}/attempts")).route(web::get().to(events::list_attempts)))
        .service(resource(&format!("{event}/replay")).route(web::post().to(events::replay_event)))
        .service(
            resource("/admin-tokens")
                .route(web::post().to(tokens::create_admin_token))
                .route(web::get().to(tokens::list_admin_tokens)),
        )
        .service(resource("/admin-tokens/{name}").route(web::delete().to(tokens::delete_admin_token)))
        .service(resource("/audit-log").route(web::get().to(audit::list_audit_log)));
}
