//! Inbound authenticity per merchant: a merchant may require its provider's own
//! signature (Standard Webhooks, Stripe, or an HMAC-SHA256 of the body) besides the
//! ingest token. A request that fails is 401 `invalid_signature` or
//! `signature_expired`, stores nothing, and is counted by reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{assert_error, spawn_app, Receiver, TestApp};

const WAIT: Duration = Duration::from_secs(5);

/// Request headers, name and value.
type Headers = Vec<(String, String)>;
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STRIPE_SECRET: &str = "whsec_stripe_test_secret_0123";
const HMAC_SECRET: &str = "It's a Secret to Everybody";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `webhook-*` headers signed with the Standard Webhooks `secret` at `ts`.
fn standard_webhooks(secret: &str, ts: i64, body: &str) -> Headers {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let id = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W";
    let signature = STANDARD.encode(hmac(&key, format!("{id}.{ts}.{body}").as_bytes()));
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), ts.to_string()),
        ("webhook-signature".into(), format!("v1,{signature}")),
    ]
}

/// A `Stripe-Signature` header signed with `secret` at `ts`.
fn stripe(secret: &str, ts: i64, body: &str) -> Headers {
    let signature = hex(&hmac(secret.as_bytes(), format!("{ts}.{body}").as_bytes()));
    vec![("stripe-signature".into(), format!("t={ts},v1={signature}"))]
}

/// A GitHub-style `X-Hub-Signature-256: sha256=<hex>` header.
fn github(secret: &str, body: &str) -> Headers {
    vec![(
        "x-hub-signature-256".into(),
        format!("sha256={}", hex(&hmac(secret.as_bytes(), body.as_bytes()))),
    )]
}

fn verification_of(scheme: &str) -> Value {
    match scheme {
        "standard_webhooks" => json!({ "scheme": "standard_webhooks", "secret": SW_SECRET }),
        "stripe" => json!({ "scheme": "stripe", "secret": STRIPE_SECRET, "tolerance_seconds": 60 }),
        "hmac_sha256" => json!({
            "scheme": "hmac_sha256", "secret": HMAC_SECRET,
            "header": "X-Hub-Signature-256", "encoding": "hex", "prefix": "sha256=",
        }),
        other => panic!("{other}"),
    }
}

/// A merchant with this verification and one endpoint at `receiver`.
async fn merchant_verifying(app: &TestApp, id: &str, verification: Value, receiver: &Receiver) -> Value {
    let (status, merchant) = app
        .post("/api/v1/merchants", json!({ "id": id, "verification": verification }))
        .await;
    assert_eq!(status, 201, "{merchant}");
    app.create_endpoint(id, &receiver.url(&format!("/{id}")), &[]).await;
    merchant
}

/// Ingests `body` with the merchant's token and these headers.
async fn send(app: &TestApp, merchant: &Value, headers: &[(String, String)], body: &str) -> (u16, Value) {
    let mut request = app
        .http
        .post(merchant["ingest_url"].as_str().unwrap())
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn event_count(app: &TestApp, merchant: &str) -> usize {
    let (status, events) = app.get(&format!("/api/v1/merchants/{merchant}/events")).await;
    assert_eq!(status, 200, "{events}");
    events["data"].as_array().unwrap().len()
}

async fn failures(app: &TestApp, reason: &str) -> f64 {
    app.metric(&format!(
        "hookrelay_ingest_verification_failures_total{{reason=\"{reason}\"}}"
    ))
    .await
}

#[tokio::test]
async fn a_correctly_signed_event_is_accepted_and_delivered_for_each_scheme() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let body = r#"{"id":"evt_1","type":"payment.succeeded"}"#;
    for (n, scheme) in ["standard_webhooks", "stripe", "hmac_sha256"].into_iter().enumerate() {
        let merchant = merchant_verifying(&app, scheme, verification_of(scheme), &receiver).await;
        let headers = match scheme {
            "standard_webhooks" => standard_webhooks(SW_SECRET, now(), body),
            "stripe" => stripe(STRIPE_SECRET, now(), body),
            _ => github(HMAC_SECRET, body),
        };
        let (status, answer) = send(&app, &merchant, &headers, body).await;
        assert_eq!(status, 202, "{scheme}: {answer}");
        let got = receiver.wait_for(n + 1, WAIT).await;
        let delivered = got.iter().find(|r| r.path == format!("/{scheme}")).expect(scheme);
        assert_eq!(delivered.body, body.as_bytes(), "{scheme}");
    }
    for reason in ["missing", "malformed", "mismatch", "expired"] {
        assert_eq!(failures(&app, reason).await, 0.0, "{reason}");
    }
}

