//! Merchants and endpoints as sled keeps them: every secret sealed with the
//! [`SecretCipher`], so the data directory holds none in plaintext. The rest of the
//! program sees the plain domain types; only this file knows the stored shape.
//!
//! A stored record is the domain record's JSON with each secret field replaced:
//!
//! | record             | plaintext field (removed) | stored instead                                 |
//! |--------------------|---------------------------|------------------------------------------------|
//! | merchant           | `ingest_token`            | `ingest_token_sha256` (hex), `sealed_ingest_token` |
//! | merchant           | `verification.secret`     | `verification.sealed_secret`                   |
//! | endpoint           | `secret`                  | `sealed_secret`                                |
//! | endpoint (retired) | `retired_secrets[].secret`| `retired_secrets[].sealed_secret`              |
//!
//! Other fields pass through untouched. The default tree holds a key check value:
//! a known constant sealed at the first start, so that a start with another key is
//! refused instead of serving secrets that do not decrypt.

use serde_json::{Map, Value};

use crate::domain::{Endpoint, Merchant};
use crate::secrets::{SecretCipher, KEY_FILE, KEY_SETTING};
use crate::store::StoreError;

/// Key of the key check value in the default tree.
const KEY_CHECK: &[u8] = b"secret_key_check";

fn merchant_context(id: &str, field: &str) -> String {
    format!("merchant/{id}/{field}")
}

fn endpoint_context(merchant: &str, endpoint: &str) -> String {
    format!("endpoint/{merchant}/{endpoint}/secret")
}

fn malformed(what: &'static str) -> StoreError {
    StoreError::backend("decoding a stored record", what)
}

fn opening_failed(e: crate::secrets::OpenError) -> StoreError {
    StoreError::backend("decrypting a stored secret", e)
}

fn object(value: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    value
        .as_object_mut()
        .ok_or_else(|| malformed("a record is not a JSON object"))
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<String, StoreError> {
    match map.remove(field) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(malformed("a secret field is missing")),
    }
}

fn id_of(map: &Map<String, Value>, field: &str) -> Result<String, StoreError> {
    map.get(field)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| malformed("a record has no id"))
}

/// Replaces `from` (plaintext) by `to` (sealed).
fn seal_field(cipher: &SecretCipher, map: &mut Map<String, Value>, from: &str, to: &str, context: &str) {
    if let Ok(plain) = take_string(map, from) {
        map.insert(to.to_owned(), Value::String(cipher.seal(context, plain.as_bytes())));
    }
}

/// Replaces `from` (sealed) by `to` (plaintext).
fn open_field(
    cipher: &SecretCipher,
    map: &mut Map<String, Value>,
    from: &str,
    to: &str,
    context: &str,
) -> Result<(), StoreError> {
    let sealed = take_string(map, from)?;
    let plain = cipher.open_text(context, &sealed).map_err(opening_failed)?;
    map.insert(to.to_owned(), Value::String(plain));
    Ok(())
}

pub fn encode_merchant(cipher: &SecretCipher, merchant: &Merchant) -> Vec<u8> {
    let mut value = serde_json::to_value(merchant).expect("records serialise to JSON");
    let id = merchant.id.as_str();
    let map = value.as_object_mut().expect("a merchant is a JSON object");
    map.insert(
        "ingest_token_sha256".to_owned(),
        Value::String(hex(merchant.ingest_token.digest())),
    );
    seal_field(
        cipher,
        map,
        "ingest_token",
        "sealed_ingest_token",
        &merchant_context(id, "ingest_token"),
    );
    if let Some(Value::Object(verification)) = map.get_mut("verification") {
        let context = merchant_context(id, "verification_secret");
        seal_field(cipher, verification, "secret", "sealed_secret", &context);
    }
    serde_json::to_vec(&value).expect("records serialise to JSON")
}

pub fn decode_merchant(cipher: &SecretCipher, raw: &[u8]) -> Result<Merchant, StoreError> {
    let value = serde_json::from_slice(raw).map_err(|e| StoreError::backend("decoding a stored record", e))?;
    merchant_from_value(cipher, value)
}

pub fn merchant_from_value(cipher: &SecretCipher, mut value: Value) -> Result<Merchant, StoreError> {
    let map = object(&mut value)?;
    let id = id_of(map, "id")?;
    let digest = take_string(map, "ingest_token_sha256")?;
    open_field(
        cipher,
        map,
        "sealed_ingest_token",
        "ingest_token",
        &merchant_context(&id, "ingest_token"),
    )?;
    if let Some(Value::Object(verification)) = map.get_mut("verification") {
        let context = merchant_context(&id, "verification_secret");
        open_field(cipher, verification, "sealed_secret", "secret", &context)?;
    }
    let merchant: Merchant =
        serde_json::from_value(value).map_err(|e| StoreError::backend("decoding a stored merchant", e))?;
    if hex(merchant.ingest_token.digest()) != digest {
        return Err(malformed("an ingest token does not match its stored digest"));
    }
    Ok(merchant)
}

pub fn encode_endpoint(cipher: &SecretCipher, endpoint: &Endpoint) -> Vec<u8> {
    let mut value = serde_json::to_value(endpoint).expect("records serialise to JSON");
    let context = endpoint_context(endpoint.merchant_id.as_str(), endpoint.id.as_str());
    let map = value.as_object_mut().expect("an endpoint is a JSON object");
    seal_field(cipher, map, "secret", "sealed_secret", &context);
    if let Some(Value::Array(retired)) = map.get_mut("retired_secrets") {
        for entry in retired.iter_mut().filter_map(Value::as_object_mut) {
            seal_field(cipher, entry, "secret", "sealed_secret", &context);
        }
    }
    serde_json::to_vec(&value).expect("records serialise to JSON")
}

