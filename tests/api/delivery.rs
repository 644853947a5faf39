//! What hookrelay sends downstream: fan-out by event type, unchanged bodies, Standard
//! Webhooks headers and signatures (rotation included), isolation between endpoints,
//! disabled and deleted endpoints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{closed_port, spawn_app, spawn_app_with, Received, Receiver, Reply, TestApp};

/// The DashX samples, verbatim from `dashx-webhooks.txt`.
const COMPLETED: &str = r#"{ "id": "38ea5415-d69c-4aa2-a892-588972a534d3", "apiVersion": "2023-01-11", "created": 1745405443086, "object": "checkoutSession", "type": "checkout_session.completed", "data": { "object": { "id": "7cf3f4cf-e39a-48b5-ad07-ea7a77c4c52d", "createdAt": "2025-04-23T10:50:41.449683Z", "amountTotal": "0.00987000", "status": "SUCCESS", "currency": "SOL", "customer_id": "36ab0154-0797-42", "payment_link_id": "d4cf04d5-0d45-4b6e-9227-011b39844aac", "payment_link_title": "test", "payment_link_slug": "sKgmsAGmRZ-aa5XOFLqZ8Q", "transaction_hash": "3jdxLnx5Pe22X6uBqB1Cwt6x6xtjfjh8yUnwc3667KkX43KiCroiT2rZ9b3VJ8jnMyF3LvGF2biJu3etsubHjb2t", "from_address": "4umonu9DZSj63cUZVvAUfLhBMDr8ad4YcAeUMBSZXUS2", "payment_address": "cuZFBDnPSt5J7Limwm37RedRWpNVs1xNR8XQDtWDMiN", "chain_symbol": "SOL", "payment_amount": "0.01000000", "payment_processing_fee": "0.00005000", "updatedAt": "2025-04-23T10:50:43.086043+00:00" } } }"#;
const EXPIRED: &str = r#"{ "id": "d011c41f-a29f-4c44-b3de-64e234d8b269", "apiVersion": "2023-01-11", "created": 1742839610947, "object": "checkoutSession", "type": "checkout_session.expired", "data": null }"#;
const CANCELED: &str = r#"{ "id": "d011c41f-a29f-4c44-b3de-64e234d8b269", "apiVersion": "2023-01-11", "created": 1742839610947, "object": "checkoutSession", "type": "checkout_session.canceled", "data":null }"#;

/// The Standard Webhooks reference vector.
const REFERENCE_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const WAIT: Duration = Duration::from_secs(5);

/// Whether one `v1,<base64>` signature is the HMAC-SHA256 of `{id}.{timestamp}.{body}`
/// keyed with the base64-decoded part of `secret` after `whsec_`.
fn signature_verifies(secret: &str, id: &str, timestamp: &str, body: &[u8], signature: &str) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("secret starts with whsec_"))
        .expect("base64 secret");
    let Some(claimed) = signature.strip_prefix("v1,").and_then(|b64| STANDARD.decode(b64).ok()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&claimed).is_ok()
}

/// The signatures of a delivery (space-separated during a rotation).
fn signatures(request: &Received) -> Vec<&str> {
    request.header("webhook-signature").split(' ').collect()
}

