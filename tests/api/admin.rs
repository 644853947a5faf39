//! The admin API under `/api/v1`: the bearer token, merchants, endpoints, events,
//! attempts, replay and recovery, and the shape of lists and errors.

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, Utc};
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_error, closed_port, spawn_app, spawn_app_with, Receiver, Reply, TestApp, ADMIN_TOKEN};

const DASHX_COMPLETED: &str = r#"{ "id": "38ea5415-d69c-4aa2-a892-588972a534d3", "apiVersion": "2023-01-11", "created": 1745405443086, "object": "checkoutSession", "type": "checkout_session.completed", "data": { "object": { "id": "7cf3f4cf-e39a-48b5-ad07-ea7a77c4c52d", "createdAt": "2025-04-23T10:50:41.449683Z", "amountTotal": "0.00987000", "status": "SUCCESS", "currency": "SOL", "payment_amount": "0.01000000" } } }"#;

fn rfc3339(value: &Value) -> DateTime<FixedOffset> {
    let text = value.as_str().unwrap_or_else(|| panic!("not a string: {value}"));
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{text:?} is not RFC 3339: {e}"))
}

/// Asserts an RFC 3339 time within a minute of now.
fn assert_recent(value: &Value) {
    let age = Utc::now().signed_duration_since(rfc3339(value));
    assert!(age.num_seconds().abs() < 60, "{value} is not about now");
}

fn is_merchant_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Follows `next_cursor` from the first page to the last; answers the items and page sizes.
async fn all_pages(app: &TestApp, path: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
    let separator = if path.contains('?') { '&' } else { '?' };
    let (mut items, mut sizes, mut cursor) = (Vec::new(), Vec::new(), None::<String>);
    loop {
        let mut url = format!("{path}{separator}limit={limit}");
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (status, page) = app.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let data = page["data"]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: no data: {page}"));
        assert!(data.len() <= limit, "{url}: {} items", data.len());
        sizes.push(data.len());
        items.extend(data.iter().cloned());
        match &page["next_cursor"] {
            Value::Null => return (items, sizes),
            Value::String(next) => cursor = Some(next.clone()),
            other => panic!("{url}: next_cursor is {other}"),
        }
        assert!(sizes.len() <= 100, "{path}: the cursor never ends");
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|item| item["id"].as_str().expect("id").to_owned())
        .collect()
}

fn secret_key(secret: &str) -> Vec<u8> {
    let encoded = secret
        .strip_prefix("whsec_")
        .unwrap_or_else(|| panic!("{secret} lacks whsec_"));
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("{secret}: {e}"))
}

/// The Standard Webhooks signature of a delivery, `v1,<base64>`.
fn signature(secret: &str, webhook_id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret_key(secret)).unwrap();
    mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

fn valid_secret(byte: u8, len: usize) -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(vec![byte; len])
    )
}

async fn endpoint_count(app: &TestApp, merchant: &str) -> usize {
    let (status, list) = app.get(&format!("/api/v1/merchants/{merchant}/endpoints")).await;
    assert_eq!(status, 200, "{list}");
    list["data"].as_array().unwrap().len()
}

