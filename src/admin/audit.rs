//! The audit log: every change made through the admin API and every refused request
//! (401, 403), recorded by the auth middleware once the request is answered, and
//! `GET /api/v1/audit-log` to read it. Request bodies are never recorded.

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::openapi::ErrorBody;
use super::pagination::{List, ListQuery};
use crate::domain::{now_ms, to_rfc3339, AuditEntry, AuditResource};
use crate::error::ApiError;
use crate::store::Store;

/// Refusals kept (the newest); anyone who reaches the port can cause one, so they
/// are bounded, apart from the changes, which need a write token and are all kept.
pub const REFUSALS_KEPT: usize = 10_000;
/// Longest path recorded; longer ones are cut (at a character boundary).
const MAX_PATH_LEN: usize = 512;
/// Longest id taken from a path into `resource`.
const MAX_ID_LEN: usize = 128;

/// Put into a response's extensions by a handler that created something whose id
/// the path does not name (the new admin token's name).
#[derive(Clone, Debug)]
pub struct Created(pub AuditResource);

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntryView {
    /// When the request was answered, RFC 3339.
    pub at: String,
    /// The name of the token used; `unknown` when authentication failed.
    pub token_name: String,
    pub method: String,
    /// The path as requested, without the query string.
    pub path: String,
    /// The ids the path names (`merchant_id`, `endpoint_id`, `event_id`, `admin_token`).
    #[schema(value_type = Object)]
    pub resource: AuditResource,
    /// The status of the answer.
    pub status: u16,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(entry: AuditEntry) -> Self {
        Self {
            at: to_rfc3339(entry.at),
            token_name: entry.token_name,
            method: entry.method,
            path: entry.path,
            resource: entry.resource,
            status: entry.status,
        }
    }
}

/// Appends an entry for a request that was answered with `status`. A failure to
/// record is logged; the answer stands (the change, if any, is already made).
pub async fn record(
    store: &dyn Store,
    caller: Option<&Caller>,
    method: &Method,
    path: &str,
    status: StatusCode,
    created: Option<Created>,
) {
    let mut resource = resource_of(path);
    if let Some(Created(made)) = created {
        resource.admin_token = made.admin_token.or(resource.admin_token);
    }
    let entry = AuditEntry {
        at: now_ms(),
        token_name: caller.map_or(AuditEntry::UNKNOWN_TOKEN, |c| c.name.as_str()).to_owned(),
        method: method.as_str().to_owned(),
        path: truncated(path, MAX_PATH_LEN).to_owned(),
        resource,
        status: status.as_u16(),
    };
    if let Err(error) = store.append_audit(&entry, REFUSALS_KEPT).await {
        tracing::error!(error = %crate::error::error_chain(&error), method = %entry.method, status = entry.status,
            "could not append to the audit log");
    }
}

/// The ids named by an `/api/v1/…` path: the segment after `merchants`,
/// `endpoints`, `events` or `admin-tokens`.
fn resource_of(path: &str) -> AuditResource {
    let mut resource = AuditResource::default();
    let rest = path.strip_prefix("/api/v1/").unwrap_or("");
    let segments: Vec<&str> = rest.split('/').collect();
    for pair in segments.windows(2) {
        let id = pair[1];
        if id.is_empty() {
            continue;
        }
        let id = Some(truncated(id, MAX_ID_LEN).to_owned());
        match pair[0] {
            "merchants" => resource.merchant_id = id,
            "endpoints" => resource.endpoint_id = id,
            "events" => resource.event_id = id,
            "admin-tokens" => resource.admin_token = id,
            _ => {}
        }
    }
    resource
}

fn truncated(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[utoipa::path(get, path = "/api/v1/audit-log", tag = "admin access", params(ListQuery),
    description = "Changes made through the admin API and refused requests (401, 403), newest first. \
                   Read scope is enough.",
    responses((status = 200, description = "newest first", body = inline(List<AuditEntryView>)),
              (status = 401, description = "missing or wrong admin token", body = ErrorBody)))]
pub async fn list_audit_log(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page()?;
    if page.after.as_ref().is_some_and(|after| after.parse::<u64>().is_err()) {
        return Err(ApiError::bad_request(
            "invalid_cursor",
            "cursor is not one this API returned",
        ));
    }
    let page = store.list_audit(page).await?;
    Ok(HttpResponse::Ok().json(List::from_page(page, AuditEntryView::from)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resource_is_read_from_the_path() {
        let cases = [
            ("/api/v1/merchants", AuditResource::default()),
            (
                "/api/v1/merchants/acme/endpoints/ep_1/rotate-secret",
                AuditResource {
                    merchant_id: Some("acme".into()),
                    endpoint_id: Some("ep_1".into()),
                    ..Default::default()
                },
            ),
            (
                "/api/v1/merchants/acme/events/evt_1/replay",
                AuditResource {
                    merchant_id: Some("acme".into()),
                    event_id: Some("evt_1".into()),
                    ..Default::default()
                },
            ),
            (
                "/api/v1/admin-tokens/ci",
                AuditResource {
                    admin_token: Some("ci".into()),
                    ..Default::default()
                },
            ),
            ("/api/v1/merchants/", AuditResource::default()),
            ("/elsewhere/merchants/x", AuditResource::default()),
        ];
        for (path, expected) in cases {
            assert_eq!(resource_of(path), expected, "{path}");
        }
        let long = format!("/api/v1/merchants/{}", "é".repeat(100));
        assert_eq!(resource_of(&long).merchant_id.unwrap().len(), MAX_ID_LEN);
    }
}
