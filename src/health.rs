//! `/healthz` (the process serves) and `/readyz` (store open, workers running, not stopping).

use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{web, HttpResponse};
use serde_json::json;

/// Whether this process should get traffic.
#[derive(Default)]
pub struct Readiness {
    ready: AtomicBool,
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "the process serves")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "store open, delivery workers running"),
              (status = 503, description = "starting or shutting down", body = crate::admin::ErrorBody)))]
pub async fn readyz(readiness: web::Data<Readiness>) -> HttpResponse {
    if readiness.is_ready() {
        HttpResponse::Ok().json(json!({ "status": "ready" }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "error": { "code": "not_ready", "message": "starting or shutting down" } }))
    }
}