// ---- the admin token ----

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let (_, event) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    let (ep, evt) = (endpoint["id"].as_str().unwrap(), event["event_id"].as_str().unwrap());
    let m = "/api/v1/merchants/acme";
    let routes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::GET, "/api/v1/openapi.json".into(), None),
        (Method::POST, "/api/v1/merchants".into(), Some(r#"{"id":"intruder"}"#)),
        (Method::GET, "/api/v1/merchants".into(), None),
        (Method::GET, m.into(), None),
        (Method::PATCH, m.into(), Some(r#"{"verification":null}"#)),
        (Method::POST, format!("{m}/reveal-token"), None),
        (Method::POST, format!("{m}/rotate-token"), None),
        (Method::POST, format!("{m}/endpoints/{ep}/reveal-secret"), None),
        (Method::DELETE, m.into(), None),
        (Method::GET, "/api/v1/merchants/nobody".into(), None),
        (
            Method::POST,
            format!("{m}/endpoints"),
            Some(r#"{"url":"https://evil.example/h"}"#),
        ),
        (Method::GET, format!("{m}/endpoints"), None),
        (Method::GET, format!("{m}/endpoints/{ep}"), None),
        (
            Method::PATCH,
            format!("{m}/endpoints/{ep}"),
            Some(r#"{"enabled":false}"#),
        ),
        (Method::DELETE, format!("{m}/endpoints/{ep}"), None),
        (Method::POST, format!("{m}/endpoints/{ep}/rotate-secret"), Some("{}")),
        (
            Method::POST,
            format!("{m}/endpoints/{ep}/recover"),
            Some(r#"{"since":"2020-01-01T00:00:00Z"}"#),
        ),
        (Method::GET, format!("{m}/events"), None),
        (Method::GET, format!("{m}/events/{evt}"), None),
        (Method::GET, format!("{m}/events/{evt}/attempts"), None),
        (Method::POST, format!("{m}/events/{evt}/replay"), Some("{}")),
    ];
    let ingest_token = merchant["ingest_token"].as_str().unwrap();
    let credentials: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("a wrong bearer token", Some("Bearer wrong-token".into())),
        ("an empty bearer token", Some("Bearer ".into())),
        ("the admin token with a suffix", Some(format!("Bearer {ADMIN_TOKEN}x"))),
        (
            "a prefix of the admin token",
            Some(format!("Bearer {}", &ADMIN_TOKEN[..10])),
        ),
        ("the admin token under Basic", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("the admin token without scheme", Some(ADMIN_TOKEN.into())),
        ("the merchant's ingest token", Some(format!("Bearer {ingest_token}"))),
    ];
    for (method, path, body) in &routes {
        for (case, authorization) in &credentials {
            let (status, answer) = app
                .send_raw(method.clone(), path, authorization.as_deref(), *body)
                .await;
            assert_error(
                status,
                &answer,
                401,
                "unauthorized",
                &format!("{method} {path} with {case}"),
            );
        }
    }

    // Nothing was created, changed or deleted.
    let (status, merchants) = app.get("/api/v1/merchants").await;
    assert_eq!(status, 200, "{merchants}");
    assert_eq!(ids(merchants["data"].as_array().unwrap()), ["acme"]);
    let (status, now) = app.get(&format!("{m}/endpoints/{ep}")).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!(now["enabled"], true);
    assert_eq!(app.revealed_secret("acme", ep).await, endpoint["secret"]);
    assert_eq!(
        app.revealed_token("acme").await["ingest_token"],
        merchant["ingest_token"]
    );
    assert_eq!(endpoint_count(&app, "acme").await, 1);
    app.event("acme", evt).await;
    // The scheme name is case-insensitive (RFC 9110).
    let (status, _) = app
        .send_raw(Method::GET, m, Some(&format!("bearer {ADMIN_TOKEN}")), None)
        .await;
    assert_eq!(status, 200);
}

// ---- merchants ----

#[tokio::test]
async fn a_merchant_created_with_an_id_gets_a_token_and_an_ingest_url_that_works() {
    let app = spawn_app().await;
    let (status, merchant) = app
        .post("/api/v1/merchants", json!({ "id": "acme-shop_1", "name": "Acme Shop" }))
        .await;
    assert_eq!(status, 201, "{merchant}");
    assert_eq!(merchant["id"], "acme-shop_1");
    assert_eq!(merchant["name"], "Acme Shop");
    let token = merchant["ingest_token"].as_str().expect("ingest_token");
    assert!(token.len() >= 16, "a guessable ingest token: {token}");
    assert_eq!(
        merchant["ingest_url"],
        format!("{}/ingest/acme-shop_1?token={token}", app.address)
    );
    assert_recent(&merchant["created_at"]);

    let (status, read) = app.get("/api/v1/merchants/acme-shop_1").await;
    assert_eq!(status, 200, "{read}");
    for field in ["id", "name", "created_at"] {
        assert_eq!(read[field], merchant[field], "{field}");
    }
    assert_eq!(
        app.revealed_token("acme-shop_1").await["ingest_url"],
        merchant["ingest_url"]
    );

    let url = merchant["ingest_url"].as_str().unwrap();
    let response = app.http.post(url).body(r#"{"type":"a"}"#).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 202);

    // Two merchants never share a token.
    let other = app.create_merchant("other").await;
    assert_ne!(other["ingest_token"], merchant["ingest_token"]);
}

#[tokio::test]
async fn the_ingest_url_is_built_on_the_public_url() {
    let app = spawn_app_with(&[("HOOKRELAY_PUBLIC_URL", "https://hooks.example.com/relay/")]).await;
    let merchant = app.create_merchant("acme").await;
    let token = merchant["ingest_token"].as_str().unwrap();
    assert_eq!(
        merchant["ingest_url"],
        format!("https://hooks.example.com/relay/ingest/acme?token={token}")
    );
}

#[tokio::test]
async fn a_merchant_created_without_an_id_gets_a_generated_one() {
    let app = spawn_app().await;
    let mut seen = BTreeSet::new();
    for body in [json!({}), json!({ "name": "Nameless" }), json!({ "id": null })] {
        let (status, merchant) = app.post("/api/v1/merchants", body.clone()).await;
        assert_eq!(status, 201, "{body}: {merchant}");
        let id = merchant["id"].as_str().expect("id");
        assert!(is_merchant_id(id), "generated id {id:?}");
        assert!(seen.insert(id.to_owned()), "id {id} generated twice");
        assert_eq!(
            merchant["ingest_url"],
            format!(
                "{}/ingest/{id}?token={}",
                app.address,
                merchant["ingest_token"].as_str().unwrap()
            )
        );
        let (status, _) = app.get(&format!("/api/v1/merchants/{id}")).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn a_taken_merchant_id_is_409_and_the_first_merchant_is_kept() {
    let app = spawn_app().await;
    let first = app.create_merchant("acme").await;
    let (status, answer) = app
        .post("/api/v1/merchants", json!({ "id": "acme", "name": "Impostor" }))
        .await;
    assert_error(status, &answer, 409, "merchant_exists", "the same id again");
    let (_, read) = app.get("/api/v1/merchants/acme").await;
    assert_eq!(read["name"], "acme");
    assert_eq!(app.revealed_token("acme").await["ingest_url"], first["ingest_url"]);
}

#[tokio::test]
async fn merchant_ids_outside_the_pattern_are_422_and_nothing_is_created() {
    let app = spawn_app().await;
    let too_long = "x".repeat(65);
    let invalid = [
        "",
        " ",
        "has space",
        "a/b",
        "a.b",
        "a+b",
        "ümlaut",
        "tab\t",
        "new\nline",
        "%41",
        too_long.as_str(),
    ];
    for id in invalid {
        let (status, answer) = app.post("/api/v1/merchants", json!({ "id": id })).await;
        assert_error(status, &answer, 422, "invalid_merchant_id", &format!("id {id:?}"));
    }
    for id in [json!(5), json!(true), json!(["a"]), json!({ "a": 1 })] {
        let (status, answer) = app.post("/api/v1/merchants", json!({ "id": id })).await;
        assert_error(status, &answer, 422, "validation_error", &format!("id {id}"));
    }
    let (_, list) = app.get("/api/v1/merchants").await;
    assert_eq!(list["data"], json!([]));

    let longest = "x".repeat(64);
    for id in ["a", "-", "_", "A-Za-z0-9_-", longest.as_str()] {
        let (status, answer) = app.post("/api/v1/merchants", json!({ "id": id })).await;
        assert_eq!(status, 201, "id {id:?}: {answer}");
        assert_eq!(answer["id"], id);
    }
}

#[tokio::test]
async fn merchant_bodies_that_are_not_json_are_400_and_wrong_fields_422() {
    let app = spawn_app().await;
    let cases = [
        ("{", 400, "invalid_json"),
        ("not json", 400, "invalid_json"),
        (r#"{"id":"acme""#, 400, "invalid_json"),
        (r#"{"id":"acme","colour":"red"}"#, 422, "validation_error"),
        (r#"{"id":"acme","name":5}"#, 422, "validation_error"),
        ("[]", 422, "validation_error"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app
            .send_raw(
                Method::POST,
                "/api/v1/merchants",
                Some(&format!("Bearer {ADMIN_TOKEN}")),
                Some(body),
            )
            .await;
        assert_error(got, &answer, status, code, &format!("body {body:?}"));
    }
    let (_, list) = app.get("/api/v1/merchants").await;
    assert_eq!(list["data"], json!([]));
}

#[tokio::test]
async fn merchants_are_listed_page_by_page_each_exactly_once() {
    let app = spawn_app().await;
    for n in 1..=7 {
        app.create_merchant(&format!("m{n}")).await;
    }
    let (items, sizes) = all_pages(&app, "/api/v1/merchants", 3).await;
    assert_eq!(sizes, [3, 3, 1]);
    let seen = ids(&items);
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>().len(), 7, "{seen:?}");
    assert_eq!(
        seen.into_iter().collect::<BTreeSet<_>>(),
        (1..=7).map(|n| format!("m{n}")).collect()
    );
    for item in &items {
        assert!(
            item["id"].is_string() && item["created_at"].is_string() && item.get("ingest_url").is_none(),
            "{item}"
        );
    }

    let (status, page) = app.get("/api/v1/merchants").await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 7);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, sizes) = all_pages(&app, "/api/v1/merchants", 7).await;
    assert_eq!(sizes, [7]);
}

#[tokio::test]
async fn an_unknown_merchant_is_404_on_every_merchant_route() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let ep = "ep_0190a1b2c3d4e5f60718293a4b5c6d7e";
    let evt = "evt_0190a1b2c3d4e5f60718293a4b5c6d7e";
    for merchant in ["nobody", "ACME", "not%20valid"] {
        let m = format!("/api/v1/merchants/{merchant}");
        let routes: Vec<(Method, String, Option<Value>)> = vec![
            (Method::GET, m.clone(), None),
            (Method::DELETE, m.clone(), None),
            (
                Method::POST,
                format!("{m}/endpoints"),
                Some(json!({ "url": "https://example.com/h" })),
            ),
            (Method::GET, format!("{m}/endpoints"), None),
            (Method::GET, format!("{m}/endpoints/{ep}"), None),
            (
                Method::PATCH,
                format!("{m}/endpoints/{ep}"),
                Some(json!({ "enabled": false })),
            ),
            (Method::DELETE, format!("{m}/endpoints/{ep}"), None),
            (
                Method::POST,
                format!("{m}/endpoints/{ep}/rotate-secret"),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("{m}/endpoints/{ep}/recover"),
                Some(json!({ "since": "2020-01-01T00:00:00Z" })),
            ),
            (Method::GET, format!("{m}/events"), None),
            (Method::GET, format!("{m}/events/{evt}"), None),
            (Method::GET, format!("{m}/events/{evt}/attempts"), None),
            (Method::POST, format!("{m}/events/{evt}/replay"), Some(json!({}))),
        ];
        for (method, path, body) in routes {
            let (status, answer) = app.admin(method.clone(), &path, body).await;
            assert_error(status, &answer, 404, "not_found", &format!("{method} {path}"));
        }
    }
}

#[tokio::test]
async fn a_deleted_merchant_is_gone_and_so_is_its_ingest_url() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    app.create_merchant("kept").await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let (status, _) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    assert_eq!(status, 202);

    let response = app
        .http
        .delete(app.url("/api/v1/merchants/acme"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    assert!(response.bytes().await.unwrap().is_empty(), "a 204 with a body");

    for (method, path) in [
        (Method::GET, "/api/v1/merchants/acme"),
        (Method::DELETE, "/api/v1/merchants/acme"),
        (Method::GET, "/api/v1/merchants/acme/endpoints"),
        (Method::GET, "/api/v1/merchants/acme/events"),
    ] {
        let (status, answer) = app.admin(method.clone(), path, None).await;
        assert_error(
            status,
            &answer,
            404,
            "not_found",
            &format!("{method} {path} after delete"),
        );
    }
    let (status, answer) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    assert_error(status, &answer, 404, "not_found", "ingest after delete");
    let (_, list) = app.get("/api/v1/merchants").await;
    assert_eq!(ids(list["data"].as_array().unwrap()), ["kept"]);

    // The id can be taken again, and starts empty with a new token.
    let again = app.create_merchant("acme").await;
    assert_ne!(again["ingest_token"], merchant["ingest_token"]);
    assert_eq!(endpoint_count(&app, "acme").await, 0);
    let (_, events) = app.get("/api/v1/merchants/acme/events").await;
    assert_eq!(events["data"], json!([]));
    let (status, answer) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    assert_error(
        status,
        &answer,
        401,
        "unauthorized",
        "the old token on the new merchant",
    );
}

// ---- lists ----

/// Every list route, on an app with one merchant, endpoint, event and attempt.
async fn app_with_every_list() -> (TestApp, Vec<String>) {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &format!("http://127.0.0.1:{}/dead", closed_port()), &[])
        .await;
    let (_, event) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    let evt = event["event_id"].as_str().unwrap();
    let lists = vec![
        "/api/v1/merchants".to_owned(),
        "/api/v1/merchants/acme/endpoints".to_owned(),
        "/api/v1/merchants/acme/events".to_owned(),
        "/api/v1/merchants/acme/events?type=a".to_owned(),
        format!("/api/v1/merchants/acme/events/{evt}/attempts"),
    ];
    (app, lists)
}

async fn assert_every_list_refuses(app: &TestApp, lists: &[String], parameter: &str, values: &[&str], code: &str) {
    for list in lists {
        let separator = if list.contains('?') { '&' } else { '?' };
        for value in values {
            let path = format!("{list}{separator}{parameter}={value}");
            let (status, answer) = app.get(&path).await;
            assert_error(status, &answer, 400, code, &path);
        }
    }
}

#[tokio::test]
async fn list_limits_outside_1_to_500_are_400_invalid_limit() {
    let (app, lists) = app_with_every_list().await;
    assert_every_list_refuses(&app, &lists, "limit", &["0", "501", "100000"], "invalid_limit").await;
    for list in &lists {
        let separator = if list.contains('?') { '&' } else { '?' };
        for limit in ["1", "500"] {
            let path = format!("{list}{separator}limit={limit}");
            let (status, answer) = app.get(&path).await;
            assert_eq!(status, 200, "{path}: {answer}");
            assert!(
                answer["data"].is_array() && answer.get("next_cursor").is_some(),
                "{path}: {answer}"
            );
        }
    }
}

#[tokio::test]
async fn a_list_limit_that_is_not_a_number_is_400_invalid_limit() {
    let (app, lists) = app_with_every_list().await;
    assert_every_list_refuses(&app, &lists, "limit", &["-1", "abc", "1.5", ""], "invalid_limit").await;
}

#[tokio::test]
async fn a_cursor_the_api_did_not_hand_out_is_400_invalid_cursor() {
    let (app, lists) = app_with_every_list().await;
    assert_every_list_refuses(
        &app,
        &lists,
        "cursor",
        &["!!!", "not%20a%20cursor", "%FF%FE"],
        "invalid_cursor",
    )
    .await;
}

// ---- endpoints ----

#[tokio::test]
async fn an_endpoint_is_created_enabled_with_a_generated_secret() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let url = "https://shop.example.com/webhooks/dashx?source=relay";
    let body = json!({ "url": url, "event_types": ["checkout_session.completed"], "description": "orders" });
    let (status, endpoint) = app.post("/api/v1/merchants/acme/endpoints", body).await;
    assert_eq!(status, 201, "{endpoint}");
    assert!(endpoint["id"].as_str().unwrap().starts_with("ep_"), "{endpoint}");
    assert_eq!(endpoint["url"], url);
    assert_eq!(endpoint["event_types"], json!(["checkout_session.completed"]));
    assert_eq!(endpoint["description"], "orders");
    assert_eq!(endpoint["enabled"], true);
    assert_recent(&endpoint["created_at"]);
    let secret = endpoint["secret"].as_str().unwrap();
    assert!(secret_key(secret).len() >= 24, "{secret}");

    let (status, bare) = app
        .post(
            "/api/v1/merchants/acme/endpoints",
            json!({ "url": "http://127.0.0.1:9/h" }),
        )
        .await;
    assert_eq!(status, 201, "{bare}");
    assert_eq!(bare["event_types"], json!([]));
    assert_eq!(bare["enabled"], true);
    assert_ne!(bare["id"], endpoint["id"]);
    assert_ne!(
        bare["secret"], endpoint["secret"],
        "two endpoints share a generated secret"
    );

    let (status, read) = app
        .get(&format!(
            "/api/v1/merchants/acme/endpoints/{}",
            endpoint["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{read}");
    for field in ["id", "url", "event_types", "description", "enabled", "created_at"] {
        assert_eq!(read[field], endpoint[field], "{field}");
    }
    assert!(read.get("secret").is_none(), "a read shows no secret: {read}");
    assert_eq!(
        app.revealed_secret("acme", endpoint["id"].as_str().unwrap()).await,
        endpoint["secret"]
    );
}

#[tokio::test]
async fn urls_that_are_not_absolute_http_or_https_are_422_and_nothing_is_created() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let cases = [
        (json!("/relative/hook"), "invalid_url"),
        (json!("hook"), "invalid_url"),
        (json!("example.com/hook"), "invalid_url"),
        (json!("ftp://example.com/hook"), "invalid_url"),
        (json!("file:///etc/passwd"), "invalid_url"),
        (json!("javascript:alert(1)"), "invalid_url"),
        (json!("mailto:ops@example.com"), "invalid_url"),
        (json!("http://"), "invalid_url"),
        (json!("https://"), "invalid_url"),
        (json!(""), "invalid_url"),
        (json!(5), "validation_error"),
        (json!(null), "validation_error"),
        (json!(["https://example.com"]), "validation_error"),
    ];
    for (url, code) in cases {
        let (status, answer) = app
            .post("/api/v1/merchants/acme/endpoints", json!({ "url": url }))
            .await;
        assert_error(status, &answer, 422, code, &format!("url {url}"));
    }
    let (status, answer) = app
        .post("/api/v1/merchants/acme/endpoints", json!({ "event_types": [] }))
        .await;
    assert_error(status, &answer, 422, "validation_error", "no url");
    assert_eq!(endpoint_count(&app, "acme").await, 0);

    for url in [
        "http://example.com",
        "https://example.com:8443/a/b?c=d",
        "HTTPS://EXAMPLE.COM/x",
        "http://127.0.0.1:9/h",
    ] {
        let (status, answer) = app
            .post("/api/v1/merchants/acme/endpoints", json!({ "url": url }))
            .await;
        assert_eq!(status, 201, "{url}: {answer}");
    }
}

#[tokio::test]
async fn a_given_secret_signs_deliveries_and_an_invalid_one_is_422() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let short = valid_secret(1, 8);
    let invalid = [
        "",
        "plain",
        "whsec_",
        "whsec_not base64!!",
        "WHSEC_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        short.as_str(),
    ];
    for secret in invalid {
        let body = json!({ "url": receiver.url("/hook"), "secret": secret });
        let (status, answer) = app.post("/api/v1/merchants/acme/endpoints", body).await;
        assert_error(status, &answer, 422, "invalid_secret", &format!("secret {secret:?}"));
    }
    let (status, answer) = app
        .post(
            "/api/v1/merchants/acme/endpoints",
            json!({ "url": receiver.url("/h"), "secret": 5 }),
        )
        .await;
    assert_error(
        status,
        &answer,
        422,
        "validation_error",
        "a secret that is not a string",
    );
    assert_eq!(endpoint_count(&app, "acme").await, 0);

    let secret = valid_secret(7, 32);
    let body = json!({ "url": receiver.url("/hook"), "secret": secret });
    let (status, endpoint) = app.post("/api/v1/merchants/acme/endpoints", body).await;
    assert_eq!(status, 201, "{endpoint}");
    assert_eq!(endpoint["secret"], secret);

    let (status, _) = app.ingest(&merchant, DASHX_COMPLETED).await;
    assert_eq!(status, 202);
    let got = &receiver.wait_for(1, Duration::from_secs(5)).await[0];
    let expected = signature(
        &secret,
        got.header("webhook-id"),
        got.header("webhook-timestamp"),
        &got.body,
    );
    assert_eq!(got.header("webhook-signature"), expected);
}

#[tokio::test]
async fn the_sixth_endpoint_is_refused_with_endpoint_limit_reached() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    app.create_merchant("other").await;
    let mut created = Vec::new();
    for n in 0..5 {
        created.push(
            app.create_endpoint("acme", &format!("https://example.com/{n}"), &[])
                .await,
        );
    }
    let (status, answer) = app
        .post(
            "/api/v1/merchants/acme/endpoints",
            json!({ "url": "https://example.com/6" }),
        )
        .await;
    assert_error(status, &answer, 409, "endpoint_limit_reached", "the sixth endpoint");
    let (status, answer) = app
        .post(
            "/api/v1/merchants/acme/endpoints",
            json!({ "url": "https://example.com/7", "enabled": false }),
        )
        .await;
    assert_error(
        status,
        &answer,
        409,
        "endpoint_limit_reached",
        "a sixth, disabled endpoint",
    );
    assert_eq!(endpoint_count(&app, "acme").await, 5);

    // The limit is per merchant, and deleting one makes room again.
    app.create_endpoint("other", "https://example.com/other", &[]).await;
    let first = created[0]["id"].as_str().unwrap();
    let (status, _) = app
        .admin(
            Method::DELETE,
            &format!("/api/v1/merchants/acme/endpoints/{first}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    app.create_endpoint("acme", "https://example.com/again", &[]).await;
    assert_eq!(endpoint_count(&app, "acme").await, 5);
}

#[tokio::test]
async fn a_configured_endpoint_limit_applies() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", "2")]).await;
    app.create_merchant("acme").await;
    app.create_endpoint("acme", "https://example.com/1", &[]).await;
    app.create_endpoint("acme", "https://example.com/2", &[]).await;
    let (status, answer) = app
        .post(
            "/api/v1/merchants/acme/endpoints",
            json!({ "url": "https://example.com/3" }),
        )
        .await;
    assert_error(status, &answer, 409, "endpoint_limit_reached", "the third endpoint");
    assert_eq!(endpoint_count(&app, "acme").await, 2);
}

#[tokio::test]
async fn endpoints_are_listed_read_changed_and_deleted() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let a = app.create_endpoint("acme", &receiver.url("/a"), &["type.a"]).await;
    let b = app.create_endpoint("acme", &receiver.url("/b"), &[]).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let a_path = format!("/api/v1/merchants/acme/endpoints/{a_id}");

    let (items, sizes) = all_pages(&app, "/api/v1/merchants/acme/endpoints", 1).await;
    assert_eq!(sizes, [1, 1]);
    assert_eq!(
        ids(&items).into_iter().collect::<BTreeSet<_>>(),
        [a_id.to_owned(), b_id.to_owned()].into()
    );

    let changes = json!({
        "url": receiver.url("/a2"),
        "event_types": ["type.b", "type.c"],
        "description": "changed",
        "enabled": true,
    });
    let (status, changed) = app.admin(Method::PATCH, &a_path, Some(changes)).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["url"], receiver.url("/a2"));
    assert_eq!(changed["event_types"], json!(["type.b", "type.c"]));
    assert_eq!(changed["description"], "changed");
    assert_eq!(
        app.revealed_secret("acme", a["id"].as_str().unwrap()).await,
        a["secret"],
        "a PATCH must not change the secret"
    );
    assert_eq!(changed["id"], a["id"]);
    let (_, read) = app.get(&a_path).await;
    assert_eq!(read, changed);

    // A partial PATCH changes only what it names.
    let (status, disabled) = app
        .admin(Method::PATCH, &a_path, Some(json!({ "enabled": false })))
        .await;
    assert_eq!(status, 200, "{disabled}");
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["url"], receiver.url("/a2"));
    assert_eq!(disabled["description"], "changed");

    // The changes route: `type.b` now reaches only `b` (a is disabled); after enabling, a too.
    let (_, answer) = app.ingest(&merchant, r#"{"type":"type.b"}"#).await;
    assert_eq!(answer["deliveries"], 1, "{answer}");
    app.admin(Method::PATCH, &a_path, Some(json!({ "enabled": true })))
        .await;
    let (_, answer) = app.ingest(&merchant, r#"{"type":"type.a"}"#).await;
    assert_eq!(answer["deliveries"], 1, "the old filter still applies: {answer}");
    let (_, answer) = app.ingest(&merchant, r#"{"type":"type.c"}"#).await;
    assert_eq!(answer["deliveries"], 2, "{answer}");
    let got = receiver.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(got.iter().filter(|r| r.path == "/a2").count(), 1);
    assert!(got.iter().all(|r| r.path != "/a"), "a delivery went to the old url");

    let response = app
        .http
        .delete(app.url(&a_path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 204);
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({ "enabled": false }))),
        (Method::DELETE, None),
        (Method::POST, None),
    ] {
        let path = if method == Method::POST {
            format!("{a_path}/rotate-secret")
        } else {
            a_path.clone()
        };
        let (status, answer) = app.admin(method.clone(), &path, body).await;
        assert_error(
            status,
            &answer,
            404,
            "not_found",
            &format!("{method} {path} after delete"),
        );
    }
    let (_, list) = app.get("/api/v1/merchants/acme/endpoints").await;
    assert_eq!(ids(list["data"].as_array().unwrap()), [b_id]);
}

#[tokio::test]
async fn a_refused_patch_changes_nothing() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let body = json!({ "url": "https://example.com/h", "event_types": ["a"], "description": "before" });
    let (_, endpoint) = app.post("/api/v1/merchants/acme/endpoints", body).await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", endpoint["id"].as_str().unwrap());
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let cases = [
        (r#"{"url":"ftp://example.com/h"}"#, 422, "invalid_url"),
        (r#"{"description":"after","url":"not a url"}"#, 422, "invalid_url"),
        (r#"{"enabled":false,"event_types":["a*b"]}"#, 422, "invalid_event_types"),
        (r#"{"enabled":false,"event_types":[""]}"#, 422, "invalid_event_types"),
        (r#"{"event_types":"a"}"#, 422, "validation_error"),
        (r#"{"enabled":"no"}"#, 422, "validation_error"),
        (r#"{"url":5}"#, 422, "validation_error"),
        (r#"{"enabled":false,"secret":"whsec_AAAA"}"#, 422, "validation_error"),
        (r#"{"enabled":false,"colour":"red"}"#, 422, "validation_error"),
        (r#"{"enabled":false"#, 400, "invalid_json"),
        ("not json", 400, "invalid_json"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app.send_raw(Method::PATCH, &path, Some(&auth), Some(body)).await;
        assert_error(got, &answer, status, code, &format!("PATCH {body}"));
    }
    let (_, now) = app.get(&path).await;
    let mut unchanged = endpoint.clone();
    let secret = unchanged.as_object_mut().unwrap().remove("secret").unwrap();
    assert_eq!(now, unchanged, "a refused PATCH changed the endpoint");
    assert_eq!(
        app.revealed_secret("acme", endpoint["id"].as_str().unwrap()).await,
        secret
    );
}

#[tokio::test]
async fn endpoint_bodies_that_are_not_json_are_400_and_wrong_fields_422() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let cases = [
        ("{", 400, "invalid_json"),
        (r#"{"url":"https://example.com/h""#, 400, "invalid_json"),
        ("url=https://example.com", 400, "invalid_json"),
        (
            r#"{"url":"https://example.com/h","colour":"red"}"#,
            422,
            "validation_error",
        ),
        (
            r#"{"url":"https://example.com/h","enabled":"yes"}"#,
            422,
            "validation_error",
        ),
        (
            r#"{"url":"https://example.com/h","event_types":"a"}"#,
            422,
            "validation_error",
        ),
        (
            r#"{"url":"https://example.com/h","event_types":[1]}"#,
            422,
            "validation_error",
        ),
        (
            r#"{"url":"https://example.com/h","event_types":["a*b"]}"#,
            422,
            "invalid_event_types",
        ),
        (
            r#"{"url":"https://example.com/h","event_types":[""]}"#,
            422,
            "invalid_event_types",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = app
            .send_raw(
                Method::POST,
                "/api/v1/merchants/acme/endpoints",
                Some(&auth),
                Some(body),
            )
            .await;
        assert_error(got, &answer, status, code, &format!("POST {body}"));
    }
    assert_eq!(endpoint_count(&app, "acme").await, 0);
}

#[tokio::test]
async fn an_endpoint_of_another_merchant_is_404() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    app.create_merchant("globex").await;
    let theirs = app.create_endpoint("globex", "https://example.com/g", &[]).await;
    let ep = theirs["id"].as_str().unwrap();
    for ep in [ep, "ep_0190a1b2c3d4e5f60718293a4b5c6d7e", "ep_nope", "nope"] {
        let path = format!("/api/v1/merchants/acme/endpoints/{ep}");
        for (method, path, body) in [
            (Method::GET, path.clone(), None),
            (Method::PATCH, path.clone(), Some(json!({ "enabled": false }))),
            (Method::DELETE, path.clone(), None),
            (Method::POST, format!("{path}/rotate-secret"), Some(json!({}))),
            (
                Method::POST,
                format!("{path}/recover"),
                Some(json!({ "since": "2020-01-01T00:00:00Z" })),
            ),
        ] {
            let (status, answer) = app.admin(method.clone(), &path, body).await;
            assert_error(status, &answer, 404, "not_found", &format!("{method} {path}"));
        }
    }
    let (status, read) = app.get(&format!("/api/v1/merchants/globex/endpoints/{ep}")).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["enabled"], true);
    assert_eq!(app.revealed_secret("globex", ep).await, theirs["secret"]);
}

#[tokio::test]
async fn rotating_a_secret_gives_a_new_one_and_keeps_the_old_signing_for_24_hours() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", endpoint["id"].as_str().unwrap());
    let old = endpoint["secret"].as_str().unwrap();

    let (status, rotated) = app.post(&format!("{path}/rotate-secret"), json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, old);
    assert!(secret_key(new).len() >= 24, "{new}");
    let expires = rfc3339(&rotated["previous_secret_expires_at"]);
    let ahead = expires.signed_duration_since(Utc::now());
    assert!(
        (ahead.num_seconds() - 24 * 3600).abs() < 120,
        "the old secret expires in {ahead}"
    );
    assert_eq!(app.revealed_secret("acme", endpoint["id"].as_str().unwrap()).await, new);

    let (status, _) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    assert_eq!(status, 202);
    let got = &receiver.wait_for(1, Duration::from_secs(5)).await[0];
    let (id, ts) = (got.header("webhook-id"), got.header("webhook-timestamp"));
    let mut sent: Vec<&str> = got.header("webhook-signature").split(' ').collect();
    sent.sort();
    let mut expected = vec![signature(new, id, ts, &got.body), signature(old, id, ts, &got.body)];
    expected.sort();
    assert_eq!(sent, expected);

    // An empty body works too; a given secret is used; an invalid one is refused.
    let response = app
        .http
        .post(app.url(&format!("{path}/rotate-secret")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let given = valid_secret(9, 24);
    let (status, rotated) = app
        .post(&format!("{path}/rotate-secret"), json!({ "secret": given }))
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["secret"], given);
    let (status, answer) = app
        .post(&format!("{path}/rotate-secret"), json!({ "secret": "nope" }))
        .await;
    assert_error(status, &answer, 422, "invalid_secret", "rotating to an invalid secret");
    assert_eq!(
        app.revealed_secret("acme", endpoint["id"].as_str().unwrap()).await,
        given
    );
}

// ---- events ----

#[tokio::test]
async fn events_are_listed_newest_first_filtered_by_type_and_paged() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let other = app.create_merchant("other").await;
    app.ingest(&other, r#"{"type":"a"}"#).await;
    let mut sent = Vec::new();
    for (n, event_type) in ["a", "b", "a", "c", "a"].iter().enumerate() {
        let (status, answer) = app
            .ingest(&merchant, &format!(r#"{{"type":"{event_type}","id":"p{n}"}}"#))
            .await;
        assert_eq!(status, 202, "{answer}");
        sent.push((answer["event_id"].as_str().unwrap().to_owned(), *event_type));
    }
    let newest_first = |filter: Option<&str>| -> Vec<String> {
        sent.iter()
            .rev()
            .filter(|(_, t)| filter.is_none_or(|f| f == *t))
            .map(|(id, _)| id.clone())
            .collect()
    };

    let (status, list) = app.get("/api/v1/merchants/acme/events").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(list["data"].as_array().unwrap()), newest_first(None));
    assert_eq!(list["next_cursor"], Value::Null);
    let first = &list["data"][0];
    assert_eq!(first["type"], "a");
    assert_eq!(first["idempotency_key"], "p4");
    assert_recent(&first["received_at"]);

    let (status, list) = app.get("/api/v1/merchants/acme/events?type=a").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(ids(list["data"].as_array().unwrap()), newest_first(Some("a")));
    let (_, list) = app.get("/api/v1/merchants/acme/events?type=nothing").await;
    assert_eq!(list["data"], json!([]));

    let (items, sizes) = all_pages(&app, "/api/v1/merchants/acme/events", 2).await;
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(ids(&items), newest_first(None));
    let (items, sizes) = all_pages(&app, "/api/v1/merchants/acme/events?type=a", 2).await;
    assert_eq!(sizes, [2, 1]);
    assert_eq!(ids(&items), newest_first(Some("a")));
}

#[tokio::test]
async fn an_event_shows_the_payload_that_was_sent_and_its_deliveries() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let one = app.create_endpoint("acme", &receiver.url("/one"), &[]).await;
    let two = app
        .create_endpoint("acme", &receiver.url("/two"), &["checkout_session.*"])
        .await;
    app.create_endpoint("acme", &receiver.url("/three"), &["refund.created"])
        .await;

    let (status, answer) = app.ingest(&merchant, DASHX_COMPLETED).await;
    assert_eq!(status, 202, "{answer}");
    let event_id = answer["event_id"].as_str().unwrap();
    let detail = app
        .wait_for_deliveries("acme", event_id, "succeeded", Duration::from_secs(5))
        .await;

    assert_eq!(detail["id"], event_id);
    assert_eq!(detail["type"], "checkout_session.completed");
    assert_recent(&detail["received_at"]);
    assert_eq!(
        detail["payload"],
        serde_json::from_str::<Value>(DASHX_COMPLETED).unwrap()
    );
    let deliveries = detail["deliveries"].as_array().unwrap();
    let endpoints: BTreeSet<&str> = deliveries.iter().map(|d| d["endpoint_id"].as_str().unwrap()).collect();
    assert_eq!(
        endpoints,
        [one["id"].as_str().unwrap(), two["id"].as_str().unwrap()].into()
    );
    for delivery in deliveries {
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        assert_eq!(delivery["attempts"], 1, "{delivery}");
        assert_eq!(delivery["last_status_code"], 200, "{delivery}");
        assert_eq!(delivery["last_error"], Value::Null, "{delivery}");
        assert_eq!(delivery["next_attempt_at"], Value::Null, "{delivery}");
        assert_recent(&delivery["last_attempt_at"]);
    }

    // An event no endpoint wanted is still kept, with no deliveries.
    let (status, answer) = app.ingest(&merchant, r#"{"type":"payout.sent"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(answer["deliveries"], 1, "only the unfiltered endpoint: {answer}");
    app.admin(
        Method::DELETE,
        &format!("/api/v1/merchants/acme/endpoints/{}", one["id"].as_str().unwrap()),
        None,
    )
    .await;
    let (status, answer) = app.ingest(&merchant, r#"{"type":"payout.sent"}"#).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["deliveries"], 0);
    let lonely = app.event("acme", answer["event_id"].as_str().unwrap()).await;
    assert_eq!(lonely["deliveries"], json!([]));
    assert_eq!(lonely["payload"], json!({ "type": "payout.sent" }));
}

#[tokio::test]
async fn an_unknown_event_is_404_on_every_event_route() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let other = app.create_merchant("other").await;
    let (_, theirs) = app.ingest(&other, r#"{"type":"a"}"#).await;
    let theirs = theirs["event_id"].as_str().unwrap();
    for evt in [theirs, "evt_0190a1b2c3d4e5f60718293a4b5c6d7e", "evt_nope", "nope"] {
        let base = format!("/api/v1/merchants/acme/events/{evt}");
        for (method, path, body) in [
            (Method::GET, base.clone(), None),
            (Method::GET, format!("{base}/attempts"), None),
            (Method::POST, format!("{base}/replay"), Some(json!({}))),
        ] {
            let (status, answer) = app.admin(method.clone(), &path, body).await;
            assert_error(status, &answer, 404, "not_found", &format!("{method} {path}"));
        }
    }
    app.event("other", theirs).await;
}

#[tokio::test]
async fn every_attempt_is_listed_with_its_outcome() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|n| Reply::status(if n == 0 { 500 } else { 200 })).await;
    let merchant = app.create_merchant("acme").await;
    let flaky = app.create_endpoint("acme", &receiver.url("/flaky"), &[]).await;
    let dead = app
        .create_endpoint("acme", &format!("http://127.0.0.1:{}/dead", closed_port()), &[])
        .await;
    let (flaky_id, dead_id) = (flaky["id"].as_str().unwrap(), dead["id"].as_str().unwrap());

    let (_, answer) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    let event_id = answer["event_id"].as_str().unwrap();
    let ok = app
        .wait_for_delivery("acme", event_id, flaky_id, "succeeded", Duration::from_secs(5))
        .await;
    assert_eq!(ok["attempts"], 2, "{ok}");
    assert_eq!(ok["last_status_code"], 200, "{ok}");
    let failed = app
        .wait_for_delivery("acme", event_id, dead_id, "failed", Duration::from_secs(8))
        .await;
    assert_eq!(failed["attempts"], 5, "{failed}");
    assert_eq!(failed["last_status_code"], Value::Null, "{failed}");
    assert!(failed["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_eq!(failed["next_attempt_at"], Value::Null, "{failed}");

    let (items, _) = all_pages(&app, &format!("/api/v1/merchants/acme/events/{event_id}/attempts"), 3).await;
    assert_eq!(items.len(), 7, "{items:#?}");
    for item in &items {
        assert_recent(&item["attempted_at"]);
        assert!(item["duration_ms"].is_u64(), "{item}");
        assert!(item["attempt"].is_u64(), "{item}");
    }
    let of = |endpoint: &str| -> Vec<&Value> { items.iter().filter(|i| i["endpoint_id"] == endpoint).collect() };
    let flaky_attempts = of(flaky_id);
    assert_eq!(flaky_attempts.len(), 2);
    assert_eq!(
        flaky_attempts
            .iter()
            .map(|a| (a["attempt"].clone(), a["outcome"].clone(), a["status_code"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!(1), json!("http_error"), json!(500)),
            (json!(2), json!("success"), json!(200))
        ]
    );
    let dead_attempts = of(dead_id);
    assert_eq!(
        dead_attempts
            .iter()
            .map(|a| a["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    for attempt in dead_attempts {
        assert_eq!(attempt["outcome"], "connect_error", "{attempt}");
        assert_eq!(attempt["status_code"], Value::Null, "{attempt}");
        assert!(attempt["error"].as_str().is_some_and(|e| !e.is_empty()), "{attempt}");
    }
}

#[tokio::test]
async fn replaying_an_event_delivers_it_again_to_all_or_one_endpoint() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let a = app.create_endpoint("acme", &receiver.url("/a"), &[]).await;
    app.create_endpoint("acme", &receiver.url("/b"), &[]).await;
    let a_id = a["id"].as_str().unwrap();
    let (_, answer) = app.ingest(&merchant, DASHX_COMPLETED).await;
    let event_id = answer["event_id"].as_str().unwrap();
    let replay = format!("/api/v1/merchants/acme/events/{event_id}/replay");
    receiver.wait_for(2, Duration::from_secs(5)).await;

    let (status, replayed) = app.post(&replay, json!({})).await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed, json!({ "event_id": event_id, "deliveries": 2 }));
    receiver.wait_for(4, Duration::from_secs(5)).await;

    let (status, replayed) = app.post(&replay, json!({ "endpoint_id": a_id })).await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed["deliveries"], 1);
    receiver.wait_for(5, Duration::from_secs(5)).await;
    let response = app
        .http
        .post(app.url(&replay))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "a replay without body replays to all");

    // A later event behind the replays on both endpoints: once it is in, the replays are.
    let (_, marker) = app.ingest(&merchant, r#"{"type":"marker"}"#).await;
    let marker_id = marker["event_id"].as_str().unwrap();
    app.wait_for_deliveries("acme", marker_id, "succeeded", Duration::from_secs(5))
        .await;
    app.wait_for_deliveries("acme", event_id, "succeeded", Duration::from_secs(5))
        .await;
    let got: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.header("webhook-id") == event_id)
        .collect();
    assert_eq!(
        got.iter().filter(|r| r.path == "/a").count(),
        4,
        "initial, replay all, replay a, replay all"
    );
    assert_eq!(
        got.iter().filter(|r| r.path == "/b").count(),
        3,
        "initial, replay all, replay all"
    );
    assert!(
        got.iter().all(|r| r.body == DASHX_COMPLETED.as_bytes()),
        "a replay changed the body"
    );

    let auth = format!("Bearer {ADMIN_TOKEN}");
    app.create_merchant("globex").await;
    let theirs = app.create_endpoint("globex", &receiver.url("/g"), &[]).await;
    for (body, status, code) in [
        (
            json!({ "endpoint_id": "ep_0190a1b2c3d4e5f60718293a4b5c6d7e" }).to_string(),
            404,
            "not_found",
        ),
        (json!({ "endpoint_id": "nope" }).to_string(), 404, "not_found"),
        (json!({ "endpoint_id": theirs["id"] }).to_string(), 404, "not_found"),
        (json!({ "endpoint_id": 5 }).to_string(), 422, "validation_error"),
        (json!({ "endpoint": a_id }).to_string(), 422, "validation_error"),
        ("{".to_owned(), 400, "invalid_json"),
    ] {
        let (got, answer) = app.send_raw(Method::POST, &replay, Some(&auth), Some(&body)).await;
        assert_error(got, &answer, status, code, &format!("replay {body}"));
    }
}

#[tokio::test]
async fn recover_requeues_failed_deliveries_since_a_time_and_refuses_a_bad_since() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|_| Reply::status(500)).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let recover = format!("/api/v1/merchants/acme/endpoints/{endpoint_id}/recover");

    let auth = format!("Bearer {ADMIN_TOKEN}");
    for (body, code) in [
        (r#"{"since":"yesterday"}"#, "invalid_since"),
        (r#"{"since":"2024-01-01"}"#, "invalid_since"),
        (r#"{"since":"2024-01-01 10:00:00"}"#, "invalid_since"),
        (r#"{"since":""}"#, "invalid_since"),
        (r#"{"since":1700000000}"#, "validation_error"),
        (r#"{}"#, "validation_error"),
        (r#"{"since":"2024-01-01T00:00:00Z","extra":1}"#, "validation_error"),
    ] {
        let (status, answer) = app.send_raw(Method::POST, &recover, Some(&auth), Some(body)).await;
        assert_error(status, &answer, 422, code, &format!("recover {body}"));
    }
    let (status, answer) = app.send_raw(Method::POST, &recover, Some(&auth), Some("{")).await;
    assert_error(status, &answer, 400, "invalid_json", "recover {");

    let (_, answer) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    let event_id = answer["event_id"].as_str().unwrap();
    app.wait_for_deliveries("acme", event_id, "failed", Duration::from_secs(8))
        .await;
    assert_eq!(receiver.received().len(), 5);

    let later = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, answer) = app.post(&recover, json!({ "since": later })).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({ "endpoint_id": endpoint_id, "recovered": 0 }));

    receiver.answer_with(|_| Reply::status(200));
    let earlier = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let (status, answer) = app.post(&recover, json!({ "since": earlier })).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer, json!({ "endpoint_id": endpoint_id, "recovered": 1 }));
    app.wait_for_deliveries("acme", event_id, "succeeded", Duration::from_secs(5))
        .await;
    let got = receiver.received();
    assert_eq!(got.len(), 6);
    assert_eq!(got[5].header("webhook-id"), event_id);
}
