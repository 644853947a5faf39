//! The admin REST API under `/api/v1`: merchants, endpoints, events, replay and
//! recovery, behind one bearer-token check, plus its OpenAPI document.

mod auth;
mod endpoints;
mod events;
mod merchants;
mod openapi;
mod pagination;

pub use auth::{require_admin, AdminAuth};
pub use openapi::{openapi_json, ApiDoc};

use actix_web::web;

/// The routes of `/api/v1` (the scope and its auth are set in `startup.rs`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/openapi.json", web::get().to(openapi_json))
        .route("/merchants", web::post().to(merchants::create_merchant))
        .route("/merchants", web::get().to(merchants::list_merchants))
        .route("/merchants/{merchant_id}", web::get().to(merchants::get_merchant))
        .route("/merchants/{merchant_id}", web::delete().to(merchants::delete_merchant))
        .route(
            "/merchants/{merchant_id}/endpoints",
            web::post().to(endpoints::create_endpoint),
        )
        .route(
            "/merchants/{merchant_id}/endpoints",
            web::get().to(endpoints::list_endpoints),
        )
        .route(
            "/merchants/{merchant_id}/endpoints/{endpoint_id}",
            web::get().to(endpoints::get_endpoint),
        )
        .route(
            "/merchants/{merchant_id}/endpoints/{endpoint_id}",
            web::patch().to(endpoints::update_endpoint),
        )
        .route(
            "/merchants/{merchant_id}/endpoints/{endpoint_id}",
            web::delete().to(endpoints::delete_endpoint),
        )
        .route(
            "/merchants/{merchant_id}/endpoints/{endpoint_id}/rotate-secret",
            web::post().to(endpoints::rotate_secret),
        )
        .route(
            "/merchants/{merchant_id}/endpoints/{endpoint_id}/recover",
            web::post().to(endpoints::recover_endpoint),
        )
        .route("/merchants/{merchant_id}/events", web::get().to(events::list_events))
        .route(
            "/merchants/{merchant_id}/events/{event_id}",
            web::get().to(events::get_event),
        )
        .route(
            "/merchants/{merchant_id}/events/{event_id}/attempts",
            web::get().to(events::list_attempts),
        )
        .route(
            "/merchants/{merchant_id}/events/{event_id}/replay",
            web::post().to(events::replay_event),
        );
}