#[tokio::test]
async fn bad_or_stale_signatures_are_401_store_nothing_and_are_counted_by_reason() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let body = r#"{"type":"payment.succeeded"}"#;
    let t = now();
    let sw = merchant_verifying(&app, "sw", verification_of("standard_webhooks"), &receiver).await;
    let st = merchant_verifying(&app, "st", verification_of("stripe"), &receiver).await;
    let gh = merchant_verifying(&app, "gh", verification_of("hmac_sha256"), &receiver).await;
    let with = |mut headers: Headers, name: &str, value: &str| {
        headers.retain(|(n, _)| n != name);
        headers.push((name.to_owned(), value.to_owned()));
        headers
    };
    let without = |mut headers: Headers, name: &str| {
        headers.retain(|(n, _)| n != name);
        headers
    };
    let sw_ok = standard_webhooks(SW_SECRET, t, body);
    let other_secret = format!("whsec_{}", STANDARD.encode([3u8; 24]));
    let cases: Vec<(&str, &Value, Headers, &str, &str)> = vec![
        (
            "sw: another secret",
            &sw,
            standard_webhooks(&other_secret, t, body),
            "invalid_signature",
            "mismatch",
        ),
        (
            "sw: no signature header",
            &sw,
            without(sw_ok.clone(), "webhook-signature"),
            "invalid_signature",
            "missing",
        ),
        ("sw: no headers at all", &sw, vec![], "invalid_signature", "missing"),
        (
            "sw: a signature that is not v1",
            &sw,
            with(sw_ok.clone(), "webhook-signature", "v2,abc"),
            "invalid_signature",
            "malformed",
        ),
        (
            "sw: a timestamp that is no number",
            &sw,
            with(sw_ok.clone(), "webhook-timestamp", "noon"),
            "invalid_signature",
            "malformed",
        ),
        (
            "sw: signed 10 minutes ago",
            &sw,
            standard_webhooks(SW_SECRET, t - 600, body),
            "signature_expired",
            "expired",
        ),
        (
            "sw: signed 10 minutes ahead",
            &sw,
            standard_webhooks(SW_SECRET, t + 600, body),
            "signature_expired",
            "expired",
        ),
        (
            "sw: the timestamp changed",
            &sw,
            with(sw_ok.clone(), "webhook-timestamp", &(t + 1).to_string()),
            "invalid_signature",
            "mismatch",
        ),
        (
            "st: another secret",
            &st,
            stripe("whsec_other", t, body),
            "invalid_signature",
            "mismatch",
        ),
        ("st: no header", &st, vec![], "invalid_signature", "missing"),
        (
            "st: no timestamp",
            &st,
            vec![("stripe-signature".into(), "v1=abcd".into())],
            "invalid_signature",
            "malformed",
        ),
        // The stripe merchant allows 60 s, not the default 300.
        (
            "st: signed 2 minutes ago",
            &st,
            stripe(STRIPE_SECRET, t - 120, body),
            "signature_expired",
            "expired",
        ),
        (
            "st: signed 2 minutes ahead",
            &st,
            stripe(STRIPE_SECRET, t + 120, body),
            "signature_expired",
            "expired",
        ),
        (
            "gh: another secret",
            &gh,
            github("wrong", body),
            "invalid_signature",
            "mismatch",
        ),
        ("gh: no header", &gh, vec![], "invalid_signature", "missing"),
        (
            "gh: no prefix",
            &gh,
            vec![(
                "x-hub-signature-256".into(),
                hex(&hmac(HMAC_SECRET.as_bytes(), body.as_bytes())),
            )],
            "invalid_signature",
            "malformed",
        ),
        (
            "gh: not hex",
            &gh,
            vec![("x-hub-signature-256".into(), "sha256=xyz".into())],
            "invalid_signature",
            "malformed",
        ),
    ];
    let mut expected = std::collections::BTreeMap::<&str, f64>::new();
    for (case, merchant, headers, code, reason) in &cases {
        let (status, answer) = send(&app, merchant, headers, body).await;
        assert_error(status, &answer, 401, code, case);
        *expected.entry(reason).or_default() += 1.0;
    }
    // A body changed in transit does not verify either.
    let (status, answer) = send(&app, &gh, &github(HMAC_SECRET, body), r#"{"type":"payment.failed"}"#).await;
    assert_error(status, &answer, 401, "invalid_signature", "gh: another body");
    *expected.entry("mismatch").or_default() += 1.0;
    // The ingest token is still required: a good signature without it is 401 too.
    let mut no_token = sw.clone();
    no_token["ingest_url"] = json!(format!("{}/ingest/sw", app.address));
    let (status, answer) = send(&app, &no_token, &standard_webhooks(SW_SECRET, t, body), body).await;
    assert_error(status, &answer, 401, "unauthorized", "a signature without the token");

    for merchant in ["sw", "st", "gh"] {
        assert_eq!(event_count(&app, merchant).await, 0, "{merchant} stored an event");
    }
    assert!(receiver.received().is_empty(), "something was delivered");
    for (reason, count) in expected {
        assert_eq!(failures(&app, reason).await, count, "{reason}");
    }
    let rejected = app
        .metric(r#"hookrelay_events_ingested_total{outcome="rejected"}"#)
        .await;
    assert_eq!(rejected as usize, cases.len() + 2);
}

#[tokio::test]
async fn the_provider_secret_is_shown_on_creation_only_and_views_show_the_settings() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/api/v1/merchants",
            json!({ "id": "gh", "verification": verification_of("hmac_sha256") }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["verification"]["secret"], HMAC_SECRET);
    let shown =
        json!({ "scheme": "hmac_sha256", "header": "x-hub-signature-256", "encoding": "hex", "prefix": "sha256=" });
    let (_, read) = app.get("/api/v1/merchants/gh").await;
    assert_eq!(read["verification"], shown);
    let (_, list) = app.get("/api/v1/merchants").await;
    assert_eq!(list["data"][0]["verification"], shown);
    let (_, changed) = app
        .admin(Method::PATCH, "/api/v1/merchants/gh", Some(json!({ "name": "GitHub" })))
        .await;
    assert_eq!(changed["verification"], shown, "a rename keeps the verification");
    assert_eq!(changed["name"], "GitHub");
    for answer in [&read, &list, &changed] {
        assert!(!answer.to_string().contains(HMAC_SECRET), "{answer}");
    }

    let (status, created) = app
        .post(
            "/api/v1/merchants",
            json!({ "id": "sw", "verification": verification_of("standard_webhooks") }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let (_, read) = app.get("/api/v1/merchants/sw").await;
    assert_eq!(
        read["verification"],
        json!({ "scheme": "standard_webhooks", "tolerance_seconds": 300 })
    );
    let plain = app.create_merchant("plain").await;
    assert_eq!(plain["verification"], Value::Null);
}

#[tokio::test]
async fn patch_rotates_the_provider_secret_and_null_removes_the_verification() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = merchant_verifying(&app, "st", verification_of("stripe"), &receiver).await;
    let body = r#"{"type":"a"}"#;
    let (status, _) = send(&app, &merchant, &stripe(STRIPE_SECRET, now(), body), body).await;
    assert_eq!(status, 202);

    let rotated = json!({ "verification": { "scheme": "stripe", "secret": "whsec_rotated" } });
    let (status, changed) = app.admin(Method::PATCH, "/api/v1/merchants/st", Some(rotated)).await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        changed["verification"],
        json!({ "scheme": "stripe", "tolerance_seconds": 300 })
    );
    let (status, answer) = send(&app, &merchant, &stripe(STRIPE_SECRET, now(), body), body).await;
    assert_error(
        status,
        &answer,
        401,
        "invalid_signature",
        "the secret before the rotation",
    );
    let (status, _) = send(&app, &merchant, &stripe("whsec_rotated", now(), body), body).await;
    assert_eq!(status, 202, "the new secret");

    let (status, changed) = app
        .admin(
            Method::PATCH,
            "/api/v1/merchants/st",
            Some(json!({ "verification": null })),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["verification"], Value::Null);
    let (status, _) = send(&app, &merchant, &[], body).await;
    assert_eq!(status, 202, "unsigned events pass once verification is removed");
    let (status, answer) = app.ingest(&merchant, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(event_count(&app, "st").await, 4);
}

#[tokio::test]
async fn verification_settings_that_do_not_fit_are_422_and_change_nothing() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let bad = [
        (json!({ "scheme": "pgp", "secret": "x" }), "invalid_verification"),
        (json!({ "scheme": "stripe", "secret": "" }), "invalid_verification"),
        (
            json!({ "scheme": "standard_webhooks", "secret": "not-whsec" }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "stripe", "secret": "s", "tolerance_seconds": 0 }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "stripe", "secret": "s", "tolerance_seconds": 999999 }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "stripe", "secret": "s", "header": "x-sig" }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "hmac_sha256", "secret": "s", "encoding": "hex" }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "hmac_sha256", "secret": "s", "header": "x sig", "encoding": "hex" }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "hmac_sha256", "secret": "s", "header": "x-sig", "encoding": "base32" }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "hmac_sha256", "secret": "s", "header": "x-sig", "encoding": "hex", "tolerance_seconds": 5 }),
            "invalid_verification",
        ),
        (
            json!({ "scheme": "stripe", "secret": "s", "colour": "red" }),
            "validation_error",
        ),
        (json!({ "scheme": "stripe" }), "validation_error"),
        (json!("stripe"), "validation_error"),
    ];
    for (verification, code) in &bad {
        let context = verification.to_string();
        let (status, answer) = app
            .post(
                "/api/v1/merchants",
                json!({ "id": "new", "verification": verification }),
            )
            .await;
        assert_error(status, &answer, 422, code, &format!("POST {context}"));
        let (status, answer) = app
            .admin(
                Method::PATCH,
                "/api/v1/merchants/acme",
                Some(json!({ "verification": verification })),
            )
            .await;
        assert_error(status, &answer, 422, code, &format!("PATCH {context}"));
    }
    let (status, _) = app.get("/api/v1/merchants/new").await;
    assert_eq!(status, 404, "nothing was created");
    let (_, acme) = app.get("/api/v1/merchants/acme").await;
    assert_eq!(acme["verification"], Value::Null, "nothing was changed");
    let (status, answer) = app
        .admin(Method::PATCH, "/api/v1/merchants/nope", Some(json!({ "name": "x" })))
        .await;
    assert_error(status, &answer, 404, "not_found", "PATCH of an unknown merchant");
    let (status, answer) = app
        .admin(
            Method::PATCH,
            "/api/v1/merchants/acme",
            Some(json!({ "name": "x".repeat(201) })),
        )
        .await;
    assert_error(status, &answer, 422, "invalid_name", "a long name");
}
