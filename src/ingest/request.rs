//! Reading an ingest request at the edge: the token, the bounded body, the fields
//! of the event that routing and deduplication need.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;

use crate::domain::IdempotencyKey;
use crate::error::ApiError;
use crate::extract::bearer_token;

/// The token from `?token=` or `Authorization: Bearer`.
pub fn presented_token(request: &HttpRequest) -> Option<String> {
    let from_query = url::form_urlencoded::parse(request.query_string().as_bytes())
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.into_owned());
    from_query.or_else(|| bearer_token(request).map(str::to_owned))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the body is larger than the limit of {limit} bytes"),
    )
}

/// Reads the whole body, refusing (before reading it) one that declares a length
/// above `limit`, and stopping as soon as one without a declared length exceeds it.
pub async fn read_body(request: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::bad_request("invalid_body", format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// What routing and deduplication need from an event.
#[derive(Debug, PartialEq, Eq)]
pub struct EventFields {
    pub event_type: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Checks that the body is one JSON object and takes `type` and the idempotency key
/// (the `Idempotency-Key` header wins over the top-level `id`).
pub fn parse_event(body: &[u8], header_key: Option<&str>) -> Result<EventFields, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    let serde_json::Value::Object(object) = value else {
        return Err(ApiError::bad_request("invalid_json", "the body must be a JSON object"));
    };
    let event_type = object.get("type").and_then(|t| t.as_str()).map(str::to_owned);
    let idempotency_key = match header_key {
        Some(key) => Some(IdempotencyKey::parse(key).map_err(|e| ApiError::bad_request("invalid_idempotency_key", e))?),
        // The provider's own id must never get its event refused: an empty one is
        // no key, and one too long to store is keyed by its digest.
        None => match object.get("id").and_then(|id| id.as_str()) {
            Some("") | None => None,
            Some(id) => Some(IdempotencyKey::parse(id).unwrap_or_else(|_| IdempotencyKey::digest_of(id))),
        },
    };
    Ok(EventFields {
        event_type,
        idempotency_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_type_and_id_from_a_dashx_event() {
        let body = br#"{"id":"d011c41f","object":"checkoutSession","type":"checkout_session.expired","data":null}"#;
        let fields = parse_event(body, None).unwrap();
        assert_eq!(fields.event_type.as_deref(), Some("checkout_session.expired"));
        assert_eq!(fields.idempotency_key.unwrap().as_str(), "d011c41f");
    }

    #[test]
    fn the_header_key_wins_over_the_id() {
        let fields = parse_event(br#"{"id":"a"}"#, Some("b")).unwrap();
        assert_eq!(fields.idempotency_key.unwrap().as_str(), "b");
        assert_eq!(fields.event_type, None);
    }

    #[test]
    fn non_objects_and_broken_json_are_refused() {
        for body in [&b"[]"[..], b"\"x\"", b"1", b"null", b"{", b"", b"{} {}"] {
            assert!(parse_event(body, None).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn an_empty_or_overlong_provider_id_never_refuses_the_event() {
        assert_eq!(parse_event(br#"{"id": ""}"#, None).unwrap().idempotency_key, None);
        let long = format!(r#"{{"id": "{}"}}"#, "x".repeat(1000));
        let a = parse_event(long.as_bytes(), None).unwrap().idempotency_key.unwrap();
        let b = parse_event(long.as_bytes(), None).unwrap().idempotency_key.unwrap();
        assert_eq!(a, b);
        assert!(a.as_str().len() <= IdempotencyKey::MAX_LEN);
        assert!(
            parse_event(b"{}", Some("")).is_err(),
            "a bad header is the caller's to fix"
        );
    }

    #[test]
    fn a_non_string_id_is_no_key() {
        assert_eq!(parse_event(br#"{"id": 5}"#, None).unwrap().idempotency_key, None);
    }
}
