//! Endpoints: the merchant's downstream services, with the secret that signs what
//! hookrelay sends them.

use std::fmt;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::{EndpointId, MerchantId, UnixMillis};

/// An absolute http(s) URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub const MAX_LEN: usize = 2048;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() > Self::MAX_LEN {
            return Err(format!("url is longer than {} bytes", Self::MAX_LEN));
        }
        let url = url::Url::parse(value).map_err(|e| format!("url is not an absolute URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("url scheme must be http or https, not {:?}", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("url has no host".to_owned());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("url must not carry credentials".to_owned());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<EndpointUrl> for String {
    fn from(url: EndpointUrl) -> String {
        url.0
    }
}

/// Which event types an endpoint receives. Empty: every event, including events
/// without a `type`. Otherwise exact names, or a prefix ending in `*`
/// (`checkout_session.*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct EventTypeFilter(Vec<String>);

impl EventTypeFilter {
    pub const MAX_ENTRIES: usize = 100;
    pub const MAX_LEN: usize = 255;

    pub fn parse(values: Vec<String>) -> Result<Self, String> {
        if values.len() > Self::MAX_ENTRIES {
            return Err(format!("event_types has more than {} entries", Self::MAX_ENTRIES));
        }
        for value in &values {
            let body = value.strip_suffix('*').unwrap_or(value);
            if value.is_empty()
                || value.len() > Self::MAX_LEN
                || body.contains('*')
                || value.chars().any(char::is_control)
            {
                return Err(format!(
                    "event_types entry {value:?} must be 1-{} characters, `*` only at the end",
                    Self::MAX_LEN
                ));
            }
        }
        let mut values = values;
        values.sort();
        values.dedup();
        Ok(Self(values))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether an event of this type (or without type) goes to the endpoint.
    pub fn matches(&self, event_type: Option<&str>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let Some(event_type) = event_type else { return false };
        self.0.iter().any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => event_type.starts_with(prefix),
            None => pattern == event_type,
        })
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl TryFrom<Vec<String>> for EventTypeFilter {
    type Error = String;
    fn try_from(values: Vec<String>) -> Result<Self, String> {
        Self::parse(values)
    }
}

impl From<EventTypeFilter> for Vec<String> {
    fn from(filter: EventTypeFilter) -> Vec<String> {
        filter.0
    }
}

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24 to 64 bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointSecret {
    text: String,
    key: Vec<u8>,
}

impl EndpointSecret {
    const PREFIX: &'static str = "whsec_";

    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        let text = format!(
            "{}{}",
            Self::PREFIX,
            base64::engine::general_purpose::STANDARD.encode(&key)
        );
        Self { text, key }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        let encoded = value
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| "secret must start with whsec_".to_owned())?;
        let key = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| "secret after whsec_ must be standard base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err("secret must encode 24 to 64 bytes".to_owned());
        }
        Ok(Self {
            text: value.to_owned(),
            key,
        })
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EndpointSecret(***)")
    }
}

impl TryFrom<String> for EndpointSecret {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<EndpointSecret> for String {
    fn from(secret: EndpointSecret) -> String {
        secret.text
    }
}

/// A secret replaced by a rotation; it keeps signing beside the new one until `expires_at`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetiredSecret {
    pub secret: EndpointSecret,
    pub expires_at: UnixMillis,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub merchant_id: MerchantId,
    pub url: EndpointUrl,
    pub event_types: EventTypeFilter,
    pub description: Option<String>,
    pub secret: EndpointSecret,
    /// Secrets rotated away from that still sign until they expire.
    #[serde(default)]
    pub retired_secrets: Vec<RetiredSecret>,
    pub enabled: bool,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Endpoint {
    /// The secrets that sign an attempt made at `now`: the current one first.
    pub fn signing_secrets(&self, now: UnixMillis) -> impl Iterator<Item = &EndpointSecret> {
        std::iter::once(&self.secret).chain(
            self.retired_secrets
                .iter()
                .filter(move |r| r.expires_at > now)
                .map(|r| &r.secret),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http() {
        for ok in ["http://127.0.0.1:9000/hook", "https://example.com/a?b=c"] {
            assert!(EndpointUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/relative",
            "ftp://example.com",
            "example.com/hook",
            "http://",
            "https://user:pw@example.com/",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_match_exact_names_and_prefixes() {
        let any = EventTypeFilter::default();
        assert!(any.matches(None) && any.matches(Some("x")));
        let f = EventTypeFilter::parse(vec!["checkout_session.completed".into(), "refund.*".into()]).unwrap();
        assert!(f.matches(Some("checkout_session.completed")));
        assert!(f.matches(Some("refund.created")));
        assert!(!f.matches(Some("checkout_session.expired")));
        assert!(!f.matches(None));
        assert!(EventTypeFilter::parse(vec!["a*b".into()]).is_err());
        assert!(EventTypeFilter::parse(vec!["".into()]).is_err());
    }

    #[test]
    fn secrets_parse_the_standard_webhooks_form() {
        let s = EndpointSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(s.key().len(), 24);
        assert!(EndpointSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(EndpointSecret::parse("whsec_c2hvcnQ=").is_err());
        let generated = EndpointSecret::generate();
        assert_eq!(EndpointSecret::parse(generated.expose()).unwrap(), generated);
        assert!(!format!("{generated:?}").contains(generated.expose()));
    }
}
