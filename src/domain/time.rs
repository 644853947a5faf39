//! Time as stored: milliseconds since the Unix epoch.

/// Milliseconds since the Unix epoch (UTC).
pub type UnixMillis = i64;

pub fn now_ms() -> UnixMillis {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 with millisecond precision, as the API shows every time.
pub fn to_rfc3339(ms: UnixMillis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
