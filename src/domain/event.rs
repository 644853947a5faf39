//! Events: what a provider sent, kept byte for byte.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{EventId, MerchantId, UnixMillis};

/// The provider's own id of an event (`Idempotency-Key` header or top-level `id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(format!("idempotency key must be 1 to {} bytes", Self::MAX_LEN));
        }
        Ok(Self(value.to_owned()))
    }

    /// A key for a provider id longer than `MAX_LEN`: its SHA-256, in hex.
    pub fn digest_of(value: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(value.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Self(format!("sha256:{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An accepted event. The payload is stored apart from this record so that lists
/// do not read it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub merchant_id: MerchantId,
    pub event_type: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub received_at: UnixMillis,
    #[serde(skip)]
    pub payload: Bytes,
}
