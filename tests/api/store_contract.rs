//! The storage contract, run against every backend (today: sled). Each check takes a
//! fresh, empty store; a new backend adds one `open_*` function and one test per check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hookrelay::domain::{AdminToken, AuditEntry, TokenHash, TokenName, TokenScope};
use hookrelay::domain::{
    Attempt, AttemptOutcome, DeliveryStatus, Endpoint, EndpointId, EndpointSecret, EndpointUrl, Event, EventId,
    EventTypeFilter, IdempotencyKey, IngestToken, Merchant, MerchantId,
};
use hookrelay::secrets::{SecretCipher, SecretKey};
use hookrelay::store::{AcceptOutcome, Claim, Disposition, PageRequest, SledStore, Store, StoreError};

const LEASE: Duration = Duration::from_secs(60);
/// Beyond this far ahead a schedule counts as written under a clock that went back.
const AHEAD: Duration = Duration::from_secs(3_600);

async fn open_sled() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 8 << 20, cipher()).await.unwrap();
    (Arc::new(store), dir)
}

/// One fixed key, so a reopened store reads what it wrote.
fn cipher() -> SecretCipher {
    SecretCipher::new(&SecretKey::from_bytes([7; 32]))
}

fn merchant(id: &str) -> Merchant {
    Merchant {
        id: MerchantId::parse(id).unwrap(),
        name: None,
        ingest_token: IngestToken::generate(),
        created_at: 1,
        verification: None,
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
        retired_secrets: Vec::new(),
        enabled: true,
        created_at: 1,
        updated_at: 1,
    }
}

fn event(merchant: &Merchant, key: Option<&str>, received_at: i64) -> Event {
    Event {
        id: EventId::generate(),
        merchant_id: merchant.id.clone(),
        event_type: Some("checkout_session.completed".into()),
        idempotency_key: key.map(|k| IdempotencyKey::parse(k).unwrap()),
        received_at,
        payload: Bytes::from_static(br#"{"type":"checkout_session.completed"}"#),
    }
}

fn attempt(claim: &Claim, outcome: AttemptOutcome) -> Attempt {
    Attempt {
        event_id: claim.event_id.clone(),
        endpoint_id: claim.endpoint_id.clone(),
        attempt: claim.attempt,
        attempted_at: claim.due,
        outcome,
        status_code: Some(500),
        error: None,
        duration_ms: 1,
    }
}

/// Claims the one delivery of the endpoint due at `now`.
async fn claim_one(store: &dyn Store, endpoint: &EndpointId, now: i64) -> Claim {
    let mut claims = store.claim_due(endpoint, now, 1, LEASE, AHEAD).await.unwrap().claims;
    assert_eq!(claims.len(), 1, "one delivery due at {now}: {claims:?}");
    claims.remove(0)
}

/// Records that the claimed attempt succeeded.
async fn succeed(store: &dyn Store, claim: &Claim) {
    let attempt = attempt(claim, AttemptOutcome::Success);
    store
        .complete_attempt(claim, &attempt, Disposition::Succeeded)
        .await
        .unwrap();
}

/// A merchant with one endpoint, stored.
async fn seeded(store: &dyn Store) -> (Merchant, Endpoint) {
    let m = merchant("m1");
    store.create_merchant(&m).await.unwrap();
    let e = endpoint(&m);
    store.create_endpoint(&e, 5).await.unwrap();
    (m, e)
}

async fn merchants_are_unique_and_page_in_id_order(store: &dyn Store) {
    for id in ["c", "a", "b"] {
        store.create_merchant(&merchant(id)).await.unwrap();
    }
    assert!(matches!(
        store.create_merchant(&merchant("a")).await,
        Err(StoreError::AlreadyExists)
    ));
    let first = store
        .list_merchants(PageRequest { after: None, limit: 2 })
        .await
        .unwrap();
    let ids: Vec<_> = first.items.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(ids, ["a", "b"]);
    let rest = store
        .list_merchants(PageRequest {
            after: first.next,
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].id.as_str(), "c");
    assert!(rest.next.is_none());
}

async fn the_endpoint_limit_holds(store: &dyn Store) {
    let m = merchant("m1");
    store.create_merchant(&m).await.unwrap();
    for _ in 0..2 {
        store.create_endpoint(&endpoint(&m), 2).await.unwrap();
    }
    assert!(matches!(
        store.create_endpoint(&endpoint(&m), 2).await,
        Err(StoreError::LimitReached(2))
    ));
    let orphan = endpoint(&merchant("nobody"));
    assert!(matches!(
        store.create_endpoint(&orphan, 2).await,
        Err(StoreError::NotFound)
    ));
}

async fn an_accepted_event_is_claimable_once_and_deduplicated(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, Some("provider-1"), 1_000);
    let outcome = store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    assert_eq!(
        outcome,
        AcceptOutcome::Accepted {
            event_id: ev.id.clone(),
            deliveries: 1
        }
    );
    let again = store
        .accept_event(&event(&m, Some("provider-1"), 1_001), std::slice::from_ref(&e.id))
        .await
        .unwrap();
    assert_eq!(
        again,
        AcceptOutcome::Duplicate {
            event_id: ev.id.clone()
        }
    );
    assert_eq!(store.queue_depth().await.unwrap(), 1);

    let claimed = store.claim_due(&e.id, 1_000, 10, LEASE, AHEAD).await.unwrap();
    assert_eq!(claimed.claims.len(), 1);
    assert_eq!(claimed.claims[0].attempt, 1);
    assert_eq!(&claimed.claims[0].payload[..], &ev.payload[..]);
    let second = store.claim_due(&e.id, 1_000, 10, LEASE, AHEAD).await.unwrap();
    assert!(second.claims.is_empty(), "a leased delivery is not handed out twice");
}

