//! The admin bearer token check, one middleware for the whole `/api/v1` scope.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, Error};
use subtle::ConstantTimeEq as _;

use crate::config::Secret;
use crate::error::ApiError;
use crate::extract::bearer_token;

/// The admin token this process accepts.
pub struct AdminAuth {
    token: Secret,
}

impl AdminAuth {
    pub fn new(token: Secret) -> Self {
        Self { token }
    }

    fn accepts(&self, presented: &str) -> bool {
        self.token.expose().as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let auth = request
        .app_data::<web::Data<AdminAuth>>()
        .expect("AdminAuth is app data");
    match bearer_token(request.request()) {
        Some(token) if auth.accepts(token) => next.call(request).await,
        Some(_) => Err(ApiError::unauthorized("the admin token is wrong").into()),
        None => Err(ApiError::unauthorized("an admin token is required (Authorization: Bearer …)").into()),
    }
}
