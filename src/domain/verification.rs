//! Inbound verification: how a merchant's provider signs its webhooks, checked at
//! ingest in addition to the ingest token (the checks are in `ingest::verify`).

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// Allowed clock difference for the timestamped schemes when none is given.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;
/// More than a day would make replay protection meaningless.
pub const MAX_TOLERANCE_SECONDS: u64 = 86_400;
const MAX_SECRET_LEN: usize = 1024;
const MAX_HEADER_LEN: usize = 100;
const MAX_PREFIX_LEN: usize = 64;

/// A scheme and its settings: everything about a verification except its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum VerificationScheme {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64> …` over
    /// `{id}.{timestamp}.{body}`, keyed with the bytes of a `whsec_` secret.
    StandardWebhooks { tolerance_seconds: u64 },
    /// `Stripe-Signature: t=<ts>,v1=<hex>[,v1=…]` over `{t}.{body}`, keyed with the secret as given.
    Stripe { tolerance_seconds: u64 },
    /// HMAC-SHA256 of the raw body in `header`, optionally after `prefix` (`sha256=`).
    HmacSha256 {
        /// Lower-case header name.
        header: String,
        encoding: SignatureEncoding,
        prefix: Option<String>,
    },
}

impl VerificationScheme {
    pub fn name(&self) -> &'static str {
        match self {
            Self::StandardWebhooks { .. } => "standard_webhooks",
            Self::Stripe { .. } => "stripe",
            Self::HmacSha256 { .. } => "hmac_sha256",
        }
    }

    /// The replay window, for schemes that sign a timestamp.
    pub fn tolerance_seconds(&self) -> Option<u64> {
        match self {
            Self::StandardWebhooks { tolerance_seconds } | Self::Stripe { tolerance_seconds } => {
                Some(*tolerance_seconds)
            }
            Self::HmacSha256 { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignatureEncoding {
    Hex,
    Base64,
}

impl SignatureEncoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// The secret a provider signs with. Never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderSecret(String);

impl ProviderSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderSecret(***)")
    }
}

/// A merchant's inbound verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub settings: VerificationScheme,
    pub secret: ProviderSecret,
}

/// What an operator asks for, before it is checked (no `Debug`: it holds the secret).
#[derive(Clone, Default)]
pub struct VerificationSpec {
    pub scheme: String,
    pub secret: String,
    pub tolerance_seconds: Option<u64>,
    pub header: Option<String>,
    pub encoding: Option<String>,
    pub prefix: Option<String>,
}

impl Verification {
    pub fn parse(spec: VerificationSpec) -> Result<Self, String> {
        let VerificationSpec {
            scheme,
            secret,
            tolerance_seconds,
            header,
            encoding,
            prefix,
        } = spec;
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN || secret.chars().any(char::is_control) {
            return Err(format!(
                "secret must be 1-{MAX_SECRET_LEN} bytes without control characters"
            ));
        }
        let timestamped = |name: &str| -> Result<u64, String> {
            if header.is_some() || encoding.is_some() || prefix.is_some() {
                return Err(format!("header, encoding and prefix apply to hmac_sha256, not {name}"));
            }
            let tolerance = tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECONDS);
            if !(1..=MAX_TOLERANCE_SECONDS).contains(&tolerance) {
                return Err(format!("tolerance_seconds must be 1-{MAX_TOLERANCE_SECONDS}"));
            }
            Ok(tolerance)
        };
        let settings = match scheme.as_str() {
            "standard_webhooks" => {
                standard_webhooks_key(&secret).ok_or_else(|| {
                    "a standard_webhooks secret is whsec_ + standard base64 of 16 to 256 bytes".to_owned()
                })?;
                VerificationScheme::StandardWebhooks {
                    tolerance_seconds: timestamped("standard_webhooks")?,
                }
            }
            "stripe" => VerificationScheme::Stripe {
                tolerance_seconds: timestamped("stripe")?,
            },
            "hmac_sha256" => {
                if tolerance_seconds.is_some() {
                    return Err(
                        "tolerance_seconds applies to the timestamped schemes (standard_webhooks, stripe); \
                                hmac_sha256 signs no timestamp"
                            .to_owned(),
                    );
                }
                let header = header
                    .map(|h| h.to_ascii_lowercase())
                    .filter(|h| is_header_name(h))
                    .ok_or_else(|| {
                        format!("hmac_sha256 needs `header`, an HTTP header name of 1-{MAX_HEADER_LEN} characters")
                    })?;
                let encoding = match encoding.as_deref() {
                    Some("hex") => SignatureEncoding::Hex,
                    Some("base64") => SignatureEncoding::Base64,
                    _ => return Err("hmac_sha256 needs `encoding`: \"hex\" or \"base64\"".to_owned()),
                };
                let prefix = prefix.filter(|p| !p.is_empty());
                if prefix
                    .as_ref()
                    .is_some_and(|p| p.len() > MAX_PREFIX_LEN || !p.bytes().all(|b| b.is_ascii_graphic()))
                {
                    return Err(format!(
                        "prefix must be at most {MAX_PREFIX_LEN} visible ASCII characters"
                    ));
                }
                VerificationScheme::HmacSha256 {
                    header,
                    encoding,
                    prefix,
                }
            }
            other => {
                return Err(format!(
                    "scheme {other:?} is not one of standard_webhooks, stripe, hmac_sha256"
                ))
            }
        };
        Ok(Self {
            settings,
            secret: ProviderSecret(secret),
        })
    }
}