/// Ingests arriving together (a backend may write them in one batch): one event per
/// idempotency key is stored, every other names it, whichever came first.
async fn concurrent_events_are_each_stored_once_per_key(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let events: Vec<Event> = (0..200)
        .map(|n| event(&m, Some(&format!("key-{}", n % 50)), 1_000 + n))
        .collect();
    let outcomes = futures_util::future::join_all(
        events
            .iter()
            .map(|ev| store.accept_event(ev, std::slice::from_ref(&e.id))),
    )
    .await;
    let mut winners = std::collections::HashMap::new();
    for (ev, outcome) in events.iter().zip(&outcomes) {
        if let AcceptOutcome::Accepted { event_id, deliveries } = outcome.as_ref().unwrap() {
            assert_eq!((event_id, *deliveries), (&ev.id, 1));
            let key = ev.idempotency_key.as_ref().unwrap().as_str().to_owned();
            assert!(
                winners.insert(key, ev.id.clone()).is_none(),
                "two events stored for one key"
            );
        }
    }
    assert_eq!(winners.len(), 50);
    for (ev, outcome) in events.iter().zip(outcomes) {
        let winner = &winners[ev.idempotency_key.as_ref().unwrap().as_str()];
        match outcome.unwrap() {
            AcceptOutcome::Accepted { event_id, .. } => assert_eq!(&event_id, winner),
            AcceptOutcome::Duplicate { event_id } => assert_eq!(&event_id, winner),
        }
    }
    assert_eq!(store.queue_depth().await.unwrap(), 50);
    for id in winners.values() {
        let stored = store.get_event(&m.id, id).await.unwrap().expect("stored");
        assert_eq!(&stored.payload[..], &events[0].payload[..]);
    }
}

/// Attempts ending together (a backend may record them in one batch) are each
/// recorded and each move their own delivery on.
async fn concurrent_attempts_are_each_recorded(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let events: Vec<Event> = (0..100).map(|n| event(&m, None, 1_000 + n)).collect();
    for ev in &events {
        store.accept_event(ev, std::slice::from_ref(&e.id)).await.unwrap();
    }
    let claims = store.claim_due(&e.id, 2_000, 100, LEASE, AHEAD).await.unwrap().claims;
    assert_eq!(claims.len(), 100);
    // Even event ids succeed, odd ones are rescheduled.
    let results = futures_util::future::join_all(claims.iter().enumerate().map(|(n, claim)| {
        let (outcome, next) = if n % 2 == 0 {
            (AttemptOutcome::Success, Disposition::Succeeded)
        } else {
            (AttemptOutcome::HttpError, Disposition::RetryAt(5_000 + n as i64))
        };
        async move { store.complete_attempt(claim, &attempt(claim, outcome), next).await }
    }))
    .await;
    assert!(results.iter().all(Result::is_ok));
    for (n, claim) in claims.iter().enumerate() {
        let d = store.get_delivery(&claim.event_id, &e.id).await.unwrap().unwrap();
        let expected = if n % 2 == 0 {
            (DeliveryStatus::Succeeded, None)
        } else {
            (DeliveryStatus::Pending, Some(5_000 + n as i64))
        };
        assert_eq!((d.status, d.next_attempt_at, d.attempts), (expected.0, expected.1, 1));
        let attempts = store
            .list_attempts(&claim.event_id, PageRequest { after: None, limit: 10 })
            .await
            .unwrap();
        assert_eq!(attempts.items.len(), 1);
    }
    assert_eq!(store.queue_depth().await.unwrap(), 50);
    // The rescheduled ones are due again at their new time, and only then.
    assert!(store
        .claim_due(&e.id, 4_999, 100, LEASE, AHEAD)
        .await
        .unwrap()
        .claims
        .is_empty());
    assert_eq!(
        store
            .claim_due(&e.id, 6_000, 100, LEASE, AHEAD)
            .await
            .unwrap()
            .claims
            .len(),
        50
    );
}

/// Reads of merchants and endpoint lists (which a backend may cache) see every change
/// as soon as the change returned.
async fn settings_reads_see_every_change(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    assert_eq!(store.list_endpoints(&m.id).await.unwrap().len(), 1);
    assert!(store.get_merchant(&m.id).await.unwrap().unwrap().name.is_none());

    let second = endpoint(&m);
    store.create_endpoint(&second, 5).await.unwrap();
    assert_eq!(store.list_endpoints(&m.id).await.unwrap().len(), 2);

    let mut changed = second.clone();
    changed.enabled = false;
    store.update_endpoint(&changed).await.unwrap();
    let listed = store.list_endpoints(&m.id).await.unwrap();
    assert!(!listed.iter().find(|x| x.id == second.id).unwrap().enabled);

    let update = hookrelay::domain::MerchantUpdate {
        name: Some(Some("renamed".into())),
        ..Default::default()
    };
    store.update_merchant(&m.id, &update).await.unwrap();
    assert_eq!(
        store.get_merchant(&m.id).await.unwrap().unwrap().name.as_deref(),
        Some("renamed")
    );

    assert!(store.delete_endpoint(&m.id, &e.id).await.unwrap());
    let listed = store.list_endpoints(&m.id).await.unwrap();
    assert_eq!(listed.iter().map(|x| &x.id).collect::<Vec<_>>(), [&second.id]);

    assert!(store.delete_merchant(&m.id).await.unwrap());
    assert!(store.get_merchant(&m.id).await.unwrap().is_none());
    assert!(store.list_endpoints(&m.id).await.unwrap().is_empty());
}

async fn nothing_is_claimed_before_it_is_due(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    store
        .accept_event(&event(&m, None, 5_000), std::slice::from_ref(&e.id))
        .await
        .unwrap();
    let early = store.claim_due(&e.id, 4_999, 10, LEASE, AHEAD).await.unwrap();
    assert!(early.claims.is_empty());
    assert_eq!(early.next_due, Some(5_000));
}

