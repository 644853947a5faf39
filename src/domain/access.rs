//! Admin access: named admin tokens with a scope, known to the store only by their
//! SHA-256, and the audit log of what was done (or refused) through the admin API.

use std::fmt;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::UnixMillis;

/// What a token may do: `read` (GET only) or `write` (everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    Write,
}

impl TokenScope {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            _ => Err(format!("scope must be \"read\" or \"write\", not {value:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }
}

/// The name of an admin token: `[A-Za-z0-9_-]{1,64}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenName(String);

impl TokenName {
    pub const MAX_LEN: usize = 64;
    /// The token from `HOOKRELAY_ADMIN_TOKEN` or `<data dir>/admin_token`.
    pub const BOOTSTRAP: &'static str = "bootstrap";

    pub fn parse(value: &str) -> Result<Self, String> {
        let valid_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if value.is_empty() || value.len() > Self::MAX_LEN || !valid_chars {
            return Err(format!("token name must match [A-Za-z0-9_-]{{1,{}}}", Self::MAX_LEN));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn is_bootstrap(&self) -> bool {
        self.0 == Self::BOOTSTRAP
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<TokenName> for String {
    fn from(name: TokenName) -> String {
        name.0
    }
}

impl fmt::Display for TokenName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// SHA-256 of a token, the only form in which a token is stored.
///
/// A fast hash is right here, unlike for passwords: generated tokens carry 256 random
/// bits, so nobody can search for a preimage however cheap one guess is, and a slow
/// hash (argon2, bcrypt) would only add its cost to every admin request. Being
/// unsalted and deterministic is what lets the store look a token up by its hash.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Constant-time comparison.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl TryFrom<String> for TokenHash {
    type Error = String;
    fn try_from(hex: String) -> Result<Self, String> {
        let bad = || format!("not a SHA-256 in hex: {hex:?}");
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

impl From<TokenHash> for String {
    fn from(hash: TokenHash) -> String {
        hash.to_hex()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

/// A newly generated admin token, shown once to whoever created it. Never printed.
pub struct AdminTokenSecret(String);

impl AdminTokenSecret {
    /// `hra_` + URL-safe base64 of 32 random bytes.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(format!(
            "hra_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.0)
    }
}

impl fmt::Debug for AdminTokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminTokenSecret(***)")
    }
}

/// A stored admin token: its name, scope and hash, never the token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminToken {
    pub name: TokenName,
    pub scope: TokenScope,
    pub hash: TokenHash,
    pub created_at: UnixMillis,
}

/// The ids a request's path names (`/merchants/{id}/endpoints/{id}`, …).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    /// The name of the admin token a request created or deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// One line of the audit log: a change made through the admin API, or a refused
/// request. Request bodies are never recorded (they carry secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: UnixMillis,
    /// The name of the token used; `unknown` when authentication failed.
    pub token_name: String,
    pub method: String,
    /// The path as requested, without the query string.
    pub path: String,
    #[serde(default)]
    pub resource: AuditResource,
    /// The status of the answer.
    pub status: u16,
}

impl AuditEntry {
    /// The name recorded when no valid token was presented.
    pub const UNKNOWN_TOKEN: &'static str = "unknown";

    /// A request refused for its credentials (401) or their scope (403).
    pub fn is_refusal(&self) -> bool {
        matches!(self.status, 401 | 403)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_follow_the_pattern() {
        for ok in ["a", "ci-deploy_2", &"x".repeat(64)] {
            assert!(TokenName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "ü", "a/b", &"x".repeat(65)] {
            assert!(TokenName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_tokens_are_long_random_and_never_print() {
        let a = AdminTokenSecret::generate();
        let b = AdminTokenSecret::generate();
        assert!(a.expose().starts_with("hra_"));
        assert_eq!(a.expose().len(), 4 + 43);
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn hashes_round_trip_through_hex_and_compare_exactly() {
        let hash = TokenHash::of("hra_example");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(TokenHash::try_from(hex).unwrap(), hash);
        assert!(hash.matches(&TokenHash::of("hra_example")));
        assert!(!hash.matches(&TokenHash::of("hra_exampl")));
        assert!(TokenHash::try_from("zz".repeat(32)).is_err());
        assert!(TokenHash::try_from("é".repeat(32)).is_err());
    }
}
