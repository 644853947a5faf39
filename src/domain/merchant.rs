//! Merchants: the tenants whose providers send events to hookrelay.

use std::fmt;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::{MerchantId, UnixMillis};

/// The secret a provider puts in the ingest URL. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestToken(String);

impl IngestToken {
    /// 32 random bytes, URL-safe base64 (fits in a query string unescaped).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!(
            "whk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with what a caller presented.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for IngestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IngestToken(***)")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Merchant {
    pub id: MerchantId,
    pub name: Option<String>,
    pub ingest_token: IngestToken,
    pub created_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly_and_never_print() {
        let token = IngestToken::generate();
        assert!(token.matches(token.expose()));
        assert!(!token.matches(""));
        assert!(!token.matches(&token.expose()[1..]));
        assert!(!format!("{token:?}").contains(token.expose()));
    }
}
