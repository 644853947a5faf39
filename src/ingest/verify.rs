//! Inbound authenticity: checks the provider's own signature on an ingest request,
//! for merchants that configured one (besides the ingest token, which is always
//! required). Schemes: Standard Webhooks, Stripe, and a plain HMAC-SHA256 of the body.
//!
//! Every comparison of a signature is constant-time (`subtle`). For the
//! timestamped schemes the signature is checked first and the timestamp second, so
//! `expired` is only ever told to a sender that holds the secret; a timestamp too far
//! in the past or in the future is refused alike (replay protection).

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use aws_lc_rs::hmac;
use base64::Engine as _;
use subtle::ConstantTimeEq as _;

use crate::domain::{now_ms, standard_webhooks_key, SignatureEncoding, Verification, VerificationScheme};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Why a request failed verification: the `reason` label of
/// `hookrelay_ingest_verification_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A header the scheme needs is absent.
    Missing,
    /// A header is there but cannot be read (no usable signature, a bad timestamp).
    Malformed,
    /// No signature matches.
    Mismatch,
    /// The signature matches but its timestamp is outside the tolerance.
    Expired,
}

impl Failure {
    pub const ALL: [Failure; 4] = [Self::Missing, Self::Malformed, Self::Mismatch, Self::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Mismatch => "mismatch",
            Self::Expired => "expired",
        }
    }
}

/// Checks the request against the merchant's verification; on failure counts it and
/// answers 401 `invalid_signature` or `signature_expired`.
pub fn verify_request(request: &HttpRequest, verification: &Verification, body: &[u8]) -> Result<(), ApiError> {
    let Err(failure) = verify(verification, request.headers(), body, now_ms() / 1000) else {
        return Ok(());
    };
    if let Some(metrics) = request.app_data::<web::Data<Metrics>>() {
        metrics
            .ingest_verification_failures
            .with_label_values(&[failure.as_str()])
            .inc();
    }
    let scheme = verification.settings.name();
    let (code, message) = match failure {
        Failure::Missing => (
            "invalid_signature",
            format!("the {scheme} signature headers are missing"),
        ),
        Failure::Malformed => (
            "invalid_signature",
            format!("the {scheme} signature headers cannot be read"),
        ),
        Failure::Mismatch => ("invalid_signature", format!("the {scheme} signature does not match")),
        Failure::Expired => (
            "signature_expired",
            format!(
                "the {scheme} signature's timestamp is more than {} seconds from now",
                verification.settings.tolerance_seconds().unwrap_or_default()
            ),
        ),
    };
    Err(ApiError::client(StatusCode::UNAUTHORIZED, code, message))
}

/// The pure check: `now` in Unix seconds.
pub fn verify(verification: &Verification, headers: &HeaderMap, body: &[u8], now: i64) -> Result<(), Failure> {
    let secret = verification.secret.expose();
    match &verification.settings {
        VerificationScheme::StandardWebhooks { tolerance_seconds } => {
            let key = standard_webhooks_key(secret).ok_or(Failure::Mismatch)?;
            let id = header(headers, "webhook-id")?;
            let timestamp = header(headers, "webhook-timestamp")?;
            let signatures = header(headers, "webhook-signature")?;
            let ts: i64 = timestamp.trim().parse().map_err(|_| Failure::Malformed)?;
            let candidates: Vec<Vec<u8>> = signatures
                .split_whitespace()
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                .collect();
            let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body];
            check_any(&key, &signed, &candidates)?;
            check_window(ts, now, *tolerance_seconds)
        }
        VerificationScheme::Stripe { tolerance_seconds } => {
            let value = header(headers, "stripe-signature")?;
            let mut timestamp = None;
            let mut candidates = Vec::new();
            for item in value.split(',') {
                match item.trim().split_once('=') {
                    Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
                    Some(("v1", hex)) => candidates.extend(decode_hex(hex)),
                    _ => {}
                }
            }
            let timestamp = timestamp.ok_or(Failure::Malformed)?;
            let ts: i64 = timestamp.parse().map_err(|_| Failure::Malformed)?;
            let signed = [timestamp.as_bytes(), b".", body];
            check_any(secret.as_bytes(), &signed, &candidates)?;
            check_window(ts, now, *tolerance_seconds)
        }
        VerificationScheme::HmacSha256 {
            header: name,
            encoding,
            prefix,
        } => {
            let value = header(headers, name)?.trim();
            let encoded = match prefix {
                Some(prefix) => strip_prefix_ignore_case(value, prefix).ok_or(Failure::Malformed)?,
                None => value,
            };
            let signature = match encoding {
                SignatureEncoding::Hex => decode_hex(encoded),
                SignatureEncoding::Base64 => base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded))
                    .ok(),
            };
            check_any(secret.as_bytes(), &[body], &[signature.ok_or(Failure::Malformed)?])
        }
    }
}

