//! The admin bearer-token check, one middleware for the whole `/api/v1` scope: who
//! is calling (the bootstrap token or a stored one, by its SHA-256), whether its
//! scope allows the method, and the audit entry once the request is answered.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage as _};

use super::audit;
use crate::config::Secret;
use crate::domain::{TokenHash, TokenName, TokenScope};
use crate::error::ApiError;
use crate::extract::bearer_token;
use crate::store::{Store, StoreError};

/// Longer than any token this API hands out or accepts in the settings by far;
/// anything longer is refused without a lookup.
const MAX_TOKEN_LEN: usize = 512;

/// The admin tokens this process accepts besides the stored ones.
pub struct AdminAuth {
    /// SHA-256 of the bootstrap token (`HOOKRELAY_ADMIN_TOKEN` or `<data dir>/admin_token`);
    /// the token itself is not kept.
    bootstrap: TokenHash,
}

/// Who made an admin request; in the request's extensions once authenticated.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub scope: TokenScope,
}

impl AdminAuth {
    pub fn new(token: Secret) -> Self {
        Self {
            bootstrap: TokenHash::of(token.expose()),
        }
    }

    /// The caller a presented token stands for, if any.
    async fn identify(&self, store: &dyn Store, presented: &str) -> Result<Option<Caller>, StoreError> {
        if presented.is_empty() || presented.len() > MAX_TOKEN_LEN {
            return Ok(None);
        }
        let hash = TokenHash::of(presented);
        if hash.matches(&self.bootstrap) {
            return Ok(Some(Caller {
                name: TokenName::BOOTSTRAP.to_owned(),
                scope: TokenScope::Write,
            }));
        }
        let stored = store.find_admin_token(&hash).await?;
        Ok(stored.map(|token| Caller {
            name: token.name.to_string(),
            scope: token.scope,
        }))
    }
}

/// GET (and HEAD) read; every other method may change something.
fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD)
}

pub async fn require_admin(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let auth = request
        .app_data::<web::Data<AdminAuth>>()
        .expect("AdminAuth is app data")
        .clone();
    let store = request
        .app_data::<web::Data<dyn Store>>()
        .expect("the store is app data")
        .clone();
    let method = request.method().clone();
    let path = request.path().to_owned();

    let caller = match bearer_token(request.request()) {
        Some(token) => auth.identify(&**store, token).await.map_err(ApiError::from)?,
        None => None,
    };
    let Some(caller) = caller else {
        let message = match bearer_token(request.request()) {
            Some(_) => "the admin token is wrong",
            None => "an admin token is required (Authorization: Bearer …)",
        };
        let refusal = ApiError::unauthorized(message);
        audit::record(&**store, None, &method, &path, StatusCode::UNAUTHORIZED, None).await;
        return Err(refusal.into());
    };
    if is_change(&method) && caller.scope == TokenScope::Read {
        let refusal = ApiError::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this token has read scope; changes need a token with write scope",
        );
        audit::record(&**store, Some(&caller), &method, &path, StatusCode::FORBIDDEN, None).await;
        return Err(refusal.into());
    }

    request.extensions_mut().insert(caller.clone());
    let answer = next.call(request).await;
    if is_change(&method) {
        let (status, created) = match &answer {
            Ok(response) => (
                response.status(),
                response.response().extensions().get::<audit::Created>().cloned(),
            ),
            Err(error) => (error.as_response_error().status_code(), None),
        };
        audit::record(&**store, Some(&caller), &method, &path, status, created).await;
    }
    answer
}