async fn a_schedule_beyond_the_horizon_is_due_now(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    // Written while the clock was ten days ahead.
    let far = 10 * 86_400_000;
    let ev = event(&m, None, far);
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    let near = event(&m, None, 2_000);
    store.accept_event(&near, std::slice::from_ref(&e.id)).await.unwrap();
    let claimed = store.claim_due(&e.id, 1_000, 10, LEASE, AHEAD).await.unwrap();
    let ids: Vec<&EventId> = claimed.claims.iter().map(|c| &c.event_id).collect();
    assert_eq!(ids, [&ev.id], "the far one is due, the near one waits for its time");
    assert_eq!(claimed.next_due, Some(2_000));
}

async fn a_failed_attempt_is_rescheduled_then_succeeds(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, None, 1_000);
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    let claim = claim_one(store, &e.id, 1_000).await;
    store
        .complete_attempt(
            &claim,
            &attempt(&claim, AttemptOutcome::HttpError),
            Disposition::RetryAt(2_000),
        )
        .await
        .unwrap();

    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at, d.last_status_code),
        (DeliveryStatus::Pending, 1, Some(2_000), Some(500))
    );
    assert!(store
        .claim_due(&e.id, 1_999, 1, LEASE, AHEAD)
        .await
        .unwrap()
        .claims
        .is_empty());

    let retry = claim_one(store, &e.id, 2_000).await;
    assert_eq!(retry.attempt, 2);
    succeed(store, &retry).await;
    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at),
        (DeliveryStatus::Succeeded, 2, None)
    );
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    let attempts = store
        .list_attempts(&ev.id, PageRequest { after: None, limit: 10 })
        .await
        .unwrap();
    assert_eq!(attempts.items.iter().map(|a| a.attempt).collect::<Vec<_>>(), [1, 2]);
}

async fn failed_deliveries_are_replayed_and_recovered(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, None, EventId::generate().created_ms());
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    let claim = claim_one(store, &e.id, ev.received_at).await;
    store
        .complete_attempt(&claim, &attempt(&claim, AttemptOutcome::Timeout), Disposition::Failed)
        .await
        .unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 0);

    // A `since` after the event recovers nothing; one before it recovers the delivery.
    let later = ev.received_at + 60_000;
    assert_eq!(store.recover_endpoint(&m.id, &e.id, later, later).await.unwrap(), 0);
    let now = ev.received_at + 1;
    assert_eq!(
        store
            .recover_endpoint(&m.id, &e.id, ev.received_at - 1, now)
            .await
            .unwrap(),
        1
    );
    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!(
        (d.status, d.attempts, d.next_attempt_at),
        (DeliveryStatus::Pending, 0, Some(now))
    );
    assert_eq!(store.queue_depth().await.unwrap(), 1);

    // Replaying a pending delivery moves it, it does not duplicate it.
    let full = store.get_event(&m.id, &ev.id).await.unwrap().unwrap();
    assert_eq!(
        store
            .replay_event(&full, std::slice::from_ref(&e.id), now + 5)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    let claims = store.claim_due(&e.id, now + 5, 10, LEASE, AHEAD).await.unwrap().claims;
    assert_eq!(claims.len(), 1);
}

/// Whatever puts a delivery into the queue ahead of one in flight (an event received
/// earlier but stored later, a retry, a replay, a recovery), the next claim finds it.
async fn a_delivery_queued_ahead_of_one_in_flight_is_claimed(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let endpoint = std::slice::from_ref(&e.id);
    let now = 5_000;
    let claim_all = || async { store.claim_due(&e.id, now, 10, LEASE, AHEAD).await.unwrap().claims };
    let later = event(&m, None, 2_000);
    store.accept_event(&later, endpoint).await.unwrap();
    let in_flight = claim_one(store, &e.id, now).await;
    assert_eq!(in_flight.event_id, later.id);
    assert!(claim_all().await.is_empty(), "the one queued is in flight");

    let earlier = event(&m, None, 1_000);
    store.accept_event(&earlier, endpoint).await.unwrap();
    let first = claim_one(store, &e.id, now).await;
    assert_eq!(
        (&first.event_id, first.due),
        (&earlier.id, 1_000),
        "stored later, received earlier"
    );

    let failed = attempt(&first, AttemptOutcome::HttpError);
    store
        .complete_attempt(&first, &failed, Disposition::RetryAt(1_500))
        .await
        .unwrap();
    let retry = claim_one(store, &e.id, now).await;
    assert_eq!(
        (&retry.event_id, retry.due, retry.attempt),
        (&earlier.id, 1_500, 2),
        "a retry"
    );

    succeed(store, &retry).await;
    assert_eq!(store.replay_event(&earlier, endpoint, 1_700).await.unwrap(), 1);
    let replayed = claim_one(store, &e.id, now).await;
    assert_eq!((&replayed.event_id, replayed.due), (&earlier.id, 1_700), "a replay");

    let gave_up = attempt(&replayed, AttemptOutcome::HttpError);
    store
        .complete_attempt(&replayed, &gave_up, Disposition::Failed)
        .await
        .unwrap();
    assert_eq!(store.recover_endpoint(&m.id, &e.id, 0, 1_800).await.unwrap(), 1);
    let recovered = claim_one(store, &e.id, now).await;
    assert_eq!((&recovered.event_id, recovered.due), (&earlier.id, 1_800), "a recovery");

    assert!(claim_all().await.is_empty(), "both in flight");
    let expired = store
        .claim_due(&e.id, now + 60_000, 10, LEASE, AHEAD)
        .await
        .unwrap()
        .claims;
    let mut again: Vec<_> = expired.iter().map(|c| (&c.event_id, c.due)).collect();
    again.sort();
    let mut want = vec![(&earlier.id, 1_800), (&later.id, 2_000)];
    want.sort();
    assert_eq!(again, want, "leases that ran out");
}

