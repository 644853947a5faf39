//! How records are encoded, and how an event's deliveries are read from the
//! `deliveries` tree, where most of them have no record of their own until their
//! first attempt.
//!
//! Each change to a sled tree copies the node it lands in, and each item stored costs
//! sled memory for as long as it is kept, so the hot path writes as few and as small
//! records as it can: an event gets one [`FanOut`] naming its endpoints instead of one
//! delivery record per endpoint (kept in the event's `fresh` key, which goes once every
//! endpoint has a record of its own), a delivery record keeps the delivery's latest
//! attempt instead of one in the `attempts` tree ([`encode_with_attempt`]; the attempt
//! before it moves there when the next one is recorded), and the records written per
//! event and attempt use postcard (about a third of their JSON size).

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::IVec;

use super::keys;
use crate::domain::{Attempt, AttemptOutcome, Delivery, DeliveryStatus, EndpointId, EventId, MerchantId, UnixMillis};
use crate::store::{Page, StoreError};

/// First byte of a record in the compact layout; a JSON record starts with `{`.
const COMPACT: u8 = 1;
/// First byte of a delivery record that holds the delivery's first attempt, which
/// succeeded (layout 3; read, no longer written).
const WITH_FIRST_ATTEMPT: u8 = 2;
/// First byte of a delivery record that holds the delivery's latest attempt (layout 5).
const WITH_LAST_ATTEMPT: u8 = 3;

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

/// One per event: the value of its `fresh` key while its first attempts wait in
/// memory, which goes once they are all recorded; for an event queued on disk (its
/// lanes were full, or written before layout 6) a record in the `deliveries` tree
/// under the bare event id, so it sorts just before the event's own delivery records.
/// An endpoint listed here whose delivery has no record of its own has a delivery that
/// is pending, untried and due since the event was received: whatever changes it (an
/// attempt, a replay, the endpoint's deletion) writes its record, which from then on
/// wins.
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

/// A delivery as its record holds it.
#[derive(Debug)]
pub struct DeliveryRecord {
    pub delivery: Delivery,
    /// The delivery's latest attempt and its sequence number, when the record holds it
    /// instead of the `attempts` tree. Whatever writes the record over must first move
    /// it there ([`spill_in`]), or it is lost.
    pub attempt: Option<(u64, Attempt)>,
}

/// A delivery that succeeded at its first attempt, with what that attempt adds to it
/// (layout 3).
#[derive(Deserialize)]
struct WithFirstAttempt {
    delivery: Delivery,
    seq: u64,
    duration_ms: u64,
}

/// A delivery with what its latest attempt adds to it: the rest of that attempt is the
/// delivery's `attempts`, `last_attempt_at`, `last_status_code` and `last_error`. `D`
/// is `&Delivery` when written, `Delivery` when read.
#[derive(Serialize, Deserialize)]
struct WithLastAttempt<D> {
    delivery: D,
    seq: u64,
    outcome: AttemptOutcome,
    duration_ms: u64,
}

/// The record of a delivery holding its latest attempt, `attempt`, numbered `seq`: one
/// record instead of two per attempt recorded, and, while a delivery waits for its
/// next retry, one item in the store instead of two. `None` when `attempt` is not the
/// one `delivery` last records, which then needs its own record in the `attempts` tree.
pub fn encode_with_attempt(delivery: &Delivery, seq: u64, attempt: &Attempt) -> Option<Vec<u8>> {
    let same = last_attempt(delivery, attempt.outcome, attempt.duration_ms)? == *attempt;
    let record = WithLastAttempt {
        delivery,
        seq,
        outcome: attempt.outcome,
        duration_ms: attempt.duration_ms,
    };
    same.then(|| postcard::to_extend(&record, vec![WITH_LAST_ATTEMPT]).expect("records serialise to postcard"))
}

/// The attempt a delivery's record says was its latest, with its outcome and duration.
fn last_attempt(delivery: &Delivery, outcome: AttemptOutcome, duration_ms: u64) -> Option<Attempt> {
    Some(Attempt {
        event_id: delivery.event_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        attempt: delivery.attempts,
        attempted_at: delivery.last_attempt_at.filter(|_| delivery.attempts > 0)?,
        outcome,
        status_code: delivery.last_status_code,
        error: delivery.last_error.clone(),
        duration_ms,
    })
}

/// The attempt a delivery that succeeded at its first attempt implies, but for its
/// duration (layout 3, which held nothing else; such a record has no `last_error`).
fn first_attempt(delivery: &Delivery, duration_ms: u64) -> Option<Attempt> {
    let succeeded_first_time = delivery.status == DeliveryStatus::Succeeded && delivery.attempts == 1;
    last_attempt(delivery, AttemptOutcome::Success, duration_ms).filter(|_| succeeded_first_time)
}