/// A header's value; absent is `Missing`, not visible ASCII is `Malformed`.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Failure> {
    headers
        .get(name)
        .ok_or(Failure::Missing)?
        .to_str()
        .map_err(|_| Failure::Malformed)
}

/// Whether one of `candidates` is the HMAC of the concatenated `parts`, compared in
/// constant time. No candidate at all is `Malformed`.
fn check_any(key: &[u8], parts: &[&[u8]], candidates: &[Vec<u8>]) -> Result<(), Failure> {
    if candidates.is_empty() {
        return Err(Failure::Malformed);
    }
    // aws-lc's HMAC, as for outgoing signatures (src/delivery/signing.rs).
    let mut mac = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for part in parts {
        mac.update(part);
    }
    let expected = mac.sign();
    let matched = candidates.iter().fold(false, |found, candidate| {
        bool::from(expected.as_ref().ct_eq(candidate)) | found
    });
    if matched {
        Ok(())
    } else {
        Err(Failure::Mismatch)
    }
}

/// Too old or too far in the future is `Expired`.
fn check_window(ts: i64, now: i64, tolerance_seconds: u64) -> Result<(), Failure> {
    let tolerance = i64::try_from(tolerance_seconds).unwrap_or(i64::MAX);
    if now.abs_diff(ts) > tolerance as u64 {
        return Err(Failure::Expired);
    }
    Ok(())
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if text.is_empty() || text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &value[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use ::hmac::Mac as _;
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;
    use crate::domain::VerificationSpec;

    /// An independent HMAC-SHA256 (the `hmac` crate) to compute expected signatures.
    type HmacSha256 = ::hmac::Hmac<sha2::Sha256>;

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SW_TS: i64 = 1614265330;
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verification(scheme: &str, secret: &str, extra: impl FnOnce(&mut VerificationSpec)) -> Verification {
        let mut spec = VerificationSpec {
            scheme: scheme.into(),
            secret: secret.into(),
            ..Default::default()
        };
        extra(&mut spec);
        Verification::parse(spec).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn standard_webhooks_accepts_the_reference_vector_and_nothing_else() {
        let v = verification("standard_webhooks", SW_SECRET, |_| {});
        let ts = SW_TS.to_string();
        let good = |signature: &str| {
            headers(&[
                ("webhook-id", SW_ID),
                ("webhook-timestamp", &ts),
                ("webhook-signature", signature),
            ])
        };
        assert_eq!(verify(&v, &good(SW_SIGNATURE), SW_BODY, SW_TS), Ok(()));
        // Among other entries, and during the provider's own rotation.
        let several = format!("v2,abc v1,AAAA {SW_SIGNATURE}");
        assert_eq!(verify(&v, &good(&several), SW_BODY, SW_TS + 10), Ok(()));
        let cases: [(HeaderMap, &[u8], i64, Failure); 7] = [
            (good(SW_SIGNATURE), br#"{"test": 2432232315}"#, SW_TS, Failure::Mismatch),
            (
                good("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="),
                SW_BODY,
                SW_TS,
                Failure::Mismatch,
            ),
            (good("v2,whatever"), SW_BODY, SW_TS, Failure::Malformed),
            (
                headers(&[("webhook-id", SW_ID), ("webhook-timestamp", &ts)]),
                SW_BODY,
                SW_TS,
                Failure::Missing,
            ),
            (good(SW_SIGNATURE), SW_BODY, SW_TS + 301, Failure::Expired),
            (good(SW_SIGNATURE), SW_BODY, SW_TS - 301, Failure::Expired),
            (
                headers(&[
                    ("webhook-id", SW_ID),
                    ("webhook-timestamp", "soon"),
                    ("webhook-signature", SW_SIGNATURE),
                ]),
                SW_BODY,
                SW_TS,
                Failure::Malformed,
            ),
        ];
        for (n, (headers, body, now, expected)) in cases.into_iter().enumerate() {
            assert_eq!(verify(&v, &headers, body, now), Err(expected), "case {n}");
        }
    }

    #[test]
    fn stripe_signatures_are_hex_hmacs_over_the_timestamp_and_body() {
        // Stripe keys the HMAC with the secret string as given, whsec_ prefix included.
        let secret = "whsec_test_secret";
        let v = verification("stripe", secret, |s| s.tolerance_seconds = Some(60));
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let ts = 1_700_000_000i64;
        let good = hmac_hex(
            secret.as_bytes(),
            format!("{ts}.{}", std::str::from_utf8(body).unwrap()).as_bytes(),
        );
        assert_eq!(
            good,
            hmac_hex(secret.as_bytes(), &[format!("{ts}.").as_bytes(), &body[..]].concat())
        );
        let header = |value: String| headers(&[("stripe-signature", &value)]);
        assert_eq!(verify(&v, &header(format!("t={ts},v1={good}")), body, ts), Ok(()));
        let rotating = format!("t={ts},v1={},v1={good},v0=deadbeef", "00".repeat(32));
        assert_eq!(verify(&v, &header(rotating), body, ts + 59), Ok(()));
        let cases = [
            (header(format!("t={ts},v1={}", "ab".repeat(32))), ts, Failure::Mismatch),
            (header(format!("t={},v1={good}", ts + 1)), ts, Failure::Mismatch),
            (header(format!("v1={good}")), ts, Failure::Malformed),
            (header(format!("t=yesterday,v1={good}")), ts, Failure::Malformed),
            (header(format!("t={ts},v0={good}")), ts, Failure::Malformed),
            (header(format!("t={ts},v1={good}")), ts + 61, Failure::Expired),
            (header(format!("t={ts},v1={good}")), ts - 61, Failure::Expired),
            (HeaderMap::new(), ts, Failure::Missing),
        ];
        for (n, (headers, now, expected)) in cases.into_iter().enumerate() {
            assert_eq!(verify(&v, &headers, body, now), Err(expected), "case {n}");
        }
    }

    #[test]
    fn a_plain_hmac_is_read_in_its_encoding_after_its_prefix() {
        // GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
        let body = b"Hello, World!";
        let expected = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(hmac_hex(b"It's a Secret to Everybody", body), expected);
        let github = verification("hmac_sha256", "It's a Secret to Everybody", |s| {
            s.header = Some("X-Hub-Signature-256".into());
            s.encoding = Some("hex".into());
            s.prefix = Some("sha256=".into());
        });
        let sig = |value: &str| headers(&[("x-hub-signature-256", value)]);
        assert_eq!(verify(&github, &sig(&format!("sha256={expected}")), body, 0), Ok(()));
        assert_eq!(
            verify(&github, &sig(&format!("sha256={}", expected.to_uppercase())), body, 0),
            Ok(())
        );
        assert_eq!(verify(&github, &sig(expected), body, 0), Err(Failure::Malformed));
        assert_eq!(verify(&github, &sig("sha256=zz"), body, 0), Err(Failure::Malformed));
        assert_eq!(
            verify(&github, &sig(&format!("sha256={}", "0".repeat(64))), body, 0),
            Err(Failure::Mismatch)
        );
        assert_eq!(verify(&github, &HeaderMap::new(), body, 0), Err(Failure::Missing));

        let b64 = verification("hmac_sha256", "shopify-secret", |s| {
            s.header = Some("X-Shopify-Hmac-Sha256".into());
            s.encoding = Some("base64".into());
        });
        let mut mac = HmacSha256::new_from_slice(b"shopify-secret").unwrap();
        mac.update(body);
        let good = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let sig = |value: &str| headers(&[("x-shopify-hmac-sha256", value)]);
        assert_eq!(verify(&b64, &sig(&good), body, 0), Ok(()));
        assert_eq!(verify(&b64, &sig(&good), b"Hello, World?", 0), Err(Failure::Mismatch));
        assert_eq!(verify(&b64, &sig("***"), body, 0), Err(Failure::Malformed));
    }

    #[test]
    fn hex_decoding_refuses_odd_and_foreign_digits() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("ABcd"), Some(vec![0xab, 0xcd]));
        for bad in ["", "0", "0g", "+1"] {
            assert_eq!(decode_hex(bad), None, "{bad}");
        }
    }
}