async fn an_attempt_that_outlived_a_replay_does_not_undo_it(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, None, 1_000);
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    let claim = claim_one(store, &e.id, 1_000).await;
    let full = store.get_event(&m.id, &ev.id).await.unwrap().unwrap();
    store
        .replay_event(&full, std::slice::from_ref(&e.id), 1_500)
        .await
        .unwrap();
    succeed(store, &claim).await;
    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.next_attempt_at), (DeliveryStatus::Pending, Some(1_500)));
    assert_eq!(store.queue_depth().await.unwrap(), 1);

    // Also when the replay makes it due at the very time it was claimed for.
    let replayed = claim_one(store, &e.id, 1_500).await;
    let full = store.get_event(&m.id, &ev.id).await.unwrap().unwrap();
    store
        .replay_event(&full, std::slice::from_ref(&e.id), replayed.due)
        .await
        .unwrap();
    succeed(store, &replayed).await;
    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0), "{d:?}");
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    let again = claim_one(store, &e.id, 2_000).await;
    assert_eq!((again.due, again.attempt), (1_500, 1));
}

/// A lease that ran out lets another worker claim the delivery again. When both
/// attempts end, together or one after the other, the delivery moves on once and both
/// attempts are listed.
async fn a_delivery_claimed_again_after_its_lease_ran_out_moves_on_once(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let short = Duration::from_millis(10);
    for (n, together) in [(0, true), (1, false)] {
        let ev = event(&m, None, 1_000 + n);
        store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
        let now = 1_000 + n;
        let endpoint = &e.id;
        let claim = |at: i64| async move { store.claim_due(endpoint, at, 1, short, AHEAD).await.unwrap().claims };
        let first = claim(now).await.remove(0);
        assert!(claim(now + 5).await.is_empty(), "still leased");
        let second = claim(now + 11).await.remove(0);
        assert_eq!(
            (second.event_id.clone(), second.due, second.attempt),
            (first.event_id.clone(), first.due, 1)
        );
        if together {
            futures_util::join!(succeed(store, &first), succeed(store, &second));
        } else {
            succeed(store, &first).await;
            succeed(store, &second).await;
        }
        let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Succeeded, 1), "{d:?}");
        assert_eq!(store.queue_depth().await.unwrap(), 0, "left the queue once");
        let page = PageRequest { after: None, limit: 10 };
        assert_eq!(store.list_attempts(&ev.id, page).await.unwrap().items.len(), 2);
    }
}

/// A delivery nothing has happened to yet (a backend may keep no record of it of its
/// own) reads as pending and untried, and a replay of it moves it rather than queueing
/// it twice.
async fn an_untried_delivery_reads_as_pending_and_a_replay_moves_it(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let other = endpoint(&m);
    store.create_endpoint(&other, 5).await.unwrap();
    let ev = event(&m, None, 1_000);
    let endpoints = [e.id.clone(), other.id.clone()];
    store.accept_event(&ev, &endpoints).await.unwrap();
    let listed = store.list_deliveries(&ev.id).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for d in &listed {
        assert_eq!(
            (d.status, d.attempts, d.next_attempt_at, d.created_at),
            (DeliveryStatus::Pending, 0, Some(1_000), 1_000),
            "{d:?}"
        );
    }
    assert!(listed[0].endpoint_id < listed[1].endpoint_id, "ordered by endpoint");

    let full = store.get_event(&m.id, &ev.id).await.unwrap().unwrap();
    store.replay_event(&full, &endpoints, 1_500).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 2, "moved, not queued twice");
    assert!(store
        .claim_due(&e.id, 1_200, 10, LEASE, AHEAD)
        .await
        .unwrap()
        .claims
        .is_empty());
    let claims = store.claim_due(&e.id, 2_000, 10, LEASE, AHEAD).await.unwrap().claims;
    assert_eq!(claims.len(), 1, "one queue entry per delivery: {claims:?}");
    let claim = &claims[0];
    assert_eq!((claim.due, claim.attempt, claim.received_at), (1_500, 1, 1_000));
    succeed(store, claim).await;

    let done = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.attempts, done.created_at),
        (DeliveryStatus::Succeeded, 1, 1_000)
    );
    let waiting = store.get_delivery(&ev.id, &other.id).await.unwrap().unwrap();
    assert_eq!(
        (waiting.status, waiting.next_attempt_at),
        (DeliveryStatus::Pending, Some(1_500))
    );
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    let page = PageRequest { limit: 10, after: None };
    assert_eq!(store.list_attempts(&ev.id, page).await.unwrap().items.len(), 1);
}

