//! Abuse limits on the listener and on ingest, through the HTTP interface: the
//! per-merchant rate limit, the request-head size limit, the connection cap.

use std::collections::BTreeMap;
use std::time::Duration;

use hookrelay::config::Settings;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{assert_error, spawn_app_with, TestApp};

/// Sends an event as a provider does and returns status, `Retry-After` and body.
async fn ingest(app: &TestApp, merchant: &Value, body: &str) -> (u16, Option<String>, Value) {
    let response = app
        .http
        .post(merchant["ingest_url"].as_str().unwrap())
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

async fn event_count(app: &TestApp, merchant: &str) -> usize {
    let (status, body) = app.get(&format!("/api/v1/merchants/{merchant}/events")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_merchant_over_its_ingest_rate_gets_429_with_retry_after_and_nothing_is_stored() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "1"),
        ("HOOKRELAY_INGEST_BURST", "2"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    for n in 0..2 {
        let (status, _, body) = ingest(&app, &merchant, &format!(r#"{{"id":"e{n}"}}"#)).await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, retry_after, body) = ingest(&app, &merchant, r#"{"id":"e2"}"#).await;
    assert_error(status, &body, 429, "rate_limited", "third event within the burst of 2");
    let retry_after: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");

    assert_eq!(event_count(&app, "acme").await, 2, "the refused event was not stored");
    assert_eq!(app.metric("hookrelay_ingest_rate_limited_total").await, 1.0);
    assert_eq!(
        app.metric("hookrelay_events_ingested_total{outcome=\"rejected\"}")
            .await,
        1.0
    );
    assert_eq!(
        app.metric("hookrelay_events_ingested_total{outcome=\"accepted\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn the_rate_limit_is_per_merchant_and_refills_with_time() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "2"),
        ("HOOKRELAY_INGEST_BURST", "1"),
    ])
    .await;
    let acme = app.create_merchant("acme").await;
    let other = app.create_merchant("other").await;
    assert_eq!(ingest(&app, &acme, "{}").await.0, 202);
    let (status, retry_after, _) = ingest(&app, &acme, "{}").await;
    assert_eq!(status, 429);
    assert_eq!(
        retry_after.as_deref(),
        Some("1"),
        "a wait under a second is rounded up to 1"
    );
    assert_eq!(
        ingest(&app, &other, "{}").await.0,
        202,
        "another merchant has its own budget"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(ingest(&app, &acme, "{}").await.0, 202, "one token is back after 500 ms");
}

#[tokio::test]
async fn requests_with_a_wrong_token_do_not_spend_the_merchants_budget() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "1"),
        ("HOOKRELAY_INGEST_BURST", "1"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    for _ in 0..5 {
        let (status, body) = app
            .send_raw(reqwest::Method::POST, "/ingest/acme?token=whk_wrong", None, Some("{}"))
            .await;
        assert_eq!(status, 401, "{body}");
    }
    assert_eq!(ingest(&app, &merchant, "{}").await.0, 202);
}

#[tokio::test]
async fn a_rate_of_zero_turns_the_ingest_limit_off() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "0"),
        ("HOOKRELAY_INGEST_BURST", "1"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    for _ in 0..5 {
        assert_eq!(ingest(&app, &merchant, "{}").await.0, 202);
    }
}

/// Writes a raw HTTP/1.1 request and returns the status code of the answer.
async fn raw_status(port: u16, request: Vec<u8>) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and stop reading before the whole head is written.
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or("");
    status.parse().unwrap_or_else(|_| panic!("no HTTP answer: {text:?}"))
}

type Headers = Vec<(String, String)>;

fn request_with_headers(headers: &[(String, String)]) -> Vec<u8> {
    let mut request = String::from("GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.into_bytes()
}

#[tokio::test]
async fn a_request_head_over_the_limits_is_answered_431() {
    let app = spawn_app_with(&[]).await;
    // actix-http keeps at most 128 KiB of request head and 96 headers.
    let cases: [(&str, Headers, u16); 4] = [
        ("one 8 KiB header", vec![("x-big".into(), "a".repeat(8 * 1024))], 200),
        (
            "90 headers",
            (0..90).map(|n| (format!("x-h{n}"), "v".into())).collect(),
            200,
        ),
        (
            "one 140 KiB header",
            vec![("x-big".into(), "a".repeat(140 * 1024))],
            431,
        ),
        (
            "100 headers",
            (0..100).map(|n| (format!("x-h{n}"), "v".into())).collect(),
            431,
        ),
    ];
    for (name, headers, expected) in cases {
        assert_eq!(
            raw_status(app.port, request_with_headers(&headers)).await,
            expected,
            "{name}"
        );
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_CONNECTIONS", "1")]).await;
    // One connection per worker is the cap; workers are one per CPU. Hold more than that.
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get());
    let mut held = Vec::new();
    for _ in 0..workers + 2 {
        held.push(TcpStream::connect(("127.0.0.1", app.port)).await.unwrap());
    }
    let client = |timeout| reqwest::Client::builder().no_proxy().timeout(timeout).build().unwrap();
    let waiting = client(Duration::from_millis(500)).get(app.url("/healthz")).send().await;
    assert!(
        waiting.as_ref().is_err_and(reqwest::Error::is_timeout),
        "a connection over the cap was served: {waiting:?}"
    );
    drop(held);
    let served = client(Duration::from_secs(5))
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[test]
fn ingest_and_listener_limits_have_production_defaults_and_refuse_bad_values() {
    let defaults = Settings::from_sources(None, &BTreeMap::new()).unwrap();
    assert_eq!(defaults.ingest_rate_per_second, 1000);
    assert_eq!(defaults.ingest_burst, 2000);
    assert_eq!(defaults.max_connections, 10_000);
    let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    };
    let s = Settings::from_sources(None, &env(&[("HOOKRELAY_INGEST_RATE_PER_SECOND", "50")])).unwrap();
    assert_eq!(s.ingest_burst, 100, "the burst follows the rate when unset");
    for (name, value) in [
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "-1"),
        ("HOOKRELAY_INGEST_RATE_PER_SECOND", "fast"),
        ("HOOKRELAY_INGEST_BURST", "0"),
        ("HOOKRELAY_MAX_CONNECTIONS", "0"),
        ("HOOKRELAY_MAX_CONNECTIONS", "many"),
    ] {
        let error = Settings::from_sources(None, &env(&[(name, value)]))
            .expect_err(value)
            .to_string();
        assert!(error.contains(name), "{name}={value}: {error}");
    }
}