/// Reads a delivery record of any layout.
pub fn decode_delivery(bytes: &[u8]) -> Result<DeliveryRecord, StoreError> {
    let undecodable = |e| StoreError::backend("decoding a stored delivery", e);
    let (delivery, seq, attempt) = match bytes.split_first() {
        Some((&WITH_LAST_ATTEMPT, record)) => {
            let record: WithLastAttempt<Delivery> = postcard::from_bytes(record).map_err(undecodable)?;
            let attempt = last_attempt(&record.delivery, record.outcome, record.duration_ms);
            (record.delivery, record.seq, attempt)
        }
        Some((&WITH_FIRST_ATTEMPT, record)) => {
            let record: WithFirstAttempt = postcard::from_bytes(record).map_err(undecodable)?;
            let attempt = first_attempt(&record.delivery, record.duration_ms);
            (record.delivery, record.seq, attempt)
        }
        _ => {
            return Ok(DeliveryRecord {
                delivery: decode(bytes)?,
                attempt: None,
            })
        }
    };
    let attempt = attempt.ok_or_else(|| {
        StoreError::backend(
            "decoding a stored delivery",
            "it holds an attempt the delivery does not record",
        )
    })?;
    Ok(DeliveryRecord {
        delivery,
        attempt: Some((seq, attempt)),
    })
}

impl DeliveryRecord {
    /// The key and record in the `attempts` tree of the attempt this record holds.
    pub fn held_attempt_row(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (seq, attempt) = self.attempt.as_ref()?;
        Some((keys::attempt(&attempt.event_id, *seq), encode_compact(attempt)))
    }
}

/// Moves the attempt a delivery record holds, if any, to the `attempts` tree, before
/// the record is written over.
pub fn spill_in(
    attempts: &TransactionalTree,
    record: &DeliveryRecord,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some((key, value)) = record.held_attempt_row() {
        attempts.insert(key, value)?;
    }
    Ok(())
}

