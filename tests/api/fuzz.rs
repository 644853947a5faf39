//! Property-based fuzzing of hostile input through the real HTTP interface: random
//! ingest bodies and headers, and random admin bodies. Whatever arrives, the gateway
//! answers with a documented status and the JSON error shape, never a 5xx, and a
//! refused request stores nothing. `PROPTEST_CASES=N` runs more cases.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::helpers::{spawn_app, TestApp};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

/// Arbitrary JSON, nested a little, with the field names the gateway looks at.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("type".to_owned()),
                    Just("url".to_owned()),
                    Just("name".to_owned()),
                    Just("event_types".to_owned()),
                    Just("secret".to_owned()),
                    Just("enabled".to_owned()),
                    Just("since".to_owned()),
                    Just("endpoint_id".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..5
            )
            .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Bodies: valid JSON of any shape, or raw bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn run<S: Strategy>(strategy: S, case: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&strategy, case).unwrap();
}

fn check_answer(status: u16, body: &Value, allowed: &[u16]) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "a 5xx for hostile input: {status} {body}");
    prop_assert!(
        allowed.contains(&status),
        "status {status} is not documented here: {body}"
    );
    if status >= 400 {
        prop_assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{body}"
        );
    }
    Ok(())
}

async fn post_raw(app: &TestApp, url: &str, body: Vec<u8>, header: Option<(String, String)>) -> (u16, Value) {
    let mut request = app.http.post(url).bearer_auth(&app.admin_token).body(body);
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[test]
fn hostile_ingest_bodies_and_keys_get_documented_answers_and_refusals_store_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, ingest_url) = runtime.block_on(async {
        let app = spawn_app().await;
        let merchant = app.create_merchant("fuzz").await;
        let url = merchant["ingest_url"].as_str().unwrap().to_owned();
        (app, url)
    });
    let key = proptest::option::of(prop::collection::vec(any::<u8>(), 0..300));
    let accepted = std::cell::Cell::new(0u64);
    run((body(), key), |(body, key)| {
        runtime.block_on(async {
            let before = app
                .metric("hookrelay_events_ingested_total{outcome=\"accepted\"}")
                .await;
            let header = key
                .and_then(|k| reqwest::header::HeaderValue::from_bytes(&k).ok())
                .and_then(|v| v.to_str().ok().map(|v| ("idempotency-key".to_owned(), v.to_owned())));
            let (status, answer) = post_raw(&app, &ingest_url, body, header).await;
            check_answer(status, &answer, &[200, 202, 400])?;
            let after = app
                .metric("hookrelay_events_ingested_total{outcome=\"accepted\"}")
                .await;
            if status == 202 {
                accepted.set(accepted.get() + 1);
                prop_assert_eq!(after, before + 1.0);
            } else {
                prop_assert_eq!(after, before, "a refused or duplicate ingest stored an event");
            }
            Ok(())
        })
    });
    let events = runtime.block_on(app.get("/api/v1/merchants/fuzz/events?limit=500")).1;
    assert_eq!(events["data"].as_array().unwrap().len() as u64, accepted.get());
}

#[test]
fn hostile_admin_bodies_get_documented_answers() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (app, endpoint, event) = runtime.block_on(async {
        let app = spawn_app().await;
        let merchant = app.create_merchant("fuzz").await;
        let endpoint = app.create_endpoint("fuzz", "http://127.0.0.1:9/hook", &[]).await;
        let (_, event) = app.ingest(&merchant, r#"{"id":"seed","type":"t"}"#).await;
        (
            app,
            endpoint["id"].as_str().unwrap().to_owned(),
            event["event_id"].as_str().unwrap().to_owned(),
        )
    });
    let routes: Vec<(reqwest::Method, String, Vec<u16>)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/merchants".into(),
            vec![201, 400, 409, 413, 422],
        ),
        (
            reqwest::Method::POST,
            "/api/v1/merchants/fuzz/endpoints".into(),
            vec![201, 400, 409, 413, 422],
        ),
        (
            reqwest::Method::PATCH,
            format!("/api/v1/merchants/fuzz/endpoints/{endpoint}"),
            vec![200, 400, 413, 422],
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/merchants/fuzz/endpoints/{endpoint}/rotate-secret"),
            vec![200, 400, 413, 422],
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/merchants/fuzz/endpoints/{endpoint}/recover"),
            vec![202, 400, 413, 422],
        ),
        (
            reqwest::Method::POST,
            format!("/api/v1/merchants/fuzz/events/{event}/replay"),
            vec![202, 400, 404, 413, 422],
        ),
    ];
    run((0..routes.len(), body()), |(route, body)| {
        let (method, path, allowed) = &routes[route];
        runtime.block_on(async {
            let response = app
                .http
                .request(method.clone(), app.url(path))
                .bearer_auth(&app.admin_token)
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let answer: Value = response.json().await.unwrap_or(Value::Null);
            check_answer(status, &answer, allowed)
        })
    });
    // Whatever was thrown at it, the gateway still serves.
    let (status, _) = runtime.block_on(app.get("/api/v1/merchants/fuzz"));
    assert_eq!(status, 200);
}