/// Every attempt is listed once, in the order made, page after page, whichever record a
/// backend keeps it in (one that succeeded first time may live in its delivery's
/// record), also after a replay started the count again.
async fn every_attempt_is_listed_once_in_the_order_made(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let other = endpoint(&m);
    store.create_endpoint(&other, 5).await.unwrap();
    let endpoints = [e.id.clone(), other.id.clone()];
    let ev = event(&m, None, 1_000);
    store.accept_event(&ev, &endpoints).await.unwrap();
    let mut made = Vec::new();
    // Claims the endpoint's due delivery at `now` and records an attempt of it.
    let mut attempt_at = async |endpoint: &EndpointId, now: i64, outcome: AttemptOutcome, next: Disposition| {
        let claim = claim_one(store, endpoint, now).await;
        let attempt = attempt(&claim, outcome);
        store.complete_attempt(&claim, &attempt, next).await.unwrap();
        made.push((
            attempt.endpoint_id,
            attempt.attempt,
            attempt.attempted_at,
            attempt.outcome,
        ));
    };
    attempt_at(&e.id, 1_000, AttemptOutcome::Success, Disposition::Succeeded).await;
    attempt_at(&other.id, 1_000, AttemptOutcome::HttpError, Disposition::RetryAt(3_000)).await;
    attempt_at(&other.id, 3_000, AttemptOutcome::Success, Disposition::Succeeded).await;
    let full = store.get_event(&m.id, &ev.id).await.unwrap().unwrap();
    assert_eq!(store.replay_event(&full, &endpoints, 4_000).await.unwrap(), 2);
    attempt_at(&other.id, 4_000, AttemptOutcome::Success, Disposition::Succeeded).await;
    attempt_at(&e.id, 4_000, AttemptOutcome::Success, Disposition::Succeeded).await;
    let expected = vec![
        (e.id.clone(), 1, 1_000, AttemptOutcome::Success),
        (other.id.clone(), 1, 1_000, AttemptOutcome::HttpError),
        (other.id.clone(), 2, 3_000, AttemptOutcome::Success),
        (other.id.clone(), 1, 4_000, AttemptOutcome::Success),
        (e.id.clone(), 1, 4_000, AttemptOutcome::Success),
    ];
    assert_eq!(made, expected);

    let shown = |page: &[Attempt]| {
        page.iter()
            .map(|a| (a.endpoint_id.clone(), a.attempt, a.attempted_at, a.outcome))
            .collect::<Vec<_>>()
    };
    let all = store
        .list_attempts(&ev.id, PageRequest { after: None, limit: 10 })
        .await
        .unwrap();
    assert_eq!((shown(&all.items), all.next), (expected.clone(), None));
    let mut paged = Vec::new();
    let mut after = None;
    for _ in 0..3 {
        let page = store
            .list_attempts(&ev.id, PageRequest { after, limit: 2 })
            .await
            .unwrap();
        paged.extend(shown(&page.items));
        after = page.next;
    }
    assert_eq!((paged, after), (expected, None), "three pages of two, then no cursor");
    for endpoint in &endpoints {
        let d = store.get_delivery(&ev.id, endpoint).await.unwrap().unwrap();
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Succeeded, 1), "{d:?}");
    }
}

async fn deleting_an_endpoint_fails_its_pending_deliveries(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, None, 1_000);
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    let in_flight = event(&m, None, 1_001);
    store
        .accept_event(&in_flight, std::slice::from_ref(&e.id))
        .await
        .unwrap();
    let claims = store.claim_due(&e.id, 1_001, 10, LEASE, AHEAD).await.unwrap().claims;
    let claim = claims.into_iter().find(|c| c.event_id == in_flight.id).unwrap();
    assert!(store.delete_endpoint(&m.id, &e.id).await.unwrap());
    assert!(!store.delete_endpoint(&m.id, &e.id).await.unwrap());
    // An attempt that was under way ends after the deletion: it changes nothing.
    succeed(store, &claim).await;
    for id in [&ev.id, &in_flight.id] {
        let d = store.get_delivery(id, &e.id).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.last_error.as_deref()),
            (DeliveryStatus::Failed, Some("endpoint deleted")),
            "{d:?}"
        );
    }
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    assert!(store
        .claim_due(&e.id, 10_000, 10, LEASE, AHEAD)
        .await
        .unwrap()
        .claims
        .is_empty());
}

async fn deleting_a_merchant_removes_what_hangs_off_it(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let ev = event(&m, Some("k"), 1_000);
    store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
    assert!(store.delete_merchant(&m.id).await.unwrap());
    assert!(store.get_merchant(&m.id).await.unwrap().is_none());
    assert!(store.get_event(&m.id, &ev.id).await.unwrap().is_none());
    assert!(store.list_endpoints(&m.id).await.unwrap().is_empty());
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    // The dedupe key went with it: the same provider id is new for a new merchant of that id.
    store.create_merchant(&m).await.unwrap();
    let again = store.accept_event(&event(&m, Some("k"), 2_000), &[]).await.unwrap();
    assert!(matches!(again, AcceptOutcome::Accepted { .. }));
}