/// One delivery, from its own record or else from its event's fan-out. `get` reads
/// the `deliveries` tree (plain or inside a transaction), `fresh` the event's `fresh`
/// key (where the fan-out of an event whose first attempts wait in memory is kept);
/// `bad` wraps a record that does not decode.
pub fn read_delivery<E>(
    get: impl Fn(&[u8]) -> Result<Option<IVec>, E>,
    fresh: impl Fn(&EventId) -> Result<Option<IVec>, E>,
    bad: impl Fn(StoreError) -> E,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<DeliveryRecord>, E> {
    if let Some(raw) = get(&keys::delivery(event, endpoint))? {
        return decode_delivery(&raw).map(Some).map_err(bad);
    }
    let fan_out = match get(event.as_str().as_bytes())? {
        Some(raw) => Some(raw),
        None => fresh(event)?.filter(|raw| !raw.is_empty()),
    };
    match fan_out {
        Some(raw) => Ok(decode::<FanOut>(&raw)
            .map_err(bad)?
            .implied(event, endpoint)
            .map(|delivery| DeliveryRecord {
                delivery,
                attempt: None,
            })),
        None => Ok(None),
    }
}

/// [`read_delivery`] from the `deliveries` and `fresh` trees.
pub fn read_delivery_from(
    deliveries: &sled::Tree,
    fresh: &sled::Tree,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<Delivery>, StoreError> {
    let get = |key: &[u8]| {
        deliveries
            .get(key)
            .map_err(|e| StoreError::backend("reading a delivery", e))
    };
    Ok(read_delivery(get, |event| fresh_value(fresh, event), |e| e, event, endpoint)?.map(|record| record.delivery))
}

/// [`read_delivery`] inside a transaction on `deliveries`, with the event's `fresh`
/// key as [`fresh_value`] read it before the transaction: sled deadlocks on a plain
/// read inside a transaction, and the caller holds the lock that every removal of a
/// `fresh` key holds (`queue_writes`), so the value read is still the key's.
pub fn read_delivery_in(
    deliveries: &TransactionalTree,
    fresh: Option<&IVec>,
    event: &EventId,
    endpoint: &EndpointId,
) -> Result<Option<DeliveryRecord>, ConflictableTransactionError<StoreError>> {
    let get = |key: &[u8]| deliveries.get(key).map_err(Into::into);
    read_delivery(
        get,
        |_| Ok(fresh.cloned()),
        ConflictableTransactionError::Abort,
        event,
        endpoint,
    )
}

/// The value of an event's `fresh` key: its fan-out (layout 6), empty (layouts 4 and
/// 5, whose fan-out is in the `deliveries` tree), or none.
pub fn fresh_value(fresh: &sled::Tree, event: &EventId) -> Result<Option<IVec>, StoreError> {
    fresh
        .get(event.as_str())
        .map_err(|e| StoreError::backend("reading a fresh key", e))
}

/// One page of an event's attempts, in the order they were recorded, after the one
/// numbered `after`: those in the `attempts` tree (`stored`, in key order, which is
/// that order) merged with those its delivery records hold (`held`). An attempt found
/// in both (moved out by a write a crash cut short) counts once.
pub fn page_of_attempts(
    stored: impl Iterator<Item = Result<(u64, Attempt), StoreError>>,
    mut held: Vec<(u64, Attempt)>,
    after: Option<u64>,
    limit: usize,
) -> Result<Page<Attempt>, StoreError> {
    held.retain(|(seq, _)| after.is_none_or(|after| *seq > after));
    // Largest first, so the next one to merge is at the end.
    held.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let mut merged: Vec<(u64, Attempt)> = Vec::new();
    let mut stored = stored.peekable();
    while merged.len() <= limit {
        let next_stored = match stored.peek() {
            Some(Ok((seq, _))) => Some(*seq),
            Some(Err(_)) => return Err(stored.next().and_then(Result::err).expect("peeked an error")),
            None => None,
        };
        let take_held = match (held.last(), next_stored) {
            (Some((h, _)), Some(s)) => *h <= s,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let (seq, attempt) = if take_held {
            held.pop().expect("looked at it")
        } else {
            stored.next().expect("peeked it")?
        };
        if merged.last().is_none_or(|(last, _)| *last != seq) {
            merged.push((seq, attempt));
        }
    }
    let next = limit
        .checked_sub(1)
        .filter(|_| merged.len() > limit)
        .map(|last| merged[last].0.to_string());
    merged.truncate(limit);
    Ok(Page {
        items: merged.into_iter().map(|(_, attempt)| attempt).collect(),
        next,
    })
}

/// The attempts held by an event's delivery records.
pub fn held_attempts(deliveries: &sled::Tree, event: &EventId) -> Result<Vec<(u64, Attempt)>, StoreError> {
    let mut held = Vec::new();
    for entry in deliveries.scan_prefix(event.as_str()) {
        let (_, raw) = entry.map_err(|e| StoreError::backend("scanning deliveries", e))?;
        if matches!(raw.first(), Some(&WITH_FIRST_ATTEMPT | &WITH_LAST_ATTEMPT)) {
            held.extend(decode_delivery(&raw)?.attempt);
        }
    }
    Ok(held)
}

/// Every delivery of an event, ordered by endpoint id, from the `deliveries` tree
/// and the event's `fresh` key.
pub fn list_deliveries_from(
    deliveries: &sled::Tree,
    fresh: &sled::Tree,
    event: &EventId,
) -> Result<Vec<Delivery>, StoreError> {
    collect_deliveries(event, deliveries.scan_prefix(event.as_str()), || {
        fresh_value(fresh, event)
    })
}

/// Every delivery of an event, ordered by endpoint id, from a scan of the event's
/// prefix of the `deliveries` tree, and its `fresh` key when the scan finds no fan-out.
fn collect_deliveries(
    event: &EventId,
    entries: impl Iterator<Item = sled::Result<(IVec, IVec)>>,
    fresh: impl FnOnce() -> Result<Option<IVec>, StoreError>,
) -> Result<Vec<Delivery>, StoreError> {
    let mut fan_out = None;
    let mut deliveries = Vec::new();
    for entry in entries {
        let (key, raw) = entry.map_err(|e| StoreError::backend("scanning deliveries", e))?;
        if key.len() == EventId::LEN {
            fan_out = Some(decode::<FanOut>(&raw)?);
        } else {
            deliveries.push(decode_delivery(&raw)?.delivery);
        }
    }
    if fan_out.is_none() {
        if let Some(raw) = fresh()?.filter(|raw| !raw.is_empty()) {
            fan_out = Some(decode::<FanOut>(&raw)?);
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
    use crate::domain::Event;

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

    fn first_success(delivery: &mut Delivery) -> Attempt {
        delivery.status = DeliveryStatus::Succeeded;
        delivery.attempts = 1;
        delivery.next_attempt_at = None;
        delivery.last_attempt_at = Some(1_764_000_000_050);
        delivery.last_status_code = Some(204);
        Attempt {
            event_id: delivery.event_id.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            attempt: 1,
            attempted_at: 1_764_000_000_050,
            outcome: AttemptOutcome::Success,
            status_code: Some(204),
            error: None,
            duration_ms: 7,
        }
    }

    #[test]
    fn a_delivery_record_holds_its_latest_attempt_whatever_its_outcome_and_only_that() {
        let merchant = MerchantId::parse("acme").unwrap();
        let mut delivery = Delivery::new(EventId::generate(), EndpointId::generate(), merchant, 1_764_000_000_000);
        let held_back = |record: &[u8]| {
            let back = decode_delivery(record).unwrap();
            let (seq, attempt) = back.attempt.expect("the attempt comes back");
            (serde_json::to_value(&back.delivery).unwrap(), seq, attempt)
        };
        let attempt = first_success(&mut delivery);
        let record = encode_with_attempt(&delivery, 42, &attempt).expect("held");
        assert!(
            record.len() < encode_compact(&delivery).len() + 5,
            "{} bytes",
            record.len()
        );
        assert_eq!(
            held_back(&record),
            (serde_json::to_value(&delivery).unwrap(), 42, attempt.clone())
        );
        // A plain record holds no attempt.
        assert!(decode_delivery(&encode_compact(&delivery)).unwrap().attempt.is_none());

        // A failed third attempt, waiting for its retry.
        let mut retrying = delivery.clone();
        retrying.status = DeliveryStatus::Pending;
        retrying.attempts = 3;
        retrying.next_attempt_at = Some(1_764_000_009_000);
        retrying.last_status_code = Some(503);
        retrying.last_error = Some("HTTP 503".into());
        let third = Attempt {
            attempt: 3,
            outcome: AttemptOutcome::HttpError,
            status_code: Some(503),
            error: Some("HTTP 503".into()),
            duration_ms: 12,
            ..attempt.clone()
        };
        let record = encode_with_attempt(&retrying, 77, &third).expect("held");
        assert_eq!(
            held_back(&record),
            (serde_json::to_value(&retrying).unwrap(), 77, third.clone())
        );
        let mut refused = retrying.clone();
        refused.last_status_code = None;
        refused.last_error = Some("connection refused".into());
        let connect = Attempt {
            outcome: AttemptOutcome::ConnectError,
            status_code: None,
            error: Some("connection refused".into()),
            ..third.clone()
        };
        let record = encode_with_attempt(&refused, 78, &connect).expect("held");
        assert_eq!(held_back(&record).2, connect);

        // An attempt the record does not describe keeps a record of its own.
        let earlier = Attempt {
            attempt: 2,
            ..third.clone()
        };
        assert!(encode_with_attempt(&retrying, 1, &earlier).is_none(), "not the latest");
        let other = Attempt {
            error: Some("odd".into()),
            ..third.clone()
        };
        assert!(encode_with_attempt(&retrying, 1, &other).is_none(), "not implied");
        let elsewhere = Attempt {
            endpoint_id: EndpointId::generate(),
            ..third.clone()
        };
        assert!(
            encode_with_attempt(&retrying, 1, &elsewhere).is_none(),
            "another delivery"
        );
        let mut untried = retrying.clone();
        untried.attempts = 0;
        assert!(encode_with_attempt(&untried, 1, &third).is_none(), "never tried");
        assert!(
            decode_delivery(&record[..record.len() - 3]).is_err(),
            "a cut record is an error"
        );
    }

    #[test]
    fn a_record_of_layout_3_still_gives_back_its_first_attempt() {
        let merchant = MerchantId::parse("acme").unwrap();
        let mut delivery = Delivery::new(EventId::generate(), EndpointId::generate(), merchant, 1_764_000_000_000);
        let attempt = first_success(&mut delivery);
        // Layout 3 wrote the delivery, the sequence number and the duration.
        let record = postcard::to_extend(&(&delivery, 9_u64, attempt.duration_ms), vec![WITH_FIRST_ATTEMPT]).unwrap();
        let back = decode_delivery(&record).unwrap();
        assert_eq!(back.attempt, Some((9, attempt)));
        assert_eq!(
            serde_json::to_value(&back.delivery).unwrap(),
            serde_json::to_value(&delivery).unwrap()
        );
        let mut failed = delivery.clone();
        failed.status = DeliveryStatus::Failed;
        let record = postcard::to_extend(&(&failed, 9_u64, 7_u64), vec![WITH_FIRST_ATTEMPT]).unwrap();
        assert!(decode_delivery(&record).is_err(), "layout 3 held successes only");
    }

    #[test]
    fn attempts_page_in_order_merged_from_both_places_each_once() {
        let event = EventId::generate();
        let endpoint = EndpointId::generate();
        let made = |seq: u64| {
            (
                seq,
                Attempt {
                    event_id: event.clone(),
                    endpoint_id: endpoint.clone(),
                    attempt: seq as u32,
                    attempted_at: seq as i64,
                    outcome: AttemptOutcome::Success,
                    status_code: Some(200),
                    error: None,
                    duration_ms: 1,
                },
            )
        };
        let stored_seqs = [2_u64, 3, 5, 8];
        // 5 is in both places: moved out by a write that a crash cut short.
        let held_seqs = [9_u64, 1, 5];
        let page = |after: Option<u64>, limit: usize| {
            let stored = stored_seqs
                .iter()
                .filter(|seq| after.is_none_or(|after| **seq > after))
                .map(|seq| Ok(made(*seq)));
            let held = held_seqs.iter().map(|seq| made(*seq)).collect();
            let page = page_of_attempts(stored, held, after, limit).unwrap();
            let seqs: Vec<u64> = page.items.iter().map(|a| a.attempted_at as u64).collect();
            (seqs, page.next)
        };
        assert_eq!(page(None, 10), (vec![1, 2, 3, 5, 8, 9], None));
        assert_eq!(page(None, 3), (vec![1, 2, 3], Some("3".to_owned())));
        assert_eq!(page(Some(3), 3), (vec![5, 8, 9], None));
        assert_eq!(page(Some(3), 2), (vec![5, 8], Some("8".to_owned())));
        assert_eq!(page(Some(8), 2), (vec![9], None));
        assert_eq!(page(Some(9), 2), (vec![], None));
        assert_eq!(page(None, 0), (vec![], None));
        let failing = std::iter::once(Err(StoreError::backend("scanning attempts", "disk gone")));
        assert!(page_of_attempts(failing, vec![made(1)], None, 10).is_err());
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
        let no_fresh = |_: &EventId| Ok(None);

        let implied = read_delivery(get, no_fresh, |e| e, &event, &a)
            .unwrap()
            .unwrap()
            .delivery;
        assert_eq!(
            (implied.status, implied.attempts, implied.next_attempt_at),
            (DeliveryStatus::Pending, 0, Some(1_000))
        );
        let own = read_delivery(get, no_fresh, |e| e, &event, &b)
            .unwrap()
            .unwrap()
            .delivery;
        assert_eq!(own.status, DeliveryStatus::Succeeded);
        assert!(
            read_delivery(get, no_fresh, |e| e, &event, &c).unwrap().is_none(),
            "not fanned out to"
        );

        let all = collect_deliveries(
            &event,
            tree.iter().map(|(k, v)| Ok((IVec::from(k.as_slice()), v.clone()))),
            || Ok(None),
        )
        .unwrap();
        let mut expected = vec![
            (a.clone(), DeliveryStatus::Pending),
            (b.clone(), DeliveryStatus::Succeeded),
        ];
        expected.sort_by(|x, y| x.0.cmp(&y.0));
        let found: Vec<_> = all.iter().map(|d| (d.endpoint_id.clone(), d.status)).collect();
        assert_eq!(found, expected);

        // Layout 6: the fan-out of an event with first attempts in memory is its `fresh`
        // key's value, not a record of the `deliveries` tree; an empty value is layout 5's.
        let records: std::collections::BTreeMap<Vec<u8>, IVec> =
            tree.into_iter().filter(|(k, _)| k.len() != EventId::LEN).collect();
        let get = |key: &[u8]| Ok::<_, StoreError>(records.get(key).cloned());
        let fresh = |_: &EventId| Ok(Some(IVec::from(encode_compact(&fan_out))));
        let implied = read_delivery(get, fresh, |e| e, &event, &a).unwrap().unwrap().delivery;
        assert_eq!(implied.status, DeliveryStatus::Pending);
        let empty = |_: &EventId| Ok(Some(IVec::from(&[][..])));
        assert!(read_delivery(get, empty, |e| e, &event, &a).unwrap().is_none());
        let all = collect_deliveries(
            &event,
            records.iter().map(|(k, v)| Ok((IVec::from(k.as_slice()), v.clone()))),
            || Ok(Some(IVec::from(encode_compact(&fan_out)))),
        )
        .unwrap();
        let found: Vec<_> = all.iter().map(|d| (d.endpoint_id.clone(), d.status)).collect();
        assert_eq!(found, expected);
    }
}
