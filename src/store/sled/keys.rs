//! Key layout of the sled trees. Ids of endpoints and events have a fixed length and
//! merchant ids never contain 0x00, so composite keys split without ambiguity and
//! sort the way the scans need.
//!
//! | tree         | key                                   | value            |
//! |--------------|---------------------------------------|------------------|
//! | `merchants`  | merchant                              | Merchant (JSON, secrets sealed) |
//! | `endpoints`  | merchant 0x00 endpoint                | Endpoint (JSON, secrets sealed) |
//! | `events`     | merchant 0x00 event                   | Event            |
//! | `payloads`   | event                                 | raw body         |
//! | `dedupe`     | merchant 0x00 idempotency key         | event id         |
//! | `deliveries` | event                                 | FanOut: the endpoints of an event queued on disk (its lanes were full; every event before layout 6) (`records.rs`) |
//! | `deliveries` | event endpoint                        | Delivery, once it changed from pending and untried; holds its latest attempt (`records.rs`) |
//! | `queue`      | endpoint due(u64 BE ms) event         | [`QueueEntry`]   |
//! | `fresh`      | event                                 | FanOut (empty before layout 6): its first attempts wait in memory, not all recorded (`fresh.rs`) |
//! | `failed`     | endpoint event                        | empty            |
//! | `attempts`   | event seq(u64 BE)                     | Attempt, unless its delivery's record holds it |
//! | `admin_tokens` | token name                          | AdminToken (JSON: name, scope, SHA-256 hex, created_at) |
//! | `admin_token_hashes` | SHA-256 of the token (32 bytes) | token name     |
//! | `audit`      | seq(u64 BE)                           | AuditEntry (JSON), changes |
//! | `audit_refusals` | seq(u64 BE), shared with `audit`  | AuditEntry (JSON), 401/403, newest kept |
//!
//! Events, fan-outs, deliveries and attempts are postcard records after a 0x01 byte;
//! the other records, and every record of a layout 1 data directory, are JSON
//! (`records.rs` reads both). Layout 1 also had a delivery record per endpoint from
//! the start and queue entries holding only the merchant id.
//!
//! Admin tokens themselves are never stored, only their SHA-256 (`sled/access.rs`).
//! Ingest tokens and signing secrets are stored encrypted (`sled/sealed.rs`); the
//! default tree holds `secret_key_check`, which recognises the key.

use crate::domain::{EndpointId, EventId, MerchantId, UnixMillis};

pub fn merchant_prefix(merchant: &MerchantId) -> Vec<u8> {
    let mut key = Vec::with_capacity(merchant.as_str().len() + 1);
    key.extend_from_slice(merchant.as_str().as_bytes());
    key.push(0);
    key
}

pub fn merchant_child(merchant: &MerchantId, child: &str) -> Vec<u8> {
    let mut key = merchant_prefix(merchant);
    key.extend_from_slice(child.as_bytes());
    key
}

pub fn delivery(event: &EventId, endpoint: &EndpointId) -> Vec<u8> {
    [event.as_str().as_bytes(), endpoint.as_str().as_bytes()].concat()
}

pub fn queue(endpoint: &EndpointId, due: UnixMillis, event: &EventId) -> Vec<u8> {
    let mut key = Vec::with_capacity(EndpointId::LEN + 8 + EventId::LEN);
    key.extend_from_slice(endpoint.as_str().as_bytes());
    key.extend_from_slice(&(due.max(0) as u64).to_be_bytes());
    key.extend_from_slice(event.as_str().as_bytes());
    key
}

/// Splits a `queue` key into its due time and event id.
pub fn parse_queue(key: &[u8]) -> Option<(UnixMillis, EventId)> {
    let due = key.get(EndpointId::LEN..EndpointId::LEN + 8)?;
    let due = u64::from_be_bytes(due.try_into().ok()?) as i64;
    let event = std::str::from_utf8(key.get(EndpointId::LEN + 8..)?).ok()?;
    Some((due, EventId::parse(event).ok()?))
}

/// What a queue entry carries, so that a claim needs no read of the delivery record.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueEntry {
    pub merchant: MerchantId,
    /// (attempts made so far, when the event was received); `None` for an entry
    /// written before entries carried them.
    pub progress: Option<(u32, UnixMillis)>,
}

/// Marks an entry that carries its progress: merchant ids never contain 0x00.
const QUEUE_ENTRY_TAG: u8 = 0;
const QUEUE_ENTRY_HEAD: usize = 1 + 4 + 8;

pub fn queue_entry(merchant: &MerchantId, attempts: u32, received_at: UnixMillis) -> Vec<u8> {
    let mut value = Vec::with_capacity(QUEUE_ENTRY_HEAD + merchant.as_str().len());
    value.push(QUEUE_ENTRY_TAG);
    value.extend_from_slice(&attempts.to_be_bytes());
    value.extend_from_slice(&received_at.to_be_bytes());
    value.extend_from_slice(merchant.as_str().as_bytes());
    value
}

pub fn parse_queue_entry(value: &[u8]) -> Option<QueueEntry> {
    let (progress, merchant) = match value.first() {
        Some(&QUEUE_ENTRY_TAG) => {
            let head = value.get(..QUEUE_ENTRY_HEAD)?;
            let attempts = u32::from_be_bytes(head[1..5].try_into().ok()?);
            let received_at = i64::from_be_bytes(head[5..13].try_into().ok()?);
            (Some((attempts, received_at)), &value[QUEUE_ENTRY_HEAD..])
        }
        _ => (None, value),
    };
    let merchant = MerchantId::parse(std::str::from_utf8(merchant).ok()?).ok()?;
    Some(QueueEntry { merchant, progress })
}

pub fn failed(endpoint: &EndpointId, event: &str) -> Vec<u8> {
    [endpoint.as_str().as_bytes(), event.as_bytes()].concat()
}

pub fn attempt(event: &EventId, seq: u64) -> Vec<u8> {
    [event.as_str().as_bytes(), &seq.to_be_bytes()[..]].concat()
}

/// The smallest key strictly greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_round_trip_and_sort_by_due_within_an_endpoint() {
        let ep = EndpointId::generate();
        let a = EventId::generate();
        let b = EventId::generate();
        let early = queue(&ep, 1_000, &b);
        let late = queue(&ep, 2_000, &a);
        assert!(early < late);
        assert_eq!(parse_queue(&late), Some((2_000, a)));
        assert!(late < prefix_end(ep.as_str().as_bytes()));
    }

    #[test]
    fn queue_entries_round_trip_and_entries_of_the_first_layout_still_parse() {
        let merchant = MerchantId::parse("acme").unwrap();
        let entry = queue_entry(&merchant, 7, 1_764_000_000_123);
        assert_eq!(
            parse_queue_entry(&entry),
            Some(QueueEntry {
                merchant: merchant.clone(),
                progress: Some((7, 1_764_000_000_123)),
            })
        );
        assert_eq!(
            parse_queue_entry(b"acme"),
            Some(QueueEntry {
                merchant,
                progress: None
            })
        );
        assert_eq!(parse_queue_entry(&entry[..5]), None, "a cut entry is refused");
        assert_eq!(parse_queue_entry(b""), None);
    }
}
