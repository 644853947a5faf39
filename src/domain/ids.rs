//! Identifiers. Merchant ids are chosen by operators; endpoint and event ids are
//! generated (UUIDv7, so they sort by creation time) and have a fixed length, which
//! the store relies on to build composite keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `[A-Za-z0-9_-]{1,64}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MerchantId(String);

impl MerchantId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, String> {
        let valid_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if value.is_empty() || value.len() > Self::MAX_LEN || !valid_chars {
            return Err(format!("merchant id must match [A-Za-z0-9_-]{{1,{}}}", Self::MAX_LEN));
        }
        Ok(Self(value.to_owned()))
    }

    /// A new random id, `mer_` followed by 26 characters of a UUIDv7.
    pub fn generate() -> Self {
        Self(format!("mer_{}", uuid::Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! generated_id {
    ($name:ident, $prefix:literal, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Length in bytes of every id of this kind: prefix + 32 hex digits.
            pub const LEN: usize = $prefix.len() + 32;

            pub fn generate() -> Self {
                Self(format!(concat!($prefix, "{}"), uuid::Uuid::now_v7().simple()))
            }

            pub fn parse(value: &str) -> Result<Self, String> {
                let valid = value.len() == Self::LEN
                    && value.starts_with($prefix)
                    && value[$prefix.len()..]
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
                if !valid {
                    return Err(format!(concat!("not a valid id (", $prefix, "...): {:?}"), value));
                }
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The UUID the id spells: 16 bytes where the id is 36 or 35, for what keeps
            /// many ids in memory.
            pub fn uuid(&self) -> uuid::Uuid {
                uuid::Uuid::try_parse(&self.0[$prefix.len()..]).expect("a parsed or generated id is 32 hex digits")
            }

            /// The id of a UUID: `from_uuid(id.uuid()) == id`.
            pub fn from_uuid(uuid: uuid::Uuid) -> Self {
                Self(format!(concat!($prefix, "{}"), uuid.simple()))
            }

            /// Milliseconds since the epoch encoded in the UUIDv7.
            pub fn created_ms(&self) -> i64 {
                i64::from_str_radix(&self.0[$prefix.len()..$prefix.len() + 12], 16).unwrap_or(0)
            }

            /// The smallest id that could have been generated at `ms`: a range bound.
            pub fn lower_bound_at(ms: i64) -> String {
                format!(concat!($prefix, "{:012x}{}"), ms.max(0), "0".repeat(20))
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                Self::parse(&value)
            }
        }
    };
}

generated_id!(EndpointId, "ep_", "An endpoint id: `ep_` + 32 hex digits of a UUIDv7.");
generated_id!(EventId, "evt_", "An event id: `evt_` + 32 hex digits of a UUIDv7.");

impl TryFrom<String> for MerchantId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

macro_rules! id_common {
    ($($name:ident),*) => {$(
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
id_common!(MerchantId, EndpointId, EventId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_follow_the_pattern() {
        for ok in ["a", "acme-shop_1", &"x".repeat(64)] {
            assert!(MerchantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "has space", "ü", "a/b", &"x".repeat(65)] {
            assert!(MerchantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generated_ids_round_trip_and_sort_by_time() {
        let a = EventId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = EventId::generate();
        assert!(a < b);
        assert_eq!(EventId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.as_str().len(), EventId::LEN);
        let now = chrono::Utc::now().timestamp_millis();
        assert!((now - b.created_ms()).abs() < 5_000);
        assert!(EventId::lower_bound_at(a.created_ms()).as_str() <= a.as_str());
        assert!(EndpointId::parse("ep_nothex").is_err());
        assert_eq!(EventId::from_uuid(a.uuid()), a);
        let parsed = EventId::parse("evt_0190f6a1b2c3d4e5f60718293a4b5c6d").unwrap();
        assert_eq!(parsed.uuid().as_u128(), 0x0190f6a1b2c3d4e5f60718293a4b5c6d);
        assert_eq!(EventId::from_uuid(parsed.uuid()), parsed);
    }
}
