//! How records are encoded, and how an event's deliveries are read from the
//! `deliveries` tree, where most of them have no record of their own until their
//! first attempt.
//!
//! Each change to a sled tree copies the node it lands in, so the hot path writes as
//! few and as small records as it can: an event gets one [`FanOut`] record naming its
//! endpoints instead of one delivery record per endpoint, and the records written per
//! event and attempt use postcard (about a third of their JSON size).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::IVec;

use super::keys;
use crate::domain::{Delivery, EndpointId, EventId, MerchantId, UnixMillis};
use crate::store::StoreError;

/// First byte of a record in the compact layout; a JSON record starts with `{`.
const COMPACT: u8 = 1;

/// JSON: admin tokens and audit entries, whose types skip absent fields, which a
/// format that does not describe itself cannot read back.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise to JSON")
}

/// Postcard, for the records written per event and per attempt. Only for types
/// without `skip_serializing_if`, `flatten` or untagged enums.
pub fn encode_compact<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![COMPACT]).expect("records serialise to postcard")
}

/// Reads a record of either layout (layout 1 data directories hold JSON only).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&COMPACT, record)) => {
            postcard::from_bytes(record).map_err(|e| StoreError::backend("decoding a stored record", e))
        }
        _ => serde_json::from_slice(bytes).map_err(|e| StoreError::backend("decoding a stored record", e)),
    }
}

/// One per event, in the `deliveries` tree under the bare event id, so it sorts just
/// before the event's own delivery records. An endpoint listed here whose delivery
/// has no record of its own has a delivery that is pending, untried and due since the
/// event was received: whatever changes it (an attempt, a replay, the endpoint's
/// deletion) writes its record, which from then on wins.
#[derive(Debug, Serialize, Deserialize)]
pub struct FanOut {
    pub merchant_id: MerchantId,
    pub received_at: UnixMillis,
    pub endpoints: Vec<EndpointId>,
}

impl FanOut {
    fn implied(&self, event: &EventId, endpoint: &EndpointId) -> Option<Delivery> {
        self.endpoints.contains(endpoint).then(|| {
            Delivery::new(
                event.clone(),
                endpoint.clone(),
                self.merchant_id.clone(),
                self.received_at,
            )
        })
    }
}

