//! Merchants: the tenants whose providers send events to hookrelay.

use std::fmt;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{MerchantId, UnixMillis, Verification};

/// The secret a provider puts in the ingest URL. Never printed. Its SHA-256 is kept
/// beside it: presented tokens are compared by digest, in constant time.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct IngestToken {
    text: String,
    digest: [u8; 32],
}

impl IngestToken {
    /// 32 random bytes, URL-safe base64 (fits in a query string unescaped).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_text(format!(
            "whk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// A token read back from where it was kept.
    pub fn from_text(text: String) -> Self {
        let digest = Sha256::digest(text.as_bytes()).into();
        Self { text, digest }
    }

    pub fn expose(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the token.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Constant-time comparison with what a caller presented (digest against digest,
    /// so neither the content nor the length of the token leaks through timing).
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq as _;
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}

impl From<String> for IngestToken {
    fn from(text: String) -> Self {
        Self::from_text(text)
    }
}

impl From<IngestToken> for String {
    fn from(token: IngestToken) -> String {
        token.text
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
    /// How the provider signs its webhooks, checked at ingest besides the token.
    #[serde(default)]
    pub verification: Option<Verification>,
}

/// A change to a merchant, applied by the store in one atomic step so that
/// concurrent changes (a rename and a token rotation) cannot undo each other.
#[derive(Clone, Debug, Default)]
pub struct MerchantUpdate {
    pub name: Option<Option<String>>,
    pub verification: Option<Option<Verification>>,
    pub ingest_token: Option<IngestToken>,
}

impl MerchantUpdate {
    pub fn apply_to(&self, merchant: &mut Merchant) {
        if let Some(name) = &self.name {
            merchant.name = name.clone();
        }
        if let Some(verification) = &self.verification {
            merchant.verification = verification.clone();
        }
        if let Some(token) = &self.ingest_token {
            merchant.ingest_token = token.clone();
        }
    }
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
        assert!(!token.matches(&format!("{}x", token.expose())));
        assert_eq!(IngestToken::from_text(token.expose().to_owned()), token);
    }
}
