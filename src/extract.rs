//! Request helpers shared by ingest and the admin API.

use actix_web::http::header;
use actix_web::HttpRequest;

/// The value of an `Authorization: Bearer …` header.
pub fn bearer_token(request: &HttpRequest) -> Option<&str> {
    let value = request.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