/// One delivery, from its own record or else from its event's fan-out. `get` reads
/// the `deliveries` tree (plain or inside a transaction); `bad` wraps a record that
/// does not decode.
pub fn read_delivery<E>(
    get: impl Fn(&[u8]) -> Result<Option<IVec>, E>,
    bad: impl Fn(StoreError) -> E,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<Delivery>, E> {
    if let Some(raw) = get(&keys::delivery(event, endpoint))? {
        return decode(&raw).map(Some).map_err(bad);
    }
    match get(event.as_str().as_bytes())? {
        Some(raw) => Ok(decode::<FanOut>(&raw).map_err(bad)?.implied(event, endpoint)),
        None => Ok(None),
    }
}

/// [`read_delivery`] from the `deliveries` tree.
pub fn read_delivery_from(
    deliveries: &sled::Tree,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<Delivery>, StoreError> {
    let get = |key: &[u8]| {
        deliveries
            .get(key)
            .map_err(|e| StoreError::backend("reading a delivery", e))
    };
    read_delivery(get, |e| e, event, endpoint)
}

/// [`read_delivery`] inside a transaction.
pub fn read_delivery_in(
    deliveries: &TransactionalTree,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<Delivery>, ConflictableTransactionError<StoreError>> {
    let get = |key: &[u8]| deliveries.get(key).map_err(Into::into);
    read_delivery(get, ConflictableTransactionError::Abort, event, endpoint)
}

/// Every delivery of an event, ordered by endpoint id, from the `deliveries` tree.
pub fn list_deliveries_from(deliveries: &sled::Tree, event: &EventId) -> Result<Vec<Delivery>, StoreError> {
    collect_deliveries(event, deliveries.scan_prefix(event.as_str()))
}

/// Every delivery of an event, ordered by endpoint id, from a scan of the event's
/// prefix of the `deliveries` tree.
fn collect_deliveries(
    event: &EventId,
    entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
) -> Result<Vec<Delivery>, StoreError> {
    let mut fan_out = None;
    let mut deliveries = Vec::new();
    for entry in entries {
        let (key, raw) = entry.map_err(|e| StoreError::backend("scanning deliveries", e))?;
        if key.len() == EventId::LEN {
            fan_out = Some(decode::<FanOut>(&raw)?);
        } else {
            deliveries.push(decode::<Delivery>(&raw)?);
        }
    }
    if let Some(fan_out) = fan_out {
        for endpoint in &fan_out.endpoints {
            if !deliveries.iter().any(|d| &d.endpoint_id == endpoint) {
                deliveries.extend(fan_out.implied(event, endpoint));
            }
        }
        deliveries.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
    }
    Ok(deliveries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attempt, AttemptOutcome, DeliveryStatus, Event};

    #[test]
    fn compact_records_round_trip_and_json_records_still_decode() {
        let event = EventId::generate();
        let endpoint = EndpointId::generate();
        let merchant = MerchantId::parse("acme").unwrap();
        let mut delivery = Delivery::new(event.clone(), endpoint.clone(), merchant.clone(), 1_764_000_000_000);
        delivery.last_error = Some("connection refused".into());
        delivery.last_status_code = Some(503);
        let compact = encode_compact(&delivery);
        let json = encode(&delivery);
        assert!(
            compact.len() * 2 < json.len(),
            "{} vs {} bytes",
            compact.len(),
            json.len()
        );
        for bytes in [&compact, &json] {
            let back: Delivery = decode(bytes).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                serde_json::to_value(&delivery).unwrap()
            );
        }
        let attempt = Attempt {
            event_id: event.clone(),
            endpoint_id: endpoint,
            attempt: 3,
            attempted_at: 1_764_000_000_001,
            outcome: AttemptOutcome::Timeout,
            status_code: None,
            error: Some("timed out".into()),
            duration_ms: 10_000,
        };
        let back: Attempt = decode(&encode_compact(&attempt)).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&attempt).unwrap()
        );
        let record = Event {
            id: event,
            merchant_id: merchant,
            event_type: Some("checkout_session.completed".into()),
            idempotency_key: None,
            received_at: 5,
            payload: Default::default(),
        };
        let back: Event = decode(&encode_compact(&record)).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&record).unwrap()
        );
        assert!(
            decode::<Delivery>(&compact[..compact.len() / 2]).is_err(),
            "a cut record is an error"
        );
    }

    #[test]
    fn a_fan_out_implies_pending_deliveries_until_each_has_a_record_of_its_own() {
        let event = EventId::generate();
        let (a, b, c) = (EndpointId::generate(), EndpointId::generate(), EndpointId::generate());
        let merchant = MerchantId::parse("acme").unwrap();
        let fan_out = FanOut {
            merchant_id: merchant.clone(),
            received_at: 1_000,
            endpoints: vec![b.clone(), a.clone()],
        };
        let mut attempted = Delivery::new(event.clone(), b.clone(), merchant, 1_000);
        attempted.status = DeliveryStatus::Succeeded;
        attempted.attempts = 1;
        attempted.next_attempt_at = None;
        let tree: std::collections::BTreeMap<Vec<u8>, IVec> = [
            (event.as_str().as_bytes().to_vec(), IVec::from(encode_compact(&fan_out))),
            (keys::delivery(&event, &b), IVec::from(encode_compact(&attempted))),
        ]
        .into_iter()
        .collect();
        let get = |key: &[u8]| Ok::<_, StoreError>(tree.get(key).cloned());

        let implied = read_delivery(get, |e| e, &event, &a).unwrap().unwrap();
        assert_eq!(
            (implied.status, implied.attempts, implied.next_attempt_at),
            (DeliveryStatus::Pending, 0, Some(1_000))
        );
        let own = read_delivery(get, |e| e, &event, &b).unwrap().unwrap();
        assert_eq!(own.status, DeliveryStatus::Succeeded);
        assert!(
            read_delivery(get, |e| e, &event, &c).unwrap().is_none(),
            "not fanned out to"
        );

        let all = collect_deliveries(
            &event,
            tree.iter().map(|(k, v)| Ok((IVec::from(k.as_slice()), v.clone()))),
        )
        .unwrap();
        let mut expected = vec![(a, DeliveryStatus::Pending), (b, DeliveryStatus::Succeeded)];
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        let found: Vec<_> = all.iter().map(|d| (d.endpoint_id.clone(), d.status)).collect();
        assert_eq!(found, expected);
    }
}
