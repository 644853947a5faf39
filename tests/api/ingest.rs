//! `POST /ingest/{merchant_id}`: authentication, body checks, deduplication, routing
//! by `type`, and the ingest counters.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Receiver, Reply, TestApp};

const ACCEPTED: &str = r#"hookrelay_events_ingested_total{outcome="accepted"}"#;
const DUPLICATE: &str = r#"hookrelay_events_ingested_total{outcome="duplicate"}"#;
const REJECTED: &str = r#"hookrelay_events_ingested_total{outcome="rejected"}"#;

const DASHX_COMPLETED: &str = r#"{ "id": "38ea5415-d69c-4aa2-a892-588972a534d3", "apiVersion": "2023-01-11", "created": 1745405443086, "object": "checkoutSession", "type": "checkout_session.completed", "data": { "object": { "id": "7cf3f4cf-e39a-48b5-ad07-ea7a77c4c52d", "status": "SUCCESS", "currency": "SOL", "payment_amount": "0.01000000" } } }"#;

/// An ingest request as a provider could send it: the token (if any) in the query
/// string, extra headers such as `Authorization` or `Idempotency-Key`.
async fn ingest_with(
    app: &TestApp,
    merchant_id: &str,
    query_token: Option<&str>,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (u16, Value) {
    let mut url = app.url(&format!("/ingest/{merchant_id}"));
    if let Some(token) = query_token {
        url.push_str(&format!("?token={token}"));
    }
    let mut request = app.http.post(url).header("content-type", "application/json").body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("ingest request");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn token(merchant: &Value) -> &str {
    merchant["ingest_token"].as_str().expect("ingest_token")
}

/// The merchant's events, newest first.
async fn events(app: &TestApp, merchant_id: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/api/v1/merchants/{merchant_id}/events")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().expect("data").clone()
}

/// Waits until no delivery is pending: afterwards a receiver has got everything the
/// gateway accepted before (receivers here answer 200, so nothing fails or waits).
async fn settle(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.metric("hookrelay_queue_depth").await > 0.0 {
        assert!(Instant::now() < deadline, "deliveries still pending");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `webhook-id`s a receiver got, in order.
fn webhook_ids(receiver: &Receiver) -> Vec<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

/// A merchant `acme` with one unfiltered endpoint on a fresh receiver.
async fn merchant_with_receiver(app: &TestApp) -> (Value, Receiver) {
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    (merchant, receiver)
}

/// After refused requests: no event, no delivery; one good event afterwards is the
/// only thing the receiver ever gets.
async fn assert_nothing_was_stored(app: &TestApp, merchant: &Value, receiver: &Receiver) {
    let merchant_id = merchant["id"].as_str().unwrap();
    assert_eq!(
        events(app, merchant_id).await,
        Vec::<Value>::new(),
        "a refused request left an event"
    );
    assert_eq!(
        app.metric("hookrelay_queue_depth").await,
        0.0,
        "a refused request left a delivery"
    );
    let (status, good) = app.ingest(merchant, r#"{"type":"after.refusals"}"#).await;
    assert_eq!(status, 202, "{good}");
    receiver.wait_for(1, Duration::from_secs(5)).await;
    settle(app).await;
    assert_eq!(
        webhook_ids(receiver),
        vec![good["event_id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(events(app, merchant_id).await.len(), 1);
}

#[tokio::test]
async fn the_token_works_in_the_query_string_and_as_a_bearer_header() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let bearer = format!("Bearer {}", token(&merchant));

    let (status, by_query) = ingest_with(&app, "acme", Some(token(&merchant)), &[], r#"{"type":"a"}"#).await;
    assert_eq!(status, 202, "{by_query}");
    let (status, by_header) = ingest_with(&app, "acme", None, &[("authorization", &bearer)], r#"{"type":"b"}"#).await;
    assert_eq!(status, 202, "{by_header}");

    for answer in [&by_query, &by_header] {
        assert_eq!(answer["status"], "queued", "{answer}");
        assert_eq!(answer["deliveries"], 1, "{answer}");
        assert!(answer["event_id"].as_str().unwrap().starts_with("evt_"), "{answer}");
    }
    assert_ne!(by_query["event_id"], by_header["event_id"]);
    receiver.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(events(&app, "acme").await.len(), 2);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let other = app.create_merchant("other").await;
    let right = token(&merchant).to_owned();
    // (case, `?token=`, `Authorization` header)
    let cases: [(&str, Option<String>, Option<String>); 8] = [
        ("no token at all", None, None),
        ("an empty query token", Some(String::new()), None),
        ("a wrong query token", Some("whk_wrong".into()), None),
        ("the token of another merchant", Some(token(&other).into()), None),
        ("the right token with a suffix", Some(format!("{right}x")), None),
        ("a wrong bearer token", None, Some("Bearer whk_wrong".into())),
        (
            "the right token under another scheme",
            None,
            Some(format!("Basic {right}")),
        ),
        ("a bare token without scheme", None, Some(right.clone())),
    ];
    for (case, query_token, authorization) in &cases {
        let headers: Vec<(&str, &str)> = authorization.iter().map(|v| ("authorization", v.as_str())).collect();
        let body = r#"{"id":"evt-1","type":"checkout_session.completed"}"#;
        let (status, answer) = ingest_with(&app, "acme", query_token.as_deref(), &headers, body).await;
        assert_error(status, &answer, 401, "unauthorized", case);
    }
    assert_eq!(app.metric(REJECTED).await, cases.len() as f64);
    assert_eq!(app.metric(ACCEPTED).await, 0.0);
    assert_nothing_was_stored(&app, &merchant, &receiver).await;
    // The refused `evt-1` left no idempotency record either.
    let (status, answer) = app.ingest(&merchant, r#"{"id":"evt-1"}"#).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn an_unknown_merchant_is_404_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let cases = [
        (
            "an unknown id with a valid token of another merchant",
            "nobody",
            Some(token(&merchant)),
        ),
        ("an unknown id without token", "nobody", None),
        ("an id that cannot exist", "not%20valid", Some(token(&merchant))),
        ("the id in another case", "ACME", Some(token(&merchant))),
    ];
    for (case, merchant_id, query_token) in cases {
        let (status, answer) = ingest_with(&app, merchant_id, query_token, &[], r#"{"type":"a"}"#).await;
        assert_error(status, &answer, 404, "not_found", case);
    }
    assert_eq!(app.metric(REJECTED).await, cases.len() as f64);
    assert_nothing_was_stored(&app, &merchant, &receiver).await;
}

#[tokio::test]
async fn a_body_that_is_not_one_json_object_is_400_invalid_json_and_nothing_is_stored() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let bodies = [
        "[]",
        r#"[{"id":"x"}]"#,
        r#""x""#,
        "1",
        "true",
        "null",
        "{",
        "",
        "   ",
        "{} {}",
        r#"{"id":"x"} garbage"#,
        r#"{"id":"x",}"#,
        "not json at all",
    ];
    for body in bodies {
        let (status, answer) = ingest_with(&app, "acme", Some(token(&merchant)), &[], body).await;
        assert_error(status, &answer, 400, "invalid_json", &format!("body {body:?}"));
    }
    let (status, answer) = ingest_with(&app, "acme", Some(token(&merchant)), &[], vec![0xffu8, 0xfe, b'{']).await;
    assert_error(status, &answer, 400, "invalid_json", "bytes that are not UTF-8");
    assert_eq!(app.metric(REJECTED).await, bodies.len() as f64 + 1.0);
    assert_nothing_was_stored(&app, &merchant, &receiver).await;
}

#[tokio::test]
async fn a_body_over_the_limit_with_a_declared_length_is_413_and_nothing_is_stored() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_PAYLOAD_BYTES", "1024")]).await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    for size in [1025, 4096, 200_000] {
        let body = padded_event(size);
        let (status, answer) = ingest_with(&app, "acme", Some(token(&merchant)), &[], body).await;
        assert_error(status, &answer, 413, "payload_too_large", &format!("{size} bytes"));
    }
    assert_eq!(app.metric(REJECTED).await, 3.0);
    assert_nothing_was_stored(&app, &merchant, &receiver).await;
}

#[tokio::test]
async fn a_streamed_body_without_a_length_that_grows_over_the_limit_is_413_and_nothing_is_stored() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_PAYLOAD_BYTES", "1024")]).await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let path = format!("/ingest/acme?token={}", token(&merchant));

    let (status, answer) = post_chunked(&app, &path, padded_event(2000).into_bytes()).await;
    assert_error(status, &answer, 413, "payload_too_large", "2000 bytes in chunks");
    assert_eq!(app.metric(REJECTED).await, 1.0);
    assert_nothing_was_stored(&app, &merchant, &receiver).await;

    // The same way of sending, under the limit, is accepted: the 413 was about size.
    let (status, answer) = post_chunked(&app, &path, padded_event(1000).into_bytes()).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted_and_relayed_unchanged() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_PAYLOAD_BYTES", "1024")]).await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let body = padded_event(1024);
    let (status, answer) = ingest_with(&app, "acme", Some(token(&merchant)), &[], body.clone()).await;
    assert_eq!(status, 202, "{answer}");
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].body, body.as_bytes());
}

#[tokio::test]
async fn the_same_provider_id_twice_is_one_event_with_one_delivery() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;

    let (status, first) = app.ingest(&merchant, DASHX_COMPLETED).await;
    assert_eq!(status, 202, "{first}");
    let first_id = first["event_id"].as_str().unwrap();
    receiver.wait_for(1, Duration::from_secs(5)).await;

    // Same `id`, other bytes: still the same provider event.
    let resent = DASHX_COMPLETED.replace(r#""created": 1745405443086"#, r#""created": 1745405449999"#);
    for body in [DASHX_COMPLETED, resent.as_str()] {
        let (status, again) = app.ingest(&merchant, body).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["status"], "duplicate", "{again}");
        assert_eq!(again["event_id"], first_id, "{again}");
    }
    settle(&app).await;
    assert_eq!(webhook_ids(&receiver), vec![first_id.to_owned()]);
    assert_eq!(events(&app, "acme").await.len(), 1);
    let detail = app.event("acme", first_id).await;
    assert_eq!(detail["deliveries"].as_array().unwrap().len(), 1, "{detail:#}");
    assert_eq!(
        detail["payload"]["created"], 1745405443086_i64,
        "the first event stays as it was"
    );
}

#[tokio::test]
async fn a_duplicate_while_the_first_delivery_is_still_pending_adds_no_delivery() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;

    let (status, first) = app.ingest(&merchant, r#"{"id":"pending-1"}"#).await;
    assert_eq!(status, 202, "{first}");
    let (status, again) = app.ingest(&merchant, r#"{"id":"pending-1"}"#).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], first["event_id"]);

    let event_id = first["event_id"].as_str().unwrap();
    app.wait_for_deliveries("acme", event_id, "succeeded", Duration::from_secs(5))
        .await;
    settle(&app).await;
    // One failed attempt and its retry, both of the first event.
    assert_eq!(webhook_ids(&receiver), vec![event_id.to_owned(), event_id.to_owned()]);
}

#[tokio::test]
async fn the_idempotency_key_header_wins_over_the_id_in_the_body() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let t = Some(token(&merchant));

    let (status, keyed) = ingest_with(&app, "acme", t, &[("idempotency-key", "key-1")], r#"{"id":"body-1"}"#).await;
    assert_eq!(status, 202, "{keyed}");
    // `body-1` was not the key of the first event, so this is a new one.
    let (status, by_id) = ingest_with(&app, "acme", t, &[], r#"{"id":"body-1"}"#).await;
    assert_eq!(status, 202, "{by_id}");
    assert_ne!(by_id["event_id"], keyed["event_id"]);
    // Same header, other body id: a duplicate of the first.
    let (status, again) = ingest_with(&app, "acme", t, &[("idempotency-key", "key-1")], r#"{"id":"body-2"}"#).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "duplicate");
    assert_eq!(again["event_id"], keyed["event_id"]);
    // The header alone deduplicates a body without any id.
    let (status, again) = ingest_with(&app, "acme", t, &[("idempotency-key", "key-1")], "{}").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], keyed["event_id"]);
    let (status, again) = ingest_with(&app, "acme", t, &[], r#"{"id":"body-1"}"#).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["event_id"], by_id["event_id"]);

    assert_eq!(events(&app, "acme").await.len(), 2);
}

#[tokio::test]
async fn the_same_id_for_two_merchants_is_two_events() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let acme = app.create_merchant("acme").await;
    let globex = app.create_merchant("globex").await;
    app.create_endpoint("acme", &receiver.url("/acme"), &[]).await;
    app.create_endpoint("globex", &receiver.url("/globex"), &[]).await;

    let (status, a) = app.ingest(&acme, DASHX_COMPLETED).await;
    assert_eq!(status, 202, "{a}");
    let (status, g) = app.ingest(&globex, DASHX_COMPLETED).await;
    assert_eq!(status, 202, "{g}");
    assert_ne!(a["event_id"], g["event_id"]);

    let got = receiver.wait_for(2, Duration::from_secs(5)).await;
    let mut paths: Vec<&str> = got.iter().map(|r| r.path.as_str()).collect();
    paths.sort();
    assert_eq!(paths, ["/acme", "/globex"]);
    assert_eq!(events(&app, "acme").await.len(), 1);
    assert_eq!(events(&app, "globex").await.len(), 1);
}

#[tokio::test]
async fn events_without_a_string_id_are_never_deduplicated() {
    let app = spawn_app().await;
    let (merchant, receiver) = merchant_with_receiver(&app).await;
    let bodies = [
        r#"{"type":"a"}"#,
        r#"{"type":"a"}"#,
        r#"{"id":5}"#,
        r#"{"id":5}"#,
        r#"{"id":null}"#,
        r#"{"id":null}"#,
    ];
    let mut ids = Vec::new();
    for body in bodies {
        let (status, answer) = app.ingest(&merchant, body).await;
        assert_eq!(status, 202, "{body}: {answer}");
        assert_eq!(answer["status"], "queued");
        ids.push(answer["event_id"].as_str().unwrap().to_owned());
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), bodies.len(), "{ids:?}");
    receiver.wait_for(bodies.len(), Duration::from_secs(5)).await;
    assert_eq!(app.metric(DUPLICATE).await, 0.0);
}

#[tokio::test]
async fn the_type_selects_the_enabled_endpoints_that_match() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", "6")]).await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let mut endpoint_paths = BTreeMap::new();
    for (path, types, enabled) in [
        ("/all", json!([]), true),
        ("/completed", json!(["checkout_session.completed"]), true),
        (
            "/expired-or-canceled",
            json!(["checkout_session.expired", "checkout_session.canceled"]),
            true,
        ),
        ("/sessions", json!(["checkout_session.*"]), true),
        ("/all-disabled", json!([]), false),
        ("/completed-disabled", json!(["checkout_session.completed"]), false),
    ] {
        let body = json!({ "url": receiver.url(path), "event_types": types, "enabled": enabled });
        let (status, endpoint) = app.post("/api/v1/merchants/acme/endpoints", body).await;
        assert_eq!(status, 201, "{endpoint}");
        assert_eq!(endpoint["enabled"], enabled);
        endpoint_paths.insert(endpoint["id"].as_str().unwrap().to_owned(), path);
    }

    let cases: [(&str, &[&str]); 6] = [
        (
            r#"{"type":"checkout_session.completed"}"#,
            &["/all", "/completed", "/sessions"],
        ),
        (
            r#"{"type":"checkout_session.expired"}"#,
            &["/all", "/expired-or-canceled", "/sessions"],
        ),
        (
            r#"{"type":"checkout_session.canceled"}"#,
            &["/all", "/expired-or-canceled", "/sessions"],
        ),
        (r#"{"type":"refund.created"}"#, &["/all"]),
        (r#"{"object":"checkoutSession"}"#, &["/all"]),
        (r#"{"type":7}"#, &["/all"]),
    ];
    let mut expected_received = BTreeMap::new();
    for (body, paths) in cases {
        let (status, answer) = app.ingest(&merchant, body).await;
        assert_eq!(status, 202, "{body}: {answer}");
        assert_eq!(answer["deliveries"], paths.len(), "{body}: {answer}");
        let event_id = answer["event_id"].as_str().unwrap().to_owned();
        let detail = app.event("acme", &event_id).await;
        let mut delivered_to: Vec<&str> = detail["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| endpoint_paths[d["endpoint_id"].as_str().unwrap()])
            .collect();
        delivered_to.sort();
        let mut expected = paths.to_vec();
        expected.sort();
        assert_eq!(delivered_to, expected, "{body}");
        for path in paths {
            expected_received.insert((event_id.clone(), path.to_string()), ());
        }
    }

    settle(&app).await;
    let received: Vec<(String, String)> = receiver
        .received()
        .iter()
        .map(|r| (r.header("webhook-id").to_owned(), r.path.clone()))
        .collect();
    assert_eq!(received.len(), expected_received.len(), "{received:?}");
    for key in &received {
        assert!(expected_received.contains_key(key), "unexpected delivery {key:?}");
    }
}

#[tokio::test]
async fn the_ingest_counters_count_accepted_duplicate_and_rejected_requests() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    for (series, value) in [(ACCEPTED, 0.0), (DUPLICATE, 0.0), (REJECTED, 0.0)] {
        assert_eq!(app.metric(series).await, value, "{series}");
    }
    for body in [
        r#"{"id":"a"}"#,
        r#"{"id":"b"}"#,
        r#"{"id":"a"}"#,
        "[]",
        r#"{"id":"a"}"#,
        r#"{"id":"c"}"#,
    ] {
        app.ingest(&merchant, body).await;
    }
    ingest_with(&app, "acme", Some("wrong"), &[], "{}").await;
    ingest_with(&app, "nobody", Some("wrong"), &[], "{}").await;

    assert_eq!(app.metric(ACCEPTED).await, 3.0);
    assert_eq!(app.metric(DUPLICATE).await, 2.0);
    assert_eq!(app.metric(REJECTED).await, 3.0);
}

/// A JSON object of exactly `size` bytes.
fn padded_event(size: usize) -> String {
    let frame = r#"{"type":"big","pad":""}"#;
    assert!(size >= frame.len());
    format!(r#"{{"type":"big","pad":"{}"}}"#, "x".repeat(size - frame.len()))
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a plain
/// socket, in chunks of 256 bytes; answers the status and the JSON body.
async fn post_chunked(app: &TestApp, path: &str, body: Vec<u8>) -> (u16, Value) {
    let (port, path) = (app.port, path.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
        );
        let mut request = head.into_bytes();
        for chunk in body.chunks(256) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        // The gateway may answer and close before reading it all; the answer still counts.
        let _ = stream.write_all(&request);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("no answer: {response:?}"));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}