/// The HMAC key of a Standard Webhooks secret: the bytes the base64 after `whsec_` encodes.
pub fn standard_webhooks_key(secret: &str) -> Option<Vec<u8>> {
    let encoded = secret.strip_prefix("whsec_")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|key| (16..=256).contains(&key.len()))
}

/// An HTTP field name (RFC 9110 token).
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_HEADER_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(scheme: &str, secret: &str) -> VerificationSpec {
        VerificationSpec {
            scheme: scheme.into(),
            secret: secret.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_scheme_parses_with_its_settings_and_defaults() {
        let sw = Verification::parse(spec("standard_webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")).unwrap();
        assert_eq!(sw.settings.tolerance_seconds(), Some(300));
        let stripe = Verification::parse(VerificationSpec {
            tolerance_seconds: Some(60),
            ..spec("stripe", "whsec_anything")
        })
        .unwrap();
        assert_eq!(stripe.settings, VerificationScheme::Stripe { tolerance_seconds: 60 });
        let hmac = Verification::parse(VerificationSpec {
            header: Some("X-Hub-Signature-256".into()),
            encoding: Some("hex".into()),
            prefix: Some("sha256=".into()),
            ..spec("hmac_sha256", "s3cret")
        })
        .unwrap();
        assert_eq!(
            hmac.settings,
            VerificationScheme::HmacSha256 {
                header: "x-hub-signature-256".into(),
                encoding: SignatureEncoding::Hex,
                prefix: Some("sha256=".into())
            }
        );
        assert!(!format!("{hmac:?}").contains("s3cret"));
    }

    #[test]
    fn settings_that_do_not_fit_the_scheme_are_refused() {
        let hmac = |header: Option<&str>, encoding: Option<&str>| VerificationSpec {
            header: header.map(Into::into),
            encoding: encoding.map(Into::into),
            ..spec("hmac_sha256", "s")
        };
        for bad in [
            spec("nope", "s"),
            spec("stripe", ""),
            spec("standard_webhooks", "not-whsec"),
            spec("standard_webhooks", "whsec_c2hvcnQ="),
            VerificationSpec {
                tolerance_seconds: Some(0),
                ..spec("stripe", "s")
            },
            VerificationSpec {
                tolerance_seconds: Some(MAX_TOLERANCE_SECONDS + 1),
                ..spec("stripe", "s")
            },
            VerificationSpec {
                header: Some("x".into()),
                ..spec("stripe", "s")
            },
            hmac(None, Some("hex")),
            hmac(Some("bad header"), Some("hex")),
            hmac(Some("x-sig"), None),
            hmac(Some("x-sig"), Some("base32")),
            VerificationSpec {
                tolerance_seconds: Some(10),
                ..hmac(Some("x-sig"), Some("hex"))
            },
        ] {
            let scheme = bad.scheme.clone();
            assert!(Verification::parse(bad).is_err(), "{scheme}");
        }
    }
}