async fn events_list_newest_first_with_a_type_filter(store: &dyn Store) {
    let (m, _) = seeded(store).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut ev = event(&m, None, 1_000 + i);
        if i % 2 == 0 {
            ev.event_type = Some("other".into());
        }
        store.accept_event(&ev, &[]).await.unwrap();
        ids.push(ev.id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let page = store
        .list_events(&m.id, None, PageRequest { after: None, limit: 3 })
        .await
        .unwrap();
    let got: Vec<_> = page.items.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, [ids[4].clone(), ids[3].clone(), ids[2].clone()]);
    let rest = store
        .list_events(
            &m.id,
            None,
            PageRequest {
                after: page.next,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next.is_none());
    let others = store
        .list_events(&m.id, Some("other"), PageRequest { after: None, limit: 10 })
        .await
        .unwrap();
    assert_eq!(others.items.len(), 3);
}

fn admin_token(name: &str, scope: TokenScope, token: &str) -> AdminToken {
    AdminToken {
        name: TokenName::parse(name).unwrap(),
        scope,
        hash: TokenHash::of(token),
        created_at: 1,
    }
}

fn audit_entry(path: &str, status: u16) -> AuditEntry {
    AuditEntry {
        at: 1,
        token_name: "ops".into(),
        method: "POST".into(),
        path: path.into(),
        resource: Default::default(),
        status,
    }
}

async fn admin_tokens_are_found_by_hash_unique_by_name_and_deletable(store: &dyn Store) {
    store
        .create_admin_token(&admin_token("ops", TokenScope::Write, "hra_ops"))
        .await
        .unwrap();
    store
        .create_admin_token(&admin_token("dash", TokenScope::Read, "hra_dash"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_admin_token(&admin_token("ops", TokenScope::Read, "hra_other"))
            .await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store
            .create_admin_token(&admin_token("other", TokenScope::Read, "hra_ops"))
            .await,
        Err(StoreError::AlreadyExists)
    ));
    let found = store
        .find_admin_token(&TokenHash::of("hra_dash"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.name.as_str(), found.scope), ("dash", TokenScope::Read));
    assert!(store
        .find_admin_token(&TokenHash::of("hra_das"))
        .await
        .unwrap()
        .is_none());
    let names: Vec<String> = store
        .list_admin_tokens()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["dash", "ops"]);

    let dash = TokenName::parse("dash").unwrap();
    assert!(store.delete_admin_token(&dash).await.unwrap());
    assert!(!store.delete_admin_token(&dash).await.unwrap());
    assert!(store
        .find_admin_token(&TokenHash::of("hra_dash"))
        .await
        .unwrap()
        .is_none());
    // The name is free again, and the old token does not come back with it.
    store
        .create_admin_token(&admin_token("dash", TokenScope::Write, "hra_dash2"))
        .await
        .unwrap();
    assert!(store
        .find_admin_token(&TokenHash::of("hra_dash"))
        .await
        .unwrap()
        .is_none());
    let found = store
        .find_admin_token(&TokenHash::of("hra_dash2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.scope, TokenScope::Write);
}

async fn the_audit_log_pages_newest_first_and_keeps_only_the_newest_refusals(store: &dyn Store) {
    let appended = [("/c1", 201), ("/r1", 401), ("/c2", 204), ("/r2", 403), ("/r3", 401)];
    for (path, status) in appended {
        store.append_audit(&audit_entry(path, status), 2).await.unwrap();
    }
    let paths = |page: &hookrelay::store::Page<AuditEntry>| -> Vec<String> {
        page.items.iter().map(|e| e.path.clone()).collect()
    };
    let all = store.list_audit(PageRequest { after: None, limit: 10 }).await.unwrap();
    assert_eq!(
        paths(&all),
        ["/r3", "/r2", "/c2", "/c1"],
        "r1 is the oldest refusal past 2"
    );
    assert!(all.next.is_none());

    let first = store.list_audit(PageRequest { after: None, limit: 3 }).await.unwrap();
    assert_eq!(paths(&first), ["/r3", "/r2", "/c2"]);
    let rest = store
        .list_audit(PageRequest {
            after: first.next.clone(),
            limit: 3,
        })
        .await
        .unwrap();
    assert_eq!(paths(&rest), ["/c1"]);
    assert!(rest.next.is_none());
    assert_eq!(rest.items[0], audit_entry("/c1", 201));
}

async fn admin_tokens_and_the_audit_log_survive_reopening(dir: &std::path::Path) {
    {
        let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
        store
            .create_admin_token(&admin_token("ops", TokenScope::Read, "hra_ops"))
            .await
            .unwrap();
        store.append_audit(&audit_entry("/before", 201), 10).await.unwrap();
        store.append_audit(&audit_entry("/refused", 401), 10).await.unwrap();
        store.close().await.unwrap();
    }
    let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
    assert!(store
        .find_admin_token(&TokenHash::of("hra_ops"))
        .await
        .unwrap()
        .is_some());
    // Numbering goes on after the largest number stored, so new entries list first.
    store.append_audit(&audit_entry("/after", 204), 10).await.unwrap();
    let page = store.list_audit(PageRequest { after: None, limit: 10 }).await.unwrap();
    let paths: Vec<&str> = page.items.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["/after", "/refused", "/before"]);
}

async fn state_survives_reopening(dir: &std::path::Path) {
    let ev_id;
    let e_id;
    {
        let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
        let (m, e) = seeded(&store).await;
        let ev = event(&m, None, 1_000);
        store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
        // Claimed but never completed: the lease dies with the process.
        store.claim_due(&e.id, 1_000, 1, LEASE, AHEAD).await.unwrap();
        ev_id = ev.id;
        e_id = e.id;
        store.close().await.unwrap();
    }
    // close() released the database: it opens again at once.
    let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), 1);
    let claims = store.claim_due(&e_id, 1_000, 1, LEASE, AHEAD).await.unwrap().claims;
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].event_id, ev_id);
}

/// Claims take what is due oldest first, whether a retry or a first attempt: a retry
/// due later does not jump ahead of events waiting for their first attempt (in a long
/// outage that would spend the retry budget of a few deliveries while others wait).
async fn retries_and_first_attempts_are_claimed_oldest_due_first(store: &dyn Store) {
    let (m, e) = seeded(store).await;
    let endpoint = std::slice::from_ref(&e.id);
    let early = event(&m, None, 1_000);
    store.accept_event(&early, endpoint).await.unwrap();
    let first = claim_one(store, &e.id, 1_000).await;
    store
        .complete_attempt(
            &first,
            &attempt(&first, AttemptOutcome::HttpError),
            Disposition::RetryAt(1_500),
        )
        .await
        .unwrap();
    let (before, after) = (event(&m, None, 1_200), event(&m, None, 1_700));
    store.accept_event(&before, endpoint).await.unwrap();
    store.accept_event(&after, endpoint).await.unwrap();
    let order: Vec<(EventId, i64)> = [
        claim_one(store, &e.id, 2_000).await,
        claim_one(store, &e.id, 2_000).await,
        claim_one(store, &e.id, 2_000).await,
    ]
    .into_iter()
    .map(|c| (c.event_id, c.due))
    .collect();
    assert_eq!(order, [(before.id, 1_200), (early.id, 1_500), (after.id, 1_700)]);
}

macro_rules! contract {
    ($($check:ident),* $(,)?) => {
        mod sled_backend {
            $(
                #[tokio::test]
                async fn $check() {
                    let (store, _dir) = super::open_sled().await;
                    super::$check(&*store).await;
                }
            )*
        }
    };
}