pub fn decode_endpoint(cipher: &SecretCipher, raw: &[u8]) -> Result<Endpoint, StoreError> {
    let mut value: Value =
        serde_json::from_slice(raw).map_err(|e| StoreError::backend("decoding a stored record", e))?;
    let map = object(&mut value)?;
    let context = endpoint_context(&id_of(map, "merchant_id")?, &id_of(map, "id")?);
    open_field(cipher, map, "sealed_secret", "secret", &context)?;
    if let Some(Value::Array(retired)) = map.get_mut("retired_secrets") {
        for entry in retired.iter_mut() {
            let entry = object(entry)?;
            open_field(cipher, entry, "sealed_secret", "secret", &context)?;
        }
    }
    serde_json::from_value(value).map_err(|e| StoreError::backend("decoding a stored endpoint", e))
}

/// At open: accepts the key if the store was sealed with it, refuses it otherwise.
/// A store without a key check (new, or written before secrets were sealed) gets
/// its plaintext secrets sealed and the check written. The caller makes it durable.
pub fn check_key(
    db: &sled::Db,
    merchants: &sled::Tree,
    endpoints: &sled::Tree,
    cipher: &SecretCipher,
) -> Result<(), StoreError> {
    let stored = db
        .get(KEY_CHECK)
        .map_err(|e| StoreError::backend("reading the key check", e))?;
    if let Some(stored) = stored {
        if cipher.matches_key_check(&String::from_utf8_lossy(&stored)) {
            return Ok(());
        }
        return Err(StoreError::Incompatible(format!(
            "its secrets were encrypted with another key than the one in force; set {KEY_SETTING} \
             (or restore <data dir>/{KEY_FILE}) to the key this data was written with"
        )));
    }
    for entry in merchants.iter() {
        let (key, raw) = entry.map_err(|e| StoreError::backend("scanning merchants", e))?;
        let legacy: Merchant =
            serde_json::from_slice(&raw).map_err(|e| StoreError::backend("reading a merchant to encrypt", e))?;
        merchants
            .insert(key, encode_merchant(cipher, &legacy))
            .map_err(|e| StoreError::backend("encrypting a merchant's secrets", e))?;
    }
    for entry in endpoints.iter() {
        let (key, raw) = entry.map_err(|e| StoreError::backend("scanning endpoints", e))?;
        let legacy: Endpoint =
            serde_json::from_slice(&raw).map_err(|e| StoreError::backend("reading an endpoint to encrypt", e))?;
        endpoints
            .insert(key, encode_endpoint(cipher, &legacy))
            .map_err(|e| StoreError::backend("encrypting an endpoint's secret", e))?;
    }
    db.insert(KEY_CHECK, cipher.key_check().as_bytes())
        .map_err(|e| StoreError::backend("writing the key check", e))?;
    db.flush()
        .map_err(|e| StoreError::backend("flushing the key check", e))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        EndpointId, EndpointSecret, EndpointUrl, EventTypeFilter, IngestToken, MerchantId, RetiredSecret, Verification,
        VerificationSpec,
    };
    use crate::secrets::SecretKey;

    fn merchant() -> Merchant {
        Merchant {
            id: MerchantId::parse("acme").unwrap(),
            name: Some("Acme".into()),
            ingest_token: IngestToken::generate(),
            created_at: 1,
            verification: Some(
                Verification::parse(VerificationSpec {
                    scheme: "stripe".into(),
                    secret: "whsec_provider_secret".into(),
                    ..Default::default()
                })
                .unwrap(),
            ),
        }
    }

    fn endpoint(merchant: &Merchant) -> Endpoint {
        Endpoint {
            id: EndpointId::generate(),
            merchant_id: merchant.id.clone(),
            url: EndpointUrl::parse("http://127.0.0.1:9/hook").unwrap(),
            event_types: EventTypeFilter::default(),
            description: None,
            secret: EndpointSecret::generate(),
            retired_secrets: vec![RetiredSecret {
                secret: EndpointSecret::generate(),
                expires_at: 5,
            }],
            enabled: true,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[test]
    fn records_round_trip_without_a_secret_in_plaintext() {
        let cipher = SecretCipher::new(&SecretKey::generate());
        let m = merchant();
        let raw = encode_merchant(&cipher, &m);
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(m.ingest_token.expose()), "{text}");
        assert!(!text.contains("whsec_provider_secret"), "{text}");
        let back = decode_merchant(&cipher, &raw).unwrap();
        assert_eq!(back.ingest_token, m.ingest_token);
        assert_eq!(back.verification, m.verification);

        let e = endpoint(&m);
        let raw = encode_endpoint(&cipher, &e);
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains(e.secret.expose()) && !text.contains(e.retired_secrets[0].secret.expose()));
        let back = decode_endpoint(&cipher, &raw).unwrap();
        assert_eq!(back.secret, e.secret);
        assert_eq!(back.retired_secrets[0].secret, e.retired_secrets[0].secret);

        let other = SecretCipher::new(&SecretKey::generate());
        assert!(decode_endpoint(&other, &raw).is_err());
    }

    #[test]
    fn a_secret_moved_into_another_record_does_not_open() {
        let cipher = SecretCipher::new(&SecretKey::generate());
        let m = merchant();
        let (a, b) = (endpoint(&m), endpoint(&m));
        let mut stolen: Value = serde_json::from_slice(&encode_endpoint(&cipher, &a)).unwrap();
        let mut victim: Value = serde_json::from_slice(&encode_endpoint(&cipher, &b)).unwrap();
        victim["sealed_secret"] = stolen["sealed_secret"].take();
        assert!(decode_endpoint(&cipher, &serde_json::to_vec(&victim).unwrap()).is_err());
    }
}
