//! `?limit=&cursor=` and the `{"data", "next_cursor"}` envelope of every list.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::store::{Page, PageRequest};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    pub fn page(&self) -> Result<PageRequest, ApiError> {
        page_request(self.limit.as_deref(), self.cursor.as_deref())
    }
}

pub fn page_request(limit: Option<&str>, cursor: Option<&str>) -> Result<PageRequest, ApiError> {
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(text) => text.parse().unwrap_or(0),
    };
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_limit",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let after = cursor
        .map(|cursor| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| ApiError::bad_request("invalid_cursor", "cursor is not one this API returned"))
        })
        .transpose()?;
    Ok(PageRequest {
        after,
        limit: limit as usize,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct List<T> {
    pub data: Vec<T>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    pub fn from_page<S>(page: Page<S>, view: impl Fn(S) -> T) -> Self {
        Self {
            data: page.items.into_iter().map(view).collect(),
            next_cursor: page
                .next
                .map(|key| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)),
        }
    }
}

/// Pages an in-memory list sorted by `key` (used for a merchant's few endpoints).
pub fn page_slice<T>(items: Vec<T>, request: &PageRequest, key: impl Fn(&T) -> String) -> Page<T> {
    let mut rest: Vec<T> = items
        .into_iter()
        .filter(|item| request.after.as_ref().is_none_or(|after| key(item) > *after))
        .collect();
    let next = (rest.len() > request.limit).then(|| key(&rest[request.limit - 1]));
    rest.truncate(request.limit);
    Page { items: rest, next }
}