contract!(
    merchants_are_unique_and_page_in_id_order,
    the_endpoint_limit_holds,
    an_accepted_event_is_claimable_once_and_deduplicated,
    concurrent_events_are_each_stored_once_per_key,
    concurrent_attempts_are_each_recorded,
    settings_reads_see_every_change,
    nothing_is_claimed_before_it_is_due,
    a_schedule_beyond_the_horizon_is_due_now,
    a_failed_attempt_is_rescheduled_then_succeeds,
    failed_deliveries_are_replayed_and_recovered,
    a_delivery_queued_ahead_of_one_in_flight_is_claimed,
    retries_and_first_attempts_are_claimed_oldest_due_first,
    an_attempt_that_outlived_a_replay_does_not_undo_it,
    a_delivery_claimed_again_after_its_lease_ran_out_moves_on_once,
    an_untried_delivery_reads_as_pending_and_a_replay_moves_it,
    every_attempt_is_listed_once_in_the_order_made,
    deleting_an_endpoint_fails_its_pending_deliveries,
    deleting_a_merchant_removes_what_hangs_off_it,
    events_list_newest_first_with_a_type_filter,
    admin_tokens_are_found_by_hash_unique_by_name_and_deletable,
    the_audit_log_pages_newest_first_and_keeps_only_the_newest_refusals,
);

#[tokio::test]
async fn sled_state_survives_reopening_and_leases_do_not() {
    let dir = tempfile::tempdir().unwrap();
    state_survives_reopening(dir.path()).await;
}

/// A crash between the record of a first attempt that succeeded and the removal of its
/// queue entry leaves the entry, so the delivery is attempted again after the restart.
/// The record of the first attempt (which sled keeps inside the delivery's record)
/// must not be lost when the second one is recorded.
#[tokio::test]
async fn sled_a_first_attempt_made_again_after_a_crash_keeps_the_record_of_both() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, e, queue_key, queue_entry) = {
        let store = SledStore::open(dir.path(), 8 << 20, cipher()).await.unwrap();
        let (m, e) = seeded(&store).await;
        let ev = event(&m, None, 1_000);
        store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
        let claim = claim_one(&store, &e.id, 1_000).await;
        succeed(&store, &claim).await;
        store.close().await.unwrap();
        let queue_key = hookrelay::store::sled_keys::queue(&e.id, 1_000, &ev.id);
        let queue_entry = hookrelay::store::sled_keys::queue_entry(&m.id, 0, 1_000);
        (ev, e, queue_key, queue_entry)
    };
    {
        // What the crash left: the queue entry the attempt would have removed last.
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("queue").unwrap().insert(queue_key, queue_entry).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path(), 8 << 20, cipher()).await.unwrap();
    let claim = claim_one(&store, &e.id, 2_000).await;
    assert_eq!(claim.attempt, 1, "the queue entry says no attempt was made");
    let mut again = attempt(&claim, AttemptOutcome::Success);
    again.attempted_at = 2_000;
    store
        .complete_attempt(&claim, &again, Disposition::Succeeded)
        .await
        .unwrap();
    let listed = store
        .list_attempts(&ev.id, PageRequest { after: None, limit: 10 })
        .await
        .unwrap();
    let times: Vec<_> = listed.items.iter().map(|a| (a.attempt, a.attempted_at)).collect();
    assert_eq!(times, [(1, 1_000), (1, 2_000)]);
    let d = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
    assert_eq!((d.status, d.last_attempt_at), (DeliveryStatus::Succeeded, Some(2_000)));
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

/// An endpoint holds `SLED_LANE_LIMIT` first attempts in memory; events beyond that
/// queue on disk as before. Both kinds are claimed once each in the order received,
/// counted in the depth, and both survive reopening the store.
#[tokio::test]
async fn sled_first_attempts_beyond_the_lane_limit_queue_on_disk_and_all_are_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let total = hookrelay::store::SLED_LANE_LIMIT + 3;
    let (e_id, accepted) = {
        let store = SledStore::open(dir.path(), 8 << 20, cipher()).await.unwrap();
        let (m, e) = seeded(&store).await;
        let mut accepted = Vec::with_capacity(total);
        for n in 0..total {
            let ev = event(&m, None, 1_000 + n as i64);
            store.accept_event(&ev, std::slice::from_ref(&e.id)).await.unwrap();
            accepted.push(ev.id);
        }
        assert_eq!(store.queue_depth().await.unwrap(), total as u64);
        // The first in memory, the last three on disk: one claim takes them all.
        let claims = store
            .claim_due(&e.id, 1_000_000, total, LEASE, AHEAD)
            .await
            .unwrap()
            .claims;
        let mut claimed: Vec<_> = claims.iter().map(|c| (c.due, c.event_id.clone())).collect();
        claimed.sort();
        let claimed: Vec<_> = claimed.into_iter().map(|(_, id)| id).collect();
        assert_eq!(claimed, accepted, "every event once");
        assert!(claims.iter().all(|c| c.attempt == 1));
        store.close().await.unwrap();
        (e.id, accepted)
    };
    // The leases ended with the process; what was claimed and not recorded is due again.
    let store = SledStore::open(dir.path(), 8 << 20, cipher()).await.unwrap();
    assert_eq!(store.queue_depth().await.unwrap(), total as u64);
    let claims = store
        .claim_due(&e_id, 1_000_000, total + 10, LEASE, AHEAD)
        .await
        .unwrap()
        .claims;
    let mut again: Vec<_> = claims.iter().map(|c| c.event_id.clone()).collect();
    again.sort();
    let mut want = accepted.clone();
    want.sort();
    assert_eq!(again, want);
    for claim in &claims {
        succeed(&store, claim).await;
    }
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    assert!(store
        .claim_due(&e_id, 2_000_000, 10, LEASE, AHEAD)
        .await
        .unwrap()
        .claims
        .is_empty());
}