/// Whether one of the delivery's signatures verifies with `secret`.
fn delivery_verifies(secret: &str, request: &Received) -> bool {
    signatures(request).iter().any(|signature| {
        signature_verifies(
            secret,
            request.header("webhook-id"),
            request.header("webhook-timestamp"),
            &request.body,
            signature,
        )
    })
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Ingests with an `Idempotency-Key` header (token in the query string, as a provider does).
async fn ingest_with_key(app: &TestApp, merchant: &Value, body: &str, key: &str) -> (u16, Value) {
    let response = app
        .http
        .post(merchant["ingest_url"].as_str().unwrap())
        .header("idempotency-key", key)
        .body(body.to_owned())
        .send()
        .await
        .expect("ingest request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Ingests and returns the new event's id, asserting 202 and the number of deliveries.
async fn ingest_queued(app: &TestApp, merchant: &Value, body: &str, deliveries: u64) -> String {
    let (status, answer) = app.ingest(merchant, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["deliveries"], deliveries, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

/// (webhook-id, body) of every request, sorted.
fn ids_and_bodies(received: &[Received]) -> Vec<(String, String)> {
    let mut pairs: Vec<_> = received
        .iter()
        .map(|r| {
            (
                r.header("webhook-id").to_owned(),
                String::from_utf8(r.body.clone()).unwrap(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

#[tokio::test]
async fn dashx_samples_fan_out_to_the_endpoints_whose_filters_match_with_bodies_unchanged() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("dashx-shop").await;
    let (a, b, c, d) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    app.create_endpoint("dashx-shop", &a.url("/a"), &["checkout_session.completed"])
        .await;
    app.create_endpoint(
        "dashx-shop",
        &b.url("/b"),
        &["checkout_session.expired", "checkout_session.canceled"],
    )
    .await;
    app.create_endpoint("dashx-shop", &c.url("/c"), &[]).await;
    app.create_endpoint("dashx-shop", &d.url("/d"), &["checkout_session.*"])
        .await;

    let completed = ingest_queued(&app, &merchant, COMPLETED, 3).await;
    let expired = ingest_queued(&app, &merchant, EXPIRED, 3).await;
    // The canceled sample repeats the expired one's `id`; a distinct key keeps it apart.
    let (status, answer) = ingest_with_key(&app, &merchant, CANCELED, "dashx-canceled-1").await;
    assert_eq!(
        (status, &answer["status"], &answer["deliveries"]),
        (202, &json!("queued"), &json!(3)),
        "{answer}"
    );
    let canceled = answer["event_id"].as_str().unwrap().to_owned();

    for event in [&completed, &expired, &canceled] {
        app.wait_for_deliveries("dashx-shop", event, "succeeded", WAIT).await;
    }
    let pair = |id: &String, body: &str| (id.clone(), body.to_owned());
    let everything = {
        let mut all = vec![
            pair(&completed, COMPLETED),
            pair(&expired, EXPIRED),
            pair(&canceled, CANCELED),
        ];
        all.sort();
        all
    };
    let mut only_b = vec![pair(&expired, EXPIRED), pair(&canceled, CANCELED)];
    only_b.sort();
    let cases = [
        ("A completed only", &a, vec![pair(&completed, COMPLETED)]),
        ("B expired and canceled", &b, only_b),
        ("C no filter", &c, everything.clone()),
        ("D checkout_session.*", &d, everything),
    ];
    for (name, receiver, expected) in cases {
        assert_eq!(ids_and_bodies(&receiver.received()), expected, "endpoint {name}");
    }
}

#[tokio::test]
async fn the_expired_and_canceled_samples_share_an_id_so_sent_as_is_the_second_is_a_duplicate() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("dashx-shop").await;
    let receiver = Receiver::start().await;
    app.create_endpoint("dashx-shop", &receiver.url("/all"), &[]).await;

    let expired = ingest_queued(&app, &merchant, EXPIRED, 1).await;
    let (status, answer) = app.ingest(&merchant, CANCELED).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "duplicate", "{answer}");
    assert_eq!(answer["event_id"], expired.as_str(), "{answer}");

    app.wait_for_deliveries("dashx-shop", &expired, "succeeded", WAIT).await;
    assert_eq!(
        ids_and_bodies(&receiver.received()),
        vec![(expired, EXPIRED.to_owned())]
    );
    assert_eq!(
        app.metric(r#"hookrelay_events_ingested_total{outcome="duplicate"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn every_attempt_carries_json_content_type_its_own_timestamp_a_valid_signature_and_the_same_webhook_id() {
    // Retries more than a second apart, so each attempt has a timestamp of its own:
    // jitter takes up to a fifth off a delay, and 1,300 ms less a fifth is still 1,040 ms.
    let app = spawn_app_with(&[
        ("HOOKRELAY_RETRY_INITIAL_MS", "1300"),
        ("HOOKRELAY_RETRY_MAX_MS", "1300"),
    ])
    .await;
    let receiver = Receiver::answering(|n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app
        .create_endpoint("acme", &receiver.url("/in/dashx?tenant=7"), &[])
        .await;
    let secret = endpoint["secret"].as_str().unwrap();

    let event_id = ingest_queued(&app, &merchant, COMPLETED, 1).await;
    let got = receiver.wait_for(2, WAIT).await;
    let mut timestamps = Vec::new();
    for (n, request) in got.iter().enumerate() {
        assert_eq!(request.path, "/in/dashx?tenant=7", "attempt {n}");
        assert_eq!(request.header("content-type"), "application/json", "attempt {n}");
        assert_eq!(request.header("webhook-id"), event_id, "attempt {n}");
        assert!(
            request.header("user-agent").starts_with("hookrelay/"),
            "attempt {n}: {:?}",
            request.headers
        );
        assert_eq!(request.body, COMPLETED.as_bytes(), "attempt {n}");
        let timestamp: i64 = request.header("webhook-timestamp").parse().expect("unix seconds");
        let sent_at = unix_now() - request.at.elapsed().as_secs() as i64;
        assert!(
            (timestamp - sent_at).abs() <= 2,
            "attempt {n}: timestamp {timestamp}, sent at about {sent_at}"
        );
        assert_eq!(signatures(request).len(), 1, "attempt {n}");
        assert!(delivery_verifies(secret, request), "attempt {n}: {:?}", request.headers);
        timestamps.push(timestamp);
    }
    assert!(
        timestamps[1] > timestamps[0],
        "the retry reused the timestamp: {timestamps:?}"
    );
}

#[test]
fn the_test_verifier_agrees_with_the_standard_webhooks_reference_vector() {
    let (id, timestamp, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", br#"{"test": 2432232314}"#);
    let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    assert!(signature_verifies(REFERENCE_SECRET, id, timestamp, body, expected));
    // It can also say no.
    let wrong = [
        ("another body", id, timestamp, &br#"{"test": 2432232315}"#[..], expected),
        ("another id", "msg_other", timestamp, &body[..], expected),
        ("another timestamp", id, "1614265331", &body[..], expected),
        (
            "not v1",
            id,
            timestamp,
            &body[..],
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ),
    ];
    for (case, id, timestamp, body, signature) in wrong {
        assert!(
            !signature_verifies(REFERENCE_SECRET, id, timestamp, body, signature),
            "{case}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_registered_with_the_reference_secret_gets_signatures_the_verifier_accepts() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let body = json!({ "url": receiver.url("/hook"), "secret": REFERENCE_SECRET });
    let (status, endpoint) = app.post("/api/v1/merchants/acme/endpoints", body).await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["secret"], REFERENCE_SECRET);

    ingest_queued(&app, &merchant, r#"{"test": 2432232314}"#, 1).await;
    let got = receiver.wait_for(1, WAIT).await;
    assert!(delivery_verifies(REFERENCE_SECRET, &got[0]), "{:?}", got[0].headers);
    assert!(
        !delivery_verifies("whsec_QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", &got[0]),
        "a wrong secret verified"
    );
}

#[tokio::test]
async fn after_a_secret_rotation_deliveries_carry_one_signature_per_secret() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let (endpoint_id, old) = (endpoint["id"].as_str().unwrap(), endpoint["secret"].as_str().unwrap());

    ingest_queued(&app, &merchant, r#"{"type":"before.rotation"}"#, 1).await;
    let before = receiver.wait_for(1, WAIT).await;
    assert_eq!(signatures(&before[0]).len(), 1);
    assert!(delivery_verifies(old, &before[0]));

    let (status, rotated) = app
        .post(
            &format!("/api/v1/merchants/acme/endpoints/{endpoint_id}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != old, "{rotated}");
    let expires: chrono::DateTime<chrono::Utc> = rotated["previous_secret_expires_at"]
        .as_str()
        .expect("previous_secret_expires_at")
        .parse()
        .unwrap();
    let overlap = expires - chrono::Utc::now();
    assert!(
        (overlap - chrono::Duration::hours(24)).num_seconds().abs() < 60,
        "{rotated}"
    );

    ingest_queued(&app, &merchant, r#"{"type":"after.rotation"}"#, 1).await;
    let after = &receiver.wait_for(2, WAIT).await[1];
    let parts = signatures(after);
    assert_eq!(parts.len(), 2, "{:?}", after.headers);
    let verifies = |secret: &str, signature: &str| {
        signature_verifies(
            secret,
            after.header("webhook-id"),
            after.header("webhook-timestamp"),
            &after.body,
            signature,
        )
    };
    let by_new: Vec<_> = parts.iter().filter(|s| verifies(new, s)).collect();
    let by_old: Vec<_> = parts.iter().filter(|s| verifies(old, s)).collect();
    assert_eq!(by_new.len(), 1, "{parts:?}");
    assert_eq!(by_old.len(), 1, "{parts:?}");
    assert_ne!(by_new[0], by_old[0]);
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_a_fast_endpoint_of_the_same_merchant() {
    // Two attempts at a time per endpoint, so the slow endpoint has events waiting.
    let app = spawn_app_with(&[("HOOKRELAY_ENDPOINT_CONCURRENCY", "2")]).await;
    let slow = Receiver::answering(|_| Reply::after(Duration::from_millis(1500), 200)).await;
    let fast = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let slow_endpoint = app.create_endpoint("acme", &slow.url("/slow"), &[]).await;
    app.create_endpoint("acme", &fast.url("/fast"), &[]).await;

    let mut ingested_at = BTreeMap::new();
    for n in 0..4 {
        let started = Instant::now();
        let event_id = ingest_queued(&app, &merchant, &format!(r#"{{"id":"evt-{n}","type":"t"}}"#), 2).await;
        ingested_at.insert(event_id, started);
    }
    let got = fast.wait_for(4, WAIT).await;
    for request in &got {
        let started = ingested_at[request.header("webhook-id")];
        let lag = request.at.duration_since(started);
        assert!(lag < Duration::from_millis(600), "fast delivery took {lag:?}");
    }
    // The slow endpoint is still busy with its first attempts.
    for event_id in ingested_at.keys() {
        let event = app.event("acme", event_id).await;
        let delivery = event["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["endpoint_id"] == slow_endpoint["id"]);
        assert_eq!(delivery.unwrap()["status"], "pending", "{event:#}");
    }
    assert!(
        slow.received().len() <= 2,
        "more than 2 attempts in flight to the slow endpoint"
    );
}

#[tokio::test]
async fn a_dead_endpoint_does_not_delay_another_merchants_endpoint() {
    let app = spawn_app().await;
    let dead = app.create_merchant("dead").await;
    app.create_endpoint("dead", &format!("http://127.0.0.1:{}/hook", closed_port()), &[])
        .await;
    let alive = app.create_merchant("alive").await;
    let receiver = Receiver::start().await;
    app.create_endpoint("alive", &receiver.url("/hook"), &[]).await;

    for n in 0..5 {
        ingest_queued(&app, &dead, &format!(r#"{{"id":"dead-{n}"}}"#), 1).await;
    }
    let mut ingested_at = BTreeMap::new();
    for n in 0..3 {
        let started = Instant::now();
        ingested_at.insert(
            ingest_queued(&app, &alive, &format!(r#"{{"id":"alive-{n}"}}"#), 1).await,
            started,
        );
    }
    let got = receiver.wait_for(3, WAIT).await;
    for request in &got {
        let lag = request.at.duration_since(ingested_at[request.header("webhook-id")]);
        assert!(lag < Duration::from_millis(600), "delivery took {lag:?}");
    }
    assert!(
        app.metric(r#"hookrelay_delivery_attempts_total{outcome="connect_error"}"#)
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_disabled_endpoint_gets_nothing() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let (enabled, created_disabled, patched_disabled) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    let enabled_endpoint = app.create_endpoint("acme", &enabled.url("/on"), &[]).await;
    let body = json!({ "url": created_disabled.url("/off"), "enabled": false });
    let (status, off) = app.post("/api/v1/merchants/acme/endpoints", body).await;
    assert_eq!((status, &off["enabled"]), (201, &json!(false)), "{off}");
    let patched = app.create_endpoint("acme", &patched_disabled.url("/off"), &[]).await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", patched["id"].as_str().unwrap());
    let (status, body) = app
        .admin(reqwest::Method::PATCH, &path, Some(json!({ "enabled": false })))
        .await;
    assert_eq!((status, &body["enabled"]), (200, &json!(false)), "{body}");

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    let event = app.wait_for_deliveries("acme", &event_id, "succeeded", WAIT).await;
    let deliveries = event["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1, "{event:#}");
    assert_eq!(deliveries[0]["endpoint_id"], enabled_endpoint["id"]);
    assert_eq!(enabled.received().len(), 1);
    // Give a wrongly queued delivery to a disabled endpoint time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        created_disabled.received().is_empty(),
        "the endpoint created disabled got a delivery"
    );
    assert!(
        patched_disabled.received().is_empty(),
        "the endpoint disabled by PATCH got a delivery"
    );
}

#[tokio::test]
async fn deleting_an_endpoint_with_pending_retries_fails_them_and_sends_nothing_more() {
    let app = spawn_app_with(&[("HOOKRELAY_RETRY_INITIAL_MS", "500"), ("HOOKRELAY_RETRY_MAX_MS", "500")]).await;
    let receiver = Receiver::answering(|_| Reply::status(500)).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    receiver.wait_for(1, WAIT).await;
    // The first attempt is recorded and a retry scheduled.
    let deadline = Instant::now() + WAIT;
    loop {
        let event = app.event("acme", &event_id).await;
        let delivery = &event["deliveries"][0];
        if delivery["attempts"] == 1 && delivery["status"] == "pending" && delivery["next_attempt_at"].is_string() {
            break;
        }
        assert!(Instant::now() < deadline, "no retry was scheduled: {event:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = app
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/merchants/acme/endpoints/{endpoint_id}"),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let delivery = app
        .wait_for_delivery("acme", &event_id, endpoint_id, "failed", WAIT)
        .await;
    assert_eq!(delivery["attempts"], 1, "{delivery}");
    assert_eq!(app.metric("hookrelay_queue_depth").await, 0.0);
    // Twice the retry delay: a retry still scheduled would have come by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(receiver.received().len(), 1, "the deleted endpoint was called again");
}