/// The keys of one tree of a closed sled store, with their values.
fn sled_tree(dir: &std::path::Path, name: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree(name).unwrap();
    tree.iter()
        .map(|entry| {
            let (k, v) = entry.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect()
}

/// The keys of a tree of the sled store in `dir`, in order.
fn sled_keys(dir: &std::path::Path, name: &str) -> Vec<Vec<u8>> {
    sled_tree(dir, name).into_iter().map(|(k, _)| k).collect()
}

/// A merchant with two endpoints and one event for both, accepted; the store closed.
async fn two_endpoints_one_event(dir: &std::path::Path) -> (Event, Endpoint, Endpoint) {
    let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
    let (m, e1) = seeded(&store).await;
    let e2 = endpoint(&m);
    store.create_endpoint(&e2, 5).await.unwrap();
    let ev = event(&m, None, 1_000);
    store.accept_event(&ev, &[e1.id.clone(), e2.id.clone()]).await.unwrap();
    store.close().await.unwrap();
    (ev, e1, e2)
}

/// Opens the store, checks both deliveries read `want`, records a successful first
/// attempt for each endpoint in `attempt` (claimed from what reopening found), closes.
async fn reopen_and_attempt(dir: &std::path::Path, ev: &Event, want: [DeliveryStatus; 2], attempt: &[&Endpoint]) {
    let store = SledStore::open(dir, 8 << 20, cipher()).await.unwrap();
    let listed = store.list_deliveries(&ev.id).await.unwrap();
    assert_eq!(listed.len(), 2, "both deliveries listed: {listed:?}");
    assert_ne!(listed[0].endpoint_id, listed[1].endpoint_id);
    // Counted, not in order: the endpoint ids are random, so is their order.
    let succeeded = want.iter().filter(|s| **s == DeliveryStatus::Succeeded).count();
    assert!(listed.iter().all(|d| d.status != DeliveryStatus::Failed));
    assert_eq!(
        listed.iter().filter(|d| d.status == DeliveryStatus::Succeeded).count(),
        succeeded
    );
    // Pending deliveries keep the event from being purged.
    let pending = want.iter().filter(|s| **s == DeliveryStatus::Pending).count();
    if pending > 0 {
        assert_eq!(store.purge_expired(i64::MAX, 100).await.unwrap(), 0);
    }
    assert_eq!(store.queue_depth().await.unwrap(), pending as u64);
    for e in attempt {
        let untried = store.get_delivery(&ev.id, &e.id).await.unwrap().unwrap();
        assert_eq!((untried.status, untried.attempts), (DeliveryStatus::Pending, 0));
        let claim = claim_one(&store, &e.id, 2_000).await;
        assert_eq!(claim.attempt, 1);
        succeed(&store, &claim).await;
    }
    store.close().await.unwrap();
}

/// Layout 6: an event whose first attempts wait in memory keeps its fan-out (its
/// endpoints) in its `fresh` key, not in the `deliveries` tree; once every first
/// attempt is recorded the key goes, and the event's deliveries are their records alone.
#[tokio::test]
async fn sled_an_untried_events_fan_out_is_its_fresh_key_and_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, e1, e2) = two_endpoints_one_event(dir.path()).await;
    let key = ev.id.as_str().as_bytes().to_vec();
    let record = |e: &Endpoint| [ev.id.as_str().as_bytes(), e.id.as_str().as_bytes()].concat();
    assert!(sled_tree(dir.path(), "deliveries").is_empty(), "no fan-out record");
    let fresh = sled_tree(dir.path(), "fresh");
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].0, key);
    assert!(!fresh[0].1.is_empty(), "the fresh key holds the fan-out");

    reopen_and_attempt(dir.path(), &ev, [DeliveryStatus::Pending; 2], &[&e1]).await;
    let keys = sled_keys(dir.path(), "deliveries");
    assert_eq!(keys, [record(&e1)]);
    assert_eq!(sled_tree(dir.path(), "fresh").len(), 1, "one first attempt left");

    reopen_and_attempt(
        dir.path(),
        &ev,
        [DeliveryStatus::Succeeded, DeliveryStatus::Pending],
        &[&e2],
    )
    .await;
    let mut want = vec![record(&e1), record(&e2)];
    want.sort();
    let keys = sled_keys(dir.path(), "deliveries");
    assert_eq!(keys, want);
    assert!(sled_tree(dir.path(), "fresh").is_empty());
    reopen_and_attempt(dir.path(), &ev, [DeliveryStatus::Succeeded; 2], &[]).await;
}

/// A layout 5 directory (an empty `fresh` key, the fan-out a record of the
/// `deliveries` tree) is read as before.
#[tokio::test]
async fn sled_an_events_fan_out_in_the_deliveries_tree_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (ev, e1, e2) = two_endpoints_one_event(dir.path()).await;
    {
        let db = sled::open(dir.path()).unwrap();
        let fresh = db.open_tree("fresh").unwrap();
        let fan_out = fresh.get(ev.id.as_str()).unwrap().unwrap();
        db.open_tree("deliveries")
            .unwrap()
            .insert(ev.id.as_str(), fan_out)
            .unwrap();
        fresh.insert(ev.id.as_str(), &[]).unwrap();
        db.flush().unwrap();
    }
    reopen_and_attempt(dir.path(), &ev, [DeliveryStatus::Pending; 2], &[&e2]).await;
    reopen_and_attempt(
        dir.path(),
        &ev,
        [DeliveryStatus::Succeeded, DeliveryStatus::Pending],
        &[&e1],
    )
    .await;
    assert!(sled_tree(dir.path(), "fresh").is_empty());
    reopen_and_attempt(dir.path(), &ev, [DeliveryStatus::Succeeded; 2], &[]).await;
}

#[tokio::test]
async fn sled_admin_tokens_and_the_audit_log_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    admin_tokens_and_the_audit_log_survive_reopening(dir.path()).await;
}
